// Local complexity: cross-polytope vertices through the network, sign changes per neuron.
//
// Cost for N samples, P directions and a network of widths d_0..d_L: the forward pass of the 2PN
// vertices, 2 * 2PN * sum_l d_{l-1} d_l flops in GEMMs (the whole cost for any real network), and
// 2PN * sum_l d_l sign comparisons. Memory per sample in a tile: the vertices and every layer's
// z and a (2P (d_0 + 2 sum_l d_l) values), the flags of the widest layer, and a per-sample frame.
#include "dynascope/regions.hpp"

#include <algorithm>
#include <string>

#include "core/checks.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/error.hpp"
#include "kernels/launch.cuh"
#include "kernels/regions.cuh"
#include "regions/frames.hpp"

namespace dynascope::regions {
namespace {

constexpr const char* kCall = "local_complexity";
constexpr index_t kHostTileRows = 8192;

void throw_non_finite(const Array<std::int32_t>& host_counts, index_t layers, const char* call) {
  for (index_t i = 0; i < host_counts.size(); ++i)
    if (host_counts.data()[i] < 0)
      throw InvalidArgument(std::string(call) + ": sample " + std::to_string(i / layers) +
                            " gives a NaN or infinite pre-activation in layer " + std::to_string(i % layers + 1) +
                            " (non-finite inputs or parameters, or an overflow)");
}

}  // namespace

template <class T>
Array<T> random_frame(const Context& ctx, index_t inputs, index_t dims, std::uint64_t seed, Frame kind, index_t sample) {
  if (kind == Frame::given) throw InvalidArgument("random_frame: Frame::given is the caller's frame, not a random one");
  if (dims < 1 || dims > inputs)
    throw InvalidArgument("random_frame: dims (P) must be between 1 and the input width " + std::to_string(inputs) +
                          ", got " + std::to_string(dims));
  if (sample < 0) throw InvalidArgument("random_frame: sample must be >= 0");
  const bool per_sample = kind == Frame::per_sample;
  Array<int> deficient = Array<int>::zeros(ctx, {1});
  Array<double> f = framing::draw(ctx, inputs, dims, seed, per_sample, per_sample ? sample : 0, 1, deficient.data());
  framing::check_deficient(ctx, deficient, seed, "random_frame", "--seed");
  Array<T> out(ctx, {dims, inputs});
  const double* src = f.data();
  T* dst = out.data();
  kern::parallel_for(ctx, dims * inputs, [=] DYNASCOPE_HD(index_t i) { dst[i] = static_cast<T>(src[i]); });
  return out;
}

template <class T>
LcResult local_complexity(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x,
                          const LcOptions& options, MatrixView<const T> frame) {
  spec.validate();
  const index_t n = x.rows;
  const index_t d = spec.inputs();
  const index_t layers = spec.layers();
  detail::check_matrix(ctx, x, n, d, kCall, "x");
  framing::check_radius(options.radius, kCall);
  const bool per_sample = options.frame == Frame::per_sample;
  Array<int> deficient = Array<int>::zeros(ctx, {1});
  Array<double> shared;
  const index_t p = framing::directions(ctx, options, frame, d, kCall, framing::Width::network, &shared);
  if (options.frame != Frame::given && !per_sample)
    shared = framing::draw(ctx, d, p, options.seed, false, 0, 1, deficient.data());

  LcResult result;
  result.dims = p;
  result.radius = options.radius;
  result.counts = Array<std::int32_t>(ctx, {n, layers});
  const index_t vertices = 2 * p;

  // Tile so that a tile's vertices, engine buffers, flags and frames fit the workspace budget.
  index_t widths_sum = 0, widest = 0;
  for (index_t l = 1; l <= layers; ++l) {
    widths_sum += spec.widths[std::size_t(l)];
    widest = std::max(widest, spec.widths[std::size_t(l)]);
  }
  const std::size_t per_sample_bytes = std::size_t(vertices) * std::size_t(d + 2 * widths_sum) * sizeof(T) +
                                       std::size_t(widest) * sizeof(std::int32_t) +
                                       (per_sample ? std::size_t(p * d) * sizeof(double) : 0);
  const std::size_t budget = ctx.workspace_budget();
  if (n > 0 && budget < per_sample_bytes)
    throw OutOfMemory(std::string(kCall) + ": the workspace budget of " + std::to_string(budget) +
                      " bytes cannot hold the vertices and activations of one sample (" +
                      std::to_string(per_sample_bytes) + " bytes); raise it or lower P");
  index_t tile = std::max<index_t>(1, std::min<index_t>(n, static_cast<index_t>(budget / per_sample_bytes)));
  // On the host, at most kHostTileRows vertex rows per tile: the buffers (allocated by the first
  // tile, reused by the others) then take tens of MB instead of the whole budget, so a call does
  // not first-touch (page-fault and zero) hundreds of MB, and the sign test reads z from cache.
  // GEMMs of this many rows already run at the BLAS's full rate.
  if (ctx.is_host()) tile = std::min(tile, std::max<index_t>(1, kHostTileRows / vertices));

  model::MlpEngine<T> engine(ctx, spec);
  Array<T> verts;
  Array<std::int32_t> flags;
  MatrixView<std::int32_t> counts = result.counts.matrix();
  for (index_t s0 = 0; s0 < n; s0 += tile) {
    const index_t m = std::min(tile, n - s0);
    Array<double> own;
    const double* frames = shared.data();
    if (per_sample) {
      own = framing::draw(ctx, d, p, options.seed, true, s0, m, deficient.data());
      frames = own.data();
    }
    if (verts.size() < m * vertices * d) verts = Array<T>(ctx, {m * vertices, d});
    MatrixView<T> v{verts.data(), m * vertices, d, d, verts.backend(), verts.device()};
    kern::parallel_for_2d(ctx, m * vertices, d,
                          kern::CrossPolytopeVertices<T>{x.block(s0, 0, m, d), frames, p, options.radius, per_sample, v});
    engine.forward(params, v);
    if (!ctx.is_host() && flags.size() < m * widest) flags = Array<std::int32_t>(ctx, {m * widest});
    for (index_t l = 1; l <= layers; ++l) {
      if (ctx.is_host()) {
        kern::host_parallel_for(ctx, m, kern::SignChangeCountsRows<T>{engine.preactivation(l), vertices, counts, s0, l - 1},
                                16);
        continue;
      }
      const index_t w = spec.widths[std::size_t(l)];
      MatrixView<std::int32_t> fl{flags.data(), m, w, w, flags.backend(), flags.device()};
      kern::parallel_for_2d(ctx, m, w, kern::SignChangeFlags<T>{engine.preactivation(l), vertices, fl});
      kern::parallel_for(ctx, m, kern::CountFlags{fl, counts, s0, l - 1}, 64);
    }
    ctx.progress("local complexity", s0 + m, n);
  }

  if (options.frame != Frame::given) framing::check_deficient(ctx, deficient, options.seed, kCall, "--seed");
  const Array<std::int32_t> host = result.counts.to_host(ctx);
  throw_non_finite(host, layers, kCall);
  result.per_layer_mean.assign(std::size_t(layers), 0.0);
  double hidden = 0, all = 0;
  for (index_t i = 0; i < n; ++i)
    for (index_t l = 0; l < layers; ++l) {
      const double c = host.data()[i * layers + l];
      result.per_layer_mean[std::size_t(l)] += c;
      all += c;
      if (l + 1 < layers) hidden += c;
    }
  if (n > 0) {
    for (double& v : result.per_layer_mean) v /= double(n);
    result.total_mean = hidden / double(n);
    result.all_layers_mean = all / double(n);
  }
  return result;
}

template <class T>
Array<std::int32_t> first_layer_counts(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                       MatrixView<const T> x, MatrixView<const T> frame, double radius) {
  constexpr const char* call = "first_layer_counts";
  spec.validate();
  const index_t n = x.rows;
  const index_t d = spec.inputs();
  const index_t w = spec.fan_out(0);
  detail::check_matrix(ctx, x, n, d, call, "x");
  framing::check_radius(radius, call);
  (void)framing::given(ctx, frame, d, call, framing::Width::network);
  const index_t p = frame.rows;
  // a = c * frame W_1^T [P, w]: every direction through the first layer's weights.
  Array<T> a(ctx, {p, w});
  const MatrixView<const T> weights{params + spec.weight_offset(0), w, d, d, ctx.backend(), ctx.is_cuda() ? ctx.device() : 0};
  blas::gemm<T>(ctx, blas::Op::none, blas::Op::trans, static_cast<T>(spec.weight_scale(0)), frame, weights, T(0),
                a.matrix());
  Array<double> reach(ctx, {w});
  kern::parallel_for(ctx, w, kern::ColumnMaxAbs<T>{a.matrix(), reach.data()}, 64);
  Array<std::int32_t> counts(ctx, {n, 1});
  if (n == 0) return counts;
  // z_1 of the samples, tiled like the engine's own per-sample helpers.
  const std::size_t per_row = std::size_t(2 * d + 2 * w) * sizeof(T) + std::size_t(w) * sizeof(std::int32_t);
  const index_t tile = std::max<index_t>(1, std::min<index_t>(n, static_cast<index_t>(ctx.workspace_budget() / per_row)));
  model::MlpSpec first = spec;
  first.widths.resize(2);
  first.bias.resize(1);
  first.activations.clear();
  model::MlpEngine<T> engine(ctx, first);
  Array<std::int32_t> flags(ctx, {tile * w});
  MatrixView<std::int32_t> cm = counts.matrix();
  for (index_t s0 = 0; s0 < n; s0 += tile) {
    const index_t m = std::min(tile, n - s0);
    engine.forward(params, x.block(s0, 0, m, d));
    MatrixView<std::int32_t> fl{flags.data(), m, w, w, flags.backend(), flags.device()};
    kern::parallel_for_2d(ctx, m, w, kern::FirstLayerFlags<T>{engine.preactivation(1), reach.data(), radius, fl});
    kern::parallel_for(ctx, m, kern::CountFlags{fl, cm, s0, 0}, 64);
  }
  throw_non_finite(counts.to_host(ctx), 1, call);
  counts.reshape({n});
  return counts;
}

#define DYNASCOPE_INSTANTIATE(T)                                                                                   \
  template LcResult local_complexity<T>(const Context&, const model::MlpSpec&, const T*, MatrixView<const T>,     \
                                        const LcOptions&, MatrixView<const T>);                                   \
  template Array<std::int32_t> first_layer_counts<T>(const Context&, const model::MlpSpec&, const T*,            \
                                                     MatrixView<const T>, MatrixView<const T>, double);           \
  template Array<T> random_frame<T>(const Context&, index_t, index_t, std::uint64_t, Frame, index_t);
DYNASCOPE_INSTANTIATE(float)
DYNASCOPE_INSTANTIATE(double)
#undef DYNASCOPE_INSTANTIATE

}  // namespace dynascope::regions
