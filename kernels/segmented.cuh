#pragma once
// Segmented sums: out[s] = sum_{i < length} body(s, i) for every segment s < segments, summed in
// float64 and rounded once into out's type — e.g. the losses or the squared norms of C chains in
// one call. `body` is a small __host__ __device__ functor returning something convertible to
// double; `out` lives on ctx's backend and may be strided (a column of a trace, say).
//
// Every segment is cut into tiles of a fixed number of items; each tile is summed on its own and
// the tile sums are added in tile order. The cut depends on `length` only, so segment s gets the
// same bits whatever the thread count and however many segments are summed with it.
//   host: tiles shared among threads, eight running sums per tile, tile sums added in order.
//   cuda: a warp per tile (CUB WarpReduce), writing out[s] directly when a segment is one tile,
//         else tile sums to scratch and a second launch with a warp per segment. No host
//         synchronisation: the scratch is freed in stream order (the context's allocator is
//         stream-ordered by contract).
// A NaN item makes its own segment NaN and no other; a segment of length 0 sums to 0.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/launch.cuh"

#if defined(__CUDACC__)
#include <cub/warp/warp_reduce.cuh>

#include "kernels/cuda_check.cuh"
#endif

namespace dynascope::kern {

inline constexpr index_t kHostSegmentTile = 4096;
inline constexpr index_t kDeviceSegmentTile = 1024;  // 32 items per lane

template <class F>
double host_tile_sum(const F& body, index_t s, index_t begin, index_t end) {
  // Eight independent add chains in a fixed order: one chain would be bound by the add latency.
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  index_t i = begin;
  for (; i + 8 <= end; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(body(s, i + k));
  for (int k = 0; i < end; ++i, ++k) acc[k] += static_cast<double>(body(s, i));
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// The host half of segmented_sum, for bodies that never run on a device.
template <class F, class Out>
void host_segmented_sum(const Context& ctx, index_t segments, index_t length, F body, VectorView<Out> out) {
  if (segments <= 0) return;
  if (length <= 0) {
    for (index_t s = 0; s < segments; ++s) out[s] = Out(0);
    return;
  }
  const index_t tiles = (length + kHostSegmentTile - 1) / kHostSegmentTile;
  const index_t per_unit = std::min(length, kHostSegmentTile);
  // Threads only when the whole job is worth a fork/join (kSerialBelow items).
  const index_t serial_below = std::max<index_t>(2, (kSerialBelow + per_unit - 1) / per_unit);
  if (tiles == 1) {
    host_parallel_for(
        ctx, segments, [&](index_t s) { out[s] = static_cast<Out>(host_tile_sum(body, s, 0, length)); },
        serial_below);
    return;
  }
  std::vector<double> partial(static_cast<std::size_t>(segments * tiles));
  double* p = partial.data();
  host_parallel_for(
      ctx, segments * tiles,
      [&](index_t u) {
        const index_t s = u / tiles, t = u % tiles;
        p[u] = host_tile_sum(body, s, t * kHostSegmentTile, std::min(length, (t + 1) * kHostSegmentTile));
      },
      serial_below);
  for (index_t s = 0; s < segments; ++s) {
    double total = p[s * tiles];
    for (index_t t = 1; t < tiles; ++t) total += p[s * tiles + t];
    out[s] = static_cast<Out>(total);
  }
}

// Scratch memory from the context's allocator for the length of a scope. On cuda the block is
// freed in stream order, so work queued on it before the scope ends may still use it.
struct ScopedScratch {
  ScopedScratch(const Context& context, std::size_t size) : ctx(context), p(ctx.allocate(size)), bytes(size) {}
  ~ScopedScratch() { ctx.deallocate(p, bytes); }
  ScopedScratch(const ScopedScratch&) = delete;
  ScopedScratch& operator=(const ScopedScratch&) = delete;
  const Context& ctx;
  void* p;
  std::size_t bytes;
};

template <class Out>
struct FillZero {
  VectorView<Out> out;
  DYNASCOPE_HD void operator()(index_t i) const { out[i] = Out(0); }
};

#if defined(__CUDACC__)
inline constexpr int kSegmentWarps = 8;  // warps per block

// Warp u sums tile t of segment s (u = s * tiles + t) into partial[u], or into out[s] when
// partial is null (then tiles == 1).
template <class F, class Out>
__global__ void __launch_bounds__(kSegmentWarps * 32)
    segment_tiles_kernel(index_t segments, index_t length, index_t tiles, F body, double* partial,
                         VectorView<Out> out) {
  using WarpReduce = cub::WarpReduce<double>;
  __shared__ typename WarpReduce::TempStorage temp[kSegmentWarps];
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const index_t units = segments * tiles;
  for (index_t u = static_cast<index_t>(blockIdx.x) * kSegmentWarps + warp; u < units;
       u += static_cast<index_t>(gridDim.x) * kSegmentWarps) {
    const index_t s = u / tiles, begin = (u - s * tiles) * kDeviceSegmentTile;
    const index_t end = length < begin + kDeviceSegmentTile ? length : begin + kDeviceSegmentTile;
    double acc = 0;
    for (index_t i = begin + lane; i < end; i += 32) acc += static_cast<double>(body(s, i));
    const double sum = WarpReduce(temp[warp]).Sum(acc);
    __syncwarp();  // temp[warp] is reused by this warp's next tile
    if (lane == 0) {
      if (partial) partial[u] = sum;
      else out[s] = static_cast<Out>(sum);
    }
  }
}

// Warp s adds the tile sums of segment s, lane by lane in a fixed order, and writes out[s].
template <class Out>
__global__ void __launch_bounds__(kSegmentWarps * 32)
    segment_combine_kernel(index_t segments, index_t tiles, const double* partial, VectorView<Out> out) {
  using WarpReduce = cub::WarpReduce<double>;
  __shared__ typename WarpReduce::TempStorage temp[kSegmentWarps];
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  for (index_t s = static_cast<index_t>(blockIdx.x) * kSegmentWarps + warp; s < segments;
       s += static_cast<index_t>(gridDim.x) * kSegmentWarps) {
    double acc = 0;
    for (index_t t = lane; t < tiles; t += 32) acc += partial[s * tiles + t];
    const double sum = WarpReduce(temp[warp]).Sum(acc);
    __syncwarp();
    if (lane == 0) out[s] = static_cast<Out>(sum);
  }
}

inline unsigned segment_grid(index_t warps) {
  return static_cast<unsigned>(std::min<index_t>((warps + kSegmentWarps - 1) / kSegmentWarps, 65536));
}
#endif

template <class F, class Out>
void segmented_sum(const Context& ctx, index_t segments, index_t length, F body, VectorView<Out> out) {
  if (segments <= 0) return;
  if (!ctx.is_cuda()) {
    host_segmented_sum(ctx, segments, length, body, out);
    return;
  }
#if defined(__CUDACC__)
  const CudaDeviceScope device(ctx.device());
  if (length <= 0) {
    parallel_for(ctx, segments, FillZero<Out>{out});
    return;
  }
  const auto stream = static_cast<cudaStream_t>(ctx.stream());
  const index_t tiles = (length + kDeviceSegmentTile - 1) / kDeviceSegmentTile;
  if (tiles == 1) {
    segment_tiles_kernel<<<segment_grid(segments), kSegmentWarps * 32, 0, stream>>>(segments, length, 1, body,
                                                                                     nullptr, out);
    DYNASCOPE_CUDA_CHECK(cudaGetLastError());
    return;
  }
  const ScopedScratch scratch(ctx, static_cast<std::size_t>(segments * tiles) * sizeof(double));
  double* partial = static_cast<double*>(scratch.p);
  segment_tiles_kernel<<<segment_grid(segments * tiles), kSegmentWarps * 32, 0, stream>>>(segments, length, tiles,
                                                                                          body, partial, out);
  DYNASCOPE_CUDA_CHECK(cudaGetLastError());
  segment_combine_kernel<<<segment_grid(segments), kSegmentWarps * 32, 0, stream>>>(segments, tiles, partial, out);
  DYNASCOPE_CUDA_CHECK(cudaGetLastError());
#else
  throw_not_compiled_for_cuda(__func__);
#endif
}

// ---- bodies of the row reductions (primitives::row_*) ----

// A(s, i)
template <class T>
struct RowEntry {
  MatrixView<const T> a;
  DYNASCOPE_HD double operator()(index_t s, index_t i) const { return static_cast<double>(a(s, i)); }
};

// A(s, i)^2
template <class T>
struct RowSquare {
  MatrixView<const T> a;
  DYNASCOPE_HD double operator()(index_t s, index_t i) const {
    const double v = static_cast<double>(a(s, i));
    return v * v;
  }
};

// (A(s, i) - x_i)^2
template <class T>
struct RowSquaredDistance {
  MatrixView<const T> a;
  VectorView<const T> x;
  DYNASCOPE_HD double operator()(index_t s, index_t i) const {
    const double d = static_cast<double>(a(s, i)) - static_cast<double>(x[i]);
    return d * d;
  }
};

}  // namespace dynascope::kern
