// The step form's first-layer shortcut (src/elasticity/first_layer_step.hpp) against the batched
// forward on the explicitly updated parameters and against the float64 naive network on them: relu,
// tanh and gelu, standard and ntk parameterizations, with and without a first-layer bias, 2- and
// 3-layer networks, several set and target counts, strided and poisoned inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dynascope/batched_engine.hpp"
#include "dynascope/engine.hpp"
#include "elasticity/first_layer_step.hpp"
#include "support/backend_test.hpp"
#include "support/naive_mlp.hpp"

namespace dynascope {
namespace {

using elasticity::Update;
using elasticity::internal::first_layer_step_applies;
using elasticity::internal::FirstLayerStep;
using model::MlpSpec;
using model::Parameterization;
namespace naive = test::naive;

struct Net {
  std::vector<index_t> widths;
  const char* act;
  Parameterization p;
  bool bias1;         // the first layer's bias (the others always have one, but the last of 3 layers)
  double bias_scale;  // beta (ntk only)
};

MlpSpec spec_of(const Net& n) {
  MlpSpec s;
  s.widths = n.widths;
  s.bias.assign(std::size_t(s.layers()), true);
  s.bias[0] = n.bias1;
  if (s.layers() >= 3) s.bias.back() = false;
  s.activations.assign(std::size_t(s.layers() - 1), model::parse_activation(n.act));
  s.parameterization = n.p;
  if (n.p == Parameterization::ntk) s.bias_scale = n.bias_scale;
  s.validate();
  return s;
}

std::string name_of(const Net& n) {
  std::string a;
  for (index_t w : n.widths) {
    if (!a.empty()) a += '-';
    a += std::to_string(w);
  }
  return a + " " + n.act + " " + model::to_string(n.p) + (n.bias1 ? " bias1" : " no-bias1");
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}
template <class T>
double max_abs_diff(const std::vector<T>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double d = std::abs(double(a[i]) - b[i]);
    m = std::isnan(d) ? INFINITY : std::max(m, d);
  }
  return m;
}

// An SGD-shaped step of G sets: w+_c's first layer is W1 - eta c_1 s_c d_c x_c^T (b1 - eta beta s_c d_c),
// in float64; its later layers are w's plus a perturbation of the set's own (the shortcut takes them
// as they are).
struct Step {
  MlpSpec spec;
  index_t G = 0, P = 0, d0 = 0, d1 = 0;
  double eta = 0;
  std::vector<double> w, wplus, wplus_tail_only, delta, scale, xs;
};

Step make_step(const MlpSpec& spec, index_t G, double eta, unsigned seed, bool with_scale) {
  Step s;
  s.spec = spec;
  s.G = G;
  s.P = spec.num_params();
  s.d0 = spec.inputs();
  s.d1 = spec.widths[1];
  s.eta = eta;
  model::InitOptions io;
  io.seed = seed;
  io.scheme = spec.parameterization == Parameterization::ntk ? model::Init::ntk_normal : model::Init::pytorch;
  s.w = model::init_params<double>(Context::host(), spec, io).to_vector(Context::host());
  s.delta = test::random_values<double>(G * s.d1, seed + 1);
  s.xs = test::random_values<double>(G * s.d0, seed + 2);
  // s_c = 0.5, 1, 2, ... (or 1: the shortcut given no scale)
  for (index_t c = 0; c < G; ++c) s.scale.push_back(with_scale ? std::pow(2.0, double(c % 3) - 1.0) : 1.0);
  const std::vector<double> noise = test::random_values<double>(G * s.P, seed + 3);
  const double c1 = spec.weight_scale(0), beta = spec.bias_scale;
  const index_t tail = spec.weight_offset(1);
  for (index_t c = 0; c < G; ++c) {
    std::vector<double> row = s.w;
    for (index_t k = tail; k < s.P; ++k) row[std::size_t(k)] += 0.05 * noise[std::size_t(c * s.P + k)];
    s.wplus_tail_only.insert(s.wplus_tail_only.end(), row.begin(), row.end());
    const double f = eta * s.scale[std::size_t(c)];
    for (index_t k = 0; k < s.d1; ++k) {
      const double d = s.delta[std::size_t(c * s.d1 + k)];
      for (index_t i = 0; i < s.d0; ++i)
        row[std::size_t(k * s.d0 + i)] -= f * c1 * d * s.xs[std::size_t(c * s.d0 + i)];
      if (spec.bias[0]) row[std::size_t(spec.bias_offset(0) + k)] -= f * beta * d;
    }
    s.wplus.insert(s.wplus.end(), row.begin(), row.end());
  }
  return s;
}

// f(x_j; w+_c) [G*n, O] by the naive network: shared inputs x [n, d0], or n rows per set.
std::vector<double> naive_outputs(const MlpSpec& spec, const std::vector<double>& wplus, index_t G,
                                  const std::vector<double>& x, index_t n, bool shared) {
  const index_t P = spec.num_params(), d0 = spec.inputs();
  std::vector<double> f;
  for (index_t c = 0; c < G; ++c) {
    const std::vector<double> wc(wplus.begin() + c * P, wplus.begin() + (c + 1) * P);
    const std::vector<double> xc =
        shared ? x : std::vector<double>(x.begin() + c * n * d0, x.begin() + (c + 1) * n * d0);
    const std::vector<double> fc = naive::outputs(spec, wc, xc, n);
    f.insert(f.end(), fc.begin(), fc.end());
  }
  return f;
}

class FirstLayerStepTest : public test::BackendTest {
 protected:
  // The shortcut for G sets and inputs x (n shared rows, or n per set) on ctx(): against the
  // batched engine on the rounded w+ (same backend) and the naive float64 network on the exact w+.
  // Every input is strided with NaN padding, and w+'s first layer is NaN: read it, and it shows.
  template <class T>
  void check(const Net& net, index_t G, index_t n, bool shared, bool with_scale, unsigned seed) {
    const MlpSpec spec = spec_of(net);
    SCOPED_TRACE(name_of(net) + " G=" + std::to_string(G) + (shared ? " M=" : " N=") + std::to_string(n) +
                 (with_scale ? " scaled" : "") + " " + (sizeof(T) == 4 ? "float" : "double"));
    const Step s = make_step(spec, G, 0.3, seed, with_scale);
    const index_t P = s.P, d0 = s.d0, d1 = s.d1, O = spec.outputs();
    const index_t xrows = shared ? n : G * n;
    const std::vector<double> x = test::random_values<double>(xrows * d0, seed + 7);

    // The oracles.
    const std::vector<double> want = naive_outputs(spec, s.wplus, G, x, n, shared);
    const std::vector<double> tail_only = naive_outputs(spec, s.wplus_tail_only, G, x, n, shared);
    const double scale_f = std::max(1.0, max_abs(want));
    // Not vacuous: the first layer's step moves the outputs well above any tolerance here.
    double moved = 0;
    for (std::size_t i = 0; i < want.size(); ++i) moved = std::max(moved, std::abs(want[i] - tail_only[i]));
    EXPECT_GT(moved, 1e-3 * scale_f);

    const Context& cx = ctx();
    const Array<T> w = Array<T>::from_host(cx, {P}, cast<T>(s.w));
    // w+ with ld P + 3; its first layer (and the padding) NaN.
    std::vector<double> wp_poisoned = test::with_ld(s.wplus, G, P, P + 3);
    for (index_t c = 0; c < G; ++c)
      for (index_t k = 0; k < spec.weight_offset(1); ++k) wp_poisoned[std::size_t(c * (P + 3) + k)] = NAN;
    const Array<T> wp_bad = Array<T>::from_host(cx, {G, P + 3}, cast<T>(wp_poisoned));
    const Array<T> wp = Array<T>::from_host(cx, {G, P}, cast<T>(s.wplus));
    const Array<T> dl = Array<T>::from_host(cx, {G, d1 + 2}, cast<T>(test::with_ld(s.delta, G, d1, d1 + 2)));
    const Array<T> xs = Array<T>::from_host(cx, {G, d0 + 1}, cast<T>(test::with_ld(s.xs, G, d0, d0 + 1)));
    const Array<T> xa = Array<T>::from_host(cx, {xrows, d0 + 2}, cast<T>(test::with_ld(x, xrows, d0, d0 + 2)));
    const Array<double> sc = Array<double>::from_host(cx, {G}, s.scale);

    FirstLayerStep<T> step(cx, spec);
    const VectorView<const double> scale_view =
        with_scale ? VectorView<const double>{sc.data(), G, 1, cx.backend(), cx.device()} : VectorView<const double>{};
    const MatrixView<const T> out =
        shared ? step.forward_shared(w.data(), test::strided(wp_bad, P), test::strided(dl, d1), scale_view,
                                     test::strided(xs, d0), test::strided(xa, d0), s.eta)
               : step.forward(w.data(), test::strided(wp_bad, P), test::strided(dl, d1), scale_view,
                              test::strided(xs, d0), test::strided(xa, d0), s.eta);
    ASSERT_EQ(out.rows, G * n);
    ASSERT_EQ(out.cols, O);
    const std::vector<T> got = test::to_vector(cx, out);

    model::BatchedMlpEngine<T> engine(cx, spec);
    const MatrixView<const T> ref_view = shared ? engine.forward_shared(wp.matrix(), test::strided(xa, d0))
                                                : engine.forward(wp.matrix(), test::strided(xa, d0));
    const std::vector<T> ref = test::to_vector(cx, ref_view);
    std::vector<double> ref_d(ref.begin(), ref.end());

    const double tol = sizeof(T) == 8 ? 1e-12 : 1e-5;
    EXPECT_LE(max_abs_diff(got, ref_d), tol * scale_f) << "against BatchedMlpEngine on w+";
    EXPECT_LE(max_abs_diff(got, want), tol * scale_f) << "against the naive float64 network on w+";
    // The engine meets the same oracle to the same tolerance (the yardstick is fair).
    EXPECT_LE(max_abs_diff(ref, want), tol * scale_f) << "the engine itself";
  }

  template <class T>
  void sweep(bool shared) {
    const std::vector<Net> nets = {
        {{7, 9, 3}, "relu", Parameterization::standard, true, 1.0},
        {{7, 9, 3}, "tanh", Parameterization::ntk, false, 1.0},
        {{7, 9, 3}, "gelu", Parameterization::standard, false, 1.0},
        {{7, 9, 3}, "relu", Parameterization::ntk, true, 0.5},
        {{6, 11, 8, 2}, "tanh", Parameterization::standard, true, 1.0},
        {{6, 11, 8, 2}, "gelu", Parameterization::ntk, true, 0.7},
        {{6, 11, 8, 2}, "relu", Parameterization::standard, false, 1.0},
        {{6, 11, 8, 2}, "gelu", Parameterization::standard, false, 1.0},
        {{6, 11, 8, 2}, "tanh", Parameterization::ntk, false, 2.0},
        {{5, 10, 4}, "tanh", Parameterization::standard, true, 1.0},
    };
    const std::vector<std::pair<index_t, index_t>> sizes = {{1, 1}, {1, 6}, {3, 5}, {5, 17}};
    unsigned seed = 100;
    for (const Net& net : nets)
      for (const auto& [G, n] : sizes) {
        check<T>(net, G, n, shared, true, seed);
        check<T>(net, G, n, shared, false, seed + 50);
        seed += 10;
      }
  }
};

TEST_P(FirstLayerStepTest, SharedInputsMatchTheUpdatedNetworkFloat64) { sweep<double>(true); }
TEST_P(FirstLayerStepTest, SharedInputsMatchTheUpdatedNetworkFloat32) { sweep<float>(true); }
TEST_P(FirstLayerStepTest, PerSetInputsMatchTheUpdatedNetworkFloat64) { sweep<double>(false); }
TEST_P(FirstLayerStepTest, PerSetInputsMatchTheUpdatedNetworkFloat32) { sweep<float>(false); }

// Rows enough for the threaded host passes (G * M * d1 above kern::kSerialBelow) and the tail's
// per-set schedule on two threads.
TEST_P(FirstLayerStepTest, LargeTileMatches) {
  const Net net{{20, 64, 16, 4}, "gelu", Parameterization::ntk, true, 1.0};
  check<double>(net, 8, 80, true, true, 7);
  check<float>(net, 8, 80, true, true, 8);
  check<double>(net, 6, 12, false, true, 9);
}

// What step_form will hand it: the deltas of the backprop of the scaled cotangent g_c / s_c
// (s_c = max_a |g_c,a|) and s_c itself. The result is f(x'; w - eta J_c^T g_c) with the gradient
// of every layer taken by the naive float64 network, and the tail's rows of that w+.
TEST_P(FirstLayerStepTest, BackpropDeltasGiveTheSgdStep) {
  for (const Net& net : {Net{{6, 9, 7, 3}, "tanh", Parameterization::ntk, true, 0.5},
                         Net{{6, 9, 3}, "gelu", Parameterization::standard, true, 1.0},
                         Net{{6, 9, 7, 3}, "relu", Parameterization::standard, false, 1.0}}) {
    SCOPED_TRACE(name_of(net));
    const MlpSpec spec = spec_of(net);
    const index_t G = 4, M = 9, P = spec.num_params(), d0 = spec.inputs(), O = spec.outputs();
    model::InitOptions io;
    io.seed = 3;
    const std::vector<double> w = model::init_params<double>(host, spec, io).to_vector(host);
    const std::vector<double> xs = test::random_values<double>(G * d0, 11), x = test::random_values<double>(M * d0, 12);
    std::vector<double> g = test::random_values<double>(G * O, 13);
    for (index_t a = 0; a < O; ++a) g[std::size_t(O + a)] *= 1e-3;  // a small loss gradient: s_1 ~ 1e-3
    const double eta = 0.5;
    const std::vector<double> grads = naive::per_sample_vjp(spec, w, xs, G, g);
    std::vector<double> wplus(std::size_t(G * P));
    for (index_t c = 0; c < G; ++c)
      for (index_t k = 0; k < P; ++k)
        wplus[std::size_t(c * P + k)] = w[std::size_t(k)] - eta * grads[std::size_t(c * P + k)];
    const std::vector<double> want = naive_outputs(spec, wplus, G, x, M, true);

    std::vector<double> cot(g.size()), s(static_cast<std::size_t>(G), 0.0);
    for (index_t c = 0; c < G; ++c) {
      for (index_t a = 0; a < O; ++a)
        s[std::size_t(c)] = std::max(s[std::size_t(c)], std::abs(g[std::size_t(c * O + a)]));
      for (index_t a = 0; a < O; ++a) cot[std::size_t(c * O + a)] = g[std::size_t(c * O + a)] / s[std::size_t(c)];
    }
    const Context& cx = ctx();
    const Array<double> wd = Array<double>::from_host(cx, {P}, w);
    const Array<double> xsd = Array<double>::from_host(cx, {G, d0}, xs), xd = Array<double>::from_host(cx, {M, d0}, x);
    const Array<double> cotd = Array<double>::from_host(cx, {G, O}, cot), sd = Array<double>::from_host(cx, {G}, s);
    const Array<double> wpd = Array<double>::from_host(cx, {G, P}, wplus);
    model::MlpEngine<double> grad_engine(cx, spec);
    grad_engine.forward(wd.data(), xsd.matrix());
    grad_engine.backprop(wd.data(), cotd.matrix());
    FirstLayerStep<double> step(cx, spec);
    const std::vector<double> got = test::to_vector(
        cx, step.forward_shared(wd.data(), wpd.matrix(), grad_engine.delta(1),
                                VectorView<const double>{sd.data(), G, 1, cx.backend(), cx.device()}, xsd.matrix(),
                                xd.matrix(), eta));
    const double scale_f = std::max(1.0, max_abs(want));
    EXPECT_LE(max_abs_diff(got, want), 1e-12 * scale_f);
    // The step moved the outputs (and the source with the small gradient moved them a little).
    const std::vector<double> base = naive::outputs(spec, w, x, M);
    double moved = 0;
    for (index_t i = 0; i < M * O; ++i) moved = std::max(moved, std::abs(want[std::size_t(i)] - base[std::size_t(i)]));
    EXPECT_GT(moved, 1e-2 * scale_f);
  }
}

TEST_P(FirstLayerStepTest, RejectsBadArguments) {
  const MlpSpec spec = spec_of({{5, 6, 3}, "relu", Parameterization::standard, true, 1.0});
  const index_t P = spec.num_params();
  const Context& cx = ctx();
  FirstLayerStep<double> step(cx, spec);
  const Array<double> w = Array<double>::zeros(cx, {P}), wp = Array<double>::zeros(cx, {2, P});
  const Array<double> d = Array<double>::zeros(cx, {2, 6}), xs = Array<double>::zeros(cx, {2, 5});
  const Array<double> x = Array<double>::zeros(cx, {4, 5}), x3 = Array<double>::zeros(cx, {3, 5});
  const Array<double> bad = Array<double>::zeros(cx, {2, 4}), s3 = Array<double>::zeros(cx, {3});
  const auto throws = [](const auto& f, const std::string& word, bool shape) {
    try {
      f();
      ADD_FAILURE() << "no exception; expected one naming " << word;
    } catch (const ShapeMismatch& e) {
      EXPECT_TRUE(shape) << e.what();
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    } catch (const InvalidArgument& e) {
      EXPECT_FALSE(shape) << e.what();
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  const VectorView<const double> none{};
  throws([&] { step.forward_shared(w.data(), wp.matrix(), bad.matrix(), none, xs.matrix(), x.matrix(), 0.1); },
         "delta1 must be", true);
  throws([&] { step.forward_shared(w.data(), wp.matrix(), d.matrix(), none, bad.matrix(), x.matrix(), 0.1); },
         "xs must be", true);
  throws([&] { step.forward_shared(w.data(), wp.matrix(), d.matrix(), none, xs.matrix(), bad.matrix(), 0.1); },
         "x must have 5 columns", true);
  throws([&] { step.forward_shared(w.data(), bad.matrix(), d.matrix(), none, xs.matrix(), x.matrix(), 0.1); },
         "wplus must be", true);
  throws([&] { step.forward(w.data(), wp.matrix(), d.matrix(), none, xs.matrix(), x3.matrix(), 0.1); }, "G*N", true);
  throws(
      [&] {
        step.forward_shared(w.data(), wp.matrix(), d.matrix(),
                            VectorView<const double>{s3.data(), 3, 1, cx.backend(), cx.device()}, xs.matrix(),
                            x.matrix(), 0.1);
      },
      "scale must have", true);
  throws([&] { step.forward_shared(nullptr, wp.matrix(), d.matrix(), none, xs.matrix(), x.matrix(), 0.1); }, "params",
         false);
  throws([&] { step.forward_shared(w.data(), wp.matrix(), d.matrix(), none, xs.matrix(), x.matrix(), NAN); }, "eta",
         false);
  // One layer: no tail.
  throws([&] { FirstLayerStep<double>(cx, spec_of({{5, 3}, "relu", Parameterization::standard, true, 1.0})); },
         "one layer", false);
}

DYNASCOPE_BACKEND_TESTS(FirstLayerStepTest);

TEST(FirstLayerStep, AppliesToSgdWithAHiddenLayer) {
  const MlpSpec two = spec_of({{5, 6, 3}, "relu", Parameterization::standard, true, 1.0});
  const MlpSpec one = spec_of({{5, 3}, "relu", Parameterization::standard, true, 1.0});
  EXPECT_TRUE(first_layer_step_applies(two, Update::sgd));
  EXPECT_FALSE(first_layer_step_applies(two, Update::adam));
  EXPECT_FALSE(first_layer_step_applies(one, Update::sgd));
}

// flops: the first layer once per target, the inner products, the tail per (set, target); for
// 784-512-512-10 at G = 64 the products of a forward_shared minus 60%, plus 1/G of the first layer.
TEST(FirstLayerStep, FlopModel) {
  const MlpSpec s = MlpSpec::from_arch("784-512-512-10");
  const double G = 64, M = 1024;
  const double full = 2 * G * M * (784.0 * 512 + 512.0 * 512 + 512.0 * 10);
  const double want = 2 * M * 784.0 * 512 + 2 * G * M * 784 + 2 * G * M * (512.0 * 512 + 512.0 * 10);
  EXPECT_DOUBLE_EQ(FirstLayerStep<float>::flops(s, 64, 1024, true), want);
  EXPECT_DOUBLE_EQ(FirstLayerStep<float>::flops(s, 64, 1024, false),
                   want + 2 * (G - 1) * M * 784.0 * 512);
  EXPECT_NEAR(FirstLayerStep<float>::flops(s, 64, 1024, true) / full, 0.41, 0.01);
}

}  // namespace
}  // namespace dynascope
