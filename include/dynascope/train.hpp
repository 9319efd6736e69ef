#pragma once
// Optimizers with PyTorch's update rules and a small trainer (a convenience for examples,
// benchmarks and the demo). The losses it trains with are in losses.hpp.
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dynascope/datasets.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/losses.hpp"

namespace dynascope::model {

enum class OptimizerKind { sgd, momentum, adam, adamw };
inline constexpr auto optimizer_names = enum_names<OptimizerKind>(
    "optimizer", {{OptimizerKind::sgd, "sgd"},
                  {OptimizerKind::momentum, "momentum"},
                  {OptimizerKind::adam, "adam"},
                  {OptimizerKind::adamw, "adamw"}});
static_assert(well_formed(optimizer_names));
DYNASCOPE_API OptimizerKind parse_optimizer(const std::string& text);
DYNASCOPE_API const char* to_string(OptimizerKind kind) noexcept;

// betas (0.9, 0.999) and eps 1e-8 are PyTorch's defaults. lr, momentum and weight_decay left NaN
// take the kind's default (lr 1e-2 for sgd/momentum, 1e-3 for adam/adamw; momentum 0.9 for
// momentum; weight decay 1e-2 for adamw, else 0). resolved() fills them in and checks every
// value as PyTorch's optimizers do: lr >= 0, momentum >= 0, 0 <= beta1, beta2 < 1, eps >= 0,
// weight_decay >= 0 (and all finite), else InvalidArgument.
struct OptimizerOptions {
  static constexpr double kDefault = std::numeric_limits<double>::quiet_NaN();
  OptimizerKind kind = OptimizerKind::sgd;
  double lr = kDefault;
  double momentum = kDefault;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = kDefault;
  DYNASCOPE_API OptimizerOptions resolved() const;  // defaults filled in, values checked
};

// One optimizer state over P parameters on ctx's backend. step() applies PyTorch's update:
//  sgd:      g += wd p;  p -= lr g
//  momentum: g += wd p;  buf = mu buf + g;  p -= lr buf
//  adam:     g += wd p;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//            p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
//  adamw:    p *= 1 - lr wd;  then adam without the decay term
template <class T>
class DYNASCOPE_API Optimizer {
 public:
  Optimizer(const Context& ctx, const OptimizerOptions& options, index_t params);
  void step(T* params, const T* grad);
  index_t steps() const { return t_; }
  const OptimizerOptions& options() const { return opts_; }

 private:
  Context ctx_;
  OptimizerOptions opts_;
  index_t n_ = 0, t_ = 0;
  Array<T> m_, v_;
};

struct TrainRecord {
  index_t step = 0;         // updates done before this record (0 = initialisation)
  double loss = 0;          // minibatch loss before the update of this step
  double accuracy = -1;     // minibatch accuracy, -1 for regression
};

template <class T>
struct TrainOptions {
  Loss loss = Loss::mse;
  OptimizerOptions optimizer;
  index_t steps = 1000;
  index_t batch = 0;        // 0: full batch
  std::uint64_t seed = 0;   // minibatch order
  index_t checkpoint_every = 0;  // 0: only the end
  // Further checkpoints at these steps (each in 1..steps, any order, repeats allowed), on top of
  // checkpoint_every: e.g. log-spaced steps, so that the early phase of training is sampled as
  // densely as the late one (log_spaced_steps).
  std::vector<index_t> checkpoint_steps;
  // Called with every minibatch record (before the update).
  std::function<void(const TrainRecord&)> on_record;
  // Called at step 0, every checkpoint_every steps, at checkpoint_steps and at the end, with the
  // parameters then; once per step, in increasing order.
  std::function<void(index_t step, const Array<T>& params)> on_checkpoint;
};

// `count` steps spaced evenly in log(step) over [1, steps]: round(steps^(i/count)), i = 1..count,
// repeats dropped (so fewer than `count` when steps is small), increasing, the last one `steps`.
// count >= 0, steps >= 0; empty when either is 0.
DYNASCOPE_API std::vector<index_t> log_spaced_steps(index_t steps, index_t count);

struct TrainResult {
  index_t steps = 0;
  double final_loss = 0;       // full training set, after the last step
  double final_accuracy = -1;
  bool diverged = false;       // a non-finite loss stopped training
  index_t diverged_at = -1;
};

// Trains `net` in place on `data` (host dataset, converted to T and copied to ctx's backend).
// Minibatches: each epoch a Philox permutation of the samples (seed, epoch), consecutive slices.
// A non-finite loss stops training and is reported in the result, not thrown.
template <class T>
DYNASCOPE_API TrainResult train(const Context& ctx, Mlp<T>& net, const data::Dataset& data,
                                const TrainOptions<T>& options);

// A dataset on ctx's backend in precision T (inputs only when the dataset has no targets).
template <class T>
struct DYNASCOPE_API DeviceData {
  Array<T> x;                 // [N, D]
  Array<T> y;                 // [N, O] regression targets (empty for classification)
  Array<std::int64_t> labels; // [N] (empty for regression)
  index_t n = 0;
  Targets<T> targets() const;
  Targets<T> targets(index_t row0, index_t rows) const;
};
template <class T>
DYNASCOPE_API DeviceData<T> to_device(const Context& ctx, const data::Dataset& data);

// Loss and accuracy of the network on a whole dataset, tiled under the workspace budget.
template <class T>
DYNASCOPE_API LossValue evaluate(const Context& ctx, MlpEngine<T>& engine, const T* params, const DeviceData<T>& data,
                                 Loss loss);

}  // namespace dynascope::model
