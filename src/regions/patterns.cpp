// Activation patterns: forward in tiles, pack the hidden layers' signs into 64-bit words, count
// distinct rows exactly (sort + unique). Samplers for the points whose patterns are counted.
//
// Layout: the pattern matrix is [M, W] words, layer l owning the column block [w_l, w_l + W_l)
// with W_l = ceil(d_l / 64); the whole-network pattern is the full row (padding bits are 0 in
// every row, so they never tell two patterns apart), a layer's pattern its block.
#include <cmath>
#include <string>

#include "core/checks.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/error.hpp"
#include "dynascope/primitives.hpp"
#include "dynascope/regions.hpp"
#include "kernels/launch.cuh"
#include "kernels/regions.cuh"

namespace dynascope::regions {

template <class T>
PatternResult count_patterns(const Context& ctx, const model::MlpSpec& spec, const T* params,
                             MatrixView<const T> samples, const PatternOptions& options) {
  constexpr const char* call = "count_patterns";
  spec.validate();
  const index_t m = samples.rows;
  detail::check_matrix(ctx, samples, m, spec.inputs(), call, "samples");
  const index_t hidden = spec.layers() - 1;
  std::vector<index_t> word_offset(std::size_t(hidden) + 1, 0);
  index_t widths_sum = 0;
  for (index_t l = 1; l <= hidden; ++l)
    word_offset[std::size_t(l)] = word_offset[std::size_t(l - 1)] + (spec.widths[std::size_t(l)] + 63) / 64;
  for (index_t l = 1; l <= spec.layers(); ++l) widths_sum += spec.widths[std::size_t(l)];
  const index_t words = word_offset.back();

  PatternResult r;
  r.samples = m;
  Array<std::uint64_t> packed(ctx, {m, words});
  Array<int> nonfinite = Array<int>::zeros(ctx, {1});
  // The engine keeps z and a of every layer for a tile; the packed rows are the output.
  const std::size_t per_row = std::size_t(spec.inputs() + 2 * widths_sum) * sizeof(T);
  // At most 16k rows a tile: larger tiles gain nothing on either backend and only fault in fresh
  // engine buffers (a 512 x 512 grid in one tile touched 270 MB).
  constexpr index_t kMaxTile = index_t{1} << 14;
  const index_t tile = std::max<index_t>(
      1, std::min<index_t>({m, kMaxTile, static_cast<index_t>(ctx.workspace_budget() / per_row)}));
  model::MlpEngine<T> engine(ctx, spec);
  MatrixView<std::uint64_t> pm{packed.data(), m, words, words, packed.backend(), packed.device()};
  for (index_t s0 = 0; s0 < m && hidden > 0; s0 += tile) {
    const index_t n = std::min(tile, m - s0);
    engine.forward(params, samples.block(s0, 0, n, samples.cols));
    for (index_t l = 1; l <= hidden; ++l) {
      const index_t w0 = word_offset[std::size_t(l - 1)], wl = word_offset[std::size_t(l)] - w0;
      kern::parallel_for_2d(ctx, n, wl, kern::PackSigns<T>{engine.preactivation(l), pm.block(s0, w0, n, wl), nonfinite.data()});
    }
    ctx.progress("activation patterns", s0 + n, m);
  }
  int bad = 0;
  detail::copy_bytes(ctx, &bad, Backend::host, nonfinite.data(), nonfinite.backend(), sizeof(int));
  if (bad)
    throw InvalidArgument(std::string(call) +
                          ": a hidden pre-activation is NaN (non-finite samples or parameters, or an overflow)");
  primitives::DistinctRowsOptions all;
  all.ids = options.ids;
  primitives::DistinctRows d = primitives::distinct_rows(ctx, MatrixView<const std::uint64_t>(pm), all);
  r.distinct = d.count;
  if (options.ids) r.ids = std::move(d.ids);
  for (index_t l = 1; l <= hidden; ++l) {
    const index_t w0 = word_offset[std::size_t(l - 1)], wl = word_offset[std::size_t(l)] - w0;
    r.distinct_per_layer.push_back(primitives::distinct_rows(ctx, MatrixView<const std::uint64_t>(pm.block(0, w0, m, wl))).count);
  }
  return r;
}

template <class T>
Array<T> plane_grid(const Context& ctx, MatrixView<const double> points, index_t resolution) {
  if (points.rows != 3 || points.backend != Backend::host)
    throw InvalidArgument("plane_grid: the plane needs 3 points [3, D] in host memory");
  if (resolution < 1 || resolution > 65536)
    throw InvalidArgument("plane_grid: the resolution must be between 1 and 65536, got " + std::to_string(resolution));
  const index_t d = points.cols;
  Array<double> m(Context::host(), {d, 3});
  for (index_t c = 0; c < d; ++c) {
    m.data()[3 * c] = points(1, c) - points(0, c);
    m.data()[3 * c + 1] = points(2, c) - points(0, c);
    m.data()[3 * c + 2] = points(0, c);
  }
  const Array<double> md = m.to(ctx);
  Array<T> out(ctx, {resolution * resolution, d});
  kern::parallel_for_2d(ctx, resolution * resolution, d, kern::PlaneGridPoints<T>{md.data(), resolution, out.matrix()});
  return out;
}

template <class T>
Array<T> segment_points(const Context& ctx, const double* x0, const double* x1, index_t inputs, index_t count) {
  if (count < 1) throw InvalidArgument("segment_points: count must be >= 1, got " + std::to_string(count));
  Array<double> e(Context::host(), {2, inputs});
  for (index_t c = 0; c < inputs; ++c) {
    e.data()[c] = x0[c];
    e.data()[inputs + c] = x1[c] - x0[c];
  }
  const Array<double> ed = e.to(ctx);
  Array<T> out(ctx, {count, inputs});
  kern::parallel_for_2d(ctx, count, inputs, kern::SegmentPoints<T>{ed.data(), count, out.matrix()});
  return out;
}

template <class T>
Array<T> ball_points(const Context& ctx, MatrixView<const T> anchors, double radius, index_t count, std::uint64_t seed) {
  detail::check_matrix(ctx, anchors, "ball_points", "anchors");
  if (!(radius > 0) || !std::isfinite(radius))
    throw InvalidArgument("ball_points: the radius must be a positive finite number, got " + std::to_string(radius));
  if (count < 1) throw InvalidArgument("ball_points: count must be >= 1, got " + std::to_string(count));
  Array<T> out(ctx, {anchors.rows * count, anchors.cols});
  kern::parallel_for(ctx, anchors.rows * count, kern::BallPoints<T>{anchors, count, radius, seed, out.matrix()}, 64);
  return out;
}

template <class T>
Array<T> cross_polytope_points(const Context& ctx, MatrixView<const T> anchors, double radius, index_t dims, index_t count,
                               std::uint64_t seed) {
  detail::check_matrix(ctx, anchors, "cross_polytope_points", "anchors");
  if (!(radius > 0) || !std::isfinite(radius))
    throw InvalidArgument("cross_polytope_points: the radius must be a positive finite number, got " + std::to_string(radius));
  if (count < 1) throw InvalidArgument("cross_polytope_points: count must be >= 1, got " + std::to_string(count));
  const Array<double> frame = random_frame<double>(ctx, anchors.cols, dims, seed);
  Array<T> out(ctx, {anchors.rows * count, anchors.cols});
  kern::parallel_for(ctx, anchors.rows * count,
                     kern::CrossPolytopePoints<T>{anchors, frame.data(), dims, count, radius, seed, out.matrix()}, 64);
  return out;
}

#define DYNASCOPE_INSTANTIATE(T)                                                                                     \
  template PatternResult count_patterns<T>(const Context&, const model::MlpSpec&, const T*, MatrixView<const T>,    \
                                           const PatternOptions&);                                                   \
  template Array<T> plane_grid<T>(const Context&, MatrixView<const double>, index_t);                               \
  template Array<T> segment_points<T>(const Context&, const double*, const double*, index_t, index_t);              \
  template Array<T> ball_points<T>(const Context&, MatrixView<const T>, double, index_t, std::uint64_t);        \
  template Array<T> cross_polytope_points<T>(const Context&, MatrixView<const T>, double, index_t, index_t,        \
                                             std::uint64_t);
DYNASCOPE_INSTANTIATE(float)
DYNASCOPE_INSTANTIATE(double)
#undef DYNASCOPE_INSTANTIATE

}  // namespace dynascope::regions
