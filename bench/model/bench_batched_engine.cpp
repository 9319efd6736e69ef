// One SGLD-style step of C parameter sets through BatchedMlpEngine: forward, per-set losses and
// their output gradients (batched_loss_and_grad), backprop and param_grads, float32, host.
//   small: 10-26-1 relu (313 parameters), n = 1000 full batch shared by every set (mse),
//          C = 1, 8, 64, 512; beside it the same work as C separate MlpEngine steps.
//   mnist: 784-1024-1024-10 relu, 512 rows per set (its own minibatch, xent), C = 1, 2, 8.
// Counters: chain_steps (sets stepped per second), flops (the GEMM flops: forward sum_l 2 N a_l b_l,
// parameter gradients the same, delta propagation 2 N a b for layers 2..L) and of_sgemm (that
// rate over this binary's sgemm rate at 512 x 1024 x 1024, which `sgemm` prints on its own).
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <vector>

#include "bench_util.hpp"
#include "dynascope/batched_engine.hpp"
#include "dynascope/engine.hpp"

namespace {

using namespace dynascope;

struct Model {
  const char* arch;
  index_t n;    // rows per set
  bool shared;  // one input block for every set (full batch) or C blocks (minibatches)
  model::Loss loss;
};
const Model kSmall{"10-26-1", 1000, true, model::Loss::mse};
const Model kMnist{"784-1024-1024-10", 512, false, model::Loss::xent};

double step_flops(const model::MlpSpec& s, index_t n) {
  double f = 0;
  for (index_t l = 0; l < s.layers(); ++l) {
    const double layer = 2.0 * double(n) * double(s.fan_in(l)) * double(s.fan_out(l));
    f += 2 * layer + (l > 0 ? layer : 0);
  }
  return f;
}

struct Step {
  Context ctx = Context::host();
  model::MlpSpec spec;
  index_t c, n, rows;
  Array<float> params, x, y, losses, g, grads;
  Array<std::int64_t> labels;
  model::Targets<float> targets;
  Step(const Model& m, index_t sets)
      : spec(model::MlpSpec::from_arch(m.arch, model::parse_activation("relu"))), c(sets), n(m.n),
        rows(m.shared ? m.n : sets * m.n) {
    const index_t P = spec.num_params();
    params = Array<float>(ctx, {c, P});
    const auto w = model::init_params<float>(ctx, spec, {});
    for (index_t k = 0; k < c; ++k)
      for (index_t i = 0; i < P; ++i) params.data()[k * P + i] = w.data()[i] * (1.0f + 0.01f * float(k % 7));
    x = Array<float>(ctx, {rows, spec.inputs()});
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = 0.01f * float(i % 97) - 0.4f;
    y = Array<float>(ctx, {m.shared ? n : c * n, spec.outputs()});
    for (index_t i = 0; i < y.size(); ++i) y.data()[i] = 0.1f * float(i % 13) - 0.6f;
    labels = Array<std::int64_t>(ctx, {m.shared ? n : c * n});
    for (index_t i = 0; i < labels.size(); ++i) labels.data()[i] = i % spec.outputs();
    if (m.loss == model::Loss::xent) targets.labels = labels.vector();
    else targets.values = y.matrix();
    losses = Array<float>(ctx, {c});
    g = Array<float>(ctx, {c * n, spec.outputs()});
    grads = Array<float>(ctx, {c, P});
  }
};

void report(benchmark::State& state, const bench::Timer& timer, const Step& s) {
  timer.report(state, double(s.c) * step_flops(s.spec, s.n));
  state.counters["chain_steps"] =
      benchmark::Counter(double(s.c), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.SetLabel(std::string(s.spec.arch_string()) + " N=" + std::to_string(s.n) + " C=" + std::to_string(s.c) +
                 " threads=" + std::to_string(omp_get_max_threads()));
}

void batched_step(benchmark::State& state, const Model& m) {
  Step s(m, state.range(0));
  model::BatchedMlpEngine<float> e(s.ctx, s.spec);
  bench::Timer timer;
  for (auto _ : state) {
    auto scope = timer.scope();
    const auto f = m.shared ? e.forward_shared(s.params.matrix(), s.x.matrix()) : e.forward(s.params.matrix(), s.x.matrix());
    model::batched_loss_and_grad<float>(s.ctx, m.loss, s.c, f, s.targets, s.losses.vector(), s.g.matrix());
    e.backprop(s.params.matrix(), s.g.matrix());
    e.param_grads(s.grads.matrix());
    benchmark::DoNotOptimize(s.grads.data());
  }
  report(state, timer, s);
}

// The same step as C separate MlpEngine calls, one set after another (what a chain loop does).
void separate_steps(benchmark::State& state, const Model& m) {
  Step s(m, state.range(0));
  model::MlpEngine<float> e(s.ctx, s.spec);
  const index_t P = s.spec.num_params(), O = s.spec.outputs();
  bench::Timer timer;
  for (auto _ : state) {
    auto scope = timer.scope();
    for (index_t k = 0; k < s.c; ++k) {
      const float* p = s.params.data() + k * P;
      const auto xk = m.shared ? s.x.matrix() : s.x.matrix().block(k * s.n, 0, s.n, s.spec.inputs());
      const auto f = e.forward(p, xk);
      model::Targets<float> t;
      if (m.loss == model::Loss::xent) t.labels = {s.labels.data() + (m.shared ? 0 : k * s.n), s.n, 1};
      else t.values = s.y.matrix().block(m.shared ? 0 : k * s.n, 0, s.n, O);
      const auto gk = s.g.matrix().block(k * s.n, 0, s.n, O);
      model::loss_and_grad<float>(s.ctx, m.loss, f, t, gk);
      e.backprop(p, gk);
      e.param_grads(s.grads.matrix().block(k, 0, 1, P));
    }
    benchmark::DoNotOptimize(s.grads.data());
  }
  report(state, timer, s);
}

void BM_small(benchmark::State& state) { batched_step(state, kSmall); }
void BM_small_separate(benchmark::State& state) { separate_steps(state, kSmall); }
void BM_mnist(benchmark::State& state) { batched_step(state, kMnist); }
void BM_mnist_separate(benchmark::State& state) { separate_steps(state, kMnist); }

// The reference: sgemm at 512 x 1024 x 1024 in this process (the of_sgemm denominator).
void BM_sgemm(benchmark::State& state) {
  const index_t m = 512, n = 1024, k = 1024;
  Context ctx = Context::host();
  std::vector<float> a(std::size_t(m * k), 0.5f), b(std::size_t(k * n), 0.25f), c(std::size_t(m * n));
  bench::Timer timer;
  for (auto _ : state) {
    auto scope = timer.scope();
    blas::gemm<float>(ctx, blas::Op::none, blas::Op::none, 1.0f, {a.data(), m, k, k}, {b.data(), k, n, n}, 0.0f,
                      {c.data(), m, n, n});
    benchmark::DoNotOptimize(c.data());
  }
  timer.report(state, 2.0 * double(m) * double(n) * double(k));
}

BENCHMARK(BM_small)->Name("step/small")->Arg(1)->Arg(8)->Arg(64)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_small_separate)->Name("step_separate/small")->Arg(1)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_mnist)->Name("step/mnist")->Arg(1)->Arg(2)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_mnist_separate)->Name("step_separate/mnist")->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_sgemm)->Name("sgemm/512x1024x1024")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
