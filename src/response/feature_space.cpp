// Feature-space measures of the hidden layers (docs/definitions.md): the singular values of the
// feature matrix and the effective rank and participation ratio they give, dead and duplicated
// (condensed) units, and the input-gradient norm. Everything is reduced in float64 on the host:
// the matrices involved are the activations [N, width] and a layer's weights [width, fan_in],
// which the forward pass produces anyway, and the Gram matrices are only [min(N, width)]^2 and
// [width, width]. A cuda context computes the forward and backward passes on the device and
// copies those tiles to the host.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../core/checks.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/response.hpp"

namespace dynascope::response {

using blas::Op;
using detail::check_matrix;
using detail::check_vector;

namespace {

// A host context for the float64 reductions: ctx itself when it is one (its thread count),
// otherwise a default host context.
Context host_of(const Context& ctx) { return ctx.is_host() ? ctx : Context::host(); }

// The rows x cols elements of a view on ctx's backend (any leading dimension) as host doubles.
template <class T>
std::vector<double> to_host_double(const Context& ctx, MatrixView<const T> v) {
  std::vector<T> stored(std::size_t(v.rows * v.cols));
  if (!stored.empty()) copy<T>(ctx, v, MatrixView<T>{stored.data(), v.rows, v.cols, v.cols});
  return std::vector<double>(stored.begin(), stored.end());
}

template <class T>
std::vector<double> to_host_double(const Context& ctx, VectorView<const T> v) {
  return to_host_double<T>(ctx, MatrixView<const T>{v.data, v.size, 1, v.stride, v.backend, v.device});
}

void require_finite(const std::vector<double>& h, index_t cols, const char* call, const std::string& name) {
  for (std::size_t i = 0; i < h.size(); ++i)
    if (!std::isfinite(h[i]))
      throw InvalidArgument(std::string(call) + ": " + name + " holds a non-finite value (" + std::to_string(h[i]) +
                            ") at row " + std::to_string(index_t(i) / cols) + ", column " +
                            std::to_string(index_t(i) % cols));
}

// Singular values of the host matrix h [n, w] (row-major, finite), descending: the square roots
// of the eigenvalues of the smaller Gram matrix (H H^T when n <= w, else H^T H), formed by syrk in
// float64. The Gram's own rounding leaves every eigenvalue uncertain by about max(n, w) eps
// lambda_max (the Gram's entries are sums of max(n, w) products, and the symmetric solver is
// backward stable), so eigenvalues below that level are rounding, not signal, and are reported as
// exact zeros: a rank-1 matrix has one non-zero singular value instead of min(n, w) - 1 tiny
// ones of size sqrt(eps) s_max, which would otherwise each add to the effective rank.
std::vector<double> singular_values_host(const Context& host, std::vector<double>& h, index_t n, index_t w) {
  const index_t m = std::min(n, w);
  if (m == 0) return {};
  std::vector<double> gram(static_cast<std::size_t>(m * m)), lambda(static_cast<std::size_t>(m));
  const MatrixView<const double> hv{h.data(), n, w, w};
  const MatrixView<double> g{gram.data(), m, m, m};
  blas::syrk<double>(host, n <= w ? Op::none : Op::trans, 1.0, hv, 0.0, g);
  lapack::syevd<double>(host, g, VectorView<double>{lambda.data(), m});
  const double top = std::max(0.0, lambda.back());
  const double floor = double(std::max(n, w)) * std::numeric_limits<double>::epsilon() * top;
  std::vector<double> s(static_cast<std::size_t>(m));
  for (index_t i = 0; i < m; ++i) {
    const double l = lambda[std::size_t(m - 1 - i)];  // ascending -> descending
    s[std::size_t(i)] = l > floor ? std::sqrt(l) : 0.0;
  }
  return s;
}

// Dead units of host activations a [n, w]: columns that are exactly zero in every row.
index_t count_dead_host(const std::vector<double>& a, index_t n, index_t w) {
  std::vector<char> alive(std::size_t(w), 0);
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < w; ++j)
      if (a[std::size_t(i * w + j)] != 0.0) alive[std::size_t(j)] = 1;
  return w - static_cast<index_t>(std::count(alive.begin(), alive.end(), char(1)));
}

// Duplicated units among the host rows u [w, k] (weights with the bias appended): rows are
// normalised, candidate pairs come from the float64 Gram (||u_j - u_k||^2 = 2 - 2 cos), and a
// candidate's distance is then recomputed from the difference itself, since 2 - 2 cos loses the
// digits of near-identical rows to cancellation (a distance below ~1e-8 cannot be read off it).
index_t count_duplicated_host(const Context& host, std::vector<double>& u, index_t w, index_t k, double tolerance) {
  std::vector<char> nonzero(std::size_t(w), 0);
  for (index_t j = 0; j < w; ++j) {
    double* r = u.data() + j * k;
    // Scaled by the largest entry first, so that the squares neither overflow nor underflow.
    double big = 0;
    for (index_t c = 0; c < k; ++c) big = std::max(big, std::abs(r[c]));
    if (big == 0) continue;
    double ss = 0;
    for (index_t c = 0; c < k; ++c) ss += (r[c] / big) * (r[c] / big);
    const double norm = big * std::sqrt(ss);
    for (index_t c = 0; c < k; ++c) r[c] /= norm;
    nonzero[std::size_t(j)] = 1;
  }
  if (w < 2) return 0;
  std::vector<double> gram(std::size_t(w * w));
  blas::syrk<double>(host, Op::none, 1.0, MatrixView<const double>{u.data(), w, k, k}, 0.0,
                     MatrixView<double>{gram.data(), w, w, w});
  // The Gram's rounding is a few eps per entry (unit rows); the slack keeps every true pair a
  // candidate, the exact distance decides.
  const double slack = 16.0 * double(k) * std::numeric_limits<double>::epsilon();
  const double bar = tolerance * tolerance + slack;
  index_t duplicated = 0;
  for (index_t j = 1; j < w; ++j) {
    if (!nonzero[std::size_t(j)]) continue;
    for (index_t i = 0; i < j; ++i) {
      if (!nonzero[std::size_t(i)] || 2.0 - 2.0 * gram[std::size_t(j * w + i)] > bar) continue;
      double d2 = 0;
      for (index_t c = 0; c < k; ++c) {
        const double d = u[std::size_t(j * k + c)] - u[std::size_t(i * k + c)];
        d2 += d * d;
      }
      if (std::sqrt(d2) <= tolerance) {
        ++duplicated;
        break;
      }
    }
  }
  return duplicated;
}

void check_tolerance(double tolerance, const char* call) {
  if (!std::isfinite(tolerance) || tolerance < 0)
    throw InvalidArgument(std::string(call) + ": the duplicate tolerance must be finite and >= 0, got " +
                          std::to_string(tolerance));
}

// Rows (units) of a layer's weights w [width, fan_in] with the bias b [width] (or none) appended,
// as host doubles [width, fan_in + (b given)].
template <class T>
std::vector<double> unit_rows(const Context& ctx, MatrixView<const T> w, VectorView<const T> b, index_t& cols) {
  const std::vector<double> wh = to_host_double<T>(ctx, w);
  const bool has_b = b.size > 0;
  const std::vector<double> bh = has_b ? to_host_double<T>(ctx, b) : std::vector<double>{};
  cols = w.cols + (has_b ? 1 : 0);
  std::vector<double> u(std::size_t(w.rows * cols));
  for (index_t j = 0; j < w.rows; ++j) {
    std::copy_n(wh.begin() + j * w.cols, w.cols, u.begin() + j * cols);
    if (has_b) u[std::size_t(j * cols + w.cols)] = bh[std::size_t(j)];
  }
  return u;
}

}  // namespace

// Zero singular values (a zero or empty matrix: a layer whose features span nothing) give 0, the
// rank of the zero matrix; every non-zero matrix gives a value in [1, min(N, width)].
double effective_rank(std::span<const double> singular_values) {
  double sum = 0;
  for (std::size_t i = 0; i < singular_values.size(); ++i) {
    const double s = singular_values[i];
    if (!std::isfinite(s) || s < 0)
      throw InvalidArgument("effective_rank: singular value " + std::to_string(i) + " is " + std::to_string(s) +
                            " (expected finite and >= 0)");
    sum += s;
  }
  if (sum == 0) return 0.0;
  double entropy = 0;
  for (const double s : singular_values) {
    const double p = s / sum;
    if (p > 0) entropy -= p * std::log(p);
  }
  return std::exp(entropy);
}

// As effective_rank: 0 for zero singular values, otherwise in [1, min(N, width)].
double participation_ratio(std::span<const double> singular_values) {
  double top = 0;
  for (std::size_t i = 0; i < singular_values.size(); ++i) {
    const double s = singular_values[i];
    if (!std::isfinite(s) || s < 0)
      throw InvalidArgument("participation_ratio: singular value " + std::to_string(i) + " is " +
                            std::to_string(s) + " (expected finite and >= 0)");
    top = std::max(top, s);
  }
  if (top == 0) return 0.0;
  // Scaled by the largest value: s^4 of large singular values would overflow.
  double s2 = 0, s4 = 0;
  for (const double s : singular_values) {
    const double t = (s / top) * (s / top);
    s2 += t;
    s4 += t * t;
  }
  return s2 * s2 / s4;
}

template <class T>
std::vector<double> singular_values(const Context& ctx, MatrixView<const T> h) {
  check_matrix(ctx, h, "singular_values", "h");
  std::vector<double> hh = to_host_double<T>(ctx, h);
  require_finite(hh, std::max<index_t>(h.cols, 1), "singular_values", "h");
  return singular_values_host(host_of(ctx), hh, h.rows, h.cols);
}

template <class T>
index_t count_dead(const Context& ctx, MatrixView<const T> a) {
  if (a.rows == 0)
    throw InvalidArgument("count_dead: a has no rows (samples); a unit is dead when it is zero on every sample");
  check_matrix(ctx, a, "count_dead", "a");
  return count_dead_host(to_host_double<T>(ctx, a), a.rows, a.cols);
}

template <class T>
index_t count_duplicated(const Context& ctx, MatrixView<const T> w, VectorView<const T> b, double tolerance) {
  check_matrix(ctx, w, "count_duplicated", "w");
  check_vector(ctx, b, "count_duplicated", "b");
  check_tolerance(tolerance, "count_duplicated");
  if (b.size != 0 && b.size != w.rows)
    throw ShapeMismatch("count_duplicated: b must have one entry per row of w (" + std::to_string(w.rows) +
                        ") or none, got " + std::to_string(b.size));
  index_t cols = 0;
  std::vector<double> u = unit_rows<T>(ctx, w, b, cols);
  require_finite(u, std::max<index_t>(cols, 1), "count_duplicated", "(w, b)");
  return count_duplicated_host(host_of(ctx), u, w.rows, cols, tolerance);
}

template <class T>
FeatureSpace feature_space(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x,
                           const FeatureOptions& options) {
  spec.validate();
  check_tolerance(options.duplicate_tolerance, "feature_space");
  const index_t n = x.rows, L = spec.layers(), d0 = spec.inputs(), O = spec.outputs();
  if (n < 1) throw InvalidArgument("feature_space: x has no rows (samples)");
  check_matrix(ctx, x, n, d0, "feature_space", "x");
  if (params == nullptr) throw InvalidArgument("feature_space: params is null");

  // Engine buffers per sample: z, a and O blocks of delta for every layer, the O cotangent
  // blocks and the O input cotangents; the tile keeps them within the workspace budget. The
  // activations themselves are gathered on the host (they are what the measures are of).
  index_t per_sample = O * (O + d0);
  for (index_t l = 1; l <= L; ++l) per_sample += (2 + O) * spec.widths[std::size_t(l)];
  const index_t budget_rows = static_cast<index_t>(ctx.workspace_budget() / (sizeof(T) * std::size_t(per_sample)));
  if (budget_rows < 1)
    throw OutOfMemory("feature_space: the workspace budget of " + std::to_string(ctx.workspace_budget()) +
                      " bytes cannot hold the buffers of one sample (" +
                      std::to_string(per_sample * index_t(sizeof(T))) + " bytes)");
  const index_t tile = std::min(n, budget_rows);

  std::vector<std::vector<double>> acts(std::size_t(std::max<index_t>(L - 1, 0)));
  for (index_t l = 1; l < L; ++l) acts[std::size_t(l - 1)].resize(std::size_t(n * spec.widths[std::size_t(l)]));

  model::MlpEngine<T> engine(ctx, spec);
  Array<T> cot, grads;
  index_t cot_rows = -1;
  double norm_sum = 0;
  for (index_t r0 = 0; r0 < n; r0 += tile) {
    const index_t m = std::min(tile, n - r0);
    engine.forward(params, x.block(r0, 0, m, d0));
    for (index_t l = 1; l < L; ++l) {
      const std::vector<double> a = to_host_double<T>(ctx, engine.activation(l));
      const index_t w = spec.widths[std::size_t(l)];
      std::copy(a.begin(), a.end(), acts[std::size_t(l - 1)].begin() + r0 * w);
    }
    // The input Jacobian J_n [O, d0] row by row: cotangent block k holds e_k for every sample,
    // so input cotangent row k*m + s is row k of J_s.
    if (cot_rows != m) {
      std::vector<T> c(std::size_t(O * m * O), T(0));
      for (index_t k = 0; k < O; ++k)
        for (index_t s = 0; s < m; ++s) c[std::size_t((k * m + s) * O + k)] = T(1);
      cot = Array<T>::from_host(ctx, {O * m, O}, c);
      grads = Array<T>(ctx, {O * m, d0});
      cot_rows = m;
    }
    engine.backprop(params, cot.matrix(), O);
    engine.input_grads(params, grads.matrix());
    const std::vector<T> g = grads.to_vector(ctx);
    for (index_t s = 0; s < m; ++s) {
      double f2 = 0;
      for (index_t k = 0; k < O; ++k) {
        const T* row = g.data() + (k * m + s) * d0;
        for (index_t j = 0; j < d0; ++j) f2 += double(row[j]) * double(row[j]);
      }
      norm_sum += std::sqrt(f2);
    }
    ctx.progress("feature space: samples", r0 + m, n);
  }

  FeatureSpace out;
  out.input_grad_norm = norm_sum / double(n);
  const Context host = host_of(ctx);
  for (index_t l = 1; l < L; ++l) {
    const index_t w = spec.widths[std::size_t(l)];
    std::vector<double>& a = acts[std::size_t(l - 1)];
    LayerFeatures f;
    f.layer = l;
    f.width = w;
    f.dead = count_dead_host(a, n, w);
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!std::isfinite(a[i]))
        throw InvalidArgument("feature_space: the activations of hidden layer " + std::to_string(l) +
                              " hold a non-finite value (sample " + std::to_string(index_t(i) / w) + ", unit " +
                              std::to_string(index_t(i) % w) + ")");
    const std::vector<double> s = singular_values_host(host, a, n, w);
    f.effective_rank = effective_rank(s);
    f.participation_ratio = participation_ratio(s);
    // Layer l's incoming weights W_l [d_l, d_{l-1}] (row-major, torch's [out, in]) and bias.
    const index_t fan_in = spec.fan_in(l - 1);
    const MatrixView<const T> wv{params + spec.weight_offset(l - 1), w, fan_in, fan_in, ctx.backend(),
                                 ctx.is_cuda() ? ctx.device() : 0};
    const VectorView<const T> bv{spec.bias[std::size_t(l - 1)] ? params + spec.bias_offset(l - 1) : nullptr,
                                 spec.bias[std::size_t(l - 1)] ? w : 0, 1, ctx.backend(),
                                 ctx.is_cuda() ? ctx.device() : 0};
    index_t cols = 0;
    std::vector<double> u = unit_rows<T>(ctx, wv, bv, cols);
    require_finite(u, std::max<index_t>(cols, 1), "feature_space",
                   "(W, b) of hidden layer " + std::to_string(l) + " (one row per unit)");
    f.duplicated = count_duplicated_host(host, u, w, cols, options.duplicate_tolerance);
    out.layers.push_back(f);
  }
  return out;
}

template std::vector<double> singular_values<float>(const Context&, MatrixView<const float>);
template std::vector<double> singular_values<double>(const Context&, MatrixView<const double>);
template index_t count_dead<float>(const Context&, MatrixView<const float>);
template index_t count_dead<double>(const Context&, MatrixView<const double>);
template index_t count_duplicated<float>(const Context&, MatrixView<const float>, VectorView<const float>, double);
template index_t count_duplicated<double>(const Context&, MatrixView<const double>, VectorView<const double>, double);
template FeatureSpace feature_space<float>(const Context&, const model::MlpSpec&, const float*, MatrixView<const float>,
                                           const FeatureOptions&);
template FeatureSpace feature_space<double>(const Context&, const model::MlpSpec&, const double*,
                                            MatrixView<const double>, const FeatureOptions&);

}  // namespace dynascope::response
