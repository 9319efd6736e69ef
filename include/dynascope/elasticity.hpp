#pragma once
// Local elasticity (He & Su 2020; Dan, Mukherjee, Das, Gampa 2023; docs/definitions.md): how one
// training step on a source sample x moves the network's outputs at a target sample x'.
//
// The step on source i (with its target y_i and the per-sample loss l_i = loss(f(x_i; w), y_i):
// mse = mean over the O outputs of (f - y)^2, xent = -log softmax(f)_y):
//   sgd   w+_i = w - eta * g_i,                       g_i = grad_w l_i
//   adam  w+_i = w - eta * g_i / (|g_i| + eps)        (a fresh Adam's bias-corrected first step,
//                                                      elementwise; ~ -eta * sign(g_i))
// and the output changes Delta_i(x') = f(x'; w+_i) - f(x'; w).
//
// Forms:
//   step  the update is taken: all N1 sources' w+_i go through one batched-parameters forward over
//         the targets (model::BatchedMlpEngine), tiled under the workspace budget; never one model
//         copy per source in a loop. For sgd the stepped first layer is W1 minus a rank-one matrix
//         and is applied to z_1 directly (exact up to rounding; ~2.4x fewer flops on MNIST-sized
//         inputs).
//   ntk   the eta -> 0 limit: Delta_i(x') = -eta * Theta(x', x_i) dl_i/df, contracted layer by
//         layer (the structured NTK's factors with the backpropagated dl_i/df: two GEMMs per layer,
//         never the O x O kernel blocks). Exact for a model linear in its parameters;
//         for small steps that float32 cannot resolve. Only the sgd update has this limit.
//
// Metrics, S_rel(x_i, x'_j) = m(x'_j; i) / m(x_i; i):
//   abs        m = ||Delta||_2 of the outputs (|Delta| for one output). Value targets only.
//   l2         m = ||softmax f(w+) - softmax f(w)||_2 (the original measure adapted to classes).
//              In the ntk form its eta -> 0 limit: ||F Delta||_2, F = diag p - p p^T (below).
//   kl         m = KL(p_w || p_w+) = sum_k p_k (log p_k - log q_k), p = softmax f(w),
//              q = softmax f(w+), in float64 from the logits. In the ntk form, the eta -> 0 limit
//              of the ratio: Delta'^T F' Delta' / Delta^T F Delta, F = diag p - p p^T (m itself
//              is then 1/2 Delta^T F Delta, the leading term of the KL).
//   kl_compat  m = mean_k q_k (log q_k - p_k): what the reference notebooks' F.kl_div(p, q) call
//              computes (probabilities where log-probabilities belong; not a divergence), offered
//              only to compare with published numbers. step form only.
//   automatic  abs for value targets, kl for labels.
// l2, kl and kl_compat need class labels. For one output and abs the kernel form is also given:
//   S_ker(x_i, x'_j) = Delta_i(x'_j) / (-eta * dl_i/df(x_i))   (-> Theta(x'_j, x_i)).
// A source whose own change m(x_i; i) is zero (e.g. a zero loss gradient) has no S_rel: its row
// is NaN and the source is listed in undefined_sources (never silently averaged).
//
// Precision. In the step form a change is the difference of two forwards in T, so changes at the
// level of T's rounding are noise. OutputChanges::resolution is that level, 32 * epsilon of T
// (0 in the ntk form, whose changes are products, not differences). A source is *unresolved*
// when its gradient is non-zero (dl_i/df != 0 and J_i^T dl_i/df != 0) but its own change is at the
// rounding level:
//   max_a |Delta_i(x_i)_a| <= resolution * max(1, max_a |f(x_i; w)_a|, max_a |f(x_i; w+_i)_a|)
// (a confident source with a tiny loss gradient, or a tiny eta). It gets a NaN row like a source
// without a gradient, and is listed apart: float64 or the ntk form resolves it.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"

namespace dynascope::elasticity {

enum class Update { sgd, adam };
inline constexpr auto update_names = enum_names<Update>("update", {{Update::sgd, "sgd"}, {Update::adam, "adam"}});
static_assert(well_formed(update_names));
enum class Form { step, ntk };
inline constexpr auto form_names = enum_names<Form>("form", {{Form::step, "step"}, {Form::ntk, "ntk"}});
static_assert(well_formed(form_names));
enum class Metric { automatic, abs, l2, kl, kl_compat };
inline constexpr auto metric_names = enum_names<Metric>(
    "elasticity metric", {{Metric::automatic, "auto"},
                          {Metric::abs, "abs"},
                          {Metric::l2, "l2"},
                          {Metric::kl, "kl"},
                          {Metric::kl_compat, "kl-compat"},
                          {Metric::kl_compat, "kl_compat", Spelling::alias}});
static_assert(well_formed(metric_names));
DYNASCOPE_API Update parse_update(const std::string& text);
DYNASCOPE_API Form parse_form(const std::string& text);
DYNASCOPE_API Metric parse_metric(const std::string& text);
DYNASCOPE_API const char* to_string(Update u) noexcept;
DYNASCOPE_API const char* to_string(Form f) noexcept;
DYNASCOPE_API const char* to_string(Metric m) noexcept;

struct Options {
  double eta = 1e-3;  // step size, finite and > 0
  Update update = Update::sgd;
  double adam_eps = 1e-8;  // torch.optim.Adam's default
  Form form = Form::step;
  Metric metric = Metric::automatic;
  model::Loss loss = model::Loss::mse;
};

// The metric `metric` resolves to for value targets (labels = false) or class labels, checked
// against the form and update: InvalidArgument naming the metric, form or update otherwise (abs on
// labels, a class metric on value targets, kl_compat in the ntk form, adam in the ntk form,
// eta <= 0 or not finite, adam_eps <= 0).
DYNASCOPE_API Metric resolve(const Options& options, bool labels);

// The shared core of elasticity and the training response: for sources x1 [N1, d0] with their
// targets and targets of the move x2 [N2, d0] (absent: x2 = x1), all in float64 on the host:
struct OutputChanges {
  index_t sources = 0, targets = 0, outputs = 0;  // N1, N2, O
  Array<double> base1;       // [N1, O]  f(x1; w)
  Array<double> base2;       // [N2, O]  f(x2; w)
  Array<double> loss_grad;   // [N1, O]  dl_i/df at x_i (the per-sample loss above)
  Array<double> self_delta;  // [N1, O]  Delta_i(x_i) (without x2: the diagonal of delta, so S_rel(x_i, x_i) = 1 exactly)
  Array<double> delta;       // [N1, N2 * O], row i, columns j*O..j*O+O-1: Delta_i(x2_j)
  // With per_layer (ntk form only): L arrays like `delta` from the per-layer kernels Theta_l,
  // summing to `delta` to rounding; self_delta likewise in layer_self_delta.
  std::vector<Array<double>> layer_delta, layer_self_delta;
  double flops = 0;  // floating-point operations of the model's products (forwards, gradients, kernels)
  double eta = 0;    // the step size the changes were computed with (S_ker divides by it)
  // The rounding level of the step form's changes: 32 * epsilon of T (0 in the ntk form).
  double resolution = 0;
  // Step form: the sources with a non-zero gradient whose own change is at the rounding level
  // (the criterion above), ascending. Always empty in the ntk form. metrics() and the training
  // response take this list as it is.
  std::vector<index_t> unresolved_sources;
};

// Throws ShapeMismatch naming `x1`, `x2`, `targets` or `params` for inconsistent shapes,
// InvalidArgument for empty inputs or options that resolve() refuses (metric excepted), and for
// per_layer in the step form. Memory: the output arrays (N1 * N2 * O doubles for delta) plus
// device tiles bounded by ctx.workspace_budget(). Inputs, targets and params live on ctx's backend.
// Progress goes to ctx.progress as "<progress_label>: ..." in (source, target) pairs, after every
// target tile of every group of sources.
template <class T>
DYNASCOPE_API OutputChanges output_changes(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                           MatrixView<const T> x1, const model::Targets<T>& y1,
                                           std::optional<MatrixView<const T>> x2, const Options& options,
                                           bool per_layer = false, std::string_view progress_label = "elasticity");

struct PairResult {
  Metric metric = Metric::abs;              // resolved
  Array<double> s_rel;                      // [N1, N2]
  Array<double> s_ker;                      // [N1, N2] for abs with one output; empty otherwise
  std::vector<double> self_change;          // [N1] m(x_i; i), the denominators
  // Every source without an S_rel (NaN rows), ascending: those with no own change (a zero loss
  // gradient, or one the step does not pass to the parameters) and the unresolved ones.
  std::vector<index_t> undefined_sources;
  // Of those, the sources whose gradient is non-zero but whose own change is below the precision
  // of the step form (OutputChanges::resolution): use float64 or the ntk form for them.
  std::vector<index_t> unresolved_sources;
  double flops = 0;
};

// S_rel (and S_ker) for every (source, target) pair.
template <class T>
DYNASCOPE_API PairResult pairwise(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                  MatrixView<const T> x1, const model::Targets<T>& y1,
                                  std::optional<MatrixView<const T>> x2, const Options& options);

// The metric applied to output changes already computed (what pairwise does after output_changes).
// The unresolved sources are changes.unresolved_sources (ShapeMismatch naming it for an index
// outside the sources).
DYNASCOPE_API PairResult metrics(const OutputChanges& changes, Metric resolved, Form form);

// ---- Class-pair matrices ----
// For labels1 [N1] of the sources and labels2 [N2] of the targets (classes 0..C-1), the class
// matrix M[a][b] = mean of S_rel over the pairs (source of class a, target of class b), excluding
// undefined (NaN) entries and, when same_set (targets are the sources), the pairs of a sample with
// itself. within = mean of the C diagonal entries, across = mean of the C(C-1) off-diagonal
// entries, ratio = within / across (the single number for "how local"). Entries with no pair are
// NaN and left out of within/across (counted in empty_cells).
struct ClassMatrix {
  index_t classes = 0;
  Array<double> matrix;          // [C, C]
  Array<std::int64_t> pairs;     // [C, C] the number of pairs averaged in each entry
  double within = 0, across = 0, ratio = 0;
  index_t empty_cells = 0;
};
DYNASCOPE_API ClassMatrix class_matrix(MatrixView<const double> s_rel, VectorView<const std::int64_t> labels1,
                                       VectorView<const std::int64_t> labels2, index_t classes, bool same_set);

// The samples for K x K pairs per ordered class pair: K distinct samples of every class, drawn
// without replacement by Philox keyed by (seed, class), listed class by class (indices into the
// labels, ascending within a class). Sources and targets each take this draw from their own
// labels (with one set, the same draw serves both). InvalidArgument naming the class, its count
// and K when a class has fewer than K samples, or for K < 1.
DYNASCOPE_API std::vector<std::int64_t> sample_per_class(VectorView<const std::int64_t> labels, index_t classes,
                                                         index_t k, std::uint64_t seed);

}  // namespace dynascope::elasticity
