// dynascope elasticity: local elasticity (He & Su; Dan, Mukherjee, Das, Gampa) — how one training
// step on a source sample moves the network's outputs at the targets of the move — for one
// network (S_rel for every pair, the class-pair matrix for labels) or along a run's checkpoints
// (one row per checkpoint: the two-phase curve).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <optional>

#include "cli/model_flags.hpp"
#include "cli/run_data.hpp"
#include "cli/training_run.hpp"
#include "dynascope/dispatch.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/io.hpp"

namespace dynascope::cli {

namespace {

// Sources (and targets of the move) at most, unless --samples says otherwise: the step form runs
// a forward over every (source, target) pair, so 512 x 512 pairs keep the default quick.
constexpr index_t kDefaultSamples = 512;

struct ElasticityCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string inputs2, targets2;
  double eta = elasticity::Options{}.eta;
  std::string update = "sgd";
  double adam_eps = elasticity::Options{}.adam_eps;
  std::string form = "step";
  std::string metric = "auto";
  std::string loss;  // empty: by the data (or the run's with --checkpoints)
  index_t pairs_per_class = 0;  // 0: all pairs
  std::string out_matrix, out_class_matrix;
  std::string checkpoints, out_csv;
  CLI::App* app = nullptr;
};

// Every flag combination and output path that can be checked without the data is checked before
// any work starts.
void validate(const ElasticityCommand& c) {
  const CLI::App& cmd = *c.app;
  if (!c.checkpoints.empty()) {
    refuse_with_checkpoints(cmd);
    const std::string one = "the matrices are written for one network (--model); --out-csv gets one row per checkpoint";
    refuse_together(cmd, "--checkpoints", "--out-matrix", one);
    refuse_together(cmd, "--checkpoints", "--out-class-matrix", one);
    if (c.out_csv.empty()) throw UsageError("--checkpoints DIR needs --out-csv FILE for the per-checkpoint curve");
  } else {
    if (c.model.model.empty() && c.model.arch.empty())
      throw UsageError("elasticity needs --model FILE (or --checkpoints DIR, or --arch WIDTHS for a fresh network)");
    refuse_ignored(cmd, "--out-csv", "it writes the per-checkpoint curve of --checkpoints DIR");
  }
  if (c.update != "adam")
    refuse_ignored(cmd, "--adam-eps", "it is the constant of --update adam (the update is " + c.update + ")");
  if (c.form == "ntk") {
    if (c.update == "adam")
      throw UsageError("--update adam cannot be used with --form ntk: the eta -> 0 limit exists for the sgd update only "
                       "(use --form step)");
    if (c.metric == "kl-compat" || c.metric == "kl_compat")
      throw UsageError("--metric kl-compat cannot be used with --form ntk: it reproduces the reference notebooks' "
                       "one-step formula (use --form step, or --metric kl for the eta -> 0 limit)");
  }
  check_output("--out", c.common.out);
  check_output("--out-matrix", c.out_matrix);
  check_output("--out-class-matrix", c.out_class_matrix);
  check_output("--out-csv", c.out_csv);
  refuse_same_outputs({{"--out", c.common.out},
                       {"--out-matrix", c.out_matrix},
                       {"--out-class-matrix", c.out_class_matrix},
                       {"--out-csv", c.out_csv}});
}

// The targets of the move: --inputs2 (with --targets2) or none (the sources themselves).
std::optional<data::Dataset> second_set(const ElasticityCommand& c, const data::Dataset& sources, index_t inputs,
                                        index_t outputs) {
  if (c.inputs2.empty()) return std::nullopt;
  const bool labels = sources.task == data::Task::classification;
  if (!c.targets2.empty() && !labels)
    throw UsageError("--targets2: the targets of the move only need labels for the class-pair matrix, and the sources "
                     "hold float targets (no classes); leave --targets2 out");
  data::Dataset d;
  try {
    d = data::inputs_from_file(c.inputs2);
  } catch (const Error& e) {
    throw UsageError("--inputs2 " + c.inputs2 + ": " + e.what());
  }
  if (!c.targets2.empty()) {
    // The labels' row count is checked against --inputs2 here, so that the message names --targets2.
    try {
      d = data::dataset_from_files(c.inputs2, c.targets2);
    } catch (const Error& e) {
      throw UsageError("--targets2 " + c.targets2 + " (the labels of --inputs2 " + c.inputs2 + "): " + e.what());
    }
  }
  d = first_samples(d, c.data.samples);
  if (d.d != inputs)
    throw UsageError("--inputs2 " + c.inputs2 + " has " + std::to_string(d.d) + " values per sample, but the network takes " +
                     std::to_string(inputs));
  if (!c.targets2.empty()) {
    if (d.task != data::Task::classification)
      throw UsageError("--targets2 " + c.targets2 + " holds float targets, but the sources hold class labels: give the "
                       "targets' integer class labels");
    for (index_t i = 0; i < d.n; ++i)
      if (d.labels[std::size_t(i)] >= outputs)
        throw UsageError("--targets2 " + c.targets2 + ": class label " + std::to_string(d.labels[std::size_t(i)]) +
                         " at row " + std::to_string(d.source_row(i)) + " is out of range for the network's " +
                         std::to_string(outputs) + " outputs");
  }
  return d;
}

// One network's elasticity over the pairs, with the class-pair matrix for labels.
struct Measurement {
  elasticity::PairResult pairs;
  std::optional<elasticity::ClassMatrix> classes;
  double mean = std::numeric_limits<double>::quiet_NaN();
  index_t pairs_averaged = 0;
  double seconds = 0;
};

struct Problem {
  elasticity::Options options;
  elasticity::Metric metric = elasticity::Metric::abs;  // resolved
  bool labels = false;
  bool same_set = true;
  index_t classes = 0;
  std::vector<std::int64_t> labels1, labels2;
  std::vector<index_t> source_rows;  // each source's row in the training split
  std::vector<index_t> target_rows;  // each target's row (training split, or --inputs2); empty: the sources
  std::string dtype;                 // the compute precision, for the messages
  std::string unresolved_hint;       // what resolves a source whose own change is below the precision
};

template <class T>
Measurement measure(const Context& ctx, const model::MlpSpec& spec, const T* params, const model::DeviceData<T>& d1,
                    const model::DeviceData<T>* d2, const Problem& p) {
  const auto t0 = std::chrono::steady_clock::now();
  Measurement m;
  std::optional<MatrixView<const T>> x2;
  if (d2 != nullptr) x2 = d2->x.matrix();
  m.pairs = elasticity::pairwise<T>(ctx, spec, params, d1.x.matrix(), d1.targets(), x2, p.options);
  m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Array<double>& s = m.pairs.s_rel;
  // The mean leaves out undefined sources (NaN rows) and, with one set, the pairs of a sample with
  // itself (S_rel = 1 by definition), as the class-pair matrix does.
  m.mean = elasticity_mean(s, p.same_set, &m.pairs_averaged);
  if (p.labels && !p.labels2.empty())
    m.classes = elasticity::class_matrix(s.matrix(), vector_view(p.labels1.data(), index_t(p.labels1.size())),
                                         vector_view(p.labels2.data(), index_t(p.labels2.size())), p.classes, p.same_set);
  return m;
}

json matrix_json(const Array<double>& a) {
  json rows = json::array();
  for (index_t i = 0; i < a.dim(0); ++i) {
    json row = json::array();
    for (index_t j = 0; j < a.dim(1); ++j) row.push_back(finite_or_null(a.data()[i * a.dim(1) + j]));
    rows.push_back(row);
  }
  return rows;
}

// The measurement's JSON keys (the same at the top level and in each --checkpoints row).
json measurement_json(const Measurement& m, const Problem& p) {
  json j;
  j["mean"] = finite_or_null(m.mean);
  j["pairs"] = m.pairs_averaged;
  if (m.classes) {
    j["class_matrix"] = matrix_json(m.classes->matrix);
    json counts = json::array();
    for (index_t a = 0; a < m.classes->classes; ++a) {
      json row = json::array();
      for (index_t b = 0; b < m.classes->classes; ++b) row.push_back(m.classes->pairs.data()[a * m.classes->classes + b]);
      counts.push_back(row);
    }
    j["class_pairs"] = counts;
    j["within_class"] = finite_or_null(m.classes->within);
    j["across_class"] = finite_or_null(m.classes->across);
    j["ratio"] = finite_or_null(m.classes->ratio);
    j["empty_cells"] = m.classes->empty_cells;
  } else {
    j["class_matrix"] = nullptr;
    j["within_class"] = nullptr;
    j["across_class"] = nullptr;
    j["ratio"] = nullptr;
  }
  json undefined = json::array();
  for (index_t i : m.pairs.undefined_sources) undefined.push_back(p.source_rows[std::size_t(i)]);
  j["undefined_sources"] = undefined;
  json unresolved = json::array();
  for (index_t i : m.pairs.unresolved_sources) unresolved.push_back(p.source_rows[std::size_t(i)]);
  j["unresolved_sources"] = unresolved;
  j["flops"] = m.pairs.flops;
  const double n_pairs = double(m.pairs.s_rel.dim(0)) * double(m.pairs.s_rel.dim(1));
  j["pairs_per_second"] = m.seconds > 0 ? n_pairs / m.seconds : 0.0;
  j["compute_seconds"] = m.seconds;
  return j;
}

std::string summary_text(const Measurement& m, const Problem& p) {
  char line[256];
  std::snprintf(line, sizeof line, "S_rel (%s, %s form): mean %.4g over %lld pairs", elasticity::to_string(p.metric),
                elasticity::to_string(p.options.form), m.mean, static_cast<long long>(m.pairs_averaged));
  std::string text = line;
  if (m.classes) {
    std::snprintf(line, sizeof line, "; within class %.4g, across %.4g, ratio %.4g", m.classes->within,
                  m.classes->across, m.classes->ratio);
    text += line;
  }
  const std::size_t unresolved = m.pairs.unresolved_sources.size();
  const std::size_t zero = m.pairs.undefined_sources.size() - unresolved;
  if (zero > 0) text += "; " + std::to_string(zero) + " sources without S_rel (zero loss gradient)";
  if (unresolved > 0)
    text += "; " + std::to_string(unresolved) + " sources without S_rel (unresolved at " + p.dtype + ": " +
            p.unresolved_hint + ")";
  return text + "\n";
}

// The sources without S_rel come in two kinds that need different remedies: a zero loss gradient
// (the step does not move the network: nothing to measure) and an own change below the precision
// of the dtype although the gradient is not zero (a difference of two forwards rounded away).
std::vector<std::string> undefined_warnings(const Measurement& m, const Problem& p, const std::string& where) {
  std::vector<std::string> w;
  const std::size_t unresolved = m.pairs.unresolved_sources.size();
  const std::size_t zero = m.pairs.undefined_sources.size() - unresolved;
  if (zero > 0)
    w.push_back(where + std::to_string(zero) + " sources have no S_rel: zero loss gradient (the step does not change "
                "their own outputs); their rows are left out of the means");
  if (unresolved > 0)
    w.push_back(where + std::to_string(unresolved) + " sources have no S_rel: unresolved at " + p.dtype +
                " (their own change is below its precision, though their loss gradient is not zero): " +
                p.unresolved_hint + "; their rows are left out of the means");
  return w;
}

bool all_undefined(const Measurement& m) {
  return m.pairs.s_rel.dim(0) > 0 && index_t(m.pairs.undefined_sources.size()) == m.pairs.s_rel.dim(0);
}

// When no source has S_rel there is nothing to report: what happened and what to change.
std::string nothing_defined(const Measurement& m, const Problem& p) {
  const std::size_t all = m.pairs.undefined_sources.size();
  const std::size_t unresolved = m.pairs.unresolved_sources.size();
  const std::size_t zero = all - unresolved;
  return "none of the " + std::to_string(all) + " sources has S_rel, so there is no elasticity to report: " +
         nothing_measured_why(zero, unresolved, p.dtype, p.unresolved_hint);
}

template <class T>
int run(const ElasticityCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  const bool along = !c.checkpoints.empty();
  std::vector<std::pair<index_t, std::string>> steps;
  if (along) steps = run_checkpoints("--checkpoints", c.checkpoints);
  const RunData rd = run_data(*c.app, c.data, c.common.seed, c.loss, c.checkpoints, /*samples_cap=*/true);
  const Context ctx = make_context(c.common);
  const data::Split split = load_data(rd.flags, rd.seed);
  check_samples(*c.app, rd, c.data.samples, split.train.n);
  // A run's recorded data may be larger than the default: its first training samples.
  data::Dataset sources = first_samples(split.train, c.data.samples);
  const index_t samples_taken = sources.n;
  if (!sources.targets_present())
    throw UsageError("elasticity needs the sources' targets (the step is taken on their loss): give --targets FILE "
                     "with --inputs, or a --dataset with labels or targets");
  Problem p;
  p.labels = sources.task == data::Task::classification;
  const model::Loss loss = step_loss(rd, sources);

  // The metric against the targets, naming the flag.
  const elasticity::Metric asked = elasticity::parse_metric(c.metric);
  if (asked == elasticity::Metric::abs && p.labels)
    throw UsageError("--metric abs measures float outputs against value targets, but the sources hold class labels: use "
                     "--metric kl, l2 or kl-compat (or auto)");
  if ((asked == elasticity::Metric::kl || asked == elasticity::Metric::l2 || asked == elasticity::Metric::kl_compat) &&
      !p.labels)
    throw UsageError("--metric " + c.metric +
                     " compares class probabilities and needs class labels, but the sources hold float targets: use "
                     "--metric abs (or auto)");
  if (!p.labels) {
    refuse_ignored(*c.app, "--out-class-matrix", "the sources hold float targets, which have no classes");
    refuse_ignored(*c.app, "--pairs-per-class", "the sources hold float targets, which have no classes");
  }
  p.dtype = c.common.dtype;
  p.unresolved_hint = p.dtype == "float32"                                        ? "use --dtype float64 or --form ntk"
                      : c.form == "step" && c.update == "sgd"                     ? "use --form ntk or a larger --eta"
                                                                                  : "use a larger --eta";
  p.options.eta = c.eta;
  p.options.update = elasticity::parse_update(c.update);
  p.options.adam_eps = c.adam_eps;
  p.options.form = elasticity::parse_form(c.form);
  p.options.metric = asked;
  p.options.loss = loss;
  try {
    p.metric = elasticity::resolve(p.options, p.labels);
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }

  // The network first (for checkpoints: the first one), which checks the data against it.
  ModelFlags first = c.model;
  if (along) first.model = steps.front().second;
  model::Mlp<T> net = load_network<T>(ctx, first, c.common.seed, split);
  std::optional<data::Dataset> targets = second_set(c, sources, net.spec.inputs(), net.spec.outputs());
  p.same_set = !targets.has_value();
  if (p.labels && !p.same_set && c.targets2.empty()) {
    refuse_ignored(*c.app, "--out-class-matrix",
                   "the class-pair matrix needs the classes of the targets of the move: give --targets2 with --inputs2");
    refuse_ignored(*c.app, "--pairs-per-class",
                   "pairs per class need the classes of the targets of the move: give --targets2 with --inputs2");
  }
  if (p.labels) {
    p.classes = sources.outputs;
    if (targets && !targets->labels.empty())
      for (std::int64_t l : targets->labels) p.classes = std::max<index_t>(p.classes, index_t(l) + 1);
  }
  p.source_rows.resize(std::size_t(sources.n));
  std::iota(p.source_rows.begin(), p.source_rows.end(), index_t{0});
  if (c.pairs_per_class > 0) {
    // K samples of every class, sources and targets each from their own labels (one draw with one set).
    const auto draw = [&](const data::Dataset& d, const std::string& which) {
      // Every class needs K samples: said here in the flag's terms (the library's message names itself).
      std::vector<index_t> count(std::size_t(p.classes), 0);
      for (std::int64_t l : d.labels)
        if (l >= 0 && l < p.classes) ++count[std::size_t(l)];
      for (index_t k = 0; k < p.classes; ++k)
        if (count[std::size_t(k)] < c.pairs_per_class)
          throw UsageError("--pairs-per-class " + std::to_string(c.pairs_per_class) + ": class " + std::to_string(k) +
                           " of " + which + " has " + std::to_string(count[std::size_t(k)]) + " samples, fewer than " +
                           std::to_string(c.pairs_per_class) +
                           (c.data.samples > 0
                                ? " (of the " + std::to_string(d.n) + " samples taken; --samples sets how many, 0 = all)"
                                : ""));
      try {
        const std::vector<std::int64_t> idx = elasticity::sample_per_class(
            vector_view(d.labels.data(), index_t(d.labels.size())), p.classes, c.pairs_per_class, c.common.seed);
        return std::vector<index_t>(idx.begin(), idx.end());
      } catch (const InvalidArgument& e) {
        throw UsageError("--pairs-per-class " + std::to_string(c.pairs_per_class) + ": " + which + ": " + e.what() +
                         (c.data.samples > 0 ? " (of the " + std::to_string(d.n) +
                                                   " samples taken; --samples sets how many, 0 = all)"
                                             : ""));
      }
    };
    const std::vector<index_t> rows1 = draw(sources, "the sources");
    if (targets) {
      p.target_rows = draw(*targets, "the targets of the move (--inputs2)");
      *targets = targets->subset(p.target_rows);
    }
    sources = sources.subset(rows1);
    p.source_rows = rows1;
  }
  if (p.labels) {
    p.labels1 = sources.labels;
    p.labels2 = targets ? targets->labels : sources.labels;
  }
  const model::DeviceData<T> d1 = model::to_device<T>(ctx, sources);
  std::optional<model::DeviceData<T>> d2;
  if (targets) d2 = model::to_device<T>(ctx, *targets);
  const index_t n2 = targets ? targets->n : sources.n;

  json r;
  r["data"] = rd.source;
  r["data"]["train_samples"] = split.train.n;
  r["data"]["samples"] = samples_taken;
  if (targets) r["data"]["inputs2"] = c.inputs2;
  if (targets && !c.targets2.empty()) r["data"]["targets2"] = c.targets2;
  r["network"] = spec_json(net);
  r["metric"] = elasticity::to_string(p.metric);
  r["form"] = c.form;
  r["update"] = c.update;
  if (p.options.update == elasticity::Update::adam) r["adam_eps"] = c.adam_eps;
  r["eta"] = c.eta;
  r["loss"] = model::to_string(loss);
  r["sources"] = sources.n;
  r["targets"] = n2;
  r["same_set"] = p.same_set;
  if (p.labels) r["classes"] = p.classes;
  r["pairs_per_class"] = c.pairs_per_class > 0 ? json(c.pairs_per_class) : json(nullptr);
  if (c.pairs_per_class > 0) {
    // The drawn samples, so that the rows and columns of --out-matrix map back to them: sources by
    // their row in the training split, targets likewise (or by their row of --inputs2).
    r["source_rows"] = p.source_rows;
    r["target_rows"] = p.same_set ? p.source_rows : p.target_rows;
  }

  if (!along) {
    const Measurement m = measure<T>(ctx, net.spec, net.params.data(), d1, d2 ? &*d2 : nullptr, p);
    // Nothing measured is a failure, not a result: no file is written.
    if (all_undefined(m)) throw std::runtime_error(nothing_defined(m, p));
    const json mj = measurement_json(m, p);
    for (auto it = mj.begin(); it != mj.end(); ++it) r[it.key()] = it.value();
    if (!c.out_matrix.empty()) {
      io::write_npy(c.out_matrix, io::Tensor::from(m.pairs.s_rel.data(), {m.pairs.s_rel.dim(0), m.pairs.s_rel.dim(1)}));
      r["matrix_file"] = c.out_matrix;
    }
    if (!c.out_class_matrix.empty() && m.classes) {
      io::write_npy(c.out_class_matrix, io::Tensor::from(m.classes->matrix.data(), {p.classes, p.classes}));
      r["class_matrix_file"] = c.out_class_matrix;
    }
    emit_with_warnings("elasticity", c.common, ctx, r, undefined_warnings(m, p, ""), start);
    say(c.common, summary_text(m, p));
    return 0;
  }

  // Along training: every checkpoint with the same sources, targets and options.
  std::string csv = elasticity_csv_header();
  json rows = json::array();
  std::vector<std::string> warnings;
  std::string text;
  double flops = 0;
  for_each_checkpoint<T>(ctx, "elasticity", c.common, c.model, split, steps, net, [&](std::size_t q) {
    const Measurement m = measure<T>(ctx, net.spec, net.params.data(), d1, d2 ? &*d2 : nullptr, p);
    flops += m.pairs.flops;
    csv += elasticity_csv_row(steps[q].first, steps[q].second, m.mean, m.classes ? &*m.classes : nullptr,
                              m.pairs.undefined_sources.size());
    const json mj = measurement_json(m, p);
    rows.push_back(checkpoint_row(steps[q], mj));
    // A checkpoint without any S_rel keeps its (empty) row: the curve goes on.
    const std::string where = checkpoint_where(steps[q]);
    if (all_undefined(m))
      warnings.push_back(where + nothing_defined(m, p) + "; its row is empty");
    else
      for (const std::string& w : undefined_warnings(m, p, where)) warnings.push_back(w);
    text += "step " + std::to_string(steps[q].first) + ": " + summary_text(m, p);
    if (q + 1 == steps.size()) {
      // The top-level keys are the last checkpoint's, as for one network.
      for (auto it = mj.begin(); it != mj.end(); ++it) r[it.key()] = it.value();
    }
  });
  io::write_text_atomic(c.out_csv, csv);
  r["flops"] = flops;
  r["checkpoints"] = steps.size();
  r["csv_file"] = c.out_csv;
  r["rows"] = rows;
  emit_with_warnings("elasticity", c.common, ctx, r, warnings, start);
  say(c.common, text);
  return 0;
}

}  // namespace

Command register_elasticity(CLI::App& app) {
  auto* cmd = app.add_subcommand("elasticity", "Local elasticity: how one training step on a source sample moves the "
                                               "outputs at other samples (S_rel for every pair, the class-pair "
                                               "matrix), for one network or along a run's checkpoints; at most 512 "
                                               "sources by default (--samples)");
  auto c = std::make_shared<ElasticityCommand>();
  c->app = cmd;
  c->data.samples = kDefaultSamples;
  add_measure_flags(*cmd, c->common, c->model, c->data);
  auto* x2 = cmd->add_option("--inputs2", c->inputs2,
                             "the targets of the move [N2, D...] (.npy or IDX; at most --samples of them, the first "
                             "rows); default: the sources themselves")
                 ->check(CLI::ExistingFile);
  cmd->add_option("--targets2", c->targets2,
                  "[N2] integer class labels of --inputs2, for the class-pair matrix (class-labelled sources only)")
      ->check(CLI::ExistingFile)
      ->needs(x2);
  cmd->add_option("--eta", c->eta, "step size eta of the one step, > 0")
      ->check(finite_at_least(0, /*open=*/true))
      ->capture_default_str();
  cmd->add_option("--update", c->update,
                  choices(elasticity::update_names) + ": plain SGD, or the first step of a fresh Adam (~ -eta sign(g))")
      ->check(one_of(elasticity::update_names))
      ->capture_default_str();
  cmd->add_option("--adam-eps", c->adam_eps, "--update adam: the constant eps of g / (|g| + eps), > 0")
      ->check(finite_at_least(0, /*open=*/true))
      ->capture_default_str();
  cmd->add_option("--form", c->form,
                  choices(elasticity::form_names) +
                      ": take the step (step), or its eta -> 0 limit from the NTK (ntk; sgd only)")
      ->check(one_of(elasticity::form_names))
      ->capture_default_str();
  cmd->add_option("--metric", c->metric,
                  choices(elasticity::metric_names) +
                      ": abs = |change of the outputs| (float targets); kl = KL(p_w || p_w+), l2 = |change of "
                      "softmax|, kl-compat = the reference notebooks' formula (step form; class labels); auto = abs "
                      "for float targets, kl for labels")
      ->check(one_of(elasticity::metric_names))
      ->capture_default_str();
  add_step_loss_flag(*cmd, c->loss);
  cmd->add_option("--pairs-per-class", c->pairs_per_class,
                  "K: draw K sources and K targets of every class (seeded by --seed) and average the K x K pairs of "
                  "each class pair (default: every pair); every class needs K samples; the JSON's source_rows and "
                  "target_rows name the drawn samples (the rows and columns of --out-matrix)")
      ->check(at_least(1));
  cmd->add_option("--out-matrix", c->out_matrix,
                  "write S_rel [N1, N2] (float64; row = source, column = target of the move; NaN rows for sources "
                  "without S_rel) to this .npy");
  cmd->add_option("--out-class-matrix", c->out_class_matrix,
                  "write the class-pair matrix [C, C] (float64; row = source class) to this .npy (class labels only)");
  cmd->add_option("--checkpoints", c->checkpoints,
                  "a run folder: the elasticity at every step_*.safetensors, with the run's data (report.json) "
                  "unless data flags are given (--samples N alone keeps the run's data and takes its first N "
                  "training samples); needs --out-csv");
  cmd->add_option("--out-csv", c->out_csv,
                  "with --checkpoints: one row per checkpoint (step, checkpoint, mean, within_class, across_class, "
                  "ratio, undefined_sources)");
  return {cmd, [c] {
            validate(*c);
            resolve_float64_default(c->common);
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
