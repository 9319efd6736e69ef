#pragma once
// One training run as the train and demo commands do it: checkpoints, train.csv, evaluation of
// the train and test sets at each checkpoint, progress on stderr.
#include <functional>
#include <string>
#include <vector>

#include "cli/model_flags.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/regions.hpp"
#include "dynascope/response.hpp"
#include "dynascope/sgld.hpp"

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
  index_t save_log = 0;  // further checkpoints at this many log-spaced steps
  std::string out_dir;
  bool overwrite = false;
};
void add_train_flags(CLI::App& cmd, TrainFlags& f);
// --out-dir DIR and --overwrite.
void add_out_dir_flags(CLI::App& cmd, TrainFlags& f, const std::string& what);
model::OptimizerOptions optimizer_options(const TrainFlags& f);

// Makes the run folder ready before any work: created if missing; a folder that holds an earlier
// run (step_*.safetensors, train.csv, report.json, the report/ folder of figures, and the demo's
// hessian_density.csv, lc.csv, llc.csv, llc_trace_last.npy, elasticity.csv, elasticity_first.npy,
// elasticity_last.npy, response.csv, region_map_first.png and region_map_last.png) is refused
// unless --overwrite, which removes exactly those (report/ with its contents) first, so two runs
// never mix.
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
// measure more at each checkpoint (the demo's diagnostics); `file` is the checkpoint written (empty
// when none is).
template <class T>
struct RunOutcome {
  model::TrainResult result;
  std::vector<CheckpointRow> rows;
  model::Loss loss = model::Loss::mse;
};
template <class T>
RunOutcome<T> run_training(const Context& ctx, const CommonOptions& common, const TrainFlags& flags, model::Mlp<T>& net,
                           const data::Split& split, bool write_checkpoints,
                           const std::function<void(index_t step, const Array<T>& params, const std::string& file)>&
                               at_checkpoint = {});

// The step_*.safetensors of a run folder in step order, with their steps; UsageError naming
// `flag` when the folder is missing or holds none.
std::vector<std::pair<index_t, std::string>> run_checkpoints(const std::string& flag, const std::string& dir);

// ---- Local complexity along training: shared by `lc --checkpoints` and the demo ------------------
// The same point sets, CSV columns and JSON rows in both, so that the demo's lc.csv is what
// `dynascope lc --checkpoints` writes for the same run, data flags, radius, dims and seed.

// The per-column bounds of x [n, d] (row-major, n >= 1).
struct BoundingBox {
  std::vector<double> lo, hi;
  double diagonal() const;  // |hi - lo|
};
BoundingBox bounding_box(const std::vector<double>& x, index_t n, index_t d);

// m uniform points [m, d] in the bounding box of x [n, d], a function of seed only.
std::vector<double> random_in_box(const std::vector<double>& x, index_t n, index_t d, index_t m, std::uint64_t seed);

template <class T>
struct LcPointSet {
  std::string name;  // "train", "test" or "random"
  Array<T> x;        // [samples, D] on the context's backend
};
// The point sets of the curve: the training inputs, the test inputs (when the split has any) and
// random_points uniform points in the training inputs' bounding box (0: as many as training
// points), seeded.
template <class T>
std::vector<LcPointSet<T>> lc_point_sets(const Context& ctx, const data::Split& split, index_t random_points,
                                         std::uint64_t seed);

// CSV of the curve: "step,points,samples,total_mean,all_layers_mean,layer1,...,layerL" and one row
// per checkpoint and point set (each ending in a newline).
std::string lc_csv_header(index_t layers);
std::string lc_csv_row(index_t step, const std::string& points, index_t samples, const regions::LcResult& r);
// The same row as JSON: step, points, samples, total_mean, all_layers_mean, per_layer_mean.
json lc_row_json(index_t step, const std::string& points, index_t samples, const regions::LcResult& r);

// ---- The local learning coefficient along training: shared by `llc` and the demo --------------
// The same JSON keys and CSV columns in both, so that the demo's llc.csv is what `dynascope llc
// --checkpoints` writes for the same run, data, sampler options and seed.

// The estimate as JSON: llc_mean, llc_std, llc_stderr, llc_per_chain (null for a diverged chain),
// init_loss, nbeta, n, r_hat, ess, mala_acceptance (null when not estimated), diverged {chain:
// first bad draw}, warnings, gradient_evaluations, sampling_seconds.
json llc_json(const sgld::LlcResult& r);
// The sampler options as JSON (chains, draws, burnin, thin, epsilon, gamma, nbeta_rule, nbeta when
// given, batch, sampler, its RMSprop constants, bounding_box, init_loss, mala, seed, masked).
json llc_options_json(const sgld::LlcOptions& o);
// CSV: `first_column` (e.g. "step") then llc_mean, llc_stderr, r_hat, llc_std, ess,
// mala_acceptance, init_loss, nbeta, chains, diverged_chains, warnings (quoted, joined by "; ");
// a non-finite value is empty. Each line ends in a newline.
std::string llc_csv_header(const std::string& first_column);
std::string llc_csv_row(const std::string& first_value, const sgld::LlcResult& r);
// One line for people: "llc = 12.3 ± 0.4 (SE, 8 chains)", with the diverged chains when any.
std::string llc_summary(const sgld::LlcResult& r);

// ---- Local elasticity and the training response along training: the demo's files --------------
// The same columns as `dynascope elasticity --checkpoints --out-csv` and `dynascope response
// --out-csv` write.

// The mean of S_rel [N1, N2] over its finite entries, leaving out a sample's pair with itself when
// the targets of the move are the sources (same_set; S_rel(x, x) = 1 by definition); how many
// pairs were averaged in `pairs`. NaN when none is left.
double elasticity_mean(const Array<double>& s_rel, bool same_set, index_t* pairs = nullptr);
// "step,checkpoint,mean,within_class,across_class,ratio,undefined_sources" and one row per
// checkpoint (classes null for value targets: within/across/ratio empty; non-finite values empty).
std::string elasticity_csv_header();
std::string elasticity_csv_row(index_t step, const std::string& checkpoint, double mean,
                               const elasticity::ClassMatrix* classes, std::size_t undefined_sources);
// "step,checkpoint,mean_diagonal,mean_off_diagonal", per layer l = 1..L "layer<l>_diagonal,
// layer<l>_off_diagonal", per hidden layer l = 1..L-1 "effective_rank<l>,participation_ratio<l>,
// dead<l>,duplicated<l>", then "input_grad_norm"; a row per checkpoint (absent per-layer values
// empty).
std::string response_csv_header(index_t layers);
std::string response_csv_row(index_t step, const std::string& checkpoint, index_t layers, const response::Response& r,
                             const response::FeatureSpace& f);
// The row as JSON: mean_diagonal, mean_off_diagonal, layer_diagonal, layer_off_diagonal,
// undefined_sources (indices into the samples), features [{layer, width, effective_rank,
// participation_ratio, dead, duplicated}], input_grad_norm, flops.
json response_row_json(const response::Response& r, const response::FeatureSpace& f);
// The aging fit as JSON: beta, beta_ci [lo, hi], beta_stderr, confidence, amplitude, r_squared,
// fit_window [t_min, t_max], points, skipped.
json power_law_json(const response::PowerLawFit& fit, double t_min, double t_max);

// The predicted class of every row of x [N, D] (on ctx's backend): the argmax output, or for one
// output 1 where it is > 0 and 0 elsewhere. Tiled over rows, for region maps of large grids.
template <class T>
std::vector<int> predicted_classes(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x);

}  // namespace dynascope::cli
