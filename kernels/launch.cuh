#pragma once
// The one launch primitive. parallel_for(ctx, n, body) calls body(i) for i in [0, n):
// on host through an OpenMP loop, on cuda through a grid-stride kernel on ctx's stream, with ctx's
// device current for the launch (the caller's current device is restored afterwards).
// `body` is a small __host__ __device__ functor (or extended lambda) over one work item.
//
// A translation unit that launches on cuda must be compiled by nvcc (list it with
// dynascope_kernel_sources in CMake); the same file compiles with g++ for the host backend.
#include <algorithm>
#include <cstdint>

#include <omp.h>

#include "dynascope/config.hpp"
#include "dynascope/context.hpp"
#include "dynascope/error.hpp"
#include "dynascope/view.hpp"

// A file that launches kernels but is compiled by the host compiler in a CUDA build would throw
// NotBuiltWithCuda on its first cuda launch: at run time, on a GPU only, never in CI. So in CUDA
// builds this header must be compiled by nvcc (list the file with dynascope_kernel_sources). A
// file that only ever launches on host contexts says so by defining DYNASCOPE_HOST_LAUNCH_ONLY
// before the include.
#if DYNASCOPE_WITH_CUDA && !defined(__CUDACC__) && !defined(DYNASCOPE_HOST_LAUNCH_ONLY)
#error "kernels/launch.cuh in a CUDA build needs nvcc: add this file to DYNASCOPE_KERNEL_SOURCES (dynascope_kernel_sources), or define DYNASCOPE_HOST_LAUNCH_ONLY if it launches on host contexts only"
#endif

#include <vector>

#if defined(__CUDACC__)
#include <cub/device/device_reduce.cuh>
#include <cuda_runtime.h>

#include "kernels/cuda_check.cuh"
#endif

namespace dynascope::kern {

// Below this many items a host loop runs serially: the fork/join would cost more than the
// elementwise work, and far more when another process holds a core the team waits for.
inline constexpr index_t kSerialBelow = index_t{1} << 15;

inline int host_threads(const Context& ctx) {
  return ctx.threads() > 0 ? ctx.threads() : omp_get_max_threads();
}

#if defined(__CUDACC__)
template <class F>
__global__ void grid_stride_kernel(index_t n, F body) {
  const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    body(i);
}
inline constexpr int kBlockSize = 256;
inline unsigned grid_size(index_t n) {
  // Enough blocks to fill any current GPU several times over; the loop strides the rest.
  return static_cast<unsigned>(std::min<index_t>((n + kBlockSize - 1) / kBlockSize, 65536));
}
#endif

[[noreturn]] DYNASCOPE_API void throw_not_compiled_for_cuda(const char* where);

// The host half of parallel_for, for bodies that never run on a device.
template <class F>
void host_parallel_for(const Context& ctx, index_t n, F body, index_t serial_below = kSerialBelow) {
  if (n < serial_below) {
    for (index_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(host_threads(ctx))
  for (index_t i = 0; i < n; ++i) body(i);
}

template <class F>
void parallel_for(const Context& ctx, index_t n, F body, index_t serial_below = kSerialBelow) {
  if (n <= 0) return;
  if (ctx.is_cuda()) {
#if defined(__CUDACC__)
    // A launch on a stream of another device than the current one fails.
    CudaDeviceScope on_device(ctx.device());
    grid_stride_kernel<<<grid_size(n), kBlockSize, 0, static_cast<cudaStream_t>(ctx.stream())>>>(n, body);
    DYNASCOPE_CUDA_CHECK(cudaGetLastError());
#else
    throw_not_compiled_for_cuda(__func__);
#endif
    return;
  }
  host_parallel_for(ctx, n, body, serial_below);
}

// body(i, j) for i in [0, rows), j in [0, cols): on host the rows are shared among threads and
// each row is one contiguous inner loop (so loop-invariant branches unswitch and the loop
// vectorizes); on cuda one grid-stride launch over rows * cols.
template <class F>
struct RowColumn {
  index_t cols;
  F body;
  DYNASCOPE_HD void operator()(index_t idx) const { body(idx / cols, idx % cols); }
};

template <class F>
void parallel_for_2d(const Context& ctx, index_t rows, index_t cols, F body) {
  if (rows <= 0 || cols <= 0) return;
  if (ctx.is_cuda()) {
    parallel_for(ctx, rows * cols, RowColumn<F>{cols, body});
    return;
  }
  const auto row = [=](index_t i) {
    for (index_t j = 0; j < cols; ++j) body(i, j);
  };
  if (rows * cols < kSerialBelow) {
    for (index_t i = 0; i < rows; ++i) row(i);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(host_threads(ctx))
  for (index_t i = 0; i < rows; ++i) row(i);
}

// A functor's rows: f(r, c) is one element (one launch on cuda), f.row(r) a whole row (on host the
// rows are shared among threads, serially below kSerialBelow elements as parallel_for_2d), so the
// host row loop can be written for the compiler to vectorize.
template <class F>
void all_rows(const Context& ctx, index_t rows, index_t cols, const F& f) {
  if (ctx.is_cuda()) {
    parallel_for_2d(ctx, rows, cols, f);
    return;
  }
  host_parallel_for(
      ctx, rows, [&f](index_t r) { f.row(r); }, (kSerialBelow + cols - 1) / (cols > 1 ? cols : 1));
}

// Sum of body(i) (a double) over i in [0, n), returned to the host (on cuda this waits for the
// stream). The host sum is deterministic: fixed blocks of items, blocks added in order, so the
// result does not depend on the thread count.
inline constexpr index_t kReduceBlock = 4096;

template <class F>
struct StoreValue {
  double* out;
  F body;
  DYNASCOPE_HD void operator()(index_t i) const { out[i] = body(i); }
};

template <class F>
double reduce_sum(const Context& ctx, index_t n, F body) {
  if (n <= 0) return 0.0;
  if (ctx.is_cuda()) {
#if defined(__CUDACC__)
    // The values go to a buffer through our own launcher, then CUB sums plain doubles: no caller
    // code runs inside CUB's kernels, and every byte comes from the context's allocator.
    CudaDeviceScope on_device(ctx.device());
    const auto stream = static_cast<cudaStream_t>(ctx.stream());
    std::size_t temp_bytes = 0;
    DYNASCOPE_CUDA_CHECK(cub::DeviceReduce::Sum(nullptr, temp_bytes, static_cast<const double*>(nullptr),
                                                static_cast<double*>(nullptr), n, stream));
    constexpr std::size_t kAlign = 256;
    const std::size_t values_bytes = (static_cast<std::size_t>(n) * sizeof(double) + kAlign - 1) / kAlign * kAlign;
    const std::size_t total = values_bytes + kAlign + temp_bytes;
    struct Scratch {
      const Context& ctx;
      void* p;
      std::size_t bytes;
      ~Scratch() { ctx.deallocate(p, bytes); }
    } scratch{ctx, ctx.allocate(total), total};
    double* values = static_cast<double*>(scratch.p);
    double* sum = reinterpret_cast<double*>(static_cast<char*>(scratch.p) + values_bytes);
    void* temp = static_cast<char*>(scratch.p) + values_bytes + kAlign;
    parallel_for(ctx, n, StoreValue<F>{values, body});
    DYNASCOPE_CUDA_CHECK(cub::DeviceReduce::Sum(temp, temp_bytes, static_cast<const double*>(values), sum, n, stream));
    double result = 0;
    DYNASCOPE_CUDA_CHECK(cudaMemcpyAsync(&result, sum, sizeof(double), cudaMemcpyDeviceToHost, stream));
    DYNASCOPE_CUDA_CHECK(cudaStreamSynchronize(stream));
    return result;
#else
    throw_not_compiled_for_cuda(__func__);
#endif
  }
  const index_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
  double* p = partial.data();
  host_parallel_for(
      ctx, blocks,
      [=](index_t b) {
        double s = 0;
        const index_t end = std::min(n, (b + 1) * kReduceBlock);
        for (index_t i = b * kReduceBlock; i < end; ++i) s += body(i);
        p[b] = s;
      },
      2);
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

}  // namespace dynascope::kern
