#pragma once
// What the commands that read a training run's checkpoints (`lc`, `llc`, `elasticity`, `response`)
// share: the run's data recovered from its report.json when no data flag is given, the first
// checkpoint (which decides the precision), the architecture check across checkpoints, the loop
// over them, and the check that no two output flags name one file.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cli/model_flags.hpp"

namespace dynascope::cli {

// The data of a command: its data flags, or for --checkpoints DIR with none of them the data the
// run's report.json records (`dynascope demo` writes one; a `train` result JSON saved there works
// too), with the seed of its split and the run's loss.
struct RunData {
  DataFlags flags;
  std::uint64_t seed = 0;
  std::string loss;  // the command's --loss, else the run's (empty: by the data)
  json source;       // where the data came from, for the result JSON ("from": "flags" or the report)
};

// Whether any of --dataset, --inputs, --targets, --samples (unless `samples_cap`), --test-fraction
// was given.
bool data_flags_given(const CLI::App& cmd, bool samples_cap = false);

// `checkpoints` empty (one network) or a data flag given: the flags as they are, with `seed` and
// `loss`. Otherwise DIR/report.json's config.data and config.seed (and config.loss unless `loss`
// is set); UsageError naming --checkpoints and saying which flags to give when there is none.
// A relative config.data.inputs / targets is a file of the run folder DIR when DIR holds it (the
// Python Tracker's inputs.npy, so a moved folder still works), else relative to the working folder
// as the command line that made the run gave it (the demo records --inputs as typed); UsageError
// naming both places when neither has it.
// The run's --samples is taken as a cap unless this command's --samples was given.
// `samples_cap`: the command's --samples caps the samples it measures (elasticity, response: the
// first N of the training split) rather than naming the data, so --samples alone keeps the run's
// data, whose own sample count then stays a cap.
RunData run_data(const CLI::App& cmd, const DataFlags& data, std::uint64_t seed, const std::string& loss,
                 const std::string& checkpoints, bool samples_cap = false);

// With the data of a run's report.json (`rd.source["from"]` not "flags"), the command's --samples N
// takes the first N samples of the run's training split (`train_samples` of them): a --samples
// given above that is a UsageError naming both counts, rather than silently fewer samples.
void check_samples(const CLI::App& cmd, const RunData& rd, index_t samples, index_t train_samples);

// `elasticity` and `response` compute in float64 unless --dtype is given: the step form's change is
// a difference of two forwards, which float32 rounds away for confident sources (a gradient of
// 1e-4 and a step of 1e-3 move an output of order 1 by 1e-7, below float32's 6e-8 relative
// spacing). float64_by_default states it in the command's --dtype help; resolve_float64_default
// sets opts.dtype and opts.dtype_source (an explicit --dtype, float32 included, is honoured).
inline constexpr const char* kFloat64DefaultReason =
    "default of elasticity/response: a step's change is a difference of two forwards";
void float64_by_default(CLI::App& cmd);
void resolve_float64_default(CommonOptions& opts);

// The first step_*.safetensors of a run folder, for the precision; empty when `dir` is empty or
// not a folder (the command's own check says so later).
std::string first_checkpoint(const std::string& dir);

// UsageError unless `next` (read from `file`) has the architecture of `first` (widths, biases,
// activations, parameterization): a run's checkpoints are measured alike.
void check_same_architecture(const std::string& flag, const model::MlpSpec& first, const model::MlpSpec& next,
                             const std::string& file);

// Every checkpoint of `steps` after the first read once (on the host) before any work: one of
// another architecture than `first`, or that the data does not fit, is refused before the
// measurements of the others are spent.
template <class T>
void check_checkpoints(const CommonOptions& common, const ModelFlags& model, const data::Split& split,
                       const std::vector<std::pair<index_t, std::string>>& steps, const model::MlpSpec& first);

// --checkpoints DIR reads trained networks: --model, --arch, --init and --init-scale given with it
// are UsageErrors naming both flags.
void refuse_with_checkpoints(const CLI::App& cmd);

// `elasticity` and `response`: the flags of the network, its data and the computation, with
// float64 the default precision (in this order: --help lists them so), and the --loss of the step.
void add_measure_flags(CLI::App& cmd, CommonOptions& common, ModelFlags& model, DataFlags& data);
void add_step_loss_flag(CLI::App& cmd, std::string& loss);

// The first `cap` samples of d (all when cap is 0 or d has no more).
data::Dataset first_samples(const data::Dataset& d, index_t cap);

// The loss of the step: `rd.loss` (the command's --loss, else the run's), else the data's default;
// UsageError naming --loss when it is unknown or does not fit the targets of `samples`.
model::Loss step_loss(const RunData& rd, const data::Dataset& samples);

// Why no sample has a value (`zero` of them with a zero loss gradient, `unresolved` below the
// precision `dtype`, resolved as `hint` says), the end of `elasticity`'s and `response`'s message.
std::string nothing_measured_why(std::size_t zero, std::size_t unresolved, const std::string& dtype,
                                 const std::string& hint);

// Checkpoint `file` of a run loaded on `ctx`; UsageError unless it has the architecture of `first`.
template <class T>
model::Mlp<T> load_checkpoint(const Context& ctx, const CommonOptions& common, const ModelFlags& model,
                              const data::Split& split, const std::string& file, const model::MlpSpec& first);

// Along a run's checkpoints: `net` holds the first (loaded by the caller, which checks the data
// against it); the others are checked up front (check_checkpoints), then loaded into `net` in turn,
// and each(q) measures checkpoint q, with progress "<command>: checkpoints".
template <class T, class Each>
void for_each_checkpoint(const Context& ctx, const std::string& command, const CommonOptions& common,
                         const ModelFlags& model, const data::Split& split,
                         const std::vector<std::pair<index_t, std::string>>& steps, model::Mlp<T>& net, Each each) {
  const model::MlpSpec first = net.spec;
  check_checkpoints<T>(common, model, split, steps, first);
  const std::string task = command + ": checkpoints";
  for (std::size_t q = 0; q < steps.size(); ++q) {
    if (q > 0) net = load_checkpoint<T>(ctx, common, model, split, steps[q].second, first);
    ctx.progress(task, index_t(q), index_t(steps.size()));
    each(q);
  }
  ctx.progress(task, index_t(steps.size()), index_t(steps.size()));
}

// A --checkpoints row of the result JSON: the checkpoint's step and file, then `measures`' keys.
json checkpoint_row(const std::pair<index_t, std::string>& step, const json& measures);

// "step N (file): ", what the warnings about one checkpoint start with.
std::string checkpoint_where(const std::pair<index_t, std::string>& step);

// UsageError when two of the given (flag, path) outputs name the same file (after normalisation,
// so ./t.npy and t.npy are one file): the second write would silently replace the first.
void refuse_same_outputs(const std::vector<std::pair<std::string, std::string>>& outputs);

// A finite number as JSON, else null; the same as CSV text (10 significant digits, empty when not
// finite).
json finite_or_null(double v);
std::string csv_value(double v);

// Where a person reads the summary: stdout when the JSON goes to --out, else stderr (stdout is the
// JSON); nothing with --quiet unless stdout is free.
void say(const CommonOptions& common, const std::string& text);

// emit_result with the command's own warnings: every NaN or infinity in `result` becomes null and
// is listed as emit_result lists it ("$.key is NaN"), and `warnings` (said in words) come first
// under "warnings".
void emit_with_warnings(const std::string& command, const CommonOptions& opts, const Context& ctx, json result,
                        const std::vector<std::string>& warnings, std::chrono::steady_clock::time_point start);

}  // namespace dynascope::cli
