// dynascope llc: the local learning coefficient (Lau, Furman, Wang, Murfet, Wei) of a network at
// its weights by batched SGLD chains — for one network, along a training run's checkpoints, or as
// the ε x nβ calibration sweep.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "cli/model_flags.hpp"
#include "cli/run_data.hpp"
#include "cli/training_run.hpp"
#include "dynascope/dispatch.hpp"
#include "dynascope/io.hpp"
#include "dynascope/sgld.hpp"

namespace dynascope::cli {

namespace {

namespace fs = std::filesystem;

struct LlcCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string loss;  // empty: by the data (or the run's config with --checkpoints)
  sgld::LlcOptions options;  // the sampler flags write into it; the rest is set from them in llc_options
  std::string nbeta = "auto";
  std::string sampler = "sgld";
  std::string init_loss = "full";
  bool no_mala = false;
  std::string mask;
  std::string out_trace, out_distance_trace;
  std::string checkpoints, out_csv;
  bool calibrate = false;
  std::vector<double> calibrate_epsilons, calibrate_nbetas;
  CLI::App* app = nullptr;
};

// The factors of the default calibration grid around the chosen ε and nβ.
const std::vector<double> kEpsilonFactors{0.1, 0.3, 1, 3, 10};
const std::vector<double> kNbetaFactors{0.3, 1, 3};

enum class Mode { one, checkpoints, calibrate };

Mode mode_of(const LlcCommand& c) {
  if (!c.checkpoints.empty()) return Mode::checkpoints;
  return c.calibrate ? Mode::calibrate : Mode::one;
}

// Every flag combination and output path is checked before any work starts.
void validate(const LlcCommand& c) {
  const CLI::App& cmd = *c.app;
  // "--calibrate" is a flag: named without a value in the messages.
  const auto refuse_with_calibrate = [&](const std::string& flag, const std::string& why) {
    if (c.calibrate && given(cmd, flag)) throw UsageError(flag + " cannot be used with --calibrate: " + why);
  };
  refuse_with_calibrate("--checkpoints", "the sweep is run for one network (--model)");
  const Mode mode = mode_of(c);
  if (mode == Mode::checkpoints) {
    refuse_with_checkpoints(cmd);
    const std::string one = "the traces are written for one network (--model)";
    refuse_together(cmd, "--checkpoints", "--out-trace", one);
    refuse_together(cmd, "--checkpoints", "--out-distance-trace", one);
    if (c.out_csv.empty()) throw UsageError("--checkpoints DIR needs --out-csv FILE for the per-checkpoint curve");
  } else {
    if (c.model.model.empty() && c.model.arch.empty())
      throw UsageError("llc needs --model FILE (or --checkpoints DIR, or --arch WIDTHS for a fresh network)");
    if (mode == Mode::one)
      refuse_ignored(cmd, "--out-csv",
                     "it writes the per-checkpoint curve of --checkpoints DIR or the table of --calibrate");
  }
  if (mode == Mode::calibrate) {
    const std::string one = "the sweep runs one estimate per (epsilon, nbeta) pair; write a trace with a single run";
    refuse_with_calibrate("--out-trace", one);
    refuse_with_calibrate("--out-distance-trace", one);
    refuse_together(cmd, "--calibrate-epsilons", "--epsilon",
                    "--epsilon is the centre of the default sweep, which --calibrate-epsilons replaces");
    refuse_together(cmd, "--calibrate-nbetas", "--nbeta",
                    "--nbeta is the centre of the default sweep, which --calibrate-nbetas replaces");
  } else {
    refuse_ignored(cmd, "--calibrate-epsilons", "it sets the step sizes of the --calibrate sweep");
    refuse_ignored(cmd, "--calibrate-nbetas", "it sets the inverse temperatures of the --calibrate sweep");
  }
  if (c.sampler != "rmsprop-sgld") {
    refuse_ignored(cmd, "--rmsprop-alpha", "it is a constant of --sampler rmsprop-sgld (the sampler is " + c.sampler + ")");
    refuse_ignored(cmd, "--rmsprop-eps", "it is a constant of --sampler rmsprop-sgld (the sampler is " + c.sampler + ")");
  }
  if (c.options.batch == 0 && c.init_loss == "minibatch")
    throw UsageError("--init-loss minibatch needs minibatches (--batch M > 0): with full batches it is the full loss");
  check_output("--out", c.common.out);
  check_output("--out-trace", c.out_trace);
  check_output("--out-distance-trace", c.out_distance_trace);
  check_output("--out-csv", c.out_csv);
  // No two outputs may be one file (the second write would silently replace the first); paths are
  // compared after normalisation, so ./t.npy and t.npy are the same file.
  const std::pair<const char*, const std::string*> outputs[] = {{"--out", &c.common.out},
                                                                {"--out-trace", &c.out_trace},
                                                                {"--out-distance-trace", &c.out_distance_trace},
                                                                {"--out-csv", &c.out_csv}};
  const auto same = [](const std::string& a, const std::string& b) {
    return fs::absolute(fs::path(a)).lexically_normal() == fs::absolute(fs::path(b)).lexically_normal();
  };
  for (std::size_t i = 0; i < std::size(outputs); ++i)
    for (std::size_t j = i + 1; j < std::size(outputs); ++j)
      if (!outputs[i].second->empty() && !outputs[j].second->empty() && same(*outputs[i].second, *outputs[j].second))
        throw UsageError(std::string(outputs[j].first) + " and " + outputs[i].first + " name the same file '" +
                         *outputs[j].second + "'");
}

// The options for n training samples: the flags, checked against the data.
sgld::LlcOptions llc_options(const LlcCommand& c, index_t n) {
  sgld::LlcOptions o = c.options;
  if (o.batch > n)
    throw UsageError("--batch " + std::to_string(o.batch) + " is larger than the " + std::to_string(n) +
                     " training samples (0 = full batch)");
  o.sampler = parse_name(sgld::sampler_names, c.sampler);
  o.init_loss = parse_name(sgld::init_loss_names, c.init_loss);
  o.mala = !c.no_mala;
  o.seed = c.common.seed;
  if (const auto rule = find_name(sgld::nbeta_names, c.nbeta); rule && *rule != sgld::NBeta::value) {
    o.nbeta_rule = *rule;
  } else {
    o.nbeta_rule = sgld::NBeta::value;
    o.nbeta = std::stod(c.nbeta);  // checked by the flag's validator
  }
  return o;
}

// nβ as the estimator will take it (the centre of the default calibration grid).
double resolved_nbeta(const sgld::LlcOptions& o, index_t n) {
  const auto by_size = [](index_t m) { return double(m) / std::log(double(m)); };
  switch (o.nbeta_rule) {
    case sgld::NBeta::dataset: return by_size(n);
    case sgld::NBeta::batch: return by_size(o.batch > 0 ? o.batch : n);
    case sgld::NBeta::value: break;
  }
  return o.nbeta;
}

// --mask M.npy: [P] zeros and ones, 1 = the parameter moves.
std::vector<std::uint8_t> read_mask(const std::string& path, index_t params) {
  if (path.empty()) return {};
  io::Tensor t;
  try {
    t = io::read_array(path);
  } catch (const Error& e) {
    throw UsageError("--mask: " + std::string(e.what()));
  }
  if (t.shape.size() != 1 || t.shape[0] != params)
    throw UsageError("--mask: '" + path + "' must be [" + std::to_string(params) +
                     "] (one 0 or 1 per parameter of the network, in the checkpoint's flat order), got " +
                     shape_string(t.shape));
  const std::vector<double> v = t.to_vector<double>();
  std::vector<std::uint8_t> mask(v.size());
  index_t free = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] != 0 && v[i] != 1)
      throw UsageError("--mask: '" + path + "' holds " + std::to_string(v[i]) + " at index " + std::to_string(i) +
                       "; expected 0 (fixed) or 1 (sampled)");
    mask[i] = v[i] != 0;
    free += mask[i];
  }
  if (free == 0) throw UsageError("--mask: '" + path + "' fixes every parameter; at least one must be 1");
  return mask;
}

// The shortest decimal text that reads back as v (the sweep's epsilons in the CSV).
std::string exact_text(double v) {
  std::ostringstream s;
  for (int digits = 6; digits <= 17; ++digits) {
    s.str("");
    s.precision(digits);
    s << v;
    if (std::stod(s.str()) == v) break;
  }
  return s.str();
}

// The default sweep around a chosen value: factor x centre at 12 significant digits, so that
// 0.1 x 1e-4 is 1e-5 and not 1.0000000000000001e-05.
std::vector<double> grid_around(double centre, const std::vector<double>& factors) {
  std::vector<double> out;
  for (double f : factors) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.12g", f * centre);
    out.push_back(std::stod(buf));
  }
  return out;
}

std::string warnings_text(const sgld::LlcResult& r) {
  std::string s;
  for (const std::string& w : r.warnings) s += "warning: " + w + "\n";
  return s;
}

void write_trace(const std::string& path, const std::vector<double>& trace, const sgld::LlcResult& r) {
  io::write_npy(path, io::Tensor::from(trace.data(), {r.chains, r.draws}));
}

template <class T>
int run(const LlcCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  const Mode mode = mode_of(c);
  std::vector<std::pair<index_t, std::string>> steps;
  if (mode == Mode::checkpoints) steps = run_checkpoints("--checkpoints", c.checkpoints);
  const RunData rd = run_data(*c.app, c.data, c.common.seed, c.loss, mode == Mode::checkpoints ? c.checkpoints : "");
  const Context ctx = make_context(c.common);
  const data::Split split = load_data(rd.flags, rd.seed);
  const data::Dataset& train = split.train;
  if (!train.targets_present())
    throw UsageError("llc needs targets: give --targets FILE with --inputs, or a --dataset with labels or targets");
  model::Loss loss = model::Loss::mse;
  try {
    loss = rd.loss.empty() ? default_loss(train) : model::parse_loss(rd.loss);
  } catch (const InvalidArgument& e) {
    throw UsageError("--loss: " + std::string(e.what()));
  }
  check_loss_targets(loss, train);
  sgld::LlcOptions o = llc_options(c, train.n);
  const model::DeviceData<T> dev = model::to_device<T>(ctx, train);

  json r;
  r["data"] = rd.source;
  r["data"]["train_samples"] = train.n;
  r["loss"] = model::to_string(loss);
  // Progress through the context's sink (stderr, or nothing with --quiet). Ctrl-C ends the process
  // by the signal (common.cpp): every output file is written atomically after the sampling, so an
  // interrupted run leaves none behind.
  std::string task = "llc";
  o.on_progress = [&](const sgld::LlcProgress& p) {
    ctx.progress(task, p.step, p.total_steps);
    return true;
  };

  if (mode == Mode::one) {
    model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split);
    o.mask = read_mask(c.mask, net.spec.num_params());
    const sgld::LlcResult res =
        sgld::estimate_llc<T>(ctx, net.spec, net.params.data(), dev.x.matrix(), dev.targets(), loss, o);
    r["network"] = spec_json(net);
    r["options"] = llc_options_json(o);
    if (!c.mask.empty()) r["options"]["mask"] = c.mask;
    const json est = llc_json(res);
    for (auto it = est.begin(); it != est.end(); ++it) r[it.key()] = it.value();
    if (!c.out_trace.empty()) {
      write_trace(c.out_trace, res.loss_trace, res);
      r["trace_file"] = c.out_trace;
    }
    if (!c.out_distance_trace.empty()) {
      write_trace(c.out_distance_trace, res.distance_trace, res);
      r["distance_trace_file"] = c.out_distance_trace;
    }
    emit_result("llc", c.common, ctx, r, start);
    say(c.common, llc_summary(res) + "\n" + warnings_text(res));
    // Like a diverged training run: the result is written, and the exit status says it failed.
    return index_t(res.diverged.size()) == res.chains ? 1 : 0;
  }

  if (mode == Mode::calibrate) {
    model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split);
    o.mask = read_mask(c.mask, net.spec.num_params());
    std::vector<double> epsilons = c.calibrate_epsilons, nbetas = c.calibrate_nbetas;
    if (epsilons.empty()) epsilons = grid_around(o.epsilon, kEpsilonFactors);
    if (nbetas.empty()) {
      const double centre = resolved_nbeta(o, train.n);
      if (!(centre > 0) || !std::isfinite(centre))
        throw UsageError("--nbeta " + c.nbeta + ": n / ln n is not a positive number for " + std::to_string(train.n) +
                         " samples; give --nbeta VALUE or --calibrate-nbetas");
      nbetas = grid_around(centre, kNbetaFactors);
    }
    task = "llc calibrate";
    const std::vector<sgld::CalibrationPoint> points = sgld::calibrate<T>(
        ctx, net.spec, net.params.data(), dev.x.matrix(), dev.targets(), loss, o, epsilons, nbetas);
    r["network"] = spec_json(net);
    r["options"] = llc_options_json(o);
    if (!c.mask.empty()) r["options"]["mask"] = c.mask;
    r["options"].erase("epsilon");
    r["options"].erase("nbeta");
    r["options"].erase("nbeta_rule");
    r["epsilons"] = epsilons;
    r["nbetas"] = nbetas;
    json table = json::array();
    std::string csv = llc_csv_header("epsilon");
    char line[256];
    std::snprintf(line, sizeof line, "%10s  %10s  %10s  %9s  %6s  %6s  %8s  %s\n", "epsilon", "nbeta", "llc", "SE", "r_hat",
                  "accept", "diverged", "warnings");
    std::string text = line;
    for (const sgld::CalibrationPoint& p : points) {
      json row;
      row["epsilon"] = p.epsilon;
      const json est = llc_json(p.result);
      for (auto it = est.begin(); it != est.end(); ++it) row[it.key()] = it.value();
      table.push_back(row);
      csv += llc_csv_row(exact_text(p.epsilon), p.result);
      std::snprintf(line, sizeof line, "%10.3g  %10.4g  %10.4g  %9.2g  %6.3f  %6.3f  %4zu/%-3lld  ", p.epsilon,
                    p.result.nbeta, p.result.llc_mean, p.result.llc_stderr, p.result.r_hat, p.result.mala_acceptance,
                    p.result.diverged.size(), static_cast<long long>(p.result.chains));
      text += line;
      std::string w;
      for (const std::string& s : p.result.warnings) w += (w.empty() ? "" : "; ") + s;
      text += (w.empty() ? "-" : w) + "\n";
    }
    r["calibration"] = table;
    if (!c.out_csv.empty()) {
      io::write_text_atomic(c.out_csv, csv);
      r["csv_file"] = c.out_csv;
    }
    emit_result("llc", c.common, ctx, r, start);
    say(c.common, text);
    return 0;
  }

  // Along training: every checkpoint with the same data, options and seed.
  std::string csv = llc_csv_header("step");
  json rows = json::array();
  std::string text;
  model::MlpSpec first;
  for (std::size_t q = 0; q < steps.size(); ++q) {
    ModelFlags mf = c.model;
    mf.model = steps[q].second;
    model::Mlp<T> net = load_network<T>(ctx, mf, c.common.seed, split);
    if (q == 0) {
      first = net.spec;
      o.mask = read_mask(c.mask, net.spec.num_params());
      r["network"] = spec_json(net);
      // Every other checkpoint read once before any chain runs: one of another architecture
      // (widths, biases, activations, parameterization) is refused before hours are spent.
      check_checkpoints<T>(c.common, c.model, split, steps, first);
    } else {
      check_same_architecture("--checkpoints", first, net.spec, steps[q].second);
    }
    task = "llc: checkpoint " + std::to_string(q + 1) + "/" + std::to_string(steps.size()) + " (step " +
           std::to_string(steps[q].first) + ")";
    const sgld::LlcResult res =
        sgld::estimate_llc<T>(ctx, net.spec, net.params.data(), dev.x.matrix(), dev.targets(), loss, o);
    csv += llc_csv_row(std::to_string(steps[q].first), res);
    json row;
    row["step"] = steps[q].first;
    row["checkpoint"] = steps[q].second;
    const json est = llc_json(res);
    for (auto it = est.begin(); it != est.end(); ++it) row[it.key()] = it.value();
    rows.push_back(row);
    text += "step " + std::to_string(steps[q].first) + ": " + llc_summary(res) + "\n" + warnings_text(res);
  }
  io::write_text_atomic(c.out_csv, csv);
  r["options"] = llc_options_json(o);
  if (!c.mask.empty()) r["options"]["mask"] = c.mask;
  r["checkpoints"] = steps.size();
  r["csv_file"] = c.out_csv;
  r["rows"] = rows;
  emit_result("llc", c.common, ctx, r, start);
  say(c.common, text);
  return 0;
}

// --nbeta: auto (n / ln n), batch (m / ln m) or a number > 0.
CLI::Validator nbeta_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const auto rule = find_name(sgld::nbeta_names, text);
        if (rule && *rule != sgld::NBeta::value) return {};
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v))
          return "expected auto, batch or a number > 0, got '" + text + "'";
        if (!std::isfinite(v) || !(v > 0)) return "must be auto, batch or a finite number > 0, got " + text;
        return {};
      },
      "auto | batch | NUMBER > 0");
}

}  // namespace

Command register_llc(CLI::App& app) {
  auto* cmd = app.add_subcommand("llc", "Local learning coefficient by batched SGLD chains: for one network, along a "
                                        "run's checkpoints, or the epsilon x nbeta calibration sweep");
  auto c = std::make_shared<LlcCommand>();
  c->app = cmd;
  sgld::LlcOptions& o = c->options;
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, false);
  add_data_flags(*cmd, c->data, true);
  cmd->add_option("--loss", c->loss, choices(model::loss_names) + " (default: xent for class labels, mse for float targets; "
                                                                  "with --checkpoints the run's)")
      ->check(one_of(model::loss_names));
  cmd->add_option("--chains", o.chains, "independent SGLD chains C, run together, >= 1")->check(at_least(1))->capture_default_str();
  cmd->add_option("--draws", o.draws, "recorded draws per chain D, >= 1")->check(at_least(1))->capture_default_str();
  cmd->add_option("--burnin", o.burnin, "steps before the first draw, >= 0")->check(at_least(0))->capture_default_str();
  cmd->add_option("--thin", o.thin, "steps per draw, >= 1")->check(at_least(1))->capture_default_str();
  cmd->add_option("--epsilon", o.epsilon, "step size epsilon, > 0")
      ->check(finite_at_least(0, /*open=*/true))
      ->capture_default_str();
  cmd->add_option("--gamma", o.gamma, "localization strength gamma, >= 0")->check(finite_at_least(0))->capture_default_str();
  cmd->add_option("--nbeta", c->nbeta,
                  "inverse temperature n*beta: auto = n / ln n (n training samples), batch = m / ln m (m = --batch, "
                  "devinterp's default), or a number > 0")
      ->check(nbeta_value())
      ->capture_default_str();
  cmd->add_option("--batch", o.batch,
                  "minibatch size m per chain and step, drawn with replacement, 0..n (0 = full batch)")
      ->check(at_least(0))
      ->capture_default_str();
  cmd->add_option("--sampler", c->sampler, choices(sgld::sampler_names))
      ->check(one_of(sgld::sampler_names))
      ->capture_default_str();
  cmd->add_option("--rmsprop-alpha", o.rmsprop_alpha,
                  "rmsprop-sgld: decay of the running mean of squared gradients, in [0, 1)")
      ->check(finite_in_range(0, 1, /*max_open=*/true))
      ->capture_default_str();
  cmd->add_option("--rmsprop-eps", o.rmsprop_eps, "rmsprop-sgld: added to the root mean square, > 0")
      ->check(finite_at_least(0, /*open=*/true))
      ->capture_default_str();
  cmd->add_option("--bounding-box", o.bounding_box,
                  "clamp every parameter to w*_i +- B after each step, > 0 (default: no box)")
      ->check(finite_at_least(0, /*open=*/true));
  cmd->add_option("--init-loss", c->init_loss,
                  choices(sgld::init_loss_names) +
                      ": L_n(w*) from the whole training set, or the mean minibatch loss at w* (needs --batch)")
      ->check(one_of(sgld::init_loss_names))
      ->capture_default_str();
  cmd->add_flag("--no-mala", c->no_mala, "do not estimate the Metropolis-adjusted acceptance (saves one [C, P] buffer)");
  cmd->add_option("--mask", c->mask,
                  "restricted LLC: a [P] .npy of 0/1, one per parameter in the checkpoint's flat order; only the 1s move")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out-trace", c->out_trace, "write the loss trace [C, D] (float64: L_B(w) at each draw) to this .npy");
  cmd->add_option("--out-distance-trace", c->out_distance_trace,
                  "write the distance trace [C, D] (float64: |w - w*| at each draw) to this .npy");
  cmd->add_option("--checkpoints", c->checkpoints,
                  "a run folder: the LLC at every step_*.safetensors, with the run's data (report.json) unless data "
                  "flags are given; needs --out-csv");
  cmd->add_option("--out-csv", c->out_csv,
                  "with --checkpoints: one row per checkpoint; with --calibrate: one row per (epsilon, nbeta)");
  cmd->add_flag("--calibrate", c->calibrate,
                "sweep epsilon x nbeta (default: epsilon x 0.1, 0.3, 1, 3, 10 and nbeta x 0.3, 1, 3) and report the "
                "estimate and its health for each pair");
  cmd->add_option("--calibrate-epsilons", c->calibrate_epsilons, "the sweep's step sizes, e.g. 1e-5,3e-5,1e-4 (each > 0)")
      ->delimiter(',')
      ->check(finite_at_least(0, /*open=*/true));
  cmd->add_option("--calibrate-nbetas", c->calibrate_nbetas, "the sweep's inverse temperatures n*beta (each > 0)")
      ->delimiter(',')
      ->check(finite_at_least(0, /*open=*/true));
  return {cmd, [c] {
            validate(*c);
            // The precision follows the data: the first checkpoint stands for the run's networks.
            resolve_dtype(c->common, {c->model.model, first_checkpoint(c->checkpoints), c->data.inputs});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
