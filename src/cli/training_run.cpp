#include "cli/training_run.hpp"
#include "cli/run_data.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <sstream>

#include "dynascope/config.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "dynascope/random.hpp"

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
  cmd.add_option("--save-log", f.save_log,
                 "further checkpoints at K steps spaced evenly in log(step), round(steps^(i/K)) for i = 1..K (repeats "
                 "dropped), on top of --save-every: the early phase of training as densely sampled as the late one; "
                 ">= 0 (0 = none)")
      ->check(at_least(0));
}

void add_out_dir_flags(CLI::App& cmd, TrainFlags& f, const std::string& what) {
  cmd.add_option("--out-dir", f.out_dir, what)->capture_default_str();
  cmd.add_flag("--overwrite", f.overwrite,
               "replace an earlier run in --out-dir (its step_*.safetensors, train.csv, report.json, report/ and the "
               "demo's hessian_density.csv, lc.csv, llc.csv, llc_trace_last.npy, elasticity.csv, "
               "elasticity_{first,last}.npy, response.csv and region_map_{first,last}.png are removed first); without "
               "it such a folder is refused");
}

void prepare_out_dir(const TrainFlags& f) {
  namespace fs = std::filesystem;
  if (f.out_dir.empty()) throw UsageError("--out-dir: empty folder name");
  std::error_code ec;
  const fs::path dir(f.out_dir);
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw UsageError("--out-dir: '" + f.out_dir + "' exists and is not a folder");
  // The files a run writes: train's, and the demo's report and sections; and the folder of figures
  // `dynascope report` (and the demo at its end) writes.
  const std::vector<std::string> run_files{"train.csv",           "report.json",          "hessian_density.csv",
                                           "lc.csv",              "llc.csv",              "llc_trace_last.npy",
                                           "elasticity.csv",      "elasticity_first.npy", "elasticity_last.npy",
                                           "response.csv",        "region_map_first.png", "region_map_last.png",
                                           "report"};
  std::vector<fs::path> earlier;
  std::vector<std::string> others;  // the run files found that are not checkpoints, for the message
  if (fs::is_directory(dir, ec)) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      const bool checkpoint = name.rfind("step_", 0) == 0 && entry.path().extension() == ".safetensors";
      const bool other = std::find(run_files.begin(), run_files.end(), name) != run_files.end();
      if (checkpoint || other) earlier.push_back(entry.path());
      if (other) others.push_back(name);
    }
  }
  if (!earlier.empty() && !f.overwrite) {
    std::sort(others.begin(), others.end());
    std::string found = std::to_string(earlier.size() - others.size()) + " checkpoints";
    for (const std::string& name : others) found += ", " + name;
    throw UsageError("--out-dir: '" + f.out_dir + "' holds an earlier run (" + found +
                     "); choose another folder, or pass --overwrite to remove them first");
  }
  for (const auto& p : earlier) {
    if (fs::is_directory(p, ec)) fs::remove_all(p, ec);  // report/: the figures of the earlier run
    else fs::remove(p, ec);
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
  j["schedule"] = {{"steps", train.steps}, {"batch", train.batch}, {"save_every", train.save_every},
                    {"save_log", train.save_log}};
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
                           const std::function<void(index_t, const Array<T>&, const std::string&)>& at_checkpoint) {
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
  to.checkpoint_steps = model::log_spaced_steps(flags.steps, flags.save_log);
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
    if (at_checkpoint) at_checkpoint(step, params, row.file);
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

std::vector<std::pair<index_t, std::string>> run_checkpoints(const std::string& flag, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw UsageError(flag + ": '" + dir + "' is not a folder");
  std::vector<std::pair<index_t, std::string>> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step_", 0) != 0 || entry.path().extension() != ".safetensors") continue;
    const std::string digits = name.substr(5, name.size() - 5 - std::string(".safetensors").size());
    if (digits.empty() || digits.size() > 15 ||
        !std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      continue;
    out.emplace_back(std::stoll(digits), entry.path().string());
  }
  if (out.empty())
    throw UsageError(flag + ": '" + dir + "' holds no step_*.safetensors (write them with dynascope train --out-dir)");
  std::sort(out.begin(), out.end());
  return out;
}

double BoundingBox::diagonal() const {
  double s = 0;
  for (std::size_t j = 0; j < lo.size(); ++j) s += (hi[j] - lo[j]) * (hi[j] - lo[j]);
  return std::sqrt(s);
}

BoundingBox bounding_box(const std::vector<double>& x, index_t n, index_t d) {
  BoundingBox b{std::vector<double>(std::size_t(d), 0.0), std::vector<double>(std::size_t(d), 0.0)};
  if (n < 1) return b;
  for (index_t j = 0; j < d; ++j) {
    double& lo = b.lo[std::size_t(j)];
    double& hi = b.hi[std::size_t(j)];
    lo = hi = x[std::size_t(j)];
    for (index_t i = 1; i < n; ++i) {
      lo = std::min(lo, x[std::size_t(i * d + j)]);
      hi = std::max(hi, x[std::size_t(i * d + j)]);
    }
  }
  return b;
}

std::vector<double> random_in_box(const std::vector<double>& x, index_t n, index_t d, index_t m, std::uint64_t seed) {
  const BoundingBox b = bounding_box(x, n, d);
  const Context host = Context::host();
  Array<double> u(host, {m, d});
  random::fill_uniform<double>(host, {seed, 0x1c, 0}, u.vector());
  std::vector<double> out(std::size_t(m * d));
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < d; ++j)
      out[std::size_t(i * d + j)] =
          b.lo[std::size_t(j)] + u.data()[i * d + j] * (b.hi[std::size_t(j)] - b.lo[std::size_t(j)]);
  return out;
}

template <class T>
std::vector<LcPointSet<T>> lc_point_sets(const Context& ctx, const data::Split& split, index_t random_points,
                                         std::uint64_t seed) {
  std::vector<LcPointSet<T>> sets;
  sets.push_back({"train", model::to_device<T>(ctx, split.train).x});
  if (split.test.n > 0) sets.push_back({"test", model::to_device<T>(ctx, split.test).x});
  const index_t m = random_points > 0 ? random_points : split.train.n, d = split.train.d;
  const std::vector<double> r = random_in_box(split.train.x, split.train.n, d, m, seed);
  Array<T> h(Context::host(), {m, d});
  std::copy(r.begin(), r.end(), h.data());
  sets.push_back({"random", h.to(ctx)});
  return sets;
}

std::string lc_csv_header(index_t layers) {
  std::string s = "step,points,samples,total_mean,all_layers_mean";
  for (index_t l = 0; l < layers; ++l) s += ",layer" + std::to_string(l + 1);
  return s + "\n";
}

std::string lc_csv_row(index_t step, const std::string& points, index_t samples, const regions::LcResult& r) {
  // Means of integer counts: 10 significant digits keep them exact for any realistic sample count.
  std::ostringstream s;
  s.precision(10);
  s << step << "," << points << "," << samples << "," << r.total_mean << "," << r.all_layers_mean;
  for (double v : r.per_layer_mean) s << "," << v;
  s << "\n";
  return s.str();
}

json lc_row_json(index_t step, const std::string& points, index_t samples, const regions::LcResult& r) {
  json j;
  j["step"] = step;
  j["points"] = points;
  j["samples"] = samples;
  j["total_mean"] = r.total_mean;
  j["all_layers_mean"] = r.all_layers_mean;
  j["per_layer_mean"] = r.per_layer_mean;
  return j;
}


json llc_json(const sgld::LlcResult& r) {
  json j;
  j["llc_mean"] = finite_or_null(r.llc_mean);
  j["llc_std"] = finite_or_null(r.llc_std);
  j["llc_stderr"] = finite_or_null(r.llc_stderr);
  json per_chain = json::array();
  for (double v : r.llc_per_chain) per_chain.push_back(finite_or_null(v));
  j["llc_per_chain"] = per_chain;
  j["init_loss"] = finite_or_null(r.init_loss);
  j["nbeta"] = r.nbeta;
  j["n"] = r.n;
  j["chains"] = r.chains;
  j["draws"] = r.draws;
  j["r_hat"] = finite_or_null(r.r_hat);
  j["ess"] = finite_or_null(r.ess);
  j["mala_acceptance"] = finite_or_null(r.mala_acceptance);
  json diverged = json::object();
  for (const auto& [chain, draw] : r.diverged) diverged[std::to_string(chain)] = draw;
  j["diverged"] = diverged;
  j["warnings"] = r.warnings;
  j["gradient_evaluations"] = r.gradient_evaluations;
  j["sampling_seconds"] = r.seconds;
  return j;
}

json llc_options_json(const sgld::LlcOptions& o) {
  json j;
  j["chains"] = o.chains;
  j["draws"] = o.draws;
  j["burnin"] = o.burnin;
  j["thin"] = o.thin;
  j["epsilon"] = o.epsilon;
  j["gamma"] = o.gamma;
  j["nbeta_rule"] = name_of(sgld::nbeta_names, o.nbeta_rule);
  if (o.nbeta_rule == sgld::NBeta::value) j["nbeta"] = o.nbeta;
  j["batch"] = o.batch;
  j["sampler"] = name_of(sgld::sampler_names, o.sampler);
  if (o.sampler == sgld::Sampler::rmsprop_sgld) {
    j["rmsprop_alpha"] = o.rmsprop_alpha;
    j["rmsprop_eps"] = o.rmsprop_eps;
  }
  j["bounding_box"] = o.bounding_box;
  j["init_loss"] = name_of(sgld::init_loss_names, o.init_loss);
  j["mala"] = o.mala;
  j["seed"] = o.seed;
  if (!o.mask.empty()) {
    index_t free = 0;
    for (std::uint8_t m : o.mask) free += m != 0;
    j["free_parameters"] = free;
  }
  return j;
}

std::string llc_csv_header(const std::string& first_column) {
  return first_column +
         ",llc_mean,llc_stderr,r_hat,llc_std,ess,mala_acceptance,init_loss,nbeta,chains,diverged_chains,warnings\n";
}

std::string llc_csv_row(const std::string& first_value, const sgld::LlcResult& r) {
  std::string warnings;
  for (const std::string& w : r.warnings) warnings += (warnings.empty() ? "" : "; ") + w;
  std::string quoted = "\"";
  for (char ch : warnings) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch == '\n' ? ' ' : ch);
  quoted += "\"";
  std::ostringstream s;
  s << first_value << "," << csv_value(r.llc_mean) << "," << csv_value(r.llc_stderr) << "," << csv_value(r.r_hat) << ","
    << csv_value(r.llc_std) << "," << csv_value(r.ess) << "," << csv_value(r.mala_acceptance) << ","
    << csv_value(r.init_loss) << "," << csv_value(r.nbeta) << "," << r.chains << "," << r.diverged.size() << ","
    << (warnings.empty() ? "" : quoted) << "\n";
  return s.str();
}

std::string llc_summary(const sgld::LlcResult& r) {
  char buf[160];
  const index_t healthy = r.chains - index_t(r.diverged.size());
  if (healthy == 0) return "llc: every chain diverged (" + std::to_string(r.chains) + " chains); try a smaller --epsilon";
  std::snprintf(buf, sizeof buf, "llc = %.4g \u00b1 %.2g (SE, %lld chain%s)", r.llc_mean, r.llc_stderr,
                static_cast<long long>(healthy), healthy == 1 ? "" : "s");
  std::string line = buf;
  if (!r.diverged.empty())
    line += "; " + std::to_string(r.diverged.size()) + " of " + std::to_string(r.chains) + " chains diverged";
  return line;
}

double elasticity_mean(const Array<double>& s_rel, bool same_set, index_t* pairs) {
  const index_t n1 = s_rel.dim(0), n2 = s_rel.dim(1);
  double sum = 0;
  index_t count = 0;
  for (index_t i = 0; i < n1; ++i)
    for (index_t j = 0; j < n2; ++j) {
      const double v = s_rel.data()[i * n2 + j];
      if ((same_set && i == j) || !std::isfinite(v)) continue;
      sum += v;
      ++count;
    }
  if (pairs) *pairs = count;
  return count > 0 ? sum / double(count) : std::numeric_limits<double>::quiet_NaN();
}

std::string elasticity_csv_header() { return "step,checkpoint,mean,within_class,across_class,ratio,undefined_sources\n"; }

std::string elasticity_csv_row(index_t step, const std::string& checkpoint, double mean,
                               const elasticity::ClassMatrix* classes, std::size_t undefined_sources) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::ostringstream s;
  s << step << "," << checkpoint << "," << csv_value(mean) << "," << csv_value(classes ? classes->within : nan) << ","
    << csv_value(classes ? classes->across : nan) << "," << csv_value(classes ? classes->ratio : nan) << ","
    << undefined_sources << "\n";
  return s.str();
}

std::string response_csv_header(index_t layers) {
  std::string s = "step,checkpoint,mean_diagonal,mean_off_diagonal";
  for (index_t l = 1; l <= layers; ++l) {
    const std::string n = std::to_string(l);
    s += ",layer" + n + "_diagonal,layer" + n + "_off_diagonal";
  }
  for (index_t l = 1; l < layers; ++l) {
    const std::string n = std::to_string(l);
    s += ",effective_rank" + n + ",participation_ratio" + n + ",dead" + n + ",duplicated" + n;
  }
  return s + ",input_grad_norm\n";
}

std::string response_csv_row(index_t step, const std::string& checkpoint, index_t layers, const response::Response& r,
                             const response::FeatureSpace& f) {
  const auto at = [](const std::vector<double>& v, index_t l) {
    return std::size_t(l) < v.size() ? csv_value(v[std::size_t(l)]) : std::string();
  };
  std::ostringstream s;
  s << step << "," << checkpoint << "," << csv_value(r.mean_diagonal) << "," << csv_value(r.mean_off_diagonal);
  for (index_t l = 0; l < layers; ++l) s << "," << at(r.layer_diagonal, l) << "," << at(r.layer_off_diagonal, l);
  for (index_t l = 0; l + 1 < layers; ++l) {
    if (std::size_t(l) < f.layers.size()) {
      const response::LayerFeatures& h = f.layers[std::size_t(l)];
      s << "," << csv_value(h.effective_rank) << "," << csv_value(h.participation_ratio) << "," << h.dead << ","
        << h.duplicated;
    } else {
      s << ",,,,";
    }
  }
  s << "," << csv_value(f.input_grad_norm) << "\n";
  return s.str();
}

json response_row_json(const response::Response& r, const response::FeatureSpace& f) {
  json j;
  j["mean_diagonal"] = finite_or_null(r.mean_diagonal);
  j["mean_off_diagonal"] = finite_or_null(r.mean_off_diagonal);
  json diag = json::array(), off = json::array();
  for (double v : r.layer_diagonal) diag.push_back(finite_or_null(v));
  for (double v : r.layer_off_diagonal) off.push_back(finite_or_null(v));
  j["layer_diagonal"] = diag;
  j["layer_off_diagonal"] = off;
  j["undefined_sources"] = r.undefined_sources;
  j["unresolved_sources"] = r.unresolved_sources;
  j["kernel_gap"] = finite_or_null(r.kernel_gap);
  json features = json::array();
  for (const response::LayerFeatures& h : f.layers)
    features.push_back({{"layer", h.layer},
                        {"width", h.width},
                        {"effective_rank", finite_or_null(h.effective_rank)},
                        {"participation_ratio", finite_or_null(h.participation_ratio)},
                        {"dead", h.dead},
                        {"duplicated", h.duplicated}});
  j["features"] = features;
  j["input_grad_norm"] = finite_or_null(f.input_grad_norm);
  j["flops"] = r.flops;
  return j;
}

json power_law_json(const response::PowerLawFit& fit, double t_min, double t_max) {
  json j;
  j["beta"] = finite_or_null(fit.beta);
  j["beta_ci"] = {finite_or_null(fit.beta_low), finite_or_null(fit.beta_high)};
  j["beta_stderr"] = finite_or_null(fit.beta_stderr);
  j["confidence"] = fit.confidence;
  j["amplitude"] = finite_or_null(fit.amplitude);
  j["r_squared"] = finite_or_null(fit.r_squared);
  j["fit_window"] = {t_min, t_max};
  j["points"] = fit.points;
  j["skipped"] = fit.skipped;
  return j;
}

template <class T>
std::vector<int> predicted_classes(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x) {
  model::MlpEngine<T> engine(ctx, spec);
  const index_t o = spec.outputs(), n = x.rows, d = x.cols;
  std::vector<int> label(std::size_t(n), 0);
  std::vector<T> host;
  // Tiles of 8192 rows keep the engine's buffers small (and in cache for narrow networks) whatever
  // the grid.
  const index_t tile = 8192;
  for (index_t s0 = 0; s0 < n; s0 += tile) {
    const index_t m = std::min(tile, n - s0);
    const MatrixView<const T> out = engine.forward(params, MatrixView<const T>(x.block(s0, 0, m, d)));
    host.resize(std::size_t(m * o));
    copy(ctx, out, MatrixView<T>{host.data(), m, o, o, Backend::host});
    for (index_t i = 0; i < m; ++i) {
      const T* row = host.data() + i * o;
      label[std::size_t(s0 + i)] = o == 1 ? (row[0] > 0 ? 1 : 0) : int(std::max_element(row, row + o) - row);
    }
  }
  return label;
}

template std::vector<LcPointSet<float>> lc_point_sets<float>(const Context&, const data::Split&, index_t, std::uint64_t);
template std::vector<LcPointSet<double>> lc_point_sets<double>(const Context&, const data::Split&, index_t, std::uint64_t);
template std::vector<int> predicted_classes<float>(const Context&, const model::MlpSpec&, const float*, MatrixView<const float>);
template std::vector<int> predicted_classes<double>(const Context&, const model::MlpSpec&, const double*,
                                                    MatrixView<const double>);

template RunOutcome<float> run_training<float>(const Context&, const CommonOptions&, const TrainFlags&, model::Mlp<float>&,
                                               const data::Split&, bool,
                                               const std::function<void(index_t, const Array<float>&, const std::string&)>&);
template RunOutcome<double> run_training<double>(const Context&, const CommonOptions&, const TrainFlags&,
                                                 model::Mlp<double>&, const data::Split&, bool,
                                                 const std::function<void(index_t, const Array<double>&, const std::string&)>&);

}  // namespace dynascope::cli
