// dynascope demo: the main job on an embedded default. Trains a small network on a built-in
// dataset and measures it along training, writing a report folder (checkpoints, train.csv,
// report.json) and a summary table on stdout.
#include <cstdio>
#include <filesystem>

#include "cli/ntk_summary.hpp"
#include "cli/training_run.hpp"
#include "dynascope/curvature.hpp"
#include "dynascope/io.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::cli {

namespace {

struct DemoCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  TrainFlags train;
  index_t ntk_samples = 128;
};

// The NTK section: at each checkpoint, the trace kernel on a fixed subset of the training set,
// summarised exactly as `dynascope ntk --k 5 --energy 1,2,5,10,20` does (kernel_summary): top
// eigenvalues, E_k of the centred targets, uncentred and centred kernel-target alignment; plus
// the distance to the kernel at initialisation.
struct NtkRow {
  json summary;
  double distance_to_init = 0;
};
const std::vector<index_t> kEnergyKs{1, 2, 5, 10, 20};

template <class T>
class NtkTracker {
 public:
  NtkTracker(const Context& ctx, const Context& host, const model::MlpSpec& spec, const data::Dataset& train,
             index_t samples, std::uint64_t seed)
      : ctx_(ctx), host_(host), spec_(spec) {
    n_ = std::min(samples, train.n);
    std::vector<index_t> rows(static_cast<std::size_t>(n_));
    for (index_t i = 0; i < n_; ++i) rows[std::size_t(i)] = i;
    const data::Dataset sub = train.subset(rows);
    x_ = model::to_device<T>(ctx, sub).x;
    targets_ = kernel_targets(sub, false, spec.outputs());
    request_.top_k = std::min<index_t>(5, n_);
    for (index_t k : kEnergyKs)
      if (k <= n_) request_.energy_ks.push_back(k);
    request_.center_energy = true;
    request_.seed = seed;
  }
  NtkRow measure(const Array<T>& params) {
    std::vector<T> k(std::size_t(n_ * n_));
    ntk::empirical_ntk_into<T>(ctx_, spec_, params.data(), x_.matrix(), std::nullopt, {ntk::Outputs::trace},
                               {k.data(), n_, n_, n_, Backend::host});
    const MatrixView<const T> kv{k.data(), n_, n_, n_, Backend::host};
    NtkRow row;
    row.summary = kernel_summary<T>(host_, kv, targets_, request_);
    std::vector<double> kd(k.begin(), k.end());
    if (k0_.empty()) k0_ = kd;
    row.distance_to_init = ntk::kernel_distance({k0_.data(), n_, n_, n_}, {kd.data(), n_, n_, n_});
    return row;
  }
  index_t samples() const { return n_; }
  const KernelSummaryRequest& request() const { return request_; }

 private:
  Context ctx_, host_;
  model::MlpSpec spec_;
  index_t n_ = 0;
  Array<T> x_;
  KernelTargets targets_;
  KernelSummaryRequest request_;
  std::vector<double> k0_;
};

// The curvature section: the loss Hessian's top eigenvalues (Lanczos, warm-started from the
// previous checkpoint's eigenvectors) and its trace (Hutch++), on the whole training set.
struct CurvatureRow {
  std::vector<double> top;
  double trace = 0;
  index_t matvecs = 0;
  bool converged = false;
};

template <class T>
class CurvatureTracker {
 public:
  CurvatureTracker(const Context& ctx, const model::MlpSpec& spec, const data::Split& split, model::Loss loss)
      : ctx_(ctx), spec_(spec), data_(model::to_device<T>(ctx, split.train)), loss_(loss) {}
  CurvatureRow measure(const Array<T>& params, std::uint64_t seed) {
    linalg::CurvatureOperator<T> h(ctx_, linalg::Curvature::hessian, spec_, params.data(), data_.x.matrix(), data_.targets(), loss_);
    linalg::LanczosOptions o;
    o.k = 3;
    o.tol = 1e-4;
    o.block = 3;
    o.seed = seed;
    o.method = linalg::EigenMethod::lanczos;
    std::optional<MatrixView<const T>> warm;
    if (!previous_.empty()) warm = MatrixView<const T>(previous_.matrix());
    const auto e = linalg::eigsh<T>(h, o, warm);
    previous_ = e.vectors.to(ctx_);
    const auto t = linalg::hutchpp<T>(h, 30, seed);
    return {e.values, t.trace, e.matvecs + t.matvecs, e.all_converged};
  }

 private:
  Context ctx_;
  model::MlpSpec spec_;
  model::DeviceData<T> data_;
  model::Loss loss_;
  Array<T> previous_;
};

template <class T>
int run(const DemoCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  check_output("--out", c.common.out);
  const Context ctx = make_context(c.common);
  const Context host = ctx.is_host() ? ctx : make_host_context(c.common);
  const data::Split split = load_data(c.data, c.common.seed);
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split);
  print_status(c.common, "demo: " + net.spec.arch_string() + " " + model::to_string(net.spec.activations.front()) + " on " +
                             split.train.name + " (" + std::to_string(split.train.n) + " train / " +
                             std::to_string(split.test.n) + " test samples), " + std::to_string(c.train.steps) + " steps of " +
                             c.train.optimizer + "; report in " + c.train.out_dir + "/");
  NtkTracker<T> tracker(ctx, host, net.spec, split.train, c.ntk_samples, c.common.seed);
  const model::Loss loss = c.train.loss.empty() ? default_loss(split.train) : model::parse_loss(c.train.loss);
  CurvatureTracker<T> curvature(ctx, net.spec, split, loss);
  std::vector<NtkRow> ntk_rows;
  std::vector<CurvatureRow> curvature_rows;
  const auto outcome = run_training<T>(ctx, c.common, c.train, net, split, true, [&](index_t, const Array<T>& params) {
    ntk_rows.push_back(tracker.measure(params));
    curvature_rows.push_back(curvature.measure(params, c.common.seed));
  });

  json rows = json::array();
  for (std::size_t i = 0; i < outcome.rows.size(); ++i) {
    const auto& r = outcome.rows[i];
    const NtkRow& nr = ntk_rows[i];
    json j;
    j["step"] = r.step;
    j["train_loss"] = r.train.loss;
    j["train_accuracy"] = r.train.accuracy;
    j["test_loss"] = r.test.loss;
    j["test_accuracy"] = r.test.accuracy;
    j["checkpoint"] = r.file;
    json ntk_json = nr.summary;
    ntk_json["distance_to_init"] = nr.distance_to_init;
    j["ntk"] = ntk_json;
    const CurvatureRow& cr = curvature_rows[i];
    j["hessian"] = {{"top_eigenvalues", cr.top}, {"trace_hutchpp", cr.trace}, {"matvecs", cr.matvecs}, {"converged", cr.converged}};
    rows.push_back(j);
  }
  json report;
  report["config"] = run_config("demo", c.common, ctx, c.model, c.data, c.train, net.spec, net.source, split, outcome.loss);
  report["config"]["ntk_samples"] = c.ntk_samples;
  report["network"] = spec_json(net);
  report["dataset"] = split.train.name;
  report["train_samples"] = split.train.n;
  report["test_samples"] = split.test.n;
  report["loss"] = model::to_string(outcome.loss);
  report["steps"] = outcome.result.steps;
  report["diverged"] = outcome.result.diverged;
  report["checkpoints"] = rows;
  report["hessian"] = {{"samples", split.train.n},
                       {"note", "exact loss Hessian (R-operator) on the training set: top-3 eigenvalues by block Lanczos "
                                "(tol 1e-4, warm-started), trace by Hutch++ with 30 Hessian-vector products"}};
  report["ntk"] = {{"samples", tracker.samples()},
                   {"outputs", "trace"},
                   {"k", tracker.request().top_k},
                   {"energy_ks", tracker.request().energy_ks},
                   {"energy_targets", "centered"},
                   {"note", "trace kernel on the first training samples, summarised as `dynascope ntk --k 5 --energy "
                            "1,2,5,10,20` does: eigenvalues = the top eigenvalues; energy[k] = E_k(y), the share of the "
                            "centred targets' energy (one-hot for classes) in the top-k eigenvectors; kta = uncentred "
                            "and kta_centered = centred kernel-target alignment; distance_to_init = 1 - <K0,K>/(|K0||K|)"}};
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  io::write_text_atomic((std::filesystem::path(c.train.out_dir) / "report.json").string(), report.dump(2) + "\n");

  std::printf("%7s  %10s  %9s  %10s  %9s  %10s  %7s  %7s  %6s  %7s  %9s  %9s\n", "step", "train loss", "train acc",
              "test loss", "test acc", "NTK l1", "l1/l2", "E_5(y)", "cKTA", "S(K0,K)", "Hess l1", "Hess tr");
  for (std::size_t i = 0; i < outcome.rows.size(); ++i) {
    const auto& r = outcome.rows[i];
    const NtkRow& nr = ntk_rows[i];
    const CurvatureRow& cr = curvature_rows[i];
    const std::vector<double> top = nr.summary["eigenvalues"].get<std::vector<double>>();
    const json& energy = nr.summary["energy"];
    const double e5 = energy.contains("5") ? energy["5"].get<double>() : energy.back().get<double>();
    std::printf("%7lld  %10.6f  %9.4f  %10.6f  %9.4f  %10.4g  %7.2f  %7.4f  %6.3f  %7.4f  %9.4g  %9.4g\n",
                static_cast<long long>(r.step), r.train.loss, r.train.accuracy, r.test.loss, r.test.accuracy, top[0],
                top.size() > 1 ? top[0] / top[1] : 0.0, e5, nr.summary["kta_centered"].get<double>(),
                nr.distance_to_init, cr.top[0], cr.trace);
  }
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
  add_out_dir_flags(*cmd, c->train, "run folder (checkpoints, train.csv, report.json)");
  cmd->add_option("--ntk-samples", c->ntk_samples, "training samples the NTK section uses, >= 1")
      ->check(at_least(1))
      ->capture_default_str();
  return {cmd, [c] {
            resolve_dtype(c->common, {c->model.model, c->data.inputs});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
