#pragma once
// A float64 MLP written as textbook per-sample loops: the oracle that the engine, the NTK, the
// curvature operators and training are compared with on every backend. It shares nothing with the
// library but MlpSpec's parameter layout: its own activation formulas (PyTorch's definitions, as
// in model.hpp), no BLAS, one sample at a time. Forward-mode derivatives (JVPs, and the Hessian
// by forward-over-reverse) come from running the same loops on dual numbers.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"

namespace dynascope::test::naive {

// a + eps b with eps^2 = 0: value and directional derivative.
struct Dual {
  double v = 0, d = 0;
};
inline Dual operator+(Dual a, Dual b) { return {a.v + b.v, a.d + b.d}; }
inline Dual operator-(Dual a, Dual b) { return {a.v - b.v, a.d - b.d}; }
inline Dual operator*(Dual a, Dual b) { return {a.v * b.v, a.d * b.v + a.v * b.d}; }
inline Dual operator/(Dual a, Dual b) { return {a.v / b.v, (a.d * b.v - a.v * b.d) / (b.v * b.v)}; }
inline Dual operator*(double a, Dual b) { return {a * b.v, a * b.d}; }
inline Dual& operator+=(Dual& a, Dual b) { return a = a + b; }
inline Dual exp(Dual a) { return {std::exp(a.v), std::exp(a.v) * a.d}; }
inline double value(double a) { return a; }
inline double value(Dual a) { return a.v; }

// sigma, sigma', sigma'' at z.
struct ActValues {
  double f, f1, f2;
};
inline ActValues activation(const model::ActivationSpec& act, double z) {
  using model::Activation;
  const auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  switch (act.kind) {
    case Activation::identity: return {z, 1, 0};
    case Activation::relu: return {z > 0 ? z : 0, z > 0 ? 1.0 : 0.0, 0};
    case Activation::leaky_relu: return {z > 0 ? z : act.slope * z, z > 0 ? 1.0 : act.slope, 0};
    case Activation::abs: return {std::abs(z), z > 0 ? 1.0 : (z < 0 ? -1.0 : 0.0), 0};
    case Activation::tanh: {
      const double t = std::tanh(z);
      return {t, 1 - t * t, -2 * t * (1 - t * t)};
    }
    case Activation::gelu: {
      const double cdf = 0.5 * std::erfc(-z / std::sqrt(2.0)), pdf = 0.3989422804014327 * std::exp(-0.5 * z * z);
      return {z * cdf, cdf + z * pdf, pdf * (2 - z * z)};
    }
    case Activation::softplus: {
      if (z > 20) return {z, 1, 0};  // PyTorch's threshold
      const double s = sigmoid(z);
      return {std::log1p(std::exp(z)), s, s * (1 - s)};
    }
    case Activation::sigmoid: {
      const double s = sigmoid(z);
      return {s, s * (1 - s), s * (1 - s) * (1 - 2 * s)};
    }
  }
  return {z, 1, 0};
}
inline double act_value(const model::ActivationSpec& a, double z) { return activation(a, z).f; }
inline double act_slope(const model::ActivationSpec& a, double z) { return activation(a, z).f1; }
inline Dual act_value(const model::ActivationSpec& a, Dual z) {
  const ActValues s = activation(a, z.v);
  return {s.f, s.f1 * z.d};
}
inline Dual act_slope(const model::ActivationSpec& a, Dual z) {
  const ActValues s = activation(a, z.v);
  return {s.f1, s.f2 * z.d};
}

// One sample's pre-activations z[l] and activations a[l], l = 0..L (a[0] = x, a[L] = z[L] = f).
template <class S>
struct Trace {
  std::vector<std::vector<S>> z, a;
};

template <class S>
Trace<S> forward(const model::MlpSpec& s, const std::vector<S>& w, std::vector<S> x) {
  Trace<S> t;
  t.z.push_back({});
  t.a.push_back(std::move(x));
  for (index_t l = 0; l < s.layers(); ++l) {
    const index_t in = s.fan_in(l), out = s.fan_out(l);
    const double c = s.weight_scale(l);
    std::vector<S> z(static_cast<std::size_t>(out)), a(static_cast<std::size_t>(out));
    for (index_t r = 0; r < out; ++r) {
      S acc{};
      for (index_t j = 0; j < in; ++j) acc += w[std::size_t(s.weight_offset(l) + r * in + j)] * t.a.back()[std::size_t(j)];
      z[std::size_t(r)] = c * acc;
      if (s.bias[std::size_t(l)]) z[std::size_t(r)] += s.bias_scale * w[std::size_t(s.bias_offset(l) + r)];
      a[std::size_t(r)] = l + 1 < s.layers() ? act_value(s.activations[std::size_t(l)], z[std::size_t(r)]) : z[std::size_t(r)];
    }
    t.z.push_back(std::move(z));
    t.a.push_back(std::move(a));
  }
  return t;
}

// Reverse pass of one sample for the output cotangent g: adds J^T g to gw (P entries) and, when
// gx is given, writes the input cotangent (d_0 entries).
template <class S>
void backward(const model::MlpSpec& s, const std::vector<S>& w, const Trace<S>& t, std::vector<S> delta,
              std::vector<S>& gw, std::type_identity_t<std::vector<S>>* gx) {
  for (index_t l = s.layers() - 1; l >= 0; --l) {
    const index_t in = s.fan_in(l), out = s.fan_out(l);
    const double c = s.weight_scale(l);
    for (index_t r = 0; r < out; ++r) {
      for (index_t j = 0; j < in; ++j)
        gw[std::size_t(s.weight_offset(l) + r * in + j)] += c * (delta[std::size_t(r)] * t.a[std::size_t(l)][std::size_t(j)]);
      if (s.bias[std::size_t(l)]) gw[std::size_t(s.bias_offset(l) + r)] += s.bias_scale * delta[std::size_t(r)];
    }
    if (l == 0 && !gx) break;
    std::vector<S> prev(static_cast<std::size_t>(in));
    for (index_t j = 0; j < in; ++j) {
      S acc{};
      for (index_t r = 0; r < out; ++r) acc += w[std::size_t(s.weight_offset(l) + r * in + j)] * delta[std::size_t(r)];
      prev[std::size_t(j)] = l > 0 ? act_slope(s.activations[std::size_t(l - 1)], t.z[std::size_t(l)][std::size_t(j)]) * (c * acc)
                                   : c * acc;
    }
    if (l == 0) *gx = std::move(prev);
    else delta = std::move(prev);
  }
}

inline std::vector<double> row(const std::vector<double>& m, index_t i, index_t cols) {
  return {m.begin() + i * cols, m.begin() + (i + 1) * cols};
}

// Outputs f [n, O] of inputs x [n, d_0].
inline std::vector<double> outputs(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                   index_t n) {
  std::vector<double> f;
  for (index_t i = 0; i < n; ++i) {
    const auto t = forward(s, w, row(x, i, s.inputs()));
    f.insert(f.end(), t.a.back().begin(), t.a.back().end());
  }
  return f;
}

// Vector-Jacobian products for K blocks of cotangents g [K*n, O]: [K, P], row k = sum_i J_i^T g_{k,i}.
inline std::vector<double> param_vjp(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                     index_t n, const std::vector<double>& g, index_t blocks) {
  const index_t P = s.num_params(), O = s.outputs();
  std::vector<double> out;
  for (index_t k = 0; k < blocks; ++k) {
    std::vector<double> gw(static_cast<std::size_t>(P), 0.0);
    for (index_t i = 0; i < n; ++i) backward(s, w, forward(s, w, row(x, i, s.inputs())), row(g, k * n + i, O), gw, nullptr);
    out.insert(out.end(), gw.begin(), gw.end());
  }
  return out;
}

// Per-sample gradients [n, P], row i = J_i^T g_i for cotangents g [n, O].
inline std::vector<double> per_sample_vjp(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                          index_t n, const std::vector<double>& g) {
  std::vector<double> out;
  for (index_t i = 0; i < n; ++i) {
    std::vector<double> gw(static_cast<std::size_t>(s.num_params()), 0.0);
    backward(s, w, forward(s, w, row(x, i, s.inputs())), row(g, i, s.outputs()), gw, nullptr);
    out.insert(out.end(), gw.begin(), gw.end());
  }
  return out;
}

// Input cotangents [n, d_0] for output cotangents g [n, O].
inline std::vector<double> input_vjp(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                     index_t n, const std::vector<double>& g) {
  std::vector<double> out;
  for (index_t i = 0; i < n; ++i) {
    std::vector<double> gw(static_cast<std::size_t>(s.num_params()), 0.0), gx;
    backward(s, w, forward(s, w, row(x, i, s.inputs())), row(g, i, s.outputs()), gw, &gx);
    out.insert(out.end(), gx.begin(), gx.end());
  }
  return out;
}

inline std::vector<Dual> duals(const std::vector<double>& v, const std::vector<double>& d) {
  std::vector<Dual> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = {v[i], d.empty() ? 0.0 : d[i]};
  return out;
}

// Output tangents [T*n, O] (row t*n + i = J_i v_t) for parameter tangents V [T, P].
inline std::vector<double> param_jvp(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                     index_t n, const std::vector<double>& v, index_t tangents) {
  std::vector<double> out;
  for (index_t t = 0; t < tangents; ++t) {
    const auto wd = duals(w, row(v, t, s.num_params()));
    for (index_t i = 0; i < n; ++i) {
      const auto tr = forward(s, wd, duals(row(x, i, s.inputs()), {}));
      for (const Dual& f : tr.a.back()) out.push_back(f.d);
    }
  }
  return out;
}

// Output tangents [T*n, O] for input tangents U [T*n, d_0] (row t*n + i perturbs sample i).
inline std::vector<double> input_jvp(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                     index_t n, const std::vector<double>& u, index_t tangents) {
  std::vector<double> out;
  const auto wd = duals(w, {});
  for (index_t t = 0; t < tangents; ++t)
    for (index_t i = 0; i < n; ++i) {
      const auto tr = forward(s, wd, duals(row(x, i, s.inputs()), row(u, t * n + i, s.inputs())));
      for (const Dual& f : tr.a.back()) out.push_back(f.d);
    }
  return out;
}

// The Jacobian of one sample [O, P], row a = df_a/dw.
inline std::vector<double> jacobian(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x_row) {
  const index_t O = s.outputs(), P = s.num_params();
  const auto t = forward(s, w, x_row);
  std::vector<double> jac(static_cast<std::size_t>(O * P), 0.0);
  for (index_t a = 0; a < O; ++a) {
    std::vector<double> e(static_cast<std::size_t>(O), 0.0), gw(static_cast<std::size_t>(P), 0.0);
    e[std::size_t(a)] = 1;
    backward(s, w, t, e, gw, nullptr);
    std::copy(gw.begin(), gw.end(), jac.begin() + a * P);
  }
  return jac;
}

// Targets of the naive losses: labels (xent, or mse against one-hot rows) or values [n, O].
struct Targets {
  std::vector<std::int64_t> labels;
  std::vector<double> values;
};

// dL/df_i for the mean losses of train.hpp (mse: mean over n*O elements; xent: mean over samples).
template <class S>
std::vector<S> loss_grad(model::Loss loss, const std::vector<S>& f, const Targets& y, index_t i, index_t n) {
  using std::exp;
  const index_t O = static_cast<index_t>(f.size());
  std::vector<S> g(f.size());
  const auto target = [&](index_t a) {
    return y.labels.empty() ? y.values[std::size_t(i * O + a)] : (y.labels[std::size_t(i)] == a ? 1.0 : 0.0);
  };
  if (loss == model::Loss::mse) {
    for (index_t a = 0; a < O; ++a) g[std::size_t(a)] = (2.0 / double(n * O)) * (f[std::size_t(a)] - S{target(a)});
    return g;
  }
  double mx = value(f[0]);
  for (const S& v : f) mx = std::max(mx, value(v));
  S sum{};
  for (index_t a = 0; a < O; ++a) sum += exp(f[std::size_t(a)] - S{mx});
  for (index_t a = 0; a < O; ++a) g[std::size_t(a)] = (1.0 / double(n)) * (exp(f[std::size_t(a)] - S{mx}) / sum - S{target(a)});
  return g;
}
// The mean loss for outputs f [n, O].
inline double loss_value(model::Loss loss, const std::vector<double>& f, const Targets& y, index_t n) {
  const index_t O = static_cast<index_t>(f.size()) / std::max<index_t>(n, 1);
  double total = 0;
  for (index_t i = 0; i < n; ++i) {
    if (loss == model::Loss::mse) {
      for (index_t a = 0; a < O; ++a) {
        const double t = y.labels.empty() ? y.values[std::size_t(i * O + a)] : (y.labels[std::size_t(i)] == a ? 1.0 : 0.0);
        total += (f[std::size_t(i * O + a)] - t) * (f[std::size_t(i * O + a)] - t);
      }
    } else {
      double mx = f[std::size_t(i * O)];
      for (index_t a = 1; a < O; ++a) mx = std::max(mx, f[std::size_t(i * O + a)]);
      double sum = 0;
      for (index_t a = 0; a < O; ++a) sum += std::exp(f[std::size_t(i * O + a)] - mx);
      total += mx + std::log(sum) - f[std::size_t(i * O + y.labels[std::size_t(i)])];
    }
  }
  return loss == model::Loss::mse ? total / double(n * O) : total / double(n);
}

// Hessian-vector products of L(w) = loss(f(X; w), Y) for V [k, P]: [k, P]. hessian: the exact
// Hessian, by differentiating the reverse pass along v (dual numbers). gauss_newton: J^T H_loss J v
// with H_loss the Hessian of the loss in f, applied to the dual part of the forward pass.
inline std::vector<double> curvature_apply(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                           index_t n, const Targets& y, model::Loss loss, bool hessian,
                                           const std::vector<double>& v, index_t k) {
  const index_t P = s.num_params(), O = s.outputs();
  std::vector<double> out;
  for (index_t t = 0; t < k; ++t) {
    const auto wd = duals(w, row(v, t, P));
    std::vector<Dual> hv(static_cast<std::size_t>(P));
    std::vector<double> gn(static_cast<std::size_t>(P), 0.0);
    for (index_t i = 0; i < n; ++i) {
      const auto tr = forward(s, wd, duals(row(x, i, s.inputs()), {}));
      if (hessian) {
        backward(s, wd, tr, loss_grad<Dual>(loss, tr.a.back(), y, i, n), hv, nullptr);
        continue;
      }
      // H_loss fdot: the directional derivative of the loss gradient along fdot at fixed w.
      std::vector<Dual> f(static_cast<std::size_t>(O));
      for (index_t a = 0; a < O; ++a) f[std::size_t(a)] = {tr.a.back()[std::size_t(a)].v, tr.a.back()[std::size_t(a)].d};
      const auto gd = loss_grad<Dual>(loss, f, y, i, n);
      std::vector<double> u(static_cast<std::size_t>(O));
      for (index_t a = 0; a < O; ++a) u[std::size_t(a)] = gd[std::size_t(a)].d;
      backward(s, w, forward(s, w, row(x, i, s.inputs())), u, gn, nullptr);
    }
    for (index_t p = 0; p < P; ++p) out.push_back(hessian ? hv[std::size_t(p)].d : gn[std::size_t(p)]);
  }
  return out;
}

}  // namespace dynascope::test::naive
