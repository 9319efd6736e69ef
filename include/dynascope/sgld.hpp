#pragma once
// The local learning coefficient (Lau, Furman, Wang, Murfet, Wei) by batched SGLD chains
// (docs/definitions.md, "Local learning coefficient").
//
// Chains sample the localized tempered posterior around trained weights w*:
//   p(w) ∝ exp(-nβ L_n(w) - (γ/2) |w - w*|^2),
// one SGLD step per chain c with its own minibatch B_t:
//   w <- w - (ε/2) [nβ ∇L_B(w) + γ (w - w*)] + sqrt(ε) ξ,  ξ ~ N(0, I),
// and the estimate is λ̂ = nβ (mean over draws of L_B(w_t) - L_n(w*)), the minibatch loss recorded
// before each update, after burn-in, every `thin`-th step.
//
// All C chains run together: parameters [C, P] (chain-major), one batched forward/backward per step
// (model::BatchedMlpEngine), one fused update over all chains. Random numbers are Philox keyed by
// (seed, chain, step, element), so chain c's trajectory does not depend on how many chains run,
// and is the same on both backends up to rounding.
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"

namespace dynascope::sgld {

enum class Sampler {
  sgld,          // the plain step above
  rmsprop_sgld,  // preconditioned by a running RMS of the gradients (Li et al. 2016; devinterp's RMSpropSGLD)
};
inline constexpr auto sampler_names = enum_names<Sampler>(
    "sampler", {{Sampler::sgld, "sgld"},
                {Sampler::rmsprop_sgld, "rmsprop-sgld"},
                {Sampler::rmsprop_sgld, "rmsprop_sgld", Spelling::alias}});
static_assert(well_formed(sampler_names));
DYNASCOPE_API Sampler parse_sampler(const std::string& text);
DYNASCOPE_API const char* to_string(Sampler sampler) noexcept;

// The inverse temperature nβ.
enum class NBeta {
  dataset,  // n / ln n (the paper's choice; default)
  batch,    // m / ln m with m the minibatch size (devinterp's default_nbeta)
  value,    // LlcOptions::nbeta as given
};
inline constexpr auto nbeta_names = enum_names<NBeta>(
    "nbeta rule", {{NBeta::dataset, "auto"}, {NBeta::dataset, "dataset", Spelling::alias},
                   {NBeta::batch, "batch"}, {NBeta::value, "value"}});
static_assert(well_formed(nbeta_names));

// Where L_n(w*) comes from.
enum class InitLoss {
  full,       // the loss of the whole dataset at w* (default)
  minibatch,  // the mean minibatch loss at w* over the batches of the first draw step of every chain
};
inline constexpr auto init_loss_names = enum_names<InitLoss>(
    "init loss", {{InitLoss::full, "full"}, {InitLoss::minibatch, "minibatch"}});
static_assert(well_formed(init_loss_names));

struct LlcProgress {
  index_t step = 0;          // steps done (burn-in included)
  index_t total_steps = 0;   // burnin + draws * thin
  index_t draws = 0;         // draws recorded so far
  index_t diverged = 0;      // chains with a non-finite draw so far
  double llc_mean = std::numeric_limits<double>::quiet_NaN();  // over the draws so far (healthy chains)
};

struct LlcOptions {
  static constexpr double kUnset = std::numeric_limits<double>::quiet_NaN();
  index_t chains = 8;
  index_t draws = 200;     // recorded draws per chain
  index_t burnin = 100;    // steps before the first draw
  index_t thin = 1;        // steps per draw (the draw is the loss before the first of them)
  double epsilon = 1e-4;   // step size ε > 0
  double gamma = 100.0;    // localization γ >= 0
  NBeta nbeta_rule = NBeta::dataset;
  double nbeta = kUnset;   // used when nbeta_rule == NBeta::value (> 0)
  index_t batch = 0;       // minibatch size m per chain and step, drawn with replacement; 0 = full batch
  Sampler sampler = Sampler::sgld;
  double rmsprop_alpha = 0.99;  // decay of the running mean of squared gradients
  double rmsprop_eps = 0.1;     // added to its square root
  // Restricted LLC: only parameters with mask[i] != 0 move (empty: all). Length P.
  std::vector<std::uint8_t> mask;
  // > 0: every parameter is clamped to [w*_i - box, w*_i + box] after each step.
  double bounding_box = 0;
  InitLoss init_loss = InitLoss::full;
  bool mala = true;        // estimate the Metropolis-adjusted acceptance (costs one more [C, P] buffer)
  std::uint64_t seed = 0;
  // Called every `progress_every` steps (0: about 100 times per run) and at the end; returning
  // false cancels the run (estimate_llc then throws dynascope::Cancelled).
  std::function<bool(const LlcProgress&)> on_progress;
  index_t progress_every = 0;
};

struct LlcResult {
  index_t chains = 0, draws = 0;
  double llc_mean = 0;    // mean of llc_per_chain over the chains that did not diverge
  double llc_std = 0;     // their standard deviation (n - 1)
  double llc_stderr = 0;  // llc_std / sqrt(healthy chains): chains are independent
  std::vector<double> llc_per_chain;  // NaN for a diverged chain
  double init_loss = 0;   // L_n(w*)
  double nbeta = 0;
  index_t n = 0;          // dataset size
  double r_hat = std::numeric_limits<double>::quiet_NaN();  // split rank-normalized R-hat of the loss trace
  double ess = std::numeric_limits<double>::quiet_NaN();    // bulk effective sample size of the loss trace
  double mala_acceptance = std::numeric_limits<double>::quiet_NaN();  // mean MALA acceptance probability
  std::vector<double> loss_trace;      // [chains, draws] row-major: L_B(w) at each draw
  std::vector<double> distance_trace;  // [chains, draws]: |w - w*| at each draw
  std::map<index_t, index_t> diverged; // chain -> first draw whose loss or distance is not finite
  std::vector<std::string> warnings;   // an unhealthy trace, in words
  double gradient_evaluations = 0;     // full-dataset gradient equivalents spent: chains * steps * m / n
  double seconds = 0;
};

// Estimate the LLC of an MLP at params (w*, [P] on ctx's backend) for a dataset x [n, d_0] with
// targets. Throws InvalidArgument naming the option for ε <= 0, γ < 0, chains/draws < 1,
// burnin < 0, thin < 1, batch < 0 or > n, n = 0, a mask of the wrong length, nβ <= 0;
// ShapeMismatch for x or targets of the wrong shape.
template <class T>
DYNASCOPE_API LlcResult estimate_llc(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                     MatrixView<const T> x, const model::Targets<T>& targets, model::Loss loss,
                                     const LlcOptions& options);

// A batched loss and gradient: for C parameter sets [C, P] (on ctx's backend) and, per set, the
// sample indices of its minibatch [C, m] (int64, on ctx's backend; m = 0 columns for the full
// dataset), write each set's mean loss over its samples into losses [C] and its gradient into
// grads [C, P] (both on ctx's backend). Called once per step with every chain.
template <class T>
struct LossGradRequest {
  MatrixView<const T> params;                  // [C, P]
  MatrixView<const std::int64_t> batch;        // [C, m]; cols == 0: full batch
  index_t step = 0;
  VectorView<T> losses;                        // [C], out
  MatrixView<T> grads;                         // [C, P], out
};
template <class T>
using BatchedLossGrad = std::function<void(const LossGradRequest<T>&)>;

// The same sampler over any model: w_star [P] on ctx's backend, n the dataset size (minibatch
// indices are drawn from [0, n); nβ's rule uses it). Full-batch mode calls fn with 0 batch columns.
template <class T>
DYNASCOPE_API LlcResult estimate_llc(const Context& ctx, const BatchedLossGrad<T>& fn, VectorView<const T> w_star,
                                     index_t n, const LlcOptions& options);

// The ε x nβ sweep that calibration needs: one estimate per pair, with its health.
struct CalibrationPoint {
  double epsilon = 0, nbeta = 0;
  LlcResult result;
};
template <class T>
DYNASCOPE_API std::vector<CalibrationPoint> calibrate(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                                      MatrixView<const T> x, const model::Targets<T>& targets,
                                                      model::Loss loss, const LlcOptions& options,
                                                      const std::vector<double>& epsilons,
                                                      const std::vector<double>& nbetas);

}  // namespace dynascope::sgld
