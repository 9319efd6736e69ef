#include "dynascope/array.hpp"

#include <cstring>
#include <limits>

#include "cuda/cuda_api.hpp"

namespace dynascope {

std::string shape_string(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

index_t shape_numel(const Shape& shape) {
  index_t n = 1;
  for (index_t d : shape) {
    if (d < 0) throw InvalidArgument("negative extent in shape " + shape_string(shape));
    if (d != 0 && n > std::numeric_limits<index_t>::max() / d)
      throw InvalidArgument("shape " + shape_string(shape) + " has too many elements");
    n *= d;
  }
  return n;
}

namespace detail {

std::shared_ptr<void> allocate_storage(const Context& ctx, std::size_t bytes) {
  // The deleter keeps the stream alive and frees through the allocator that allocated.
  return ctx.allocate_owned(bytes);
}

void copy_rows(const Context& ctx, void* dst, std::size_t dst_pitch, Backend dst_backend,
               const void* src, std::size_t src_pitch, Backend src_backend, std::size_t row_bytes,
               std::size_t rows) {
  if (rows == 0 || row_bytes == 0) return;
  if (dst_backend == Backend::host && src_backend == Backend::host) {
    if (dst_pitch == row_bytes && src_pitch == row_bytes) {
      std::memmove(dst, src, row_bytes * rows);
      return;
    }
    for (std::size_t r = 0; r < rows; ++r)
      std::memmove(static_cast<char*>(dst) + r * dst_pitch,
                   static_cast<const char*>(src) + r * src_pitch, row_bytes);
    return;
  }
  // Device memory is ordered on a cuda context's stream; a host context has none to order on.
  if (!ctx.is_cuda())
    throw InvalidArgument("copy: device memory needs a cuda context (the one whose stream produced or will use it)");
  // On the context's device: its stream belongs there (a copy between devices goes peer to peer).
  cuda_api::DeviceScope on_device(ctx.device());
  cuda_api::copy_2d_async(dst, dst_pitch, src, src_pitch, row_bytes, rows, ctx.stream());
  if (dst_backend == Backend::host) cuda_api::synchronize(ctx.stream());
}

void copy_bytes(const Context& ctx, void* dst, Backend dst_backend, const void* src,
                Backend src_backend, std::size_t bytes) {
  copy_rows(ctx, dst, bytes, dst_backend, src, bytes, src_backend, bytes, 1);
}

void fill_zero_bytes(const Context& ctx, void* dst, Backend backend, std::size_t bytes) {
  if (bytes == 0) return;
  if (backend == Backend::host) {
    std::memset(dst, 0, bytes);
    return;
  }
  if (!ctx.is_cuda()) throw InvalidArgument("fill_zero: device memory needs a cuda context (the one whose stream will use it)");
  cuda_api::DeviceScope on_device(ctx.device());
  cuda_api::memset_async(dst, 0, bytes, ctx.stream());
}

}  // namespace detail
}  // namespace dynascope
