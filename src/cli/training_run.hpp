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
  // NaN: the optimizer's default (model::OptimizerOptions).
  double lr = model::OptimizerOptions::kDefault, momentum = model::OptimizerOptions::kDefault, eps = 1e-8,
         weight_decay = model::OptimizerOptions::kDefault;
  std::string betas = "0.9,0.999";
  index_t steps = 1000;
  index_t batch = 0;
  index_t save_every = 0;
  std::string out_dir;
  bool overwrite = false;
};
void add_train_flags(CLI::App& cmd, TrainFlags& f);
// --out-dir DIR and --overwrite.
void add_out_dir_flags(CLI::App& cmd, TrainFlags& f, const std::string& what);
model::OptimizerOptions optimizer_options(const TrainFlags& f);

// Makes the run folder ready before any work: created if missing; a folder that holds an earlier
// run (step_*.safetensors, train.csv, report.json) is refused unless --overwrite, which removes
// exactly those files first, so two runs never mix.
void prepare_out_dir(const TrainFlags& f);

// The whole configuration of a run, for report.json and the train result: command line, version,
// backend, dtype, seed, network, data, loss, optimizer (with defaults filled in) and schedule.
json run_config(const std::string& command, const CommonOptions& common, const Context& ctx, const ModelFlags& model,
                const DataFlags& data, const TrainFlags& train, const model::MlpSpec& spec,
                const model::LoadInfo& source, const data::Split& split, model::Loss loss);
// The command line as given, for the record.
void remember_command_line(int argc, char** argv);

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
