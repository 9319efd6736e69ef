#pragma once
// The training response (Nakazato 2024) and the feature space of the hidden layers
// (docs/definitions.md).
//
// Response of the output at x' to one SGD step on x, normalised by the step:
//   R(x', x) = Delta f(x') / (-eta dl/df(x))        (-> Theta(x', x) as eta -> 0).
// With O > 1 outputs the ratio is taken along the loss gradient's direction g = dl/df(x):
//   R(x', x) = -<g, Delta f(x')> / (eta ||g||^2)     (= g^T Theta(x', x) g / ||g||^2 in the ntk form),
// which is the definition above for one output. Tracked over checkpoints t, R_t decays like
// A t^(-beta) when the network ages (beta > 0) and stays constant for a fixed kernel (beta = 0).
//
// Feature space of hidden layer l (H = a_l over the samples, [N, width]):
//   effective rank       exp(-sum_i p_i ln p_i), p_i = s_i / sum s (Roy & Vetterli), s = singular values
//   participation ratio  (sum s_i^2)^2 / sum s_i^4
//   dead neurons         a unit whose activation is exactly zero on every sample
//   duplicated neurons   a unit whose incoming (w_j, b_j) / ||(w_j, b_j)|| lies within `duplicate_tolerance`
//                        (Euclidean) of an earlier unit's (condensation); counted once per extra copy
// and the fragility: mean over samples of ||d f / d x||_F (the input Jacobian's Frobenius norm; the
// input-gradient norm for one output).
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"

namespace dynascope::response {

struct Options {
  double eta = 1e-3;                              // finite and > 0
  elasticity::Form form = elasticity::Form::step;
  model::Loss loss = model::Loss::mse;
  bool per_layer = true;  // per-layer responses from the per-layer NTK (always the kernel form)
};

// The update is always sgd (the response is defined for it); per_layer in the step form costs a
// second (ntk-form) pass. Means over no defined source are NaN.
struct Response {
  index_t samples = 0;
  Array<double> matrix;  // host, [N, N], row i = the source of the step, column j = where it is measured
  double mean_diagonal = 0;      // mean_i R(x_i, x_i)
  double mean_off_diagonal = 0;  // mean over i != j of R(x_j, x_i)
  // per_layer: layer l = 1..L at index l-1, from Theta_l; they sum to the ntk-form totals. They
  // average the same sources as the totals.
  std::vector<double> layer_diagonal, layer_off_diagonal;
  // Sources with no response (NaN rows, left out of the means), ascending: those with dl/df = 0
  // and the unresolved ones.
  std::vector<index_t> undefined_sources;
  // Of those, the step form's sources whose own change is below its precision
  // (elasticity::OutputChanges::resolution; docs/definitions.md): use float64 or the ntk form.
  std::vector<index_t> unresolved_sources;
  // With per_layer in the step form: |mean_diagonal - sum_l layer_diagonal[l]| / |sum_l layer_diagonal[l]|,
  // how far the one step is from its eta -> 0 limit (O(eta) for a sane eta; large when eta is too
  // large for a linear step or too small for the precision). NaN otherwise.
  double kernel_gap = std::numeric_limits<double>::quiet_NaN();
  double flops = 0;
};

// R over all pairs of the samples x [N, d0] with their targets (on ctx's backend). Throws
// InvalidArgument for eta <= 0, N < 2, ShapeMismatch naming `x`, `targets` or `params`.
template <class T>
DYNASCOPE_API Response training_response(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                         MatrixView<const T> x, const model::Targets<T>& targets,
                                         const Options& options);

// ---- Aging fit ----
// R_t ~ A t^(-beta) by least squares of ln R on ln t over the points with t_min <= t <= t_max
// (t > 0 and finite R > 0 only: the window's other points are skipped and counted in `skipped`;
// points outside the window are simply not used), with a two-sided `confidence` interval
// for beta from Student's t with points - 2 degrees of freedom. InvalidArgument when fewer than 3
// points remain (naming the window), for mismatched lengths, or a confidence outside (0, 1).
struct PowerLawFit {
  double amplitude = 0, beta = 0, beta_low = 0, beta_high = 0;
  double beta_stderr = 0, r_squared = 0, confidence = 0.95;  // r_squared = 1 for an exactly constant ln R
  index_t points = 0, skipped = 0;
};
DYNASCOPE_API PowerLawFit fit_power_law(std::span<const double> t, std::span<const double> r, double t_min,
                                        double t_max, double confidence = 0.95);
// The p-quantile of Student's t distribution with `dof` degrees of freedom (dof > 0, 0 < p < 1),
// to ~1e-12 relative; +-infinity where it lies beyond the double range (tiny dof, p near 0 or 1).
DYNASCOPE_API double student_t_quantile(double p, double dof);

// ---- Feature space ----
// Both are 0 when every singular value is zero or none are given (a degenerate layer), and
// between 1 and the number of values otherwise; InvalidArgument for a negative or non-finite value.
DYNASCOPE_API double effective_rank(std::span<const double> singular_values);
DYNASCOPE_API double participation_ratio(std::span<const double> singular_values);
// All min(N, width) singular values of h [N, width] (on ctx's backend), descending, in float64
// (eigenvalues of the smaller Gram matrix; those below max(N, width) * eps * the largest, the
// Gram's own rounding, are reported as 0 so that a rank-r matrix has r non-zero values). On cuda h
// is copied to the host. InvalidArgument for a non-finite entry.
template <class T>
DYNASCOPE_API std::vector<double> singular_values(const Context& ctx, MatrixView<const T> h);
// Units of a layer whose activations a [N, width] are exactly zero on every sample (InvalidArgument
// when a has no rows).
template <class T>
DYNASCOPE_API index_t count_dead(const Context& ctx, MatrixView<const T> a);
// Units among the rows of w [width, fan_in] (with bias b [width], or none) that duplicate an
// earlier unit: || u_j - u_k ||_2 <= tolerance for unit vectors u = (w_j, b_j) / ||(w_j, b_j)||.
// Zero rows duplicate nothing. The tolerance applies to the raw (w_j, b_j), not to the scaled
// weights of the NTK parameterization (exact duplicates are the same either way). Host or device
// memory per ctx.
template <class T>
DYNASCOPE_API index_t count_duplicated(const Context& ctx, MatrixView<const T> w, VectorView<const T> b,
                                       double tolerance);

struct FeatureOptions {
  double duplicate_tolerance = 1e-3;
};
struct LayerFeatures {
  index_t layer = 0, width = 0;  // hidden layer l = 1..L-1
  double effective_rank = 0, participation_ratio = 0;
  index_t dead = 0, duplicated = 0;
};
struct FeatureSpace {
  std::vector<LayerFeatures> layers;  // one per hidden layer
  double input_grad_norm = 0;         // mean over samples of ||df/dx||_F
};
template <class T>
DYNASCOPE_API FeatureSpace feature_space(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                         MatrixView<const T> x, const FeatureOptions& options = {});

}  // namespace dynascope::response
