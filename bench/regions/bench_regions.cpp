// Linear regions (include/dynascope/regions.hpp), float32. Every case runs on host (wall time)
// and as *_cuda (device time between CUDA events on the context's stream; skipped with "no CUDA
// device" where none is usable). The problem size sits next to the rates in the counters.
//
//  lc             local complexity of N = 1024 samples (uniform in [0, 1)^784) of an MLP
//                 784-200x4-10 (relu), P = 25, one shared frame: samples/s, and the vertex
//                 propagation's flops 2 (2PN) sum_l d_{l-1} d_l as a rate ("flops") and as a
//                 fraction ("of_sgemm") of the rate of one GEMM of the first layer's shape,
//                 [2PN, 784] x [784, 200] with the engine's operands (z = a W^T), measured in the
//                 same case on the same backend ("sgemm"). lc_mean is the mean count over hidden
//                 layers (a check that the radius makes the count non-trivial). Arg: the
//                 workspace budget in MiB (1024, the default, holds all N samples in one tile;
//                 256 down to 16 tile them, counter "tile" = samples per tile).
//  lc_forward     the forward pass alone of the same 2PN vertices: an engine kept across
//                 iterations (arg 0), or a fresh one per iteration as local_complexity builds it
//                 (arg 1: first-touch of its z and a buffers included). lc minus this is what
//                 local_complexity adds around the GEMMs (vertices, sign kernel, allocations).
//  lc_gemm        the bare GEMM of layer l (arg l = 1..5) on preallocated buffers, or all five
//                 back to back (arg 0): the best the forward pass can do with this BLAS. Every
//                 lc* case's "sgemm" is the first layer's GEMM shape above, whatever it times.
//  patterns       count_patterns of 10^6 points uniform in [-1.5, 1.5]^2, networks 2-64-64-2
//                 (arg 64) and 2-256-256-2 (arg 256): samples/s and the distinct counts.
//  distinct_rows  primitives::distinct_rows on those points' bit-packed patterns (every hidden
//                 layer, as count_patterns' whole-network count): rows/s. The packing here is
//                 this file's own and its count is checked against count_patterns'.
//  plane_regions  the exact partition of the square [-1.5, 1.5]^2 by a 2-64-64-2 network at
//                 initialisation (arg 0) or trained on two spirals as the demo does (arg 1):
//                 regions/s, the region count and the regions the decision boundary crosses. The
//                 work is float64 on the host on either backend (the _cuda case reads the
//                 parameters from the device, as the CLI would).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dynascope/array.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/datasets.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/model.hpp"
#include "dynascope/primitives.hpp"
#include "dynascope/random.hpp"
#include "dynascope/regions.hpp"
#include "dynascope/train.hpp"

namespace {

using namespace dynascope;

constexpr index_t kLcSamples = 1024;
constexpr index_t kLcDims = 25;
// Inputs in [0, 1)^784 and torch.nn.Linear's initialisation: 8 to 18 sign changes per hidden layer
// and sample at this radius (lc_mean ~ 50 over the four hidden layers), well clear of 0 and of
// the widths.
constexpr double kLcRadius = 0.75;

struct LcProblem {
  model::MlpSpec spec = model::MlpSpec::from_arch("784-200-200-200-200-10", model::parse_activation("relu"));
  Array<float> params, x;
  explicit LcProblem(const Context& ctx) {
    params = model::init_params<float>(ctx, spec, {});
    x = Array<float>(ctx, {kLcSamples, spec.inputs()});
    random::fill_uniform<float>(ctx, {7, 0, 0}, x.vector());
  }
  index_t rows() const { return 2 * kLcDims * kLcSamples; }
  // 2 (2PN) sum_l d_{l-1} d_l: the forward GEMMs of every vertex.
  double flops() const {
    double macs = 0;
    for (index_t l = 0; l < spec.layers(); ++l) macs += double(spec.fan_in(l)) * double(spec.fan_out(l));
    return 2.0 * double(rows()) * macs;
  }
  MatrixView<const float> weight(index_t l) const {  // layer l = 0..L-1, [d_{l+1}, d_l]
    return {params.data() + spec.weight_offset(l), spec.fan_out(l), spec.fan_in(l), spec.fan_in(l), params.backend(),
            params.device()};
  }
};

// FLOP/s of C [m, n] = A [m, k] B^T (B [n, k]) on ctx: best of 5 timings of `reps` back-to-back
// calls closed by a synchronize (so the launch overhead of one call is amortised on cuda).
double gemm_nt_rate(const Context& ctx, index_t m, index_t n, index_t k) {
  Array<float> a(ctx, {m, k}), b(ctx, {n, k}), c(ctx, {m, n});
  random::fill_uniform<float>(ctx, {1, 1, 0}, a.vector());
  random::fill_uniform<float>(ctx, {1, 2, 0}, b.vector());
  const auto run = [&] { blas::gemm<float>(ctx, blas::Op::none, blas::Op::trans, 1.0f, a.matrix(), b.matrix(), 0.0f, c.matrix()); };
  const int reps = ctx.is_cuda() ? 10 : 1;
  run();
  ctx.synchronize();
  double best = 1e300;
  for (int t = 0; t < 5; ++t) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) run();
    ctx.synchronize();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps);
  }
  return 2.0 * double(m) * double(n) * double(k) / best;
}

void rate(benchmark::State& state, const char* name, double per_iteration) {
  state.counters[name] = benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                                            benchmark::Counter::kIs1000);
}

// The vertex-propagation rate of a case as a rate and as a fraction of the sgemm rate.
void report_flops(benchmark::State& state, const bench::IterationTimer& timer, double flops, double sgemm) {
  rate(state, "flops", flops);
  const double achieved = timer.seconds > 0 ? flops * double(state.iterations()) / timer.seconds : 0;
  state.counters["sgemm"] = benchmark::Counter(sgemm, benchmark::Counter::kDefaults, benchmark::Counter::kIs1000);
  state.counters["of_sgemm"] = achieved / sgemm;
}

void lc_sizes(benchmark::State& state, const LcProblem& p) {
  state.counters["N"] = double(kLcSamples);
  state.counters["P"] = double(kLcDims);
  state.counters["rows"] = double(p.rows());
}

template <Backend B>
void BM_lc(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  // Workspace budget in MiB (the library's default is 1 GiB: one tile of all N samples here).
  const auto budget = std::size_t(state.range(0)) << 20;
  Context c = *ctx;
  c.set_workspace_budget(budget);
  LcProblem p(c);
  regions::LcOptions o;
  o.dims = kLcDims;
  o.radius = kLcRadius;
  const double sgemm = gemm_nt_rate(c, p.rows(), p.spec.fan_out(0), p.spec.inputs());
  regions::LcResult r = regions::local_complexity<float>(c, p.spec, p.params.data(), p.x.matrix(), o);  // warm-up
  bench::IterationTimer timer(c);
  for (auto _ : state) {
    auto scope = timer.time(state);
    r = regions::local_complexity<float>(c, p.spec, p.params.data(), p.x.matrix(), o);
  }
  rate(state, "samples", double(kLcSamples));
  report_flops(state, timer, p.flops(), sgemm);
  lc_sizes(state, p);
  state.counters["lc_mean"] = r.total_mean;
  // local_complexity's tile as src/regions/local_complexity.cpp sizes it: the samples whose
  // vertices, z and a of every layer and sign flags fit the budget.
  index_t widths = 0, widest = 0;
  for (index_t l = 1; l <= p.spec.layers(); ++l) {
    widths += p.spec.widths[std::size_t(l)];
    widest = std::max(widest, p.spec.widths[std::size_t(l)]);
  }
  const std::size_t per_sample = std::size_t(2 * kLcDims) * std::size_t(p.spec.inputs() + 2 * widths) * sizeof(float) +
                                 std::size_t(widest) * sizeof(std::int32_t);
  state.counters["tile"] = double(std::min<index_t>(kLcSamples, index_t(budget / per_sample)));
  state.SetLabel("workspace budget " + std::to_string(state.range(0)) + " MiB");
}

// The 2PN vertices x_s +- r v_p of the shared frame, built on the host (row s * 2P + 2p is
// x_s + r v_p, 2p + 1 is x_s - r v_p, as local_complexity orders them) and copied to ctx.
Array<float> lc_vertices(const Context& ctx, const LcProblem& p) {
  const Context host = Context::host();
  const index_t d = p.spec.inputs();
  const std::vector<float> x = p.x.to_vector(ctx);
  const std::vector<float> f = regions::random_frame<float>(host, d, kLcDims, 0).to_vector(host);
  Array<float> v(host, {p.rows(), d});
  for (index_t s = 0; s < kLcSamples; ++s)
    for (index_t q = 0; q < 2 * kLcDims; ++q) {
      const float sign = q % 2 ? -1.0f : 1.0f;
      float* row = v.data() + (s * 2 * kLcDims + q) * d;
      for (index_t c = 0; c < d; ++c)
        row[c] = x[std::size_t(s * d + c)] + sign * float(kLcRadius) * f[std::size_t((q / 2) * d + c)];
    }
  return v.to(ctx);
}

template <Backend B>
void BM_lc_forward(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  const bool fresh = state.range(0) != 0;
  LcProblem p(*ctx);
  const Array<float> v = lc_vertices(*ctx, p);
  const double sgemm = gemm_nt_rate(*ctx, p.rows(), p.spec.fan_out(0), p.spec.inputs());
  model::MlpEngine<float> kept(*ctx, p.spec);
  kept.forward(p.params.data(), v.matrix());
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    if (fresh) {
      auto scope = timer.time(state);
      model::MlpEngine<float> engine(*ctx, p.spec);
      engine.forward(p.params.data(), v.matrix());
    } else {
      auto scope = timer.time(state);
      kept.forward(p.params.data(), v.matrix());
    }
  }
  report_flops(state, timer, p.flops(), sgemm);
  lc_sizes(state, p);
  state.SetLabel(fresh ? "engine per iteration" : "engine kept");
}

template <Backend B>
void BM_lc_gemm(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  const index_t layer = state.range(0);  // 1..L, or 0 for all
  LcProblem p(*ctx);
  const index_t m = p.rows(), layers = p.spec.layers();
  std::vector<Array<float>> act;  // act[l]: [m, d_l], the input of layer l + 1
  for (index_t l = 0; l <= layers; ++l) {
    act.emplace_back(*ctx, Shape{m, p.spec.widths[std::size_t(l)]});
    random::fill_uniform<float>(*ctx, {3, std::uint32_t(l), 0}, act.back().vector());
  }
  const index_t first = layer == 0 ? 0 : layer - 1, last = layer == 0 ? layers : layer;
  double flops = 0;
  for (index_t l = first; l < last; ++l) flops += 2.0 * double(m) * double(p.spec.fan_in(l)) * double(p.spec.fan_out(l));
  const auto run = [&] {
    for (index_t l = first; l < last; ++l)
      blas::gemm<float>(*ctx, blas::Op::none, blas::Op::trans, 1.0f, act[std::size_t(l)].matrix(), p.weight(l), 0.0f,
                        act[std::size_t(l + 1)].matrix());
  };
  run();
  const double sgemm = gemm_nt_rate(*ctx, m, p.spec.fan_out(0), p.spec.inputs());
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    run();
  }
  report_flops(state, timer, flops, sgemm);
  state.counters["m"] = double(m);
  if (layer > 0) {
    state.counters["k"] = double(p.spec.fan_in(layer - 1));
    state.counters["n"] = double(p.spec.fan_out(layer - 1));
  }
  state.SetLabel(layer == 0 ? "all layers" : "layer " + std::to_string(layer));
}

// ---- activation patterns of a 2-D-input network --------------------------------------------------

constexpr index_t kPatternSamples = 1000000;

struct PatternProblem {
  model::MlpSpec spec;
  Array<float> params, x;
  PatternProblem(const Context& ctx, index_t width)
      : spec(model::MlpSpec::from_arch("2-" + std::to_string(width) + "-" + std::to_string(width) + "-2",
                                       model::parse_activation("relu"))) {
    params = model::init_params<float>(ctx, spec, {});
    x = Array<float>(ctx, {kPatternSamples, 2});
    random::fill_uniform<float>(ctx, {11, 0, 0}, x.vector(), -1.5f, 1.5f);
  }
};

template <Backend B>
void BM_patterns(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  PatternProblem p(*ctx, state.range(0));
  regions::PatternResult r = regions::count_patterns<float>(*ctx, p.spec, p.params.data(), p.x.matrix());
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    r = regions::count_patterns<float>(*ctx, p.spec, p.params.data(), p.x.matrix());
  }
  rate(state, "samples", double(kPatternSamples));
  state.counters["M"] = double(kPatternSamples);
  state.counters["distinct"] = double(r.distinct);
  for (std::size_t l = 0; l < r.distinct_per_layer.size(); ++l)
    state.counters["distinct_l" + std::to_string(l + 1)] = double(r.distinct_per_layer[l]);
  state.SetLabel(p.spec.arch_string());
}

// The packed patterns of every hidden layer ([M, W] words; word w of layer l holds bit b = 1 iff
// z_l(64 w + b) > 0, layers one after the other), computed on the host from the engine's
// pre-activations: independent of count_patterns' own packing kernel.
std::vector<std::uint64_t> packed_patterns(const PatternProblem& p, const Context& ctx, index_t& words) {
  const Context host = Context::host();
  const Array<float> params = p.params.to_host(ctx), x = p.x.to_host(ctx);
  const index_t hidden = p.spec.layers() - 1;
  words = 0;
  for (index_t l = 1; l <= hidden; ++l) words += (p.spec.widths[std::size_t(l)] + 63) / 64;
  std::vector<std::uint64_t> out(std::size_t(kPatternSamples * words), 0);
  model::MlpEngine<float> engine(host, p.spec);
  const index_t tile = 65536;
  for (index_t s0 = 0; s0 < kPatternSamples; s0 += tile) {
    const index_t n = std::min(tile, kPatternSamples - s0);
    engine.forward(params.data(), x.matrix().block(s0, 0, n, 2));
    index_t w0 = 0;
    for (index_t l = 1; l <= hidden; ++l) {
      const MatrixView<const float> z = engine.preactivation(l);
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < z.cols; ++j)
          if (z(i, j) > 0.0f) out[std::size_t((s0 + i) * words + w0 + j / 64)] |= std::uint64_t{1} << (j % 64);
      w0 += (z.cols + 63) / 64;
    }
  }
  return out;
}

template <Backend B>
void BM_distinct_rows(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  PatternProblem p(*ctx, state.range(0));
  index_t words = 0;
  const std::vector<std::uint64_t> host_rows = packed_patterns(p, *ctx, words);
  const Array<std::uint64_t> rows = Array<std::uint64_t>::from_host(*ctx, {kPatternSamples, words}, host_rows);
  const MatrixView<const std::uint64_t> view = rows.matrix();
  index_t count = primitives::distinct_rows(*ctx, view).count;
  const index_t expected = regions::count_patterns<float>(Context::host(), p.spec, p.params.to_host(*ctx).data(),
                                                          p.x.to_host(*ctx).matrix()).distinct;
  if (count != expected) {
    state.SkipWithError(("distinct_rows counts " + std::to_string(count) + " patterns, count_patterns " +
                         std::to_string(expected)).c_str());
    return;
  }
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    count = primitives::distinct_rows(*ctx, view).count;
  }
  rate(state, "rows", double(kPatternSamples));
  state.counters["M"] = double(kPatternSamples);
  state.counters["words"] = double(words);
  state.counters["distinct"] = double(count);
  state.SetLabel(p.spec.arch_string());
}

// ---- exact 2-D partition -------------------------------------------------------------------------

// A 2-64-64-2 relu network as initialised (torch.nn.Linear's scheme), or trained as the demo
// trains it: two spirals (512 points, radius about 1), full-batch Adam, lr 1e-2, 600 steps.
Array<float> plane_network(const Context& ctx, const model::MlpSpec& spec, bool trained, double& accuracy) {
  model::Mlp<float> net{spec, model::init_params<float>(ctx, spec, {}), {}};
  accuracy = -1;
  if (trained) {
    data::DatasetOptions d;
    d.samples = 512;
    model::TrainOptions<float> t;
    t.loss = model::Loss::xent;
    t.optimizer.kind = model::OptimizerKind::adam;
    t.optimizer.lr = 1e-2;
    t.steps = 600;
    accuracy = model::train<float>(ctx, net, data::load_dataset("spirals", d), t).final_accuracy;
  }
  return std::move(net.params);
}

template <Backend B>
void BM_plane_regions(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  const bool trained = state.range(0) != 0;
  const model::MlpSpec spec = model::MlpSpec::from_arch("2-64-64-2", model::parse_activation("relu"));
  double accuracy = -1;
  const Array<float> params = plane_network(*ctx, spec, trained, accuracy);
  // A, B, C of the square [-1.5, 1.5]^2, which holds the spirals (and the patterns cases' points).
  const std::array<double, 6> points{-1.5, -1.5, 1.5, -1.5, -1.5, 1.5};
  const MatrixView<const double> plane{points.data(), 3, 2, 2};
  regions::PlaneRegions r = regions::plane_regions<float>(*ctx, spec, params.data(), plane);
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    r = regions::plane_regions<float>(*ctx, spec, params.data(), plane);
  }
  const auto regions_found = double(r.polygons.size());
  rate(state, "regions", regions_found);
  state.counters["count"] = regions_found;
  state.counters["boundary"] = double(r.boundary_regions);
  if (trained) state.counters["train_acc"] = accuracy;
  state.SetLabel(spec.arch_string() + (trained ? " trained on spirals" : " at initialisation"));
}

void lc_case(benchmark::internal::Benchmark* b) { b->Unit(benchmark::kMillisecond)->UseManualTime(); }

// 1024 MiB: the default budget; the smaller ones tile the samples (counter "tile").
BENCHMARK(BM_lc<Backend::host>)->Name("lc")->Arg(1024)->Arg(256)->Arg(128)->Arg(64)->Arg(32)->Arg(16)->Apply(lc_case);
BENCHMARK(BM_lc<Backend::cuda>)->Name("lc_cuda")->Arg(1024)->Arg(256)->Arg(128)->Arg(64)->Arg(32)->Arg(16)->Apply(lc_case);
BENCHMARK(BM_lc_forward<Backend::host>)->Name("lc_forward")->Arg(0)->Arg(1)->Apply(lc_case);
BENCHMARK(BM_lc_forward<Backend::cuda>)->Name("lc_forward_cuda")->Arg(0)->Arg(1)->Apply(lc_case);
BENCHMARK(BM_lc_gemm<Backend::host>)->Name("lc_gemm")->DenseRange(0, 5)->Apply(lc_case);
BENCHMARK(BM_lc_gemm<Backend::cuda>)->Name("lc_gemm_cuda")->DenseRange(0, 5)->Apply(lc_case);
BENCHMARK(BM_patterns<Backend::host>)->Name("patterns")->Arg(64)->Arg(256)->Apply(lc_case);
BENCHMARK(BM_patterns<Backend::cuda>)->Name("patterns_cuda")->Arg(64)->Arg(256)->Apply(lc_case);
BENCHMARK(BM_distinct_rows<Backend::host>)->Name("distinct_rows")->Arg(64)->Arg(256)->Apply(lc_case);
BENCHMARK(BM_distinct_rows<Backend::cuda>)->Name("distinct_rows_cuda")->Arg(64)->Arg(256)->Apply(lc_case);
BENCHMARK(BM_plane_regions<Backend::host>)->Name("plane_regions")->Arg(0)->Arg(1)->Apply(lc_case);
BENCHMARK(BM_plane_regions<Backend::cuda>)->Name("plane_regions_cuda")->Arg(0)->Arg(1)->Apply(lc_case);

}  // namespace

BENCHMARK_MAIN();
