// Thick-restart block Lanczos (a Krylov-Schur formulation): the basis V is kept with full
// reorthogonalization (classical Gram-Schmidt twice, DGKS), the projected matrix H = V^T A V is
// kept densely in float64, and a restart keeps the wanted Ritz vectors plus the residual block.
//   A V_j = V_j H_j + Q R e_j^T,   V_j^T V_j = I,   Q the newest (residual) block.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>

#include "core/checks.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/random.hpp"

namespace dynascope::linalg {

using blas::Op;

Which parse_which(const std::string& t) { return parse_name(which_names, t); }
const char* to_string(Which w) noexcept { return name_of(which_names, w); }
EigenMethod parse_eigen_method(const std::string& t) { return parse_name(eigen_method_names, t); }
const char* to_string(EigenMethod m) noexcept { return name_of(eigen_method_names, m); }
const char* to_string(EigenStatus s) noexcept { return name_of(eigen_status_names, s); }

template <class T>
void check_symmetric(MatrixView<const T> a, double tol) {
  if (a.rows != a.cols)
    throw ShapeMismatch("the matrix must be square, got " + detail::dims(a.rows, a.cols));
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

// Applies the operator in chunks that respect its max_block; chunk_done(rows applied so far)
// after each chunk, for progress.
template <class T>
void apply_blocks(LinearOperator<T>& op, MatrixView<const T> x, MatrixView<T> y, index_t& matvecs,
                  const std::function<void(index_t)>& chunk_done = {}) {
  const index_t mb = op.max_block() > 0 ? op.max_block() : x.rows;
  for (index_t r = 0; r < x.rows; r += mb) {
    const index_t k = std::min(mb, x.rows - r);
    op.context().check_cancelled();   // the caller's Ctrl-C between applications, not only per restart
    op.apply(x.block(r, 0, k, x.cols), y.block(r, 0, k, y.cols));
    matvecs += k;
    if (chunk_done) chunk_done(r + k);
  }
}

// w -= V^T (V w) for one vector w, the coefficients V w left in c: two GEMVs, which stream V once
// each, where a GEMM with one column would pack all of V first.
template <class T>
void project_out_row(const Context& ctx, MatrixView<const T> v, VectorView<T> w, VectorView<T> c) {
  blas::gemv<T>(ctx, Op::none, T(1), v, VectorView<const T>(w), T(0), c);   // c = V w
  blas::gemv<T>(ctx, Op::trans, T(-1), v, VectorView<const T>(c), T(1), w);  // w -= V^T c
}

// y -= V^T (V y) twice for the rows of W against the rows of V; returns the accumulated
// coefficients C [rows(V), rows(W)] in float64.
template <class T>
std::vector<double> cgs2(const Context& ctx, MatrixView<const T> v, MatrixView<T> w, Array<T>& scratch) {
  const index_t nv = v.rows, nw = w.rows;
  std::vector<double> total(static_cast<std::size_t>(nv * nw), 0.0);
  if (nv == 0) return total;
  if (scratch.size() < nv * nw) scratch = Array<T>(ctx, {nv * nw});
  MatrixView<T> c{scratch.data(), nv, nw, nw, ctx.backend(), ctx.device()};
  for (int pass = 0; pass < 2; ++pass) {
    if (nw == 1) {
      project_out_row<T>(ctx, v, w.row(0), {c.data, nv, 1, c.backend, c.device});
    } else {
      blas::gemm<T>(ctx, Op::none, Op::trans, T(1), v, w, T(0), c);  // C = V W^T
      blas::gemm<T>(ctx, Op::trans, Op::none, T(-1), c, v, T(1), w);  // W -= C^T V
    }
    const auto h = to_host_doubles<T>(ctx, c);
    for (std::size_t i = 0; i < h.size(); ++i) total[i] += h[i];
  }
  return total;
}

// w -= V^T (V w) for one row w: one classical Gram-Schmidt pass, and a second only when the first
// removed most of w (its norm fell below 1/sqrt(2) of the norm before: the criterion of Daniel,
// Gragg, Kaufman and Stewart), which keeps w orthogonal to V's rows to working precision. Most
// Lanczos steps need one pass: half the memory traffic of cgs2, the largest cost of SLQ's full
// reorthogonalization after the operator's products.
// Returns ||w|| after (the caller's next Lanczos coefficient, without another norm).
template <class T>
double cgs_dgks(const Context& ctx, MatrixView<const T> v, MatrixView<T> w, Array<T>& scratch) {
  double norm = double(blas::nrm2<T>(ctx, MatrixView<const T>(w).row(0)));
  if (v.rows == 0) return norm;
  if (scratch.size() < v.rows) scratch = Array<T>(ctx, {v.rows});
  const VectorView<T> c{scratch.data(), v.rows, 1, ctx.backend(), ctx.device()};
  for (int pass = 0; pass < 2; ++pass) {
    project_out_row<T>(ctx, v, w.row(0), c);
    const double after = double(blas::nrm2<T>(ctx, MatrixView<const T>(w).row(0)));
    const bool enough = !(after < std::sqrt(0.5) * norm);
    norm = after;
    if (enough) break;
  }
  return norm;
}

// Orthonormal rows Q spanning W's rows and orthogonal to V (W must already be orthogonal to V);
// returns R with W = R^T Q ... as coefficients R[i][c] = q_i . w_c (float64, [nw, nw]).
template <class T>
std::vector<double> orthonormal_block(const Context& ctx, MatrixView<const T> v, MatrixView<T> w, Array<T>& scratch,
                                      Array<T>& wcopy, const random::Stream& fallback) {
  const index_t nw = w.rows, n = w.cols;
  if (wcopy.size() < nw * n) wcopy = Array<T>(ctx, {nw * n});
  MatrixView<T> w0{wcopy.data(), nw, n, n, ctx.backend(), ctx.device()};
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
  MatrixView<T> r{scratch.data(), nw, nw, nw, ctx.backend(), ctx.device()};
  blas::gemm<T>(ctx, Op::none, Op::trans, T(1), MatrixView<const T>(w), MatrixView<const T>(w0), T(0), r);  // q_i . w_c
  return to_host_doubles<T>(ctx, r);
}

// ---- Lanczos building blocks ----

constexpr std::uint32_t kStartStream = 0x6c616e63u;     // first pass: random start block
constexpr std::uint32_t kFallbackStream = 0x64656672u;  // first pass: directions replacing vanished ones
constexpr std::uint32_t kCheckStream = 0x63680000u;     // check pass p: start block (kCheckStream + p)
constexpr std::uint32_t kCheckFallback = 0x64660000u;   //   and its fallback directions (+ p)

double eps23() { return std::pow(std::numeric_limits<double>::epsilon(), 2.0 / 3.0); }

// The stopping test of a Ritz value theta: tol relative to max(eps^(2/3), |theta|), never below
// T's working precision 16 eps_T ||A|| (||A|| estimated by the largest |Ritz value| seen).
struct StoppingBar {
  double tol = 0;
  double unit_floor = 0;  // 16 eps_T
  double operator()(double theta, double anorm) const {
    return std::max(tol * std::max(eps23(), std::abs(theta)), unit_floor * anorm);
  }
};

// How far toward `which` a value lies: larger is more wanted.
double wanted_key(double x, Which which) {
  switch (which) {
    case Which::largest: return x;
    case Which::smallest: return -x;
    case Which::magnitude: return std::abs(x);
  }
  return x;
}

// Order in which eigenvalues are wanted (stable among equal keys).
std::vector<index_t> wanted_order(const std::vector<double>& theta, Which which) {
  std::vector<index_t> idx(theta.size());
  std::iota(idx.begin(), idx.end(), index_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](index_t a, index_t b) {
    return wanted_key(theta[std::size_t(a)], which) > wanted_key(theta[std::size_t(b)], which);
  });
  return idx;
}

std::string sci(double x, int digits = 1) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*e", digits, x);
  return buf;
}

// One thick-restart (Krylov-Schur) block Lanczos basis, kept orthogonal to `nl` locked vectors
// that occupy its first rows:
//   rows [0, nl)              locked vectors, deflated: the basis is orthogonalized against them
//                             and their coupling coefficients are dropped (Lanczos on P A P,
//                             P the projector onto their complement)
//   rows [nl, nl + j)         V_j, the closed basis, with H_j = V_j^T A V_j kept in float64
//   rows [nl + j, nl + j + b) the residual block Q:  A V_j = V_j H_j + Q R e_j^T
template <class T>
class KrylovBasis {
 public:
  KrylovBasis(LinearOperator<T>& op, MatrixView<const T> locked, index_t block, index_t subspace, std::uint64_t seed,
              std::uint32_t start_stream, std::uint32_t fallback_stream)
      : op_(op), ctx_(op.context()), n_(op.size()), nl_(locked.rows), b_(block), m_(subspace), cap_(subspace + block),
        seed_(seed), start_stream_(start_stream), fallback_stream_(fallback_stream),
        v_(ctx_, {nl_ + cap_, n_}), wbuf_(ctx_, {b_, n_}), tmp_(ctx_, {m_, n_}), scratch_(ctx_, {(nl_ + cap_) * b_}),
        wcopy_(ctx_, {b_ * n_}), h_(static_cast<std::size_t>(cap_ * cap_), 0.0) {
    if (nl_ > 0) copy(ctx_, locked, v_.matrix().block(0, 0, nl_, n_));
  }

  // Start block: random, orthogonal to the locked rows; the warm-start rows summed into b groups
  // with a small random admixture, which keeps every direction reachable even from exact
  // eigenvectors.
  void start(std::optional<MatrixView<const T>> warm) {
    MatrixView<T> v0 = rows(0, b_);
    random::fill_normal<T>(ctx_, {seed_, start_stream_, step_++}, VectorView<T>{v0.data, b_ * n_, 1, ctx_.backend(), ctx_.device()});
    if (warm && warm->rows > 0) {
      if (warm->cols != n_) throw ShapeMismatch("eigsh: start vectors must have " + std::to_string(n_) + " columns");
      blas::scal<T>(ctx_, T(1e-3), VectorView<T>{v0.data, b_ * n_, 1, ctx_.backend(), ctx_.device()});
      for (index_t i = 0; i < warm->rows; ++i) blas::axpy<T>(ctx_, T(1), warm->row(i), v0.row(i % b_));
    }
    if (nl_ == 0) {
      lapack::orthonormalize_rows<T>(ctx_, v0);
    } else {
      cgs2<T>(ctx_, locked(), v0, scratch_);
      orthonormal_block<T>(ctx_, locked(), v0, scratch_, wcopy_, {seed_, fallback_stream_, step_++});
    }
  }

  // Expansion: W = A V_active, orthogonalized against the locked rows and all of V; the
  // coefficients against V extend H, the orthonormalized W becomes the new residual block.
  void expand(index_t& matvecs) {
    MatrixView<T> w = wbuf_.matrix();
    apply_blocks<T>(op_, MatrixView<const T>(rows(j_, b_)), w, matvecs);
    const index_t nb = nl_ + j_ + b_;
    const MatrixView<const T> against = v_.matrix().block(0, 0, nb, n_);
    const auto c = cgs2<T>(ctx_, against, w, scratch_);
    for (index_t i = 0; i < j_ + b_; ++i)
      for (index_t q = 0; q < b_; ++q) H(i, j_ + q) = c[std::size_t((nl_ + i) * b_ + q)];
    const auto rr = orthonormal_block<T>(ctx_, against, w, scratch_, wcopy_, {seed_, fallback_stream_, step_++});
    for (index_t i = 0; i < b_; ++i)
      for (index_t q = 0; q < b_; ++q) H(j_ + b_ + i, j_ + q) = rr[std::size_t(i * b_ + q)];
    copy(ctx_, MatrixView<const T>(w), rows(j_ + b_, b_));
    j_ += b_;
  }

  // The basis is full when another block would not fit: time for Rayleigh-Ritz and a restart.
  bool full() const { return j_ + b_ > m_; }

  // Rayleigh-Ritz on H_j (symmetrized): Ritz values theta, their vectors in the basis (rows of S),
  // and the order in which they are wanted. Updates the ||A|| estimate.
  void rayleigh_ritz(Which which, double& anorm) {
    const index_t j = j_;
    std::vector<double> hs(static_cast<std::size_t>(j * j));
    for (index_t p = 0; p < j; ++p)
      for (index_t q = 0; q < j; ++q) hs[std::size_t(p * j + q)] = 0.5 * (H(p, q) + H(q, p));
    theta_.assign(std::size_t(j), 0.0);
    lapack::syevd<double>(host_, {hs.data(), j, j, j}, {theta_.data(), j, 1});
    s_ = std::move(hs);  // row i = eigenvector of theta[i]
    order_ = wanted_order(theta_, which);
    for (double t : theta_) anorm = std::max(anorm, std::abs(t));
  }

  // The i-th wanted Ritz value and its residual estimate ||R_q s_i|| from the coupling block.
  double value(index_t i) const { return theta_[std::size_t(order_[std::size_t(i)])]; }
  double residual(index_t i) const {
    const index_t src = order_[std::size_t(i)];
    double rn = 0;
    for (index_t q = 0; q < b_; ++q) {
      double sum = 0;
      for (index_t p = 0; p < j_; ++p) sum += H(j_ + q, p) * s_[std::size_t(src * j_ + p)];
      rn += sum * sum;
    }
    return std::sqrt(rn);
  }

  // Thick restart: keep the first `p` wanted Ritz vectors and the residual block; H becomes
  // diag(theta_kept) bordered by the residual block's coupling to them.
  void restart(index_t p) {
    const index_t j = j_;
    const auto sel = selection(p);
    Array<T> sdev(ctx_, {p, j});
    from_host_doubles<T>(ctx_, sel, sdev.matrix());
    MatrixView<T> keep = tmp_.matrix().block(0, 0, p, n_);
    blas::gemm<T>(ctx_, Op::none, Op::none, T(1), MatrixView<const T>(sdev.matrix()), MatrixView<const T>(rows(0, j)), T(0), keep);
    copy(ctx_, MatrixView<const T>(rows(j, b_)), rows(p, b_));  // residual block
    copy(ctx_, MatrixView<const T>(keep), rows(0, p));
    std::vector<double> coupling(static_cast<std::size_t>(b_ * p), 0.0);
    for (index_t q = 0; q < b_; ++q)
      for (index_t i = 0; i < p; ++i) {
        double sum = 0;
        for (index_t t = 0; t < j; ++t) sum += H(j + q, t) * sel[std::size_t(i * j + t)];
        coupling[std::size_t(q * p + i)] = sum;
      }
    std::fill(h_.begin(), h_.end(), 0.0);
    for (index_t i = 0; i < p; ++i) H(i, i) = value(i);
    for (index_t q = 0; q < b_; ++q)
      for (index_t i = 0; i < p; ++i) {
        H(p + q, i) = coupling[std::size_t(q * p + i)];
        H(i, p + q) = coupling[std::size_t(q * p + i)];
      }
    j_ = p;
  }

  // The first `count` wanted Ritz vectors of the last Rayleigh-Ritz, [count, n].
  Array<T> ritz_vectors(index_t count) {
    const auto sel = selection(count);
    Array<T> sdev(ctx_, {count, j_});
    from_host_doubles<T>(ctx_, sel, sdev.matrix());
    Array<T> out(ctx_, {count, n_});
    blas::gemm<T>(ctx_, Op::none, Op::none, T(1), MatrixView<const T>(sdev.matrix()), MatrixView<const T>(rows(0, j_)), T(0),
                  out.matrix());
    return out;
  }

 private:
  double& H(index_t i, index_t j) { return h_[std::size_t(i * cap_ + j)]; }
  double H(index_t i, index_t j) const { return h_[std::size_t(i * cap_ + j)]; }
  MatrixView<T> rows(index_t first, index_t count) { return v_.matrix().block(nl_ + first, 0, count, n_); }
  MatrixView<const T> locked() { return v_.matrix().block(0, 0, nl_, n_); }
  // Rows of S (in the basis) of the first `count` wanted Ritz vectors, [count, j].
  std::vector<double> selection(index_t count) const {
    std::vector<double> sel(static_cast<std::size_t>(count * j_));
    for (index_t i = 0; i < count; ++i)
      for (index_t q = 0; q < j_; ++q) sel[std::size_t(i * j_ + q)] = s_[std::size_t(order_[std::size_t(i)] * j_ + q)];
    return sel;
  }

  LinearOperator<T>& op_;
  Context ctx_;
  Context host_ = Context::host();
  index_t n_, nl_, b_, m_, cap_;
  std::uint64_t seed_;
  std::uint32_t start_stream_, fallback_stream_, step_ = 0;
  Array<T> v_, wbuf_, tmp_, scratch_, wcopy_;
  std::vector<double> h_;
  index_t j_ = 0;
  std::vector<double> theta_, s_;
  std::vector<index_t> order_;
};

// The wanted Ritz pairs one pass returns, in wanted order.
template <class T>
struct RitzSet {
  std::vector<double> values, residuals;  // residuals: estimates ||A u - theta u||
  Array<T> vectors;                       // [values.size(), n]
  index_t nconv = 0;                      // leading pairs that met the stopping test
  index_t restarts = 0;
  bool decided = false;                   // PassSpec::decided ended the pass
};

struct PassSpec {
  index_t k = 0, block = 1, subspace = 0;
  std::uint32_t start_stream = 0, fallback_stream = 0;
  std::string label;  // progress task
  // Optional: called with the first wanted Ritz value and its residual estimate after each
  // Rayleigh-Ritz; true ends the pass early (the missed-eigenvalue check needs only that value
  // when it misses nothing).
  std::function<bool(double, double)> decided;
};

// One Lanczos pass in the complement of `locked`: expand, Rayleigh-Ritz, test, restart until the
// first spec.k wanted Ritz pairs meet the stopping test, spec.decided says so, or max_restarts.
template <class T>
RitzSet<T> lanczos_pass(LinearOperator<T>& op, const LanczosOptions& o, MatrixView<const T> locked, const PassSpec& spec,
                        std::optional<MatrixView<const T>> warm, double& anorm, index_t& matvecs) {
  const Context& ctx = op.context();
  const index_t k = spec.k, b = spec.block, m = spec.subspace;
  const StoppingBar bar{o.tol, 16.0 * double(std::numeric_limits<T>::epsilon())};
  KrylovBasis<T> basis(op, locked, b, m, o.seed, spec.start_stream, spec.fallback_stream);
  basis.start(warm);
  RitzSet<T> out;
  out.residuals.assign(std::size_t(k), 0.0);
  while (true) {
    basis.expand(matvecs);
    if (!basis.full()) continue;
    basis.rayleigh_ritz(o.which, anorm);
    // Convergence test: the leading wanted pairs that meet the bar (a prefix, so that an
    // unconverged value ahead of converged ones keeps them open).
    out.nconv = 0;
    bool prefix = true;
    // For the progress line: the largest residual relative to its value's scale (the one tol
    // applies to), and the precision floor on that scale when the floor is what it must meet.
    double worst = 0, worst_scale = 1;
    for (index_t i = 0; i < k; ++i) {
      const double theta = basis.value(i), res = basis.residual(i), scale = std::max(eps23(), std::abs(theta));
      out.residuals[std::size_t(i)] = res;
      prefix = prefix && res <= bar(theta, anorm);
      out.nconv += prefix ? 1 : 0;
      if (res / scale >= worst) {
        worst = res / scale;
        worst_scale = scale;
      }
    }
    out.decided = out.nconv < k && spec.decided && spec.decided(basis.value(0), out.residuals[0]);
    const bool done = out.nconv >= k || out.decided;
    const bool end = done || out.restarts >= o.max_restarts;
    const double floor = bar.unit_floor * anorm / worst_scale;
    const std::string state = std::to_string(out.nconv) + "/" + std::to_string(k) + " converged, worst residual " + sci(worst) +
                              " (tol " + sci(o.tol, 0) + (floor > o.tol ? ", precision floor " + sci(floor) : std::string()) + ")";
    if (end)
      ctx.progress(spec.label + ": " + (out.decided ? "settled" : done ? "converged" : "stopped at max_restarts") + " after " +
                       std::to_string(out.restarts) + " restarts, " + state,
                   o.max_restarts, o.max_restarts);
    else
      ctx.progress(spec.label + ": restart " + std::to_string(out.restarts) + ", " + state, out.restarts, o.max_restarts);
    if (end) break;
    basis.restart(std::min(m - b, std::max(k + b, k + (m - k) / 2 + out.nconv / 2)));
    ++out.restarts;
  }
  for (index_t i = 0; i < k; ++i) out.values.push_back(basis.value(i));
  out.vectors = basis.ritz_vectors(k);
  return out;
}

// Rayleigh-Ritz on the whole complement of `locked` (when it is too small for a Krylov basis to
// grow in it): exact eigenpairs of P A P there. Returns the first min(k, n - nl) wanted ones,
// all counted as converged, with their residuals ||A u - theta u||.
template <class T>
RitzSet<T> complement_exact(LinearOperator<T>& op, const LanczosOptions& o, MatrixView<const T> locked, index_t k,
                            std::uint32_t stream, double& anorm, index_t& matvecs) {
  const Context& ctx = op.context();
  const index_t n = op.size(), nc = n - locked.rows, count = std::min(k, nc);
  RitzSet<T> out;
  if (count < 1) return out;
  Array<T> z(ctx, {nc, n}), az(ctx, {nc, n}), scratch(ctx, {locked.rows * nc}), wcopy(ctx, {nc * n});
  random::fill_normal<T>(ctx, {o.seed, stream, 0}, z.vector());
  cgs2<T>(ctx, locked, z.matrix(), scratch);
  orthonormal_block<T>(ctx, locked, z.matrix(), scratch, wcopy, {o.seed, stream, 1});
  apply_blocks<T>(op, MatrixView<const T>(z.matrix()), az.matrix(), matvecs);
  Array<T> hz(ctx, {nc, nc});
  blas::gemm<T>(ctx, Op::none, Op::trans, T(1), MatrixView<const T>(z.matrix()), MatrixView<const T>(az.matrix()), T(0), hz.matrix());
  auto hs = to_host_doubles<T>(ctx, MatrixView<const T>(hz.matrix()));
  for (index_t p = 0; p < nc; ++p)
    for (index_t q = p + 1; q < nc; ++q) {
      const double sym = 0.5 * (hs[std::size_t(p * nc + q)] + hs[std::size_t(q * nc + p)]);
      hs[std::size_t(p * nc + q)] = hs[std::size_t(q * nc + p)] = sym;
    }
  std::vector<double> theta(static_cast<std::size_t>(nc));
  Context host = Context::host();
  lapack::syevd<double>(host, {hs.data(), nc, nc, nc}, {theta.data(), nc, 1});
  for (double t : theta) anorm = std::max(anorm, std::abs(t));
  const auto order = wanted_order(theta, o.which);
  std::vector<double> sel(static_cast<std::size_t>(count * nc));
  for (index_t i = 0; i < count; ++i) {
    out.values.push_back(theta[std::size_t(order[std::size_t(i)])]);
    for (index_t q = 0; q < nc; ++q) sel[std::size_t(i * nc + q)] = hs[std::size_t(order[std::size_t(i)] * nc + q)];
  }
  Array<T> sdev(ctx, {count, nc}), au(ctx, {count, n});
  from_host_doubles<T>(ctx, sel, sdev.matrix());
  out.vectors = Array<T>(ctx, {count, n});
  blas::gemm<T>(ctx, Op::none, Op::none, T(1), MatrixView<const T>(sdev.matrix()), MatrixView<const T>(z.matrix()), T(0), out.vectors.matrix());
  blas::gemm<T>(ctx, Op::none, Op::none, T(1), MatrixView<const T>(sdev.matrix()), MatrixView<const T>(az.matrix()), T(0), au.matrix());
  for (index_t i = 0; i < count; ++i) {
    blas::axpy<T>(ctx, T(-out.values[std::size_t(i)]), MatrixView<const T>(out.vectors.matrix()).row(i), au.matrix().row(i));
    out.residuals.push_back(double(blas::nrm2<T>(ctx, MatrixView<const T>(au.matrix()).row(i))));
  }
  out.nconv = count;
  return out;
}

// Subspace size of a pass seeking k pairs with block b: the caller's, or max(2k + 1, 20) + b; at
// least k + 2b so that a restart keeps the k wanted vectors and leaves room to grow.
index_t pass_subspace(const LanczosOptions& o, index_t k, index_t b) {
  const index_t m = o.subspace > 0 ? o.subspace : std::max<index_t>(2 * k + 1, 20) + b;
  return std::max(m, k + 2 * b);
}

template <class T>
EigenResult<T> dense_eigsh(LinearOperator<T>& op, const LanczosOptions& o, double& anorm) {
  const Context& ctx = op.context();
  const index_t n = op.size(), k = o.k;
  EigenResult<T> r;
  r.method = EigenMethod::dense;
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
    ctx.progress("dense: operator columns", 0, n);
    apply_blocks<T>(op, eye.matrix(), a.matrix(), r.matvecs, [&](index_t done) { ctx.progress("dense: operator columns", done, n); });
  }
  Array<T> w(ctx, {n});
  ctx.progress("dense eigendecomposition", 0, 1);
  lapack::syevd<T>(ctx, a.matrix(), w.vector());
  ctx.progress("dense eigendecomposition", 1, 1);
  const auto wh = to_host_doubles<T>(ctx, MatrixView<const T>{w.data(), 1, n, n, ctx.backend(), ctx.device()});
  for (double x : wh) anorm = std::max(anorm, std::abs(x));
  const auto order = wanted_order(wh, o.which);
  r.vectors = Array<T>(ctx, {k, n});
  for (index_t i = 0; i < k; ++i) {
    const index_t src = order[std::size_t(i)];
    r.values.push_back(wh[std::size_t(src)]);
    copy(ctx, MatrixView<const T>(a.matrix().block(src, 0, 1, n)), r.vectors.matrix().block(i, 0, 1, n));
  }
  // The whole spectrum was computed: no copy of a repeated eigenvalue can be missed.
  r.multiplicity_checked = true;
  return r;
}

// The current answer of the Lanczos path: k pairs in slots (not kept sorted), and whether each
// came from a check pass.
template <class T>
struct LockedSet {
  std::vector<double> values, residuals;
  std::vector<bool> from_check;
  Array<T> vectors;  // [k, n], row = slot

  // The slot of the least wanted value (the last among equals).
  index_t worst(Which which) const {
    index_t w = 0;
    for (index_t i = 1; i < index_t(values.size()); ++i)
      if (wanted_key(values[std::size_t(i)], which) <= wanted_key(values[std::size_t(w)], which)) w = i;
    return w;
  }
};

// The missed-eigenvalue check (LanczosOptions::check_multiplicity): Lanczos passes in the
// complement of the current answer until one finds no converged Ritz value that belongs in it.
// Returns whether the check was conclusive.
template <class T>
bool check_missed(LinearOperator<T>& op, const LanczosOptions& o, LockedSet<T>& set, double& anorm, EigenResult<T>& r) {
  const index_t n = op.size(), k = o.k, nc = n - k;
  const StoppingBar bar{o.tol, 16.0 * double(std::numeric_limits<T>::epsilon())};
  // A value enters when it beats the worst kept one by more than both stopping bars: closer than
  // that the two are the same eigenvalue to within the tolerance, and either is a right answer.
  auto enters = [&](double x, double worst) {
    return wanted_key(x, o.which) > wanted_key(worst, o.which) + bar(x, anorm) + bar(worst, anorm);
  };
  index_t bc = o.block;
  const index_t bmax = std::max(o.block, k);
  // Each pass that finds something replaces at least one kept pair by a more wanted one, so the
  // answer improves monotonically; k + 2 passes cover one recovery per slot plus the final pass.
  for (index_t pass = 1; pass <= k + 2; ++pass) {
    const double worst = set.values[std::size_t(set.worst(o.which))];
    const MatrixView<const T> locked = set.vectors.matrix();
    const index_t kc = bc, mc = pass_subspace(o, kc, bc);
    const auto start = static_cast<std::uint32_t>(kCheckStream + std::uint32_t(pass));
    RitzSet<T> found;
    if (mc + bc > nc) {
      const std::string label = "lanczos missed-eigenvalue check " + std::to_string(pass);
      op.context().progress(label + ": Rayleigh-Ritz on the whole complement", 0, 1);
      found = complement_exact<T>(op, o, locked, kc, start, anorm, r.matvecs);
      op.context().progress(label + ": Rayleigh-Ritz on the whole complement", 1, 1);
    } else {
      PassSpec spec;
      spec.k = kc;
      spec.block = bc;
      spec.subspace = mc;
      spec.start_stream = start;
      spec.fallback_stream = kCheckFallback + std::uint32_t(pass);
      spec.label = "lanczos missed-eigenvalue check " + std::to_string(pass);
      // Nothing missed once the leading Ritz value is converged and does not enter, or is by its
      // residual r certainly close to an eigenvalue below the worst kept one: at distance d from
      // it, r <= d / 4 leaves at most (r/d)^2 = 1/16 of its Ritz vector's weight on eigenvalues
      // that would enter, and an eigenvalue that far out would already lead the Ritz values
      // (Lanczos finds the extremes first). This spares converging the next eigenvalue to tol
      // when it lies well inside the spectrum.
      spec.decided = [&](double first, double res) {
        if (enters(first, worst)) return false;
        const double d = wanted_key(worst, o.which) - wanted_key(first, o.which) - bar(first, anorm) - bar(worst, anorm);
        return res <= bar(first, anorm) || res <= d / 4;
      };
      found = lanczos_pass<T>(op, o, locked, spec, std::nullopt, anorm, r.matvecs);
    }
    ++r.check_passes;
    r.iterations += found.restarts;
    if (found.decided) return true;      // its leading value does not enter: nothing missed
    if (found.nconv == 0) return false;  // the complement did not converge: inconclusive
    index_t entered = 0;
    for (index_t i = 0; i < found.nconv; ++i) {
      const index_t slot = set.worst(o.which);
      if (!enters(found.values[std::size_t(i)], set.values[std::size_t(slot)])) break;
      set.values[std::size_t(slot)] = found.values[std::size_t(i)];
      set.residuals[std::size_t(slot)] = found.residuals[std::size_t(i)];
      set.from_check[std::size_t(slot)] = true;
      copy(op.context(), MatrixView<const T>(found.vectors.matrix().block(i, 0, 1, n)), set.vectors.matrix().block(slot, 0, 1, n));
      ++entered;
    }
    if (entered == 0) return true;
    // Something was missed: most likely more copies of a repeated eigenvalue than the block holds.
    bc = std::min(2 * bc, bmax);
  }
  return false;
}

// Honest residuals, convergence and status (shared by both paths).
template <class T>
void finish(EigenResult<T>& r, LinearOperator<T>& op, const LanczosOptions& o, double anorm) {
  const Context& ctx = op.context();
  const index_t k = o.k, n = op.size();
  // Honest residuals ||A u - lambda u|| (one more application).
  if (o.true_residuals || r.method == EigenMethod::dense) {
    Array<T> au(ctx, {k, n});
    apply_blocks<T>(op, r.vectors.matrix(), au.matrix(), r.matvecs);
    r.residuals.assign(std::size_t(k), 0.0);
    for (index_t i = 0; i < k; ++i) {
      blas::axpy<T>(ctx, T(-r.values[std::size_t(i)]), MatrixView<const T>(r.vectors.matrix()).row(i), au.matrix().row(i));
      r.residuals[std::size_t(i)] = double(blas::nrm2<T>(ctx, MatrixView<const T>(au.matrix()).row(i)));
    }
  }
  // Converged: the residual meets the criterion, which is never asked to go below the working
  // precision of T (16 eps_T ||A||, ||A|| estimated by the largest Ritz value: no residual below
  // the rounding of A u means anything, and float32 cannot resolve more). Where that floor and
  // not the tolerance decides, the eigenvalue is known only to +-floor: precision-limited when
  // that is more than precision_limit of its size, measured like the stopping test does
  // (max(eps^(2/3), |lambda|), so that an exact zero is judged on an absolute scale).
  for (double val : r.values) anorm = std::max(anorm, std::abs(val));
  const StoppingBar bar{o.tol, 16.0 * double(std::numeric_limits<T>::epsilon())};
  const double floor = bar.unit_floor * anorm;
  r.converged.assign(std::size_t(k), false);
  r.status.assign(std::size_t(k), EigenStatus::not_converged);
  r.all_converged = true;
  std::vector<index_t> limited;
  for (index_t i = 0; i < k; ++i) {
    const double val = r.values[std::size_t(i)];
    const bool ok = r.method == EigenMethod::dense || r.residuals[std::size_t(i)] <= bar(val, anorm);
    const bool floor_decides = floor > o.tol * std::max(eps23(), std::abs(val));
    r.converged[std::size_t(i)] = ok;
    r.status[std::size_t(i)] = !ok                                                     ? EigenStatus::not_converged
                               : floor_decides && floor > o.precision_limit * std::max(eps23(), std::abs(val))
                                   ? EigenStatus::precision_limited
                                                                                       : EigenStatus::converged;
    if (r.status[std::size_t(i)] == EigenStatus::precision_limited) limited.push_back(i);
    r.all_converged = r.all_converged && r.status[std::size_t(i)] == EigenStatus::converged;
  }
  if (!limited.empty()) {
    std::string which, smallest;
    double least = std::numeric_limits<double>::infinity();
    for (index_t i : limited) {
      which += (which.empty() ? "" : ", ") + std::to_string(i);
      least = std::min(least, std::abs(r.values[std::size_t(i)]));
    }
    const bool single = std::is_same_v<T, float>;
    std::string msg = "eigenvalue" + std::string(limited.size() > 1 ? "s " : " ") + which + " (|lambda| down to " + sci(least, 2) +
                      ") precision-limited: " + (single ? "float32" : "float64") +
                      " arithmetic resolves this operator's eigenvalues only to about +-" + sci(floor, 1) +
                      " (16 eps ||A||, ||A|| ~ " + sci(anorm, 2) + "), more than " + sci(o.precision_limit, 0) +
                      " of their size; " +
                      (single ? "compute in float64"
                              : "float64 cannot do better: shift the operator (A - sigma I) so that they are not small "
                                "against ||A||");
    r.warnings.push_back(msg);
    ctx.log(LogLevel::warning, msg);
  }
}

}  // namespace

template <class T>
EigenResult<T> eigsh(LinearOperator<T>& op, const LanczosOptions& o, std::optional<MatrixView<const T>> start) {
  const index_t n = op.size(), k = o.k, b = o.block;
  if (k < 1 || k > n) throw InvalidArgument("eigsh: k must be in [1, " + std::to_string(n) + "], got " + std::to_string(k));
  if (b < 1) throw InvalidArgument("eigsh: block size must be >= 1");
  if (!(o.tol > 0)) throw InvalidArgument("eigsh: tol must be positive");
  if (o.max_restarts < 0) throw InvalidArgument("eigsh: max_restarts must be >= 0");
  if (!(o.precision_limit >= 0)) throw InvalidArgument("eigsh: precision_limit must be >= 0");
  const index_t m = pass_subspace(o, k, b);
  const bool too_small = m + b > n;
  double anorm = 0;  // ||A|| estimate: the largest |Ritz value| seen
  EigenResult<T> r;
  if (o.method == EigenMethod::dense || too_small || (o.method == EigenMethod::automatic && n <= o.dense_below)) {
    r = dense_eigsh<T>(op, o, anorm);
  } else {
    r.method = EigenMethod::lanczos;
    PassSpec spec;
    spec.k = k;
    spec.block = b;
    spec.subspace = m;
    spec.start_stream = kStartStream;
    spec.fallback_stream = kFallbackStream;
    spec.label = "lanczos";
    const MatrixView<const T> none{nullptr, 0, n, n, op.context().backend(), op.context().device()};
    auto first = lanczos_pass<T>(op, o, none, spec, start, anorm, r.matvecs);
    r.iterations = first.restarts;
    LockedSet<T> set{first.values, first.residuals, std::vector<bool>(std::size_t(k), false), std::move(first.vectors)};
    if (o.check_multiplicity && first.nconv >= k) r.multiplicity_checked = check_missed<T>(op, o, set, anorm, r);
    // Slots in wanted order.
    const auto order = wanted_order(set.values, o.which);
    r.vectors = Array<T>(op.context(), {k, n});
    for (index_t i = 0; i < k; ++i) {
      const index_t slot = order[std::size_t(i)];
      r.values.push_back(set.values[std::size_t(slot)]);
      r.residuals.push_back(set.residuals[std::size_t(slot)]);
      r.missed_recovered += set.from_check[std::size_t(slot)] ? 1 : 0;
      copy(op.context(), MatrixView<const T>(set.vectors.matrix().block(slot, 0, 1, n)), r.vectors.matrix().block(i, 0, 1, n));
    }
  }
  finish<T>(r, op, o, anorm);
  return r;
}

template <class T>
EigenResult<T> eigh(const Context& ctx, MatrixView<const T> a, Which which) {
  DenseOperator<T> op(ctx, a);  // ShapeMismatch unless square
  if (a.rows == 0) {
    EigenResult<T> r;
    r.method = EigenMethod::dense;
    r.all_converged = r.multiplicity_checked = true;
    return r;
  }
  LanczosOptions o;
  o.k = a.rows;
  o.which = which;
  o.method = EigenMethod::dense;
  return eigsh<T>(op, o);
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
  random::fill_rademacher<T>(ctx, {o.seed, 0x736c71u, 0}, VectorView<T>{cur.data(), nv * n, 1, ctx.backend(), ctx.device()});
  blas::scal<T>(ctx, T(1.0 / std::sqrt(double(n))), VectorView<T>{cur.data(), nv * n, 1, ctx.backend(), ctx.device()});
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
      // Full reorthogonalization against this probe's basis (CGS, twice when DGKS asks).
      const double bn = cgs_dgks<T>(ctx, MatrixView<const T>(basis.matrix().block(p * m, 0, t + 1, n)), wp, scratch);
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
    ctx.progress("slq: lanczos steps", t + 1, m);
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

namespace {

// Mean and standard error of quadratic-form samples: NaN when one sample cannot give a spread.
void mean_and_std_error(const std::vector<double>& samples, double& mean, double& std_error) {
  const double count = double(samples.size());
  mean = 0;
  for (double v : samples) mean += v;
  mean /= count;
  double var = 0;
  for (double v : samples) var += (v - mean) * (v - mean);
  std_error = samples.size() > 1 ? std::sqrt(var / (count - 1) / count) : std::numeric_limits<double>::quiet_NaN();
}

// Row-wise x_i . y_i for the first `rows` rows.
template <class T>
std::vector<double> row_dots(const Context& ctx, MatrixView<const T> x, MatrixView<const T> y) {
  std::vector<double> out;
  for (index_t i = 0; i < x.rows; ++i) out.push_back(double(blas::dot<T>(ctx, x.row(i), y.row(i))));
  return out;
}

// tr(A) ~ tr(Q^T A Q) + (1/g) sum_g g^T (I - QQ^T) A (I - QQ^T) g with Q = orth(A S), S having
// `sketch` Rademacher rows and g `probes` Rademacher vectors.
template <class T>
TraceEstimate hutchpp_split(LinearOperator<T>& op, index_t sketch, index_t probes, std::uint64_t seed) {
  const Context& ctx = op.context();
  const index_t n = op.size(), s = std::min(sketch, n);
  // The sketch spans everything: tr(Q^T A Q) is the trace, no probe can add anything.
  const index_t g = s >= n ? 0 : probes;
  const index_t total = 2 * s + g;
  const std::string task = "hutch++: operator applications";
  TraceEstimate t;
  auto report = [&](index_t) { ctx.progress(task, t.matvecs, total); };
  ctx.progress(task, 0, total);
  Array<T> sk(ctx, {s, n}), q(ctx, {s, n});
  random::fill_rademacher<T>(ctx, {seed, 0x68707031u, 0}, VectorView<T>{sk.data(), s * n, 1, ctx.backend(), ctx.device()});
  apply_blocks<T>(op, sk.matrix(), q.matrix(), t.matvecs, report);
  lapack::orthonormalize_rows<T>(ctx, q.matrix());
  Array<T>& aq = sk;  // S is not needed any more
  apply_blocks<T>(op, q.matrix(), aq.matrix(), t.matvecs, report);
  double exact = 0;
  for (double v : row_dots<T>(ctx, q.matrix(), aq.matrix())) exact += v;
  t.trace = exact;
  if (g == 0) {
    t.std_error = 0;
    return t;
  }
  Array<T> gk(ctx, {g, n}), ag(ctx, {g, n}), cs(ctx, {s * g});
  random::fill_rademacher<T>(ctx, {seed, 0x68707032u, 0}, VectorView<T>{gk.data(), g * n, 1, ctx.backend(), ctx.device()});
  cgs2<T>(ctx, MatrixView<const T>(q.matrix()), gk.matrix(), cs);  // G <- (I - QQ^T) G
  apply_blocks<T>(op, gk.matrix(), ag.matrix(), t.matvecs, report);
  double rest = 0;
  mean_and_std_error(row_dots<T>(ctx, gk.matrix(), ag.matrix()), rest, t.std_error);
  t.trace = exact + rest;
  return t;
}

}  // namespace

template <class T>
TraceEstimate hutchinson(LinearOperator<T>& op, index_t probes, std::uint64_t seed) {
  if (probes < 1) throw InvalidArgument("hutchinson: probes must be >= 1, got " + std::to_string(probes));
  const Context& ctx = op.context();
  const index_t n = op.size();
  // Probes in blocks: the operator's max_block, else as many as fit 64 MiB for Z and AZ, so that
  // memory does not grow with the probe count. Block r0 draws elements r0*n.. of the one Rademacher
  // sequence: the probes are the same for any block size.
  const index_t fit = std::max<index_t>(1, index_t((std::size_t(64) << 20) / (2 * sizeof(T) * std::size_t(n))));
  const index_t block = std::min(probes, op.max_block() > 0 ? op.max_block() : fit);
  Array<T> z(ctx, {block, n}), az(ctx, {block, n});
  TraceEstimate t;
  std::vector<double> samples;
  samples.reserve(std::size_t(probes));
  ctx.progress("hutchinson: probes", 0, probes);
  for (index_t r0 = 0; r0 < probes; r0 += block) {
    const index_t m = std::min(block, probes - r0);
    random::fill_rademacher<T>(ctx, {seed, 0x68757463u, 0}, VectorView<T>{z.data(), m * n, 1, ctx.backend(), ctx.device()},
                               std::uint64_t(r0) * std::uint64_t(n));
    const MatrixView<T> zm = z.matrix().block(0, 0, m, n), azm = az.matrix().block(0, 0, m, n);
    apply_blocks<T>(op, zm, azm, t.matvecs);
    for (double v : row_dots<T>(ctx, zm, azm)) samples.push_back(v);
    ctx.progress("hutchinson: probes", r0 + m, probes);
  }
  mean_and_std_error(samples, t.trace, t.std_error);
  return t;
}

template <class T>
TraceEstimate hutchpp_probes(LinearOperator<T>& op, index_t probes, std::uint64_t seed) {
  if (probes < 2)
    throw InvalidArgument("hutchpp: probes must be >= 2 (one sketch vector and one residual probe), got " + std::to_string(probes));
  return hutchpp_split<T>(op, (probes + 1) / 2, probes / 2, seed);
}

template <class T>
TraceEstimate hutchpp(LinearOperator<T>& op, index_t matvecs, std::uint64_t seed) {
  if (matvecs < 3 || matvecs % 3 != 0)
    throw InvalidArgument("hutchpp: matvecs must be a positive multiple of 3, got " + std::to_string(matvecs));
  return hutchpp_split<T>(op, matvecs / 3, matvecs / 3, seed);
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
  template EigenResult<T> eigh<T>(const Context&, MatrixView<const T>, Which);                                 \
  template SpectralDensity slq<T>(LinearOperator<T>&, const SlqOptions&);                                      \
  template TraceEstimate hutchinson<T>(LinearOperator<T>&, index_t, std::uint64_t);                            \
  template TraceEstimate hutchpp<T>(LinearOperator<T>&, index_t, std::uint64_t);                               \
  template TraceEstimate hutchpp_probes<T>(LinearOperator<T>&, index_t, std::uint64_t);                        \
  template PowerResult power_iteration<T>(LinearOperator<T>&, double, index_t, std::uint64_t);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace dynascope::linalg
