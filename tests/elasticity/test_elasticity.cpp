// Local elasticity: output changes in the step and NTK forms and the metrics on them, against
// closed forms (linear models, a single ReLU unit), separate copy-update-forward computations,
// the float64 naive network, direct KL / notebook formulas, and the eta -> 0 limit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <optional>
#include <vector>

#include "dynascope/elasticity.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/ntk.hpp"
#include "support/backend_test.hpp"
#include "support/naive_mlp.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using elasticity::Form;
using elasticity::Metric;
using elasticity::Options;
using elasticity::OutputChanges;
using elasticity::PairResult;
using elasticity::Update;
using model::Loss;
using model::MlpSpec;
namespace naive = test::naive;

const Context H = Context::host(2);

MlpSpec mlp(std::vector<index_t> widths, const char* act = "tanh", bool bias = true) {
  MlpSpec s;
  s.widths = std::move(widths);
  s.bias.assign(std::size_t(s.layers()), bias);
  s.activations.assign(std::size_t(s.layers() - 1), model::parse_activation(act));
  s.validate();
  return s;
}

std::vector<double> init(const MlpSpec& s, std::uint64_t seed) {
  model::InitOptions io;
  io.seed = seed;
  return model::init_params<double>(H, s, io).to_vector(H);
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// A problem on the host: params, sources x1 [n1, d], targets (values or labels), targets of the
// move x2 [n2, d] (empty: x2 = x1).
struct Problem {
  MlpSpec spec;
  std::vector<double> w, x1, x2, values;
  std::vector<std::int64_t> labels;
  index_t n1 = 0, n2 = 0;
};

Problem problem(MlpSpec spec, index_t n1, index_t n2, bool labels, unsigned seed) {
  Problem p;
  p.spec = std::move(spec);
  p.w = init(p.spec, seed);
  p.n1 = n1;
  p.n2 = n2;
  const index_t d = p.spec.inputs(), O = p.spec.outputs();
  p.x1 = test::random_values<double>(n1 * d, seed + 1);
  if (n2 > 0) p.x2 = test::random_values<double>(n2 * d, seed + 2);
  if (labels) {
    for (index_t i = 0; i < n1; ++i) p.labels.push_back((i * 7 + 3) % O);
  } else {
    p.values = test::random_values<double>(n1 * O, seed + 3);
  }
  return p;
}

// output_changes / pairwise on `ctx` in precision T (inputs copied there).
template <class T>
struct Job {
  const Context& ctx;
  const Problem& p;
  Array<T> w, x1, x2, values;
  Array<std::int64_t> labels;
  Job(const Context& c, const Problem& pr) : ctx(c), p(pr) {
    const index_t d = p.spec.inputs(), O = p.spec.outputs();
    w = Array<T>::from_host(ctx, {index_t(p.w.size())}, cast<T>(p.w));
    x1 = Array<T>::from_host(ctx, {p.n1, d}, cast<T>(p.x1));
    if (p.n2 > 0) x2 = Array<T>::from_host(ctx, {p.n2, d}, cast<T>(p.x2));
    if (!p.labels.empty()) labels = Array<std::int64_t>::from_host(ctx, {p.n1}, p.labels);
    else values = Array<T>::from_host(ctx, {p.n1, O}, cast<T>(p.values));
  }
  model::Targets<T> targets() const {
    model::Targets<T> t;
    if (!p.labels.empty()) t.labels = labels.vector();
    else t.values = values.matrix();
    return t;
  }
  std::optional<MatrixView<const T>> xt() const {
    if (p.n2 == 0) return std::nullopt;
    return x2.matrix();
  }
  OutputChanges changes(const Options& o, bool per_layer = false) const {
    return elasticity::output_changes<T>(ctx, p.spec, w.data(), x1.matrix(), targets(), xt(), o, per_layer);
  }
  PairResult pairs(const Options& o) const {
    return elasticity::pairwise<T>(ctx, p.spec, w.data(), x1.matrix(), targets(), xt(), o);
  }
};

Options opts(double eta, Form form, Metric metric, Loss loss, Update update = Update::sgd) {
  Options o;
  o.eta = eta;
  o.form = form;
  o.metric = metric;
  o.loss = loss;
  o.update = update;
  return o;
}

// ---- names and options ----

TEST(Elasticity, NamesRoundTrip) {
  for (const auto u : {Update::sgd, Update::adam}) EXPECT_EQ(elasticity::parse_update(elasticity::to_string(u)), u);
  for (const auto f : {Form::step, Form::ntk}) EXPECT_EQ(elasticity::parse_form(elasticity::to_string(f)), f);
  for (const auto m : {Metric::automatic, Metric::abs, Metric::l2, Metric::kl, Metric::kl_compat})
    EXPECT_EQ(elasticity::parse_metric(elasticity::to_string(m)), m);
  EXPECT_EQ(elasticity::parse_metric("kl_compat"), Metric::kl_compat);
  EXPECT_STREQ(elasticity::to_string(Metric::kl_compat), "kl-compat");
  EXPECT_STREQ(elasticity::to_string(Metric::automatic), "auto");
  test::expect_error<InvalidArgument>([] { elasticity::parse_metric("kld"); }, {"elasticity metric", "kld", "kl-compat"});
  test::expect_error<InvalidArgument>([] { elasticity::parse_update("rmsprop"); }, {"update", "rmsprop"});
  test::expect_error<InvalidArgument>([] { elasticity::parse_form("exact"); }, {"form", "exact"});
}

TEST(Elasticity, ResolveChoosesAndRefuses) {
  Options o;
  EXPECT_EQ(elasticity::resolve(o, false), Metric::abs);
  EXPECT_EQ(elasticity::resolve(o, true), Metric::kl);
  o.metric = Metric::l2;
  EXPECT_EQ(elasticity::resolve(o, true), Metric::l2);
  test::expect_error<InvalidArgument>([&] { elasticity::resolve(o, false); }, {"l2", "class labels"});
  o.metric = Metric::kl;
  test::expect_error<InvalidArgument>([&] { elasticity::resolve(o, false); }, {"kl", "class labels"});
  o.metric = Metric::abs;
  test::expect_error<InvalidArgument>([&] { elasticity::resolve(o, true); }, {"abs", "value targets"});
  o.metric = Metric::kl_compat;
  o.form = Form::ntk;
  test::expect_error<InvalidArgument>([&] { elasticity::resolve(o, true); }, {"kl-compat", "ntk"});
  o = Options{};
  o.update = Update::adam;
  o.form = Form::ntk;
  test::expect_error<InvalidArgument>([&] { elasticity::resolve(o, false); }, {"adam", "ntk"});
  for (const double eta : {0.0, -1e-3, std::nan(""), double(INFINITY)}) {
    o = Options{};
    o.eta = eta;
    test::expect_error<InvalidArgument>([&] { elasticity::resolve(o, false); }, {"eta", "> 0"});
  }
  o = Options{};
  o.update = Update::adam;
  o.adam_eps = 0;
  test::expect_error<InvalidArgument>([&] { elasticity::resolve(o, false); }, {"adam_eps"});
}

// ---- linear models: closed forms for every eta ----

// f = w.x (+ b): Delta_i(x') = -eta dl_i (x_i.x' + 1[bias]) exactly, so S_rel = |k(x_i, x')| /
// k(x_i, x_i) and S_ker = k(x_i, x'), k(x, x') = x.x' (+ 1), whatever eta.
void check_linear(const Problem& p, const std::vector<double>& x1, const std::vector<double>& x2, bool bias) {
  const index_t d = p.spec.inputs();
  const auto k = [&](const double* a, const double* b) {
    double s = bias ? 1.0 : 0.0;
    for (index_t c = 0; c < d; ++c) s += a[c] * b[c];
    return s;
  };
  for (const Form form : {Form::step, Form::ntk})
    for (const double eta : {1e-4, 0.1, 1.0, 10.0, 1e3}) {
      SCOPED_TRACE(std::string(elasticity::to_string(form)) + " eta " + std::to_string(eta));
      const PairResult r = Job<double>(H, p).pairs(opts(eta, form, Metric::automatic, Loss::mse));
      ASSERT_EQ(r.metric, Metric::abs);
      ASSERT_EQ(r.s_ker.size(), p.n1 * p.n2);
      EXPECT_TRUE(r.undefined_sources.empty());
      for (index_t i = 0; i < p.n1; ++i)
        for (index_t j = 0; j < p.n2; ++j) {
          const double kij = k(&x1[std::size_t(i * d)], &x2[std::size_t(j * d)]);
          const double kii = k(&x1[std::size_t(i * d)], &x1[std::size_t(i * d)]);
          EXPECT_NEAR(r.s_rel.data()[i * p.n2 + j], std::abs(kij) / kii, 1e-11 * std::max(1.0, std::abs(kij) / kii));
          EXPECT_NEAR(r.s_ker.data()[i * p.n2 + j], kij, 1e-11 * std::max(1.0, std::abs(kij)));
        }
    }
}

TEST(Elasticity, LinearModelClosedFormEveryEta) {
  for (const bool bias : {false, true}) {
    SCOPED_TRACE(bias ? "bias" : "no bias");
    MlpSpec s;
    s.widths = {3, 1};
    s.bias = {bias};
    s.validate();
    const Problem p = problem(s, 4, 5, false, 11);
    check_linear(p, p.x1, p.x2, bias);
  }
}

// Fixed random features phi(x) = tanh(A x) fed to a linear model: the same closed form in phi.
TEST(Elasticity, RandomFeaturesClosedForm) {
  const index_t d = 3, k = 6, n1 = 4, n2 = 6;
  const std::vector<double> a = test::random_values<double>(k * d, 5);
  const auto features = [&](const std::vector<double>& x, index_t n) {
    std::vector<double> phi(static_cast<std::size_t>(n * k));
    for (index_t i = 0; i < n; ++i)
      for (index_t r = 0; r < k; ++r) {
        double s = 0;
        for (index_t c = 0; c < d; ++c) s += a[std::size_t(r * d + c)] * x[std::size_t(i * d + c)];
        phi[std::size_t(i * k + r)] = std::tanh(2 * s);
      }
    return phi;
  };
  MlpSpec s;
  s.widths = {k, 1};
  s.bias = {false};
  s.validate();
  Problem p = problem(s, n1, n2, false, 21);
  p.x1 = features(test::random_values<double>(n1 * d, 22), n1);
  p.x2 = features(test::random_values<double>(n2 * d, 23), n2);
  check_linear(p, p.x1, p.x2, false);
}

// ---- the eta -> 0 limit ----

double max_abs_diff(const Array<double>& a, const Array<double>& b) {
  double m = 0;
  for (index_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a.data()[i]) && std::isnan(b.data()[i])) continue;
    m = std::max(m, std::abs(a.data()[i] - b.data()[i]));
  }
  return m;
}

TEST(Elasticity, StepConvergesToNtkLinearlyInEta) {
  for (const char* act : {"tanh", "relu"}) {
    for (const Metric metric : {Metric::abs, Metric::l2, Metric::kl}) {
      SCOPED_TRACE(std::string(act) + " " + elasticity::to_string(metric));
      const bool labels = metric != Metric::abs;
      const Problem p = problem(mlp({4, 9, 7, 3}, act), 5, 6, labels, 31);
      const Loss loss = labels ? Loss::xent : Loss::mse;
      const Job<double> run(H, p);
      const PairResult ntk = run.pairs(opts(1e-3, Form::ntk, metric, loss));
      // The ntk form does not depend on eta.
      EXPECT_LT(max_abs_diff(ntk.s_rel, run.pairs(opts(0.5, Form::ntk, metric, loss)).s_rel), 1e-12);
      std::vector<double> err;
      for (const double eta : {2e-3, 1e-3, 5e-4}) {
        const PairResult step = run.pairs(opts(eta, Form::step, metric, loss));
        ASSERT_TRUE(step.undefined_sources.empty());
        err.push_back(max_abs_diff(step.s_rel, ntk.s_rel));
      }
      EXPECT_GT(err[0], 1e-7);   // a real first-order term, far above float64 rounding
      EXPECT_LT(err[0], 0.1);
      EXPECT_NEAR(err[1] / err[0], 0.5, 0.05);
      EXPECT_NEAR(err[2] / err[1], 0.5, 0.05);
    }
  }
}

TEST(Elasticity, SelfIsOne) {
  const Problem p = problem(mlp({4, 8, 3}), 6, 0, true, 41);
  for (const Form form : {Form::step, Form::ntk})
    for (const Metric metric : {Metric::l2, Metric::kl}) {
      const PairResult r = Job<double>(H, p).pairs(opts(0.3, form, metric, Loss::xent));
      for (index_t i = 0; i < p.n1; ++i) EXPECT_EQ(r.s_rel.data()[i * p.n1 + i], 1.0);
    }
  // Targets given explicitly as the sources: the own change is computed apart, the same to rounding.
  Problem q = p;
  q.x2 = q.x1;
  q.n2 = q.n1;
  for (const Form form : {Form::step, Form::ntk}) {
    const PairResult r = Job<double>(H, q).pairs(opts(0.3, form, Metric::kl, Loss::xent));
    for (index_t i = 0; i < q.n1; ++i) EXPECT_NEAR(r.s_rel.data()[i * q.n1 + i], 1.0, 1e-12);
  }
}

// f = v relu(w.x), no biases: wherever w.x' < 0 before and after the step, f(x') stays 0.
TEST(Elasticity, SingleReluUnitIsLocal) {
  const index_t d = 3, n1 = 4, n2 = 40;
  MlpSpec s = mlp({d, 1, 1}, "relu", false);
  Problem p = problem(s, n1, n2, false, 51);
  p.w = {0.8, -0.5, 0.3, 1.5};  // w (3), v
  // Sources where the unit is active (else their gradient is zero).
  p.x1 = {1, 0, 0, 0.5, -0.5, 0.2, 0.9, 0.1, 0.4, 0.2, -0.9, 0.1};
  p.values = {-1, 2, 0.5, -0.3};
  const double eta = 0.05;
  const auto dot = [&](const double* a, const double* b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; };
  for (const Form form : {Form::step, Form::ntk}) {
    const PairResult r = Job<double>(H, p).pairs(opts(eta, form, Metric::abs, Loss::mse));
    index_t zeros = 0, active = 0;
    for (index_t i = 0; i < n1; ++i) {
      const double* xi = &p.x1[std::size_t(i * d)];
      const double z = dot(p.w.data(), xi), v = p.w[3];
      ASSERT_GT(z, 0);
      const double dl = 2 * (v * z - p.values[std::size_t(i)]);
      // w+ = w - eta dl v x_i, v+ = v - eta dl z.
      double wp[3];
      for (int c = 0; c < 3; ++c) wp[c] = p.w[std::size_t(c)] - eta * dl * v * xi[c];
      const double vp = v - eta * dl * z;
      const double self = std::abs(vp * std::max(0.0, dot(wp, xi)) - v * z);
      for (index_t j = 0; j < n2; ++j) {
        const double* xj = &p.x2[std::size_t(j * d)];
        const double before = dot(p.w.data(), xj), after = dot(wp, xj);
        const double got = r.s_rel.data()[i * n2 + j];
        if (before < 0 && (after < 0 || form == Form::ntk)) {
          EXPECT_EQ(got, 0.0);
          ++zeros;
        } else if (before > 0 && after > 0 && form == Form::step) {
          EXPECT_NEAR(got, std::abs(vp * after - v * before) / self, 1e-12);
          EXPECT_GT(got, 0);
          ++active;
        }
      }
    }
    EXPECT_GT(zeros, 10);
    if (form == Form::step) {
      EXPECT_GT(active, 10);
    }
  }
}

// ---- the batched step equals separate copy-update-forward computations ----

// The per-sample loss gradient, written out: mse = mean over O of (f - y)^2, xent = -log softmax_y.
std::vector<double> loss_grad_of(const Problem& p, Loss loss, const std::vector<double>& f) {
  naive::Targets y{p.labels, p.values};
  std::vector<double> g;
  const index_t O = p.spec.outputs();
  for (index_t i = 0; i < p.n1; ++i) {
    const std::vector<double> fi(f.begin() + i * O, f.begin() + (i + 1) * O);
    const std::vector<double> gi = naive::loss_grad<double>(loss, fi, y, i, 1);
    g.insert(g.end(), gi.begin(), gi.end());
  }
  return g;
}

// delta [n1, n2*O] and own changes [n1, O] by one model copy per source: MlpEngine forward,
// backprop of dl_i/df, the update on the host, a forward of the updated copy.
template <class T>
std::pair<std::vector<double>, std::vector<double>> separate(const Problem& p, Loss loss, Update update, double eta) {
  const index_t d = p.spec.inputs(), O = p.spec.outputs(), P = p.spec.num_params(), n2 = p.n2;
  model::MlpEngine<T> e(H, p.spec);
  const std::vector<T> w = cast<T>(p.w), x1 = cast<T>(p.x1), x2 = cast<T>(p.x2);
  const auto fwd = [&](const std::vector<T>& params, const std::vector<T>& x, index_t n) {
    const auto f = e.forward(params.data(), matrix_view(x.data(), n, d));
    return std::vector<double>(f.data, f.data + n * O);
  };
  const std::vector<double> f1 = fwd(w, x1, p.n1), f2 = fwd(w, x2, n2);
  const std::vector<double> lg = loss_grad_of(p, loss, f1);
  std::vector<double> delta, self;
  for (index_t i = 0; i < p.n1; ++i) {
    const std::vector<T> xi(x1.begin() + i * d, x1.begin() + (i + 1) * d);
    fwd(w, xi, 1);
    const std::vector<T> cot(lg.begin() + i * O, lg.begin() + (i + 1) * O);
    e.backprop(w.data(), matrix_view(cot.data(), 1, O));
    std::vector<T> g(static_cast<std::size_t>(P));
    e.param_grads(matrix_view(g.data(), 1, P));
    std::vector<T> wp(static_cast<std::size_t>(P));
    for (index_t k = 0; k < P; ++k) {
      const double gk = double(g[std::size_t(k)]);
      const double u = update == Update::adam ? gk / (std::abs(gk) + 1e-8) : gk;
      wp[std::size_t(k)] = T(double(w[std::size_t(k)]) - eta * u);
    }
    const std::vector<double> fp = fwd(wp, x2, n2), fs = fwd(wp, xi, 1);
    for (index_t k = 0; k < n2 * O; ++k) delta.push_back(fp[std::size_t(k)] - f2[std::size_t(k)]);
    for (index_t a = 0; a < O; ++a) self.push_back(fs[std::size_t(a)] - f1[std::size_t(i * O + a)]);
  }
  return {delta, self};
}

template <class T>
void check_batched(double tol) {
  for (const bool labels : {false, true})
    for (const Update update : {Update::sgd, Update::adam}) {
      SCOPED_TRACE(std::string(labels ? "xent" : "mse") + " " + elasticity::to_string(update));
      const Problem p = problem(mlp({5, 7, 6, 3}), 6, 9, labels, 61);
      const Loss loss = labels ? Loss::xent : Loss::mse;
      const double eta = 0.05;
      const OutputChanges ch = Job<T>(H, p).changes(opts(eta, Form::step, Metric::automatic, loss, update));
      const auto [delta, self] = separate<T>(p, loss, update, eta);
      EXPECT_LT(test::max_rel_diff(ch.delta.data(), delta.data(), ch.delta.size()), tol);
      EXPECT_LT(test::max_rel_diff(ch.self_delta.data(), self.data(), ch.self_delta.size()), tol);
      EXPECT_EQ(ch.eta, eta);
      EXPECT_GT(ch.flops, 0);
      // The loss gradient against the naive float64 network and the per-sample formula.
      const std::vector<double> lg = loss_grad_of(p, loss, naive::outputs(p.spec, p.w, p.x1, p.n1));
      EXPECT_LT(test::max_rel_diff(ch.loss_grad.data(), lg.data(), ch.loss_grad.size()), tol);
    }
}

TEST(Elasticity, BatchedStepEqualsSeparateCopiesDouble) { check_batched<double>(1e-12); }
TEST(Elasticity, BatchedStepEqualsSeparateCopiesFloat) { check_batched<float>(2e-5); }

// ---- the class metrics against direct formulas ----

std::vector<double> softmax(const double* f, index_t O) {
  std::vector<double> p(static_cast<std::size_t>(O));
  double z = 0;
  for (index_t a = 0; a < O; ++a) z += std::exp(f[a]);
  for (index_t a = 0; a < O; ++a) p[std::size_t(a)] = std::exp(f[a]) / z;
  return p;
}

TEST(Elasticity, ClassMetricsMatchDirectFormulas) {
  const Problem p = problem(mlp({4, 8, 5}), 5, 7, true, 71);
  const index_t O = 5, n2 = p.n2;
  const double eta = 0.5;
  const auto [delta, self] = separate<double>(p, Loss::xent, Update::sgd, eta);
  const std::vector<double> f1 = naive::outputs(p.spec, p.w, p.x1, p.n1), f2 = naive::outputs(p.spec, p.w, p.x2, n2);
  // True KL(p || q), sum p log(p / q); ||q - p||; the notebook's F.kl_div(p, q) = mean(q (log q - p)).
  // The class probabilities of the outputs f, and of f moved by the change dl.
  const auto before_after = [&](const double* f, const double* dl) {
    std::vector<double> fp(static_cast<std::size_t>(O));
    for (index_t a = 0; a < O; ++a) fp[std::size_t(a)] = f[a] + dl[a];
    return std::make_pair(softmax(f, O), softmax(fp.data(), O));
  };
  const auto kl = [&](const double* f, const double* dl) {
    const auto [pp, q] = before_after(f, dl);
    double s = 0;
    for (index_t a = 0; a < O; ++a) s += pp[std::size_t(a)] * std::log(pp[std::size_t(a)] / q[std::size_t(a)]);
    return s;
  };
  const auto l2 = [&](const double* f, const double* dl) {
    const auto [pp, q] = before_after(f, dl);
    double s = 0;
    for (index_t a = 0; a < O; ++a) s += (q[std::size_t(a)] - pp[std::size_t(a)]) * (q[std::size_t(a)] - pp[std::size_t(a)]);
    return std::sqrt(s);
  };
  const auto notebook = [&](const double* f, const double* dl) {
    const auto [input, target] = before_after(f, dl);
    double s = 0;
    for (index_t a = 0; a < O; ++a)
      s += target[std::size_t(a)] * (std::log(target[std::size_t(a)]) - input[std::size_t(a)]);
    return s / double(O);
  };
  using Formula = std::function<double(const double*, const double*)>;
  for (const auto& [metric, formula] : std::vector<std::pair<Metric, Formula>>{
           {Metric::kl, kl}, {Metric::l2, l2}, {Metric::kl_compat, notebook}}) {
    SCOPED_TRACE(elasticity::to_string(metric));
    const PairResult r = Job<double>(H, p).pairs(opts(eta, Form::step, metric, Loss::xent));
    for (index_t i = 0; i < p.n1; ++i) {
      const double own = formula(&f1[std::size_t(i * O)], &self[std::size_t(i * O)]);
      EXPECT_NEAR(r.self_change[std::size_t(i)], own, 1e-12 * std::abs(own) + 1e-15);
      for (index_t j = 0; j < n2; ++j) {
        const double want = formula(&f2[std::size_t(j * O)], &delta[std::size_t((i * n2 + j) * O)]) / own;
        EXPECT_NEAR(r.s_rel.data()[i * n2 + j], want, 1e-9 * std::max(1.0, std::abs(want)));
      }
    }
  }
}

// For small steps the KL is computed without the cancellation of sum p (log p - log q), whose
// terms are O(Delta) for a sum of O(Delta^2): against KL = log1p(sum_j p_j expm1(Delta_j)) -
// sum_k p_k Delta_k, whose cancellation is of terms O(Delta) computed to relative 1e-16 each
// (absolute error ~1e-22 here, against the naive sum's ~1e-16 for KL ~ 1e-12).
TEST(Elasticity, SmallStepKlIsAccurate) {
  const Problem p = problem(mlp({4, 8, 5}), 4, 0, true, 81);
  const index_t O = 5;
  const OutputChanges ch = Job<double>(H, p).changes(opts(1e-6, Form::step, Metric::kl, Loss::xent));
  const PairResult r = elasticity::metrics(ch, Metric::kl, Form::step);
  for (index_t i = 0; i < p.n1; ++i) {
    const double* f = ch.base1.data() + i * O;
    const double* dl = ch.self_delta.data() + i * O;
    const std::vector<double> pp = softmax(f, O);
    double s = 0, mean = 0;
    for (index_t a = 0; a < O; ++a) {
      s += pp[std::size_t(a)] * std::expm1(dl[a]);
      mean += pp[std::size_t(a)] * dl[a];
    }
    const double kl = std::log1p(s) - mean;
    ASSERT_GT(kl, 1e-14);
    EXPECT_NEAR(r.self_change[std::size_t(i)], kl, 1e-6 * kl);
  }
}

// In the ntk form the class metrics are the eta -> 0 limits, from the linearised change:
// l2 = ||F Delta||, kl = Delta^T F Delta / 2, F = diag p - p p^T.
TEST(Elasticity, NtkClassMetricsAreTheLimits) {
  const Problem p = problem(mlp({4, 8, 3}), 4, 5, true, 91);
  const index_t O = 3;
  const OutputChanges ch = Job<double>(H, p).changes(opts(1e-2, Form::ntk, Metric::kl, Loss::xent));
  const PairResult kl = elasticity::metrics(ch, Metric::kl, Form::ntk);
  const PairResult l2 = elasticity::metrics(ch, Metric::l2, Form::ntk);
  for (index_t i = 0; i < p.n1; ++i)
    for (index_t j = 0; j < p.n2; ++j) {
      const auto m = [&](const double* f, const double* dl) {
        const auto pp = softmax(f, O);
        double quad = 0, norm = 0;
        for (index_t a = 0; a < O; ++a) {
          double fa = pp[std::size_t(a)] * dl[a];
          for (index_t b = 0; b < O; ++b) fa -= pp[std::size_t(a)] * pp[std::size_t(b)] * dl[b];
          quad += dl[a] * fa;
          norm += fa * fa;
        }
        return std::pair{0.5 * quad, std::sqrt(norm)};
      };
      const auto own = m(ch.base1.data() + i * O, ch.self_delta.data() + i * O);
      const auto at = m(ch.base2.data() + j * O, ch.delta.data() + (i * p.n2 + j) * O);
      EXPECT_NEAR(kl.s_rel.data()[i * p.n2 + j], at.first / own.first, 1e-10);
      EXPECT_NEAR(l2.s_rel.data()[i * p.n2 + j], at.second / own.second, 1e-10);
    }
}

// ---- the NTK form against the naive network, per-layer parts, tiling ----

TEST(Elasticity, NtkFormMatchesNaiveJacobians) {
  const Problem p = problem(mlp({4, 6, 5, 3}, "gelu"), 5, 7, false, 101);
  const index_t O = 3, P = p.spec.num_params();
  const double eta = 0.01;
  const OutputChanges ch = Job<double>(H, p).changes(opts(eta, Form::ntk, Metric::abs, Loss::mse), true);
  // Delta_i(x') = -eta J(x') J(x_i)^T dl_i.
  const std::vector<double> lg = loss_grad_of(p, Loss::mse, naive::outputs(p.spec, p.w, p.x1, p.n1));
  const std::vector<double> g = naive::per_sample_vjp(p.spec, p.w, p.x1, p.n1, lg);
  std::vector<double> want = naive::param_jvp(p.spec, p.w, p.x2, p.n2, g, p.n1);
  for (double& v : want) v *= -eta;
  EXPECT_LT(test::max_rel_diff(ch.delta.data(), want.data(), ch.delta.size()), 1e-12);
  std::vector<double> self;
  for (index_t i = 0; i < p.n1; ++i) {
    const std::vector<double> gi(g.begin() + i * P, g.begin() + (i + 1) * P);
    const std::vector<double> xi(p.x1.begin() + i * 4, p.x1.begin() + (i + 1) * 4);
    for (const double v : naive::param_jvp(p.spec, p.w, xi, 1, gi, 1)) self.push_back(-eta * v);
  }
  EXPECT_LT(test::max_rel_diff(ch.self_delta.data(), self.data(), ch.self_delta.size()), 1e-12);
  // Per-layer parts sum to the whole.
  ASSERT_EQ(ch.layer_delta.size(), 3u);
  ASSERT_EQ(ch.layer_self_delta.size(), 3u);
  std::vector<double> sum(std::size_t(ch.delta.size()), 0.0), sum_self(std::size_t(p.n1 * O), 0.0);
  for (index_t l = 0; l < 3; ++l) {
    for (index_t k = 0; k < ch.delta.size(); ++k) sum[std::size_t(k)] += ch.layer_delta[std::size_t(l)].data()[k];
    for (index_t k = 0; k < p.n1 * O; ++k) sum_self[std::size_t(k)] += ch.layer_self_delta[std::size_t(l)].data()[k];
  }
  EXPECT_LT(test::max_rel_diff(sum.data(), ch.delta.data(), ch.delta.size()), 1e-12);
  EXPECT_LT(test::max_rel_diff(sum_self.data(), ch.self_delta.data(), p.n1 * O), 1e-12);
}

TEST(Elasticity, TinyWorkspaceGivesTheSameResults) {
  for (const bool same : {true, false})
    for (const Form form : {Form::step, Form::ntk}) {
      SCOPED_TRACE(std::string(elasticity::to_string(form)) + (same ? " one set" : " two sets"));
      const Problem p = problem(mlp({4, 6, 5, 3}), 9, same ? 0 : 2, true, 111);  // fewer targets than sources
      const Options o = opts(0.1, form, Metric::kl, Loss::xent);
      const bool layers = form == Form::ntk;
      const OutputChanges big = Job<double>(H, p).changes(o, layers);
      Context small = Context::host(2);
      small.set_workspace_budget(4096);
      const OutputChanges tiled = Job<double>(small, p).changes(o, layers);
      EXPECT_LT(test::max_rel_diff(tiled.delta.data(), big.delta.data(), big.delta.size()), 1e-13);
      EXPECT_LT(test::max_rel_diff(tiled.self_delta.data(), big.self_delta.data(), big.self_delta.size()), 1e-13);
      EXPECT_LT(test::max_rel_diff(tiled.base2.data(), big.base2.data(), big.base2.size()), 1e-13);
      ASSERT_EQ(tiled.layer_delta.size(), big.layer_delta.size());
      for (std::size_t l = 0; l < big.layer_delta.size(); ++l)
        EXPECT_LT(test::max_rel_diff(tiled.layer_delta[l].data(), big.layer_delta[l].data(), big.delta.size()), 1e-13);
      EXPECT_EQ(tiled.flops > 0, true);
    }
}

// ---- the NTK form against the empirical NTK contracted by hand ----

// max |a - b| / max |b|: the error against the array's scale (a change of 1e-3 and one of 1e2
// in the same array are both held to the tolerance relative to the largest).
double normwise_rel_diff(const double* a, const std::vector<double>& b) {
  double d = 0, m = 0;
  for (std::size_t k = 0; k < b.size(); ++k) {
    const double e = std::abs(a[k] - b[k]);
    if (std::isnan(e)) return e;
    d = std::max(d, e);
    m = std::max(m, std::abs(b[k]));
  }
  return m > 0 ? d / m : d;
}

// Delta [n1, n2*O] = -eta Theta(x', x_i) g_i from a full kernel K [n2*O, n1*O] (rows (j, a),
// columns (i, b)), and the self changes [n1, O] from the diagonal blocks of Kself [n1*O, n1*O].
struct Contracted {
  std::vector<double> delta, self;
};
Contracted contract(const double* K, const double* Kself, const std::vector<double>& g, index_t n1, index_t n2,
                    index_t O, double eta) {
  Contracted c;
  c.delta.assign(std::size_t(n1 * n2 * O), 0.0);
  c.self.assign(std::size_t(n1 * O), 0.0);
  for (index_t i = 0; i < n1; ++i)
    for (index_t a = 0; a < O; ++a) {
      for (index_t j = 0; j < n2; ++j) {
        double s = 0;
        for (index_t b = 0; b < O; ++b) s += K[(j * O + a) * (n1 * O) + i * O + b] * g[std::size_t(i * O + b)];
        c.delta[std::size_t(i * n2 * O + j * O + a)] = -eta * s;
      }
      double s = 0;
      for (index_t b = 0; b < O; ++b) s += Kself[(i * O + a) * (n1 * O) + i * O + b] * g[std::size_t(i * O + b)];
      c.self[std::size_t(i * O + a)] = -eta * s;
    }
  return c;
}

// The ntk form's layer-by-layer contraction (no kernel formed) equals the full empirical NTK
// (Jacobian oracle and structured method) contracted with each source's dl/df, whole and per
// layer, over activations, parameterizations (c_l, beta) and biases.
void check_against_kernel(const Context& ctx, const MlpSpec& spec, bool same, Loss loss, unsigned seed) {
  const index_t n1 = 5, n2 = same ? 0 : 7, O = spec.outputs(), L = spec.layers();
  const Problem p = problem(spec, n1, n2, loss == Loss::xent, seed);
  const index_t m2 = same ? n1 : n2;
  const double eta = 0.5;  // the ntk form is linear in eta: changes of order one
  const Job<double> run(ctx, p);
  const Options o = opts(eta, Form::ntk, loss == Loss::xent ? Metric::kl : Metric::abs, loss);
  const OutputChanges ch = run.changes(o, true);
  const OutputChanges whole = run.changes(o, false);
  const std::vector<double> g = loss_grad_of(p, loss, naive::outputs(p.spec, p.w, p.x1, p.n1));
  ASSERT_LT(test::max_rel_diff(ch.loss_grad.data(), g.data(), n1 * O), 1e-14);
  const Array<double> w = Array<double>::from_host(H, {index_t(p.w.size())}, p.w);
  const Array<double> x1 = Array<double>::from_host(H, {n1, spec.inputs()}, p.x1);
  const Array<double> x2 = Array<double>::from_host(H, {m2, spec.inputs()}, same ? p.x1 : p.x2);
  for (const ntk::Method method : {ntk::Method::jacobian, ntk::Method::structured}) {
    SCOPED_TRACE(ntk::to_string(method));
    ntk::NtkOptions no;
    no.outputs = ntk::Outputs::full;
    no.method = method;
    no.per_layer = true;
    const ntk::NtkResult<double> k = ntk::empirical_ntk<double>(H, spec, w.data(), x2.matrix(), x1.matrix(), no);
    const ntk::NtkResult<double> ks = ntk::empirical_ntk<double>(H, spec, w.data(), x1.matrix(), std::nullopt, no);
    const Contracted want = contract(k.kernel.data(), ks.kernel.data(), g, n1, m2, O, eta);
    EXPECT_LT(normwise_rel_diff(ch.delta.data(), want.delta), 1e-12);
    EXPECT_LT(normwise_rel_diff(ch.self_delta.data(), want.self), 1e-12);
    EXPECT_LT(normwise_rel_diff(whole.delta.data(), want.delta), 1e-12);
    EXPECT_LT(normwise_rel_diff(whole.self_delta.data(), want.self), 1e-12);
    ASSERT_EQ(ch.layer_delta.size(), std::size_t(L));
    ASSERT_EQ(ch.layer_self_delta.size(), std::size_t(L));
    ASSERT_EQ(k.per_layer.size(), std::size_t(L));
    double scale = 0;  // the per-layer parts against the whole change's scale (a part may vanish)
    for (const double v : want.delta) scale = std::max(scale, std::abs(v));
    for (index_t l = 0; l < L; ++l) {
      SCOPED_TRACE("layer " + std::to_string(l + 1));
      const Contracted part = contract(k.per_layer[std::size_t(l)].data(), ks.per_layer[std::size_t(l)].data(), g, n1,
                                       m2, O, eta);
      const Array<double>& got = ch.layer_delta[std::size_t(l)];
      const Array<double>& got_self = ch.layer_self_delta[std::size_t(l)];
      for (std::size_t q = 0; q < part.delta.size(); ++q) EXPECT_NEAR(got.data()[q], part.delta[q], 1e-12 * scale);
      for (std::size_t q = 0; q < part.self.size(); ++q) EXPECT_NEAR(got_self.data()[q], part.self[q], 1e-12 * scale);
      // Not vacuous: every layer contributes (random inputs and weights).
      EXPECT_GT(normwise_rel_diff(got.data(), std::vector<double>(part.delta.size(), 0.0)), 0);
    }
  }
}

MlpSpec spec_of(const char* act, model::Parameterization param, std::vector<bool> bias) {
  MlpSpec s = mlp({4, 7, 6, 3}, act);
  s.bias = std::move(bias);
  s.parameterization = param;
  if (param == model::Parameterization::ntk) s.bias_scale = 0.3;  // beta != 1 and != c_l
  s.validate();
  return s;
}

TEST(Elasticity, NtkFormEqualsTheFullKernelContracted) {
  unsigned seed = 300;
  for (const char* act : {"relu", "tanh"})
    for (const auto param : {model::Parameterization::standard, model::Parameterization::ntk})
      for (const std::vector<bool>& bias : {std::vector<bool>{true, true, true}, std::vector<bool>{false, false, false},
                                            std::vector<bool>{false, true, false}})
        for (const bool same : {true, false}) {
          const Loss loss = (seed % 2) ? Loss::xent : Loss::mse;
          SCOPED_TRACE(std::string(act) + " " + model::to_string(param) + " bias " + std::to_string(bias[0]) +
                       std::to_string(bias[1]) + std::to_string(bias[2]) + (same ? " one set" : " two sets") + " " +
                       (loss == Loss::xent ? "xent" : "mse"));
          check_against_kernel(H, spec_of(act, param, bias), same, loss, seed++);
        }
}

// Under a workspace budget of a few hundred values the sources come in several groups and the
// targets in several tiles; the result is still the contracted kernel.
TEST(Elasticity, NtkFormTiledUnderATinyBudgetEqualsTheKernel) {
  Context small = Context::host(2);
  small.set_workspace_budget(3000);
  std::vector<index_t> done;
  small.set_progress_sink([&](std::string_view, index_t d, index_t) { done.push_back(d); });
  for (const bool same : {true, false}) {
    SCOPED_TRACE(same ? "one set" : "two sets");
    done.clear();
    check_against_kernel(small, spec_of("tanh", model::Parameterization::ntk, {true, false, true}), same, Loss::xent,
                         400);
    // Progress after every target tile of every source group, over the two output_changes calls
    // (per layer and whole): a group ends at a multiple of the targets short of all pairs (5 and
    // 7 are prime, larger than a group: no tile ends there). Several groups, several tiles each.
    const index_t n2 = same ? 5 : 7, pairs = 5 * n2;
    ASSERT_FALSE(done.empty());
    EXPECT_EQ(done.back(), pairs);
    const auto ends = std::count_if(done.begin(), done.end(), [&](index_t d) { return d % n2 == 0 && d < pairs; });
    const auto groups = ends / 2 + 1;  // per call
    EXPECT_GE(groups, 2);
    EXPECT_GT(std::ptrdiff_t(done.size()), 2 * groups);
  }
}

// ---- undefined sources and errors ----

TEST(Elasticity, ZeroLossGradientSourceIsUndefined) {
  Problem p = problem(mlp({4, 6, 2}), 4, 5, false, 121);
  // Source 1's target is its own output: zero loss gradient, no step, no S_rel.
  const Job<double> probe(H, p);
  const OutputChanges base = probe.changes(opts(0.1, Form::step, Metric::abs, Loss::mse));
  for (index_t a = 0; a < 2; ++a) p.values[std::size_t(2 + a)] = base.base1.data()[2 + a];
  for (const Form form : {Form::step, Form::ntk}) {
    const PairResult r = Job<double>(H, p).pairs(opts(0.1, form, Metric::abs, Loss::mse));
    ASSERT_EQ(r.undefined_sources, std::vector<index_t>{1});
    EXPECT_EQ(r.self_change[1], 0.0);
    for (index_t i = 0; i < p.n1; ++i)
      for (index_t j = 0; j < p.n2; ++j) EXPECT_EQ(std::isnan(r.s_rel.data()[i * p.n2 + j]), i == 1);
  }
}

// ---- the precision of the step form ----

// max_a |v_a| of the O values of row i.
double row_max(const Array<double>& a, index_t i, index_t O) {
  double m = 0;
  for (index_t k = 0; k < O; ++k) m = std::max(m, std::abs(a.data()[i * O + k]));
  return m;
}

// A network that puts every sample in class 0 with a logit margin of about `margin`: the sources
// of class 0 are confident (dl/df ~ e^-margin), the others are far off (dl/df ~ 1).
Problem confident_problem(double margin) {
  Problem p = problem(mlp({4, 8, 3}), 9, 5, true, 151);
  p.w[std::size_t(p.spec.bias_offset(1))] += margin;
  return p;
}

TEST(Elasticity, Float32LeavesConfidentSourcesUnresolved) {
  // Margin 12: float32's own changes of the confident sources come out exactly 0 (once taken for
  // "no own change"); margin 8: they come out as a few units of rounding, non-zero noise (once
  // silently turned into S_rel).
  for (const double margin : {12.0, 8.0}) {
    SCOPED_TRACE(::testing::Message() << "margin " << margin);
    const Problem p = confident_problem(margin);
    const index_t O = 3;
    const double eta = 1e-4;
    std::vector<index_t> confident;
    for (index_t i = 0; i < p.n1; ++i)
      if (p.labels[std::size_t(i)] == 0) confident.push_back(i);
    ASSERT_EQ(confident.size(), 3u);
    // The true own changes (float64), against the float32 rounding level 32 eps |f|: the
    // confident sources' lie far below it, the others' far above (so the split is no coin toss).
    const OutputChanges truth = Job<double>(H, p).changes(opts(eta, Form::step, Metric::kl, Loss::xent));
    EXPECT_EQ(truth.resolution, 32 * std::numeric_limits<double>::epsilon());
    EXPECT_TRUE(truth.unresolved_sources.empty());
    const double f32_level = 32.0 * double(std::numeric_limits<float>::epsilon());
    for (index_t i = 0; i < p.n1; ++i) {
      const double level = f32_level * std::max(1.0, row_max(truth.base1, i, O));
      const double self = row_max(truth.self_delta, i, O);
      const bool conf = p.labels[std::size_t(i)] == 0;
      SCOPED_TRACE(::testing::Message() << "source " << i << " self " << self << " level " << level);
      EXPECT_GT(row_max(truth.loss_grad, i, O), 0.0);
      if (conf) EXPECT_LT(self, 0.05 * level);
      else EXPECT_GT(self, 4 * level);
      // ... and far above float64's level.
      EXPECT_GT(self, 1e3 * truth.resolution * std::max(1.0, row_max(truth.base1, i, O)));
    }
    // float32: the confident sources are unresolved (not "no own change"), with NaN rows.
    const Job<float> f32(H, p);
    const OutputChanges ch = f32.changes(opts(eta, Form::step, Metric::kl, Loss::xent));
    EXPECT_EQ(ch.resolution, 32 * double(std::numeric_limits<float>::epsilon()));
    EXPECT_EQ(ch.unresolved_sources, confident);
    double noise = 0;
    for (const index_t i : confident) noise = std::max(noise, row_max(ch.self_delta, i, O));
    if (margin == 12.0) EXPECT_EQ(noise, 0.0);
    else EXPECT_GT(noise, 0.0);
    for (const Metric metric : {Metric::kl, Metric::l2, Metric::kl_compat}) {
      SCOPED_TRACE(elasticity::to_string(metric));
      const PairResult r = f32.pairs(opts(eta, Form::step, metric, Loss::xent));
      EXPECT_EQ(r.unresolved_sources, confident);
      EXPECT_EQ(r.undefined_sources, confident);
      for (index_t i = 0; i < p.n1; ++i) {
        const bool conf = p.labels[std::size_t(i)] == 0;
        for (index_t j = 0; j < p.n2; ++j) EXPECT_EQ(std::isnan(r.s_rel.data()[i * p.n2 + j]), conf) << i << " " << j;
      }
    }
    // float64 resolves them: every row defined, within O(eta) of the ntk form's limit.
    const PairResult r64 = Job<double>(H, p).pairs(opts(eta, Form::step, Metric::kl, Loss::xent));
    EXPECT_TRUE(r64.unresolved_sources.empty());
    EXPECT_TRUE(r64.undefined_sources.empty());
    const PairResult ntk64 = Job<double>(H, p).pairs(opts(eta, Form::ntk, Metric::kl, Loss::xent));
    EXPECT_LT(test::max_rel_diff(r64.s_rel.data(), ntk64.s_rel.data(), r64.s_rel.size()), 1e-2);
    // So does the ntk form in float32 (no difference of forwards: resolution 0, nothing unresolved).
    const OutputChanges nch = f32.changes(opts(eta, Form::ntk, Metric::kl, Loss::xent));
    EXPECT_EQ(nch.resolution, 0.0);
    EXPECT_TRUE(nch.unresolved_sources.empty());
    const PairResult ntk32 = f32.pairs(opts(eta, Form::ntk, Metric::kl, Loss::xent));
    EXPECT_TRUE(ntk32.undefined_sources.empty());
    EXPECT_LT(test::max_rel_diff(ntk32.s_rel.data(), ntk64.s_rel.data(), ntk64.s_rel.size()), 1e-3);
    // The metrics keep the listing of hand-made changes, and refuse an index outside the sources.
    OutputChanges marked = f32.changes(opts(eta, Form::step, Metric::kl, Loss::xent));
    marked.unresolved_sources = {1};
    const PairResult m = elasticity::metrics(marked, Metric::kl, Form::step);
    EXPECT_EQ(m.unresolved_sources, std::vector<index_t>{1});
    EXPECT_TRUE(std::isnan(m.s_rel.data()[1 * p.n2]));
    marked.unresolved_sources.push_back(p.n1);
    test::expect_error<ShapeMismatch>([&] { elasticity::metrics(marked, Metric::kl, Form::step); },
                                      {"unresolved_sources", std::to_string(p.n1)});
  }
}

TEST(Elasticity, ZeroGradientSourcesAreNotUnresolved) {
  // mse, O = 2: source 1's target is its own output (dl/df = 0), source 2's is off by 1e-6 (a
  // tiny gradient: unresolved in float32, resolved in float64), the others are far off.
  for (const bool f32 : {true, false}) {
    SCOPED_TRACE(f32 ? "float" : "double");
    Problem p = problem(mlp({4, 6, 2}), 5, 4, false, 161);
    const OutputChanges base = f32 ? Job<float>(H, p).changes(opts(1e-3, Form::step, Metric::abs, Loss::mse))
                                   : Job<double>(H, p).changes(opts(1e-3, Form::step, Metric::abs, Loss::mse));
    for (index_t a = 0; a < 2; ++a) {
      p.values[std::size_t(2 + a)] = base.base1.data()[2 + a];
      p.values[std::size_t(4 + a)] = base.base1.data()[4 + a] + 1e-6;
    }
    const Options o = opts(1e-3, Form::step, Metric::abs, Loss::mse);
    const PairResult r = f32 ? Job<float>(H, p).pairs(o) : Job<double>(H, p).pairs(o);
    EXPECT_EQ(r.unresolved_sources, f32 ? std::vector<index_t>{2} : std::vector<index_t>{});
    EXPECT_EQ(r.undefined_sources, f32 ? (std::vector<index_t>{1, 2}) : std::vector<index_t>{1});
    EXPECT_EQ(r.self_change[1], 0.0);
  }
  // A dead ReLU unit without biases: dl/df != 0 but the step moves no parameter (J^T dl/df = 0).
  // No own change in either precision, and not a matter of precision.
  MlpSpec s = mlp({3, 1, 1}, "relu", false);
  Problem q = problem(s, 3, 4, false, 171);
  q.w = {0.8, -0.5, 0.3, 1.5};
  q.x1 = {1, 0, 0, -1, 0, 0, 0.5, -0.5, 0.2};  // source 1: w.x < 0
  q.values = {-1, 2, 0.5};
  for (const bool f32 : {true, false}) {
    SCOPED_TRACE(f32 ? "float, dead unit" : "double, dead unit");
    const Options o = opts(0.05, Form::step, Metric::abs, Loss::mse);
    const OutputChanges ch = f32 ? Job<float>(H, q).changes(o) : Job<double>(H, q).changes(o);
    EXPECT_NE(ch.loss_grad.data()[1], 0.0);
    EXPECT_TRUE(ch.unresolved_sources.empty());
    const PairResult r = elasticity::metrics(ch, Metric::abs, Form::step);
    EXPECT_EQ(r.undefined_sources, std::vector<index_t>{1});
    EXPECT_TRUE(r.unresolved_sources.empty());
  }
}

TEST(Elasticity, ProgressIsReportedPerTargetTileWithTheLabel) {
  const Problem p = problem(mlp({4, 6, 3}), 5, 40, true, 181);
  Context small = Context::host(2);
  small.set_workspace_budget(4096);  // several sources per group, several target tiles
  std::vector<std::pair<std::string, index_t>> calls;
  index_t total = 0;
  small.set_progress_sink([&](std::string_view task, index_t done, index_t of) {
    if (task == "ntk") return;  // the kernel's own progress, within a tile
    calls.emplace_back(std::string(task), done);
    total = of;
  });
  const Job<double> run(small, p);
  for (const Form form : {Form::step, Form::ntk}) {
    SCOPED_TRACE(elasticity::to_string(form));
    calls.clear();
    const Options o = opts(0.1, form, Metric::kl, Loss::xent);
    elasticity::output_changes<double>(small, p.spec, run.w.data(), run.x1.matrix(), run.targets(), run.xt(), o, false,
                                       "response");
    ASSERT_GT(calls.size(), std::size_t(p.n1));  // more calls than sources: tiles within a group
    EXPECT_EQ(total, p.n1 * p.n2);
    EXPECT_EQ(calls.back().second, p.n1 * p.n2);
    for (std::size_t k = 0; k < calls.size(); ++k) {
      EXPECT_EQ(calls[k].first.rfind("response: ", 0), 0u) << calls[k].first;
      if (k > 0) {
        EXPECT_GT(calls[k].second, calls[k - 1].second);
      }
    }
    calls.clear();
    run.changes(o);
    ASSERT_FALSE(calls.empty());
    EXPECT_EQ(calls.front().first.rfind("elasticity: ", 0), 0u) << calls.front().first;
  }
}

TEST(Elasticity, BadInputIsRefused) {
  const Problem p = problem(mlp({4, 6, 3}), 3, 4, true, 131);
  const Job<double> run(H, p);
  using test::expect_error;
  expect_error<InvalidArgument>([&] { run.pairs(opts(0, Form::step, Metric::kl, Loss::xent)); }, {"eta", "> 0"});
  expect_error<InvalidArgument>([&] { run.changes(opts(-1, Form::ntk, Metric::kl, Loss::xent)); }, {"eta"});
  expect_error<InvalidArgument>([&] { run.pairs(opts(0.1, Form::step, Metric::abs, Loss::xent)); }, {"abs", "labels"});
  expect_error<InvalidArgument>([&] { run.pairs(opts(0.1, Form::ntk, Metric::kl_compat, Loss::xent)); },
                                {"kl-compat", "ntk"});
  expect_error<InvalidArgument>(
      [&] { run.changes(opts(0.1, Form::ntk, Metric::kl, Loss::xent, Update::adam)); }, {"adam", "ntk"});
  expect_error<InvalidArgument>([&] { run.changes(opts(0.1, Form::step, Metric::kl, Loss::xent), true); },
                                {"per-layer", "ntk"});
  const Problem v = problem(mlp({4, 6, 3}), 3, 4, false, 132);
  const Job<double> rv(H, v);
  expect_error<InvalidArgument>([&] { rv.pairs(opts(0.1, Form::step, Metric::kl, Loss::mse)); }, {"kl", "class labels"});
  expect_error<InvalidArgument>([&] { rv.changes(opts(0.1, Form::step, Metric::abs, Loss::xent)); }, {"xent", "labels"});
  // Shapes.
  const Options o = opts(0.1, Form::step, Metric::kl, Loss::xent);
  const auto x1 = run.x1.matrix();
  expect_error<ShapeMismatch>(
      [&] {
        elasticity::output_changes<double>(H, p.spec, run.w.data(), x1.block(0, 0, 3, 3), run.targets(), run.xt(), o);
      },
      {"x1", "columns"});
  expect_error<ShapeMismatch>(
      [&] {
        elasticity::output_changes<double>(H, p.spec, run.w.data(), x1, run.targets(),
                                           run.x2.matrix().block(0, 0, 4, 2), o);
      },
      {"x2", "columns"});
  expect_error<ShapeMismatch>(
      [&] {
        elasticity::output_changes<double>(H, p.spec, run.w.data(), x1.block(0, 0, 2, 4), run.targets(), run.xt(), o);
      },
      {"targets", "labels"});
  expect_error<ShapeMismatch>(
      [&] {
        model::Targets<double> t = rv.targets();
        t.values = t.values.block(0, 0, 3, 2);
        elasticity::output_changes<double>(H, v.spec, rv.w.data(), rv.x1.matrix(), t, rv.xt(),
                                           opts(0.1, Form::step, Metric::abs, Loss::mse));
      },
      {"targets", "3x3"});
  expect_error<InvalidArgument>(
      [&] {
        elasticity::output_changes<double>(H, p.spec, run.w.data(), x1.block(0, 0, 0, 4), run.targets(), run.xt(), o);
      },
      {"x1", "no samples"});
  // A label outside the classes.
  Problem bad = p;
  bad.labels[0] = 3;
  expect_error<InvalidArgument>([&] { Job<double>(H, bad).changes(o); }, {"targets[0]", "3"});
  // A diverged network and a diverging step: clear errors, never silent NaN.
  Problem nan = v;
  nan.w[0] = std::nan("");
  expect_error<InvalidArgument>([&] { Job<double>(H, nan).changes(opts(0.1, Form::step, Metric::abs, Loss::mse)); },
                                {"f(x1; w)", "not finite"});
  Problem big = problem(mlp({4, 3}), 3, 4, false, 133);  // linear: the step's outputs grow with eta
  for (double& x : big.x2) x *= 1e3;
  for (double& x : big.x1) x *= 1e3;
  expect_error<InvalidArgument>([&] { Job<double>(H, big).changes(opts(1e305, Form::step, Metric::abs, Loss::mse)); },
                                {"not finite", "diverged"});
  // metrics on an unresolved metric, kl-compat in the ntk form.
  const OutputChanges ch = run.changes(o);
  expect_error<InvalidArgument>([&] { elasticity::metrics(ch, Metric::automatic, Form::step); }, {"resolve"});
  expect_error<InvalidArgument>([&] { elasticity::metrics(ch, Metric::kl_compat, Form::ntk); }, {"kl-compat", "ntk"});
}

// ---- host and cuda against the float64 naive network ----

class ElasticityBackend : public test::BackendTest {};

TEST_P(ElasticityBackend, StepAndNtkMatchNaiveOracle) {
  const Problem p = problem(mlp({5, 8, 6, 3}), 6, 10, true, 141);
  const index_t O = 3, P = p.spec.num_params();
  const double eta = 0.05;
  const Job<double> run(ctx(), p);
  const std::vector<double> lg = loss_grad_of(p, Loss::xent, naive::outputs(p.spec, p.w, p.x1, p.n1));
  const std::vector<double> g = naive::per_sample_vjp(p.spec, p.w, p.x1, p.n1, lg);
  const std::vector<double> f2 = naive::outputs(p.spec, p.w, p.x2, p.n2);
  for (const Update update : {Update::sgd, Update::adam}) {
    SCOPED_TRACE(elasticity::to_string(update));
    const OutputChanges ch = run.changes(opts(eta, Form::step, Metric::kl, Loss::xent, update));
    std::vector<double> want;
    for (index_t i = 0; i < p.n1; ++i) {
      std::vector<double> wp = p.w;
      for (index_t k = 0; k < P; ++k) {
        const double gk = g[std::size_t(i * P + k)];
        wp[std::size_t(k)] -= eta * (update == Update::adam ? gk / (std::abs(gk) + 1e-8) : gk);
      }
      const std::vector<double> fp = naive::outputs(p.spec, wp, p.x2, p.n2);
      for (index_t k = 0; k < p.n2 * O; ++k) want.push_back(fp[std::size_t(k)] - f2[std::size_t(k)]);
    }
    EXPECT_LT(test::max_rel_diff(ch.delta.data(), want.data(), ch.delta.size()), 1e-11);
  }
  const OutputChanges ch = run.changes(opts(eta, Form::ntk, Metric::kl, Loss::xent), true);
  std::vector<double> want = naive::param_jvp(p.spec, p.w, p.x2, p.n2, g, p.n1);
  for (double& v : want) v *= -eta;
  EXPECT_LT(test::max_rel_diff(ch.delta.data(), want.data(), ch.delta.size()), 1e-11);
  EXPECT_EQ(ch.layer_delta.size(), 3u);
}

DYNASCOPE_BACKEND_TESTS(ElasticityBackend);

}  // namespace
}  // namespace dynascope
