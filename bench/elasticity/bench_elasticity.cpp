// Local elasticity (include/dynascope/elasticity.hpp), float32: every (source, target) pair's
// output change after one SGD step on the source, for a 784-512-512-10 ReLU network with
// cross-entropy on labels (metric kl), in the step form (all N1 updated networks as one
// batched-parameters forward over the targets) and the ntk form (eta -> 0, the structured NTK
// contracted with dl/df layer by layer). Cases named *_cuda run on device 0 (device time between
// CUDA events) and are skipped where no device is usable. bench/python/torch_elasticity.py runs the reference per-source PyTorch
// loop (deepcopy, torch.optim.SGD step, forward the targets) on this problem and compares S_rel.
//
// Args: N1 sources, N2 targets, pairwise (0: output_changes alone, 1: pairwise = output_changes +
// the metric). 64 x 512 is the quick check (a second or two on 2 cores), 256 x 4096 the issue's
// problem (~10^12 flops in the step form).
//
// Counters:
//   pairs     (source, target) pairs per second
//   flops     the result's own `flops` field (the products the library did), as a rate
//   of_sgemm  that rate over this binary's sgemm rate (bench_util.hpp: 512 x 1024 x 1024)
//   model     the flop model below, as a rate (the same work counted independently of the
//             library's bookkeeping: a gap between `flops` and `model` means the library does more,
//             or less, than the direct algorithm)
//   model_of_sgemm  that rate over sgemm
//
// Flop model (P_w = sum_l d_{l-1} d_l, the weights' count; one multiply-add = 2 flops; the
// elementwise work, activations, softmax and the metric, is left out):
//   step  base forwards f(x1), f(x2):                 2 (N1 + N2) P_w
//         per-source gradients: backward (no input gradient) 2 N1 (P_w - d0 d1), weight
//         gradients as outer products 2 N1 P_w
//         the N1 updated networks over the targets and over their own source:
//                                                     2 N1 (N2 + 1) P_w     (dominant: 99.6%)
//         The library does less for sgd: the stepped first layer is W1 minus a rank-one matrix,
//         applied to z_1 directly (src/elasticity/first_layer_step.hpp), so its `flops` field is
//         ~2.4x below this model here while pairs/s rises; `model` keeps the direct algorithm's
//         count, so model/of_sgemm read as "the direct algorithm's work per second".
//   ntk   forwards f(x1), f(x2) (also the features' forwards): 2 (N1 + N2) P_w
//         the contraction layer by layer, never forming the O x O kernel blocks (with
//         delta_i^l = J_l(x1_i)^T dl_i/df and D_l(x') = df/dz_l(x') [O, d_l]):
//           the sources' backward (no input gradient) with 1 + O cotangent blocks: dl_i/df and
//           the O one-hot ones for D_l(x1_i), the self change's (1 block without x2)
//                                                     2 (1 + O) N1 (P_w - d0 d1)
//           the targets' O one-hot backward blocks:   2 O N2 (P_w - d0 d1)
//           per pair and layer <h_{l-1}(x'), h_{l-1}(x1_i)> and D_l(x') delta_i^l, as GEMMs:
//                                                     2 N1 N2 sum_l (d_{l-1} + O d_l)
//           the self changes, row dots:               2 N1 sum_l (d_{l-1} + O d_l)
//         The library repeats the forwards for the features (output_changes computes f(x1),
//         f(x2) before the form), so its `flops` is the model plus 2 (N1 + N2) P_w (~10% here).
//         The targets' features are computed once per group of sources (one group here: the
//         sources fit the budget). The kernel route, Theta(x2, x1) contracted with dl/df
//         afterwards, needs 2 N1 N2 sum_l (d_{l-1} + O^2 d_l) for the pairs: 8.6x the pair term.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dynascope/array.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/model.hpp"

namespace {

using namespace dynascope;

const char* const kArch = "784-512-512-10";

double model_flops(const model::MlpSpec& spec, elasticity::Form form, index_t n1, index_t n2) {
  double pw = 0, pair = 0;  // pair: sum_l (d_{l-1} + O d_l)
  const double o = double(spec.outputs());
  for (index_t l = 0; l < spec.layers(); ++l) {
    pw += double(spec.fan_in(l)) * double(spec.fan_out(l));
    pair += double(spec.fan_in(l)) + o * double(spec.fan_out(l));
  }
  const double first = double(spec.fan_in(0)) * double(spec.fan_out(0));
  const double a = double(n1), b = double(n2);
  if (form == elasticity::Form::step)
    return 2 * (a + b) * pw + 2 * a * (pw - first) + 2 * a * pw + 2 * a * (b + 1) * pw;
  // The bench always gives x2: the sources backpropagate 1 + O cotangent blocks.
  return 2 * (a + b) * pw + 2 * (1 + o) * a * (pw - first) + 2 * o * b * (pw - first) + 2 * a * b * pair +
         2 * a * pair;
}

struct Problem {
  model::MlpSpec spec;
  Array<float> params, x1, x2;
  Array<std::int64_t> labels1;
};

// Inputs in [0, 1] like pixels, labels uniform over the 10 classes; PyTorch's default init.
Problem make(const Context& ctx, index_t n1, index_t n2) {
  Problem p;
  p.spec = model::MlpSpec::from_arch(kArch, model::parse_activation("relu"));
  model::InitOptions io;
  io.seed = 3;
  p.params = model::init_params<float>(ctx, p.spec, io);
  std::mt19937_64 gen(5);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x1(std::size_t(n1 * p.spec.inputs())), x2(std::size_t(n2 * p.spec.inputs()));
  for (auto& v : x1) v = u(gen);
  for (auto& v : x2) v = u(gen);
  std::vector<std::int64_t> l(static_cast<std::size_t>(n1));
  for (auto& v : l) v = std::int64_t(gen() % std::uint64_t(p.spec.outputs()));
  p.x1 = Array<float>::from_host(ctx, {n1, p.spec.inputs()}, x1);
  p.x2 = Array<float>::from_host(ctx, {n2, p.spec.inputs()}, x2);
  p.labels1 = Array<std::int64_t>::from_host(ctx, {n1}, l);
  return p;
}

void run(benchmark::State& state, Backend backend, elasticity::Form form) {
  const std::optional<Context> ctx = bench::context_for(state, backend);
  if (!ctx) return;
  const index_t n1 = state.range(0), n2 = state.range(1);
  const bool pairwise = state.range(2) != 0;
  const Problem p = make(*ctx, n1, n2);
  model::Targets<float> t;
  t.labels = p.labels1.vector();
  elasticity::Options o;
  o.eta = 1e-2;
  o.form = form;
  o.loss = model::Loss::xent;
  o.metric = elasticity::Metric::kl;
  bench::IterationTimer timer(*ctx);
  double flops = 0, mean = 0;
  index_t undefined = 0;
  for (auto _ : state) {
    auto scope = timer.time(state);
    if (pairwise) {
      const elasticity::PairResult r =
          elasticity::pairwise<float>(*ctx, p.spec, p.params.data(), p.x1.matrix(), t, p.x2.matrix(), o);
      flops = r.flops;
      undefined = index_t(r.undefined_sources.size());
      double s = 0;
      index_t k = 0;
      for (index_t i = 0; i < r.s_rel.size(); ++i)
        if (r.s_rel.data()[i] == r.s_rel.data()[i]) s += r.s_rel.data()[i], ++k;
      mean = k > 0 ? s / double(k) : 0;
    } else {
      flops = elasticity::output_changes<float>(*ctx, p.spec, p.params.data(), p.x1.matrix(), t, p.x2.matrix(), o)
                  .flops;
    }
  }
  const double iters = double(state.iterations());
  state.counters["pairs"] =
      benchmark::Counter(double(n1) * double(n2), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["flops"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  const double modeled = model_flops(p.spec, form, n1, n2);
  state.counters["model"] =
      benchmark::Counter(modeled, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  if (timer.seconds > 0) {
    state.counters["of_sgemm"] = flops * iters / timer.seconds * 1e-9 / bench::sgemm_gflops();
    state.counters["model_of_sgemm"] = modeled * iters / timer.seconds * 1e-9 / bench::sgemm_gflops();
  }
  if (pairwise) {
    state.counters["mean_s_rel"] = mean;
    state.counters["undefined"] = double(undefined);
  }
  state.SetLabel(std::string(elasticity::to_string(form)) + (pairwise ? " pairwise" : " output_changes") +
                 " N1=" + std::to_string(n1) + " N2=" + std::to_string(n2) + " " + kArch);
}

void step(benchmark::State& s) { run(s, Backend::host, elasticity::Form::step); }
void ntk(benchmark::State& s) { run(s, Backend::host, elasticity::Form::ntk); }
void step_cuda(benchmark::State& s) { run(s, Backend::cuda, elasticity::Form::step); }
void ntk_cuda(benchmark::State& s) { run(s, Backend::cuda, elasticity::Form::ntk); }

// The quick check repeats for half a second; the problem (~1.4 * 10^12 flops per
// iteration in the step form) runs once.
void small(benchmark::internal::Benchmark* b) {
  b->Args({64, 512, 0})->Args({64, 512, 1});
  b->ArgNames({"N1", "N2", "pairwise"})->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.5);
}
void large(benchmark::internal::Benchmark* b) {
  b->Args({256, 4096, 0})->Args({256, 4096, 1});
  b->ArgNames({"N1", "N2", "pairwise"})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
}
BENCHMARK(step)->Apply(small);
BENCHMARK(ntk)->Apply(small);
BENCHMARK(step_cuda)->Apply(small);
BENCHMARK(ntk_cuda)->Apply(small);
BENCHMARK(step)->Apply(large);
BENCHMARK(ntk)->Apply(large);
BENCHMARK(step_cuda)->Apply(large);
BENCHMARK(ntk_cuda)->Apply(large);

}  // namespace

BENCHMARK_MAIN();
