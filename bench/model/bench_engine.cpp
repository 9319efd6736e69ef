// Forward, forward+backward and T-tangent JVP through MlpEngine on an MNIST-sized MLP
// (784-1024-1024-10, batch 512) and a small one (32-128-128-1), float32 and float64.
// Flop counts: forward sum_l 2 N a_l b_l; backward adds the parameter gradients (2 N a b per
// layer) and the delta propagation (2 N a b for layers 2..L); a JVP with T tangents costs
// 2 T N a b per layer plus 2 T N a b for layers 2..L.
#include <benchmark/benchmark.h>

#include "bench_util.hpp"
#include "dynascope/engine.hpp"

namespace {

using namespace dynascope;

struct Net {
  const char* arch;
  index_t batch;
};
const Net kNets[] = {{"784-1024-1024-10", 512}, {"32-128-128-1", 512}};

double layer_flops(const model::MlpSpec& s, index_t n, bool skip_first) {
  double f = 0;
  for (index_t l = skip_first ? 1 : 0; l < s.layers(); ++l) f += 2.0 * double(n) * double(s.fan_in(l)) * double(s.fan_out(l));
  return f;
}

template <class T>
struct Setup {
  Context ctx = Context::host();
  model::MlpSpec spec;
  Array<T> params, x, g, grads;
  index_t n;
  explicit Setup(const Net& net) : spec(model::MlpSpec::from_arch(net.arch, model::parse_activation("relu"))), n(net.batch) {
    params = model::init_params<T>(ctx, spec, {});
    x = Array<T>(ctx, {n, spec.inputs()});
    g = Array<T>(ctx, {n, spec.outputs()});
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = T(0.01) * T(i % 97);
    for (index_t i = 0; i < g.size(); ++i) g.data()[i] = T(0.1);
    grads = Array<T>(ctx, {1, spec.num_params()});
  }
};

template <class T>
void BM_forward(benchmark::State& state) {
  Setup<T> s(kNets[state.range(0)]);
  model::MlpEngine<T> e(s.ctx, s.spec);
  bench::Timer timer;
  for (auto _ : state) {
    auto scope = timer.scope();
    benchmark::DoNotOptimize(e.forward(s.params.data(), s.x.matrix()).data);
  }
  timer.report(state, layer_flops(s.spec, s.n, false));
  state.SetLabel(std::string(kNets[state.range(0)].arch) + " N=" + std::to_string(s.n));
}

template <class T>
void BM_forward_backward(benchmark::State& state) {
  Setup<T> s(kNets[state.range(0)]);
  model::MlpEngine<T> e(s.ctx, s.spec);
  bench::Timer timer;
  for (auto _ : state) {
    auto scope = timer.scope();
    e.forward(s.params.data(), s.x.matrix());
    e.backprop(s.params.data(), s.g.matrix());
    e.param_grads(s.grads.matrix());
    benchmark::DoNotOptimize(s.grads.data());
  }
  timer.report(state, 2 * layer_flops(s.spec, s.n, false) + layer_flops(s.spec, s.n, true));
  state.SetLabel(std::string(kNets[state.range(0)].arch) + " N=" + std::to_string(s.n));
}

template <class T>
void BM_jvp(benchmark::State& state) {
  Setup<T> s(kNets[state.range(0)]);
  const index_t t = state.range(1);
  model::MlpEngine<T> e(s.ctx, s.spec);
  Array<T> tangents(s.ctx, {t, s.spec.num_params()}), out(s.ctx, {t * s.n, s.spec.outputs()});
  for (index_t i = 0; i < tangents.size(); ++i) tangents.data()[i] = T(1e-3) * T(i % 13);
  e.forward(s.params.data(), s.x.matrix());
  bench::Timer timer;
  for (auto _ : state) {
    auto scope = timer.scope();
    e.jvp(s.params.data(), tangents.matrix(), out.matrix());
    benchmark::DoNotOptimize(out.data());
  }
  timer.report(state, double(t) * (layer_flops(s.spec, s.n, false) + layer_flops(s.spec, s.n, true)));
  state.SetLabel(std::string(kNets[state.range(0)].arch) + " N=" + std::to_string(s.n) + " T=" + std::to_string(t));
}

BENCHMARK(BM_forward<float>)->Name("forward/f32")->DenseRange(0, 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward<double>)->Name("forward/f64")->DenseRange(0, 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward_backward<float>)->Name("forward_backward/f32")->DenseRange(0, 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward_backward<double>)->Name("forward_backward/f64")->DenseRange(0, 1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_jvp<float>)->Name("jvp/f32")->Args({0, 8})->Args({1, 8})->Args({1, 64})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_jvp<double>)->Name("jvp/f64")->Args({0, 8})->Args({1, 8})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
