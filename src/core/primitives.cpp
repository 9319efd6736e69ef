// Row reductions and distinct-row counting (primitives.hpp). One source for both backends: nvcc
// compiles it in CUDA builds (DYNASCOPE_KERNEL_SOURCES), g++ in host-only builds. Thrust sorts:
// its OpenMP system for host contexts, its CUDA system (without synchronising, with the context's
// allocator) for cuda contexts; the prefix sum is Thrust's on host and CUB's on device.
#include "dynascope/primitives.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>

#include <thrust/scan.h>
#include <thrust/sort.h>
#include <thrust/system/omp/execution_policy.h>

#include "core/checks.hpp"
#include "core/omp_threads.hpp"
#include "kernels/launch.cuh"
#include "kernels/rows.cuh"
#include "kernels/segmented.cuh"

#if defined(__CUDACC__)
#include <cub/device/device_scan.cuh>
#include <thrust/system/cuda/error.h>
#include <thrust/system/cuda/execution_policy.h>
#include <thrust/system_error.h>

#include "kernels/cuda_check.cuh"
#endif

namespace dynascope::primitives {
namespace {

template <class T, class Out>
void check_rows_out(const Context& ctx, MatrixView<const T> a, VectorView<Out> out, const char* call) {
  detail::check_matrix(ctx, a, call, "A");
  detail::check_vector(ctx, out, call, "out");
  if (out.size != a.rows)
    throw ShapeMismatch(std::string(call) + ": out must have one element per row of A (" + std::to_string(a.rows) +
                        "), got " + std::to_string(out.size));
}

// Thrust's OpenMP system sizes its teams by the calling thread's nthreads ICV: set it to the
// context's thread count for the call and restore it, so embedders are unaffected.
class HostThreads : public detail::OmpThreads {
 public:
  explicit HostThreads(const Context& ctx) : OmpThreads(kern::host_threads(ctx)) {}
};

#if defined(__CUDACC__)
// Thrust's temporary storage from the context's (stream-ordered) allocator.
struct ContextAllocator {
  using value_type = char;
  const Context* ctx;
  char* allocate(std::ptrdiff_t bytes) { return static_cast<char*>(ctx->allocate(static_cast<std::size_t>(bytes))); }
  void deallocate(char* p, std::size_t bytes) { ctx->deallocate(p, bytes); }
};

// In-place inclusive prefix sum on the context's stream. CUB scans chunks of at most 2^24 items,
// so that only its 32-bit-offset kernel is built (the 64-bit one spills registers on sm_90); each
// chunk is then raised by the last sum of the chunk before it.
void device_inclusive_scan(const Context& ctx, index_t* data, index_t n) {
  constexpr index_t kChunk = index_t{1} << 24;
  const auto stream = static_cast<cudaStream_t>(ctx.stream());
  std::size_t temp_bytes = 0;
  DYNASCOPE_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, data, static_cast<int>(std::min(n, kChunk)),
                                                     stream));
  const kern::ScopedScratch temp(ctx, temp_bytes);
  for (index_t begin = 0; begin < n; begin += kChunk) {
    const index_t len = std::min(kChunk, n - begin);
    std::size_t bytes = temp.bytes;
    DYNASCOPE_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp.p, bytes, data + begin, static_cast<int>(len), stream));
    if (begin > 0) kern::parallel_for(ctx, len, kern::AddCarry{data + begin, data + begin - 1});
  }
}
#endif

// The sort policy is Thrust's (OpenMP or CUDA system); `scan` is an in-place inclusive prefix sum
// scan(data, n) on ctx's backend. The steps are those of kernels/rows.cuh.
template <class Policy, class Scan>
DistinctRows distinct_rows_with(const Context& ctx, const Policy& policy, Scan scan,
                                MatrixView<const std::uint64_t> rows, const DistinctRowsOptions& options) {
  const index_t n = rows.rows, words = rows.cols;
  DistinctRows result;
  if (n == 0) {
    if (options.ids) result.ids = Array<std::int64_t>(ctx, {0});
    if (options.counts) {
      result.counts = Array<std::int64_t>(ctx, {0});
      result.first = Array<std::int64_t>(ctx, {0});
    }
    return result;
  }
  Array<index_t> order(ctx, {n});
  Array<std::uint64_t> keys(ctx, {n});
  kern::parallel_for(ctx, n, kern::Iota{order.data()});
  kern::parallel_for(ctx, n, kern::GatherKey{rows, nullptr, keys.data()});
  thrust::stable_sort_by_key(policy, keys.data(), keys.data() + n, order.data());
  // cls[n] is ClassHead's collision flag; it comes back with K = cls[n-1] in one copy.
  Array<index_t> cls(ctx, {n + 1});
  detail::fill_zero_bytes(ctx, cls.data() + n, ctx.backend(), sizeof(index_t));
  kern::parallel_for(ctx, n, kern::ClassHead{rows, order.data(), keys.data(), cls.data(), cls.data() + n});
  scan(cls.data(), n);
  index_t tail[2] = {0, 0};  // K, collided
  detail::copy_bytes(ctx, tail, Backend::host, cls.data() + (n - 1), ctx.backend(), sizeof tail);
  if (tail[1] != 0) {
    // Different rows share a key: order by the words (least significant first), then by key, so
    // that equal rows are neighbours for certain, and count again.
    for (index_t w = words - 1; w >= 0; --w) {
      kern::parallel_for(ctx, n, kern::GatherWord{rows, order.data(), w, keys.data()});
      thrust::stable_sort_by_key(policy, keys.data(), keys.data() + n, order.data());
    }
    kern::parallel_for(ctx, n, kern::GatherKey{rows, order.data(), keys.data()});
    thrust::stable_sort_by_key(policy, keys.data(), keys.data() + n, order.data());
    kern::parallel_for(ctx, n, kern::ClassHead{rows, order.data(), keys.data(), cls.data(), nullptr});
    scan(cls.data(), n);
    detail::copy_bytes(ctx, tail, Backend::host, cls.data() + (n - 1), ctx.backend(), sizeof(index_t));
  }
  const index_t classes = result.count = tail[0];
  if (!options.ids && !options.counts) return result;

  // Classes in key order: where each starts in `order` and its first row; then renumbered in
  // order of first rows (perm[j] = key-order class of class j, relabel its inverse).
  Array<index_t> start(ctx, {classes}), first(ctx, {classes}), perm(ctx, {classes}), relabel(ctx, {classes});
  kern::parallel_for(ctx, n, kern::ClassStart{order.data(), cls.data(), start.data(), first.data()});
  kern::parallel_for(ctx, classes, kern::Iota{perm.data()});
  thrust::stable_sort_by_key(policy, first.data(), first.data() + classes, perm.data());
  kern::parallel_for(ctx, classes, kern::InvertPermutation{perm.data(), relabel.data()});
  if (options.ids) {
    result.ids = Array<std::int64_t>(ctx, {n});
    kern::parallel_for(ctx, n, kern::ScatterIds{order.data(), cls.data(), relabel.data(), result.ids.data()});
  }
  if (options.counts) {
    result.counts = Array<std::int64_t>(ctx, {classes});
    kern::parallel_for(ctx, classes, kern::ClassCount{perm.data(), start.data(), classes, n, result.counts.data()});
    result.first = std::move(first);
  }
  return result;
}

// out(i, j) = src(rows[i], j); NaN for an index outside [0, n) (never read).
template <class T>
struct GatherRow {
  MatrixView<const T> src;
  const std::int64_t* rows;
  index_t stride;
  MatrixView<T> out;
  DYNASCOPE_HD void operator()(index_t i, index_t j) const {
    const std::int64_t r = rows[i * stride];
    out(i, j) = (r >= 0 && r < src.rows) ? src(r, j) : static_cast<T>(NAN);
  }
};

// out[i] = src[idx[i]]; -1 for an index outside [0, n).
struct GatherInt64 {
  VectorView<const std::int64_t> src, idx;
  VectorView<std::int64_t> out;
  DYNASCOPE_HD void operator()(index_t i) const {
    const std::int64_t k = idx[i];
    out[i] = (k >= 0 && k < src.size) ? src[k] : std::int64_t(-1);
  }
};

// Host only: the first index outside [0, n) is an error, found before anything is written.
void check_indices(const Context& ctx, VectorView<const std::int64_t> idx, index_t n, const char* call,
                   const char* name, const char* what) {
  if (!ctx.is_host()) return;
  for (index_t i = 0; i < idx.size; ++i) {
    const std::int64_t v = idx[i];
    if (v < 0 || v >= n)
      throw InvalidArgument(std::string(call) + ": " + name + "[" + std::to_string(i) + "] = " + std::to_string(v) +
                            " is outside [0, " + std::to_string(n) + ") (the " + what + ")");
  }
}

}  // namespace

template <class T>
void gather_rows(const Context& ctx, MatrixView<const T> src, VectorView<const std::int64_t> rows, MatrixView<T> out) {
  constexpr const char* call = "primitives::gather_rows";
  detail::check_matrix(ctx, src, call, "src");
  detail::check_vector(ctx, rows, call, "rows");
  detail::check_matrix(ctx, out, call, "out");
  if (out.rows != rows.size || out.cols != src.cols)
    throw ShapeMismatch(std::string(call) + ": out must be " + detail::dims(rows.size, src.cols) +
                        " (one row per index, src's columns), got " + detail::dims(out.rows, out.cols));
  check_indices(ctx, rows, src.rows, call, "rows", "rows of src");
  kern::parallel_for_2d(ctx, out.rows, out.cols, GatherRow<T>{src, rows.data, rows.stride, out});
}

void gather(const Context& ctx, VectorView<const std::int64_t> src, VectorView<const std::int64_t> idx,
            VectorView<std::int64_t> out) {
  constexpr const char* call = "primitives::gather";
  detail::check_vector(ctx, src, call, "src");
  detail::check_vector(ctx, idx, call, "idx");
  detail::check_vector(ctx, out, call, "out");
  if (out.size != idx.size)
    throw ShapeMismatch(std::string(call) + ": out must have one element per index (" + std::to_string(idx.size) +
                        "), got " + std::to_string(out.size));
  check_indices(ctx, idx, src.size, call, "idx", "elements of src");
  kern::parallel_for(ctx, out.size, GatherInt64{src, idx, out});
}

template void gather_rows<float>(const Context&, MatrixView<const float>, VectorView<const std::int64_t>,
                                 MatrixView<float>);
template void gather_rows<double>(const Context&, MatrixView<const double>, VectorView<const std::int64_t>,
                                  MatrixView<double>);

#define DS_ROW_REDUCTIONS(T, Out)                                                                             \
  void row_sums(const Context& ctx, MatrixView<const T> a, VectorView<Out> out) {                            \
    check_rows_out(ctx, a, out, "primitives::row_sums");                                                      \
    kern::segmented_sum(ctx, a.rows, a.cols, kern::RowEntry<T>{a}, out);                                      \
  }                                                                                                           \
  void row_squared_norms(const Context& ctx, MatrixView<const T> a, VectorView<Out> out) {                   \
    check_rows_out(ctx, a, out, "primitives::row_squared_norms");                                             \
    kern::segmented_sum(ctx, a.rows, a.cols, kern::RowSquare<T>{a}, out);                                     \
  }                                                                                                           \
  void row_squared_distances(const Context& ctx, MatrixView<const T> a, VectorView<const T> x,               \
                             VectorView<Out> out) {                                                           \
    const char* call = "primitives::row_squared_distances";                                                  \
    check_rows_out(ctx, a, out, call);                                                                        \
    detail::check_vector(ctx, x, call, "x");                                                                  \
    if (x.size != a.cols)                                                                                     \
      throw ShapeMismatch(std::string(call) + ": x must have one element per column of A (" +                \
                          std::to_string(a.cols) + "), got " + std::to_string(x.size));                      \
    kern::segmented_sum(ctx, a.rows, a.cols, kern::RowSquaredDistance<T>{a, x}, out);                         \
  }
DS_ROW_REDUCTIONS(float, float)
DS_ROW_REDUCTIONS(float, double)
DS_ROW_REDUCTIONS(double, double)
#undef DS_ROW_REDUCTIONS

DistinctRows distinct_rows(const Context& ctx, MatrixView<const std::uint64_t> rows,
                           const DistinctRowsOptions& options) {
  detail::check_matrix(ctx, rows, "primitives::distinct_rows", "rows");
  if (ctx.is_cuda()) {
#if defined(__CUDACC__)
    kern::CudaDeviceScope device(ctx.device());  // Thrust launches on the current device
    const auto stream = static_cast<cudaStream_t>(ctx.stream());
    try {
      const auto scan = [&ctx](index_t* data, index_t n) { device_inclusive_scan(ctx, data, n); };
      return distinct_rows_with(ctx, thrust::cuda::par_nosync(ContextAllocator{&ctx}).on(stream), scan, rows, options);
    } catch (const thrust::system_error& e) {
      // Thrust reports CUDA failures in its own exception type; give them ours.
      if (e.code().category() != thrust::cuda_category()) throw;
      cuda_detail::throw_cuda(static_cast<cudaError_t>(e.code().value()), "Thrust's sort in primitives::distinct_rows",
                              __FILE__, __LINE__);
    }
#else
    kern::throw_not_compiled_for_cuda("primitives::distinct_rows");
#endif
  }
  HostThreads threads(ctx);
  const auto scan = [](index_t* data, index_t n) { thrust::inclusive_scan(thrust::omp::par, data, data + n, data); };
  return distinct_rows_with(ctx, thrust::omp::par, scan, rows, options);
}

}  // namespace dynascope::primitives
