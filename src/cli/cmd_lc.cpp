// dynascope lc: the local complexity of a network around data points (Humayun, Balestriero &
// Baraniuk), for one network or along a training run's checkpoints.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "cli/model_flags.hpp"
#include "cli/run_data.hpp"
#include "cli/training_run.hpp"
#include "dynascope/dispatch.hpp"
#include "dynascope/io.hpp"
#include "dynascope/regions.hpp"

namespace dynascope::cli {

namespace {

namespace fs = std::filesystem;

struct LcCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  double radius = 0;
  index_t dims = 25;
  std::string frame;
  bool frame_per_sample = false;
  std::string out_counts;
  std::string checkpoints;
  std::string out_csv;
  index_t random_points = 0;
  CLI::App* app = nullptr;
};

void validate(const LcCommand& c) {
  const CLI::App& cmd = *c.app;
  refuse_together(cmd, "--frame", "--frame-per-sample", "the frame is either the given one or drawn per sample");
  refuse_together(cmd, "--frame", "--dims", "the frame's rows are the directions");
  if (c.checkpoints.empty()) {
    if (c.model.model.empty() && c.model.arch.empty()) throw UsageError("lc needs --model FILE (or --checkpoints DIR, or --arch)");
    refuse_ignored(cmd, "--out-csv", "it writes the per-checkpoint curve of --checkpoints DIR");
    refuse_ignored(cmd, "--random-points", "random points are one of the point sets of --checkpoints DIR");
  } else {
    refuse_together(cmd, "--checkpoints", "--model", "--checkpoints reads every step_*.safetensors of a train run");
    refuse_together(cmd, "--checkpoints", "--arch", "--checkpoints reads every step_*.safetensors of a train run");
    refuse_together(cmd, "--checkpoints", "--out-counts", "--out-counts writes the counts of one network");
    if (c.out_csv.empty()) throw UsageError("--checkpoints DIR needs --out-csv FILE for the per-checkpoint curve");
  }
  check_output("--out", c.common.out);
  check_output("--out-counts", c.out_counts);
  check_output("--out-csv", c.out_csv);
}

// The step_*.safetensors of a run folder in step order, with their steps.
std::vector<std::pair<index_t, std::string>> list_checkpoints(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw UsageError("--checkpoints: '" + dir + "' is not a folder");
  std::vector<std::pair<index_t, std::string>> out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step_", 0) != 0 || entry.path().extension() != ".safetensors") continue;
    const std::string digits = name.substr(5, name.size() - 5 - std::string(".safetensors").size());
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      continue;
    out.emplace_back(std::stoll(digits), entry.path().string());
  }
  if (out.empty())
    throw UsageError("--checkpoints: '" + dir + "' holds no step_*.safetensors (write them with dynascope train --out-dir)");
  std::sort(out.begin(), out.end());
  return out;
}

template <class T>
json lc_json(const regions::LcResult& r) {
  json j;
  j["per_layer_mean"] = r.per_layer_mean;
  j["total_mean"] = r.total_mean;
  j["all_layers_mean"] = r.all_layers_mean;
  return j;
}

template <class T>
int run(const LcCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  validate(c);
  std::vector<std::pair<index_t, std::string>> steps;
  if (!c.checkpoints.empty()) steps = list_checkpoints(c.checkpoints);
  const Context ctx = make_context(c.common);
  // With --checkpoints and no data flag, the run's data and split seed from its report.json (as
  // llc, elasticity and response take them); local complexity needs no targets, so the run's are
  // not read.
  RunData rd = run_data(*c.app, c.data, c.common.seed, "", c.checkpoints);
  rd.flags.targets.clear();
  rd.source.erase("targets");
  const data::Split split = load_data(rd.flags, rd.seed);
  regions::LcOptions o;
  o.radius = c.radius;
  o.dims = c.dims;
  o.seed = c.common.seed;
  o.frame = c.frame_per_sample ? regions::Frame::per_sample : regions::Frame::shared;
  Array<T> frame;
  if (!c.frame.empty()) {
    o.frame = regions::Frame::given;
    const io::Tensor t = io::read_array(c.frame);
    if (t.shape.size() != 2 || t.shape[1] != split.train.d)
      throw UsageError("--frame: '" + c.frame + "' must be [P, " + std::to_string(split.train.d) + "] (one direction per row), got " +
                       shape_string(t.shape));
    frame = Array<T>::from_host(ctx, t.shape, t.to_vector<T>());
  } else if (c.dims > split.train.d) {
    throw UsageError("--dims " + std::to_string(c.dims) + " exceeds the input width " + std::to_string(split.train.d) +
                     " (the directions must be orthonormal)");
  }
  json r;
  r["radius"] = c.radius;
  r["frame"] = c.frame.empty() ? (c.frame_per_sample ? "per-sample" : "shared") : c.frame;
  r["data"] = rd.source;

  if (c.checkpoints.empty()) {
    model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split, TargetUse::alignment);
    const Array<T> x = model::to_device<T>(ctx, split.train).x;
    const auto res = regions::local_complexity<T>(ctx, net.spec, net.params.data(), x.matrix(), o, frame.matrix());
    r["network"] = spec_json(net);
    r["samples"] = split.train.n;
    r["dims"] = res.dims;
    const json summary = lc_json<T>(res);
    for (auto it = summary.begin(); it != summary.end(); ++it) r[it.key()] = it.value();
    if (!c.out_counts.empty()) {
      const Array<std::int32_t> host = res.counts.to_host(ctx);
      io::write_npy(c.out_counts, io::Tensor::from(host.data(), host.shape()));
      r["counts_file"] = c.out_counts;
    }
    emit_result("lc", c.common, ctx, r, start);
    return 0;
  }

  // Along training: every checkpoint, on train, test and random points (the demo's point sets,
  // CSV and rows: training_run.hpp).
  const std::vector<LcPointSet<T>> sets = lc_point_sets<T>(ctx, split, c.random_points, c.common.seed);
  std::string csv;
  std::size_t layers = 0;
  json rows = json::array();
  for (std::size_t q = 0; q < steps.size(); ++q) {
    ModelFlags mf = c.model;
    mf.model = steps[q].second;
    model::Mlp<T> net = load_network<T>(ctx, mf, c.common.seed, split, TargetUse::alignment);
    if (q == 0) {
      layers = std::size_t(net.spec.layers());
      csv = lc_csv_header(net.spec.layers());
      r["network"] = spec_json(net);
    } else if (std::size_t(net.spec.layers()) != layers) {
      throw UsageError("--checkpoints: '" + steps[q].second + "' has another architecture than the first checkpoint");
    }
    for (const LcPointSet<T>& s : sets) {
      const auto res = regions::local_complexity<T>(ctx, net.spec, net.params.data(), s.x.matrix(), o, frame.matrix());
      csv += lc_csv_row(steps[q].first, s.name, s.x.dim(0), res);
      rows.push_back(lc_row_json(steps[q].first, s.name, s.x.dim(0), res));
    }
    print_status(c.common, "lc: checkpoint " + std::to_string(q + 1) + "/" + std::to_string(steps.size()) + " (step " +
                               std::to_string(steps[q].first) + ")");
  }
  io::write_text_atomic(c.out_csv, csv);
  r["checkpoints"] = steps.size();
  r["csv_file"] = c.out_csv;
  r["rows"] = rows;
  emit_result("lc", c.common, ctx, r, start);
  return 0;
}

}  // namespace

Command register_lc(CLI::App& app) {
  auto* cmd = app.add_subcommand("lc", "Local complexity: neurons whose sign changes in a small cross-polytope around each point");
  auto c = std::make_shared<LcCommand>();
  c->app = cmd;
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, false);
  add_data_flags(*cmd, c->data, false);
  cmd->add_option("--radius", c->radius, "radius r of the cross-polytope x +- r v_p, > 0 (in input units)")
      ->required()
      ->check(finite_at_least(0, /*open=*/true));
  cmd->add_option("--dims", c->dims, "number P of random orthonormal directions, 1 <= P <= input width")
      ->check(at_least(1))
      ->capture_default_str();
  cmd->add_option("--frame", c->frame, "a [P, D] .npy of orthonormal rows used for every point instead of a random frame")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--frame-per-sample", c->frame_per_sample, "draw an independent random frame for every point");
  cmd->add_option("--out-counts", c->out_counts, "write the counts [N, L] (int32; every linear layer, the output layer last) to this .npy");
  cmd->add_option("--checkpoints", c->checkpoints,
                  "a train run folder: local complexity at every step_*.safetensors for train, test and random points "
                  "(with no data flag, of the data its report.json records)");
  cmd->add_option("--out-csv", c->out_csv, "with --checkpoints: one row per checkpoint and point set");
  cmd->add_option("--random-points", c->random_points,
                  "with --checkpoints: uniform points in the training inputs' bounding box (0: as many as training points)")
      ->check(at_least(0));
  return {cmd, [c] {
            resolve_dtype(c->common, {c->model.model, first_checkpoint(c->checkpoints), c->data.inputs, c->frame});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
