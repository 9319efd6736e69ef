// The empirical NTK: every method against a kernel built from finite-difference Jacobians (float64,
// relative error <= 1e-9), against each other, mode identities, symmetry and PSD, tiling, the
// generic Gram path and the matrix-free operator.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "dynascope/blas.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"
#include "model/model_test_util.hpp"

namespace dynascope {
namespace {

using model::MlpSpec;
using ntk::Method;
using ntk::Outputs;

bool piecewise_linear(const MlpSpec& s) {
  for (const auto& a : s.activations)
    if (a.kind == model::Activation::relu || a.kind == model::Activation::leaky_relu || a.kind == model::Activation::abs)
      return true;
  return false;
}

// Jacobian [N*O, P] (row n*O + a) by central differences of the naive forward pass: the fourth-
// order stencil with h = 1e-3 for smooth activations; the two-point one with h = 1e-5 where the
// network is piecewise linear in each parameter (exact away from kinks).
std::vector<double> fd_jacobian(const MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x, index_t n) {
  const index_t P = s.num_params(), O = s.outputs();
  std::vector<double> j(static_cast<std::size_t>(n * O * P));
  const bool pl = piecewise_linear(s);
  const double h = pl ? 1e-5 : 1e-3;
  for (index_t p = 0; p < P; ++p) {
    auto at = [&](double d) {
      auto wd = w;
      wd[std::size_t(p)] += d;
      return test::naive_forward(s, wd, x, n);
    };
    const auto f1 = at(h), f_1 = at(-h);
    std::vector<double> f2, f_2;
    if (!pl) {
      f2 = at(2 * h);
      f_2 = at(-2 * h);
    }
    for (index_t r = 0; r < n * O; ++r) {
      const std::size_t i = std::size_t(r);
      j[std::size_t(r * P + p)] = pl ? (f1[i] - f_1[i]) / (2 * h) : (-f2[i] + 8 * f1[i] - 8 * f_1[i] + f_2[i]) / (12 * h);
    }
  }
  return j;
}

// Reference kernel in the mode's matrix layout from two Jacobians.
std::vector<double> reference_kernel(Outputs mode, const std::vector<double>& j1, index_t n1, const std::vector<double>& j2,
                                     index_t n2, index_t o, index_t p) {
  const auto shape = ntk::kernel_shape(mode, n1, n2, o);
  std::vector<double> k(std::size_t(shape.rows * shape.cols), 0.0);
  auto dot = [&](index_t r1, index_t r2) {
    double s = 0;
    for (index_t q = 0; q < p; ++q) s += j1[std::size_t(r1 * p + q)] * j2[std::size_t(r2 * p + q)];
    return s;
  };
  for (index_t n = 0; n < n1; ++n)
    for (index_t m = 0; m < n2; ++m)
      for (index_t a = 0; a < o; ++a)
        for (index_t b = 0; b < o; ++b) {
          const double v = dot(n * o + a, m * o + b);
          switch (mode) {
            case Outputs::full: k[std::size_t((n * o + a) * shape.cols + m * o + b)] = v; break;
            case Outputs::diagonal:
              if (a == b) k[std::size_t(n * shape.cols + m * o + a)] = v;
              break;
            case Outputs::trace:
              if (a == b) k[std::size_t(n * shape.cols + m)] += v;
              break;
            case Outputs::sum: k[std::size_t(n * shape.cols + m)] += v; break;
          }
        }
  return k;
}

double rel_err(const double* a, const std::vector<double>& ref) {
  double scale = 0, err = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    scale = std::max(scale, std::abs(ref[i]));
    err = std::max(err, std::abs(a[i] - ref[i]));
  }
  return err / std::max(scale, 1e-300);
}

struct Case {
  std::string arch, activation;
  bool bias;
  model::Parameterization param;
};

std::vector<Case> cases() {
  std::vector<Case> out;
  const char* acts[] = {"relu", "leaky_relu:0.1", "abs", "tanh", "gelu", "softplus", "sigmoid", "identity"};
  const char* archs[] = {"3-5-1", "4-6-3", "3-4-4-2"};
  int i = 0;
  for (const char* a : acts)
    for (const char* arch : archs) {
      ++i;
      out.push_back({arch, a, i % 4 != 0, i % 2 ? model::Parameterization::standard : model::Parameterization::ntk});
    }
  return out;
}

class NtkMethods : public ::testing::TestWithParam<Case> {};

TEST_P(NtkMethods, EveryMethodAndModeMatchesFiniteDifferenceJacobians) {
  const Case& c = GetParam();
  MlpSpec s = MlpSpec::from_arch(c.arch, model::parse_activation(c.activation), c.param);
  for (std::size_t l = 1; l < s.bias.size(); ++l) s.bias[l] = c.bias;
  if (c.param == model::Parameterization::ntk) s.bias_scale = 0.3;
  const index_t n1 = 4, n2 = 3, P = s.num_params(), O = s.outputs(), D = s.inputs();
  const auto w = test::random_vector(std::size_t(P), 1, 0.8), x1 = test::random_vector(std::size_t(n1 * D), 2),
             x2 = test::random_vector(std::size_t(n2 * D), 3);
  const auto j1 = fd_jacobian(s, w, x1, n1), j2 = fd_jacobian(s, w, x2, n2);
  Context ctx = Context::host();
  const MatrixView<const double> v1{x1.data(), n1, D, D}, v2{x2.data(), n2, D, D};
  for (Outputs mode : {Outputs::full, Outputs::diagonal, Outputs::trace, Outputs::sum}) {
    const auto ref_rect = reference_kernel(mode, j1, n1, j2, n2, O, P);
    const auto ref_sym = reference_kernel(mode, j1, n1, j1, n1, O, P);
    for (Method m : {Method::structured, Method::jvp, Method::jacobian, Method::automatic}) {
      const auto rect = ntk::empirical_ntk<double>(ctx, s, w.data(), v1, v2, {mode, m});
      EXPECT_LT(rel_err(rect.kernel.data(), ref_rect), 1e-9) << ntk::to_string(mode) << " " << ntk::to_string(m) << " rectangular";
      const auto sym = ntk::empirical_ntk<double>(ctx, s, w.data(), v1, std::nullopt, {mode, m});
      EXPECT_LT(rel_err(sym.kernel.data(), ref_sym), 1e-9) << ntk::to_string(mode) << " " << ntk::to_string(m) << " symmetric";
      EXPECT_EQ(rect.kernel.shape(), ntk::kernel_shape(mode, n1, n2, O).tensor);
    }
  }
}

TEST_P(NtkMethods, PerLayerKernelsSumToTheKernelAndModesAreConsistent) {
  const Case& c = GetParam();
  MlpSpec s = MlpSpec::from_arch(c.arch, model::parse_activation(c.activation), c.param);
  const index_t n = 5, P = s.num_params(), O = s.outputs(), D = s.inputs();
  const auto w = test::random_vector(std::size_t(P), 4, 0.8), x = test::random_vector(std::size_t(n * D), 5);
  Context ctx = Context::host();
  const MatrixView<const double> v{x.data(), n, D, D};
  for (Method m : {Method::structured, Method::jacobian})
    for (Outputs mode : {Outputs::full, Outputs::trace}) {
      const auto r = ntk::empirical_ntk<double>(ctx, s, w.data(), v, std::nullopt, {mode, m, true});
      ASSERT_EQ(static_cast<index_t>(r.per_layer.size()), s.layers());
      for (index_t i = 0; i < r.kernel.size(); ++i) {
        double sum = 0;
        for (const auto& k : r.per_layer) sum += k.data()[i];
        EXPECT_NEAR(sum, r.kernel.data()[i], 1e-12 * (1 + std::abs(r.kernel.data()[i])));
      }
    }
  const auto full = ntk::empirical_ntk<double>(ctx, s, w.data(), v, std::nullopt, {Outputs::full});
  const auto diag = ntk::empirical_ntk<double>(ctx, s, w.data(), v, std::nullopt, {Outputs::diagonal});
  const auto trace = ntk::empirical_ntk<double>(ctx, s, w.data(), v, std::nullopt, {Outputs::trace});
  const auto sum = ntk::empirical_ntk<double>(ctx, s, w.data(), v, std::nullopt, {Outputs::sum});
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) {
      double tr = 0, sm = 0;
      for (index_t a = 0; a < O; ++a) {
        tr += diag.kernel.data()[i * n * O + j * O + a];
        EXPECT_NEAR(diag.kernel.data()[i * n * O + j * O + a], full.kernel.data()[(i * O + a) * n * O + j * O + a], 1e-12);
        for (index_t b = 0; b < O; ++b) sm += full.kernel.data()[(i * O + a) * n * O + j * O + b];
      }
      EXPECT_NEAR(trace.kernel.data()[i * n + j], tr, 1e-12 * (1 + std::abs(tr)));
      EXPECT_NEAR(sum.kernel.data()[i * n + j], sm, 1e-12 * (1 + std::abs(sm)));
    }
}

INSTANTIATE_TEST_SUITE_P(Activations, NtkMethods, ::testing::ValuesIn(cases()), [](const ::testing::TestParamInfo<Case>& pinfo) {
  std::string name = pinfo.param.activation + "_" + pinfo.param.arch + (pinfo.param.bias ? "_bias" : "_nobias") +
                     (pinfo.param.param == model::Parameterization::ntk ? "_ntk" : "_std");
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
});

// The symmetric kernel (no X2) is exactly symmetric, for every method, mode and tiling, whatever
// BLAS kernel runs: only the upper triangle is computed and the lower one is its mirror image. 37
// samples leave row tails in every BLAS micro-kernel, where the two halves of a GEMM A A^T round
// differently (OpenBLAS's Haswell kernels on the structured Gram blocks, every kernel on the
// Jacobian Gram of the `sum` mode); the small budget gives tiles of unequal sizes.
TEST(Ntk, SymmetricKernelIsExactlySymmetricAndPositiveSemidefinite) {
  const MlpSpec s = MlpSpec::from_arch("6-32-32-3", model::parse_activation("tanh"));
  const index_t n = 37, D = 6, O = 3;
  const auto w = test::random_vector(std::size_t(s.num_params()), 6, 0.5), x = test::random_vector(std::size_t(n * D), 7);
  for (Method m : {Method::structured, Method::jvp, Method::jacobian})
    for (Outputs mode : {Outputs::full, Outputs::diagonal, Outputs::trace, Outputs::sum})
      for (bool tiled : {false, true}) {
        Context ctx = Context::host();
        if (tiled) {
          ctx.set_workspace_budget(m == Method::structured ? 40000 : 400000);
        }
        ntk::NtkOptions opt{mode, m};
        opt.per_layer = m != Method::jvp;  // the per-layer kernels are symmetric too
        const auto r = ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), n, D, D}, std::nullopt, opt);
        if (tiled) {
          EXPECT_GT(r.info.tiles, 1) << ntk::to_string(m) << " " << ntk::to_string(mode);
        }
        std::vector<const double*> kernels{r.kernel.data()};
        for (const auto& layer : r.per_layer) kernels.push_back(layer.data());
        for (std::size_t which = 0; which < kernels.size(); ++which) {
          const double* k = kernels[which];
          // (n, a, m, b) against (m, b, n, a); diagonal: (n, m, a) against (m, n, a).
          const index_t rows = mode == Outputs::full ? n * O : n, cols = mode == Outputs::diagonal ? O : 1;
          index_t asymmetric = 0;
          for (index_t i = 0; i < rows; ++i)
            for (index_t j = 0; j < rows; ++j)
              for (index_t a = 0; a < cols; ++a)
                asymmetric += k[(i * rows + j) * cols + a] != k[(j * rows + i) * cols + a];
          EXPECT_EQ(asymmetric, 0) << ntk::to_string(m) << " " << ntk::to_string(mode) << (tiled ? " tiled" : "")
                                   << (which == 0 ? " kernel" : " layer " + std::to_string(which));
        }
      }
  Context ctx = Context::host();
  const auto r = ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), n, D, D}, std::nullopt, {Outputs::full});
  const index_t m = n * O;
  std::vector<double> a(r.kernel.data(), r.kernel.data() + m * m), ev(static_cast<std::size_t>(m));
  double mx = 0;
  for (double v : a) mx = std::max(mx, std::abs(v));
  lapack::syevd<double>(ctx, {a.data(), m, m, m}, {ev.data(), m, 1});
  EXPECT_GE(ev[0], -1e-12 * mx * double(m));
}

TEST(Ntk, TinyWorkspaceBudgetsGiveTheSameKernelAsOneTile) {
  const MlpSpec s = MlpSpec::from_arch("5-16-16-3", model::parse_activation("tanh"));
  const index_t n1 = 23, n2 = 17, D = 5;
  const auto w = test::random_vector(std::size_t(s.num_params()), 8, 0.5), x1 = test::random_vector(std::size_t(n1 * D), 9),
             x2 = test::random_vector(std::size_t(n2 * D), 10);
  Context big = Context::host();
  for (Method m : {Method::structured, Method::jvp, Method::jacobian})
    for (Outputs mode : {Outputs::full, Outputs::diagonal, Outputs::trace, Outputs::sum})
      for (bool sym : {true, false}) {
        std::optional<MatrixView<const double>> second;
        if (!sym) second = MatrixView<const double>{x2.data(), n2, D, D};
        const auto one = ntk::empirical_ntk<double>(big, s, w.data(), {x1.data(), n1, D, D}, second, {mode, m});
        EXPECT_EQ(one.info.tiles, 1);
        Context tiny = Context::host();
        tiny.set_workspace_budget(m == Method::structured ? 15000 : 120000);
        const auto many = ntk::empirical_ntk<double>(tiny, s, w.data(), {x1.data(), n1, D, D}, second, {mode, m});
        EXPECT_GT(many.info.tiles, 3) << ntk::to_string(m);
        ASSERT_EQ(many.kernel.size(), one.kernel.size());
        for (index_t i = 0; i < one.kernel.size(); ++i)
          ASSERT_NEAR(many.kernel.data()[i], one.kernel.data()[i], 1e-13 * (1 + std::abs(one.kernel.data()[i])))
              << ntk::to_string(m) << " " << ntk::to_string(mode) << " sym " << sym << " at " << i;
      }
}

// The structured method's shortcuts, each checked layer by layer against the Jacobian method (the
// unoptimised path: G = J J'^T from the engine's per-sample gradients, reduced to the mode) in
// float64: the output layer's identity delta (no Gram), layer L-1 collapsed to one product with
// D = diag(c_L^2 sum_a W_L[a, :]^2) in trace mode, the sample-major sweep of every cotangent below
// it, and no sweep at all for a two-layer network in trace mode. One to four layers, three
// activations, with and without biases, both parameterizations, every mode, symmetric and not.
TEST(Ntk, StructuredShortcutsMatchTheJacobianPathLayerByLayer) {
  const char* archs[] = {"5-3", "5-6-3", "5-6-4-3", "4-5-6-5-3", "5-7-1", "5-6-4-1"};
  const char* acts[] = {"relu", "tanh", "gelu"};
  int variant = 0;
  for (const char* arch : archs)
    for (const char* act : acts)
      for (bool bias : {true, false}) {
        const auto param = ++variant % 2 ? model::Parameterization::standard : model::Parameterization::ntk;
        MlpSpec s = MlpSpec::from_arch(arch, model::parse_activation(act), param);
        for (std::size_t l = 0; l < s.bias.size(); ++l) s.bias[l] = bias || l + 1 == s.bias.size();
        if (param == model::Parameterization::ntk) s.bias_scale = 0.7;
        const index_t n1 = 6, n2 = 4, D = s.inputs();
        const auto w = test::random_vector(std::size_t(s.num_params()), 20 + variant, 0.8),
                   x1 = test::random_vector(std::size_t(n1 * D), 40 + variant), x2 = test::random_vector(std::size_t(n2 * D), 60 + variant);
        Context ctx = Context::host();
        for (Outputs mode : {Outputs::full, Outputs::diagonal, Outputs::trace, Outputs::sum})
          for (bool sym : {true, false}) {
            std::optional<MatrixView<const double>> second;
            if (!sym) second = MatrixView<const double>{x2.data(), n2, D, D};
            const MatrixView<const double> first{x1.data(), n1, D, D};
            const auto fast = ntk::empirical_ntk<double>(ctx, s, w.data(), first, second, {mode, Method::structured, true});
            const auto slow = ntk::empirical_ntk<double>(ctx, s, w.data(), first, second, {mode, Method::jacobian, true});
            ASSERT_EQ(fast.per_layer.size(), slow.per_layer.size());
            for (std::size_t l = 0; l < fast.per_layer.size(); ++l) {
              const std::vector<double> ref(slow.per_layer[l].data(), slow.per_layer[l].data() + slow.per_layer[l].size());
              EXPECT_LT(rel_err(fast.per_layer[l].data(), ref), 1e-12)
                  << arch << " " << act << (bias ? " bias " : " nobias ") << ntk::to_string(mode) << (sym ? " sym" : " rect")
                  << " layer " << l + 1;
            }
          }
      }
}

// The full mode sums its layers in one pass over the tile for networks of up to 8 layers and layer
// by layer beyond: both against the Jacobian method, symmetric (with tiles) and rectangular.
TEST(Ntk, FullModeFusedAndLayerByLayerPathsMatchTheJacobianPath) {
  for (const char* arch : {"3-5-4-2", "3-4-4-4-4-4-4-4-4-4-2"}) {
    const MlpSpec s = MlpSpec::from_arch(arch, model::parse_activation("tanh"));
    const index_t n1 = 9, n2 = 5, D = 3;
    const auto w = test::random_vector(std::size_t(s.num_params()), 71, 0.9), x1 = test::random_vector(std::size_t(n1 * D), 72),
               x2 = test::random_vector(std::size_t(n2 * D), 73);
    for (bool tiled : {false, true})
      for (bool sym : {true, false}) {
        Context ctx = Context::host();
        if (tiled) ctx.set_workspace_budget(20000);
        std::optional<MatrixView<const double>> second;
        if (!sym) second = MatrixView<const double>{x2.data(), n2, D, D};
        const MatrixView<const double> first{x1.data(), n1, D, D};
        const auto fast = ntk::empirical_ntk<double>(ctx, s, w.data(), first, second, {Outputs::full, Method::structured});
        const auto slow = ntk::empirical_ntk<double>(Context::host(), s, w.data(), first, second, {Outputs::full, Method::jacobian});
        if (tiled) {
          EXPECT_GT(fast.info.tiles, 1) << arch;
        }
        const std::vector<double> ref(slow.kernel.data(), slow.kernel.data() + slow.kernel.size());
        EXPECT_LT(rel_err(fast.kernel.data(), ref), 1e-12) << arch << (sym ? " sym" : " rect") << (tiled ? " tiled" : "");
      }
  }
}

// Symmetric kernels compute only the upper tiles, and the diagonal tiles' Grams by SYRK; the
// rectangular path (the same samples passed as X2) does every product by GEMM. Both agree in
// float64 for every mode, in one tile and in many of unequal sizes.
TEST(Ntk, SymmetricHalvesEqualTheFullProducts) {
  const MlpSpec s = MlpSpec::from_arch("6-16-12-3", model::parse_activation("tanh"));
  const index_t n = 29, D = 6;
  const auto w = test::random_vector(std::size_t(s.num_params()), 81, 0.6), x = test::random_vector(std::size_t(n * D), 82);
  const MatrixView<const double> v{x.data(), n, D, D};
  for (Outputs mode : {Outputs::full, Outputs::diagonal, Outputs::trace, Outputs::sum})
    for (bool tiled : {false, true}) {
      Context ctx = Context::host();
      if (tiled) ctx.set_workspace_budget(30000);
      const auto sym = ntk::empirical_ntk<double>(ctx, s, w.data(), v, std::nullopt, {mode, Method::structured});
      const auto rect = ntk::empirical_ntk<double>(ctx, s, w.data(), v, v, {mode, Method::structured});
      if (tiled) {
        EXPECT_GT(sym.info.tiles, 2) << ntk::to_string(mode);
        EXPECT_LT(sym.info.tiles, rect.info.tiles) << ntk::to_string(mode);  // upper tiles only
      }
      const std::vector<double> ref(rect.kernel.data(), rect.kernel.data() + rect.kernel.size());
      EXPECT_LT(rel_err(sym.kernel.data(), ref), 1e-13) << ntk::to_string(mode) << (tiled ? " tiled" : "");
    }
}

// The cost model (NtkInfo::flops) against the products the code runs: in one tile, the Gram flops
// counted at every GEMM/SYRK call equal the model's per-pair part, written out here per mode for a
// 7-9-8-5 network (layer widths w0..w3 = 7, 9, 8, 5; O = 5). Symmetric: n (n + 1) / 2 sample
// pairs, except the full mode's delta Grams, which are SYRKs over n O rows.
TEST(Ntk, StructuredFlopModelCountsTheProductsDone) {
  const MlpSpec s = MlpSpec::from_arch("7-9-8-5", model::parse_activation("relu"));
  const index_t n1 = 11, n2 = 6, D = 7;
  const double O = 5;
  const auto w = test::random_vector(std::size_t(s.num_params()), 90, 0.6), x1 = test::random_vector(std::size_t(n1 * D), 91),
             x2 = test::random_vector(std::size_t(n2 * D), 92);
  // Per pair: activations' Grams 2 (7 + 9 + 8) for every mode, plus the deltas' Grams of layers 1
  // and 2 (none for the output layer).
  const double acts = 2.0 * (7 + 9 + 8);
  const std::pair<Outputs, double> per_pair[] = {
      {Outputs::full, acts + 2 * O * O * 9 + 2 * O * O * 8},
      {Outputs::diagonal, acts + 2 * O * 9 + 2 * O * 8},
      {Outputs::trace, acts + 2 * O * 9 + 2 * 8},  // layer 2 collapsed
      {Outputs::sum, acts + 2 * 9 + 2 * 8}};
  // Per sample: the forward pass, and one sweep GEMM (Delta_2 -> Delta_1) of k cotangents.
  const double forward = 2.0 * (7 * 9 + 9 * 8 + 8 * 5);
  Context ctx = Context::host();
  for (const auto& [mode, pair] : per_pair) {
    const double k = mode == Outputs::sum ? 1 : O;
    const double sample = forward + 2 * k * 8 * 9;
    const auto sym = ntk::empirical_ntk<double>(ctx, s, w.data(), {x1.data(), n1, D, D}, std::nullopt, {mode, Method::structured});
    const double pairs = 0.5 * double(n1) * double(n1 + 1), rows = double(n1) * O;
    const double sym_gram = mode == Outputs::full ? pairs * acts + rows * (rows + 1) * (9 + 8) : pairs * pair;
    EXPECT_DOUBLE_EQ(sym.info.gram_flops, sym_gram) << ntk::to_string(mode);
    EXPECT_DOUBLE_EQ(sym.info.flops, sym_gram + double(n1) * sample) << ntk::to_string(mode);
    const auto rect = ntk::empirical_ntk<double>(ctx, s, w.data(), {x1.data(), n1, D, D}, MatrixView<const double>{x2.data(), n2, D, D},
                                                 {mode, Method::structured});
    EXPECT_DOUBLE_EQ(rect.info.gram_flops, double(n1 * n2) * pair) << ntk::to_string(mode);
    EXPECT_DOUBLE_EQ(rect.info.flops, double(n1 * n2) * pair + double(n1 + n2) * sample) << ntk::to_string(mode);
  }
}

TEST(Ntk, GenericGramOfTheNetworksOwnJacobiansEqualsTheBuiltInKernel) {
  const MlpSpec s = MlpSpec::from_arch("4-12-2", model::parse_activation("gelu"));
  const index_t n = 9, D = 4, O = 2, P = s.num_params();
  const auto w = test::random_vector(std::size_t(P), 11, 0.5), x = test::random_vector(std::size_t(n * D), 12);
  Context ctx = Context::host();
  // A "framework" supplying Jacobian rows through per-sample gradients of each output.
  ntk::JacobianSource<double> source = [&](index_t row0, index_t rows, MatrixView<double> out) {
    std::vector<double> cot(static_cast<std::size_t>(rows * O)), g(static_cast<std::size_t>(rows * P));
    for (index_t a = 0; a < O; ++a) {
      for (index_t i = 0; i < rows * O; ++i) cot[std::size_t(i)] = (i % O == a) ? 1.0 : 0.0;
      model::per_sample_gradients<double>(ctx, s, w.data(), {x.data() + row0 * D, rows, D, D}, {cot.data(), rows, O, O},
                                          {g.data(), rows, P, P});
      for (index_t r = 0; r < rows; ++r)
        for (index_t p = 0; p < P; ++p) out(r * O + a, p) = g[std::size_t(r * P + p)];
    }
  };
  for (Outputs mode : {Outputs::full, Outputs::trace}) {
    const auto builtin = ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), n, D, D}, std::nullopt, {mode});
    const auto shape = ntk::kernel_shape(mode, n, n, O);
    std::vector<double> k(std::size_t(shape.rows * shape.cols));
    Context tiny = Context::host();
    tiny.set_workspace_budget(20000);
    const auto info = ntk::gram_from_jacobians<double>(tiny, source, n, nullptr, n, O, P, mode, {k.data(), shape.rows, shape.cols, shape.cols});
    EXPECT_GT(info.tiles, 1);
    for (std::size_t i = 0; i < k.size(); ++i) EXPECT_NEAR(k[i], builtin.kernel.data()[i], 1e-12 * (1 + std::abs(k[i])));
  }
}

TEST(Ntk, OperatorAppliesTheFullKernel) {
  const MlpSpec s = MlpSpec::from_arch("3-10-10-2", model::parse_activation("softplus"));
  const index_t n = 7, D = 3, O = 2, m = n * O, k = 4;
  const auto w = test::random_vector(std::size_t(s.num_params()), 13, 0.5), x = test::random_vector(std::size_t(n * D), 14);
  Context ctx = Context::host();
  const auto full = ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), n, D, D}, std::nullopt, {Outputs::full});
  ntk::NtkOperator<double> op(ctx, s, w.data(), {x.data(), n, D, D});
  EXPECT_EQ(op.size(), m);
  const auto v = test::random_vector(std::size_t(k * m), 15);
  std::vector<double> y(static_cast<std::size_t>(k * m));
  op.apply({v.data(), k, m, m}, {y.data(), k, m, m});
  EXPECT_EQ(op.applications(), k);
  // One NTK operator: it is the linalg::LinearOperator the solvers take.
  linalg::LinearOperator<double>& base = op;
  EXPECT_EQ(base.size(), m);
  EXPECT_EQ(base.context().backend(), Backend::host);
  EXPECT_EQ(base.max_block(), 0);
  std::vector<double> wrong(static_cast<std::size_t>(k * (m + 1)));
  EXPECT_THROW(base.apply({v.data(), k, m, m}, {wrong.data(), k, m + 1, m + 1}), ShapeMismatch);
  EXPECT_THROW(base.apply({v.data(), k, m, m}, {y.data(), k - 1, m, m}), ShapeMismatch);
  EXPECT_THROW(base.apply({v.data(), k, m, m, Backend::cuda}, {y.data(), k, m, m}), InvalidArgument);
  EXPECT_EQ(op.applications(), k);  // refused blocks are not applications
  for (index_t t = 0; t < k; ++t)
    for (index_t i = 0; i < m; ++i) {
      double ref = 0;
      for (index_t j = 0; j < m; ++j) ref += full.kernel.data()[i * m + j] * v[std::size_t(t * m + j)];
      EXPECT_NEAR(y[std::size_t(t * m + i)], ref, 1e-12 * (1 + std::abs(ref)));
    }
}

TEST(Ntk, FloatKernelAgreesWithDouble) {
  const MlpSpec s = MlpSpec::from_arch("8-64-64-4", model::parse_activation("relu"));
  const index_t n = 20, D = 8;
  const auto w = test::random_vector(std::size_t(s.num_params()), 16, 0.2), x = test::random_vector(std::size_t(n * D), 17);
  std::vector<float> wf(w.begin(), w.end()), xf(x.begin(), x.end());
  Context ctx = Context::host();
  const auto kd = ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), n, D, D});
  const auto kf = ntk::empirical_ntk<float>(ctx, s, wf.data(), {xf.data(), n, D, D});
  std::vector<double> ref(kd.kernel.data(), kd.kernel.data() + kd.kernel.size()), got(kf.kernel.data(), kf.kernel.data() + kf.kernel.size());
  EXPECT_LT(rel_err(got.data(), ref), 1e-5);
}

TEST(Ntk, BadInputsAreClearErrors) {
  const MlpSpec s = MlpSpec::from_arch("3-4-2");
  const auto w = test::random_vector(std::size_t(s.num_params()), 18);
  std::vector<double> x(12), out(100);
  Context ctx = Context::host();
  EXPECT_THROW(ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), 4, 3, 3}, MatrixView<const double>{x.data(), 3, 4, 4}),
               ShapeMismatch);
  EXPECT_THROW(ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), 0, 3, 3}), InvalidArgument);
  EXPECT_THROW(ntk::empirical_ntk_into<double>(ctx, s, w.data(), {x.data(), 4, 3, 3}, std::nullopt, {}, {out.data(), 5, 4, 4}),
               ShapeMismatch);
  Context tiny = Context::host();
  tiny.set_workspace_budget(16);
  EXPECT_THROW(ntk::empirical_ntk<double>(tiny, s, w.data(), {x.data(), 4, 3, 3}), OutOfMemory);
  EXPECT_THROW(ntk::empirical_ntk<double>(ctx, s, w.data(), {x.data(), 4, 3, 3}, std::nullopt, {Outputs::trace, Method::jvp, true}),
               InvalidArgument);
  EXPECT_THROW(ntk::parse_outputs("mean"), InvalidArgument);
}

}  // namespace
}  // namespace dynascope
