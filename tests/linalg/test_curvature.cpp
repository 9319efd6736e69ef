// Hessian-vector products against finite differences of gradients and against the dense Hessian
// built column by column; Gauss-Newton against J^T H J from explicit Jacobians; the NTK operator's
// top eigenpairs against the dense kernel's.
#include <gtest/gtest.h>

#include <cmath>

#include "dynascope/curvature.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"
#include "model/model_test_util.hpp"

namespace dynascope {
namespace {

using model::Loss;
using model::MlpSpec;

struct Problem {
  MlpSpec spec;
  index_t n = 5;
  std::vector<double> w, x, y;
  std::vector<std::int64_t> labels;
  Loss loss;
  model::Targets<double> targets() const {
    model::Targets<double> t;
    if (loss == Loss::xent) t.labels = {labels.data(), n, 1};
    else t.values = {y.data(), n, spec.outputs(), spec.outputs()};
    return t;
  }
  // The loss gradient at parameters p (validated against finite differences in the model tests).
  std::vector<double> gradient(const std::vector<double>& p) const {
    Context ctx = Context::host();
    model::MlpEngine<double> e(ctx, spec);
    auto f = e.forward(p.data(), {x.data(), n, spec.inputs(), spec.inputs()});
    std::vector<double> g(std::size_t(n * spec.outputs())), grad(std::size_t(spec.num_params()));
    model::loss_and_grad<double>(ctx, loss, f, targets(), {g.data(), n, spec.outputs(), spec.outputs()});
    e.backprop(p.data(), {g.data(), n, spec.outputs(), spec.outputs()});
    e.param_grads({grad.data(), 1, spec.num_params(), spec.num_params()});
    return grad;
  }
  // The Jacobian [n*O, P] (row i*O + a) from per-sample gradients of each output.
  std::vector<double> jacobian(const Context& ctx) const {
    const index_t P = spec.num_params(), D = spec.inputs(), O = spec.outputs();
    std::vector<double> jac(static_cast<std::size_t>(n * O * P));
    for (index_t a = 0; a < O; ++a) {
      std::vector<double> cot(std::size_t(n * O), 0.0), g(static_cast<std::size_t>(n * P));
      for (index_t i = 0; i < n; ++i) cot[std::size_t(i * O + a)] = 1.0;
      model::per_sample_gradients<double>(ctx, spec, w.data(), {x.data(), n, D, D}, {cot.data(), n, O, O},
                                          {g.data(), n, P, P});
      for (index_t i = 0; i < n; ++i)
        for (index_t p = 0; p < P; ++p) jac[std::size_t((i * O + a) * P + p)] = g[std::size_t(i * P + p)];
    }
    return jac;
  }
  // The loss's Hessian in output space [n, O, O], written out: mse 2/(nO) I; xent
  // (diag p - p p^T)/n per sample, p the softmax of the naive forward pass.
  std::vector<double> output_hessian() const {
    const index_t O = spec.outputs();
    const auto f = test::naive_forward(spec, w, x, n);
    std::vector<double> hl(std::size_t(n * O * O), 0.0);
    for (index_t i = 0; i < n; ++i) {
      std::vector<double> p(static_cast<std::size_t>(O));
      double mx = -1e300, se = 0;
      for (index_t a = 0; a < O; ++a) mx = std::max(mx, f[std::size_t(i * O + a)]);
      for (index_t a = 0; a < O; ++a) se += std::exp(f[std::size_t(i * O + a)] - mx);
      for (index_t a = 0; a < O; ++a) p[std::size_t(a)] = std::exp(f[std::size_t(i * O + a)] - mx) / se;
      for (index_t a = 0; a < O; ++a)
        for (index_t b = 0; b < O; ++b)
          hl[std::size_t((i * O + a) * O + b)] = loss == Loss::mse ? (a == b ? 2.0 / double(n * O) : 0.0)
                                                                   : ((a == b ? p[std::size_t(a)] : 0.0) - p[std::size_t(a)] * p[std::size_t(b)]) / double(n);
    }
    return hl;
  }
};

Problem make_problem(const std::string& arch, const std::string& act, Loss loss, unsigned seed) {
  Problem p;
  p.spec = MlpSpec::from_arch(arch, model::parse_activation(act));
  p.loss = loss;
  p.w = test::random_vector(std::size_t(p.spec.num_params()), seed, 0.7);
  p.x = test::random_vector(std::size_t(p.n * p.spec.inputs()), seed + 1);
  p.y = test::random_vector(std::size_t(p.n * p.spec.outputs()), seed + 2);
  for (index_t i = 0; i < p.n; ++i) p.labels.push_back(i % p.spec.outputs());
  return p;
}

class HessianByActivation : public ::testing::TestWithParam<std::string> {};

TEST_P(HessianByActivation, HvpMatchesFiniteDifferencesAndTheDenseHessian) {
  for (Loss loss : {Loss::mse, Loss::xent}) {
    const Problem pb = make_problem("3-5-4-3", GetParam(), loss, 11);
    const index_t P = pb.spec.num_params(), D = pb.spec.inputs();
    Context ctx = Context::host();
    linalg::CurvatureOperator<double> hess(ctx, linalg::Curvature::hessian, pb.spec, pb.w.data(), {pb.x.data(), pb.n, D, D},
                                           pb.targets(), loss);
    // The dense Hessian, column by column, from central differences of the gradient; and the
    // same columns from the operator applied to the identity in one block.
    std::vector<double> eye(std::size_t(P * P), 0.0), hv(static_cast<std::size_t>(P * P));
    for (index_t i = 0; i < P; ++i) eye[std::size_t(i * P + i)] = 1.0;
    hess.apply({eye.data(), P, P, P}, {hv.data(), P, P, P});
    const double h = 1e-5;
    double scale = 0, err = 0, asym = 0;
    for (index_t c = 0; c < P; ++c) {
      auto wp = pb.w, wm = pb.w;
      wp[std::size_t(c)] += h;
      wm[std::size_t(c)] -= h;
      const auto gp = pb.gradient(wp), gm = pb.gradient(wm);
      for (index_t r = 0; r < P; ++r) {
        const double fd = (gp[std::size_t(r)] - gm[std::size_t(r)]) / (2 * h);
        scale = std::max(scale, std::abs(fd));
        err = std::max(err, std::abs(hv[std::size_t(c * P + r)] - fd));
        asym = std::max(asym, std::abs(hv[std::size_t(c * P + r)] - hv[std::size_t(r * P + c)]));
      }
    }
    EXPECT_LT(err, 1e-6 * std::max(1.0, scale)) << GetParam() << " " << model::to_string(loss);
    EXPECT_LT(asym, 1e-12 * std::max(1.0, scale)) << GetParam();
    // A random direction: H v against the difference of gradients along v.
    const auto v = test::random_vector(std::size_t(P), 12);
    std::vector<double> hvv(static_cast<std::size_t>(P));
    hess.apply({v.data(), 1, P, P}, {hvv.data(), 1, P, P});
    auto wp = pb.w, wm = pb.w;
    for (index_t i = 0; i < P; ++i) {
      wp[std::size_t(i)] += h * v[std::size_t(i)];
      wm[std::size_t(i)] -= h * v[std::size_t(i)];
    }
    const auto gp = pb.gradient(wp), gm = pb.gradient(wm);
    for (index_t i = 0; i < P; ++i)
      EXPECT_NEAR(hvv[std::size_t(i)], (gp[std::size_t(i)] - gm[std::size_t(i)]) / (2 * h), 1e-6 * std::max(1.0, scale));
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, HessianByActivation,
                         ::testing::Values("identity", "relu", "leaky_relu:0.1", "abs", "tanh", "gelu", "softplus", "sigmoid"),
                         [](const ::testing::TestParamInfo<std::string>& pinfo) {
                           std::string s = pinfo.param;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

TEST(Curvature, GaussNewtonEqualsJtHJFromExplicitJacobians) {
  for (Loss loss : {Loss::mse, Loss::xent}) {
    const Problem pb = make_problem("4-6-3", "tanh", loss, 21);
    const index_t P = pb.spec.num_params(), D = pb.spec.inputs(), O = pb.spec.outputs(), n = pb.n;
    Context ctx = Context::host();
    const std::vector<double> jac = pb.jacobian(ctx), hl = pb.output_hessian();
    linalg::CurvatureOperator<double> ggn(ctx, linalg::Curvature::gauss_newton, pb.spec, pb.w.data(), {pb.x.data(), n, D, D},
                                          pb.targets(), loss);
    std::vector<double> eye(std::size_t(P * P), 0.0), g(static_cast<std::size_t>(P * P));
    for (index_t i = 0; i < P; ++i) eye[std::size_t(i * P + i)] = 1.0;
    ggn.apply({eye.data(), P, P, P}, {g.data(), P, P, P});
    for (index_t r = 0; r < P; ++r)
      for (index_t c = 0; c < P; ++c) {
        double ref = 0;
        for (index_t i = 0; i < n; ++i)
          for (index_t a = 0; a < O; ++a)
            for (index_t b = 0; b < O; ++b)
              ref += jac[std::size_t((i * O + a) * P + r)] * hl[std::size_t((i * O + a) * O + b)] * jac[std::size_t((i * O + b) * P + c)];
        EXPECT_NEAR(g[std::size_t(c * P + r)], ref, 1e-12 * (1 + std::abs(ref)));
      }
  }
}

// The operators' shortcuts on the activation, bias, parameterization and loss cases: the
// forward pass, loss gradient, hvp_prepare and softmax computed once in the constructor and
// shared by every product; the samples split into chunks whose shares are summed; blocks of
// vectors. Hessian against the dense Hessian from central differences of the gradient (float64),
// Gauss-Newton against J^T H_loss J from explicit Jacobians; chunked against one chunk to
// rounding; blocks against single products; repeated products bit for bit.
struct ShortcutCase {
  std::string act;
  bool bias;
  model::Parameterization param;
  Loss loss;
};

std::vector<ShortcutCase> shortcut_cases() {
  std::vector<ShortcutCase> cases;
  for (const char* act : {"relu", "tanh", "gelu"})
    for (bool bias : {true, false})
      for (auto param : {model::Parameterization::standard, model::Parameterization::ntk})
        for (Loss loss : {Loss::mse, Loss::xent}) cases.push_back({act, bias, param, loss});
  return cases;
}

class CurvatureShortcuts : public ::testing::TestWithParam<ShortcutCase> {
 protected:
  Problem problem() const {
    const ShortcutCase& c = GetParam();
    Problem pb;
    pb.spec = MlpSpec::from_arch("3-5-4-3", model::parse_activation(c.act), c.param);
    for (std::size_t l = 0; l < pb.spec.bias.size(); ++l) pb.spec.bias[l] = c.bias;
    if (c.param == model::Parameterization::ntk) pb.spec.bias_scale = 0.5;
    pb.loss = c.loss;
    pb.n = 11;
    pb.w = test::random_vector(std::size_t(pb.spec.num_params()), 41, 0.7);
    pb.x = test::random_vector(std::size_t(pb.n * pb.spec.inputs()), 42);
    pb.y = test::random_vector(std::size_t(pb.n * pb.spec.outputs()), 43);
    for (index_t i = 0; i < pb.n; ++i) pb.labels.push_back((i * 7) % pb.spec.outputs());
    return pb;
  }
};

// op applied to the identity: its dense matrix, column c in row c.
std::vector<double> dense_of(linalg::CurvatureOperator<double>& op) {
  const index_t P = op.size();
  std::vector<double> eye(std::size_t(P * P), 0.0), out(static_cast<std::size_t>(P * P));
  for (index_t i = 0; i < P; ++i) eye[std::size_t(i * P + i)] = 1.0;
  op.apply({eye.data(), P, P, P}, {out.data(), P, P, P});
  return out;
}

TEST_P(CurvatureShortcuts, HessianAgreesWithFiniteDifferencesInChunksAndBlocks) {
  const Problem pb = problem();
  const index_t P = pb.spec.num_params(), D = pb.spec.inputs(), n = pb.n;
  Context ctx = Context::host(2);
  const auto make = [&](index_t chunks) {
    linalg::CurvatureOptions o;
    o.sample_chunks = chunks;
    return linalg::CurvatureOperator<double>(ctx, linalg::Curvature::hessian, pb.spec, pb.w.data(), {pb.x.data(), n, D, D},
                                             pb.targets(), pb.loss, o);
  };
  auto one = make(1), three = make(3);
  EXPECT_EQ(one.sample_chunks(), 1);
  EXPECT_EQ(three.sample_chunks(), 3);
  EXPECT_NEAR(three.loss_value(), one.loss_value(), 1e-14 * std::abs(one.loss_value()));
  const auto h1 = dense_of(one), h3 = dense_of(three);
  const double step = 1e-5;
  double scale = 0;
  std::vector<double> fd(static_cast<std::size_t>(P * P));
  for (index_t c = 0; c < P; ++c) {
    auto wp = pb.w, wm = pb.w;
    wp[std::size_t(c)] += step;
    wm[std::size_t(c)] -= step;
    const auto gp = pb.gradient(wp), gm = pb.gradient(wm);
    for (index_t r = 0; r < P; ++r) {
      fd[std::size_t(c * P + r)] = (gp[std::size_t(r)] - gm[std::size_t(r)]) / (2 * step);
      scale = std::max(scale, std::abs(fd[std::size_t(c * P + r)]));
    }
  }
  ASSERT_GT(scale, 1e-3);
  for (index_t i = 0; i < P * P; ++i) {
    EXPECT_NEAR(h1[std::size_t(i)], fd[std::size_t(i)], 1e-6 * scale) << "entry " << i;
    EXPECT_NEAR(h3[std::size_t(i)], h1[std::size_t(i)], 1e-13 * scale) << "entry " << i;
  }
  // A block of 3 random vectors, twice with another block in between (the shared state is read
  // only), against the dense matrix; the first block's shares run in parallel on 2 threads.
  const auto v = test::random_vector(std::size_t(3 * P), 44), u = test::random_vector(std::size_t(2 * P), 45);
  std::vector<double> hv(static_cast<std::size_t>(3 * P)), again(static_cast<std::size_t>(3 * P)), hu(static_cast<std::size_t>(2 * P));
  for (auto* op : {&one, &three}) {
    op->apply({v.data(), 3, P, P}, {hv.data(), 3, P, P});
    op->apply({u.data(), 2, P, P}, {hu.data(), 2, P, P});
    op->apply({v.data(), 3, P, P}, {again.data(), 3, P, P});
    EXPECT_EQ(again, hv);
    for (index_t b = 0; b < 3; ++b)
      for (index_t r = 0; r < P; ++r) {
        double ref = 0;
        for (index_t c = 0; c < P; ++c) ref += h1[std::size_t(c * P + r)] * v[std::size_t(b * P + c)];
        EXPECT_NEAR(hv[std::size_t(b * P + r)], ref, 1e-12 * scale * P) << "vector " << b << " param " << r;
      }
  }
}

TEST_P(CurvatureShortcuts, GaussNewtonAgreesWithExplicitJacobiansInChunksAndBlocks) {
  const Problem pb = problem();
  const index_t P = pb.spec.num_params(), D = pb.spec.inputs(), O = pb.spec.outputs(), n = pb.n;
  Context ctx = Context::host(2);
  const std::vector<double> jac = pb.jacobian(ctx), hessians = pb.output_hessian();
  std::vector<double> ref(std::size_t(P * P), 0.0);
  for (index_t i = 0; i < n; ++i) {
    for (index_t a = 0; a < O; ++a)
      for (index_t b = 0; b < O; ++b) {
        const double hl = hessians[std::size_t((i * O + a) * O + b)];
        if (hl == 0) continue;
        for (index_t r = 0; r < P; ++r)
          for (index_t c = 0; c < P; ++c)
            ref[std::size_t(c * P + r)] += jac[std::size_t((i * O + a) * P + r)] * hl * jac[std::size_t((i * O + b) * P + c)];
      }
  }
  double scale = 0;
  for (double r : ref) scale = std::max(scale, std::abs(r));
  ASSERT_GT(scale, 1e-3);
  for (index_t chunks : {1, 3, 11}) {
    linalg::CurvatureOptions o;
    o.sample_chunks = chunks;
    linalg::CurvatureOperator<double> ggn(ctx, linalg::Curvature::gauss_newton, pb.spec, pb.w.data(),
                                          {pb.x.data(), n, D, D}, pb.targets(), pb.loss, o);
    EXPECT_EQ(ggn.sample_chunks(), chunks);
    const auto g = dense_of(ggn);
    for (index_t i = 0; i < P * P; ++i) EXPECT_NEAR(g[std::size_t(i)], ref[std::size_t(i)], 1e-13 * scale) << chunks << " chunks";
    const auto v = test::random_vector(std::size_t(2 * P), 46);
    std::vector<double> gv(static_cast<std::size_t>(2 * P));
    ggn.apply({v.data(), 2, P, P}, {gv.data(), 2, P, P});  // in parallel: the block size is sized
    for (index_t b = 0; b < 2; ++b)
      for (index_t r = 0; r < P; ++r) {
        double want = 0;
        for (index_t c = 0; c < P; ++c) want += ref[std::size_t(c * P + r)] * v[std::size_t(b * P + c)];
        EXPECT_NEAR(gv[std::size_t(b * P + r)], want, 1e-12 * scale * P);
      }
  }
}

INSTANTIATE_TEST_SUITE_P(ActivationsBiasParameterizationLoss, CurvatureShortcuts, ::testing::ValuesIn(shortcut_cases()),
                         [](const ::testing::TestParamInfo<ShortcutCase>& pinfo) {
                           const ShortcutCase& c = pinfo.param;
                           return c.act + (c.bias ? "_bias" : "_nobias") +
                                  (c.param == model::Parameterization::ntk ? "_ntk_" : "_std_") + model::to_string(c.loss);
                         });

// The largest block an apply gets is bounded by the workspace: per vector, the tangents of every
// layer for every sample (8 bytes each in float64) and a product share per extra chunk. A
// Hutchinson trace split into such blocks equals the one of a single block (the same probes).
TEST(Curvature, BlocksAreBoundedByTheWorkspaceAndSplittingThemChangesNothing) {
  const Problem pb = make_problem("3-6-5-2", "tanh", Loss::xent, 61);
  const index_t D = pb.spec.inputs();
  // Per vector: n (2 sum w + 3 max w + 2 O) doubles = 5 * (2 * 13 + 18 + 4) * 8 bytes = 1920 bytes.
  const double per_vector = 5.0 * (2 * 13 + 3 * 6 + 2 * 2) * 8;
  double traces[2];
  for (int big = 0; big < 2; ++big) {
    Context ctx = Context::host();
    ctx.set_workspace_budget(big ? std::size_t(1) << 30 : std::size_t(4 * 1920 * 3));  // a quarter holds 3 vectors
    linalg::CurvatureOperator<double> op(ctx, linalg::Curvature::hessian, pb.spec, pb.w.data(), {pb.x.data(), pb.n, D, D},
                                         pb.targets(), pb.loss);
    EXPECT_EQ(op.max_block(), big ? index_t((64 << 20) / per_vector) : 3);
    traces[big] = linalg::hutchinson<double>(op, 20, 5).trace;
  }
  EXPECT_NEAR(traces[0], traces[1], 1e-12 * std::abs(traces[1]));
}

TEST(Curvature, SampleChunksAreClampedAndValidated) {
  const Problem pb = make_problem("3-4-2", "relu", Loss::xent, 51);
  const index_t D = pb.spec.inputs();
  Context ctx = Context::host();
  linalg::CurvatureOptions o;
  o.sample_chunks = 100;  // more chunks than samples: one sample each
  linalg::CurvatureOperator<double> op(ctx, linalg::Curvature::hessian, pb.spec, pb.w.data(), {pb.x.data(), pb.n, D, D},
                                       pb.targets(), pb.loss, o);
  EXPECT_EQ(op.sample_chunks(), pb.n);
  o.sample_chunks = 0;  // automatic: under 256 samples per chunk is not worth a split
  linalg::CurvatureOperator<double> automatic(ctx, linalg::Curvature::hessian, pb.spec, pb.w.data(),
                                              {pb.x.data(), pb.n, D, D}, pb.targets(), pb.loss, o);
  EXPECT_EQ(automatic.sample_chunks(), 1);
  o.sample_chunks = -1;
  try {
    linalg::CurvatureOperator<double> bad(ctx, linalg::Curvature::hessian, pb.spec, pb.w.data(), {pb.x.data(), pb.n, D, D},
                                          pb.targets(), pb.loss, o);
    FAIL() << "negative sample_chunks accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("sample_chunks"), std::string::npos) << e.what();
  }
}

TEST(Curvature, NtkOperatorTopEigenpairsMatchTheDenseKernel) {
  const MlpSpec s = MlpSpec::from_arch("5-32-32-3", model::parse_activation("gelu"));
  const index_t n = 150, D = 5, m = n * 3;
  const auto w = test::random_vector(std::size_t(s.num_params()), 31, 0.4), x = test::random_vector(std::size_t(n * D), 32);
  Context ctx = Context::host();
  const auto full = ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), n, D, D}, std::nullopt, {ntk::Outputs::full});
  const auto dense = linalg::eigh<double>(ctx, {full.kernel.data(), m, m, m});
  ntk::NtkOperator<double> op(ctx, s, w.data(), {x.data(), n, D, D});
  linalg::LanczosOptions o;
  o.k = 8;
  o.tol = 1e-10;
  o.method = linalg::EigenMethod::lanczos;
  o.block = 2;
  const auto r = linalg::eigsh<double>(op, o);
  EXPECT_TRUE(r.all_converged);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(r.values[std::size_t(i)], dense.values[std::size_t(i)], 1e-8 * dense.values[0]);
}

}  // namespace
}  // namespace dynascope
