// dynascope train: train an MLP from --model or a fresh --arch on a dataset, writing checkpoints
// DIR/step_XXXXXXX.safetensors and DIR/train.csv.
#include "cli/training_run.hpp"

namespace dynascope::cli {

namespace {

struct TrainCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  TrainFlags train;
  CLI::App* app = nullptr;
};

json rows_json(const std::vector<CheckpointRow>& rows, bool has_test) {
  json a = json::array();
  for (const auto& r : rows) {
    json j;
    j["step"] = r.step;
    j["train_loss"] = r.train.loss;
    if (r.train.accuracy >= 0) j["train_accuracy"] = r.train.accuracy;
    if (has_test) {
      j["test_loss"] = r.test.loss;
      if (r.test.accuracy >= 0) j["test_accuracy"] = r.test.accuracy;
    }
    if (!r.file.empty()) j["file"] = r.file;
    a.push_back(j);
  }
  return a;
}

template <class T>
int run(const TrainCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  refuse_ignored(*c.app, "--max-memory", "training keeps the whole batch in memory and does not tile");
  check_output("--out", c.common.out);
  const Context ctx = make_context(c.common);
  const data::Split split = load_data(c.data, c.common.seed);
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split);
  const auto outcome = run_training<T>(ctx, c.common, c.train, net, split, true);
  json r;
  r["config"] = run_config("train", c.common, ctx, c.model, c.data, c.train, net.spec, net.source, split, outcome.loss);
  r["network"] = spec_json(net);
  r["dataset"] = split.train.name;
  r["train_samples"] = split.train.n;
  r["test_samples"] = split.test.n;
  r["loss"] = model::to_string(outcome.loss);
  const auto o = optimizer_options(c.train);
  r["optimizer"] = {{"kind", model::to_string(o.kind)}, {"lr", o.lr},           {"momentum", o.momentum},
                    {"betas", {o.beta1, o.beta2}},       {"eps", o.eps},         {"weight_decay", o.weight_decay},
                    {"batch", c.train.batch},            {"steps", c.train.steps}};
  r["steps_done"] = outcome.result.steps;
  r["final_loss"] = outcome.result.final_loss;
  if (outcome.result.final_accuracy >= 0) r["final_accuracy"] = outcome.result.final_accuracy;
  r["diverged"] = outcome.result.diverged;
  if (outcome.result.diverged) r["diverged_at_step"] = outcome.result.diverged_at;
  r["checkpoints"] = rows_json(outcome.rows, split.test.n > 0);
  r["out_dir"] = c.train.out_dir;
  emit_result("train", c.common, ctx, r, start);
  return outcome.result.diverged ? 1 : 0;
}

}  // namespace

Command register_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train an MLP (PyTorch's losses and optimizers), writing checkpoints and train.csv");
  auto c = std::make_shared<TrainCommand>();
  c->app = cmd;
  c->train.out_dir = "dynascope-train";
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, true);
  add_data_flags(*cmd, c->data, true);
  add_train_flags(*cmd, c->train);
  add_out_dir_flags(*cmd, c->train, "folder for step_XXXXXXX.safetensors and train.csv");
  return {cmd, [c] {
            resolve_dtype(c->common, {c->model.model, c->data.inputs});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
