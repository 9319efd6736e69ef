// Local complexity and activation patterns from the caller's pre-activations: the library builds
// the cross-polytope vertices and does the sign test and the pattern counting; the caller's own
// network (any architecture, any framework) does the forward pass in between. The kernels are
// local_complexity's and count_patterns' (kernels/regions.cuh), so an Mlp handed back layer by
// layer gets their numbers exactly.
#include <algorithm>
#include <string>

#include "core/checks.hpp"
#include "dynascope/error.hpp"
#include "dynascope/primitives.hpp"
#include "dynascope/regions.hpp"
#include "kernels/launch.cuh"
#include "kernels/regions.cuh"
#include "regions/frames.hpp"

namespace dynascope::regions {
namespace {

// counts(first + s, column) <- tile(s, 0): the tile's counts go into the caller's column.
struct CopyColumn {
  MatrixView<const std::int32_t> tile;
  MatrixView<std::int32_t> counts;
  index_t first;
  index_t column;
  DYNASCOPE_HD void operator()(index_t s) const { counts(first + s, column) = tile(s, 0); }
};

}  // namespace

template <class T>
void cross_polytope_vertices(const Context& ctx, MatrixView<const T> x, const LcOptions& options, MatrixView<T> out,
                             index_t first_sample, MatrixView<const T> frame) {
  constexpr const char* call = "cross_polytope_vertices";
  detail::check_matrix(ctx, x, call, "x");
  const index_t m = x.rows, d = x.cols;
  framing::check_radius(options.radius, call);
  if (first_sample < 0)
    throw InvalidArgument(std::string(call) + ": first_sample must be >= 0, got " + std::to_string(first_sample));
  const bool per_sample = options.frame == Frame::per_sample;
  Array<double> frames;
  const index_t p = framing::directions(ctx, options, frame, d, call, framing::Width::samples, &frames);
  detail::check_matrix(ctx, out, m * 2 * p, d, call, "out");
  if (m == 0) return;
  if (options.frame != Frame::given) {
    Array<int> deficient = Array<int>::zeros(ctx, {1});
    frames = framing::draw(ctx, d, p, options.seed, per_sample, per_sample ? first_sample : 0, per_sample ? m : 1,
                           deficient.data());
    framing::check_deficient(ctx, deficient, options.seed, call, "seed");
  }
  kern::parallel_for_2d(ctx, m * 2 * p, d,
                        kern::CrossPolytopeVertices<T>{x, frames.data(), p, options.radius, per_sample, out});
}

template <class T>
void sign_change_counts(const Context& ctx, MatrixView<const T> z, index_t vertices, MatrixView<std::int32_t> counts,
                        index_t first, index_t column) {
  constexpr const char* call = "sign_change_counts";
  detail::check_matrix(ctx, z, call, "z");
  detail::check_matrix(ctx, counts, call, "counts");
  if (vertices < 2)
    throw InvalidArgument(std::string(call) + ": vertices (2P) must be at least 2, got " + std::to_string(vertices));
  if (z.rows % vertices != 0)
    throw ShapeMismatch(std::string(call) + ": z has " + std::to_string(z.rows) + " rows, not a multiple of the " +
                        std::to_string(vertices) + " vertices per sample");
  const index_t m = z.rows / vertices;
  if (first < 0 || first + m > counts.rows || column < 0 || column >= counts.cols)
    throw ShapeMismatch(std::string(call) + ": rows " + std::to_string(first) + ".." + std::to_string(first + m) +
                        " of column " + std::to_string(column) + " fall outside counts (" +
                        detail::dims(counts.rows, counts.cols) + ")");
  if (m == 0) return;
  // The tile's counts first, so that a NaN is reported before anything reaches the caller's
  // array, then copied into its column.
  Array<std::int32_t> tile(ctx, {m, 1});
  MatrixView<std::int32_t> tv = tile.matrix();
  if (ctx.is_host()) {
    kern::host_parallel_for(ctx, m, kern::SignChangeCountsRows<T>{z, vertices, tv, 0, 0}, 16);
  } else {
    Array<std::int32_t> flags(ctx, {m, z.cols});
    kern::parallel_for_2d(ctx, m, z.cols, kern::SignChangeFlags<T>{z, vertices, flags.matrix()});
    kern::parallel_for(ctx, m, kern::CountFlags{flags.matrix(), tv, 0, 0}, 64);
  }
  const Array<std::int32_t> host = tile.to_host(ctx);
  for (index_t s = 0; s < m; ++s)
    if (host.data()[s] < 0)
      throw InvalidArgument(std::string(call) + ": sample " + std::to_string(first + s) +
                            " has a NaN or infinite pre-activation (non-finite inputs or parameters, or an overflow)");
  kern::parallel_for(ctx, m, CopyColumn{tile.matrix(), counts, first, column}, 256);
}

template <class T>
void pack_signs(const Context& ctx, MatrixView<const T> z, MatrixView<std::uint64_t> packed, index_t first, index_t word0) {
  constexpr const char* call = "pack_signs";
  detail::check_matrix(ctx, z, call, "z");
  detail::check_matrix(ctx, packed, call, "packed");
  const index_t m = z.rows, words = pattern_words(z.cols);
  if (first < 0 || first + m > packed.rows || word0 < 0 || word0 + words > packed.cols)
    throw ShapeMismatch(std::string(call) + ": rows " + std::to_string(first) + ".." + std::to_string(first + m) +
                        ", words " + std::to_string(word0) + ".." + std::to_string(word0 + words) +
                        " fall outside packed (" + detail::dims(packed.rows, packed.cols) + ")");
  if (m == 0 || words == 0) return;
  Array<int> nonfinite = Array<int>::zeros(ctx, {1});
  kern::parallel_for_2d(ctx, m, words, kern::PackSigns<T>{z, packed.block(first, word0, m, words), nonfinite.data()});
  int bad = 0;
  detail::copy_bytes(ctx, &bad, Backend::host, nonfinite.data(), nonfinite.backend(), sizeof(int));
  if (bad)
    throw InvalidArgument(std::string(call) + ": a pre-activation of samples " + std::to_string(first) + ".." +
                          std::to_string(first + m - 1) + " is NaN (non-finite inputs or parameters, or an overflow)");
}

PatternResult count_packed_patterns(const Context& ctx, MatrixView<const std::uint64_t> packed,
                                    const std::vector<index_t>& layer_words, const PatternOptions& options) {
  constexpr const char* call = "count_packed_patterns";
  detail::check_matrix(ctx, packed, call, "packed");
  if (layer_words.empty() || layer_words.front() != 0 || layer_words.back() != packed.cols)
    throw InvalidArgument(std::string(call) + ": layer_words must run from 0 to the " + std::to_string(packed.cols) +
                          " words of a row");
  for (std::size_t l = 1; l < layer_words.size(); ++l)
    if (layer_words[l] < layer_words[l - 1])
      throw InvalidArgument(std::string(call) + ": layer_words must be ascending (entry " + std::to_string(l) + ")");
  const index_t m = packed.rows;
  PatternResult r;
  r.samples = m;
  primitives::DistinctRowsOptions all;
  all.ids = options.ids;
  primitives::DistinctRows d = primitives::distinct_rows(ctx, packed, all);
  r.distinct = d.count;
  if (options.ids) r.ids = std::move(d.ids);
  for (std::size_t l = 1; l < layer_words.size(); ++l) {
    const index_t w0 = layer_words[l - 1], wl = layer_words[l] - w0;
    r.distinct_per_layer.push_back(primitives::distinct_rows(ctx, packed.block(0, w0, m, wl)).count);
  }
  return r;
}

#define DYNASCOPE_INSTANTIATE(T)                                                                                     \
  template void cross_polytope_vertices<T>(const Context&, MatrixView<const T>, const LcOptions&, MatrixView<T>,     \
                                           index_t, MatrixView<const T>);                                            \
  template void sign_change_counts<T>(const Context&, MatrixView<const T>, index_t, MatrixView<std::int32_t>,        \
                                      index_t, index_t);                                                             \
  template void pack_signs<T>(const Context&, MatrixView<const T>, MatrixView<std::uint64_t>, index_t, index_t);
DYNASCOPE_INSTANTIATE(float)
DYNASCOPE_INSTANTIATE(double)
#undef DYNASCOPE_INSTANTIATE

}  // namespace dynascope::regions
