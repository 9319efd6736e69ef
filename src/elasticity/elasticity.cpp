// Local elasticity (include/dynascope/elasticity.hpp): the output changes of one training step
// per source, in the step form (the update taken, all sources as one batched-parameters forward)
// and the NTK form (the eta -> 0 limit, contracted layer by layer without forming the kernel),
// and the metrics on them.
//
// A kernel source: the parameter update and the NTK form's combine are elementwise passes on the
// context's backend. The rest of the device work is the engines' and BLAS's; only output tiles
// come to the host, where everything after them is float64.
#include "dynascope/elasticity.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "core/buffer.hpp"
#include "core/checks.hpp"
#include "dynascope/batched_engine.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/primitives.hpp"
#include "elasticity/first_layer_step.hpp"
#include "kernels/launch.cuh"

namespace dynascope::elasticity {

Update parse_update(const std::string& text) { return parse_name(update_names, text); }
Form parse_form(const std::string& text) { return parse_name(form_names, text); }
Metric parse_metric(const std::string& text) { return parse_name(metric_names, text); }
const char* to_string(Update u) noexcept { return name_of(update_names, u); }
const char* to_string(Form f) noexcept { return name_of(form_names, f); }
const char* to_string(Metric m) noexcept { return name_of(metric_names, m); }

namespace {

using model::MlpSpec;

// %g: a step size of 1e-8 must not print as 0.000000.
std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The option checks shared by resolve() and output_changes() (everything but the metric).
void check_options(const Options& o, const std::string& call) {
  if (!(o.eta > 0) || !std::isfinite(o.eta))
    throw InvalidArgument(call + ": eta (the step size) must be > 0 and finite, got " + num(o.eta));
  if (o.update != Update::sgd && o.update != Update::adam) throw InvalidArgument(call + ": unknown update");
  if (o.form != Form::step && o.form != Form::ntk) throw InvalidArgument(call + ": unknown form");
  if (o.update == Update::adam && (!(o.adam_eps > 0) || !std::isfinite(o.adam_eps)))
    throw InvalidArgument(call + ": adam_eps must be > 0 and finite, got " + num(o.adam_eps));
  if (o.update == Update::adam && o.form == Form::ntk)
    throw InvalidArgument(call + ": update adam has no ntk form (only the sgd step has an eta -> 0 limit linear in "
                                 "the kernel); use form step");
}

bool class_metric(Metric m) { return m == Metric::l2 || m == Metric::kl || m == Metric::kl_compat; }

}  // namespace

Metric resolve(const Options& options, bool labels) {
  const std::string call = "elasticity";
  check_options(options, call);
  Metric m = options.metric;
  if (m == Metric::automatic) m = labels ? Metric::kl : Metric::abs;
  if (m == Metric::abs && labels)
    throw InvalidArgument(call + ": metric abs needs value targets, but the targets are class labels (use kl, l2 or "
                                 "kl-compat)");
  if (class_metric(m) && !labels)
    throw InvalidArgument(call + ": metric " + to_string(m) +
                          " needs class labels, but the targets are values (use abs)");
  if (m == Metric::kl_compat && options.form == Form::ntk)
    throw InvalidArgument(call + ": metric kl-compat has no ntk form (it is not a divergence and has no eta -> 0 "
                                 "limit); use form step");
  if (!class_metric(m) && m != Metric::abs) throw InvalidArgument(call + ": unknown metric");
  return m;
}

namespace {

index_t sum_widths(const MlpSpec& s) {
  index_t w = 0;
  for (index_t l = 1; l <= s.layers(); ++l) w += s.widths[std::size_t(l)];
  return w;
}
// sum_l a_l b_l: the multiply-adds of one sample's forward pass.
double products(const MlpSpec& s) {
  double p = 0;
  for (index_t l = 0; l < s.layers(); ++l) p += double(s.fan_in(l)) * double(s.fan_out(l));
  return p;
}

// The rows x cols values of a view on ctx's backend, as float64 on the host.
template <class T>
void to_host_doubles(const Context& ctx, MatrixView<const T> v, std::vector<T>& scratch, double* out) {
  const std::size_t n = std::size_t(v.rows * v.cols);
  scratch.resize(std::max<std::size_t>(scratch.size(), n));
  if (n == 0) return;
  copy<T>(ctx, v, MatrixView<T>{scratch.data(), v.rows, v.cols, v.cols, Backend::host, 0});
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<double>(scratch[i]);
}

// The first non-finite entry of a [rows, cols] host array: InvalidArgument naming it.
void require_finite(const double* v, index_t rows, index_t cols, const std::string& what, const std::string& hint) {
  for (index_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(v[i]))
      throw InvalidArgument(what + " is not finite at row " + std::to_string(i / cols) + ", output " +
                            std::to_string(i % cols) + " (" + num(v[i]) + "): " + hint);
}

// f(x; w) [N, O] in float64, over row tiles whose engine buffers fit the workspace budget.
// Host rows into a buffer on ctx's backend that is reused across source groups: no allocation (on
// cuda, no cudaMalloc and its synchronization) per group once the sizes are stable.
template <class U>
MatrixView<U> upload(const Context& ctx, detail::Buffer<U>& buf, const U* host, index_t rows, index_t cols) {
  const MatrixView<U> v = buf.reserve(ctx, rows, cols);
  copy<U>(ctx, MatrixView<const U>{host, rows, cols, cols, Backend::host, 0}, v);
  return v;
}

template <class T>
std::vector<double> outputs_of(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x) {
  const index_t n = x.rows, O = spec.outputs();
  const std::size_t row_bytes = std::size_t(2 * sum_widths(spec)) * sizeof(T);
  const index_t tile = std::clamp<index_t>(index_t(ctx.workspace_budget() / row_bytes), 1, n);
  model::MlpEngine<T> engine(ctx, spec);
  std::vector<double> out(std::size_t(n * O));
  std::vector<T> scratch;
  for (index_t r0 = 0; r0 < n; r0 += tile) {
    const index_t m = std::min(tile, n - r0);
    const MatrixView<const T> f = engine.forward(params, x.block(r0, 0, m, x.cols));
    to_host_doubles<T>(ctx, f, scratch, out.data() + r0 * O);
  }
  return out;
}

// dl_i/df at f_i for the per-sample loss: mse = mean over the O outputs of (f - y)^2 (one-hot y
// for labels) -> 2 (f - y) / O; xent = -log softmax(f)_y -> softmax(f) - onehot(y).
void per_sample_loss_grad(model::Loss loss, const std::vector<double>& f, const std::vector<double>& values,
                          const std::vector<std::int64_t>& labels, index_t n, index_t O, double* g) {
  for (index_t i = 0; i < n; ++i) {
    const double* fi = f.data() + i * O;
    double* gi = g + i * O;
    if (loss == model::Loss::mse) {
      for (index_t a = 0; a < O; ++a) {
        const double y = labels.empty() ? values[std::size_t(i * O + a)] : (labels[std::size_t(i)] == a ? 1.0 : 0.0);
        gi[a] = 2.0 * (fi[a] - y) / double(O);
      }
    } else {
      double mx = fi[0];
      for (index_t a = 1; a < O; ++a) mx = std::max(mx, fi[a]);
      double z = 0;
      for (index_t a = 0; a < O; ++a) z += std::exp(fi[a] - mx);
      for (index_t a = 0; a < O; ++a) gi[a] = std::exp(fi[a] - mx) / z - (labels[std::size_t(i)] == a ? 1.0 : 0.0);
    }
  }
}

// w+ = w - eta u(s_r g^_r) for G parameter sets, layer l's weights and bias, straight from the
// backprop's factors: g^_r = J_r^T (dl_r/df / s_r) has the per-sample gradient c_l delta_{l,r}
// a_{l-1,r}^T of layer l (beta delta_{l,r} for the bias), s_r = max_a |dl_r/df_a|. The cotangent
// is scaled to O(1) so that a tiny loss gradient (a confident source) does not underflow in T;
// s_r comes back in float64. sgd u = g; adam u = g / (|g| + eps), the first step of a fresh Adam
// (m = (1-b1) g, v = (1-b2) g^2, both bias corrections divide them out). Computed in float64 and
// rounded once; one pass writes w+ (no [G, P] gradient first: the pass is memory-bound).
template <class T>
struct StepLayer {
  T* out;
  index_t ld;
  const T* w;
  MatrixView<const T> d, a;  // delta_l [G, o], a_{l-1} [G, in]
  index_t o, in, woff, boff;
  double c, beta;
  const double* scale;  // [G] s_r
  double eta, eps;
  bool adam;
  DYNASCOPE_HD void operator()(index_t row, index_t j) const {  // row = r * o + i, j = 0..in (in: the bias)
    const index_t r = row / o, i = row - r * o;
    const double dr = static_cast<double>(d(r, i)) * scale[r];
    const index_t k = j < in ? woff + i * in + j : boff + i;
    const double g = j < in ? c * dr * static_cast<double>(a(r, j)) : beta * dr;
    const double u = adam ? g / ((g < 0 ? -g : g) + eps) : g;
    out[r * ld + k] = static_cast<T>(static_cast<double>(w[k]) - eta * u);
  }
};

struct Dims {
  index_t n1, n2, O, P, L, d0;
};

// max_a |v_a| of a row of O values.
double max_abs(const double* v, index_t O) {
  double m = 0;
  for (index_t a = 0; a < O; ++a) m = std::max(m, std::abs(v[a]));
  return m;
}

template <class T>
void step_form(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x1,
               MatrixView<const T> xt, bool same_set, const Options& o, const Dims& d, const std::string& label,
               OutputChanges& r) {
  const index_t N1 = d.n1, N2 = d.n2, O = d.O, P = d.P, L = d.L;
  const double* lg = r.loss_grad.data();
  const double* base2 = r.base2.data();
  double* delta = r.delta.data();
  // Group of G sources and target tile of Mt rows under the budget: the [G, P] parameters, the
  // batched engine's z and a per (set, row) and the output tile copied out.
  const double budget = double(ctx.workspace_budget());
  const double sz = double(sizeof(T));
  const double per_row = (2.0 * double(sum_widths(spec)) + double(O)) * sz;
  const double pbytes = double(P) * sz;
  const index_t G = std::clamp<index_t>(index_t(budget / 2 / (pbytes + per_row)), 1, N1);
  const index_t Mt =
      std::clamp<index_t>(index_t(std::max(0.0, budget - double(G) * pbytes) / (double(G) * per_row)), 1, N2);

  Array<T> wplus(ctx, {G, P});
  model::MlpEngine<T> grad_engine(ctx, spec);
  model::BatchedMlpEngine<T> engine(ctx, spec);
  // For sgd on a network with a hidden layer, the stepped first layer is W1 minus a rank-one
  // matrix: FirstLayerStep applies it to z_1 instead (no [G, d1, d0] products, and layer 1 of w+
  // is never written). Its buffers fit in the per-row budget above (a_1 and the tail's z and a).
  const bool shortcut = internal::first_layer_step_applies(spec, o.update);
  std::optional<internal::FirstLayerStep<T>> first;
  if (shortcut) first.emplace(ctx, spec);
  std::vector<T> scratch;
  std::vector<double> tile(std::size_t(G * Mt * O));
  std::vector<T> cot_host(std::size_t(G * O));
  std::vector<double> scale_host(static_cast<std::size_t>(G));
  // Per source: whether its parameter gradient J_i^T dl_i/df is zero (no step at all).
  std::vector<char> no_step(std::size_t(N1), 0);
  Array<double> norms(ctx, {2 * L, G});
  std::vector<double> norms_host(std::size_t(2 * L * G));
  detail::Buffer<T> cot_buf;
  detail::Buffer<double> scale_buf;
  const std::string diverged = "the step with eta = " + num(o.eta) + " diverged; use a smaller eta (or form ntk)";
  const std::string task = label + ": one-step output changes";
  const double fwd = products(spec);
  for (index_t g0 = 0; g0 < N1; g0 += G) {
    const index_t g = std::min(G, N1 - g0);
    for (index_t c = 0; c < g; ++c) {
      const double s = max_abs(lg + (g0 + c) * O, O);
      scale_host[std::size_t(c)] = s;
      for (index_t a = 0; a < O; ++a)
        cot_host[std::size_t(c * O + a)] = static_cast<T>(s > 0 ? lg[(g0 + c) * O + a] / s : 0.0);
    }
    const MatrixView<T> cot = upload<T>(ctx, cot_buf, cot_host.data(), g, O);
    const MatrixView<double> scale = upload<double>(ctx, scale_buf, scale_host.data(), g, 1);
    const MatrixView<T> wp{wplus.data(), g, P, P, ctx.backend(), ctx.is_cuda() ? ctx.device() : 0};
    const MatrixView<const T> xs = x1.block(g0, 0, g, x1.cols);
    grad_engine.forward(params, xs);
    grad_engine.backprop(params, MatrixView<const T>(cot));
    for (index_t l = 1; l <= L; ++l) {
      const index_t out = spec.widths[std::size_t(l)], in = spec.widths[std::size_t(l - 1)];
      const bool bias = spec.bias[std::size_t(l - 1)];
      const MatrixView<const T> dl = grad_engine.delta(l), al = grad_engine.activation(l - 1);
      if (!(shortcut && l == 1))
        kern::parallel_for_2d(ctx, g * out, in + (bias ? 1 : 0),
                              StepLayer<T>{wp.data, P, params, dl, al, out, in, spec.weight_offset(l - 1),
                                           bias ? spec.bias_offset(l - 1) : 0, spec.weight_scale(l - 1),
                                           spec.bias_scale, scale.data, o.eta, o.adam_eps,
                                           o.update == Update::adam});
      // ||g^_r||^2 = sum_l c_l^2 ||delta_{l,r}||^2 ||a_{l-1,r}||^2 (+ beta^2 ||delta_{l,r}||^2): zero
      // exactly when the step moves no parameter.
      const auto row = [&](index_t k) {
        return VectorView<double>{norms.data() + k * G, g, 1, ctx.backend(), ctx.is_cuda() ? ctx.device() : 0};
      };
      primitives::row_squared_norms(ctx, dl, row(2 * (l - 1)));
      primitives::row_squared_norms(ctx, al, row(2 * (l - 1) + 1));
    }
    copy<double>(ctx, MatrixView<const double>(norms.matrix()),
                 MatrixView<double>{norms_host.data(), 2 * L, G, G, Backend::host, 0});
    for (index_t c = 0; c < g; ++c) {
      double n2 = 0;
      for (index_t l = 1; l <= L; ++l) {
        const double dn = norms_host[std::size_t(2 * (l - 1) * G + c)], an = norms_host[std::size_t((2 * l - 1) * G + c)];
        const double cl = spec.weight_scale(l - 1);
        n2 += cl * cl * dn * an + (spec.bias[std::size_t(l - 1)] ? spec.bias_scale * spec.bias_scale * dn : 0.0);
      }
      no_step[std::size_t(g0 + c)] = n2 == 0;
    }
    r.flops += 6.0 * double(g) * fwd;  // forward, backprop, per-sample products
    // The first-layer deltas of the scaled cotangents and their scales: the step's layer 1.
    const MatrixView<const T> d1 = grad_engine.delta(1);
    const VectorView<const double> s1{scale.data, g, 1, ctx.backend(), ctx.is_cuda() ? ctx.device() : 0};
    if (!same_set) {
      // f(x_i; w+_i): each set's own source row.
      const MatrixView<const T> f = shortcut ? first->forward(params, MatrixView<const T>(wp), d1, s1, xs, xs, o.eta)
                                             : engine.forward(MatrixView<const T>(wp), xs);
      to_host_doubles<T>(ctx, f, scratch, tile.data());
      require_finite(tile.data(), g, O, label + ": f(x1; w+) of source " + std::to_string(g0) + " + row", diverged);
      for (index_t k = 0; k < g * O; ++k) r.self_delta.data()[g0 * O + k] = tile[std::size_t(k)] - r.base1.data()[g0 * O + k];
      r.flops += shortcut ? internal::FirstLayerStep<T>::flops(spec, g, 1, false) : 2.0 * double(g) * fwd;
    }
    for (index_t t0 = 0; t0 < N2; t0 += Mt) {
      const index_t m = std::min(Mt, N2 - t0);
      const MatrixView<const T> x2 = xt.block(t0, 0, m, xt.cols);
      const MatrixView<const T> f = shortcut
                                        ? first->forward_shared(params, MatrixView<const T>(wp), d1, s1, xs, x2, o.eta)
                                        : engine.forward_shared(MatrixView<const T>(wp), x2);
      to_host_doubles<T>(ctx, f, scratch, tile.data());
      for (index_t c = 0; c < g; ++c)
        for (index_t j = 0; j < m; ++j)
          for (index_t a = 0; a < O; ++a) {
            const double v = tile[std::size_t((c * m + j) * O + a)];
            if (!std::isfinite(v))
              throw InvalidArgument(label + ": f(x2_" + std::to_string(t0 + j) + "; w+) of source " +
                                    std::to_string(g0 + c) + " is not finite at output " + std::to_string(a) + ": " +
                                    diverged);
            delta[(g0 + c) * N2 * O + (t0 + j) * O + a] = v - base2[(t0 + j) * O + a];
          }
      r.flops += shortcut ? internal::FirstLayerStep<T>::flops(spec, g, m, true) : 2.0 * double(g) * double(m) * fwd;
      // In (source, target) pairs, after every tile: a group of many targets never goes quiet.
      ctx.progress(task, g0 * N2 + g * (t0 + m), N1 * N2);
    }
  }
  if (same_set)
    for (index_t i = 0; i < N1; ++i)
      for (index_t a = 0; a < O; ++a) r.self_delta.data()[i * O + a] = delta[i * N2 * O + i * O + a];
  // The unresolved sources: a step was taken, but its own change is at the rounding level of the
  // two forwards it is the difference of.
  r.resolution = 32.0 * double(std::numeric_limits<T>::epsilon());
  for (index_t i = 0; i < N1; ++i) {
    if (no_step[std::size_t(i)] || max_abs(lg + i * O, O) == 0) continue;
    const double* sd = r.self_delta.data() + i * O;
    const double* f = r.base1.data() + i * O;
    double level = std::max(1.0, max_abs(f, O));
    for (index_t a = 0; a < O; ++a) level = std::max(level, std::abs(f[a] + sd[a]));
    if (max_abs(sd, O) <= r.resolution * level) r.unresolved_sources.push_back(i);
  }
}

// ---- The ntk form: the structured contraction ----
//
// With h_{l-1} the inputs of layer l, delta_i^l = J_l(x_i)^T dl_i/df (the source's loss cotangent
// backpropagated to z_l) and D_l(x') = df/dz_l(x') [O, d_l], the parameter gradient of source i is,
// per layer, c_l delta_i^l (x) h_{l-1}(x_i) for W_l (beta delta_i^l for b_l), so
//   Delta_i(x')_a = -eta sum_l (c_l^2 <h_{l-1}(x'), h_{l-1}(x_i)> + beta^2 [bias_l]) (D_l(x') delta_i^l)_a.
// Per (source group, target tile) and layer two GEMMs in T: At = H_{l-1}(x1) H_{l-1}(x')^T [g, m]
// and Bt = delta^l(x1) D_l(x')^T [g, O*m] (D_l from one backprop over the tile with O one-hot
// cotangent blocks), then one elementwise pass combines them in float64. The O x O kernel blocks
// Theta(x', x_i) are never formed: 2 g m sum_l (d_{l-1} + O d_l) flops per tile instead of the
// kernel's 2 g m sum_l (d_{l-1} + O^2 d_l) and its contraction.
//
// r.flops, with P_w = sum_l d_{l-1} d_l (the backprops compute no input gradient: P_w - d0 d1):
//   per group of g sources   forward 2 g P_w, backprop of K blocks 2 K g (P_w - d0 d1) (K = 1, or
//                            1 + O with x2), with x2 the self row dots 2 g sum_l (d_{l-1} + O d_l)
//   per tile of m targets    forward 2 m P_w, O one-hot blocks 2 O m (P_w - d0 d1), the GEMMs
//   (repeated per group)     2 g m sum_l (d_{l-1} + O d_l)
// The elementwise passes (the combine, the one-hot fill) are not counted.

// Delta tile [g, m*O] (row c = source, column j*O + a = output a at target j), from the layers
// l0..l1-1 of At [L*g, m] and Bt [L*g, O*m] (layer l's rows l*g..l*g+g-1, Bt's columns a*m + j):
//   v = scale_c sum_l (w_l At_l(c, j) + b_l) Bt_l(c, a*m + j),  scale_c = -eta s_c.
// total = v (first) or total + v; layer = v when given (the per-layer part).
template <class T>
struct NtkCombine {
  MatrixView<const T> at, bt;
  const double* w;      // [L] c_l^2
  const double* b;      // [L] beta^2 or 0
  const double* scale;  // [g]
  index_t g, m, O, l0, l1;
  MatrixView<double> total, layer;
  bool add;
  DYNASCOPE_HD void operator()(index_t idx) const {
    const index_t c = idx / (m * O), col = idx - c * (m * O), j = col / O, a = col - j * O;
    double v = 0;
    for (index_t l = l0; l < l1; ++l)
      v += (w[l] * static_cast<double>(at(l * g + c, j)) + b[l]) * static_cast<double>(bt(l * g + c, a * m + j));
    v *= scale[c];
    if (layer.data) layer(c, col) = v;
    total(c, col) = add ? total(c, col) + v : v;
  }
};

// The self change of layer l without x2 (x' = x_i), per (source c, output a): with the engine's
// deltas d [(1+O) g, d_l] (block 0: delta_c^l, block 1+a: D_l(x_c)_a) and hh [g] = |h_{l-1}(x_c)|^2,
//   v = scale_c (w hh_c + b) <D_l(x_c)_a, delta_c^l>, the dot in float64.
template <class T>
struct NtkSelf {
  MatrixView<const T> d;
  const double* hh;
  const double* scale;
  double w, b;
  index_t g, O;
  MatrixView<double> total, layer;
  bool add;
  DYNASCOPE_HD void operator()(index_t idx) const {
    const index_t c = idx / O, a = idx - c * O;
    double dot = 0;
    for (index_t k = 0; k < d.cols; ++k) dot += static_cast<double>(d((1 + a) * g + c, k)) * static_cast<double>(d(c, k));
    const double v = scale[c] * (w * hh[c] + b) * dot;
    if (layer.data) layer(c, a) = v;
    total(c, a) = add ? total(c, a) + v : v;
  }
};

// Cotangents [O * n, O]: block a (rows a*n..a*n+n-1) one-hot e_a.
template <class T>
struct OneHotBlocks {
  MatrixView<T> c;
  index_t n, O;
  DYNASCOPE_HD void operator()(index_t idx) const {
    const index_t row = idx / O, a = idx - row * O;
    c(row, a) = row / n == a ? T(1) : T(0);
  }
};

template <class T>
void ntk_form(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x1,
              MatrixView<const T> xt, bool same_set, const Options& o, bool per_layer, const Dims& d,
              const std::string& label, OutputChanges& r) {
  const index_t N1 = d.n1, N2 = d.n2, O = d.O, L = d.L;
  const double* lg = r.loss_grad.data();
  const index_t W = sum_widths(spec);
  const double sz = double(sizeof(T));
  const bool direct = ctx.is_host();  // host: the combine writes straight into the result arrays
  // Source cotangent blocks: the scaled loss gradient, and without x2 the O one-hot blocks too
  // (the self change needs D_l(x_i): one backprop gives both).
  const index_t K = same_set ? 1 : 1 + O;
  // Bytes per source (engine z, a and K deltas, cotangents, scale), per target (engine z, a, O
  // deltas, one-hot cotangents) and per (source, target) pair (At and Bt of every layer, and on
  // cuda the float64 tiles copied out). Sources first: a group holds as many as half the budget
  // allows, so that the targets' O backprops are repeated for as few groups as possible.
  const double per_source = sz * double((2 + K) * W + K * O) + 8.0 * double(1 + O);
  const double per_target = sz * double((2 + O) * W + O * O);
  const double per_pair = sz * double(L * (1 + O)) + (direct ? 0.0 : 8.0 * double(O * (per_layer ? 2 : 1)));
  const double budget = double(ctx.workspace_budget());
  const index_t G = std::clamp<index_t>(index_t(budget / 2 / (per_source + per_pair)), 1, N1);
  const index_t Mt = std::clamp<index_t>(
      index_t(std::max(0.0, budget - double(G) * per_source) / (per_target + double(G) * per_pair)), 1, N2);

  // c_l^2 and beta^2 [bias_l] on ctx's backend.
  std::vector<double> wb_host(std::size_t(2 * L));
  for (index_t l = 0; l < L; ++l) {
    const double c = spec.weight_scale(l);
    wb_host[std::size_t(l)] = c * c;
    wb_host[std::size_t(L + l)] = spec.bias[std::size_t(l)] ? spec.bias_scale * spec.bias_scale : 0.0;
  }
  const Array<double> wb = Array<double>::from_host(ctx, {2 * L}, wb_host.data());
  const double* wl = wb.data();
  const double* bl = wb.data() + L;

  model::MlpEngine<T> src(ctx, spec), tgt(ctx, spec);
  detail::Buffer<T> at_buf, bt_buf, tcot_buf, cot_buf;
  detail::Buffer<double> scale_buf, tile_buf, layer_buf, self_buf, self_layer_buf, hh_buf;
  std::vector<T> cot_host;
  std::vector<double> scale_host;
  const double pw = products(spec);
  const double pw_back = pw - double(spec.fan_in(0)) * double(spec.fan_out(0));  // backprop: no input gradient
  double pair_width = 0;  // sum_l (d_{l-1} + O d_l)
  for (index_t l = 0; l < L; ++l) pair_width += double(spec.fan_in(l)) + double(O) * double(spec.fan_out(l));
  const std::string task = label + ": NTK output changes";
  for (index_t g0 = 0; g0 < N1; g0 += G) {
    const index_t g = std::min(G, N1 - g0);
    // Source features: h_{l-1}(x_i), delta_i^l for the cotangent dl_i/df / s_i (s_i = max_a
    // |dl_i/df_a|, so that a confident source's tiny gradient does not underflow in T; s_i comes
    // back in float64 in the scale), and without x2 D_l(x_i).
    cot_host.assign(std::size_t(K * g * O), T(0));
    scale_host.assign(std::size_t(g), 0.0);
    for (index_t c = 0; c < g; ++c) {
      const double s = max_abs(lg + (g0 + c) * O, O);
      scale_host[std::size_t(c)] = -o.eta * s;
      for (index_t a = 0; a < O; ++a) {
        cot_host[std::size_t(c * O + a)] = static_cast<T>(s > 0 ? lg[(g0 + c) * O + a] / s : 0.0);
        for (index_t k = 1; k < K; ++k) cot_host[std::size_t((k * g + c) * O + a)] = T(k - 1 == a ? 1 : 0);
      }
    }
    const MatrixView<T> cot = upload<T>(ctx, cot_buf, cot_host.data(), K * g, O);
    const MatrixView<double> scale = upload<double>(ctx, scale_buf, scale_host.data(), g, 1);
    const MatrixView<const T> xs = x1.block(g0, 0, g, x1.cols);
    src.forward(params, xs);
    src.backprop(params, MatrixView<const T>(cot), K);
    r.flops += 2.0 * double(g) * pw + 2.0 * double(K * g) * pw_back;

    if (!same_set) {
      // Delta_i(x_i): per layer, |h_{l-1}(x_i)|^2 and the row dots <D_l(x_i)_a, delta_i^l>.
      const MatrixView<double> host_self{r.self_delta.data() + g0 * O, g, O, O, Backend::host, 0};
      const MatrixView<double> self = direct ? host_self : self_buf.reserve(ctx, g, O);
      const MatrixView<double> hh = hh_buf.reserve(ctx, 1, g);
      for (index_t l = 1; l <= L; ++l) {
        primitives::row_squared_norms(ctx, src.activation(l - 1), hh.row(0));
        MatrixView<double> layer{};
        if (per_layer) {
          const MatrixView<double> host_layer{r.layer_self_delta[std::size_t(l - 1)].data() + g0 * O, g, O, O,
                                              Backend::host, 0};
          layer = direct ? host_layer : self_layer_buf.reserve(ctx, g, O);
        }
        kern::parallel_for(ctx, g * O,
                           NtkSelf<T>{src.delta(l), hh.data, scale.data, wb_host[std::size_t(l - 1)],
                                      wb_host[std::size_t(L + l - 1)], g, O, self, layer, l > 1});
        if (per_layer && !direct)
          copy<double>(ctx, MatrixView<const double>(layer),
                       MatrixView<double>{r.layer_self_delta[std::size_t(l - 1)].data() + g0 * O, g, O, O,
                                          Backend::host, 0});
        r.flops += 2.0 * double(g) * (double(spec.fan_in(l - 1)) + double(O) * double(spec.fan_out(l - 1)));
      }
      if (!direct) copy<double>(ctx, MatrixView<const double>(self), host_self);
    }

    for (index_t t0 = 0; t0 < N2; t0 += Mt) {
      const index_t m = std::min(Mt, N2 - t0);
      // Target features: h_{l-1}(x'), D_l(x') from O one-hot cotangent blocks.
      tgt.forward(params, xt.block(t0, 0, m, xt.cols));
      const MatrixView<T> tcot = tcot_buf.reserve(ctx, O * m, O);
      kern::parallel_for(ctx, O * m * O, OneHotBlocks<T>{tcot, m, O});
      tgt.backprop(params, MatrixView<const T>(tcot), O);
      r.flops += 2.0 * double(m) * pw + 2.0 * double(O * m) * pw_back;
      // At_l, Bt_l for every layer.
      const MatrixView<T> at = at_buf.reserve(ctx, L * g, m), bt = bt_buf.reserve(ctx, L * g, O * m);
      for (index_t l = 1; l <= L; ++l) {
        const index_t dl = spec.widths[std::size_t(l)];
        blas::gemm<T>(ctx, blas::Op::none, blas::Op::trans, T(1), src.activation(l - 1), tgt.activation(l - 1), T(0),
                      at.block((l - 1) * g, 0, g, m));
        blas::gemm<T>(ctx, blas::Op::none, blas::Op::trans, T(1), src.delta(l).block(0, 0, g, dl), tgt.delta(l), T(0),
                      bt.block((l - 1) * g, 0, g, O * m));
      }
      r.flops += 2.0 * double(g) * double(m) * pair_width;
      // Combine in float64: all layers at once, or layer by layer into their parts.
      const MatrixView<double> host_total{r.delta.data() + g0 * N2 * O + t0 * O, g, m * O, N2 * O, Backend::host, 0};
      const MatrixView<double> total = direct ? host_total : tile_buf.reserve(ctx, g, m * O);
      const NtkCombine<T> all{at, bt, wl, bl, scale.data, g, m, O, 0, L, total, {}, false};
      if (!per_layer) {
        kern::parallel_for(ctx, g * m * O, all);
      } else {
        for (index_t l = 0; l < L; ++l) {
          const MatrixView<double> host_layer{r.layer_delta[std::size_t(l)].data() + g0 * N2 * O + t0 * O, g, m * O,
                                              N2 * O, Backend::host, 0};
          NtkCombine<T> one = all;
          one.l0 = l;
          one.l1 = l + 1;
          one.layer = direct ? host_layer : layer_buf.reserve(ctx, g, m * O);
          one.add = l > 0;
          kern::parallel_for(ctx, g * m * O, one);
          if (!direct) copy<double>(ctx, MatrixView<const double>(one.layer), host_layer);
        }
      }
      if (!direct) copy<double>(ctx, MatrixView<const double>(total), host_total);
      ctx.progress(task, g0 * N2 + g * (t0 + m), N1 * N2);  // in (source, target) pairs
    }
  }
  if (!same_set) return;
  // Without x2 the self change is the diagonal (so S_rel(x_i, x_i) = 1 exactly).
  const auto self_of = [&](const Array<double>& from, Array<double>& to) {
    for (index_t i = 0; i < N1; ++i)
      for (index_t a = 0; a < O; ++a) to.data()[i * O + a] = from.data()[i * N2 * O + i * O + a];
  };
  self_of(r.delta, r.self_delta);
  for (index_t l = 0; l < (per_layer ? L : 0); ++l) self_of(r.layer_delta[std::size_t(l)], r.layer_self_delta[std::size_t(l)]);
}

}  // namespace

template <class T>
OutputChanges output_changes(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x1,
                             const model::Targets<T>& y1, std::optional<MatrixView<const T>> x2,
                             const Options& options, bool per_layer, std::string_view progress_label) {
  const std::string call = "elasticity::output_changes";
  const std::string label(progress_label.empty() ? std::string_view("elasticity") : progress_label);
  check_options(options, call);
  if (options.loss != model::Loss::mse && options.loss != model::Loss::xent) throw InvalidArgument(call + ": unknown loss");
  spec.validate();
  if (params == nullptr) throw InvalidArgument(call + ": params is null");
  if (per_layer && options.form == Form::step)
    throw InvalidArgument(call + ": per-layer output changes need form ntk (the step form moves every layer at once)");
  detail::check_matrix(ctx, x1, call.c_str(), "x1");
  const index_t d0 = spec.inputs(), O = spec.outputs();
  if (x1.cols != d0)
    throw ShapeMismatch(call + ": x1 has " + std::to_string(x1.cols) + " columns, the network " + std::to_string(d0) +
                        " inputs");
  if (x1.rows == 0) throw InvalidArgument(call + ": x1 has no samples (no sources)");
  if (x2) {
    detail::check_matrix(ctx, *x2, call.c_str(), "x2");
    if (x2->cols != d0)
      throw ShapeMismatch(call + ": x2 has " + std::to_string(x2->cols) + " columns, the network " +
                          std::to_string(d0) + " inputs");
    if (x2->rows == 0) throw InvalidArgument(call + ": x2 has no samples (no targets)");
  }
  const index_t N1 = x1.rows;
  const bool labels = y1.has_labels();
  if (labels) {
    detail::check_vector(ctx, y1.labels, call.c_str(), "targets");
    if (y1.labels.size != N1)
      throw ShapeMismatch(call + ": targets has " + std::to_string(y1.labels.size) + " labels for " +
                          std::to_string(N1) + " sources (x1 rows)");
  } else {
    if (y1.values.data == nullptr) throw InvalidArgument(call + ": targets are empty (give values or labels)");
    detail::check_matrix(ctx, y1.values, call.c_str(), "targets");
    if (y1.values.rows != N1 || y1.values.cols != O)
      throw ShapeMismatch(call + ": targets must be " + detail::dims(N1, O) + " (one row per source, one column per "
                          "output), got " + detail::dims(y1.values.rows, y1.values.cols));
    if (options.loss == model::Loss::xent)
      throw InvalidArgument(call + ": loss xent needs class labels as targets, got values");
  }
  const bool same_set = !x2.has_value();
  const MatrixView<const T> xt = same_set ? x1 : *x2;
  const Dims d{N1, xt.rows, O, spec.num_params(), spec.layers(), d0};
  const Context host = Context::host();

  OutputChanges r;
  r.sources = N1;
  r.targets = d.n2;
  r.outputs = O;
  r.eta = options.eta;
  r.base1 = Array<double>(host, {N1, O});
  r.base2 = Array<double>(host, {d.n2, O});
  r.loss_grad = Array<double>(host, {N1, O});
  r.self_delta = Array<double>::zeros(host, {N1, O});
  r.delta = Array<double>(host, {N1, d.n2 * O});

  // Targets on the host.
  std::vector<double> values;
  std::vector<std::int64_t> lab;
  if (labels) {
    lab.resize(std::size_t(N1));
    copy<std::int64_t>(ctx, MatrixView<const std::int64_t>{y1.labels.data, N1, 1, y1.labels.stride, y1.labels.backend, y1.labels.device},
                       MatrixView<std::int64_t>{lab.data(), N1, 1, 1, Backend::host, 0});
    for (index_t i = 0; i < N1; ++i)
      if (lab[std::size_t(i)] < 0 || lab[std::size_t(i)] >= O)
        throw InvalidArgument(call + ": targets[" + std::to_string(i) + "] = " + std::to_string(lab[std::size_t(i)]) +
                              " is not a class of the network's " + std::to_string(O) + " outputs");
  } else {
    values.resize(std::size_t(N1 * O));
    std::vector<T> scratch;
    to_host_doubles<T>(ctx, y1.values, scratch, values.data());
    require_finite(values.data(), N1, O, call + ": targets", "the targets must be finite");
  }

  const std::vector<double> f1 = outputs_of<T>(ctx, spec, params, x1);
  const std::string bad_net = "the network's outputs must be finite (a diverged network?)";
  require_finite(f1.data(), N1, O, call + ": f(x1; w)", bad_net);
  std::copy(f1.begin(), f1.end(), r.base1.data());
  const double fwd = products(spec);
  r.flops += 2.0 * double(N1) * fwd;
  if (same_set) {
    std::copy(f1.begin(), f1.end(), r.base2.data());
  } else {
    const std::vector<double> f2 = outputs_of<T>(ctx, spec, params, xt);
    require_finite(f2.data(), d.n2, O, call + ": f(x2; w)", bad_net);
    std::copy(f2.begin(), f2.end(), r.base2.data());
    r.flops += 2.0 * double(d.n2) * fwd;
  }
  per_sample_loss_grad(options.loss, f1, values, lab, N1, O, r.loss_grad.data());

  if (per_layer)
    for (index_t l = 0; l < d.L; ++l) {
      r.layer_delta.emplace_back(host, Shape{N1, d.n2 * O});
      r.layer_self_delta.push_back(Array<double>::zeros(host, {N1, O}));
    }
  if (options.form == Form::step)
    step_form<T>(ctx, spec, params, x1, xt, same_set, options, d, label, r);
  else
    ntk_form<T>(ctx, spec, params, x1, xt, same_set, options, per_layer, d, label, r);
  return r;
}

namespace {

// Softmax of one point's logits f [O], with log-sum-exp.
struct Softmax {
  std::vector<double> p;
  double lse = 0;
};
Softmax softmax_of(const double* f, index_t O) {
  Softmax s;
  s.p.resize(std::size_t(O));
  double mx = f[0];
  for (index_t a = 1; a < O; ++a) mx = std::max(mx, f[a]);
  double z = 0;
  for (index_t a = 0; a < O; ++a) z += std::exp(f[a] - mx);
  s.lse = mx + std::log(z);
  for (index_t a = 0; a < O; ++a) s.p[std::size_t(a)] = std::exp(f[a] - s.lse);
  return s;
}

// expm1(x) - x without cancellation: its series for small |x|.
double expm1_minus_x(double x) {
  if (std::abs(x) >= 0.5) return std::expm1(x) - x;
  // x^2/2! (1 + x/3 (1 + x/4 (1 + ... x/17))): truncation below 1e-16 relative for |x| < 0.5.
  double t = 1;
  for (int n = 17; n >= 3; --n) t = 1 + x / double(n) * t;
  return 0.5 * x * x * t;
}

// The measures m(Delta) at one point (logits f, its softmax) for a change Delta [O].
struct Measure {
  Metric metric;
  Form form;
  index_t O;

  double operator()(const double* f, const Softmax& sm, const double* dlt, std::vector<double>& tmp) const {
    if (metric == Metric::abs) {
      double s = 0;
      for (index_t a = 0; a < O; ++a) s += dlt[a] * dlt[a];
      return std::sqrt(s);
    }
    const double* p = sm.p.data();
    // The change centred by its p-mean: softmax and KL are unchanged by a constant shift, and
    // centring keeps the small-step formulas free of cancellation.
    double c = 0;
    for (index_t a = 0; a < O; ++a) c += p[a] * dlt[a];
    double dmax = 0;
    for (index_t a = 0; a < O; ++a) dmax = std::max(dmax, std::abs(dlt[a] - c));
    if (form == Form::ntk) {
      if (metric == Metric::l2) {  // ||F Delta||_2, F = diag p - p p^T: the first-order change of p
        double s = 0;
        for (index_t a = 0; a < O; ++a) s += (p[a] * (dlt[a] - c)) * (p[a] * (dlt[a] - c));
        return std::sqrt(s);
      }
      // kl: 1/2 Delta^T F Delta, the leading term of KL(p || q) for small Delta.
      double s = 0;
      for (index_t a = 0; a < O; ++a) s += p[a] * (dlt[a] - c) * (dlt[a] - c);
      return 0.5 * s;
    }
    // Step form: q = softmax(f + Delta), exactly.
    tmp.resize(std::size_t(O));
    double* logq = tmp.data();
    const bool direct = dmax > 30 || metric == Metric::kl_compat;
    if (direct) {
      double mx = f[0] + dlt[0];
      for (index_t a = 1; a < O; ++a) mx = std::max(mx, f[a] + dlt[a]);
      double z = 0;
      for (index_t a = 0; a < O; ++a) z += std::exp(f[a] + dlt[a] - mx);
      const double lse = mx + std::log(z);
      for (index_t a = 0; a < O; ++a) logq[a] = f[a] + dlt[a] - lse;
    }
    if (metric == Metric::kl_compat) {  // mean_k q_k (log q_k - p_k): torch's kl_div(input=p, target=q)
      double s = 0;
      for (index_t a = 0; a < O; ++a) s += std::exp(logq[a]) * (logq[a] - p[a]);
      return s / double(O);
    }
    if (metric == Metric::l2) {
      double s = 0;
      if (direct) {
        for (index_t a = 0; a < O; ++a) s += (std::exp(logq[a]) - p[a]) * (std::exp(logq[a]) - p[a]);
      } else {
        // q_k - p_k = p_k (e_k - S) / (1 + S), e_k = expm1(Delta_k - c), S = sum_j p_j e_j.
        double S = 0;
        for (index_t a = 0; a < O; ++a) {
          logq[a] = std::expm1(dlt[a] - c);
          S += p[a] * logq[a];
        }
        for (index_t a = 0; a < O; ++a) {
          const double dq = p[a] * (logq[a] - S) / (1 + S);
          s += dq * dq;
        }
      }
      return std::sqrt(s);
    }
    // kl: KL(p || q) = log sum_k p_k e^{Delta_k - c} (c = sum p Delta) = log1p(sum_k p_k phi(Delta_k - c)),
    // phi(x) = e^x - 1 - x >= 0 (the first-order terms sum to zero): a sum of non-negative terms.
    if (direct) {
      double s = 0;
      for (index_t a = 0; a < O; ++a)
        if (p[a] > 0) s += p[a] * ((f[a] - sm.lse) - logq[a]);
      return std::max(s, 0.0);
    }
    double s = 0;
    for (index_t a = 0; a < O; ++a) s += p[a] * expm1_minus_x(dlt[a] - c);
    return std::log1p(s);
  }
};

}  // namespace

PairResult metrics(const OutputChanges& ch, Metric metric, Form form) {
  const std::string call = "elasticity::metrics";
  const index_t N1 = ch.sources, N2 = ch.targets, O = ch.outputs;
  if (N1 < 1 || N2 < 1 || O < 1) throw InvalidArgument(call + ": the output changes are empty");
  const auto need = [&](const Array<double>& a, index_t n, const char* name) {
    if (a.size() != n || (n > 0 && a.backend() != Backend::host))
      throw ShapeMismatch(call + ": " + name + " must hold " + std::to_string(n) + " host values, got " +
                          std::to_string(a.size()));
  };
  need(ch.base1, N1 * O, "base1");
  need(ch.base2, N2 * O, "base2");
  need(ch.loss_grad, N1 * O, "loss_grad");
  need(ch.self_delta, N1 * O, "self_delta");
  need(ch.delta, N1 * N2 * O, "delta");
  if (metric == Metric::automatic)
    throw InvalidArgument(call + ": metric auto must be resolved first (elasticity::resolve)");
  if (class_metric(metric) && O < 2)
    throw InvalidArgument(call + ": metric " + std::string(to_string(metric)) + " needs at least two outputs (classes), the network has " +
                          std::to_string(O));
  if (metric == Metric::kl_compat && form == Form::ntk)
    throw InvalidArgument(call + ": metric kl-compat has no ntk form; use form step");
  if (!class_metric(metric) && metric != Metric::abs) throw InvalidArgument(call + ": unknown metric");
  if (form != Form::step && form != Form::ntk) throw InvalidArgument(call + ": unknown form");
  const std::string hint = "the output changes must be finite";
  require_finite(ch.base1.data(), N1, O, call + ": base1", hint);
  require_finite(ch.base2.data(), N2, O, call + ": base2", hint);
  require_finite(ch.self_delta.data(), N1, O, call + ": self_delta", hint);
  require_finite(ch.delta.data(), N1, N2 * O, call + ": delta", hint);
  std::vector<char> unresolved(std::size_t(N1), 0);
  for (const index_t i : ch.unresolved_sources) {
    if (i < 0 || i >= N1)
      throw ShapeMismatch(call + ": unresolved_sources holds " + std::to_string(i) + ", not one of the " +
                          std::to_string(N1) + " sources");
    unresolved[std::size_t(i)] = 1;
  }
  const bool kernel_form = metric == Metric::abs && O == 1;
  if (kernel_form && !(ch.eta > 0)) throw InvalidArgument(call + ": eta of the output changes must be > 0 for S_ker");

  const Context host = Context::host();
  PairResult r;
  r.metric = metric;
  r.flops = ch.flops;
  r.s_rel = Array<double>(host, {N1, N2});
  if (kernel_form) r.s_ker = Array<double>(host, {N1, N2});
  r.self_change.assign(std::size_t(N1), 0.0);
  const bool soft = class_metric(metric);
  std::vector<Softmax> sm2(std::size_t(soft ? N2 : 0));
  for (index_t j = 0; j < (soft ? N2 : 0); ++j) sm2[std::size_t(j)] = softmax_of(ch.base2.data() + j * O, O);
  const Measure measure{metric, form, O};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<char> undefined(std::size_t(N1), 0);
  std::vector<char> bad(std::size_t(N1), 0);
  // Threads only where the pairs outweigh a fork/join.
#pragma omp parallel for schedule(dynamic, 4) if (N1 > 1 && N1 * N2 * O >= (index_t{1} << 14))
  for (index_t i = 0; i < N1; ++i) {
    std::vector<double> tmp;
    const double* f1 = ch.base1.data() + i * O;
    const double* sd = ch.self_delta.data() + i * O;
    const Softmax sm1 = soft ? softmax_of(f1, O) : Softmax{};
    const double self = measure(f1, sm1, sd, tmp);
    r.self_change[std::size_t(i)] = self;
    bool moved = false;
    for (index_t a = 0; a < O; ++a) moved = moved || sd[a] != 0;
    double* srow = r.s_rel.data() + i * N2;
    double* krow = kernel_form ? r.s_ker.data() + i * N2 : nullptr;
    if (!moved || self == 0 || !std::isfinite(self) || unresolved[std::size_t(i)]) {
      // No own change (e.g. a zero loss gradient), or one below the precision: no S_rel.
      undefined[std::size_t(i)] = 1;
      std::fill(srow, srow + N2, nan);
      if (krow) std::fill(krow, krow + N2, nan);
      continue;
    }
    const double* drow = ch.delta.data() + i * N2 * O;
    const double scale = kernel_form ? -ch.eta * ch.loss_grad.data()[i] : 0;
    for (index_t j = 0; j < N2; ++j) {
      const double m = measure(ch.base2.data() + j * O, soft ? sm2[std::size_t(j)] : sm1, drow + j * O, tmp);
      srow[j] = m / self;
      if (!std::isfinite(srow[j])) bad[std::size_t(i)] = 1;
      if (krow) krow[j] = drow[j] / scale;
    }
  }
  for (index_t i = 0; i < N1; ++i) {
    if (undefined[std::size_t(i)]) r.undefined_sources.push_back(i);
    if (unresolved[std::size_t(i)]) r.unresolved_sources.push_back(i);
    if (bad[std::size_t(i)])
      throw InvalidArgument(call + ": S_rel of source " + std::to_string(i) + " is not finite (its own change " +
                            num(r.self_change[std::size_t(i)]) + " is too small against a target's)");
  }
  return r;
}

template <class T>
PairResult pairwise(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x1,
                    const model::Targets<T>& y1, std::optional<MatrixView<const T>> x2, const Options& options) {
  const Metric metric = resolve(options, y1.has_labels());
  const OutputChanges changes = output_changes<T>(ctx, spec, params, x1, y1, x2, options, false);
  return metrics(changes, metric, options.form);
}

#define DS_INSTANTIATE(T)                                                                                          \
  template OutputChanges output_changes<T>(const Context&, const MlpSpec&, const T*,                \
                                                         MatrixView<const T>, const model::Targets<T>&,          \
                                                         std::optional<MatrixView<const T>>, const Options&, bool, \
                                                         std::string_view);                                      \
  template PairResult pairwise<T>(const Context&, const MlpSpec&, const T*, MatrixView<const T>,   \
                                                const model::Targets<T>&, std::optional<MatrixView<const T>>,    \
                                                const Options&);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace dynascope::elasticity
