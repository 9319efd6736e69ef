// The engine, losses, optimizers and the trainer on every backend against a naive float64 MLP
// (per-sample textbook loops, dual numbers for forward mode), the losses and update rules written
// out, and a naive trainer. Each case runs as .../host and .../cuda (the latter skips without a
// device); strided inputs and outputs, an empty batch and a NaN sample included.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "dynascope/random.hpp"
#include "dynascope/train.hpp"
#include "model/model_test_util.hpp"
#include "support/backend_test.hpp"
#include "support/naive_mlp.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

namespace naive = test::naive;
using test::kNaN;
using test::kSentinel;

class ModelOnBackends : public test::BackendTest {};

TEST_P(ModelOnBackends, EngineMatchesTheNaiveNetworkForEveryActivation) {
  for (const char* act : {"relu", "leaky_relu:0.1", "abs", "tanh", "gelu", "softplus", "sigmoid"}) {
    const auto s = model::MlpSpec::from_arch("6-16-16-3", model::parse_activation(act));
    const index_t n = 11, P = s.num_params(), O = 3, D = 6, T = 4;
    const auto w = test::random_vector(std::size_t(P), 1, 0.5), x = test::random_vector(std::size_t(n * D), 2);
    const auto g = test::random_vector(std::size_t(2 * n * O), 3), v = test::random_vector(std::size_t(T * P), 4);
    model::MlpEngine<double> e(ctx(), s);
    const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx = Array<double>::from_host(ctx(), {n, D}, x),
                        dg = Array<double>::from_host(ctx(), {2 * n, O}, g), dv = Array<double>::from_host(ctx(), {T, P}, v);
    const auto f = e.forward(dw.data(), dx.matrix());
    EXPECT_LT(test::max_rel_diff(test::to_vector(ctx(), f).data(), naive::outputs(s, w, x, n).data(), n * O), 1e-12) << act;
    e.backprop(dw.data(), dg.matrix(), 2);
    Array<double> gd(ctx(), {2, P});
    e.param_grads(gd.matrix());
    EXPECT_LT(test::max_rel_diff(gd.to_vector(ctx()).data(), naive::param_vjp(s, w, x, n, g, 2).data(), 2 * P), 1e-12) << act;
    Array<double> jd(ctx(), {T * n, O});
    e.jvp(dw.data(), dv.matrix(), jd.matrix());
    EXPECT_LT(test::max_rel_diff(jd.to_vector(ctx()).data(), naive::param_jvp(s, w, x, n, v, T).data(), T * n * O), 1e-12) << act;
  }
}

TEST_P(ModelOnBackends, EngineReadsAndWritesStridedViews) {
  // Inputs with ld > cols and NaN padding (reading it would poison the result); outputs with
  // ld > cols and a sentinel padding that must survive.
  const auto s = model::MlpSpec::from_arch("5-9-9-3", model::parse_activation("tanh"));
  const index_t n = 7, P = s.num_params(), O = 3, D = 5, T = 2;
  const auto w = test::random_vector(std::size_t(P), 21, 0.5), x = test::random_vector(std::size_t(n * D), 22);
  const auto g = test::random_vector(std::size_t(n * O), 23), v = test::random_vector(std::size_t(T * P), 24),
             u = test::random_vector(std::size_t(T * n * D), 25);
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w);
  const Array<double> dx = Array<double>::from_host(ctx(), {n, D + 3}, test::with_ld(x, n, D, D + 3));
  const Array<double> dg = Array<double>::from_host(ctx(), {n, O + 2}, test::with_ld(g, n, O, O + 2));
  const Array<double> dv = Array<double>::from_host(ctx(), {T, P + 1}, test::with_ld(v, T, P, P + 1));
  const Array<double> du = Array<double>::from_host(ctx(), {T * n, D + 4}, test::with_ld(u, T * n, D, D + 4));
  const auto padded_output = [&](index_t rows, index_t ld) {
    return Array<double>::from_host(ctx(), {rows, ld}, std::vector<double>(std::size_t(rows * ld), kSentinel<double>));
  };
  const auto check = [&](const Array<double>& out, index_t cols, const std::vector<double>& ref, const char* what) {
    const auto got = out.to_vector(ctx());
    const index_t rows = out.dim(0), ld = out.dim(1);
    EXPECT_LT(test::max_rel_diff(test::without_ld(got, rows, cols, ld).data(), ref.data(), rows * cols), 1e-12) << what;
    EXPECT_EQ(test::padding_changed(got, rows, cols, ld), 0) << what;
  };
  model::MlpEngine<double> e(ctx(), s);
  const auto f = e.forward(dw.data(), test::strided(dx, D));
  EXPECT_LT(test::max_rel_diff(test::to_vector(ctx(), f).data(), naive::outputs(s, w, x, n).data(), n * O), 1e-12);
  Array<double> jd = padded_output(T * n, O + 2);
  e.jvp(dw.data(), test::strided(dv, P), test::strided(jd, O));
  check(jd, O, naive::param_jvp(s, w, x, n, v, T), "jvp");
  Array<double> ji = padded_output(T * n, O + 1);
  e.jvp_inputs(dw.data(), test::strided(du, D), T, test::strided(ji, O));
  check(ji, O, naive::input_jvp(s, w, x, n, u, T), "jvp_inputs");
  e.backprop(dw.data(), test::strided(dg, O));
  Array<double> gd = padded_output(1, P + 3);
  e.param_grads(test::strided(gd, P));
  check(gd, P, naive::param_vjp(s, w, x, n, g, 1), "param_grads");
  Array<double> xd = padded_output(n, D + 2);
  e.input_grads(dw.data(), test::strided(xd, D));
  check(xd, D, naive::input_vjp(s, w, x, n, g), "input_grads");
  Array<double> ps = padded_output(n, P + 2);
  model::per_sample_gradients<double>(ctx(), s, dw.data(), test::strided(dx, D), test::strided(dg, O), test::strided(ps, P));
  check(ps, P, naive::per_sample_vjp(s, w, x, n, g), "per_sample_gradients");
}

TEST_P(ModelOnBackends, AnEmptyBatchComputesNothing) {
  const auto s = model::MlpSpec::from_arch("4-6-2", model::parse_activation("gelu"));
  const index_t P = s.num_params(), D = 4, O = 2;
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, test::random_vector(std::size_t(P), 26));
  const MatrixView<const double> x0{nullptr, 0, D, D, ctx().backend()}, g0{nullptr, 0, O, O, ctx().backend()};
  model::MlpEngine<double> e(ctx(), s);
  EXPECT_EQ(e.forward(dw.data(), x0).rows, 0);
  Array<double> untouched = Array<double>::from_host(ctx(), {1}, std::vector<double>{kSentinel<double>});
  const Array<double> dv = Array<double>::from_host(ctx(), {2, P}, test::random_vector(std::size_t(2 * P), 27));
  e.jvp(dw.data(), dv.matrix(), {untouched.data(), 0, O, O, ctx().backend()});
  e.jvp_inputs(dw.data(), x0, 2, {untouched.data(), 0, O, O, ctx().backend()});
  e.backprop(dw.data(), g0);
  e.input_grads(dw.data(), {untouched.data(), 0, D, D, ctx().backend()});
  model::per_sample_gradients<double>(ctx(), s, dw.data(), x0, g0, {untouched.data(), 0, P, P, ctx().backend()});
  EXPECT_EQ(untouched.to_vector(ctx()), std::vector<double>{kSentinel<double>});
}

// The BLAS return before touching y when op(A) has no columns; blas::gemv computes y = beta y
// itself, so the bias rows of param_grads are zero like the weight rows.
TEST_P(ModelOnBackends, TheGradientOfAnEmptyBatchIsZero) {
  const auto s = model::MlpSpec::from_arch("4-6-2", model::parse_activation("gelu"));
  const index_t P = s.num_params(), D = 4, O = 2;
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, test::random_vector(std::size_t(P), 26));
  model::MlpEngine<double> e(ctx(), s);
  e.forward(dw.data(), {nullptr, 0, D, D, ctx().backend()});
  e.backprop(dw.data(), {nullptr, 0, O, O, ctx().backend()}, 2);
  // The gradient of a sum over no samples is zero: written, not left as the buffer was.
  Array<double> gd = Array<double>::from_host(ctx(), {2, P}, std::vector<double>(std::size_t(2 * P), kSentinel<double>));
  e.param_grads(gd.matrix());
  EXPECT_EQ(gd.to_vector(ctx()), std::vector<double>(std::size_t(2 * P), 0.0));
}

TEST_P(ModelOnBackends, ANanSampleStaysInItsOwnRows) {
  // A NaN input of sample 3 through a tanh network: its outputs, per-sample gradients, input
  // tangents and input cotangents are NaN; every other sample's are finite and equal the naive
  // network's. (Sums over samples, like param_grads, are NaN everywhere by definition.)
  const auto s = model::MlpSpec::from_arch("5-8-8-2", model::parse_activation("tanh"));
  const index_t n = 8, P = s.num_params(), O = 2, D = 5, T = 2;
  const auto w = test::random_vector(std::size_t(P), 31, 0.5), g = test::random_vector(std::size_t(n * O), 33),
             u = test::random_vector(std::size_t(T * n * D), 34);
  auto x = test::random_vector(std::size_t(n * D), 32);
  x[std::size_t(3 * D + 2)] = kNaN<double>;
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx = Array<double>::from_host(ctx(), {n, D}, x),
                      dg = Array<double>::from_host(ctx(), {n, O}, g), du = Array<double>::from_host(ctx(), {T * n, D}, u);
  const auto expect_same = [&](const std::vector<double>& got, const std::vector<double>& ref, const char* what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    index_t nan_ref = 0;
    for (double r : ref) nan_ref += std::isnan(r);
    EXPECT_GT(nan_ref, 0) << what;  // the oracle itself carries the NaN of sample 3
    const auto d = test::max_rel_diff_finite(got.data(), ref.data(), index_t(ref.size()));
    EXPECT_EQ(d.finiteness_mismatches, 0) << what;
    EXPECT_LT(d.max_rel, 1e-12) << what;
  };
  model::MlpEngine<double> e(ctx(), s);
  expect_same(test::to_vector(ctx(), e.forward(dw.data(), dx.matrix())), naive::outputs(s, w, x, n), "outputs");
  Array<double> ji(ctx(), {T * n, O});
  e.jvp_inputs(dw.data(), du.matrix(), T, ji.matrix());
  expect_same(ji.to_vector(ctx()), naive::input_jvp(s, w, x, n, u, T), "jvp_inputs");
  e.backprop(dw.data(), dg.matrix());
  Array<double> xd(ctx(), {n, D});
  e.input_grads(dw.data(), xd.matrix());
  expect_same(xd.to_vector(ctx()), naive::input_vjp(s, w, x, n, g), "input_grads");
  Array<double> ps(ctx(), {n, P});
  model::per_sample_gradients<double>(ctx(), s, dw.data(), dx.matrix(), dg.matrix(), ps.matrix());
  expect_same(ps.to_vector(ctx()), naive::per_sample_vjp(s, w, x, n, g), "per_sample_gradients");
  // Losses: a NaN output of sample 2 makes the loss NaN and only sample 2's gradient row (mse:
  // only that element) NaN.
  const index_t m = 6, o = 4;
  auto f = test::random_vector(std::size_t(m * o), 35);
  f[std::size_t(2 * o + 1)] = kNaN<double>;
  const std::vector<std::int64_t> labels{0, 3, 1, 2, 3, 0};
  const auto y = test::random_vector(std::size_t(m * o), 36);
  const Array<double> df = Array<double>::from_host(ctx(), {m, o}, f), dy = Array<double>::from_host(ctx(), {m, o}, y);
  const Array<std::int64_t> dl = Array<std::int64_t>::from_host(ctx(), {m}, labels);
  for (model::Loss loss : {model::Loss::xent, model::Loss::mse}) {
    model::Targets<double> t;
    naive::Targets nt;
    if (loss == model::Loss::xent) {
      t.labels = dl.vector();
      nt.labels = labels;
    } else {
      t.values = dy.matrix();
      nt.values = y;
    }
    Array<double> gr(ctx(), {m, o});
    const auto lv = model::loss_and_grad<double>(ctx(), loss, df.matrix(), t, gr.matrix());
    EXPECT_TRUE(std::isnan(lv.loss)) << model::to_string(loss);
    std::vector<double> ref;
    for (index_t i = 0; i < m; ++i) {
      const auto gi = naive::loss_grad<double>(loss, naive::row(f, i, o), nt, i, m);
      ref.insert(ref.end(), gi.begin(), gi.end());
    }
    expect_same(gr.to_vector(ctx()), ref, model::to_string(loss));
  }
}

TEST_P(ModelOnBackends, LossesAndOptimizersMatchTheirFormulas) {
  const index_t n = 9, o = 5;
  const auto f = test::random_vector(std::size_t(n * o), 5), y = test::random_vector(std::size_t(n * o), 7);
  const std::vector<std::int64_t> labels{0, 1, 2, 3, 4, 0, 1, 2, 3};
  const Array<double> df = Array<double>::from_host(ctx(), {n, o}, f), dy = Array<double>::from_host(ctx(), {n, o}, y);
  const Array<std::int64_t> dl = Array<std::int64_t>::from_host(ctx(), {n}, labels);
  for (model::Loss loss : {model::Loss::xent, model::Loss::mse}) {
    model::Targets<double> t;
    naive::Targets nt;
    if (loss == model::Loss::xent) {
      t.labels = dl.vector();
      nt.labels = labels;
    } else {
      t.values = dy.matrix();
      nt.values = y;
    }
    Array<double> gd(ctx(), {n, o});
    const auto lv = model::loss_and_grad<double>(ctx(), loss, df.matrix(), t, gd.matrix());
    EXPECT_NEAR(lv.loss, naive::loss_value(loss, f, nt, n), 1e-13) << model::to_string(loss);
    std::vector<double> gref;
    double correct = 0;
    for (index_t i = 0; i < n; ++i) {
      const auto fi = naive::row(f, i, o);
      const auto gi = naive::loss_grad<double>(loss, fi, nt, i, n);
      gref.insert(gref.end(), gi.begin(), gi.end());
      correct += std::max_element(fi.begin(), fi.end()) - fi.begin() == labels[std::size_t(i)];
    }
    EXPECT_EQ(lv.accuracy, loss == model::Loss::xent ? correct / double(n) : -1.0) << model::to_string(loss);
    EXPECT_LT(test::max_rel_diff(gd.to_vector(ctx()).data(), gref.data(), n * o), 1e-13) << model::to_string(loss);
  }
  // AdamW (PyTorch's rule, model/train.hpp) for three steps with a fixed gradient.
  const model::OptimizerOptions oo = model::OptimizerOptions{model::OptimizerKind::adamw}.resolved();
  const auto grad = test::random_vector(std::size_t(n * o), 8);
  auto p = test::random_vector(std::size_t(n * o), 6);
  Array<double> dp = Array<double>::from_host(ctx(), {n * o}, p);
  const Array<double> dgrad = Array<double>::from_host(ctx(), {n * o}, grad);
  model::Optimizer<double> opt(ctx(), oo, n * o);
  for (int step = 0; step < 3; ++step) opt.step(dp.data(), dgrad.data());
  std::vector<double> m1(p.size(), 0.0), m2(p.size(), 0.0);
  for (int step = 1; step <= 3; ++step)
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - oo.lr * oo.weight_decay;
      m1[i] = oo.beta1 * m1[i] + (1 - oo.beta1) * grad[i];
      m2[i] = oo.beta2 * m2[i] + (1 - oo.beta2) * grad[i] * grad[i];
      const double mhat = m1[i] / (1 - std::pow(oo.beta1, step)), vhat = m2[i] / (1 - std::pow(oo.beta2, step));
      p[i] -= oo.lr * mhat / (std::sqrt(vhat) + oo.eps);
    }
  EXPECT_LT(test::max_rel_diff(dp.to_vector(ctx()).data(), p.data(), n * o), 1e-14);
}

TEST_P(ModelOnBackends, PerSampleInputAndTangentPathsMatchTheNaiveNetwork) {
  const auto s = model::MlpSpec::from_arch("5-12-12-2", model::parse_activation("softplus"));
  const index_t n = 9, P = s.num_params(), O = 2, D = 5, T = 3;
  const auto w = test::random_vector(std::size_t(P), 7, 0.5), x = test::random_vector(std::size_t(n * D), 8);
  const auto g = test::random_vector(std::size_t(n * O), 9), u = test::random_vector(std::size_t(T * n * D), 10);
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx = Array<double>::from_host(ctx(), {n, D}, x),
                      dg = Array<double>::from_host(ctx(), {n, O}, g), du = Array<double>::from_host(ctx(), {T * n, D}, u);
  Array<double> pd(ctx(), {n, P});
  model::per_sample_gradients<double>(ctx(), s, dw.data(), dx.matrix(), dg.matrix(), pd.matrix());
  EXPECT_LT(test::max_rel_diff(pd.to_vector(ctx()).data(), naive::per_sample_vjp(s, w, x, n, g).data(), n * P), 1e-12);
  model::MlpEngine<double> e(ctx(), s);
  e.forward(dw.data(), dx.matrix());
  Array<double> jd(ctx(), {T * n, O});
  e.jvp_inputs(dw.data(), du.matrix(), T, jd.matrix());
  EXPECT_LT(test::max_rel_diff(jd.to_vector(ctx()).data(), naive::input_jvp(s, w, x, n, u, T).data(), T * n * O), 1e-12);
  e.backprop(dw.data(), dg.matrix());
  Array<double> xd(ctx(), {n, D});
  e.input_grads(dw.data(), xd.matrix());
  EXPECT_LT(test::max_rel_diff(xd.to_vector(ctx()).data(), naive::input_vjp(s, w, x, n, g).data(), n * D), 1e-12);
}

// train() for sgd / momentum written out: each epoch the samples in the order of a stable sort
// of Philox keys (seed, epoch) on train's stream ("rain"), consecutive minibatches of that order,
// the mse gradient by the naive network, PyTorch's update. Returns the final full-set loss.
double naive_train(const model::MlpSpec& s, std::vector<double>& w, const data::Dataset& ds, const model::TrainOptions<double>& o) {
  const model::OptimizerOptions opt = o.optimizer.resolved();
  const index_t n = ds.n, d = ds.d, batch = std::min(o.batch, n), per_epoch = (n + batch - 1) / batch;
  std::vector<double> keys(static_cast<std::size_t>(n)), buf(w.size(), 0.0);
  std::vector<index_t> order(static_cast<std::size_t>(n));
  for (index_t step = 0; step < o.steps; ++step) {
    const index_t epoch = step / per_epoch, pos = step % per_epoch;
    if (pos == 0) {
      random::fill_uniform<double>(Context::host(), {o.seed, 0x7261696eu, static_cast<std::uint32_t>(epoch)}, vector_view(keys.data(), n));
      std::iota(order.begin(), order.end(), index_t{0});
      std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return keys[std::size_t(a)] < keys[std::size_t(b)]; });
    }
    const index_t r0 = pos * batch, rows = std::min(batch, n - r0);
    std::vector<double> xb, yb;
    for (index_t r = 0; r < rows; ++r) {
      const index_t i = order[std::size_t(r0 + r)];
      xb.insert(xb.end(), ds.x.begin() + i * d, ds.x.begin() + (i + 1) * d);
      yb.insert(yb.end(), ds.y.begin() + i * ds.outputs, ds.y.begin() + (i + 1) * ds.outputs);
    }
    const auto f = naive::outputs(s, w, xb, rows);
    naive::Targets t;
    t.values = yb;
    std::vector<double> g;
    for (index_t r = 0; r < rows; ++r) {
      const auto gr = naive::loss_grad<double>(model::Loss::mse, naive::row(f, r, ds.outputs), t, r, rows);
      g.insert(g.end(), gr.begin(), gr.end());
    }
    const auto grad = naive::param_vjp(s, w, xb, rows, g, 1);
    for (std::size_t p = 0; p < w.size(); ++p) {
      if (opt.kind == model::OptimizerKind::momentum) {
        buf[p] = opt.momentum * buf[p] + grad[p];
        w[p] -= opt.lr * buf[p];
      } else {
        w[p] -= opt.lr * grad[p];
      }
    }
  }
  naive::Targets all;
  all.values = ds.y;
  return naive::loss_value(model::Loss::mse, naive::outputs(s, w, ds.x, n), all, n);
}

TEST_P(ModelOnBackends, MinibatchTrainingMatchesANaiveTrainer) {
  const data::Dataset ds = data::load_dataset("teacher", {.samples = 100, .seed = 3});
  for (auto kind : {model::OptimizerKind::sgd, model::OptimizerKind::momentum}) {
    const auto spec = model::MlpSpec::from_arch("16-8-1", model::parse_activation("tanh"));
    model::Mlp<double> net{spec, model::init_params<double>(ctx(), spec, {})};
    auto w = model::init_params<double>(host, spec, {}).to_vector(host);  // Philox: the same draws on every backend
    model::TrainOptions<double> to;
    to.steps = 12;
    to.batch = 32;  // 4 minibatches per epoch, the last of 4 samples: the gather follows the permutation
    to.optimizer.kind = kind;
    const auto r = model::train<double>(ctx(), net, ds, to);
    const double ref_loss = naive_train(spec, w, ds, to);
    EXPECT_NEAR(r.final_loss, ref_loss, 1e-10 * ref_loss) << model::to_string(kind);
    EXPECT_LT(test::max_rel_diff(net.params.to_vector(ctx()).data(), w.data(), index_t(w.size())), 1e-10) << model::to_string(kind);
  }
}

DYNASCOPE_BACKEND_TESTS(ModelOnBackends);

}  // namespace
}  // namespace dynascope
