// Spectra of an MLP 784-512-512-10 (float32 vectors, float64 projected problems):
//   dense_top20     top-20 of its 4096 x 4096 NTK Gram matrix: Lanczos vs the full dense solver
//   ntk_top20       top-20 of the NTK operator on N = 4096 without forming the kernel
//   hessian_top10   top-10 of the loss Hessian on 1024 samples (exact HVPs)
//   hessian_slq     stochastic Lanczos quadrature of that Hessian, m = 90, n_v = 10
// Counters: matvecs (operator applications), op_fraction (share of time inside the operator),
// max_residual (of ||A u - l u|| / |l_max|).
//
// One curvature product on the MLP 784-128-128-10 (ReLU, N = 1024, mean cross-entropy, float32,
// P = 118282), the problem PyTorch's double backward is compared with:
//   hvp/f32/K       exact Hessian times a block of K vectors, per vector
//   ggn/f32/K       Gauss-Newton times a block of K vectors, per vector
//   sgemm_shape/f32 blas::gemm at the shapes of the first layer's products, for reference
// Counters: model_flops (per vector, by the cost model in src/model/engine.cpp: with
// m_l = 2 N d_{l-1} d_l, the Hessian needs 2 m_1 + 6 sum_{l>=2} m_l and the Gauss-Newton
// 2 m_1 + 4 sum_{l>=2} m_l), flops (that count per second) and of_sgemm (its fraction of the
// sgemm rate at 512 x 1024 x 1024).
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

// ---- one product on 784-128-128-10, N = 1024 ----

struct Small {
  Context ctx = Context::host();
  model::MlpSpec spec = model::MlpSpec::from_arch("784-128-128-10", model::parse_activation("relu"));
  Array<float> params;
  model::DeviceData<float> data;
  Small() {
    params = model::init_params<float>(ctx, spec, {});
    data::Dataset d;
    d.task = data::Task::classification;
    d.n = 1024;
    d.d = 784;
    d.outputs = 10;
    for (index_t i = 0; i < d.n * d.d; ++i) d.x.push_back(float((i * 7919) % 256) / 255.0f);
    for (index_t i = 0; i < d.n; ++i) d.labels.push_back(i % 10);
    data = model::to_device<float>(ctx, d);
  }
};

// The cost model's flops per vector: m_l = 2 N d_{l-1} d_l; the first layer has no input tangent
// and sends no cotangent to the input.
double curvature_model_flops(const model::MlpSpec& s, index_t n, linalg::Curvature kind) {
  double f = 0;
  for (index_t l = 0; l < s.layers(); ++l) {
    const double m = 2.0 * double(n) * double(s.fan_in(l)) * double(s.fan_out(l));
    f += (l == 0 ? 2.0 : (kind == linalg::Curvature::hessian ? 6.0 : 4.0)) * m;
  }
  return f;
}

void run_curvature(benchmark::State& state, linalg::Curvature kind) {
  Small net;
  const index_t k = state.range(0), p = net.spec.num_params();
  linalg::CurvatureOperator<float> op(net.ctx, kind, net.spec, net.params.data(), net.data.x.matrix(),
                                      net.data.targets(), model::Loss::xent);
  Array<float> v(net.ctx, {k, p}), y(net.ctx, {k, p});
  for (index_t i = 0; i < v.size(); ++i) v.data()[i] = float((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
  op.apply(v.matrix(), y.matrix());  // warm: buffers sized
  bench::Timer timer;
  for (auto _ : state) {
    auto scope = timer.scope();
    op.apply(v.matrix(), y.matrix());
    benchmark::DoNotOptimize(y.data());
  }
  const double per_vector = curvature_model_flops(net.spec, 1024, kind);
  timer.report(state, per_vector * double(k));
  state.counters["model_flops"] = per_vector;
  state.counters["ms_per_vector"] = timer.seconds / double(state.iterations()) / double(k) * 1e3;
  state.SetLabel(std::string(kind == linalg::Curvature::hessian ? "Hessian" : "Gauss-Newton") +
                 ", 784-128-128-10 relu, N = 1024, xent, P = " + std::to_string(p) + ", block " + std::to_string(k));
}
void BM_hvp(benchmark::State& state) { run_curvature(state, linalg::Curvature::hessian); }
void BM_ggn(benchmark::State& state) { run_curvature(state, linalg::Curvature::gauss_newton); }

// The first layer's two products: the tangent x Wdot^T [1024,784]x[784,128]^T and the weight
// gradient dd^T x [128,1024]x[1024,784].
void BM_sgemm_shape(benchmark::State& state) {
  Context ctx = Context::host();
  const index_t n = 1024, in = 784, out = 128;
  std::vector<float> x(std::size_t(n * in), 0.5f), w(std::size_t(out * in), 0.25f), z(std::size_t(n * out), 0.1f);
  bench::Timer timer;
  const bool tangent = state.range(0) == 0;
  for (auto _ : state) {
    auto scope = timer.scope();
    if (tangent)
      blas::gemm<float>(ctx, blas::Op::none, blas::Op::trans, 1.0f, {x.data(), n, in, in}, {w.data(), out, in, in}, 0.0f,
                        {z.data(), n, out, out});
    else
      blas::gemm<float>(ctx, blas::Op::trans, blas::Op::none, 1.0f, {z.data(), n, out, out}, {x.data(), n, in, in}, 0.0f,
                        {w.data(), out, in, in});
    benchmark::DoNotOptimize(w.data());
  }
  timer.report(state, 2.0 * double(n) * double(in) * double(out));
  state.SetLabel(tangent ? "x W^T: [1024,784] x [784,128]" : "d^T x: [128,1024] x [1024,784]");
}

BENCHMARK(BM_hvp)->Name("hvp/f32")->Arg(1)->Arg(4)->Arg(16)->Arg(100)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ggn)->Name("ggn/f32")->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_sgemm_shape)->Name("sgemm_shape/f32")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dense_top20)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_ntk_top20)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_hessian_top10)->Arg(1)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
BENCHMARK(BM_hessian_slq)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
