#include "cli/training_run.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "dynascope/config.hpp"
#include "dynascope/error.hpp"
#include "dynascope/io.hpp"

namespace dynascope::cli {

void add_train_flags(CLI::App& cmd, TrainFlags& f) {
  cmd.add_option("--loss", f.loss, choices(model::loss_names) + " (default: xent for class labels, mse for float targets)")
      ->check(one_of(model::loss_names));
  cmd.add_option("--optimizer", f.optimizer, choices(model::optimizer_names) + " (PyTorch's update rules)")
      ->check(one_of(model::optimizer_names))
      ->capture_default_str();
  cmd.add_option("--lr", f.lr, "learning rate, >= 0 (default 1e-2 for sgd/momentum, 1e-3 for adam/adamw)")
      ->check(finite_at_least(0));
  cmd.add_option("--momentum", f.momentum, "momentum of the momentum optimizer, >= 0 (default 0.9)")
      ->check(finite_at_least(0));
  cmd.add_option("--betas", f.betas, "Adam's B1,B2, each in [0, 1)")->capture_default_str();
  cmd.add_option("--eps", f.eps, "Adam's epsilon, >= 0")->check(finite_at_least(0))->capture_default_str();
  cmd.add_option("--weight-decay", f.weight_decay, "weight decay, >= 0 (default 0; 1e-2 for adamw, decoupled)")
      ->check(finite_at_least(0));
  cmd.add_option("--steps", f.steps, "optimizer steps, >= 0")->check(at_least(0))->capture_default_str();
  cmd.add_option("--batch", f.batch, "minibatch size, >= 0 (0 = full batch; at most the training samples)")
      ->check(at_least(0))
      ->capture_default_str();
  cmd.add_option("--save-every", f.save_every, "checkpoint every K steps, >= 0 (0 = only the first and last)")
      ->check(at_least(0));
}

void add_out_dir_flags(CLI::App& cmd, TrainFlags& f, const std::string& what) {
  cmd.add_option("--out-dir", f.out_dir, what)->capture_default_str();
  cmd.add_flag("--overwrite", f.overwrite,
               "replace an earlier run in --out-dir (its step_*.safetensors, train.csv and report.json are removed "
               "first); without it such a folder is refused");
}

void prepare_out_dir(const TrainFlags& f) {
  namespace fs = std::filesystem;
  if (f.out_dir.empty()) throw UsageError("--out-dir: empty folder name");
  std::error_code ec;
  const fs::path dir(f.out_dir);
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw UsageError("--out-dir: '" + f.out_dir + "' exists and is not a folder");
  std::vector<fs::path> earlier;
  if (fs::is_directory(dir, ec)) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      const bool checkpoint = name.rfind("step_", 0) == 0 && entry.path().extension() == ".safetensors";
      if (checkpoint || name == "train.csv" || name == "report.json") earlier.push_back(entry.path());
    }
  }
  if (!earlier.empty() && !f.overwrite) {
    std::size_t checkpoints = 0;
    for (const auto& p : earlier) checkpoints += p.extension() == ".safetensors";
    throw UsageError("--out-dir: '" + f.out_dir + "' holds an earlier run (" + std::to_string(checkpoints) +
                     " checkpoints" + (earlier.size() > checkpoints ? ", train.csv or report.json" : "") +
                     "); choose another folder, or pass --overwrite to remove them first");
  }
  for (const auto& p : earlier) {
    fs::remove(p, ec);
    if (ec) throw UsageError("--overwrite: cannot remove '" + p.string() + "': " + ec.message());
  }
  fs::create_directories(dir, ec);
  if (ec) throw UsageError("--out-dir: cannot create '" + f.out_dir + "': " + ec.message());
  check_output("--out-dir", (dir / "train.csv").string());
}

namespace {
std::string& command_line() {
  static std::string line;
  return line;
}
}  // namespace

void remember_command_line(int argc, char** argv) {
  std::string& line = command_line();
  line.clear();
  for (int i = 0; i < argc; ++i) line += (i ? " " : "") + std::string(argv[i]);
}

json run_config(const std::string& command, const CommonOptions& common, const Context& ctx, const ModelFlags& model,
                const DataFlags& data, const TrainFlags& train, const model::MlpSpec& spec,
                const model::LoadInfo& source, const data::Split& split, model::Loss loss) {
  json j;
  j["command"] = command;
  j["command_line"] = command_line();
  j["version"] = DYNASCOPE_VERSION_STRING;
  j["backend"] = to_string(ctx.backend());
  j["dtype"] = common.dtype;
  j["seed"] = common.seed;
  j["network"] = spec_json(spec, source, parse_dtype(common.dtype));
  if (!model.model.empty()) j["network"]["from"] = model.model;
  else j["network"]["init"] = {{"scheme", model.init}, {"scale", model.init_scale}};
  json d;
  if (!data.dataset.empty()) d["dataset"] = data.dataset;
  if (!data.inputs.empty()) d["inputs"] = data.inputs;
  if (!data.targets.empty()) d["targets"] = data.targets;
  d["name"] = split.train.name;
  d["samples_flag"] = data.samples;
  d["test_fraction"] = data.test_fraction;
  d["train_samples"] = split.train.n;
  d["test_samples"] = split.test.n;
  j["data"] = d;
  j["loss"] = model::to_string(loss);
  const model::OptimizerOptions o = optimizer_options(train);
  j["optimizer"] = {{"kind", model::to_string(o.kind)}, {"lr", o.lr}, {"momentum", o.momentum},
                    {"betas", {o.beta1, o.beta2}},       {"eps", o.eps}, {"weight_decay", o.weight_decay}};
  j["schedule"] = {{"steps", train.steps}, {"batch", train.batch}, {"save_every", train.save_every}};
  j["out_dir"] = train.out_dir;
  return j;
}

model::OptimizerOptions optimizer_options(const TrainFlags& f) {
  model::OptimizerOptions o;
  o.kind = model::parse_optimizer(f.optimizer);
  o.lr = f.lr;
  o.momentum = f.momentum;
  o.eps = f.eps;
  o.weight_decay = f.weight_decay;
  const auto comma = f.betas.find(',');
  try {
    if (comma == std::string::npos) throw std::invalid_argument("no comma");
    std::size_t p1 = 0, p2 = 0;
    const std::string a = f.betas.substr(0, comma), b = f.betas.substr(comma + 1);
    o.beta1 = std::stod(a, &p1);
    o.beta2 = std::stod(b, &p2);
    if (p1 != a.size() || p2 != b.size()) throw std::invalid_argument("trailing text");
  } catch (const std::exception&) {
    throw UsageError("--betas: expected two numbers B1,B2 such as 0.9,0.999, got '" + f.betas + "'");
  }
  try {
    return o.resolved();
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
}

namespace {
std::string fmt_value(double v) {
  if (v < 0) return "";
  std::ostringstream s;
  s.precision(9);
  s << v;
  return s.str();
}
}  // namespace

template <class T>
RunOutcome<T> run_training(const Context& ctx, const CommonOptions& common, const TrainFlags& flags, model::Mlp<T>& net,
                           const data::Split& split, bool write_checkpoints,
                           const std::function<void(index_t, const Array<T>&)>& at_checkpoint) {
  namespace fs = std::filesystem;
  RunOutcome<T> out;
  const data::Dataset& train = split.train;
  out.loss = flags.loss.empty() ? default_loss(train) : model::parse_loss(flags.loss);
  check_loss_targets(out.loss, train);
  model::TrainOptions<T> to;
  to.loss = out.loss;
  to.optimizer = optimizer_options(flags);
  to.steps = flags.steps;
  to.batch = flags.batch;
  to.seed = common.seed;
  to.checkpoint_every = flags.save_every;
  if (flags.batch > train.n)
    throw UsageError("--batch " + std::to_string(flags.batch) + " is larger than the " + std::to_string(train.n) + " training samples");
  // Everything is checked; only now is the run folder touched.
  if (write_checkpoints) prepare_out_dir(flags);

  const bool classify = train.task == data::Task::classification;
  std::string csv = classify ? "step,loss,accuracy\n" : "step,loss\n";
  to.on_record = [&](const model::TrainRecord& r) {
    csv += std::to_string(r.step) + "," + fmt_value(r.loss) + (classify ? "," + fmt_value(r.accuracy) : "") + "\n";
  };
  model::MlpEngine<T> eval_engine(ctx, net.spec);
  const model::DeviceData<T> train_dev = model::to_device<T>(ctx, train);
  const bool has_test = split.test.n > 0;
  model::DeviceData<T> test_dev;
  if (has_test) test_dev = model::to_device<T>(ctx, split.test);
  to.on_checkpoint = [&](index_t step, const Array<T>& params) {
    CheckpointRow row;
    row.step = step;
    row.train = model::evaluate<T>(ctx, eval_engine, params.data(), train_dev, out.loss);
    if (has_test) row.test = model::evaluate<T>(ctx, eval_engine, params.data(), test_dev, out.loss);
    if (write_checkpoints && !flags.out_dir.empty()) {
      char name[64];
      std::snprintf(name, sizeof name, "step_%07lld.safetensors", static_cast<long long>(step));
      row.file = (fs::path(flags.out_dir) / name).string();
      model::save_mlp<T>(ctx, row.file, net.spec, params, {{"step", std::to_string(step)}});
      io::write_text_atomic((fs::path(flags.out_dir) / "train.csv").string(), csv);
    }
    if (at_checkpoint) at_checkpoint(step, params);
    out.rows.push_back(row);
    std::ostringstream line;
    line << "step " << step << ": train loss " << fmt_value(row.train.loss);
    if (row.train.accuracy >= 0) line << " acc " << fmt_value(row.train.accuracy);
    if (has_test) {
      line << " | test loss " << fmt_value(row.test.loss);
      if (row.test.accuracy >= 0) line << " acc " << fmt_value(row.test.accuracy);
    }
    ctx.log(LogLevel::info, line.str());
  };
  out.result = model::train<T>(ctx, net, train, to);
  if (!flags.out_dir.empty()) io::write_text_atomic((fs::path(flags.out_dir) / "train.csv").string(), csv);
  return out;
}

template RunOutcome<float> run_training<float>(const Context&, const CommonOptions&, const TrainFlags&, model::Mlp<float>&,
                                               const data::Split&, bool,
                                               const std::function<void(index_t, const Array<float>&)>&);
template RunOutcome<double> run_training<double>(const Context&, const CommonOptions&, const TrainFlags&,
                                                 model::Mlp<double>&, const data::Split&, bool,
                                                 const std::function<void(index_t, const Array<double>&)>&);

}  // namespace dynascope::cli
