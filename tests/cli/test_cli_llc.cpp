// dynascope llc against the library it drives: the JSON equals sgld::estimate_llc (and
// sgld::calibrate) called here with the same network, data and options — the estimator is
// deterministic given the seed — and the trace files hold the draws the estimate is the mean of
// (λ̂_c = nβ (mean_d L[c, d] - L_n(w*)), recomputed here). Plus the per-checkpoint CSV of a small
// `train` run against one `llc --model` per checkpoint, the calibration table, and bad input:
// every bad flag is refused with a message naming it, before anything is written.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "cli/cli_test_util.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/io.hpp"
#include "dynascope/model.hpp"
#include "dynascope/sgld.hpp"

namespace dynascope::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr index_t kN = 40;  // samples of the regression problem

// A 2-6-1 ReLU network (float64, so the CLI computes in float64 too) and a smooth regression
// target on 40 points.
struct Problem {
  std::string net, x, y;
  std::vector<double> xs, ys;
};

Problem problem() {
  Problem p;
  for (index_t i = 0; i < kN; ++i) {
    const double a = -1.0 + 2.0 * double(i) / double(kN - 1), b = std::cos(3.0 * double(i));
    p.xs.push_back(a);
    p.xs.push_back(b);
    p.ys.push_back(std::sin(2.0 * a) + 0.5 * b);
  }
  p.x = npy<double>("x.npy", p.xs, {kN, 2});
  p.y = npy<double>("y.npy", p.ys, {kN, 1});
  const Context host = Context::host(1);
  const model::MlpSpec spec = model::MlpSpec::from_arch("2-6-1", model::ActivationSpec{model::Activation::relu});
  const Array<double> params = model::init_params<double>(host, spec, {model::Init::pytorch, 1.0, 3});
  p.net = temp_path("net.safetensors");
  model::save_mlp<double>(host, p.net, spec, params);
  return p;
}

// The library's estimate for the problem, with the network read back from its file as the CLI does.
sgld::LlcResult library_llc(const Problem& p, const sgld::LlcOptions& o) {
  const Context host = Context::host(1);
  const model::Mlp<double> net = model::load_mlp<double>(host, p.net);
  model::Targets<double> t;
  t.values = {p.ys.data(), kN, 1, 1, Backend::host};
  return sgld::estimate_llc<double>(host, net.spec, net.params.data(), {p.xs.data(), kN, 2, 2, Backend::host}, t,
                                    model::Loss::mse, o);
}

std::vector<std::string> base_args(const Problem& p) {
  return {"llc", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--threads", "1", "--quiet"};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Null in the JSON stands for a NaN of the library.
void expect_same(const json& j, double v, const std::string& what) {
  if (std::isnan(v)) EXPECT_TRUE(j.is_null()) << what << ": " << j;
  else EXPECT_EQ(j.get<double>(), v) << what;
}

void expect_matches(const json& j, const sgld::LlcResult& r) {
  expect_same(j.at("llc_mean"), r.llc_mean, "llc_mean");
  expect_same(j.at("llc_std"), r.llc_std, "llc_std");
  expect_same(j.at("llc_stderr"), r.llc_stderr, "llc_stderr");
  ASSERT_EQ(j.at("llc_per_chain").size(), r.llc_per_chain.size());
  for (std::size_t c = 0; c < r.llc_per_chain.size(); ++c)
    expect_same(j.at("llc_per_chain")[c], r.llc_per_chain[c], "llc_per_chain[" + std::to_string(c) + "]");
  expect_same(j.at("init_loss"), r.init_loss, "init_loss");
  expect_same(j.at("nbeta"), r.nbeta, "nbeta");
  EXPECT_EQ(j.at("n").get<index_t>(), r.n);
  expect_same(j.at("r_hat"), r.r_hat, "r_hat");
  expect_same(j.at("ess"), r.ess, "ess");
  expect_same(j.at("mala_acceptance"), r.mala_acceptance, "mala_acceptance");
  EXPECT_EQ(j.at("gradient_evaluations").get<double>(), r.gradient_evaluations);
  EXPECT_EQ(j.at("warnings").get<std::vector<std::string>>(), r.warnings);
  json diverged = json::object();
  for (const auto& [chain, draw] : r.diverged) diverged[std::to_string(chain)] = draw;
  EXPECT_EQ(j.at("diverged"), diverged);
}

TEST(CliLlc, JsonAndTracesEqualTheLibrary) {
  const Problem p = problem();
  const std::string trace = temp_path("trace.npy"), distance = temp_path("distance.npy");
  const CliResult r = run(base_args(p) + std::vector<std::string>{"--chains", "3", "--draws", "40", "--burnin", "20",
                                                                  "--thin", "2", "--epsilon", "3e-4", "--gamma", "50",
                                                                  "--seed", "7", "--out-trace", trace,
                                                                  "--out-distance-trace", distance});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  sgld::LlcOptions o;
  o.chains = 3;
  o.draws = 40;
  o.burnin = 20;
  o.thin = 2;
  o.epsilon = 3e-4;
  o.gamma = 50;
  o.seed = 7;
  const sgld::LlcResult lib = library_llc(p, o);
  expect_matches(j, lib);
  EXPECT_EQ(j.at("dtype"), "float64");
  EXPECT_EQ(j.at("loss"), "mse");
  EXPECT_EQ(j.at("options").at("chains"), 3);
  EXPECT_EQ(j.at("options").at("thin"), 2);
  EXPECT_EQ(j.at("options").at("epsilon").get<double>(), 3e-4);
  EXPECT_EQ(j.at("options").at("nbeta_rule"), "auto");
  EXPECT_EQ(j.at("options").at("sampler"), "sgld");
  EXPECT_EQ(j.at("data").at("train_samples"), kN);
  // nβ = n / ln n by default.
  EXPECT_NEAR(j.at("nbeta").get<double>(), double(kN) / std::log(double(kN)), 1e-12);
  EXPECT_TRUE(j.at("diverged").empty());

  // The traces: [C, D] float64, the library's draws; each chain's estimate is nβ (mean draw - L_n(w*)).
  const io::Tensor t = io::read_npy(trace), d = io::read_npy(distance);
  ASSERT_EQ(t.shape, (Shape{3, 40}));
  ASSERT_EQ(d.shape, (Shape{3, 40}));
  EXPECT_EQ(t.dtype, DType::f64);
  EXPECT_EQ(t.to_vector<double>(), lib.loss_trace);
  EXPECT_EQ(d.to_vector<double>(), lib.distance_trace);
  const std::vector<double> tv = t.to_vector<double>(), dv = d.to_vector<double>();
  const double nbeta = j.at("nbeta").get<double>(), init = j.at("init_loss").get<double>();
  double sum = 0, sum2 = 0;
  for (index_t c = 0; c < 3; ++c) {
    double mean = 0;
    for (index_t k = 0; k < 40; ++k) {
      mean += tv[std::size_t(c * 40 + k)] / 40.0;
      EXPECT_GE(dv[std::size_t(c * 40 + k)], 0.0);
    }
    const double llc = nbeta * (mean - init);
    EXPECT_NEAR(j.at("llc_per_chain")[std::size_t(c)].get<double>(), llc, 1e-9 * (1 + std::abs(llc))) << "chain " << c;
    sum += llc;
    sum2 += llc * llc;
  }
  const double mean = sum / 3, sd = std::sqrt((sum2 - 3 * mean * mean) / 2);
  EXPECT_NEAR(j.at("llc_mean").get<double>(), mean, 1e-9 * (1 + std::abs(mean)));
  EXPECT_NEAR(j.at("llc_std").get<double>(), sd, 1e-7 * (1 + sd));
  EXPECT_NEAR(j.at("llc_stderr").get<double>(), sd / std::sqrt(3.0), 1e-7 * (1 + sd));
  // Chains move away from w*, and differently.
  EXPECT_GT(dv[39], 0.0);
  EXPECT_NE(tv[0 * 40 + 39], tv[1 * 40 + 39]);
  // The init loss is the training loss of the network: the mean squared error at w*.
  const Context host = Context::host(1);
  const model::Mlp<double> net = model::load_mlp<double>(host, p.net);
  const Array<double> x = Array<double>::from_host(host, {kN, 2}, p.xs);
  model::MlpEngine<double> engine(host, net.spec);
  const MatrixView<const double> f = engine.forward(net.params.data(), x.matrix());
  double mse = 0;
  for (index_t i = 0; i < kN; ++i) mse += (f(i, 0) - p.ys[std::size_t(i)]) * (f(i, 0) - p.ys[std::size_t(i)]) / double(kN);
  EXPECT_NEAR(init, mse, 1e-12 * (1 + mse));

  // With --out the JSON goes to the file and stdout has the summary.
  const std::string out = temp_path("llc.json");
  const CliResult s = run(base_args(p) + std::vector<std::string>{"--chains", "3", "--draws", "40", "--burnin", "20",
                                                                  "--thin", "2", "--epsilon", "3e-4", "--gamma", "50",
                                                                  "--seed", "7", "--out", out});
  ASSERT_EQ(s.exit_code, 0) << s;
  std::ifstream f_out(out);
  const json from_file = json::parse(f_out);
  EXPECT_EQ(from_file.at("llc_mean"), j.at("llc_mean"));
  EXPECT_EQ(s.out.rfind("llc = ", 0), 0u) << s.out;
  EXPECT_NE(s.out.find("(SE, 3 chains)"), std::string::npos) << s.out;
}

TEST(CliLlc, SamplerOptionsReachTheLibrary) {
  const Problem p = problem();
  // RMSprop-preconditioned minibatch chains with devinterp's nβ, a bounding box, the minibatch init
  // loss and no MALA estimate.
  const CliResult r = run(base_args(p) + std::vector<std::string>{
                                             "--chains", "2", "--draws", "25", "--burnin", "5", "--batch", "8",
                                             "--nbeta", "batch", "--sampler", "rmsprop-sgld", "--rmsprop-alpha", "0.9",
                                             "--rmsprop-eps", "0.01", "--bounding-box", "0.05", "--init-loss",
                                             "minibatch", "--no-mala", "--seed", "3"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  sgld::LlcOptions o;
  o.chains = 2;
  o.draws = 25;
  o.burnin = 5;
  o.batch = 8;
  o.nbeta_rule = sgld::NBeta::batch;
  o.sampler = sgld::Sampler::rmsprop_sgld;
  o.rmsprop_alpha = 0.9;
  o.rmsprop_eps = 0.01;
  o.bounding_box = 0.05;
  o.init_loss = sgld::InitLoss::minibatch;
  o.mala = false;
  o.seed = 3;
  expect_matches(j, library_llc(p, o));
  EXPECT_NEAR(j.at("nbeta").get<double>(), 8 / std::log(8.0), 1e-12);
  EXPECT_TRUE(j.at("mala_acceptance").is_null());
  const json& opt = j.at("options");
  EXPECT_EQ(opt.at("sampler"), "rmsprop-sgld");
  EXPECT_EQ(opt.at("rmsprop_alpha").get<double>(), 0.9);
  EXPECT_EQ(opt.at("nbeta_rule"), "batch");
  EXPECT_EQ(opt.at("init_loss"), "minibatch");
  EXPECT_EQ(opt.at("batch"), 8);
  EXPECT_FALSE(opt.at("mala").get<bool>());
  // Minibatches of 8 out of 40: a fifth of a gradient per chain and step.
  EXPECT_NEAR(j.at("gradient_evaluations").get<double>(), 2.0 * (5 + 25) * 8 / 40, 1e-12);

  // A given nβ, and a mask that lets only the first layer's 12 weights move (restricted LLC).
  std::vector<double> mask(25, 0.0);
  for (int i = 0; i < 12; ++i) mask[std::size_t(i)] = 1;
  const std::string mask_file = npy<double>("mask.npy", mask, {25});
  const CliResult m = run(base_args(p) + std::vector<std::string>{"--chains", "2", "--draws", "20", "--burnin", "5",
                                                                  "--nbeta", "12.5", "--mask", mask_file});
  ASSERT_EQ(m.exit_code, 0) << m;
  sgld::LlcOptions om;
  om.chains = 2;
  om.draws = 20;
  om.burnin = 5;
  om.nbeta_rule = sgld::NBeta::value;
  om.nbeta = 12.5;
  om.mask.assign(25, 0);
  for (int i = 0; i < 12; ++i) om.mask[std::size_t(i)] = 1;
  expect_matches(m.json(), library_llc(p, om));
  EXPECT_EQ(m.json().at("nbeta").get<double>(), 12.5);
  EXPECT_EQ(m.json().at("options").at("free_parameters"), 12);
}

TEST(CliLlc, CheckpointsCsvEqualsOneRunPerCheckpoint) {
  const std::string dir = temp_path("run");
  const std::vector<std::string> data{"--dataset", "spirals", "--samples", "120", "--test-fraction", "0.25"};
  const CliResult train = run(std::vector<std::string>{"train", "--arch", "2-8-2", "--steps", "40", "--save-every", "20",
                                                       "--out-dir", dir, "--quiet"} + data);
  ASSERT_EQ(train.exit_code, 0) << train;
  const std::vector<std::string> sampler{"--chains", "2", "--draws", "15", "--burnin", "5", "--seed", "4", "--threads", "1",
                                         "--quiet"};
  const std::string csv = temp_path("llc.csv");
  const CliResult r = run(std::vector<std::string>{"llc", "--checkpoints", dir, "--out-csv", csv} + data + sampler);
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  EXPECT_EQ(j.at("checkpoints"), 3);
  EXPECT_EQ(j.at("loss"), "xent");
  EXPECT_EQ(j.at("data").at("train_samples"), 90);
  const json& rows = j.at("rows");
  ASSERT_EQ(rows.size(), 3u);
  const std::vector<std::string> text = lines(csv);
  ASSERT_EQ(text.size(), 4u);
  EXPECT_EQ(text[0], "step,llc_mean,llc_stderr,r_hat,llc_std,ess,mala_acceptance,init_loss,nbeta,chains,diverged_chains,warnings");
  for (std::size_t q = 0; q < 3; ++q) {
    const int step = 20 * int(q);
    EXPECT_EQ(rows[q].at("step"), step);
    // Each row is what `llc --model` reports for that checkpoint with the same data and options.
    char name[64];
    std::snprintf(name, sizeof name, "step_%07d.safetensors", step);
    const CliResult one =
        run(std::vector<std::string>{"llc", "--model", (fs::path(dir) / name).string()} + data + sampler);
    ASSERT_EQ(one.exit_code, 0) << one;
    const json o = one.json();
    for (const char* key : {"llc_mean", "llc_std", "llc_stderr", "llc_per_chain", "init_loss", "nbeta", "r_hat", "ess",
                            "mala_acceptance", "diverged", "warnings"})
      EXPECT_EQ(rows[q].at(key), o.at(key)) << key << " at step " << step;
    // The CSV has the same numbers (10 significant digits).
    const std::vector<std::string> f = fields(text[q + 1]);
    ASSERT_GE(f.size(), 11u) << text[q + 1];
    EXPECT_EQ(f[0], std::to_string(step));
    const char* columns[] = {"llc_mean", "llc_stderr", "r_hat", "llc_std", "ess", "mala_acceptance", "init_loss", "nbeta"};
    for (std::size_t k = 0; k < 8; ++k) {
      const json& v = rows[q].at(columns[k]);
      if (v.is_null()) {
        EXPECT_EQ(f[k + 1], "") << columns[k];
      } else {
        const double x = v.get<double>();
        EXPECT_NEAR(std::stod(f[k + 1]), x, 1e-9 * std::abs(x) + 1e-300) << columns[k] << " at step " << step;
      }
    }
    EXPECT_EQ(f[9], "2");
    EXPECT_EQ(f[10], std::to_string(rows[q].at("diverged").size()));
  }
  // Training moves the network, and with it the estimate.
  EXPECT_NE(rows[0].at("llc_mean"), rows[2].at("llc_mean"));

  // A train folder does not record its data: without data flags, the message says what to give.
  expect_usage_error(run(std::vector<std::string>{"llc", "--checkpoints", dir, "--out-csv", temp_path("never.csv")} + sampler),
                     {"--checkpoints", "report.json", "--dataset"});
  EXPECT_FALSE(fs::exists(temp_path("never.csv")));

  // A checkpoint with the same parameter count but another activation is another network: refused
  // (naming both) before any chain runs, and no CSV.
  const std::string tanh_dir = temp_path("run_tanh");
  ASSERT_EQ(run(std::vector<std::string>{"train", "--arch", "2-8-2", "--activation", "tanh", "--steps", "20",
                                         "--save-every", "20", "--out-dir", tanh_dir, "--quiet"} +
                data)
                .exit_code,
            0);
  fs::copy_file(fs::path(tanh_dir) / "step_0000020.safetensors", fs::path(dir) / "step_0000020.safetensors",
                fs::copy_options::overwrite_existing);
  expect_usage_error(run(std::vector<std::string>{"llc", "--checkpoints", dir, "--out-csv", temp_path("mixed.csv")} +
                         data + sampler),
                     {"--checkpoints", "another architecture", "tanh", "relu", "step_0000020.safetensors"});
  EXPECT_FALSE(fs::exists(temp_path("mixed.csv")));
}

// report.json's data paths (run_data, shared by lc, llc, elasticity and response): a relative one
// names a file of the run folder (the Python Tracker records its inputs.npy so), which keeps a
// moved folder readable; one the folder lacks is taken relative to the working folder, as the
// command line that made the run typed it; a file in neither place is a UsageError naming both.
TEST(CliLlc, ReportDataPathsResolveAgainstTheRunFolder) {
  std::vector<double> x(80);
  std::vector<std::int64_t> y(40);
  for (int i = 0; i < 40; ++i) {
    x[std::size_t(2 * i)] = std::sin(0.7 * i);
    x[std::size_t(2 * i + 1)] = std::cos(1.3 * i);
    y[std::size_t(i)] = (x[std::size_t(2 * i)] * x[std::size_t(2 * i + 1)] > 0) ? 1 : 0;
  }
  const std::string dir = temp_path("tracked");
  fs::create_directories(dir);
  const std::string xs = (fs::path(dir) / "x.npy").string(), ys = (fs::path(dir) / "y.npy").string();
  io::write_npy(xs, io::Tensor::from(x.data(), {40, 2}));
  io::write_npy(ys, io::Tensor::from(y.data(), {40}));
  const std::vector<std::string> flags{"--inputs", xs, "--targets", ys};
  const CliResult train = run(std::vector<std::string>{"train", "--arch", "2-6-2", "--steps", "10", "--save-every", "5",
                                                       "--out-dir", dir, "--quiet"} + flags);
  ASSERT_EQ(train.exit_code, 0) << train;
  // A report as the Tracker writes it: the data by names relative to the folder.
  const auto write_report = [](const std::string& folder, const std::string& inputs, const std::string& targets) {
    const json data{{"inputs", inputs}, {"targets", targets}, {"samples_flag", 0}, {"test_fraction", 0.0}};
    std::ofstream((fs::path(folder) / "report.json").string())
        << json{{"config", {{"command", "python"}, {"seed", 0}, {"loss", "xent"}, {"data", data}}}}.dump(2) << "\n";
  };
  write_report(dir, "x.npy", "y.npy");
  const std::vector<std::string> sampler{"--chains", "2", "--draws", "6", "--burnin", "2", "--seed", "3", "--threads", "1",
                                         "--quiet"};
  // The reference: the same data given by flags (absolute paths).
  const std::string ref_llc = temp_path("ref_llc.csv"), ref_lc = temp_path("ref_lc.csv");
  const std::vector<std::string> lc_opts{"--radius", "0.05", "--dims", "2", "--seed", "3", "--threads", "1", "--quiet"};
  CliResult r = run(std::vector<std::string>{"llc", "--checkpoints", dir, "--out-csv", ref_llc} + flags + sampler);
  ASSERT_EQ(r.exit_code, 0) << r;
  r = run(std::vector<std::string>{"lc", "--checkpoints", dir, "--out-csv", ref_lc, "--inputs", xs} + lc_opts);
  ASSERT_EQ(r.exit_code, 0) << r;

  // Moved: the relative names still find the folder's files, and llc and lc (which takes the
  // run's data too) write the reference's CSVs byte for byte.
  const std::string moved = temp_path("tracked_moved");
  fs::rename(dir, moved);
  const std::string llc_csv = temp_path("moved_llc.csv"), lc_csv = temp_path("moved_lc.csv");
  r = run(std::vector<std::string>{"llc", "--checkpoints", moved, "--out-csv", llc_csv} + sampler);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("data").at("inputs"), (fs::path(moved) / "x.npy").string());
  EXPECT_EQ(r.json().at("data").at("targets"), (fs::path(moved) / "y.npy").string());
  EXPECT_EQ(r.json().at("data").at("from"), (fs::path(moved) / "report.json").string());
  EXPECT_EQ(slurp(llc_csv), slurp(ref_llc));
  r = run(std::vector<std::string>{"lc", "--checkpoints", moved, "--out-csv", lc_csv} + lc_opts);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("data").at("inputs"), (fs::path(moved) / "x.npy").string());
  EXPECT_FALSE(r.json().at("data").contains("targets"));  // local complexity reads no targets
  EXPECT_EQ(r.json().at("checkpoints"), 3);
  EXPECT_EQ(slurp(lc_csv), slurp(ref_lc));
  EXPECT_EQ(lines(lc_csv).size(), 1u + 3u * 2u);  // train and random points at steps 0, 5, 10

  // A relative path the folder does not hold is the working folder's (a CLI-written report
  // records --inputs as typed).
  const std::string cwd_name = "dynascope_cwd_" + std::to_string(::getpid()) + "_x.npy";
  fs::copy_file(fs::path(moved) / "x.npy", fs::current_path() / cwd_name);
  write_report(moved, cwd_name, (fs::path(moved) / "y.npy").string());
  const std::string cwd_csv = temp_path("cwd_llc.csv");
  r = run(std::vector<std::string>{"llc", "--checkpoints", moved, "--out-csv", cwd_csv} + sampler);
  fs::remove(fs::current_path() / cwd_name);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("data").at("inputs"), cwd_name);
  EXPECT_EQ(slurp(cwd_csv), slurp(ref_llc));

  // In neither place: refused before any chain runs, naming the key and both places.
  write_report(moved, "gone.npy", "y.npy");
  const std::string never = temp_path("never.csv");
  expect_usage_error(run(std::vector<std::string>{"llc", "--checkpoints", moved, "--out-csv", never} + sampler),
                     {"--checkpoints", "config.data.inputs", "'gone.npy'", (fs::path(moved) / "gone.npy").string(),
                      "working folder"});
  EXPECT_FALSE(fs::exists(never));
  expect_usage_error(run(std::vector<std::string>{"lc", "--checkpoints", moved, "--out-csv", never} + lc_opts),
                     {"--checkpoints", "config.data.inputs", "'gone.npy'"});
  EXPECT_FALSE(fs::exists(never));
}

TEST(CliLlc, CalibrationSweepEqualsTheLibrary) {
  const Problem p = problem();
  const std::string csv = temp_path("calibrate.csv"), out = temp_path("calibrate.json");
  const CliResult r = run(base_args(p) + std::vector<std::string>{"--calibrate", "--calibrate-epsilons", "1e-5,1e-4",
                                                                  "--calibrate-nbetas", "5,20", "--chains", "2", "--draws",
                                                                  "15", "--burnin", "5", "--seed", "2", "--out-csv", csv,
                                                                  "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::ifstream f(out);
  const json j = json::parse(f);
  sgld::LlcOptions o;
  o.chains = 2;
  o.draws = 15;
  o.burnin = 5;
  o.seed = 2;
  const Context host = Context::host(1);
  const model::Mlp<double> net = model::load_mlp<double>(host, p.net);
  model::Targets<double> t;
  t.values = {p.ys.data(), kN, 1, 1, Backend::host};
  const std::vector<sgld::CalibrationPoint> lib = sgld::calibrate<double>(
      host, net.spec, net.params.data(), {p.xs.data(), kN, 2, 2, Backend::host}, t, model::Loss::mse, o, {1e-5, 1e-4}, {5, 20});
  const json& table = j.at("calibration");
  ASSERT_EQ(table.size(), lib.size());
  ASSERT_EQ(table.size(), 4u);
  const std::vector<std::string> text = lines(csv);
  ASSERT_EQ(text.size(), 5u);
  EXPECT_EQ(text[0].rfind("epsilon,llc_mean,llc_stderr,r_hat,", 0), 0u) << text[0];
  for (std::size_t k = 0; k < lib.size(); ++k) {
    EXPECT_EQ(table[k].at("epsilon").get<double>(), lib[k].epsilon);
    EXPECT_EQ(table[k].at("nbeta").get<double>(), lib[k].nbeta);
    expect_matches(table[k], lib[k].result);
    const std::vector<std::string> fl = fields(text[k + 1]);
    EXPECT_EQ(std::stod(fl[0]), lib[k].epsilon);
    EXPECT_NEAR(std::stod(fl[1]), lib[k].result.llc_mean, 1e-9 * std::abs(lib[k].result.llc_mean));
  }
  // Every pair is in the sweep once.
  std::set<std::pair<double, double>> pairs;
  for (const json& row : table) pairs.insert({row.at("epsilon").get<double>(), row.at("nbeta").get<double>()});
  EXPECT_EQ(pairs, (std::set<std::pair<double, double>>{{1e-5, 5}, {1e-5, 20}, {1e-4, 5}, {1e-4, 20}}));
  // The table on stdout: a header and one line per pair.
  std::istringstream table_text(r.out);
  std::vector<std::string> table_lines;
  for (std::string line; std::getline(table_text, line);) table_lines.push_back(line);
  ASSERT_EQ(table_lines.size(), 5u) << r.out;
  EXPECT_NE(table_lines[0].find("epsilon"), std::string::npos);
  EXPECT_NE(table_lines[0].find("r_hat"), std::string::npos);

  // The default sweep: epsilon x 0.1, 0.3, 1, 3, 10 around --epsilon and nβ x 0.3, 1, 3 around n / ln n.
  const CliResult d = run(base_args(p) + std::vector<std::string>{"--calibrate", "--epsilon", "2e-4", "--chains", "2",
                                                                  "--draws", "3", "--burnin", "0"});
  ASSERT_EQ(d.exit_code, 0) << d;
  const json dj = d.json();
  EXPECT_EQ(dj.at("epsilons").get<std::vector<double>>(), (std::vector<double>{2e-5, 6e-5, 2e-4, 6e-4, 2e-3}));
  const std::vector<double> nb = dj.at("nbetas").get<std::vector<double>>();
  ASSERT_EQ(nb.size(), 3u);
  const double centre = double(kN) / std::log(double(kN));
  EXPECT_NEAR(nb[0], 0.3 * centre, 1e-9);
  EXPECT_NEAR(nb[1], centre, 1e-9);
  EXPECT_NEAR(nb[2], 3 * centre, 1e-9);
  EXPECT_EQ(dj.at("calibration").size(), 15u);
}

TEST(CliLlc, DivergedChainsAreReportedNotHidden) {
  const Problem p = problem();
  // A step size far past stability: every chain overflows; the result says which draw first went
  // bad, and the exit status says the estimate failed.
  const CliResult r = run(base_args(p) + std::vector<std::string>{"--chains", "2", "--draws", "10", "--burnin", "50",
                                                                  "--epsilon", "1000"});
  EXPECT_EQ(r.exit_code, 1) << r;
  const json j = r.json();
  ASSERT_EQ(j.at("diverged").size(), 2u) << j;
  EXPECT_TRUE(j.at("llc_per_chain")[0].is_null());
  EXPECT_TRUE(j.at("llc_per_chain")[1].is_null());
  EXPECT_TRUE(j.at("llc_mean").is_null());
}

TEST(CliLlc, BadInputIsRefusedBeforeAnythingIsWritten) {
  const Problem p = problem();
  const std::string out = temp_path("never.json"), trace = temp_path("never.npy");
  const auto refused = [&](const std::vector<std::string>& extra, const std::vector<std::string>& phrases) {
    expect_usage_error(run(base_args(p) + std::vector<std::string>{"--out", out, "--out-trace", trace} + extra), phrases);
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(trace));
  };
  refused({"--epsilon", "0"}, {"--epsilon", "> 0"});
  refused({"--epsilon", "-1e-4"}, {"--epsilon"});
  refused({"--epsilon", "nan"}, {"--epsilon"});
  refused({"--gamma", "-1"}, {"--gamma", ">= 0"});
  refused({"--chains", "0"}, {"--chains", ">= 1"});
  refused({"--draws", "0"}, {"--draws", ">= 1"});
  refused({"--burnin", "-1"}, {"--burnin", ">= 0"});
  refused({"--thin", "0"}, {"--thin", ">= 1"});
  refused({"--batch", "41"}, {"--batch 41", "40 training samples"});
  refused({"--batch", "-1"}, {"--batch"});
  refused({"--nbeta", "0"}, {"--nbeta", "> 0"});
  refused({"--nbeta", "hot"}, {"--nbeta", "auto, batch or a number"});
  refused({"--sampler", "hmc"}, {"--sampler"});
  refused({"--rmsprop-alpha", "0.9"}, {"--rmsprop-alpha", "rmsprop-sgld"});
  refused({"--sampler", "rmsprop-sgld", "--rmsprop-alpha", "1"}, {"--rmsprop-alpha"});
  refused({"--sampler", "rmsprop-sgld", "--rmsprop-eps", "0"}, {"--rmsprop-eps", "> 0"});
  refused({"--bounding-box", "0"}, {"--bounding-box", "> 0"});
  refused({"--init-loss", "minibatch"}, {"--init-loss minibatch", "--batch"});
  refused({"--out-csv", temp_path("x.csv")}, {"--out-csv", "--checkpoints", "--calibrate"});
  // Two outputs in one file: the second write would replace the first.
  refused({"--out-distance-trace", trace}, {"--out-distance-trace and --out-trace name the same file"});
  refused({"--out-distance-trace", (fs::path(trace).parent_path() / "." / fs::path(trace).filename()).string()},
          {"--out-distance-trace and --out-trace name the same file"});
  refused({"--calibrate-epsilons", "1e-4"}, {"--calibrate-epsilons", "--calibrate"});
  refused({"--calibrate", "--calibrate-epsilons", "0,1e-4"}, {"--calibrate-epsilons", "> 0"});
  refused({"--calibrate"}, {"--out-trace", "--calibrate"});
  refused({"--loss", "xent"}, {"--loss xent", "integer class labels"});
  refused({"--checkpoints", temp_path("")}, {"--checkpoints", "--model"});
  // Masks: one 0/1 per parameter, at least one free.
  refused({"--mask", npy<double>("short.npy", {1, 0}, {2})}, {"--mask", "[25]"});
  refused({"--mask", npy<double>("half.npy", std::vector<double>(25, 0.5), {25})}, {"--mask", "0 (fixed) or 1"});
  refused({"--mask", npy<double>("zeros.npy", std::vector<double>(25, 0.0), {25})}, {"--mask", "at least one"});
  // The network and the data must fit each other.
  const std::string x3 = npy<double>("x3.npy", std::vector<double>(3 * kN, 0.5), {kN, 3});
  expect_usage_error(run({"llc", "--model", p.net, "--inputs", x3, "--targets", p.y, "--out", out, "--quiet"}),
                     {"takes 2 inputs", "3 per sample"});
  const std::string y2 = npy<double>("y2.npy", std::vector<double>(2 * kN, 0.5), {kN, 2});
  expect_usage_error(run({"llc", "--model", p.net, "--inputs", p.x, "--targets", y2, "--out", out, "--quiet"}),
                     {"2 values per sample", "1 output"});
  expect_usage_error(run({"llc", "--model", p.net, "--inputs", p.x, "--out", out, "--quiet"}), {"llc needs targets"});
  expect_usage_error(run({"llc", "--inputs", p.x, "--targets", p.y, "--quiet"}), {"llc needs --model"});
  EXPECT_FALSE(fs::exists(out));
  // --checkpoints needs --out-csv and excludes the one-network outputs.
  expect_usage_error(run({"llc", "--checkpoints", temp_path(""), "--dataset", "spirals", "--quiet"}), {"--out-csv"});
  // A read-only output file is refused before the chains run, and stays as it was.
  const std::string locked = temp_path("locked.npy");
  std::ofstream(locked) << "keep";
  ::chmod(locked.c_str(), 0444);
  const CliResult ro = run(base_args(p) + std::vector<std::string>{"--out-trace", locked});
  expect_usage_error(ro, {"--out-trace"});
  EXPECT_EQ(slurp(locked), "keep");
}

TEST(CliLlc, InterruptedChainsLeaveNoFiles) {
  // Long chains, interrupted once their progress shows on stderr: the process ends by the signal
  // and writes neither the JSON nor the trace (both are written after the sampling).
  const Problem p = problem();
  const fs::path dir = temp_path("interrupted");
  fs::create_directories(dir);
  const std::string err = (dir / "stderr.txt").string();
  std::vector<std::string> all{DYNASCOPE_CLI, "llc", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--chains", "4",
                               "--burnin", "3000000", "--draws", "10", "--out", (dir / "r.json").string(), "--out-trace",
                               (dir / "t.npy").string()};
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int null = ::open("/dev/null", O_RDWR), e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(e, 2);
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  bool sampling = false;
  for (int i = 0; i < 1000 && !sampling; ++i) {
    sampling = slurp(err).find("llc ") != std::string::npos;
    if (!sampling) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(sampling) << "no progress on stderr: " << slurp(err);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) << "status " << status;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != "stderr.txt") left.push_back(e.path().filename().string());
  EXPECT_TRUE(left.empty()) << left.front();
}

}  // namespace
}  // namespace dynascope::test
