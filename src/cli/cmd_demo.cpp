// dynascope demo: the main job on an embedded default. Trains a small network on a built-in
// dataset and measures it along training, writing a report folder (checkpoints, train.csv,
// report.json) and a summary table on stdout.
#include <cstdio>
#include <filesystem>

#include "cli/training_run.hpp"
#include "dynascope/io.hpp"

namespace dynascope::cli {

namespace {

struct DemoCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  TrainFlags train;
};

template <class T>
int run(const DemoCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  const Context ctx = make_context(c.common);
  const data::Split split = load_data(c.data, c.common.seed);
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split.train.d, split.train.outputs);
  print_status(c.common, "demo: " + net.spec.arch_string() + " " + model::to_string(net.spec.activations.front()) + " on " +
                             split.train.name + " (" + std::to_string(split.train.n) + " train / " +
                             std::to_string(split.test.n) + " test samples), " + std::to_string(c.train.steps) + " steps of " +
                             c.train.optimizer + "; report in " + c.train.out_dir + "/");
  const auto outcome = run_training<T>(ctx, c.common, c.train, net, split, true);

  json rows = json::array();
  for (const auto& r : outcome.rows) {
    json j;
    j["step"] = r.step;
    j["train_loss"] = r.train.loss;
    j["train_accuracy"] = r.train.accuracy;
    j["test_loss"] = r.test.loss;
    j["test_accuracy"] = r.test.accuracy;
    j["checkpoint"] = r.file;
    rows.push_back(j);
  }
  json report;
  report["network"] = spec_json(net.spec);
  report["dataset"] = split.train.name;
  report["train_samples"] = split.train.n;
  report["test_samples"] = split.test.n;
  report["loss"] = model::to_string(outcome.loss);
  report["steps"] = outcome.result.steps;
  report["diverged"] = outcome.result.diverged;
  report["checkpoints"] = rows;
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  io::write_text_atomic((std::filesystem::path(c.train.out_dir) / "report.json").string(), report.dump(2) + "\n");

  std::printf("%8s  %12s  %9s  %12s  %9s\n", "step", "train loss", "train acc", "test loss", "test acc");
  for (const auto& r : outcome.rows)
    std::printf("%8lld  %12.6f  %9.4f  %12.6f  %9.4f\n", static_cast<long long>(r.step), r.train.loss, r.train.accuracy,
                r.test.loss, r.test.accuracy);
  std::printf("report: %s/report.json, %s/train.csv, %zu checkpoints (%.1f s)\n", c.train.out_dir.c_str(),
              c.train.out_dir.c_str(), outcome.rows.size(), report["seconds"].get<double>());
  if (!c.common.out.empty()) emit_result("demo", c.common, ctx, report, start);
  return outcome.result.diverged ? 1 : 0;
}

}  // namespace

Command register_demo(CLI::App& app) {
  auto* cmd = app.add_subcommand("demo", "The main job: train a small network on a built-in dataset and track the "
                                         "diagnostics along training (report folder + summary table)");
  auto c = std::make_shared<DemoCommand>();
  // The embedded default: two spirals, a 2-64-64-2 ReLU network, full-batch Adam.
  c->data.dataset = "spirals";
  c->data.samples = 512;
  c->data.test_fraction = 0.25;
  c->model.arch = "-64-64-";
  c->train.optimizer = "adam";
  c->train.lr = 1e-2;
  c->train.steps = 600;
  c->train.save_every = 100;
  c->train.out_dir = "dynascope-demo";
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, false);
  add_data_flags(*cmd, c->data, true);
  add_train_flags(*cmd, c->train);
  cmd->add_option("--out-dir", c->train.out_dir, "report folder")->capture_default_str();
  return {cmd, [c] { return parse_dtype(c->common.dtype) == DType::f64 ? run<double>(*c) : run<float>(*c); }};
}

}  // namespace dynascope::cli
