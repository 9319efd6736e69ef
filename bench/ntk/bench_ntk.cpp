// The empirical NTK of an MLP 784-512-512-10 (float32): each method at the sizes it can finish,
// modes trace and full. Counters: gflop (the method's cost model, NtkInfo::flops: for structured
// the work it must do, see the model in src/ntk/ntk.cpp), flops (that count over the time, a
// rate), of_sgemm (that rate over this binary's sgemm rate), and for structured the Gram products
// alone (gram_rate, FLOP/s, and gram_of_sgemm).
#include <benchmark/benchmark.h>

#include "bench_util.hpp"
#include "dynascope/ntk.hpp"

namespace {

using namespace dynascope;

struct Setup {
  Context ctx = Context::host();
  model::MlpSpec spec = model::MlpSpec::from_arch("784-512-512-10", model::parse_activation("relu"));
  Array<float> params, x;
  explicit Setup(index_t n) {
    ctx.set_workspace_budget(std::size_t(2) << 30);
    params = model::init_params<float>(ctx, spec, {});
    x = Array<float>(ctx, {n, 784});
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 7919) % 256) / 255.0f;
  }
};

void BM_ntk(benchmark::State& state) {
  const index_t n = state.range(0);
  const auto method = static_cast<ntk::Method>(state.range(1));
  const auto mode = static_cast<ntk::Outputs>(state.range(2));
  Setup s(n);
  const auto shape = ntk::kernel_shape(mode, n, n, 10);
  std::vector<float> out(std::size_t(shape.rows * shape.cols));
  bench::Timer timer;
  ntk::NtkInfo info;
  double gram_flops = 0, gram_seconds = 0;
  for (auto _ : state) {
    auto scope = timer.scope();
    info = ntk::empirical_ntk_into<float>(s.ctx, s.spec, s.params.data(), s.x.matrix(), std::nullopt, {mode, method},
                                          {out.data(), shape.rows, shape.cols, shape.cols});
    gram_flops += info.gram_flops;
    gram_seconds += info.gram_seconds;
  }
  timer.report(state, info.flops);
  if (gram_seconds > 0) {
    state.counters["gram_rate"] = benchmark::Counter(gram_flops / gram_seconds, benchmark::Counter::kDefaults, benchmark::Counter::kIs1000);
    state.counters["gram_of_sgemm"] = gram_flops / gram_seconds * 1e-9 / bench::sgemm_gflops();
  }
  state.counters["tiles"] = double(info.tiles);
  state.counters["gflop"] = info.flops * 1e-9;
  state.SetLabel(std::string(ntk::to_string(method)) + " " + ntk::to_string(mode) + " N=" + std::to_string(n));
}

constexpr int kStructured = int(ntk::Method::structured), kJvp = int(ntk::Method::jvp), kJacobian = int(ntk::Method::jacobian);
constexpr int kTrace = int(ntk::Outputs::trace), kFull = int(ntk::Outputs::full);

// structured at every size; jvp and jacobian (O(N^2 O^2 P) work: ~70 s at N = 256 here) at the
// small sizes they finish in a benchmark's time. Both costs grow as N^2, so their ratio holds.
// structured: repeated calls (steady state: each call allocates its own buffers, as a user's
// does); the slow methods and the largest size once.
BENCHMARK(BM_ntk)
    ->ArgsProduct({{256, 1024}, {kStructured}, {kTrace, kFull}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(1.0);
BENCHMARK(BM_ntk)
    ->ArgsProduct({{4096}, {kStructured}, {kTrace}})
    ->ArgsProduct({{64, 256}, {kJacobian, kJvp}, {kTrace}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(1);

// The same call on problems small enough that fixed costs show: the C++ side of the Python
// package's per-call overhead (bench/python/package_overhead.py runs the same problems through
// `dynascope.ntk` and subtracts this). One host thread, float64 as the package's example; args:
// N, hidden width, inputs. Arch inputs-width-width-4.
void BM_ntk_small(benchmark::State& state) {
  const index_t n = state.range(0), width = state.range(1), inputs = state.range(2);
  const Context ctx = Context::host(1);
  const auto spec = model::MlpSpec::from_arch(std::to_string(inputs) + "-" + std::to_string(width) + "-" +
                                                  std::to_string(width) + "-4",
                                              model::parse_activation("relu"));
  const Array<double> params = model::init_params<double>(ctx, spec, {});
  Array<double> x(ctx, {n, inputs});
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = double((i * 7919) % 256) / 255.0;
  std::vector<double> out(std::size_t(n * n));
  for (auto _ : state) {
    ntk::empirical_ntk_into<double>(ctx, spec, params.data(), x.matrix(), std::nullopt,
                                    {ntk::Outputs::trace, ntk::Method::automatic}, {out.data(), n, n, n});
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel("trace N=" + std::to_string(n) + " arch " + spec.arch_string() + " float64 1 thread");
}
BENCHMARK(BM_ntk_small)->Args({8, 16, 8})->Args({64, 64, 16})->Args({100, 512, 784})->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
