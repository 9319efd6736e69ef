#include "cli/run_data.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

#include "cli/training_run.hpp"

namespace dynascope::cli {

namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kDataFlags{"--dataset", "--inputs", "--targets", "--samples", "--test-fraction"};

}  // namespace

bool data_flags_given(const CLI::App& cmd, bool samples_cap) {
  for (const std::string& f : kDataFlags)
    if (given(cmd, f) && !(samples_cap && f == "--samples")) return true;
  return false;
}

RunData run_data(const CLI::App& cmd, const DataFlags& data, std::uint64_t seed, const std::string& loss,
                 const std::string& checkpoints, bool samples_cap) {
  RunData d;
  d.flags = data;
  d.seed = seed;
  d.loss = loss;
  const auto describe = [&] {
    if (!d.flags.dataset.empty()) d.source["dataset"] = d.flags.dataset;
    if (!d.flags.inputs.empty()) d.source["inputs"] = d.flags.inputs;
    if (!d.flags.targets.empty()) d.source["targets"] = d.flags.targets;
    d.source["samples_flag"] = d.flags.samples;
    d.source["test_fraction"] = d.flags.test_fraction;
    d.source["seed"] = d.seed;
  };
  if (checkpoints.empty() || data_flags_given(cmd, samples_cap)) {
    d.source["from"] = "flags";
    describe();
    return d;
  }
  const fs::path report = fs::path(checkpoints) / "report.json";
  const std::string how = "give the run's data flags (--dataset NAME or --inputs X --targets Y, with its --samples, "
                          "--test-fraction and --seed for the same split)";
  std::error_code ec;
  if (!fs::exists(report, ec))
    throw UsageError("--checkpoints: no data flags, and '" + checkpoints +
                     "' has no report.json recording the run's data (dynascope demo writes one, dynascope train "
                     "records it in its result JSON): " + how);
  std::ifstream f(report);
  const json j = json::parse(f, nullptr, false);
  const json* cfg = j.is_object() && j.contains("config") ? &j["config"] : nullptr;
  if (cfg == nullptr || !cfg->contains("data") || !(*cfg)["data"].is_object() || !cfg->contains("seed"))
    throw UsageError("--checkpoints: '" + report.string() + "' does not record the run's data under config.data: " + how);
  try {
    const json& run = (*cfg)["data"];
    d.flags = DataFlags{};
    d.flags.dataset = run.value("dataset", "");
    d.flags.inputs = run.value("inputs", "");
    d.flags.targets = run.value("targets", "");
    // A relative path is the run folder's own file (the Python Tracker writes inputs.npy there and
    // records it so, which keeps a moved folder readable); one not found there is taken as the
    // command line gave it when the run was made (the demo records --inputs as typed).
    for (auto [key, path] : {std::pair<const char*, std::string*>{"inputs", &d.flags.inputs},
                             std::pair<const char*, std::string*>{"targets", &d.flags.targets}}) {
      if (path->empty() || fs::path(*path).is_absolute()) continue;
      const fs::path in_run = fs::path(checkpoints) / *path;
      if (fs::exists(in_run, ec)) {
        *path = in_run.string();
      } else if (!fs::exists(*path, ec)) {
        throw UsageError("--checkpoints: '" + report.string() + "' records config.data." + key + " '" + *path +
                         "', which is neither in the run folder ('" + in_run.string() +
                         "') nor relative to the working folder: " + how);
      }
    }
    d.flags.samples = run.value("samples_flag", index_t{0});
    d.flags.test_fraction = run.value("test_fraction", 0.0);
    // The run's --samples as the run took it: a cap when it was the command's preset (the demo's
    // 512 for a smaller dataset). This command's --samples, not given, says "not demanded".
    d.flags.samples_flag = data.samples_flag;
    // With samples_cap this command's --samples may have been given, but it caps what the command
    // measures; the run's count stays a cap. --dataset stands for "not given": no data flag was.
    if (samples_cap) d.flags.samples_flag = cmd.get_option_no_throw("--dataset");
    d.seed = (*cfg)["seed"].get<std::uint64_t>();
    if (d.loss.empty()) d.loss = cfg->value("loss", "");
  } catch (const json::exception& e) {
    throw UsageError("--checkpoints: '" + report.string() + "': config.data is not as dynascope writes it (" + e.what() +
                     "): " + how);
  }
  d.source["from"] = report.string();
  describe();
  return d;
}

void float64_by_default(CLI::App& cmd) {
  cmd.get_option("--dtype")->description(
      "compute precision: float32 | float64 (default here: float64, whatever the files hold: a step's change is a "
      "difference of two forwards, which float32 rounds away for confident sources)");
}

void resolve_float64_default(CommonOptions& opts) {
  if (!opts.dtype.empty()) {
    opts.dtype_source = "--dtype";
    return;
  }
  opts.dtype = "float64";
  opts.dtype_source = kFloat64DefaultReason;
}

void check_samples(const CLI::App& cmd, const RunData& rd, index_t samples, index_t train_samples) {
  if (rd.source.value("from", "flags") == "flags" || !given(cmd, "--samples") || samples <= train_samples) return;
  throw UsageError("--samples " + std::to_string(samples) + ": the run's training split (the data " +
                   rd.source["from"].get<std::string>() + " records) has " + std::to_string(train_samples) +
                   " samples; give at most " + std::to_string(train_samples) + " (0 = all)");
}

std::string first_checkpoint(const std::string& dir) {
  if (dir.empty()) return "";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "";
  return run_checkpoints("--checkpoints", dir).front().second;
}

void check_same_architecture(const std::string& flag, const model::MlpSpec& first, const model::MlpSpec& next,
                             const std::string& file) {
  const auto describe = [](const model::MlpSpec& s) {
    std::string text = s.arch_string();
    for (const auto& a : s.activations) text += " " + std::string(model::to_string(a));
    text += std::string(" ") + model::to_string(s.parameterization);
    for (bool b : s.bias) text += b ? "" : " (a layer without bias)";
    return text;
  };
  const bool same = first.widths == next.widths && first.bias == next.bias && first.activations == next.activations &&
                    first.parameterization == next.parameterization && first.bias_scale == next.bias_scale;
  if (!same)
    throw UsageError(flag + ": '" + file + "' has another architecture (" + describe(next) +
                     ") than the first checkpoint (" + describe(first) + "); a run's checkpoints are measured alike");
}

template <class T>
model::Mlp<T> load_checkpoint(const Context& ctx, const CommonOptions& common, const ModelFlags& model,
                              const data::Split& split, const std::string& file, const model::MlpSpec& first) {
  ModelFlags mf = model;
  mf.model = file;
  model::Mlp<T> net = load_network<T>(ctx, mf, common.seed, split);
  check_same_architecture("--checkpoints", first, net.spec, file);
  return net;
}
template model::Mlp<float> load_checkpoint<float>(const Context&, const CommonOptions&, const ModelFlags&,
                                                  const data::Split&, const std::string&, const model::MlpSpec&);
template model::Mlp<double> load_checkpoint<double>(const Context&, const CommonOptions&, const ModelFlags&,
                                                    const data::Split&, const std::string&, const model::MlpSpec&);

template <class T>
void check_checkpoints(const CommonOptions& common, const ModelFlags& model, const data::Split& split,
                       const std::vector<std::pair<index_t, std::string>>& steps, const model::MlpSpec& first) {
  const Context host = make_host_context(common);
  for (std::size_t q = 1; q < steps.size(); ++q) load_checkpoint<T>(host, common, model, split, steps[q].second, first);
}
template void check_checkpoints<float>(const CommonOptions&, const ModelFlags&, const data::Split&,
                                       const std::vector<std::pair<index_t, std::string>>&, const model::MlpSpec&);
template void check_checkpoints<double>(const CommonOptions&, const ModelFlags&, const data::Split&,
                                        const std::vector<std::pair<index_t, std::string>>&, const model::MlpSpec&);

json checkpoint_row(const std::pair<index_t, std::string>& step, const json& measures) {
  json row;
  row["step"] = step.first;
  row["checkpoint"] = step.second;
  for (auto it = measures.begin(); it != measures.end(); ++it) row[it.key()] = it.value();
  return row;
}

std::string checkpoint_where(const std::pair<index_t, std::string>& step) {
  return "step " + std::to_string(step.first) + " (" + step.second + "): ";
}

void refuse_with_checkpoints(const CLI::App& cmd) {
  const std::string why = "--checkpoints reads every step_*.safetensors of a run folder";
  refuse_together(cmd, "--checkpoints", "--model", why);
  refuse_together(cmd, "--checkpoints", "--arch", why);
  refuse_ignored(cmd, "--init", "--checkpoints reads trained networks; --init sets up an --arch network");
  refuse_ignored(cmd, "--init-scale", "--checkpoints reads trained networks; --init-scale scales an --arch network");
}

void add_measure_flags(CLI::App& cmd, CommonOptions& common, ModelFlags& model, DataFlags& data) {
  add_common_flags(cmd, common);
  float64_by_default(cmd);
  add_model_flags(cmd, model, false);
  add_data_flags(cmd, data, true);
}

void add_step_loss_flag(CLI::App& cmd, std::string& loss) {
  cmd.add_option("--loss", loss, choices(model::loss_names) + " of the step (default: xent for class labels, mse "
                                                              "for float targets; with --checkpoints the run's)")
      ->check(one_of(model::loss_names));
}

data::Dataset first_samples(const data::Dataset& d, index_t cap) {
  if (cap <= 0 || d.n <= cap) return d;
  std::vector<index_t> rows(static_cast<std::size_t>(cap));
  std::iota(rows.begin(), rows.end(), index_t{0});
  return d.subset(rows);
}

model::Loss step_loss(const RunData& rd, const data::Dataset& samples) {
  model::Loss loss = model::Loss::mse;
  try {
    loss = rd.loss.empty() ? default_loss(samples) : model::parse_loss(rd.loss);
  } catch (const InvalidArgument& e) {
    throw UsageError("--loss: " + std::string(e.what()));
  }
  check_loss_targets(loss, samples);
  return loss;
}

std::string nothing_measured_why(std::size_t zero, std::size_t unresolved, const std::string& dtype,
                                 const std::string& hint) {
  std::string text;
  if (zero > 0)
    text += std::to_string(zero) + " have a zero loss gradient (the network fits them exactly, so the step does not "
            "move it: measure other samples or a network that does not fit them)";
  if (zero > 0 && unresolved > 0) text += "; ";
  if (unresolved > 0)
    text += std::to_string(unresolved) + " are unresolved at " + dtype +
            " (their own change is below its precision, though their loss gradient is not zero): " + hint;
  return text;
}

void refuse_same_outputs(const std::vector<std::pair<std::string, std::string>>& outputs) {
  const auto same = [](const std::string& a, const std::string& b) {
    return fs::absolute(fs::path(a)).lexically_normal() == fs::absolute(fs::path(b)).lexically_normal();
  };
  for (std::size_t i = 0; i < outputs.size(); ++i)
    for (std::size_t j = i + 1; j < outputs.size(); ++j)
      if (!outputs[i].second.empty() && !outputs[j].second.empty() && same(outputs[i].second, outputs[j].second))
        throw UsageError(outputs[j].first + " and " + outputs[i].first + " name the same file '" + outputs[j].second + "'");
}

json finite_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

std::string csv_value(double v) {
  if (!std::isfinite(v)) return "";
  std::ostringstream s;
  s.precision(10);
  s << v;
  return s.str();
}

void say(const CommonOptions& common, const std::string& text) {
  if (!common.out.empty()) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
  } else if (!common.quiet) {
    std::fputs(text.c_str(), stderr);
  }
}

void emit_with_warnings(const std::string& command, const CommonOptions& opts, const Context& ctx, json result,
                        const std::vector<std::string>& warnings, std::chrono::steady_clock::time_point start) {
  if (!warnings.empty()) result["warnings"] = warnings;
  emit_result(command, opts, ctx, std::move(result), start);
}

}  // namespace dynascope::cli
