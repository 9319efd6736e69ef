// Batched SGLD chains (include/dynascope/sgld.hpp), float32: chain-steps per second of
// estimate_llc on a whole run (burn-in + draws, everything included: minibatch draws, the batched
// forward/backward, the fused update and the per-chain bookkeeping), with the network's flops as a
// rate ("flops") and as a fraction of this machine's sgemm rate ("of_sgemm"). Cases named *_cuda
// run on device 0 (device time between CUDA events) and are skipped where no device is usable.
//
//  small   a 2-layer ReLU regression network 10-24-2 (314 parameters, the problem of bench/python/devinterp_llc.py), n = 1000, full batch
//          (every chain sees all samples: the inputs are shared), arg = chains C (1, 8, 64, 512).
//          The peer (bench/python/devinterp_llc.py) runs the same problem with devinterp.
//  mnist   784-1024-1024-10 (1.86 M parameters), cross-entropy, n = 4096 Fashion-MNIST-sized
//          random inputs, minibatches of m = 512 per chain and step, 12 steps (6 burn-in, 6 draws), arg = chains (1, 2, 8).
//
// Flops per chain-step: forward 2 m Σ_l d_{l-1} d_l, backward 2 m Σ_{l>=2} d_{l-1} d_l (no input
// gradient), weight gradients 2 m Σ_l d_{l-1} d_l.
#include <benchmark/benchmark.h>

#include <cmath>
#include <optional>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "dynascope/array.hpp"
#include "dynascope/model.hpp"
#include "dynascope/sgld.hpp"

namespace {

using namespace dynascope;

double step_flops(const model::MlpSpec& spec, index_t m) {
  double all = 0, first = 0;
  for (index_t l = 0; l < spec.layers(); ++l) {
    const double p = double(spec.fan_in(l)) * double(spec.fan_out(l));
    all += p;
    if (l == 0) first = p;
  }
  return 2.0 * double(m) * (3 * all - first);
}

struct Problem {
  model::MlpSpec spec;
  Array<float> params, x, y;
  Array<std::int64_t> labels;
  index_t n = 0;
};

Problem make(const Context& ctx, const std::string& arch, index_t n, bool classify) {
  Problem p;
  p.spec = model::MlpSpec::from_arch(arch);
  p.n = n;
  model::InitOptions io;
  io.seed = 3;
  p.params = model::init_params<float>(ctx, p.spec, io);
  std::mt19937_64 gen(5);
  std::normal_distribution<float> nd;
  std::vector<float> x(std::size_t(n * p.spec.inputs()));
  for (auto& v : x) v = nd(gen);
  p.x = Array<float>::from_host(ctx, {n, p.spec.inputs()}, x);
  if (classify) {
    std::vector<std::int64_t> l(static_cast<std::size_t>(n));
    for (auto& v : l) v = std::int64_t(gen() % std::uint64_t(p.spec.outputs()));
    p.labels = Array<std::int64_t>::from_host(ctx, {n}, l);
  } else {
    std::vector<float> y(std::size_t(n * p.spec.outputs()));
    for (auto& v : y) v = nd(gen);
    p.y = Array<float>::from_host(ctx, {n, p.spec.outputs()}, y);
  }
  return p;
}

void run(benchmark::State& state, Backend backend, const std::string& arch, index_t n, index_t batch, index_t steps,
         bool classify) {
  const std::optional<Context> ctx = bench::context_for(state, backend);
  if (!ctx) return;
  const Problem p = make(*ctx, arch, n, classify);
  sgld::LlcOptions o;
  o.chains = state.range(0);
  o.burnin = steps / 2;
  o.draws = steps - steps / 2;
  o.batch = batch;
  o.epsilon = 1e-5;
  o.gamma = 100;
  model::Targets<float> t;
  if (classify)
    t.labels = p.labels.vector();
  else
    t.values = p.y.matrix();
  const model::Loss loss = classify ? model::Loss::xent : model::Loss::mse;
  bench::IterationTimer timer(*ctx);
  double llc = 0;
  for (auto _ : state) {
    auto scope = timer.time(state);
    llc = sgld::estimate_llc<float>(*ctx, p.spec, p.params.data(), p.x.matrix(), t, loss, o).llc_mean;
  }
  const double chain_steps = double(o.chains) * double(steps);
  state.counters["chain_steps"] = benchmark::Counter(chain_steps, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["params"] = double(p.spec.num_params());
  state.counters["m"] = double(batch > 0 ? batch : n);
  state.counters["llc"] = llc;
  const double flops = chain_steps * step_flops(p.spec, batch > 0 ? batch : n);
  state.counters["flops"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["of_sgemm"] = timer.seconds > 0 ? flops * double(state.iterations()) / timer.seconds * 1e-9 /
                                                       bench::sgemm_gflops()
                                                 : 0;
}

void small(benchmark::State& s) { run(s, Backend::host, "10-24-2", 1000, 0, 200, false); }
void small_cuda(benchmark::State& s) { run(s, Backend::cuda, "10-24-2", 1000, 0, 200, false); }
void mnist(benchmark::State& s) { run(s, Backend::host, "784-1024-1024-10", 4096, 512, 12, true); }
void mnist_cuda(benchmark::State& s) { run(s, Backend::cuda, "784-1024-1024-10", 4096, 512, 12, true); }

BENCHMARK(small)->Arg(1)->Arg(8)->Arg(64)->Arg(512)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(small_cuda)->Arg(1)->Arg(8)->Arg(64)->Arg(512)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(mnist)->Arg(1)->Arg(2)->Arg(8)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(mnist_cuda)->Arg(1)->Arg(2)->Arg(8)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
