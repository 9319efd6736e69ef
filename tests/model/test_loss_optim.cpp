// Losses against naive loops and finite differences; optimizers against hand-computed float64
// references and closed forms.
#include <functional>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dynascope/train.hpp"
#include "model/model_test_util.hpp"

namespace dynascope {
namespace {

using model::Loss;
using model::Targets;

TEST(Loss, MseMatchesNaiveMeanAndFiniteDifferences) {
  Context ctx = Context::host();
  const index_t n = 7, o = 3;
  auto f = test::random_vector(std::size_t(n * o), 1), y = test::random_vector(std::size_t(n * o), 2);
  std::vector<double> g(static_cast<std::size_t>(n * o));
  Targets<double> t;
  t.values = {y.data(), n, o, o};
  const auto v = model::loss_and_grad<double>(ctx, Loss::mse, {f.data(), n, o, o}, t, {g.data(), n, o, o});
  double ref = 0;
  for (index_t i = 0; i < n * o; ++i) ref += (f[std::size_t(i)] - y[std::size_t(i)]) * (f[std::size_t(i)] - y[std::size_t(i)]);
  ref /= double(n * o);
  EXPECT_NEAR(v.loss, ref, 1e-14);
  EXPECT_EQ(v.accuracy, -1.0);
  const double h = 1e-6;
  for (index_t i = 0; i < n * o; ++i) {
    auto fp = f, fm = f;
    fp[std::size_t(i)] += h;
    fm[std::size_t(i)] -= h;
    const double lp = model::loss_and_grad<double>(ctx, Loss::mse, {fp.data(), n, o, o}, t).loss;
    const double lm = model::loss_and_grad<double>(ctx, Loss::mse, {fm.data(), n, o, o}, t).loss;
    EXPECT_NEAR(g[std::size_t(i)], (lp - lm) / (2 * h), 1e-8);
  }
}

TEST(Loss, CrossEntropyMatchesLogSoftmaxAndFiniteDifferences) {
  Context ctx = Context::host();
  const index_t n = 6, o = 4;
  auto f = test::random_vector(std::size_t(n * o), 3, 3.0);
  f[0] = 800;  // stable log-sum-exp
  std::vector<std::int64_t> labels{0, 1, 2, 3, 0, 2};
  std::vector<double> g(static_cast<std::size_t>(n * o));
  Targets<double> t;
  t.labels = {labels.data(), n, 1};
  const auto v = model::loss_and_grad<double>(ctx, Loss::xent, {f.data(), n, o, o}, t, {g.data(), n, o, o});
  double ref = 0, correct = 0;
  for (index_t i = 0; i < n; ++i) {
    double mx = -1e300;
    index_t arg = 0;
    for (index_t j = 0; j < o; ++j)
      if (f[std::size_t(i * o + j)] > mx) {
        mx = f[std::size_t(i * o + j)];
        arg = j;
      }
    double se = 0;
    for (index_t j = 0; j < o; ++j) se += std::exp(f[std::size_t(i * o + j)] - mx);
    ref += mx + std::log(se) - f[std::size_t(i * o + labels[std::size_t(i)])];
    correct += arg == labels[std::size_t(i)];
  }
  EXPECT_NEAR(v.loss, ref / double(n), 1e-12);
  EXPECT_DOUBLE_EQ(v.accuracy, correct / double(n));
  const double h = 1e-6;
  for (index_t i = 0; i < n * o; ++i) {
    auto fp = f, fm = f;
    fp[std::size_t(i)] += h;
    fm[std::size_t(i)] -= h;
    const double lp = model::loss_and_grad<double>(ctx, Loss::xent, {fp.data(), n, o, o}, t).loss;
    const double lm = model::loss_and_grad<double>(ctx, Loss::xent, {fm.data(), n, o, o}, t).loss;
    EXPECT_NEAR(g[std::size_t(i)], (lp - lm) / (2 * h), 1e-7);
  }
}

TEST(Loss, MseWithLabelsUsesOneHotTargetsAndNonFiniteOutputsGiveNonFiniteLoss) {
  Context ctx = Context::host();
  std::vector<double> f{0.5, 0.1, -0.2, 0.9};
  std::vector<std::int64_t> labels{0, 1};
  Targets<double> t;
  t.labels = {labels.data(), 2, 1};
  const auto v = model::loss_and_grad<double>(ctx, Loss::mse, {f.data(), 2, 2, 2}, t);
  EXPECT_NEAR(v.loss, (0.25 + 0.01 + 0.04 + 0.01) / 4, 1e-15);
  EXPECT_DOUBLE_EQ(v.accuracy, 1.0);
  f[1] = NAN;
  EXPECT_TRUE(std::isnan(model::loss_and_grad<double>(ctx, Loss::mse, {f.data(), 2, 2, 2}, t).loss));
  std::vector<double> y(2);
  Targets<double> wrong;
  wrong.values = {y.data(), 1, 2, 2};
  EXPECT_THROW(model::loss_and_grad<double>(ctx, Loss::mse, {f.data(), 2, 2, 2}, wrong), ShapeMismatch);
  EXPECT_THROW(model::loss_and_grad<double>(ctx, Loss::xent, {f.data(), 1, 2, 2}, wrong), InvalidArgument);
}

// PyTorch's update rules, written out in float64 scalars.
std::vector<double> reference_steps(const model::OptimizerOptions& in, std::vector<double> p, int steps) {
  const auto o = in.resolved();
  std::vector<double> m(p.size(), 0.0), v(p.size(), 0.0);
  for (int t = 1; t <= steps; ++t)
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = 2.0 * double(i + 1) * p[i] + 0.1;  // gradient of sum (i+1) p_i^2 + 0.1 p_i
      switch (o.kind) {
        case model::OptimizerKind::sgd: p[i] -= o.lr * (g + o.weight_decay * p[i]); break;
        case model::OptimizerKind::momentum:
          g += o.weight_decay * p[i];
          m[i] = o.momentum * m[i] + g;
          p[i] -= o.lr * m[i];
          break;
        case model::OptimizerKind::adam:
        case model::OptimizerKind::adamw: {
          if (o.kind == model::OptimizerKind::adamw) p[i] *= 1 - o.lr * o.weight_decay;
          else g += o.weight_decay * p[i];
          m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
          v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
          const double mhat = m[i] / (1 - std::pow(o.beta1, t)), vhat = v[i] / (1 - std::pow(o.beta2, t));
          p[i] -= o.lr * mhat / (std::sqrt(vhat) + o.eps);
          break;
        }
      }
    }
  return p;
}

TEST(Optimizer, EveryKindMatchesTheFloat64Reference) {
  Context ctx = Context::host();
  for (auto kind : {model::OptimizerKind::sgd, model::OptimizerKind::momentum, model::OptimizerKind::adam,
                    model::OptimizerKind::adamw})
    for (double wd : {0.0, 0.05}) {
      model::OptimizerOptions o;
      o.kind = kind;
      o.weight_decay = wd;
      o.lr = 0.05;
      std::vector<double> p{0.3, -1.2, 2.0, 0.0};
      const auto ref = reference_steps(o, p, 3);
      model::Optimizer<double> opt(ctx, o, 4);
      for (int t = 0; t < 3; ++t) {
        std::vector<double> g(4);
        for (std::size_t i = 0; i < 4; ++i) g[i] = 2.0 * double(i + 1) * p[i] + 0.1;
        opt.step(p.data(), g.data());
      }
      for (std::size_t i = 0; i < 4; ++i) EXPECT_NEAR(p[i], ref[i], 1e-14) << model::to_string(kind) << " wd " << wd;
    }
}

TEST(Optimizer, ClosedFormsOfFirstSteps) {
  Context ctx = Context::host();
  // Adam's first step moves every coordinate by lr * g / (|g| + eps): about lr against the gradient.
  model::OptimizerOptions adam;
  adam.kind = model::OptimizerKind::adam;
  model::Optimizer<double> opt(ctx, adam, 2);
  std::vector<double> p{1.0, 1.0}, g{4.0, -0.5};
  opt.step(p.data(), g.data());
  EXPECT_NEAR(p[0], 1.0 - 1e-3 * 4.0 / (4.0 + 1e-8), 1e-15);
  EXPECT_NEAR(p[1], 1.0 + 1e-3 * 0.5 / (0.5 + 1e-8), 1e-15);
  // Heavy ball on f = p^2 / 2 from p = 1, lr 0.1, mu 0.9: p1 = 0.9, p2 = 0.9 - 0.1 (0.9 + 0.9) = 0.72.
  model::OptimizerOptions mom;
  mom.kind = model::OptimizerKind::momentum;
  mom.lr = 0.1;
  model::Optimizer<double> hb(ctx, mom, 1);
  double q = 1.0;
  for (int t = 0; t < 2; ++t) {
    const double grad = q;
    hb.step(&q, &grad);
  }
  EXPECT_NEAR(q, 0.72, 1e-15);
  EXPECT_EQ(model::OptimizerOptions{model::OptimizerKind::adamw}.resolved().weight_decay, 1e-2);
  // PyTorch's rules: lr = 0 is valid, negative values and betas outside [0, 1) are not.
  model::OptimizerOptions bad;
  bad.lr = 0;
  EXPECT_EQ(bad.resolved().lr, 0.0);
  for (auto set : std::vector<std::function<void(model::OptimizerOptions&)>>{
           [](auto& o) { o.lr = -1; }, [](auto& o) { o.momentum = -0.1; }, [](auto& o) { o.beta1 = 1.0; },
           [](auto& o) { o.beta2 = -0.5; }, [](auto& o) { o.eps = -1e-8; }, [](auto& o) { o.weight_decay = -1; },
           [](auto& o) { o.lr = std::numeric_limits<double>::infinity(); }}) {
    model::OptimizerOptions b;
    set(b);
    EXPECT_THROW(b.resolved(), InvalidArgument);
  }
}

}  // namespace
}  // namespace dynascope
