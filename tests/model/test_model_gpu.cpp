// The engine, losses and optimizers on cuda against the host backend.
#include <gtest/gtest.h>

#include "dynascope/train.hpp"
#include "model/model_test_util.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

class ModelGpu : public test::GpuTest {};

template <class T>
std::vector<T> download(const Context& dev, const T* p, index_t n) {
  std::vector<T> out(static_cast<std::size_t>(n));
  detail::copy_bytes(dev, out.data(), Backend::host, p, Backend::cuda, out.size() * sizeof(T));
  return out;
}
template <class T>
Array<T> upload(const Context& dev, const std::vector<T>& v) {
  Array<T> a(dev, {static_cast<index_t>(v.size())});
  detail::copy_bytes(dev, a.data(), Backend::cuda, v.data(), Backend::host, a.bytes());
  return a;
}

TEST_F(ModelGpu, EngineMatchesHostForEveryActivation) {
  Context dev = cuda();
  for (const char* act : {"relu", "leaky_relu:0.1", "abs", "tanh", "gelu", "softplus", "sigmoid"}) {
    const auto s = model::MlpSpec::from_arch("6-16-16-3", model::parse_activation(act));
    const index_t n = 11, P = s.num_params(), O = 3, D = 6, T = 4;
    auto w = test::random_vector(std::size_t(P), 1, 0.5), x = test::random_vector(std::size_t(n * D), 2);
    auto g = test::random_vector(std::size_t(2 * n * O), 3), v = test::random_vector(std::size_t(T * P), 4);
    model::MlpEngine<double> eh(host, s), ed(dev, s);
    Array<double> dw = upload(dev, w), dx = upload(dev, x), dg = upload(dev, g), dv = upload(dev, v);
    auto fh = eh.forward(w.data(), {x.data(), n, D, D});
    auto fd = ed.forward(dw.data(), {dx.data(), n, D, D, Backend::cuda});
    EXPECT_LT(test::max_rel_diff(download(dev, fd.data, n * O).data(), fh.data, n * O), 1e-12) << act;
    eh.backprop(w.data(), {g.data(), 2 * n, O, O}, 2);
    ed.backprop(dw.data(), {dg.data(), 2 * n, O, O, Backend::cuda}, 2);
    std::vector<double> gh(std::size_t(2 * P));
    Array<double> gd(dev, {2, P});
    eh.param_grads({gh.data(), 2, P, P});
    ed.param_grads(gd.matrix());
    EXPECT_LT(test::max_rel_diff(download(dev, gd.data(), 2 * P).data(), gh.data(), 2 * P), 1e-12) << act;
    std::vector<double> jh(static_cast<std::size_t>(T * n * O));
    Array<double> jd(dev, {T * n, O});
    eh.jvp(w.data(), {v.data(), T, P, P}, {jh.data(), T * n, O, O});
    ed.jvp(dw.data(), {dv.data(), T, P, P, Backend::cuda}, jd.matrix());
    EXPECT_LT(test::max_rel_diff(download(dev, jd.data(), T * n * O).data(), jh.data(), T * n * O), 1e-12) << act;
  }
}

TEST_F(ModelGpu, LossesAndOptimizersMatchHost) {
  Context dev = cuda();
  const index_t n = 9, o = 5;
  auto f = test::random_vector(std::size_t(n * o), 5);
  std::vector<std::int64_t> labels{0, 1, 2, 3, 4, 0, 1, 2, 3};
  Array<double> df = upload(dev, f);
  Array<std::int64_t> dl = upload(dev, labels);
  model::Targets<double> th, td;
  th.labels = {labels.data(), n, 1};
  td.labels = {dl.data(), n, 1, Backend::cuda};
  std::vector<double> gh(static_cast<std::size_t>(n * o));
  Array<double> gd(dev, {n, o});
  const auto lh = model::loss_and_grad<double>(host, model::Loss::xent, {f.data(), n, o, o}, th, {gh.data(), n, o, o});
  const auto ld = model::loss_and_grad<double>(dev, model::Loss::xent, {df.data(), n, o, o, Backend::cuda}, td, gd.matrix());
  EXPECT_NEAR(ld.loss, lh.loss, 1e-13);
  EXPECT_EQ(ld.accuracy, lh.accuracy);
  EXPECT_LT(test::max_rel_diff(download(dev, gd.data(), n * o).data(), gh.data(), n * o), 1e-13);
  model::OptimizerOptions oo{model::OptimizerKind::adamw};
  model::Optimizer<double> oh(host, oo, n * o), od(dev, oo, n * o);
  auto p = test::random_vector(std::size_t(n * o), 6);
  Array<double> dp = upload(dev, p);
  for (int t = 0; t < 3; ++t) {
    oh.step(p.data(), gh.data());
    od.step(dp.data(), gd.data());
  }
  EXPECT_LT(test::max_rel_diff(download(dev, dp.data(), n * o).data(), p.data(), n * o), 1e-14);
}

TEST_F(ModelGpu, PerSampleInputAndTangentPathsMatchHost) {
  Context dev = cuda();
  const auto s = model::MlpSpec::from_arch("5-12-12-2", model::parse_activation("softplus"));
  const index_t n = 9, P = s.num_params(), O = 2, D = 5, T = 3;
  auto w = test::random_vector(std::size_t(P), 7, 0.5), x = test::random_vector(std::size_t(n * D), 8);
  auto g = test::random_vector(std::size_t(n * O), 9), u = test::random_vector(std::size_t(T * n * D), 10);
  Array<double> dw = upload(dev, w), dx = upload(dev, x), dg = upload(dev, g), du = upload(dev, u);
  std::vector<double> ph(std::size_t(n * P));
  Array<double> pd(dev, {n, P});
  model::per_sample_gradients<double>(host, s, w.data(), {x.data(), n, D, D}, {g.data(), n, O, O}, {ph.data(), n, P, P});
  model::per_sample_gradients<double>(dev, s, dw.data(), {dx.data(), n, D, D, Backend::cuda}, {dg.data(), n, O, O, Backend::cuda},
                                      pd.matrix());
  EXPECT_LT(test::max_rel_diff(download(dev, pd.data(), n * P).data(), ph.data(), n * P), 1e-12);
  model::MlpEngine<double> eh(host, s), ed(dev, s);
  eh.forward(w.data(), {x.data(), n, D, D});
  ed.forward(dw.data(), {dx.data(), n, D, D, Backend::cuda});
  std::vector<double> jh(std::size_t(T * n * O));
  Array<double> jd(dev, {T * n, O});
  eh.jvp_inputs(w.data(), {u.data(), T * n, D, D}, T, {jh.data(), T * n, O, O});
  ed.jvp_inputs(dw.data(), {du.data(), T * n, D, D, Backend::cuda}, T, jd.matrix());
  EXPECT_LT(test::max_rel_diff(download(dev, jd.data(), T * n * O).data(), jh.data(), T * n * O), 1e-12);
  eh.backprop(w.data(), {g.data(), n, O, O});
  ed.backprop(dw.data(), {dg.data(), n, O, O, Backend::cuda});
  std::vector<double> xh(std::size_t(n * D));
  Array<double> xd(dev, {n, D});
  eh.input_grads(w.data(), {xh.data(), n, D, D});
  ed.input_grads(dw.data(), xd.matrix());
  EXPECT_LT(test::max_rel_diff(download(dev, xd.data(), n * D).data(), xh.data(), n * D), 1e-12);
}

TEST_F(ModelGpu, MinibatchTrainingMatchesHost) {
  Context dev = cuda();
  const data::Dataset ds = data::load_dataset("teacher", {.samples = 100, .seed = 3});
  for (auto kind : {model::OptimizerKind::sgd, model::OptimizerKind::momentum}) {
    model::Mlp<double> nh{model::MlpSpec::from_arch("16-8-1", model::parse_activation("tanh")), {}};
    nh.params = model::init_params<double>(host, nh.spec, {});
    model::Mlp<double> nd{nh.spec, model::init_params<double>(dev, nh.spec, {})};
    model::TrainOptions<double> to;
    to.steps = 12;
    to.batch = 32;  // the device gathers minibatch rows by the Philox permutation
    to.optimizer.kind = kind;
    const auto rh = model::train<double>(host, nh, ds, to);
    const auto rd = model::train<double>(dev, nd, ds, to);
    EXPECT_NEAR(rd.final_loss, rh.final_loss, 1e-10 * rh.final_loss);
    const auto back = download(dev, nd.params.data(), nd.params.size());
    EXPECT_LT(test::max_rel_diff(back.data(), nh.params.data(), nh.params.size()), 1e-10);
  }
}

}  // namespace
}  // namespace dynascope
