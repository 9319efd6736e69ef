// dynascope response: the training response (Nakazato) — how one SGD step on a sample moves the
// output at another, normalised by the step — with the feature space of the hidden layers, for one
// network or along a run's checkpoints, where the aging fit R_t ~ A t^(-beta) is made.
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "cli/model_flags.hpp"
#include "cli/run_data.hpp"
#include "cli/training_run.hpp"
#include "dynascope/dispatch.hpp"
#include "dynascope/io.hpp"
#include "dynascope/response.hpp"

namespace dynascope::cli {

namespace {

// Samples at most, unless --samples says otherwise: the response is measured for all N x N pairs.
constexpr index_t kDefaultSamples = 128;

struct ResponseCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  double eta = response::Options{}.eta;
  std::string form = "step";
  std::string loss;  // empty: by the data (or the run's with --checkpoints)
  std::vector<std::string> fit_window_text;  // --fit-window A,B as given
  std::vector<index_t> fit_window;           // its steps (parsed by validate); empty: every step > 0
  double duplicate_tolerance = response::FeatureOptions{}.duplicate_tolerance;
  std::string checkpoints, out_csv;
  CLI::App* app = nullptr;
};

// Checkpoints are named by integer steps, so the window takes integers: "1e2" would read as 1 with
// a parse that stops at the exponent, and a float window end would say less than it seems to.
std::vector<index_t> parse_fit_window(const std::vector<std::string>& text) {
  const auto joined = [&] {
    std::string j;
    for (const std::string& t : text) j += (j.empty() ? "" : ",") + t;
    return j;
  };
  if (text.size() != 2)
    throw UsageError("--fit-window expects two steps A,B (the first and last step fitted), got " +
                     std::to_string(text.size()) + " values");
  std::vector<index_t> steps;
  for (const std::string& t : text) {
    long long v = -1;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || t[0] == '-' || ec != std::errc() || end != t.data() + t.size() || v < 0)
      throw UsageError("--fit-window " + joined() + ": the steps are checkpoint step numbers, integers >= 0 (e.g. "
                       "100,600), got '" + t + "'");
    steps.push_back(index_t(v));
  }
  if (steps[0] > steps[1])
    throw UsageError("--fit-window " + joined() + ": the first step must not be after the last");
  return steps;
}

void validate(ResponseCommand& c) {
  const CLI::App& cmd = *c.app;
  if (!c.checkpoints.empty()) {
    refuse_with_checkpoints(cmd);
    if (c.out_csv.empty()) throw UsageError("--checkpoints DIR needs --out-csv FILE for the per-checkpoint curve");
  } else {
    if (c.model.model.empty() && c.model.arch.empty())
      throw UsageError("response needs --checkpoints DIR (or --model FILE, or --arch WIDTHS, for one network)");
    refuse_ignored(cmd, "--out-csv", "it writes the per-checkpoint curve of --checkpoints DIR");
    refuse_ignored(cmd, "--fit-window", "it sets the steps of the aging fit over the checkpoints of --checkpoints DIR");
  }
  if (given(cmd, "--fit-window")) c.fit_window = parse_fit_window(c.fit_window_text);
  check_output("--out", c.common.out);
  check_output("--out-csv", c.out_csv);
  refuse_same_outputs({{"--out", c.common.out}, {"--out-csv", c.out_csv}});
}

struct Measurement {
  response::Response response;
  response::FeatureSpace features;
};

// Above this relative gap between the step's diagonal response and its eta -> 0 limit (the sum of
// the per-layer kernels' diagonals) the step is not the linear step the response is meant to be.
constexpr double kKernelGapWarning = 0.05;

// What the messages about the samples without a response need.
struct Reporting {
  std::string dtype;            // the compute precision
  std::string unresolved_hint;  // what resolves a sample whose own change is below it
};

bool all_undefined(const Measurement& m) {
  return m.response.samples > 0 && index_t(m.response.undefined_sources.size()) == m.response.samples;
}

// The samples without a response, in two kinds that need different remedies (as for elasticity),
// and a step that differs from its eta -> 0 limit.
std::vector<std::string> row_warnings(const Measurement& m, const Reporting& rep, const std::string& where) {
  std::vector<std::string> w;
  const std::size_t unresolved = m.response.unresolved_sources.size();
  const std::size_t zero = m.response.undefined_sources.size() - unresolved;
  if (zero > 0)
    w.push_back(where + std::to_string(zero) + " samples have no response: zero loss gradient (the step does not "
                "move the network); they are left out of the means");
  if (unresolved > 0)
    w.push_back(where + std::to_string(unresolved) + " samples have no response: unresolved at " + rep.dtype +
                " (their own change is below its precision, though their loss gradient is not zero): " +
                rep.unresolved_hint + "; they are left out of the means");
  if (std::isfinite(m.response.kernel_gap) && m.response.kernel_gap > kKernelGapWarning) {
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.3g%%", 100.0 * m.response.kernel_gap);
    w.push_back(where + "the one step differs from its eta -> 0 limit by " + pct +
                " (kernel_gap): eta too large for a linear step, or too small for the precision (" + rep.dtype + ")");
  }
  return w;
}

std::string nothing_defined(const Measurement& m, const Reporting& rep) {
  const std::size_t all = m.response.undefined_sources.size();
  const std::size_t unresolved = m.response.unresolved_sources.size();
  const std::size_t zero = all - unresolved;
  return "none of the " + std::to_string(all) + " samples has a response, so there is none to report: " +
         nothing_measured_why(zero, unresolved, rep.dtype, rep.unresolved_hint);
}

template <class T>
Measurement measure(const Context& ctx, const model::Mlp<T>& net, const model::DeviceData<T>& d,
                    const response::Options& o, const response::FeatureOptions& fo) {
  Measurement m;
  m.response = response::training_response<T>(ctx, net.spec, net.params.data(), d.x.matrix(), d.targets(), o);
  m.features = response::feature_space<T>(ctx, net.spec, net.params.data(), d.x.matrix(), fo);
  return m;
}

// One network's measures (the same keys for --model and each --checkpoints row, and the demo's).
json measurement_json(const Measurement& m) {
  json j;
  j["samples"] = m.response.samples;
  const json row = response_row_json(m.response, m.features);
  // response_row_json has unresolved_sources and kernel_gap (|step mean diagonal - sum of the
  // per-layer kernel diagonals| / |that sum|; null in the ntk form).
  for (auto it = row.begin(); it != row.end(); ++it) j[it.key()] = it.value();
  return j;
}

// R_t ~ A t^(-beta) over the window; null values and a warning (never an error) when fewer than 3
// checkpoints in the window have a step > 0 and a positive response.
json fit_json(const std::vector<double>& t, const std::vector<double>& r, index_t first, index_t last,
              const std::string& what, std::vector<std::string>& warnings) {
  const double a = double(first), b = double(last);
  index_t usable = 0;
  for (std::size_t i = 0; i < t.size(); ++i)
    if (t[i] >= a && t[i] <= b && t[i] > 0 && std::isfinite(r[i]) && r[i] > 0) ++usable;
  const auto none = [&](const std::string& why) {
    json j = power_law_json(response::PowerLawFit{}, a, b);
    j["fit_window"] = {first, last};
    for (const char* key : {"beta", "beta_ci", "beta_stderr", "amplitude", "r_squared"}) j[key] = nullptr;
    j["points"] = usable;
    j["skipped"] = index_t(t.size()) - usable;
    warnings.push_back("no aging fit of " + what + ": " + why);
    return j;
  };
  if (usable < 3)
    return none(std::to_string(usable) + " checkpoint" + (usable == 1 ? "" : "s") + " with a step in [" +
                std::to_string(first) + ", " + std::to_string(last) + "], step > 0 and a positive response; the fit "
                "needs 3");
  json j;
  try {
    j = power_law_json(response::fit_power_law(t, r, a, b), a, b);
  } catch (const InvalidArgument& e) {
    j = none(e.what());
  }
  j["fit_window"] = {first, last};  // steps, as given
  return j;
}

std::string summary_text(const Measurement& m) {
  char line[256];
  std::snprintf(line, sizeof line, "response: diagonal %.4g, off-diagonal %.4g; input-gradient norm %.4g",
                m.response.mean_diagonal, m.response.mean_off_diagonal, m.features.input_grad_norm);
  std::string text = line;
  for (const response::LayerFeatures& f : m.features.layers) {
    std::snprintf(line, sizeof line, "; layer %lld: effective rank %.3g, %lld dead, %lld duplicated",
                  static_cast<long long>(f.layer), f.effective_rank, static_cast<long long>(f.dead),
                  static_cast<long long>(f.duplicated));
    text += line;
  }
  return text + "\n";
}

template <class T>
int run(const ResponseCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  const bool along = !c.checkpoints.empty();
  std::vector<std::pair<index_t, std::string>> steps;
  if (along) steps = run_checkpoints("--checkpoints", c.checkpoints);
  const RunData rd = run_data(*c.app, c.data, c.common.seed, c.loss, c.checkpoints, /*samples_cap=*/true);
  const Context ctx = make_context(c.common);
  const data::Split split = load_data(rd.flags, rd.seed);
  check_samples(*c.app, rd, c.data.samples, split.train.n);
  // A run's recorded data may be larger than the default: its first training samples.
  const data::Dataset samples = first_samples(split.train, c.data.samples);
  if (!samples.targets_present())
    throw UsageError("response needs targets (the step is taken on their loss): give --targets FILE with --inputs, or "
                     "a --dataset with labels or targets");
  if (samples.n < 2)
    throw UsageError("response needs at least 2 samples (the off-diagonal response is between two), got " +
                     std::to_string(samples.n));
  const model::Loss loss = step_loss(rd, samples);
  response::Options o;
  o.eta = c.eta;
  o.form = elasticity::parse_form(c.form);
  o.loss = loss;
  o.per_layer = true;
  response::FeatureOptions fo;
  fo.duplicate_tolerance = c.duplicate_tolerance;
  Reporting rep;
  rep.dtype = c.common.dtype;
  rep.unresolved_hint = rep.dtype == "float32" ? "use --dtype float64 or --form ntk"
                        : c.form == "step"     ? "use --form ntk or a larger --eta"
                                               : "use a larger --eta";

  ModelFlags first = c.model;
  if (along) first.model = steps.front().second;
  model::Mlp<T> net = load_network<T>(ctx, first, c.common.seed, split);
  const model::DeviceData<T> d = model::to_device<T>(ctx, samples);
  const index_t layers = net.spec.layers();

  json r;
  r["data"] = rd.source;
  r["data"]["train_samples"] = split.train.n;
  r["data"]["samples"] = samples.n;
  r["network"] = spec_json(net);
  r["eta"] = c.eta;
  r["form"] = c.form;
  r["loss"] = model::to_string(loss);
  r["samples"] = samples.n;
  r["duplicate_tolerance"] = c.duplicate_tolerance;

  if (!along) {
    const Measurement m = measure<T>(ctx, net, d, o, fo);
    // Nothing measured is a failure, not a result: no file is written.
    if (all_undefined(m)) throw std::runtime_error(nothing_defined(m, rep));
    const json mj = measurement_json(m);
    for (auto it = mj.begin(); it != mj.end(); ++it) r[it.key()] = it.value();
    emit_with_warnings("response", c.common, ctx, r, row_warnings(m, rep, ""), start);
    say(c.common, summary_text(m));
    return 0;
  }

  std::string csv = response_csv_header(layers);
  json rows = json::array();
  std::string text;
  std::vector<double> t, total;
  std::vector<std::vector<double>> per_layer(static_cast<std::size_t>(layers));
  std::vector<std::string> warnings;
  double flops = 0;
  for_each_checkpoint<T>(ctx, "response", c.common, c.model, split, steps, net, [&](std::size_t q) {
    const Measurement m = measure<T>(ctx, net, d, o, fo);
    flops += m.response.flops;
    csv += response_csv_row(steps[q].first, steps[q].second, layers, m.response, m.features);
    rows.push_back(checkpoint_row(steps[q], measurement_json(m)));
    t.push_back(double(steps[q].first));
    total.push_back(m.response.mean_diagonal);
    for (index_t l = 0; l < layers; ++l)
      per_layer[std::size_t(l)].push_back(l < index_t(m.response.layer_diagonal.size())
                                              ? m.response.layer_diagonal[std::size_t(l)]
                                              : std::numeric_limits<double>::quiet_NaN());
    text += "step " + std::to_string(steps[q].first) + ": " + summary_text(m);
    // A checkpoint without any response keeps its (empty) row: the curve and the fit go on.
    const std::string where = checkpoint_where(steps[q]);
    if (all_undefined(m))
      warnings.push_back(where + nothing_defined(m, rep) + "; its row is empty");
    else
      for (const std::string& w : row_warnings(m, rep, where)) warnings.push_back(w);
  });
  io::write_text_atomic(c.out_csv, csv);

  // The aging fit of the mean diagonal response R_t(x, x), and of each layer's share.
  const index_t a = c.fit_window.empty() ? 1 : c.fit_window[0];
  const index_t b = c.fit_window.empty() ? std::max<index_t>(steps.back().first, 1) : c.fit_window[1];
  std::vector<std::string> fit_warnings;
  r["fit_to"] = "mean_diagonal";
  const json fit = fit_json(t, total, a, b, "the mean diagonal response", fit_warnings);
  for (auto it = fit.begin(); it != fit.end(); ++it) r[it.key()] = it.value();
  json layer_fits = json::array();
  for (index_t l = 0; l < layers; ++l) {
    json f;
    f["layer"] = l + 1;
    const json lf = fit_json(t, per_layer[std::size_t(l)], a, b,
                             "layer " + std::to_string(l + 1) + "'s diagonal response", fit_warnings);
    for (auto it = lf.begin(); it != lf.end(); ++it) f[it.key()] = it.value();
    layer_fits.push_back(f);
  }
  r["layers"] = layer_fits;
  r["flops"] = flops;
  r["checkpoints"] = steps.size();
  r["csv_file"] = c.out_csv;
  json last = rows.back();
  r["last"] = last;
  r["rows"] = rows;
  if (r["beta"].is_null()) {
    text += fit_warnings.front() + "\n";  // "no aging fit of ...: why"
  } else {
    char line[256];
    std::snprintf(line, sizeof line, "aging fit over steps %lld..%lld: beta = %.4g [%.4g, %.4g] (95%%), A = %.4g, R^2 = %.3f\n",
                  static_cast<long long>(a), static_cast<long long>(b), r["beta"].get<double>(),
                  r["beta_ci"][0].is_null() ? NAN : r["beta_ci"][0].get<double>(),
                  r["beta_ci"][1].is_null() ? NAN : r["beta_ci"][1].get<double>(),
                  r["amplitude"].is_null() ? NAN : r["amplitude"].get<double>(),
                  r["r_squared"].is_null() ? NAN : r["r_squared"].get<double>());
    text += line;
  }
  warnings.insert(warnings.end(), fit_warnings.begin(), fit_warnings.end());
  emit_with_warnings("response", c.common, ctx, r, warnings, start);
  say(c.common, text);
  return 0;
}

}  // namespace

Command register_response(CLI::App& app) {
  auto* cmd = app.add_subcommand("response", "Training response R(x', x) = change of f(x') / (-eta dl/df(x)) over all "
                                             "sample pairs, per layer, with the hidden layers' feature space; along a "
                                             "run's checkpoints with the aging fit R_t ~ A t^(-beta); at most 128 "
                                             "samples by default (--samples)");
  auto c = std::make_shared<ResponseCommand>();
  c->app = cmd;
  c->data.samples = kDefaultSamples;
  add_measure_flags(*cmd, c->common, c->model, c->data);
  cmd->add_option("--eta", c->eta, "step size eta of the one SGD step, > 0")
      ->check(finite_at_least(0, /*open=*/true))
      ->capture_default_str();
  cmd->add_option("--form", c->form,
                  choices(elasticity::form_names) +
                      ": take the step (step), or its eta -> 0 limit from the NTK (ntk); the per-layer responses "
                      "always come from the per-layer NTK")
      ->check(one_of(elasticity::form_names))
      ->capture_default_str();
  add_step_loss_flag(*cmd, c->loss);
  cmd->add_option("--fit-window", c->fit_window_text,
                  "A,B: integer steps; fit R_t ~ A t^(-beta) over the checkpoints with A <= step <= B (default: "
                  "every step > 0)")
      ->delimiter(',');
  cmd->add_option("--duplicate-tolerance", c->duplicate_tolerance,
                  "two hidden units are duplicates when their normalised (weights, bias) lie within this distance, >= 0")
      ->check(finite_at_least(0))
      ->capture_default_str();
  cmd->add_option("--checkpoints", c->checkpoints,
                  "a run folder: the response at every step_*.safetensors and the aging fit, with the run's data "
                  "(report.json) unless data flags are given (--samples N alone keeps the run's data and takes its "
                  "first N training samples); needs --out-csv");
  cmd->add_option("--out-csv", c->out_csv,
                  "with --checkpoints: one row per checkpoint (step, checkpoint, mean_diagonal, mean_off_diagonal, "
                  "then layer<l>_diagonal, layer<l>_off_diagonal for each layer l, effective_rank<l>, "
                  "participation_ratio<l>, dead<l>, duplicated<l> for each hidden layer, input_grad_norm)");
  return {cmd, [c] {
            validate(*c);
            resolve_float64_default(c->common);
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
