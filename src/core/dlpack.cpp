#include "dynascope/dlpack.hpp"

#include <string>

namespace dynascope {
namespace {

template <class T>
DLDataType dl_dtype() {
  if constexpr (std::is_floating_point_v<T>)
    return {static_cast<std::uint8_t>(kDLFloat), static_cast<std::uint8_t>(sizeof(T) * 8), 1};
  else if constexpr (std::is_signed_v<T>)
    return {static_cast<std::uint8_t>(kDLInt), static_cast<std::uint8_t>(sizeof(T) * 8), 1};
  else
    return {static_cast<std::uint8_t>(kDLUInt), static_cast<std::uint8_t>(sizeof(T) * 8), 1};
}

std::string dtype_name(DLDataType t) {
  const char* code = t.code == kDLFloat ? "float" : t.code == kDLInt ? "int" : t.code == kDLUInt ? "uint" : "code";
  return std::string(code) + std::to_string(t.bits) + (t.lanes != 1 ? "x" + std::to_string(t.lanes) : "");
}

Backend backend_of(const DLDevice& d, const char* call) {
  if (d.device_type == kDLCPU || d.device_type == kDLCUDAHost) return Backend::host;
  if (d.device_type == kDLCUDA || d.device_type == kDLCUDAManaged) return Backend::cuda;
  throw InvalidArgument(std::string(call) + ": device type " + std::to_string(d.device_type) +
                        " is neither CPU nor CUDA");
}

// The cuda device of device memory (kDLCUDAHost memory is host memory: 0).
int device_of(const DLDevice& d, Backend backend) { return backend == Backend::cuda ? d.device_id : 0; }

template <class T>
void check_dtype(const DLTensor& t, const char* call) {
  const DLDataType want = dl_dtype<T>();
  if (t.dtype.code != want.code || t.dtype.bits != want.bits || t.dtype.lanes != want.lanes)
    throw InvalidArgument(std::string(call) + ": tensor dtype is " + dtype_name(t.dtype) + ", expected " +
                          dtype_name(want));
}

// What the managed tensor owns besides the array's storage.
struct Holder {
  std::shared_ptr<void> storage;
  std::vector<int64_t> shape;
};

}  // namespace

template <class T>
DLManagedTensor* to_dlpack(Array<T>&& array) {
  auto* holder = new Holder;
  holder->shape.assign(array.shape().begin(), array.shape().end());
  auto* managed = new DLManagedTensor{};
  managed->dl_tensor.data = array.data();
  managed->dl_tensor.device = {array.backend() == Backend::cuda ? kDLCUDA : kDLCPU,
                               array.backend() == Backend::cuda ? array.device() : 0};
  managed->dl_tensor.ndim = array.rank();
  managed->dl_tensor.dtype = dl_dtype<T>();
  managed->dl_tensor.shape = holder->shape.data();
  managed->dl_tensor.strides = nullptr;  // compact row-major
  managed->dl_tensor.byte_offset = 0;
  managed->manager_ctx = holder;
  managed->deleter = [](DLManagedTensor* self) {
    delete static_cast<Holder*>(self->manager_ctx);
    delete self;
  };
  // Move the storage owner out of the array last, so nothing leaks if an allocation above threw.
  Array<T> moved(std::move(array));
  holder->storage = std::shared_ptr<void>(std::make_shared<Array<T>>(std::move(moved)));
  return managed;
}

template <class T>
Array<T> from_dlpack(DLManagedTensor* tensor) {
  if (!tensor) throw InvalidArgument("from_dlpack: null tensor");
  const DLTensor& t = tensor->dl_tensor;
  check_dtype<T>(t, "from_dlpack");
  const Backend backend = backend_of(t.device, "from_dlpack");
  if (t.ndim < 0) throw InvalidArgument("from_dlpack: negative ndim");
  Shape shape(t.shape, t.shape + t.ndim);
  if (t.strides) {
    int64_t expect = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (shape[static_cast<std::size_t>(i)] != 1 && t.strides[i] != expect)
        throw InvalidArgument("from_dlpack: tensor is not C-contiguous (dimension " + std::to_string(i) +
                              " has stride " + std::to_string(t.strides[i]) + ", expected " +
                              std::to_string(expect) + ")");
      expect *= shape[static_cast<std::size_t>(i)];
    }
  }
  shape_numel(shape);
  T* data = reinterpret_cast<T*>(static_cast<char*>(t.data) + t.byte_offset);
  std::shared_ptr<void> owner(tensor, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter) m->deleter(m);
  });
  return Array<T>(data, std::move(shape), backend, std::move(owner), device_of(t.device, backend));
}

template <class T>
MatrixView<T> view_dlpack(const DLTensor& t) {
  check_dtype<T>(t, "view_dlpack");
  const Backend backend = backend_of(t.device, "view_dlpack");
  if (t.ndim != 1 && t.ndim != 2) throw InvalidArgument("view_dlpack: expected a rank-1 or rank-2 tensor, got rank " + std::to_string(t.ndim));
  T* data = reinterpret_cast<T*>(static_cast<char*>(t.data) + t.byte_offset);
  if (t.ndim == 1) {
    if (t.strides && t.shape[0] > 1 && t.strides[0] != 1) throw InvalidArgument("view_dlpack: rank-1 tensor must be contiguous");
    return {data, t.shape[0], 1, 1, backend, device_of(t.device, backend)};
  }
  const index_t rows = t.shape[0], cols = t.shape[1];
  index_t ld = cols;
  if (t.strides) {
    if (cols > 1 && t.strides[1] != 1) throw InvalidArgument("view_dlpack: the last dimension must be contiguous (stride 1)");
    if (rows > 1) ld = t.strides[0];
    if (ld < cols) throw InvalidArgument("view_dlpack: row stride " + std::to_string(ld) + " is smaller than the row length " + std::to_string(cols));
  }
  return {data, rows, cols, std::max<index_t>(ld, 1), backend, device_of(t.device, backend)};
}

#define DS_INSTANTIATE(T)                                      \
  template DLManagedTensor* to_dlpack<T>(Array<T>&&);          \
  template Array<T> from_dlpack<T>(DLManagedTensor*);          \
  template MatrixView<T> view_dlpack<T>(const DLTensor&);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
DS_INSTANTIATE(std::int32_t)
DS_INSTANTIATE(std::int64_t)
DS_INSTANTIATE(std::uint8_t)
#undef DS_INSTANTIATE

}  // namespace dynascope
