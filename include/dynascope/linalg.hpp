#pragma once
// Linear algebra on symmetric operators (docs/definitions.md), for any operator the caller can
// apply: top-k eigenpairs by thick-restart block Lanczos with full reorthogonalization, a dense
// path behind the same interface, stochastic Lanczos quadrature, Hutchinson / Hutch++ traces and
// power iteration. Core headers only: the operators of a network (the NTK in ntk.hpp, the
// Gauss-Newton matrix and the loss Hessian in curvature.hpp) build on this one.
//
// An operator is "Y = A X for a block of vectors": the rows of X and Y are vectors of length
// size(), on the operator's context. Built in here: a dense symmetric matrix and a caller-supplied
// callback (a framework's own autograd).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/error.hpp"
#include "dynascope/types.hpp"
#include "dynascope/view.hpp"

namespace dynascope::linalg {

template <class T>
class LinearOperator {
 public:
  virtual ~LinearOperator() = default;
  virtual index_t size() const = 0;
  // Y = A X, X and Y [k, size()] (contiguous rows) on context()'s backend.
  virtual void apply(MatrixView<const T> x, MatrixView<T> y) = 0;
  virtual const Context& context() const = 0;
  // The largest block apply() should get at once (0: any).
  virtual index_t max_block() const { return 0; }
};

// A dense symmetric matrix (viewed, not copied). Throws ShapeMismatch unless square.
template <class T>
class DYNASCOPE_API DenseOperator final : public LinearOperator<T> {
 public:
  DenseOperator(const Context& ctx, MatrixView<const T> a);
  index_t size() const override;
  void apply(MatrixView<const T> x, MatrixView<T> y) override;
  const Context& context() const override;
  MatrixView<const T> matrix() const;

 private:
  Context ctx_;
  MatrixView<const T> a_;
};

template <class T>
class DYNASCOPE_API CallbackOperator final : public LinearOperator<T> {
 public:
  using Fn = std::function<void(MatrixView<const T> x, MatrixView<T> y)>;
  CallbackOperator(const Context& ctx, index_t n, Fn fn, index_t max_block = 0)
      : ctx_(ctx), n_(n), fn_(std::move(fn)), max_block_(max_block) {}
  index_t size() const override { return n_; }
  void apply(MatrixView<const T> x, MatrixView<T> y) override { fn_(x, y); }
  const Context& context() const override { return ctx_; }
  index_t max_block() const override { return max_block_; }

 private:
  Context ctx_;
  index_t n_;
  Fn fn_;
  index_t max_block_;
};

// ---- top-k eigenpairs ----
enum class Which { largest, smallest, magnitude };
inline constexpr auto which_names = enum_names<Which>(
    "eigenvalue selection", {{Which::largest, "largest"}, {Which::smallest, "smallest"}, {Which::magnitude, "magnitude"}});
static_assert(well_formed(which_names));
DYNASCOPE_API Which parse_which(const std::string& text);
DYNASCOPE_API const char* to_string(Which w) noexcept;

// automatic: the dense solver for small operators (LanczosOptions::dense_below), else Lanczos.
enum class EigenMethod { automatic, lanczos, dense };
inline constexpr auto eigen_method_names = enum_names<EigenMethod>(
    "eigen method", {{EigenMethod::automatic, "auto"},
                     {EigenMethod::automatic, "automatic", Spelling::alias},
                     {EigenMethod::lanczos, "lanczos"},
                     {EigenMethod::dense, "dense"}});
static_assert(well_formed(eigen_method_names));
DYNASCOPE_API EigenMethod parse_eigen_method(const std::string& text);  // "auto" (or "automatic"), "lanczos", "dense"
DYNASCOPE_API const char* to_string(EigenMethod m) noexcept;             // "auto", "lanczos", "dense"

struct LanczosOptions {
  index_t k = 6;
  Which which = Which::largest;
  double tol = 1e-8;             // relative: |beta s_i| <= tol * max(eps^(2/3), |theta_i|), never
                                 // below T's working precision (16 eps_T ||A||)
  index_t subspace = 0;          // basis size before a restart; 0: max(2k + 1, 20) (times the block)
  index_t block = 1;             // vectors per operator application
  index_t max_restarts = 500;    // per Lanczos pass (the first one and each check pass)
  std::uint64_t seed = 0;        // random start block (Philox)
  EigenMethod method = EigenMethod::automatic;  // automatic: dense when n <= dense_below
  index_t dense_below = 400;
  bool true_residuals = true;    // apply the operator once more to report ||A u - lambda u||
  // Missed-eigenvalue check (Lanczos only). A Krylov space grown from b start vectors holds at
  // most b copies of a repeated eigenvalue, so further copies (and members of clusters tighter
  // than the tolerance) can be missed while every returned pair is converged. With the check on,
  // once the first pass has converged its k pairs are locked and Lanczos runs again, from a fresh
  // random block, in the orthogonal complement of the locked vectors. A converged Ritz value
  // there that beats the worst locked one by more than both stopping bars was missed: it replaces
  // that one, the block size doubles (up to max(block, k)) and the check repeats until a pass
  // finds nothing that enters. A pass ends as soon as its leading Ritz value is converged, or is
  // shown by its residual r to be close to an eigenvalue well short of the worst locked one
  // (r <= a quarter of the distance). When nothing was missed this typically costs one basis
  // fill (about `subspace` operator applications) plus the restarts that separating the next
  // eigenvalue needs; a complement too small for a Krylov basis is solved exactly.
  bool check_multiplicity = true;
  // A converged eigenvalue is reported precision_limited (EigenStatus) when the tolerance asked
  // for is below T's working precision for it (16 eps_T ||A|| > tol max(eps^(2/3), |lambda|)) and
  // that floor is above precision_limit * max(eps^(2/3), |lambda|): the value is then only known
  // to +-16 eps_T ||A||, a relative uncertainty above precision_limit (max(eps^(2/3), .) is the
  // stopping test's own scale: an exact zero is judged against eps^(2/3) ~ 3.7e-11). 1e-3 (fewer
  // than three significant digits guaranteed) flags eigenvalues below ~2e-3 ||A|| in float32 and
  // below ~4e-12 ||A|| in float64.
  double precision_limit = 1e-3;
};

// Per-eigenvalue verdict.
//   converged          met the stopping test with the tolerance asked for, or with the
//                      working-precision floor while that floor is within precision_limit |lambda|
//   precision_limited  met the stopping test only at the working-precision floor, which leaves a
//                      relative uncertainty above precision_limit (compute in float64, or for
//                      float64 reformulate, e.g. shift the operator)
//   not_converged      did not meet the stopping test (max_restarts reached)
enum class EigenStatus { converged, not_converged, precision_limited };
inline constexpr auto eigen_status_names = enum_names<EigenStatus>(
    "eigen status", {{EigenStatus::converged, "converged"},
                     {EigenStatus::not_converged, "not_converged"},
                     {EigenStatus::precision_limited, "precision_limited"}});
static_assert(well_formed(eigen_status_names));
DYNASCOPE_API const char* to_string(EigenStatus s) noexcept;

template <class T>
struct EigenResult {
  std::vector<double> values;        // in the order of `which` (largest first, smallest first, ...)
  Array<T> vectors;                  // [k, n], row i = unit eigenvector of values[i]
  std::vector<double> residuals;     // ||A u_i - lambda_i u_i||
  std::vector<bool> converged;       // met the stopping test (possibly only at the precision floor;
                                     // see status). Always true on the dense path.
  std::vector<EigenStatus> status;   // the verdict per eigenvalue (see EigenStatus)
  bool all_converged = false;        // every status is converged (false when any is not_converged
                                     // or precision_limited)
  // No eigenvalue missed: true when the returned set is known to hold the k wanted eigenvalues
  // with their multiplicities. Always true on the dense path (it computes the whole spectrum);
  // on the Lanczos path true when the missed-eigenvalue check ran and ended with a pass that
  // found nothing new. False when the check is off, when the first pass did not converge (the
  // check is not run) or when a check pass did not converge within max_restarts.
  bool multiplicity_checked = false;
  index_t missed_recovered = 0;      // returned pairs found by the check, missed by the first pass
  index_t check_passes = 0;          // Lanczos passes the check ran
  index_t iterations = 0;            // restarts over all passes (Lanczos) or 1 (dense)
  index_t matvecs = 0;               // operator applications (vectors)
  EigenMethod method = EigenMethod::lanczos;  // the path taken: lanczos or dense
  std::vector<std::string> warnings; // e.g. precision-limited eigenvalues, with advice (also sent
                                     // to the context's log sink as warnings)
};

// Top-k eigenpairs of a symmetric operator. `start` rows (any number) warm-start the search, e.g.
// the eigenvectors of the previous checkpoint. Not converging is reported in the result, never
// thrown. Throws InvalidArgument for k < 1 or k > n and bad options.
// Progress (the context's sink): per Lanczos restart, task "lanczos: restart R, C/k converged,
// worst residual X (tol Y)" (X: the largest residual relative to max(eps^(2/3), |theta|); ",
// precision floor F" is added when 16 eps_T ||A|| on that scale is above tol) with done =
// restarts and total = max_restarts, and a last call "lanczos: converged | stopped at
// max_restarts after R restarts, ..." with done = total; check passes report the same as
// "lanczos missed-eigenvalue check P: ..." ("settled" when their leading value decides early).
// The dense path reports "dense eigendecomposition" 0/1 and 1/1 (and "dense: operator columns"
// while it applies a matrix-free operator to the identity).
template <class T>
DYNASCOPE_API EigenResult<T> eigsh(LinearOperator<T>& op, const LanczosOptions& options,
                                   std::optional<MatrixView<const T>> start = std::nullopt);

// All n eigenpairs of a dense symmetric matrix a [n, n] on ctx's backend, in the order of `which`
// (largest: descending): eigsh's dense path with k = n, so the same solver, result type, true
// residuals and statuses. An empty matrix gives an empty result. Throws ShapeMismatch unless a is
// square.
template <class T>
DYNASCOPE_API EigenResult<T> eigh(const Context& ctx, MatrixView<const T> a, Which which = Which::largest);

// Checks that a dense matrix is square, finite and symmetric to within tol * max|a_ij|
// (InvalidArgument / ShapeMismatch naming what is wrong otherwise).
template <class T>
DYNASCOPE_API void check_symmetric(MatrixView<const T> a, double tol = 1e-6);

// ---- spectral density and traces ----
struct SlqOptions {
  index_t steps = 90;     // m Lanczos steps per probe
  index_t probes = 10;    // n_v Rademacher probes
  std::uint64_t seed = 0;
  index_t grid = 1000;    // density grid points
  double sigma2 = -1;     // Gaussian smoothing variance; < 0: 1e-5 * max(1, spectrum range)
};

struct SpectralDensity {
  std::vector<std::vector<double>> nodes, weights;  // per probe: Ritz values theta_j, tau_j
  std::vector<double> grid, density;                // smoothed density on the grid (integrates to 1)
  double trace_estimate = 0;                        // n * mean_v sum_j tau_j theta_j
  double trace_stderr = 0;
  double sigma2 = 0;
  index_t matvecs = 0;
};

// Stochastic Lanczos quadrature (Ghorbani et al.; PyHessian's conventions): the probes run as
// one block, each with its own fully reorthogonalized recurrence. Progress: "slq: lanczos steps",
// done = steps finished out of total = steps.
template <class T>
DYNASCOPE_API SpectralDensity slq(LinearOperator<T>& op, const SlqOptions& options);

struct TraceEstimate {
  double trace = 0;
  // Standard error of `trace`: the sample standard deviation of the random quadratic forms over
  // sqrt(their count) (for Hutch++ those of the deflated operator, see hutchpp_probes). NaN when
  // it cannot be estimated (a single probe), 0 when the estimate is exact (a Hutch++ sketch that
  // spans the whole space).
  double std_error = 0;
  index_t matvecs = 0;
};
// Hutchinson: mean of z^T A z over `probes` Rademacher z (probes matvecs). Progress:
// "hutchinson: probes", done = probes applied out of `probes`.
template <class T>
DYNASCOPE_API TraceEstimate hutchinson(LinearOperator<T>& op, index_t probes, std::uint64_t seed = 0);
// Hutch++ (Meyer, Musco, Musco, Woodruff) with `probes` random vectors (>= 2): s = ceil(probes/2)
// sketch vectors S give Q = orth(A S) and the exact part tr(Q^T A Q); g = floor(probes/2)
// Rademacher probes estimate the rest, tr((I - QQ^T) A (I - QQ^T)), by Hutchinson. Operator
// applications: 2 s + g (A S, A Q, A G), so an even `probes` = 2p costs 3p, Meyer et al.'s equal
// split. std_error is that of the Hutchinson part: conditional on the sketch, whose choice does not
// bias the estimate, so its square is an unbiased estimate of the total variance. When s >= n the
// sketch spans the whole space, the trace is exact (std_error 0) and no probes are applied.
// Progress: "hutch++: operator applications", done out of 2 s + g.
template <class T>
DYNASCOPE_API TraceEstimate hutchpp_probes(LinearOperator<T>& op, index_t probes, std::uint64_t seed = 0);
// Hutch++ with a budget of `matvecs` operator applications (a positive multiple of 3): matvecs/3
// sketch vectors and matvecs/3 residual probes, as in Meyer et al.
template <class T>
DYNASCOPE_API TraceEstimate hutchpp(LinearOperator<T>& op, index_t matvecs, std::uint64_t seed = 0);

struct PowerResult {
  double value = 0;        // dominant (largest magnitude) eigenvalue estimate
  double residual = 0;     // ||A u - value u||
  index_t iterations = 0;
  bool converged = false;
};
template <class T>
DYNASCOPE_API PowerResult power_iteration(LinearOperator<T>& op, double tol = 1e-6, index_t max_iterations = 1000,
                                          std::uint64_t seed = 0);

}  // namespace dynascope::linalg
