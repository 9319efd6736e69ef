#pragma once
// Spectra of symmetric operators (DIAGNOSTICS.md section 2): top-k eigenpairs by thick-restart
// block Lanczos with full reorthogonalization, a dense path behind the same interface, stochastic
// Lanczos quadrature, Hutchinson / Hutch++ traces and power iteration.
//
// An operator is "Y = A X for a block of vectors": the rows of X and Y are vectors of length
// size(), on the operator's context. Built in: a dense symmetric matrix, the NTK in function
// space, the Gauss-Newton matrix J^T H_loss J and the exact loss Hessian in parameter space, and a
// caller-supplied callback (a framework's own autograd).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dynascope/engine.hpp"
#include "dynascope/train.hpp"

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

// The empirical NTK J J^T in function space over the N samples of x (size N*O).
template <class T>
class DYNASCOPE_API NtkFunctionOperator final : public LinearOperator<T> {
 public:
  NtkFunctionOperator(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x);
  ~NtkFunctionOperator() override;
  index_t size() const override;
  void apply(MatrixView<const T> x, MatrixView<T> y) override;
  const Context& context() const override { return ctx_; }

 private:
  Context ctx_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Curvature of L(w) = loss(f(X; w), Y) in parameter space (size P): the Gauss-Newton matrix
// G = J^T H_loss J, or the exact Hessian (forward-over-reverse, no finite differences).
enum class Curvature { gauss_newton, hessian };

template <class T>
class DYNASCOPE_API CurvatureOperator final : public LinearOperator<T> {
 public:
  // x [N, D] and the targets stay owned by the caller.
  CurvatureOperator(const Context& ctx, Curvature kind, const model::MlpSpec& spec, const T* params,
                    MatrixView<const T> x, const model::Targets<T>& targets, model::Loss loss);
  ~CurvatureOperator() override;
  index_t size() const override;
  void apply(MatrixView<const T> v, MatrixView<T> y) override;
  const Context& context() const override { return ctx_; }
  double loss_value() const;  // L(w) at the parameters

 private:
  Context ctx_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- top-k eigenpairs ----
enum class Which { largest, smallest, magnitude };
DYNASCOPE_API Which parse_which(const std::string& text);
DYNASCOPE_API const char* to_string(Which w) noexcept;

enum class EigenMethod { automatic, lanczos, dense };

struct LanczosOptions {
  index_t k = 6;
  Which which = Which::largest;
  double tol = 1e-8;             // relative: |beta s_i| <= tol * max(eps^(2/3), |theta_i|), never
                                 // below T's working precision (16 eps_T ||A||)
  index_t subspace = 0;          // basis size before a restart; 0: max(2k + 1, 20) (times the block)
  index_t block = 1;             // vectors per operator application
  index_t max_restarts = 500;
  std::uint64_t seed = 0;        // random start block (Philox)
  EigenMethod method = EigenMethod::automatic;  // automatic: dense when n <= dense_below
  index_t dense_below = 400;
  bool true_residuals = true;    // apply the operator once more to report ||A u - lambda u||
};

template <class T>
struct EigenResult {
  std::vector<double> values;        // in the order of `which` (largest first, smallest first, ...)
  Array<T> vectors;                  // [k, n], row i = unit eigenvector of values[i]
  std::vector<double> residuals;     // ||A u_i - lambda_i u_i||
  std::vector<bool> converged;
  bool all_converged = false;
  index_t iterations = 0;            // restarts (Lanczos) or 1 (dense)
  index_t matvecs = 0;               // operator applications (vectors)
  std::string method;                // "lanczos" or "dense"
};

// Top-k eigenpairs of a symmetric operator. `start` rows (any number) warm-start the search, e.g.
// the eigenvectors of the previous checkpoint. Not converging is reported in the result, never
// thrown. Throws InvalidArgument for k < 1 or k > n and bad options.
template <class T>
DYNASCOPE_API EigenResult<T> eigsh(LinearOperator<T>& op, const LanczosOptions& options,
                                   std::optional<MatrixView<const T>> start = std::nullopt);

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
// one block, each with its own fully reorthogonalized recurrence.
template <class T>
DYNASCOPE_API SpectralDensity slq(LinearOperator<T>& op, const SlqOptions& options);

struct TraceEstimate {
  double trace = 0;
  double stderr_ = 0;  // standard error (Hutchinson)
  index_t matvecs = 0;
};
// Hutchinson: mean of z^T A z over Rademacher z.
template <class T>
DYNASCOPE_API TraceEstimate hutchinson(LinearOperator<T>& op, index_t probes, std::uint64_t seed = 0);
// Hutch++ (Meyer, Musco, Musco, Woodruff) with `matvecs` operator applications (a multiple of 3).
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
