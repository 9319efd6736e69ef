// The engine's reverse and forward mode against central finite differences of a naive float64
// forward pass, for every activation, with and without bias, both parameterizations, several
// depths and output counts; adjointness; per-sample gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "model/model_test_util.hpp"
#include "dynascope/error.hpp"

namespace dynascope {
namespace {

using model::MlpEngine;
using model::MlpSpec;

struct Case {
  std::string arch;
  std::string activation;
  bool bias;
  model::Parameterization param;
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  const char* acts[] = {"identity", "relu", "leaky_relu:0.1", "abs", "tanh", "gelu", "softplus", "sigmoid"};
  const char* archs[] = {"3-2", "4-5-3", "3-6-4-1", "2-3-3-3-2"};
  int i = 0;
  for (const char* a : acts)
    for (const char* arch : archs) {
      ++i;
      cases.push_back({arch, a, i % 3 != 0, i % 2 ? model::Parameterization::standard : model::Parameterization::ntk});
    }
  return cases;
}

MlpSpec make_spec(const Case& c) {
  MlpSpec s = MlpSpec::from_arch(c.arch, model::parse_activation(c.activation), c.param);
  for (std::size_t l = 0; l < s.bias.size(); ++l) s.bias[l] = c.bias || l == 0;  // mix of layers with and without bias
  if (c.param == model::Parameterization::ntk) s.bias_scale = 0.5;
  return s;
}

class EngineFD : public ::testing::TestWithParam<Case> {
 protected:
  Context ctx = Context::host();
};

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST_P(EngineFD, ForwardMatchesNaiveLoops) {
  const MlpSpec s = make_spec(GetParam());
  const index_t n = 5, P = s.num_params();
  auto w = test::random_vector(std::size_t(P), 1, 0.7), x = test::random_vector(std::size_t(n * s.inputs()), 2);
  MlpEngine<double> e(ctx, s);
  auto f = e.forward(w.data(), {x.data(), n, s.inputs(), s.inputs()});
  const auto ref = test::naive_forward(s, w, x, n);
  for (index_t i = 0; i < n * s.outputs(); ++i) EXPECT_NEAR(f.data[i], ref[std::size_t(i)], 1e-13 * (1 + std::abs(ref[std::size_t(i)])));
}

TEST_P(EngineFD, ParamGradientsMatchFiniteDifferences) {
  const MlpSpec s = make_spec(GetParam());
  const index_t n = 4, P = s.num_params(), O = s.outputs();
  auto w = test::random_vector(std::size_t(P), 3, 0.7), x = test::random_vector(std::size_t(n * s.inputs()), 4);
  auto g = test::random_vector(std::size_t(n * O), 5);
  MlpEngine<double> e(ctx, s);
  e.forward(w.data(), {x.data(), n, s.inputs(), s.inputs()});
  e.backprop(w.data(), {g.data(), n, O, O});
  std::vector<double> grad(static_cast<std::size_t>(P));
  e.param_grads({grad.data(), 1, P, P});
  // L(w) = sum_n <g_n, f(x_n; w)>
  const double h = 1e-6;
  for (index_t p = 0; p < P; ++p) {
    auto wp = w, wm = w;
    wp[std::size_t(p)] += h;
    wm[std::size_t(p)] -= h;
    const double fd = (dot(g, test::naive_forward(s, wp, x, n)) - dot(g, test::naive_forward(s, wm, x, n))) / (2 * h);
    EXPECT_NEAR(grad[std::size_t(p)], fd, 1e-7 * (1 + std::abs(fd))) << "param " << p;
  }
}

TEST_P(EngineFD, JvpMatchesFiniteDifferencesAndIsAdjointToVjp) {
  const MlpSpec s = make_spec(GetParam());
  const index_t n = 3, P = s.num_params(), O = s.outputs(), T = 3, K = 2;
  auto w = test::random_vector(std::size_t(P), 6, 0.7), x = test::random_vector(std::size_t(n * s.inputs()), 7);
  auto v = test::random_vector(std::size_t(T * P), 8);
  MlpEngine<double> e(ctx, s);
  e.forward(w.data(), {x.data(), n, s.inputs(), s.inputs()});
  std::vector<double> jv(static_cast<std::size_t>(T * n * O));
  e.jvp(w.data(), {v.data(), T, P, P}, {jv.data(), T * n, O, O});
  const double h = 1e-6;
  for (index_t t = 0; t < T; ++t) {
    auto wp = w, wm = w;
    for (index_t p = 0; p < P; ++p) {
      wp[std::size_t(p)] += h * v[std::size_t(t * P + p)];
      wm[std::size_t(p)] -= h * v[std::size_t(t * P + p)];
    }
    const auto fp = test::naive_forward(s, wp, x, n), fm = test::naive_forward(s, wm, x, n);
    for (index_t i = 0; i < n * O; ++i) {
      const double fd = (fp[std::size_t(i)] - fm[std::size_t(i)]) / (2 * h);
      EXPECT_NEAR(jv[std::size_t(t * n * O + i)], fd, 1e-7 * (1 + std::abs(fd)));
    }
  }
  // <J v_t, u_k> = <v_t, J^T u_k> for every pair, with K cotangent blocks at once.
  auto u = test::random_vector(std::size_t(K * n * O), 9);
  e.backprop(w.data(), {u.data(), K * n, O, O}, K);
  std::vector<double> jtu(static_cast<std::size_t>(K * P));
  e.param_grads({jtu.data(), K, P, P});
  for (index_t t = 0; t < T; ++t)
    for (index_t k = 0; k < K; ++k) {
      double lhs = 0, rhs = 0;
      for (index_t i = 0; i < n * O; ++i) lhs += jv[std::size_t(t * n * O + i)] * u[std::size_t(k * n * O + i)];
      for (index_t p = 0; p < P; ++p) rhs += v[std::size_t(t * P + p)] * jtu[std::size_t(k * P + p)];
      EXPECT_NEAR(lhs, rhs, 1e-11 * (1 + std::abs(lhs)));
    }
}

TEST_P(EngineFD, InputJvpMatchesFiniteDifferencesAndInputGradsAreItsAdjoint) {
  const MlpSpec s = make_spec(GetParam());
  const index_t n = 3, P = s.num_params(), O = s.outputs(), D = s.inputs(), T = 2;
  auto w = test::random_vector(std::size_t(P), 10, 0.7), x = test::random_vector(std::size_t(n * D), 11);
  auto dx = test::random_vector(std::size_t(T * n * D), 12);
  MlpEngine<double> e(ctx, s);
  e.forward(w.data(), {x.data(), n, D, D});
  std::vector<double> jv(static_cast<std::size_t>(T * n * O));
  e.jvp_inputs(w.data(), {dx.data(), T * n, D, D}, T, {jv.data(), T * n, O, O});
  const double h = 1e-6;
  for (index_t t = 0; t < T; ++t) {
    auto xp = x, xm = x;
    for (index_t i = 0; i < n * D; ++i) {
      xp[std::size_t(i)] += h * dx[std::size_t(t * n * D + i)];
      xm[std::size_t(i)] -= h * dx[std::size_t(t * n * D + i)];
    }
    const auto fp = test::naive_forward(s, w, xp, n), fm = test::naive_forward(s, w, xm, n);
    for (index_t i = 0; i < n * O; ++i) {
      const double fd = (fp[std::size_t(i)] - fm[std::size_t(i)]) / (2 * h);
      EXPECT_NEAR(jv[std::size_t(t * n * O + i)], fd, 1e-7 * (1 + std::abs(fd)));
    }
  }
  auto u = test::random_vector(std::size_t(n * O), 13);
  e.backprop(w.data(), {u.data(), n, O, O});
  std::vector<double> gx(static_cast<std::size_t>(n * D));
  e.input_grads(w.data(), {gx.data(), n, D, D});
  double lhs = 0, rhs = 0;
  for (index_t i = 0; i < n * O; ++i) lhs += jv[std::size_t(i)] * u[std::size_t(i)];
  for (index_t i = 0; i < n * D; ++i) rhs += dx[std::size_t(i)] * gx[std::size_t(i)];
  EXPECT_NEAR(lhs, rhs, 1e-11 * (1 + std::abs(lhs)));
}

TEST_P(EngineFD, PerSampleGradientsSumToTheBatchGradient) {
  const MlpSpec s = make_spec(GetParam());
  const index_t n = 6, P = s.num_params(), O = s.outputs(), D = s.inputs();
  auto w = test::random_vector(std::size_t(P), 14, 0.7), x = test::random_vector(std::size_t(n * D), 15);
  auto g = test::random_vector(std::size_t(n * O), 16);
  MlpEngine<double> e(ctx, s);
  e.forward(w.data(), {x.data(), n, D, D});
  e.backprop(w.data(), {g.data(), n, O, O});
  std::vector<double> batch(static_cast<std::size_t>(P)), per(static_cast<std::size_t>(n * P));
  e.param_grads({batch.data(), 1, P, P});
  e.per_sample_grads({per.data(), n, P, P});
  for (index_t p = 0; p < P; ++p) {
    double sum = 0;
    for (index_t i = 0; i < n; ++i) sum += per[std::size_t(i * P + p)];
    EXPECT_NEAR(sum, batch[std::size_t(p)], 1e-12 * (1 + std::abs(sum)));
  }
  // Row i alone equals the gradient of <g_i, f(x_i)> from a one-sample pass.
  for (index_t i = 0; i < n; ++i) {
    e.forward(w.data(), {x.data() + i * D, 1, D, D});
    e.backprop(w.data(), {g.data() + i * O, 1, O, O});
    std::vector<double> one(static_cast<std::size_t>(P));
    e.param_grads({one.data(), 1, P, P});
    for (index_t p = 0; p < P; ++p) EXPECT_NEAR(per[std::size_t(i * P + p)], one[std::size_t(p)], 1e-12 * (1 + std::abs(one[std::size_t(p)])));
  }
}

// The R-operator on L(w) = sum_n (|f_n|^2 / 2 + <c_n, f_n>): g = f + c, gdot = fdot, so every
// term of the Hessian is exercised (the output layer's, the deltas' and, for smooth activations,
// sigma''). Against central differences of the engine's gradient of L; products share one
// hvp_prepare (the cache must not go stale across products or block sizes), a block of T
// tangents equals T single products, and the overload that takes g equals prepare + product.
TEST_P(EngineFD, HvpMatchesFiniteDifferencesAndPreparedProductsAgree) {
  const MlpSpec s = make_spec(GetParam());
  const index_t n = 4, P = s.num_params(), O = s.outputs(), D = s.inputs(), T = 3;
  auto w = test::random_vector(std::size_t(P), 23, 0.7), x = test::random_vector(std::size_t(n * D), 24);
  const auto c = test::random_vector(std::size_t(n * O), 25);
  auto v = test::random_vector(std::size_t(T * P), 26);
  const auto gradient = [&](const std::vector<double>& wv) {
    MlpEngine<double> e(ctx, s);
    auto f = e.forward(wv.data(), {x.data(), n, D, D});
    std::vector<double> g(static_cast<std::size_t>(n * O)), grad(static_cast<std::size_t>(P));
    for (index_t i = 0; i < n * O; ++i) g[std::size_t(i)] = f.data[i] + c[std::size_t(i)];
    e.backprop(wv.data(), {g.data(), n, O, O});
    e.param_grads({grad.data(), 1, P, P});
    return grad;
  };
  MlpEngine<double> e(ctx, s);
  auto f = e.forward(w.data(), {x.data(), n, D, D});
  std::vector<double> g(static_cast<std::size_t>(n * O));
  for (index_t i = 0; i < n * O; ++i) g[std::size_t(i)] = f.data[i] + c[std::size_t(i)];
  e.hvp_prepare(w.data(), {g.data(), n, O, O});
  // Single products, twice over with another block in between: the prepared state is read only.
  const auto single = [&](index_t t) {
    auto fd = e.hvp_forward(w.data(), {v.data() + t * P, 1, P, P});
    std::vector<double> gd(fd.data, fd.data + n * O), hv(static_cast<std::size_t>(P));
    e.hvp_backward(w.data(), {gd.data(), n, O, O}, {v.data() + t * P, 1, P, P}, {hv.data(), 1, P, P});
    return hv;
  };
  std::vector<std::vector<double>> hv1;
  for (index_t t = 0; t < T; ++t) hv1.push_back(single(t));
  auto fdb = e.hvp_forward(w.data(), {v.data(), T, P, P});
  std::vector<double> gdb(fdb.data, fdb.data + T * n * O), hvb(static_cast<std::size_t>(T * P));
  e.hvp_backward(w.data(), {gdb.data(), T * n, O, O}, {v.data(), T, P, P}, {hvb.data(), T, P, P});
  for (index_t t = 0; t < T; ++t) EXPECT_EQ(single(t), hv1[std::size_t(t)]) << "tangent " << t;
  // The overload with g, on a fresh engine.
  MlpEngine<double> e2(ctx, s);
  e2.forward(w.data(), {x.data(), n, D, D});
  auto fd2 = e2.hvp_forward(w.data(), {v.data(), T, P, P});
  std::vector<double> gd2(fd2.data, fd2.data + T * n * O), hv2(static_cast<std::size_t>(T * P));
  e2.hvp_backward(w.data(), {g.data(), n, O, O}, {gd2.data(), T * n, O, O}, {v.data(), T, P, P}, {hv2.data(), T, P, P});
  EXPECT_EQ(hv2, hvb);
  const double h = 1e-5;
  for (index_t t = 0; t < T; ++t) {
    auto wp = w, wm = w;
    for (index_t p = 0; p < P; ++p) {
      wp[std::size_t(p)] += h * v[std::size_t(t * P + p)];
      wm[std::size_t(p)] -= h * v[std::size_t(t * P + p)];
    }
    const auto gp = gradient(wp), gm = gradient(wm);
    for (index_t p = 0; p < P; ++p) {
      const double fd = (gp[std::size_t(p)] - gm[std::size_t(p)]) / (2 * h);
      EXPECT_NEAR(hv1[std::size_t(t)][std::size_t(p)], fd, 1e-6 * (1 + std::abs(fd))) << "tangent " << t << " param " << p;
      EXPECT_NEAR(hvb[std::size_t(t * P + p)], hv1[std::size_t(t)][std::size_t(p)], 1e-12 * (1 + std::abs(fd)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllActivationsDepthsAndParameterizations, EngineFD, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& pinfo) {
                           std::string name = pinfo.param.activation + "_" + pinfo.param.arch + (pinfo.param.bias ? "_bias" : "_nobias") +
                                              (pinfo.param.param == model::Parameterization::ntk ? "_ntk" : "_std");
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Tiling per_sample_gradients changes the row count of every GEMM of the forward and backward
// passes, and OpenBLAS picks its kernels (and so the order in which a row's dot products are
// summed) by the row count and the CPU: on Haswell-class kernels a 5-row tile and a 37-row call
// round the same row differently. Tiling is therefore transparent only to rounding, and this is the
// bound of that rounding: a first-order running-error analysis, in float64 on the magnitudes of the
// computation, of the difference between two evaluations of a tanh network that differ only in the
// summation order of each dot product (u = 2^-53, gamma_k = k u / (1 - k u)):
//   dot of length K, scaled by c:  |y1 - y2| <= 2 gamma_{K+1} c sum|a||w|  + c sum |w| E_a
//   z = y + beta b:                E_z <= E_y + 2u|z|
//   a = tanh z (libm within 2 ulp): E_a <= E_z + 8u|a|            (|tanh'| <= 1; 4u|a| per evaluation)
//   s = 1 - tanh(z)^2:             E_s <= 0.77 E_z + 20u         (|tanh''| <= 4/(3 sqrt 3) < 0.77;
//                                  per evaluation 8u from tanh, u from the square, u from 1 - .)
//   delta = t s (t the dot):       E_delta <= E_t |s| + |t| E_s + 2u|delta|
//   grad = (c delta) a:            E_g <= c (E_delta |a| + |delta| E_a) + 4u|g|;  bias: beta E_delta + 2u|g|
// Doubled for the second-order terms and for using computed rather than exact magnitudes. The
// differences measured under OpenBLAS's Haswell, Nehalem, Core2, Prescott and Barcelona kernels
// reach 0.7% to 2.3% of this bound; the default (Cooperlake/SkylakeX) kernels give equal bits.
std::vector<double> tanh_tiling_bound(const MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                      const std::vector<double>& g, index_t n) {
  const double u = 0x1p-53;
  const auto gamma = [&](index_t k) { return double(k) * u / (1 - double(k) * u); };
  const index_t L = s.layers(), P = s.num_params();
  for (const auto& act : s.activations) EXPECT_EQ(act.kind, model::Activation::tanh) << "the bound is for tanh layers";
  std::vector<double> bound(static_cast<std::size_t>(n * P));
  for (index_t r = 0; r < n; ++r) {
    // Forward: a[l], E_a[l] (l = 0..L-1 are layer inputs), z[l], E_z[l] for l = 1..L.
    std::vector<std::vector<double>> a(std::size_t(L + 1)), ea(std::size_t(L + 1)), z(std::size_t(L + 1)), ez(std::size_t(L + 1));
    a[0].assign(x.begin() + r * s.inputs(), x.begin() + (r + 1) * s.inputs());
    ea[0].assign(a[0].size(), 0.0);
    for (index_t l = 1; l <= L; ++l) {
      const index_t in = s.fan_in(l - 1), out = s.fan_out(l - 1);
      const double c = s.weight_scale(l - 1), beta = s.bias_scale;
      const bool bias = s.bias[std::size_t(l - 1)];
      auto &zl = z[std::size_t(l)], &ezl = ez[std::size_t(l)];
      zl.assign(std::size_t(out), 0.0);
      ezl.assign(std::size_t(out), 0.0);
      for (index_t i = 0; i < out; ++i) {
        double y = 0, mag = 0, prop = 0;
        for (index_t j = 0; j < in; ++j) {
          const double wij = w[std::size_t(s.weight_offset(l - 1) + i * in + j)];
          y += wij * a[std::size_t(l - 1)][std::size_t(j)];
          mag += std::abs(wij) * std::abs(a[std::size_t(l - 1)][std::size_t(j)]);
          prop += std::abs(wij) * ea[std::size_t(l - 1)][std::size_t(j)];
        }
        zl[std::size_t(i)] = c * y + (bias ? beta * w[std::size_t(s.bias_offset(l - 1) + i)] : 0.0);
        ezl[std::size_t(i)] = 2 * gamma(in + 1) * c * mag + c * prop + 2 * u * std::abs(zl[std::size_t(i)]);
      }
      if (l == L) break;
      a[std::size_t(l)].resize(std::size_t(out));
      ea[std::size_t(l)].resize(std::size_t(out));
      for (index_t i = 0; i < out; ++i) {
        a[std::size_t(l)][std::size_t(i)] = std::tanh(zl[std::size_t(i)]);
        ea[std::size_t(l)][std::size_t(i)] = ezl[std::size_t(i)] + 8 * u * std::abs(a[std::size_t(l)][std::size_t(i)]);
      }
    }
    // Backward: delta[l], E_delta[l] for l = L..1; delta_L = g exactly.
    std::vector<double> d(g.begin() + r * s.outputs(), g.begin() + (r + 1) * s.outputs()), ed(d.size(), 0.0);
    for (index_t l = L; l >= 1; --l) {
      const index_t in = s.fan_in(l - 1), out = s.fan_out(l - 1);
      const double c = s.weight_scale(l - 1), beta = s.bias_scale;
      for (index_t i = 0; i < out; ++i)
        for (index_t j = 0; j < in; ++j) {
          const double aj = a[std::size_t(l - 1)][std::size_t(j)], gv = c * d[std::size_t(i)] * aj;
          bound[std::size_t(r * P + s.weight_offset(l - 1) + i * in + j)] =
              2 * (c * (ed[std::size_t(i)] * std::abs(aj) + std::abs(d[std::size_t(i)]) * ea[std::size_t(l - 1)][std::size_t(j)]) +
                   4 * u * std::abs(gv));
        }
      if (s.bias[std::size_t(l - 1)])
        for (index_t i = 0; i < out; ++i)
          bound[std::size_t(r * P + s.bias_offset(l - 1) + i)] =
              2 * (beta * ed[std::size_t(i)] + 2 * u * std::abs(beta * d[std::size_t(i)]));
      if (l == 1) break;
      std::vector<double> below(static_cast<std::size_t>(in)), eb(static_cast<std::size_t>(in));
      for (index_t j = 0; j < in; ++j) {
        double t = 0, mag = 0, prop = 0;
        for (index_t i = 0; i < out; ++i) {
          const double wij = w[std::size_t(s.weight_offset(l - 1) + i * in + j)];
          t += d[std::size_t(i)] * wij;
          mag += std::abs(d[std::size_t(i)]) * std::abs(wij);
          prop += ed[std::size_t(i)] * std::abs(wij);
        }
        t *= c;
        const double et = 2 * gamma(out + 1) * c * mag + c * prop;
        const double av = a[std::size_t(l - 1)][std::size_t(j)], sd = 1 - av * av;
        const double es = 0.77 * ez[std::size_t(l - 1)][std::size_t(j)] + 20 * u;
        below[std::size_t(j)] = t * sd;
        eb[std::size_t(j)] = et * sd + std::abs(t) * es + 2 * u * std::abs(t * sd);
      }
      d = below;
      ed = eb;
    }
  }
  return bound;
}

TEST(Engine, TiledPerSampleGradientsAgreeWithOneTileToRounding) {
  Context ctx = Context::host();
  const MlpSpec s = MlpSpec::from_arch("7-16-16-3", model::parse_activation("tanh"));
  const index_t n = 37, P = s.num_params(), O = s.outputs(), D = s.inputs();
  auto w = test::random_vector(std::size_t(P), 17, 0.5), x = test::random_vector(std::size_t(n * D), 18);
  auto g = test::random_vector(std::size_t(n * O), 19);
  std::vector<double> big(static_cast<std::size_t>(n * P)), small(static_cast<std::size_t>(n * P));
  model::per_sample_gradients<double>(ctx, s, w.data(), {x.data(), n, D, D}, {g.data(), n, O, O}, {big.data(), n, P, P});
  Context tiny = Context::host();
  tiny.set_workspace_budget(5 * (16 + 16 + 3) * 3 * sizeof(double));  // five samples per tile
  int calls = 0;
  tiny.set_progress_sink([&](std::string_view, index_t, index_t) { ++calls; });
  model::per_sample_gradients<double>(tiny, s, w.data(), {x.data(), n, D, D}, {g.data(), n, O, O}, {small.data(), n, P, P});
  EXPECT_EQ(calls, 8);
  const std::vector<double> bound = tanh_tiling_bound(s, w, x, g, n);
  double largest = 0, widest = 0;
  for (std::size_t i = 0; i < big.size(); ++i) {
    largest = std::max(largest, std::abs(big[i]));
    widest = std::max(widest, bound[i]);
    ASSERT_LE(std::abs(big[i] - small[i]), bound[i])
        << "sample " << i / std::size_t(P) << " parameter " << i % std::size_t(P) << ": " << big[i] << " vs " << small[i];
  }
  // A rounding bound (about 3e-13 of the largest gradient here), not a tolerance that could hide a
  // misplaced row or sample, whose error would be of the order of the gradients themselves.
  EXPECT_LT(widest, 1e-11 * largest);
  tiny.set_workspace_budget(8);
  EXPECT_THROW(model::per_sample_gradients<double>(tiny, s, w.data(), {x.data(), n, D, D}, {g.data(), n, O, O},
                                                   {small.data(), n, P, P}),
               OutOfMemory);
}

TEST(Engine, FloatAgreesWithDouble) {
  Context ctx = Context::host();
  const MlpSpec s = MlpSpec::from_arch("10-32-32-4", model::parse_activation("gelu"));
  const index_t n = 9, P = s.num_params(), O = s.outputs(), D = s.inputs();
  auto w = test::random_vector(std::size_t(P), 20, 0.3), x = test::random_vector(std::size_t(n * D), 21);
  auto g = test::random_vector(std::size_t(n * O), 22);
  std::vector<float> wf(w.begin(), w.end()), xf(x.begin(), x.end()), gf(g.begin(), g.end());
  MlpEngine<double> ed(ctx, s);
  MlpEngine<float> ef(ctx, s);
  ed.forward(w.data(), {x.data(), n, D, D});
  ef.forward(wf.data(), {xf.data(), n, D, D});
  ed.backprop(w.data(), {g.data(), n, O, O});
  ef.backprop(wf.data(), {gf.data(), n, O, O});
  std::vector<double> gd(static_cast<std::size_t>(P));
  std::vector<float> gff(static_cast<std::size_t>(P));
  ed.param_grads({gd.data(), 1, P, P});
  ef.param_grads({gff.data(), 1, P, P});
  for (index_t p = 0; p < P; ++p) EXPECT_NEAR(gff[std::size_t(p)], gd[std::size_t(p)], 1e-4 * (1 + std::abs(gd[std::size_t(p)])));
}

TEST(Engine, BadShapesAreClearErrors) {
  Context ctx = Context::host();
  const MlpSpec s = MlpSpec::from_arch("3-4-2");
  std::vector<double> w(std::size_t(s.num_params())), x(12), g(8);
  MlpEngine<double> e(ctx, s);
  EXPECT_THROW(e.backprop(w.data(), {g.data(), 4, 2, 2}), InvalidArgument);  // no forward yet
  EXPECT_THROW(e.forward(w.data(), {x.data(), 3, 4, 4}), ShapeMismatch);
  e.forward(w.data(), {x.data(), 4, 3, 3});
  EXPECT_THROW(e.backprop(w.data(), {g.data(), 2, 4, 4}), ShapeMismatch);
  EXPECT_THROW(e.param_grads({w.data(), 1, 3, 3}), InvalidArgument);  // no backprop yet
  // The R-operator: a product needs hvp_forward and the prepared gradient, and a forward
  // invalidates both.
  std::vector<double> v(std::size_t(s.num_params())), out(std::size_t(s.num_params()));
  const MatrixView<const double> vv{v.data(), 1, s.num_params(), s.num_params()};
  const MatrixView<double> ov{out.data(), 1, s.num_params(), s.num_params()};
  e.hvp_forward(w.data(), vv);
  EXPECT_THROW(e.hvp_backward(w.data(), {g.data(), 4, 2, 2}, vv, ov), InvalidArgument);  // no hvp_prepare
  EXPECT_THROW(e.hvp_prepare(w.data(), {g.data(), 2, 4, 4}), ShapeMismatch);
  e.hvp_prepare(w.data(), {g.data(), 4, 2, 2});
  EXPECT_NO_THROW(e.hvp_backward(w.data(), {g.data(), 4, 2, 2}, vv, ov));
  e.forward(w.data(), {x.data(), 4, 3, 3});
  EXPECT_THROW(e.hvp_backward(w.data(), {g.data(), 4, 2, 2}, vv, ov), InvalidArgument);  // forward invalidated both
  e.hvp_forward(w.data(), vv);
  EXPECT_THROW(e.hvp_backward(w.data(), {g.data(), 4, 2, 2}, vv, ov), InvalidArgument);
  MlpSpec bad = s;
  bad.activations.clear();
  EXPECT_THROW(MlpEngine<double>(ctx, bad), InvalidArgument);
  EXPECT_THROW(model::parse_activation("swish"), InvalidArgument);
  EXPECT_THROW(MlpSpec::from_arch("3-x-2"), InvalidArgument);
  EXPECT_THROW(MlpSpec::from_arch("3"), InvalidArgument);
}

}  // namespace
}  // namespace dynascope
