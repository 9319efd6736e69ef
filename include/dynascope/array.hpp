#pragma once
// Array<T>: owning, move-only, row-major storage on one backend (and, for cuda, one device),
// allocated through a Context's allocator (or adopted from a foreign owner such as a DLPack tensor).
#include <initializer_list>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "dynascope/context.hpp"
#include "dynascope/error.hpp"
#include "dynascope/view.hpp"

namespace dynascope {

using Shape = std::vector<index_t>;

DYNASCOPE_API std::string shape_string(const Shape& shape);
// Product of the extents; throws InvalidArgument on a negative extent or overflow.
DYNASCOPE_API index_t shape_numel(const Shape& shape);

namespace detail {
// Allocates `bytes` through ctx and returns an owner that frees through the same resources.
DYNASCOPE_API std::shared_ptr<void> allocate_storage(const Context& ctx, std::size_t bytes);
// Copies bytes between backends on ctx's stream (synchronous for device-to-host).
DYNASCOPE_API void copy_bytes(const Context& ctx, void* dst, Backend dst_backend, const void* src,
                              Backend src_backend, std::size_t bytes);
DYNASCOPE_API void fill_zero_bytes(const Context& ctx, void* dst, Backend backend, std::size_t bytes);
// Copies `rows` rows of `row_bytes` each between pitched buffers.
DYNASCOPE_API void copy_rows(const Context& ctx, void* dst, std::size_t dst_pitch, Backend dst_backend,
                             const void* src, std::size_t src_pitch, Backend src_backend,
                             std::size_t row_bytes, std::size_t rows);
}  // namespace detail

template <class T>
class Array {
 public:
  Array() = default;
  // Uninitialised storage of the given shape on ctx's backend (and device, for cuda).
  Array(const Context& ctx, Shape shape)
      : shape_(std::move(shape)), backend_(ctx.backend()), device_(ctx.is_cuda() ? ctx.device() : 0) {
    const index_t n = shape_numel(shape_);
    storage_ = detail::allocate_storage(ctx, static_cast<std::size_t>(n) * sizeof(T));
    data_ = static_cast<T*>(storage_.get());
  }
  // Adopts memory owned by `owner` (kept alive as long as the array); `device` is the cuda device
  // holding cuda memory (ignored, and recorded as 0, for host memory).
  Array(T* data, Shape shape, Backend backend, std::shared_ptr<void> owner, int device = 0)
      : data_(data),
        shape_(std::move(shape)),
        backend_(backend),
        device_(backend == Backend::cuda ? device : 0),
        storage_(std::move(owner)) {}

  static Array zeros(const Context& ctx, Shape shape) {
    Array a(ctx, std::move(shape));
    detail::fill_zero_bytes(ctx, a.data_, a.backend_, a.bytes());
    return a;
  }
  // An array on ctx's backend holding a copy of shape_numel(shape) host values read from `data`
  // (which may be null when the shape is empty), ordered on ctx's stream. A pageable host buffer
  // may be reused as soon as this returns; a pinned one only after ctx.synchronize().
  static Array from_host(const Context& ctx, Shape shape, const T* data) {
    Array a(ctx, std::move(shape));
    if (a.bytes() > 0) detail::copy_bytes(ctx, a.data_, a.backend_, data, Backend::host, a.bytes());
    return a;
  }
  // As above; throws ShapeMismatch unless values holds exactly shape_numel(shape) elements.
  static Array from_host(const Context& ctx, Shape shape, const std::vector<T>& values) {
    const index_t n = shape_numel(shape);
    if (static_cast<index_t>(values.size()) != n)
      throw ShapeMismatch("Array::from_host: shape " + shape_string(shape) + " holds " + std::to_string(n) +
                          " elements but " + std::to_string(values.size()) + " values were given");
    return from_host(ctx, std::move(shape), values.data());
  }

  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  Array(Array&& o) noexcept { swap(o); }
  Array& operator=(Array&& o) noexcept {
    Array tmp(std::move(o));
    swap(tmp);
    return *this;
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return static_cast<int>(shape_.size()); }
  index_t dim(int i) const { return shape_.at(static_cast<std::size_t>(i)); }
  index_t size() const noexcept { return shape_.empty() && !data_ ? 0 : product(); }
  std::size_t bytes() const noexcept { return static_cast<std::size_t>(size()) * sizeof(T); }
  Backend backend() const noexcept { return backend_; }
  // The cuda device holding the memory (the allocating context's device); 0 for host memory.
  int device() const noexcept { return device_; }
  bool empty() const noexcept { return size() == 0; }

  // Rank-2 arrays view as [rows, cols]; rank 1 as [n, 1]; higher ranks as [dim0, rest].
  MatrixView<T> matrix() { return as_matrix<T>(data_); }
  MatrixView<const T> matrix() const { return as_matrix<const T>(data_); }
  VectorView<T> vector() { return {data_, size(), 1, backend_, device_}; }
  VectorView<const T> vector() const { return {data_, size(), 1, backend_, device_}; }

  // Reinterprets the shape (same number of elements).
  void reshape(Shape shape) {
    if (shape_numel(shape) != size())
      throw ShapeMismatch("reshape: cannot view " + shape_string(shape_) + " as " +
                          shape_string(shape));
    shape_ = std::move(shape);
  }

  // A copy on `ctx`'s backend (host <-> device as needed). When either side is device memory,
  // ctx must be the cuda context whose stream orders it; the copy is ordered on ctx's stream
  // only, so when the source was written on another stream, synchronize that one first.
  Array to(const Context& ctx) const {
    Array out(ctx, shape_);
    detail::copy_bytes(ctx, out.data_, out.backend_, data_, backend_, bytes());
    return out;
  }
  // A host copy, ordered on `ctx`'s stream (ctx may be host for host arrays).
  Array to_host(const Context& ctx) const {
    Array out(Context::host(), shape_);
    detail::copy_bytes(ctx, out.data_, Backend::host, data_, backend_, bytes());
    return out;
  }
  Array clone(const Context& ctx) const { return to(ctx); }
  // All elements, row-major, as a host vector; ordered on `ctx`'s stream (which may be host for
  // host arrays) and complete when this returns.
  std::vector<T> to_vector(const Context& ctx) const {
    std::vector<T> out(static_cast<std::size_t>(size()));
    if (!out.empty()) detail::copy_bytes(ctx, out.data(), Backend::host, data_, backend_, bytes());
    return out;
  }

 private:
  index_t product() const noexcept {
    return std::accumulate(shape_.begin(), shape_.end(), index_t{1}, std::multiplies<>());
  }
  template <class U>
  MatrixView<U> as_matrix(U* p) const {
    const index_t rows = shape_.empty() ? 0 : shape_[0];
    const index_t cols = shape_.size() <= 1 ? 1 : (rows == 0 ? 0 : size() / rows);
    return {p, rows, cols, cols, backend_, device_};
  }
  void swap(Array& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(shape_, o.shape_);
    std::swap(backend_, o.backend_);
    std::swap(device_, o.device_);
    std::swap(storage_, o.storage_);
  }

  T* data_ = nullptr;
  Shape shape_;
  Backend backend_ = Backend::host;
  int device_ = 0;
  std::shared_ptr<void> storage_;
};

// Copies between views of equal shape on any backends (rows may be strided).
template <class T>
void copy(const Context& ctx, MatrixView<const T> src, MatrixView<T> dst) {
  if (src.rows != dst.rows || src.cols != dst.cols)
    throw ShapeMismatch("copy: source is " + std::to_string(src.rows) + "x" +
                        std::to_string(src.cols) + ", destination " + std::to_string(dst.rows) +
                        "x" + std::to_string(dst.cols));
  if (src.size() == 0) return;
  detail::copy_rows(ctx, dst.data, static_cast<std::size_t>(dst.ld) * sizeof(T), dst.backend, src.data,
                    static_cast<std::size_t>(src.ld) * sizeof(T), src.backend,
                    static_cast<std::size_t>(src.cols) * sizeof(T), static_cast<std::size_t>(src.rows));
}

}  // namespace dynascope
