// Thick-restart block Lanczos (a Krylov-Schur formulation): the basis V is kept with full
// reorthogonalization (classical Gram-Schmidt twice, DGKS), the projected matrix H = V^T A V is
// kept densely in float64, and a restart keeps the wanted Ritz vectors plus the residual block.
//   A V_j = V_j H_j + Q R e_j^T,   V_j^T V_j = I,   Q the newest (residual) block.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "dynascope/blas.hpp"
#include "dynascope/random.hpp"
#include "dynascope/spectra.hpp"

namespace dynascope::linalg {

using blas::Op;

Which parse_which(const std::string& t) {
  if (t == "largest") return Which::largest;
  if (t == "smallest") return Which::smallest;
  if (t == "magnitude") return Which::magnitude;
  throw InvalidArgument("--which: expected largest, smallest or magnitude, got '" + t + "'");
}
const char* to_string(Which w) noexcept {
  switch (w) {
    case Which::largest: return "largest";
    case Which::smallest: return "smallest";
    case Which::magnitude: return "magnitude";
  }
  return "unknown";
}

template <class T>
void check_symmetric(MatrixView<const T> a, double tol) {
  if (a.rows != a.cols)
    throw ShapeMismatch("the matrix must be square, got " + std::to_string(a.rows) + "x" + std::to_string(a.cols));
  if (a.backend != Backend::host) throw InvalidArgument("check_symmetric: needs host memory");
  double mx = 0;
  for (index_t i = 0; i < a.rows; ++i)
    for (index_t j = 0; j < a.cols; ++j) {
      const double v = double(a(i, j));
      if (!std::isfinite(v))
        throw InvalidArgument("the matrix holds a non-finite value at (" + std::to_string(i) + ", " + std::to_string(j) + ")");
      mx = std::max(mx, std::abs(v));
    }
  for (index_t i = 0; i < a.rows; ++i)
    for (index_t j = i + 1; j < a.cols; ++j)
      if (std::abs(double(a(i, j)) - double(a(j, i))) > tol * std::max(mx, 1e-300))
        throw InvalidArgument("the matrix is not symmetric: entries (" + std::to_string(i) + ", " + std::to_string(j) + ") = " +
                              std::to_string(double(a(i, j))) + " and (" + std::to_string(j) + ", " + std::to_string(i) +
                              ") = " + std::to_string(double(a(j, i))));
}

namespace {

// Host copies of small device results.
template <class T>
std::vector<double> to_host_doubles(const Context& ctx, MatrixView<const T> m) {
  std::vector<T> h(static_cast<std::size_t>(m.rows * m.cols));
  copy(ctx, m, MatrixView<T>{h.data(), m.rows, m.cols, m.cols, Backend::host});
  return std::vector<double>(h.begin(), h.end());
}
template <class T>
void from_host_doubles(const Context& ctx, const std::vector<double>& v, MatrixView<T> m) {
  std::vector<T> h(v.begin(), v.end());
  copy(ctx, MatrixView<const T>{h.data(), m.rows, m.cols, m.cols, Backend::host}, m);
}

// Order in which eigenvalues are wanted.
std::vector<index_t> wanted_order(const std::vector<double>& theta, Which which) {
  std::vector<index_t> idx(theta.size());
  std::iota(idx.begin(), idx.end(), index_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](index_t a, index_t b) {
    const double x = theta[std::size_t(a)], y = theta[std::size_t(b)];
    switch (which) {
      case Which::largest: return x > y;
      case Which::smallest: return x < y;
      case Which::magnitude: return std::abs(x) > std::abs(y);
    }
    return false;
  });
  return idx;
}

// Applies the operator in chunks that respect its max_block.
template <class T>
void apply_blocks(LinearOperator<T>& op, MatrixView<const T> x, MatrixView<T> y, index_t& matvecs) {
  const index_t mb = op.max_block() > 0 ? op.max_block() : x.rows;
  for (index_t r = 0; r < x.rows; r += mb) {
    const index_t k = std::min(mb, x.rows - r);
    op.apply(x.block(r, 0, k, x.cols), y.block(r, 0, k, y.cols));
  }
  matvecs += x.rows;
}

// y -= V^T (V y) twice for the rows of W against the rows of V; returns the accumulated
// coefficients C [rows(V), rows(W)] in float64.
template <class T>
std::vector<double> cgs2(const Context& ctx, MatrixView<const T> v, MatrixView<T> w, Array<T>& scratch) {
  const index_t nv = v.rows, nw = w.rows;
  std::vector<double> total(static_cast<std::size_t>(nv * nw), 0.0);
  if (nv == 0) return total;
  if (scratch.size() < nv * nw) scratch = Array<T>(ctx, {nv * nw});
  MatrixView<T> c{scratch.data(), nv, nw, nw, ctx.backend()};
  for (int pass = 0; pass < 2; ++pass) {
    blas::gemm<T>(ctx, Op::none, Op::trans, T(1), v, w, T(0), c);            // C = V W^T
    blas::gemm<T>(ctx, Op::trans, Op::none, T(-1), c, v, T(1), w);            // W -= C^T V
    const auto h = to_host_doubles<T>(ctx, c);
    for (std::size_t i = 0; i < h.size(); ++i) total[i] += h[i];
  }
  return total;
}

// Orthonormal rows Q spanning W's rows and orthogonal to V (W must already be orthogonal to V);
// returns R with W = R^T Q ... as coefficients R[i][c] = q_i . w_c (float64, [nw, nw]).
template <class T>
std::vector<double> orthonormal_block(const Context& ctx, MatrixView<const T> v, MatrixView<T> w, Array<T>& scratch,
                                      Array<T>& wcopy, const random::Stream& fallback) {
  const index_t nw = w.rows, n = w.cols;
  if (wcopy.size() < nw * n) wcopy = Array<T>(ctx, {nw * n});
  MatrixView<T> w0{wcopy.data(), nw, n, n, ctx.backend()};
  copy(ctx, MatrixView<const T>(w), w0);
  // Rows of W that vanished (an invariant subspace was found) are replaced by random directions,
  // so that Q stays a basis; their coupling coefficients come out as ~0 below.
  for (index_t i = 0; i < nw; ++i) {
    const double norm = double(blas::nrm2<T>(ctx, MatrixView<const T>(w).row(i)));
    if (!(norm > 0) || !std::isfinite(norm)) {
      random::fill_normal<T>(ctx, {fallback.seed, fallback.stream, fallback.step + static_cast<std::uint32_t>(i)}, w.row(i));
    }
  }
  lapack::orthonormalize_rows<T>(ctx, w);
  // Householder QR of a (nearly) rank-deficient block may return directions that are not
  // orthogonal to V: project once more and re-orthonormalize.
  cgs2<T>(ctx, v, w, scratch);
  lapack::orthonormalize_rows<T>(ctx, w);
  if (scratch.size() < nw * nw) scratch = Array<T>(ctx, {std::max<index_t>(nw * nw, scratch.size())});
  MatrixView<T> r{scratch.data(), nw, nw, nw, ctx.backend()};
  blas::gemm<T>(ctx, Op::none, Op::trans, T(1), MatrixView<const T>(w), MatrixView<const T>(w0), T(0), r);  // q_i . w_c
  return to_host_doubles<T>(ctx, r);
}

template <class T>
EigenResult<T> dense_eigsh(LinearOperator<T>& op, const LanczosOptions& o) {
  const Context& ctx = op.context();
  const index_t n = op.size(), k = o.k;
  EigenResult<T> r;
  r.method = "dense";
  r.iterations = 1;
  Array<T> a(ctx, {n, n});
  if (auto* dense = dynamic_cast<DenseOperator<T>*>(&op)) {
    copy(ctx, dense->matrix(), a.matrix());
  } else {
    // Columns of A from the identity, in blocks.
    Array<T> eye = Array<T>::zeros(ctx, {n, n});
    std::vector<T> ones_diag(static_cast<std::size_t>(n * n), T(0));
    for (index_t i = 0; i < n; ++i) ones_diag[std::size_t(i * n + i)] = T(1);
    detail::copy_bytes(ctx, eye.data(), eye.backend(), ones_diag.data(), Backend::host, eye.bytes());
    apply_blocks<T>(op, eye.matrix(), a.matrix(), r.matvecs);
  }
  Array<T> w(ctx, {n});
  lapack::syevd<T>(ctx, a.matrix(), w.vector());
  const auto wh = to_host_doubles<T>(ctx, MatrixView<const T>{w.data(), 1, n, n, ctx.backend()});
  const auto order = wanted_order(wh, o.which);
  r.vectors = Array<T>(ctx, {k, n});
  for (index_t i = 0; i < k; ++i) {
    const index_t src = order[std::size_t(i)];
    r.values.push_back(wh[std::size_t(src)]);
    copy(ctx, MatrixView<const T>(a.matrix().block(src, 0, 1, n)), r.vectors.matrix().block(i, 0, 1, n));
  }
  return r;
}

}  // namespace

template <class T>
EigenResult<T> eigsh(LinearOperator<T>& op, const LanczosOptions& o, std::optional<MatrixView<const T>> start) {
  const Context& ctx = op.context();
  const index_t n = op.size(), k = o.k, b = o.block;
  if (k < 1 || k > n) throw InvalidArgument("eigsh: k must be in [1, " + std::to_string(n) + "], got " + std::to_string(k));
  if (b < 1) throw InvalidArgument("eigsh: block size must be >= 1");
  if (!(o.tol > 0)) throw InvalidArgument("eigsh: tol must be positive");
  if (o.max_restarts < 0) throw InvalidArgument("eigsh: max_restarts must be >= 0");
  index_t m = o.subspace > 0 ? o.subspace : std::max<index_t>(2 * k + 1, 20) + b;
  m = std::max(m, k + 2 * b);
  const bool too_small = m + b > n;
  EigenResult<T> r;
  double anorm = 0;  // ||A|| estimate: the largest |Ritz value| seen
  if (o.method == EigenMethod::dense || too_small || (o.method == EigenMethod::automatic && n <= o.dense_below)) {
    r = dense_eigsh<T>(op, o);
  } else {
    // ---- thick-restart block Lanczos ----
    const index_t cap = m + b;
    Array<T> v(ctx, {cap, n}), wbuf(ctx, {b, n}), tmp(ctx, {m, n}), scratch(ctx, {cap * b}), wcopy(ctx, {b * n});
    std::vector<double> h(static_cast<std::size_t>(cap * cap), 0.0);
    auto H = [&](index_t i, index_t j) -> double& { return h[std::size_t(i * cap + j)]; };
    const double eps23 = std::pow(std::numeric_limits<double>::epsilon(), 2.0 / 3.0);
    const double unit_floor = 16.0 * double(std::numeric_limits<T>::epsilon());
    std::uint32_t step = 0;
    // Start block: random, or the warm-start rows summed into b groups.
    MatrixView<T> v0 = v.matrix().block(0, 0, b, n);
    random::fill_normal<T>(ctx, {o.seed, 0x6c616e63u, step++}, VectorView<T>{v0.data, b * n, 1, ctx.backend()});
    if (start && start->rows > 0) {
      if (start->cols != n) throw ShapeMismatch("eigsh: start vectors must have " + std::to_string(n) + " columns");
      // Small random admixture keeps every direction reachable even from exact eigenvectors.
      blas::scal<T>(ctx, T(1e-3), VectorView<T>{v0.data, b * n, 1, ctx.backend()});
      for (index_t i = 0; i < start->rows; ++i)
        blas::axpy<T>(ctx, T(1), start->row(i), v0.row(i % b));
    }
    lapack::orthonormalize_rows<T>(ctx, v0);
    index_t j = 0;  // closed basis vectors; V[j : j+b] is the active block
    std::vector<double> theta, s_mat;
    std::vector<index_t> order;
    index_t nconv = 0, restarts = 0, jr = 0;
    std::vector<double> res_est;
    while (true) {
      // Expansion: W = A V_active, orthogonalized against all of V.
      MatrixView<T> active = v.matrix().block(j, 0, b, n);
      MatrixView<T> w = wbuf.matrix();
      apply_blocks<T>(op, active, w, r.matvecs);
      const auto c = cgs2<T>(ctx, v.matrix().block(0, 0, j + b, n), w, scratch);
      for (index_t i = 0; i < j + b; ++i)
        for (index_t q = 0; q < b; ++q) H(i, j + q) = c[std::size_t(i * b + q)];
      const auto rr = orthonormal_block<T>(ctx, v.matrix().block(0, 0, j + b, n), w, scratch, wcopy,
                                           {o.seed, 0x64656672u, step++});
      for (index_t i = 0; i < b; ++i)
        for (index_t q = 0; q < b; ++q) H(j + b + i, j + q) = rr[std::size_t(i * b + q)];
      copy(ctx, MatrixView<const T>(w), v.matrix().block(j + b, 0, b, n));
      j += b;
      if (j + b <= m) continue;

      // Rayleigh-Ritz on H_j (symmetrized), residual estimates from the coupling block.
      jr = j;
      std::vector<double> hs(static_cast<std::size_t>(j * j));
      for (index_t p = 0; p < j; ++p)
        for (index_t q = 0; q < j; ++q) hs[std::size_t(p * j + q)] = 0.5 * (H(p, q) + H(q, p));
      theta.assign(std::size_t(j), 0.0);
      Context host = Context::host();
      lapack::syevd<double>(host, {hs.data(), j, j, j}, {theta.data(), j, 1});
      s_mat = hs;  // row i = eigenvector of theta[i]
      order = wanted_order(theta, o.which);
      for (double t : theta) anorm = std::max(anorm, std::abs(t));
      res_est.assign(std::size_t(k), 0.0);
      nconv = 0;
      bool prefix = true;
      for (index_t i = 0; i < k; ++i) {
        const index_t src = order[std::size_t(i)];
        double rn = 0;
        for (index_t q = 0; q < b; ++q) {
          double sum = 0;
          for (index_t p = 0; p < j; ++p) sum += H(j + q, p) * s_mat[std::size_t(src * j + p)];
          rn += sum * sum;
        }
        res_est[std::size_t(i)] = std::sqrt(rn);
        const bool ok = res_est[std::size_t(i)] <=
                        std::max(o.tol * std::max(eps23, std::abs(theta[std::size_t(src)])), unit_floor * anorm);
        prefix = prefix && ok;
        nconv += prefix ? 1 : 0;
      }
      ctx.progress("lanczos", nconv, k);
      if (nconv >= k || restarts >= o.max_restarts) break;

      // Restart: keep p wanted Ritz vectors and the residual block.
      const index_t p = std::min(m - b, std::max(k + b, k + (m - k) / 2 + nconv / 2));
      std::vector<double> sel(static_cast<std::size_t>(p * j));
      for (index_t i = 0; i < p; ++i)
        for (index_t q = 0; q < j; ++q) sel[std::size_t(i * j + q)] = s_mat[std::size_t(order[std::size_t(i)] * j + q)];
      Array<T> sdev(ctx, {p, j});
      from_host_doubles<T>(ctx, sel, sdev.matrix());
      MatrixView<T> keep = tmp.matrix().block(0, 0, p, n);
      blas::gemm<T>(ctx, Op::none, Op::none, T(1), MatrixView<const T>(sdev.matrix()), MatrixView<const T>(v.matrix().block(0, 0, j, n)),
                    T(0), keep);
      copy(ctx, MatrixView<const T>(v.matrix().block(j, 0, b, n)), v.matrix().block(p, 0, b, n));  // residual block
      copy(ctx, MatrixView<const T>(keep), v.matrix().block(0, 0, p, n));
      // H: diag(theta_sel) and the coupling of the residual block to the kept Ritz vectors.
      std::vector<double> coupling(static_cast<std::size_t>(b * p), 0.0);
      for (index_t q = 0; q < b; ++q)
        for (index_t i = 0; i < p; ++i) {
          double sum = 0;
          for (index_t t = 0; t < j; ++t) sum += H(j + q, t) * sel[std::size_t(i * j + t)];
          coupling[std::size_t(q * p + i)] = sum;
        }
      std::fill(h.begin(), h.end(), 0.0);
      for (index_t i = 0; i < p; ++i) H(i, i) = theta[std::size_t(order[std::size_t(i)])];
      for (index_t q = 0; q < b; ++q)
        for (index_t i = 0; i < p; ++i) {
          H(p + q, i) = coupling[std::size_t(q * p + i)];
          H(i, p + q) = coupling[std::size_t(q * p + i)];
        }
      j = p;
      ++restarts;
    }
    // Ritz vectors of the wanted k from the last Rayleigh-Ritz.
    r.method = "lanczos";
    r.iterations = restarts;
    std::vector<double> sel(static_cast<std::size_t>(k * jr));
    for (index_t i = 0; i < k; ++i) {
      const index_t src = order[std::size_t(i)];
      r.values.push_back(theta[std::size_t(src)]);
      for (index_t q = 0; q < jr; ++q) sel[std::size_t(i * jr + q)] = s_mat[std::size_t(src * jr + q)];
    }
    Array<T> sdev(ctx, {k, jr});
    from_host_doubles<T>(ctx, sel, sdev.matrix());
    r.vectors = Array<T>(ctx, {k, n});
    blas::gemm<T>(ctx, Op::none, Op::none, T(1), MatrixView<const T>(sdev.matrix()), MatrixView<const T>(v.matrix().block(0, 0, jr, n)),
                  T(0), r.vectors.matrix());
    r.residuals = res_est;
  }
  // Honest residuals ||A u - lambda u|| (one more application), and convergence against them.
  if (o.true_residuals || r.method == "dense") {
    Array<T> au(ctx, {k, n});
    apply_blocks<T>(op, r.vectors.matrix(), au.matrix(), r.matvecs);
    r.residuals.assign(std::size_t(k), 0.0);
    for (index_t i = 0; i < k; ++i) {
      blas::axpy<T>(ctx, T(-r.values[std::size_t(i)]), MatrixView<const T>(r.vectors.matrix()).row(i), au.matrix().row(i));
      r.residuals[std::size_t(i)] = double(blas::nrm2<T>(ctx, MatrixView<const T>(au.matrix()).row(i)));
    }
  }
  // Converged: the residual meets the criterion, which is never asked to go below the working
  // precision of T (16 eps_T ||A||, ||A|| estimated by the largest Ritz value: no
  // residual below the rounding of A u means anything, and float32 cannot resolve more).
  const double eps23 = std::pow(std::numeric_limits<double>::epsilon(), 2.0 / 3.0);
  for (double val : r.values) anorm = std::max(anorm, std::abs(val));
  const double precision_floor = 16.0 * double(std::numeric_limits<T>::epsilon()) * anorm;
  r.converged.assign(std::size_t(k), false);
  r.all_converged = true;
  for (index_t i = 0; i < k; ++i) {
    const double bar = std::max(o.tol * std::max(eps23, std::abs(r.values[std::size_t(i)])), precision_floor);
    const bool ok = r.method == "dense" || r.residuals[std::size_t(i)] <= bar;
    r.converged[std::size_t(i)] = ok;
    r.all_converged = r.all_converged && ok;
  }
  return r;
}

// ---- stochastic Lanczos quadrature ----
template <class T>
SpectralDensity slq(LinearOperator<T>& op, const SlqOptions& o) {
  const Context& ctx = op.context();
  const index_t n = op.size(), nv = o.probes;
  const index_t m = std::min(o.steps, n);
  if (o.steps < 1 || nv < 1) throw InvalidArgument("slq: steps and probes must be >= 1");
  if (o.grid < 2) throw InvalidArgument("slq: the grid needs at least 2 points");
  SpectralDensity out;
  // Each probe's basis, [nv, m, n]; all probes advance together (one block apply per step).
  Array<T> basis(ctx, {nv * m, n}), cur(ctx, {nv, n}), w(ctx, {nv, n}), scratch(ctx, {m});
  random::fill_rademacher<T>(ctx, {o.seed, 0x736c71u, 0}, VectorView<T>{cur.data(), nv * n, 1, ctx.backend()});
  blas::scal<T>(ctx, T(1.0 / std::sqrt(double(n))), VectorView<T>{cur.data(), nv * n, 1, ctx.backend()});
  std::vector<std::vector<double>> alpha(static_cast<std::size_t>(nv)), beta(static_cast<std::size_t>(nv));
  std::vector<index_t> len(std::size_t(nv), m);
  for (index_t t = 0; t < m; ++t) {
    for (index_t p = 0; p < nv; ++p) copy(ctx, MatrixView<const T>(cur.matrix().block(p, 0, 1, n)), basis.matrix().block(p * m + t, 0, 1, n));
    apply_blocks<T>(op, cur.matrix(), w.matrix(), out.matvecs);
    for (index_t p = 0; p < nv; ++p) {
      if (t >= len[std::size_t(p)]) continue;
      MatrixView<T> wp = w.matrix().block(p, 0, 1, n);
      const double a = double(blas::dot<T>(ctx, MatrixView<const T>(wp).row(0), MatrixView<const T>(cur.matrix()).row(p)));
      alpha[std::size_t(p)].push_back(a);
      // Full reorthogonalization against this probe's basis (CGS twice).
      cgs2<T>(ctx, MatrixView<const T>(basis.matrix().block(p * m, 0, t + 1, n)), wp, scratch);
      const double bn = double(blas::nrm2<T>(ctx, MatrixView<const T>(wp).row(0)));
      if (t + 1 < m) {
        if (!(bn > 1e-12 * std::max(1.0, std::abs(a)))) {
          len[std::size_t(p)] = t + 1;  // invariant subspace: the quadrature is exact already
          continue;
        }
        beta[std::size_t(p)].push_back(bn);
        blas::scal<T>(ctx, T(1.0 / bn), wp.row(0));
        copy(ctx, MatrixView<const T>(wp), cur.matrix().block(p, 0, 1, n));
      }
    }
  }
  // Nodes and weights: eigen-decomposition of each tridiagonal T_m.
  double lo = 1e300, hi = -1e300;
  std::vector<double> trace_samples;
  for (index_t p = 0; p < nv; ++p) {
    const index_t L = len[std::size_t(p)];
    std::vector<double> d(alpha[std::size_t(p)].begin(), alpha[std::size_t(p)].begin() + L);
    std::vector<double> e(std::size_t(std::max<index_t>(L - 1, 1)), 0.0);
    for (index_t i = 0; i + 1 < L; ++i) e[std::size_t(i)] = beta[std::size_t(p)][std::size_t(i)];
    std::vector<double> z(static_cast<std::size_t>(L * L));
    lapack::stev({d.data(), L, 1}, {e.data(), L - 1, 1}, {z.data(), L, L, L});
    std::vector<double> tau(static_cast<std::size_t>(L));
    double quad = 0;
    for (index_t i = 0; i < L; ++i) {
      tau[std::size_t(i)] = z[std::size_t(i * L)] * z[std::size_t(i * L)];  // (first component of the Ritz vector)^2
      quad += tau[std::size_t(i)] * d[std::size_t(i)];
      lo = std::min(lo, d[std::size_t(i)]);
      hi = std::max(hi, d[std::size_t(i)]);
    }
    trace_samples.push_back(double(n) * quad);
    out.nodes.push_back(d);
    out.weights.push_back(tau);
  }
  double mean = 0;
  for (double v : trace_samples) mean += v;
  mean /= double(nv);
  double var = 0;
  for (double v : trace_samples) var += (v - mean) * (v - mean);
  out.trace_estimate = mean;
  out.trace_stderr = nv > 1 ? std::sqrt(var / double(nv - 1) / double(nv)) : 0.0;
  const double range = hi - lo;
  out.sigma2 = o.sigma2 > 0 ? o.sigma2 : 1e-5 * std::max(1.0, range);
  const double sigma = std::sqrt(out.sigma2), pad = std::max(5 * sigma, 0.01 * range);
  const double g0 = lo - pad, g1 = hi + pad;
  out.grid.resize(std::size_t(o.grid));
  out.density.assign(std::size_t(o.grid), 0.0);
  const double norm = 1.0 / (double(nv) * std::sqrt(2 * 3.141592653589793 * out.sigma2));
  for (index_t g = 0; g < o.grid; ++g) {
    const double x = g0 + (g1 - g0) * double(g) / double(o.grid - 1);
    out.grid[std::size_t(g)] = x;
    double s = 0;
    for (index_t p = 0; p < nv; ++p)
      for (std::size_t i = 0; i < out.nodes[std::size_t(p)].size(); ++i) {
        const double d = x - out.nodes[std::size_t(p)][i];
        s += out.weights[std::size_t(p)][i] * std::exp(-d * d / (2 * out.sigma2));
      }
    out.density[std::size_t(g)] = s * norm;
  }
  return out;
}

template <class T>
TraceEstimate hutchinson(LinearOperator<T>& op, index_t probes, std::uint64_t seed) {
  if (probes < 1) throw InvalidArgument("hutchinson: probes must be >= 1");
  const Context& ctx = op.context();
  const index_t n = op.size();
  Array<T> z(ctx, {probes, n}), az(ctx, {probes, n});
  random::fill_rademacher<T>(ctx, {seed, 0x68757463u, 0}, VectorView<T>{z.data(), probes * n, 1, ctx.backend()});
  TraceEstimate t;
  apply_blocks<T>(op, z.matrix(), az.matrix(), t.matvecs);
  std::vector<double> samples;
  for (index_t p = 0; p < probes; ++p)
    samples.push_back(double(blas::dot<T>(ctx, MatrixView<const T>(z.matrix()).row(p), MatrixView<const T>(az.matrix()).row(p))));
  double mean = 0, var = 0;
  for (double v : samples) mean += v;
  mean /= double(probes);
  for (double v : samples) var += (v - mean) * (v - mean);
  t.trace = mean;
  t.stderr_ = probes > 1 ? std::sqrt(var / double(probes - 1) / double(probes)) : 0.0;
  return t;
}

// tr(A) ~ tr(Q^T A Q) + (3/s) sum_g g^T (I - QQ^T) A (I - QQ^T) g with Q = orth(A S).
template <class T>
TraceEstimate hutchpp(LinearOperator<T>& op, index_t matvecs, std::uint64_t seed) {
  if (matvecs < 3 || matvecs % 3 != 0) throw InvalidArgument("hutchpp: matvecs must be a positive multiple of 3");
  const Context& ctx = op.context();
  const index_t n = op.size(), s = std::min(matvecs / 3, n);
  const index_t g = matvecs / 3;
  TraceEstimate t;
  Array<T> sk(ctx, {s, n}), q(ctx, {s, n}), aq(ctx, {s, n}), gk(ctx, {g, n}), ag(ctx, {g, n}), c(ctx, {s * g});
  random::fill_rademacher<T>(ctx, {seed, 0x68707031u, 0}, VectorView<T>{sk.data(), s * n, 1, ctx.backend()});
  apply_blocks<T>(op, sk.matrix(), q.matrix(), t.matvecs);
  lapack::orthonormalize_rows<T>(ctx, q.matrix());
  apply_blocks<T>(op, q.matrix(), aq.matrix(), t.matvecs);
  double tr = 0;
  for (index_t i = 0; i < s; ++i) tr += double(blas::dot<T>(ctx, MatrixView<const T>(q.matrix()).row(i), MatrixView<const T>(aq.matrix()).row(i)));
  random::fill_rademacher<T>(ctx, {seed, 0x68707032u, 0}, VectorView<T>{gk.data(), g * n, 1, ctx.backend()});
  Array<T> cs(ctx, {s * g});
  cgs2<T>(ctx, MatrixView<const T>(q.matrix()), gk.matrix(), cs);  // G <- (I - QQ^T) G
  apply_blocks<T>(op, gk.matrix(), ag.matrix(), t.matvecs);
  double rest = 0;
  for (index_t i = 0; i < g; ++i) rest += double(blas::dot<T>(ctx, MatrixView<const T>(gk.matrix()).row(i), MatrixView<const T>(ag.matrix()).row(i)));
  t.trace = tr + rest / double(g);
  return t;
}

template <class T>
PowerResult power_iteration(LinearOperator<T>& op, double tol, index_t max_iterations, std::uint64_t seed) {
  const Context& ctx = op.context();
  const index_t n = op.size();
  Array<T> u(ctx, {1, n}), au(ctx, {1, n});
  random::fill_normal<T>(ctx, {seed, 0x706f7772u, 0}, u.vector());
  blas::scal<T>(ctx, T(1.0 / double(blas::nrm2<T>(ctx, MatrixView<const T>(u.matrix()).row(0)))), u.vector());
  PowerResult r;
  index_t mv = 0;
  double prev = 0;
  for (r.iterations = 1; r.iterations <= max_iterations; ++r.iterations) {
    apply_blocks<T>(op, u.matrix(), au.matrix(), mv);
    r.value = double(blas::dot<T>(ctx, MatrixView<const T>(u.matrix()).row(0), MatrixView<const T>(au.matrix()).row(0)));
    const double norm = double(blas::nrm2<T>(ctx, MatrixView<const T>(au.matrix()).row(0)));
    if (!(norm > 0)) {
      r.converged = true;
      break;
    }
    const bool done = r.iterations > 1 && std::abs(r.value - prev) <= tol * std::abs(r.value);
    prev = r.value;
    copy(ctx, MatrixView<const T>(au.matrix()), u.matrix());
    blas::scal<T>(ctx, T(1.0 / norm), u.vector());
    if (done) {
      r.converged = true;
      break;
    }
  }
  r.iterations = std::min(r.iterations, max_iterations);
  apply_blocks<T>(op, u.matrix(), au.matrix(), mv);
  r.value = double(blas::dot<T>(ctx, MatrixView<const T>(u.matrix()).row(0), MatrixView<const T>(au.matrix()).row(0)));
  blas::axpy<T>(ctx, T(-r.value), MatrixView<const T>(u.matrix()).row(0), au.matrix().row(0));
  r.residual = double(blas::nrm2<T>(ctx, MatrixView<const T>(au.matrix()).row(0)));
  return r;
}

#define DS_INSTANTIATE(T)                                                                                      \
  template void check_symmetric<T>(MatrixView<const T>, double);                                               \
  template EigenResult<T> eigsh<T>(LinearOperator<T>&, const LanczosOptions&, std::optional<MatrixView<const T>>); \
  template SpectralDensity slq<T>(LinearOperator<T>&, const SlqOptions&);                                      \
  template TraceEstimate hutchinson<T>(LinearOperator<T>&, index_t, std::uint64_t);                            \
  template TraceEstimate hutchpp<T>(LinearOperator<T>&, index_t, std::uint64_t);                               \
  template PowerResult power_iteration<T>(LinearOperator<T>&, double, index_t, std::uint64_t);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace dynascope::linalg
