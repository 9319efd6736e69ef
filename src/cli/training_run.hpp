#pragma once
// One training run as the train and demo commands do it: checkpoints, train.csv, evaluation of
// the train and test sets at each checkpoint, progress on stderr.
#include <functional>
#include <vector>

#include "cli/model_flags.hpp"

namespace dynascope::cli {

struct TrainFlags {
  std::string loss;  // empty: by dataset
  std::string optimizer = "sgd";
  double lr = -1, momentum = -1, eps = 1e-8, weight_decay = -1;
  std::string betas = "0.9,0.999";
  index_t steps = 1000;
  index_t batch = 0;
  index_t save_every = 0;
  std::string out_dir;
};
void add_train_flags(CLI::App& cmd, TrainFlags& f);
model::OptimizerOptions optimizer_options(const TrainFlags& f);

struct CheckpointRow {
  index_t step = 0;
  model::LossValue train, test;
  std::string file;  // the checkpoint written, if any
};

// Trains and returns the evaluation rows (one per checkpoint). `at_checkpoint` lets the caller
// measure more at each checkpoint (the demo's diagnostics).
template <class T>
struct RunOutcome {
  model::TrainResult result;
  std::vector<CheckpointRow> rows;
  model::Loss loss = model::Loss::mse;
};
template <class T>
RunOutcome<T> run_training(const Context& ctx, const CommonOptions& common, const TrainFlags& flags, model::Mlp<T>& net,
                           const data::Split& split, bool write_checkpoints,
                           const std::function<void(index_t step, const Array<T>& params)>& at_checkpoint = {});

}  // namespace dynascope::cli
