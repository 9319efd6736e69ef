// Spectra of an MLP 784-512-512-10 (float32 vectors, float64 projected problems):
//   dense_top20     top-20 of its 4096 x 4096 NTK Gram matrix: Lanczos vs the full dense solver
//   ntk_top20       top-20 of the NTK operator on N = 4096 without forming the kernel
//   hessian_top10   top-10 of the loss Hessian on 1024 samples (exact HVPs)
//   hessian_slq     stochastic Lanczos quadrature of that Hessian, m = 90, n_v = 10
// Counters: matvecs (operator applications), op_fraction (share of time inside the operator),
// max_residual (of ||A u - l u|| / |l_max|).
#include <benchmark/benchmark.h>

#include <chrono>

#include "bench_util.hpp"
#include "dynascope/curvature.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"
#include "dynascope/train.hpp"

namespace {

using namespace dynascope;

struct Net {
  Context ctx = Context::host();
  model::MlpSpec spec = model::MlpSpec::from_arch("784-512-512-10", model::parse_activation("relu"));
  Array<float> params;
  Net() { params = model::init_params<float>(ctx, spec, {}); }
  Array<float> inputs(index_t n) const {
    Array<float> x(ctx, {n, 784});
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float((i * 7919) % 256) / 255.0f;
    return x;
  }
};

// Times the operator's applications.
class Timed final : public linalg::LinearOperator<float> {
 public:
  explicit Timed(linalg::LinearOperator<float>& op) : op_(op) {}
  index_t size() const override { return op_.size(); }
  const Context& context() const override { return op_.context(); }
  index_t max_block() const override { return op_.max_block(); }
  void apply(MatrixView<const float> x, MatrixView<float> y) override {
    const auto t0 = std::chrono::steady_clock::now();
    op_.apply(x, y);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  double seconds = 0;

 private:
  linalg::LinearOperator<float>& op_;
};

// Runs eigsh under the benchmark loop and reports applications, restarts, the share of time in
// the operator and the largest relative residual.
void run_eigsh(benchmark::State& state, linalg::LinearOperator<float>& inner, const linalg::LanczosOptions& o) {
  Timed op(inner);
  linalg::EigenResult<float> r;
  double total = 0;
  for (auto _ : state) {
    op.seconds = 0;
    const auto t0 = std::chrono::steady_clock::now();
    r = linalg::eigsh<float>(op, o);
    total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  double mx = 0, lmax = 0;
  for (std::size_t i = 0; i < r.values.size(); ++i) {
    mx = std::max(mx, r.residuals[i]);
    lmax = std::max(lmax, std::abs(r.values[i]));
  }
  state.counters["matvecs"] = double(r.matvecs);
  state.counters["restarts"] = double(r.iterations);
  state.counters["op_fraction"] = total > 0 ? op.seconds / total : 0;
  state.counters["max_residual"] = mx / lmax;
  state.counters["converged"] = r.all_converged ? 1 : 0;
}

void BM_dense_top20(benchmark::State& state) {
  const bool lanczos = state.range(0) == 1;
  Net net;
  const index_t n = 4096;
  const Array<float> x = net.inputs(n);
  const auto k = ntk::empirical_ntk<float>(net.ctx, net.spec, net.params.data(), x.matrix());
  linalg::DenseOperator<float> op(net.ctx, k.kernel.matrix());
  linalg::LanczosOptions o;
  o.k = 20;
  o.tol = 1e-6;
  o.method = lanczos ? linalg::EigenMethod::lanczos : linalg::EigenMethod::dense;
  run_eigsh(state, op, o);
  state.SetLabel(lanczos ? "lanczos, n=4096, k=20, tol 1e-6" : "dense syevd, n=4096");
}

void BM_ntk_top20(benchmark::State& state) {
  Net net;
  const index_t n = 4096;
  const Array<float> x = net.inputs(n);
  ntk::NtkOperator<float> op(net.ctx, net.spec, net.params.data(), x.matrix());
  linalg::LanczosOptions o;
  o.k = 20;
  o.tol = 1e-5;
  o.block = state.range(0);
  run_eigsh(state, op, o);
  state.SetLabel("NTK operator, N*O = 40960, k=20, block " + std::to_string(o.block));
}

model::DeviceData<float> labelled(const Net& net, index_t n) {
  data::Dataset d;
  d.task = data::Task::classification;
  d.n = n;
  d.d = 784;
  d.outputs = 10;
  const Array<float> x = net.inputs(n);
  d.x.assign(x.data(), x.data() + x.size());
  for (index_t i = 0; i < n; ++i) d.labels.push_back(i % 10);
  return model::to_device<float>(net.ctx, d);
}

void BM_hessian_top10(benchmark::State& state) {
  Net net;
  const auto data = labelled(net, 1024);
  linalg::CurvatureOperator<float> op(net.ctx, linalg::Curvature::hessian, net.spec, net.params.data(), data.x.matrix(),
                                      data.targets(), model::Loss::xent);
  linalg::LanczosOptions o;
  o.k = 10;
  o.tol = 1e-4;
  o.block = state.range(0);
  run_eigsh(state, op, o);
  state.SetLabel("Hessian, P = 669706, N = 1024, k=10, block " + std::to_string(o.block));
}

void BM_hessian_slq(benchmark::State& state) {
  Net net;
  const auto data = labelled(net, 1024);
  linalg::CurvatureOperator<float> h(net.ctx, linalg::Curvature::hessian, net.spec, net.params.data(), data.x.matrix(),
                                     data.targets(), model::Loss::xent);
  Timed op(h);
  linalg::SpectralDensity d;
  double total = 0;
  for (auto _ : state) {
    op.seconds = 0;
    const auto t0 = std::chrono::steady_clock::now();
    d = linalg::slq<float>(op, {90, 10});
    total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  state.counters["matvecs"] = double(d.matvecs);
  state.counters["op_fraction"] = op.seconds / total;
  state.counters["trace"] = d.trace_estimate;
  state.SetLabel("SLQ m=90 n_v=10 on the Hessian, N = 1024");
}

BENCHMARK(BM_dense_top20)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_ntk_top20)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_hessian_top10)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_hessian_slq)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
