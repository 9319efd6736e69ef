// The command line as a user meets it: unknown commands, conflicting or ignored flags, readable
// range messages, outputs checked before any work, runs that never mix, precision that follows
// the data, one definition of the alignment quantities in `ntk` and `demo`, and Ctrl-C.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/cli_test_util.hpp"
#include "dynascope/curvature.hpp"
#include "dynascope/io.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"
#include "dynascope/ntk.hpp"
#include "dynascope/train.hpp"

namespace dynascope {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// dynascope ARGS... as a child process (stdin, stdout and stderr to /dev/null), for tests that
// signal it; returns its pid.
pid_t spawn(const std::vector<std::string>& args) {
  std::vector<std::string> all{DYNASCOPE_CLI};
  all.insert(all.end(), args.begin(), args.end());
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  const int null = ::open("/dev/null", O_RDWR);
  ::dup2(null, 0);
  ::dup2(null, 1);
  ::dup2(null, 2);
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

class CliFlags : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dynascope_cli_flags_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void expect_usage_error(const std::vector<std::string>& args, const std::vector<std::string>& fragments) {
    SCOPED_TRACE(::testing::Message() << "args: " << ::testing::PrintToString(args));
    test::expect_usage_error(test::run(args), fragments);
  }
  fs::path dir_;
};

TEST_F(CliFlags, OpenMpWaitsPassivelyUnlessTheUserChoseAPolicy) {
  // Spinning barriers made runs of many small steps ten times slower on a busy machine; the tool
  // restarts itself with OMP_WAIT_POLICY=passive when the environment does not set a policy.
  const char* saved = std::getenv("OMP_WAIT_POLICY");
  const std::string restore = saved ? saved : "";
  ::unsetenv("OMP_WAIT_POLICY");
  test::CliResult r = test::run({"info"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("omp_wait_policy"), "passive");
  ::setenv("OMP_WAIT_POLICY", "active", 1);
  r = test::run({"info"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("omp_wait_policy"), "active");
  if (saved)
    ::setenv("OMP_WAIT_POLICY", restore.c_str(), 1);
  else
    ::unsetenv("OMP_WAIT_POLICY");
}

TEST_F(CliFlags, UnknownCommandIsNamedAndTheCommandsListed) {
  expect_usage_error({"frobnicate"}, {"unknown command 'frobnicate'", "ntk", "spectrum", "demo"});
  expect_usage_error({}, {"no command given", "train"});
}

TEST_F(CliFlags, ConflictingOptionsNameBothFlags) {
  const std::vector<std::string> net{"--arch", "-8-", "--dataset", "spirals", "--samples", "64", "--quiet"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), net.begin(), net.end());
    return a;
  };
  expect_usage_error(with({"spectrum", "--density", "--k", "3"}), {"--density", "--k 3", "cannot be used together"});
  expect_usage_error(with({"spectrum", "--density", "--trace", "hutchinson"}), {"--density", "--trace hutchinson"});
  expect_usage_error(with({"spectrum", "--trace", "hutchpp", "--which", "smallest"}), {"--trace hutchpp", "--which smallest"});
  expect_usage_error(with({"spectrum", "--operator", "ntk", "--loss", "mse"}), {"--operator ntk", "--loss mse"});
  expect_usage_error(with({"spectrum", "--probes", "4"}), {"--probes", "no effect"});
  expect_usage_error(with({"spectrum", "--steps", "4", "--trace", "hutchinson"}), {"--steps", "no effect"});
  expect_usage_error(with({"spectrum", "--max-memory", "1G"}), {"--max-memory", "no effect"});
  expect_usage_error(with({"spectrum", "--trace", "hutchpp", "--probes", "1"}), {"--trace hutchpp", "--probes >= 2"});
  expect_usage_error(with({"ntk", "--outputs", "diagonal", "--k", "2"}), {"--outputs diagonal", "--k 2"});
  expect_usage_error(with({"ntk", "--outputs", "diagonal", "--energy", "2"}), {"--outputs diagonal", "--energy"});
  expect_usage_error(with({"ntk", "--energy-targets", "raw"}), {"--energy-targets", "--energy"});
  expect_usage_error(with({"train", "--max-memory", "1G", "--steps", "1", "--out-dir", path("run")}), {"--max-memory"});
}

// The command line offers what the library parses: each enum flag lists its table's canonical
// names (refusing anything else, exit 2) and shows them in --help, so the two cannot drift apart.
TEST_F(CliFlags, EnumFlagsOfferTheNamesOfTheLibrarysTables) {
  const auto braces = [](const std::vector<std::string>& names) {
    std::string s = "{";
    for (const std::string& n : names) s += (s.size() > 1 ? "," : "") + n;
    return s + "}";
  };
  std::vector<std::string> operators{"ntk"};
  for (const std::string& n : canonical_names(linalg::curvature_names)) operators.push_back(n);
  const struct {
    std::string command, flag;
    std::vector<std::string> names;
    std::string help;
  } flags[] = {
      {"train", "--loss", canonical_names(model::loss_names), known_names(model::loss_names, " | ")},
      {"train", "--optimizer", canonical_names(model::optimizer_names), known_names(model::optimizer_names, " | ")},
      {"train", "--parameterization", canonical_names(model::parameterization_names),
       known_names(model::parameterization_names, " | ")},
      {"ntk", "--outputs", canonical_names(ntk::outputs_names), known_names(ntk::outputs_names, " | ")},
      {"ntk", "--method", canonical_names(ntk::method_names), known_names(ntk::method_names, " | ")},
      {"eigen", "--which", canonical_names(linalg::which_names), known_names(linalg::which_names, " | ")},
      {"eigen", "--method", canonical_names(linalg::eigen_method_names), known_names(linalg::eigen_method_names, " | ")},
      {"spectrum", "--operator", operators, known_names(linalg::curvature_names, " | ")},
      {"spectrum", "--loss", canonical_names(model::loss_names), known_names(model::loss_names, " | ")},
  };
  for (const auto& f : flags) {
    SCOPED_TRACE(f.command + " " + f.flag);
    expect_usage_error({f.command, f.flag, "bogus", "--quiet"}, {f.flag, "bogus", braces(f.names)});
    const test::CliResult help = test::run({f.command, "--help"});
    EXPECT_NE(help.out.find(f.help), std::string::npos) << help.out;
  }
  // Aliases are the library's, not the command line's: --init takes them (it has no fixed list).
  EXPECT_NE(test::run({"train", "--help"}).out.find(known_names(model::init_names, " | ")), std::string::npos);
  EXPECT_NE(test::run({"train", "--help"}).out.find(known_names(model::activation_names)), std::string::npos);
}

TEST_F(CliFlags, RangeMessagesAreReadable) {
  io::write_npy(path("a.npy"), io::Tensor::from(std::vector<double>{2, 1, 1, 2}.data(), {2, 2}));
  expect_usage_error({"eigen", "--matrix", path("a.npy"), "--k", "0"}, {"--k: must be >= 1, got 0"});
  expect_usage_error({"eigen", "--matrix", path("a.npy"), "--tol", "-1"}, {"--tol: must be > 0, got -1"});
  expect_usage_error({"eigen", "--matrix", path("a.npy"), "--tol", "nan"}, {"--tol: must be finite"});
  expect_usage_error({"eigen", "--matrix", path("a.npy"), "--seed", "-1"}, {"--seed", "non-negative integer"});
  const std::vector<std::string> train{"train", "--arch", "-4-", "--dataset", "spirals", "--samples", "32",
                                       "--steps", "1", "--quiet", "--out-dir", path("run")};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = train;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  // PyTorch's optimizer checks: negative values are refused, never replaced by a default.
  expect_usage_error(with({"--lr", "-1"}), {"--lr: must be >= 0, got -1"});
  expect_usage_error(with({"--momentum", "-0.5", "--optimizer", "momentum"}), {"--momentum: must be >= 0"});
  expect_usage_error(with({"--betas", "0.9,1.0", "--optimizer", "adam"}), {"--betas", "[0, 1)"});
  expect_usage_error(with({"--eps", "-1e-8"}), {"--eps: must be >= 0"});
  expect_usage_error(with({"--weight-decay", "-0.1"}), {"--weight-decay: must be >= 0"});
  expect_usage_error(with({"--steps", "-3"}), {"--steps: must be >= 0, got -3"});
  // Nothing was written for any of them.
  EXPECT_FALSE(fs::exists(path("run")));
}

TEST_F(CliFlags, OutputsAreCheckedBeforeAnyWork) {
  const auto t0 = std::chrono::steady_clock::now();
  expect_usage_error({"ntk", "--arch", "-16-", "--dataset", "spirals", "--samples", "64", "--out", path("missing/r.json")},
                     {"--out", "missing", "does not exist"});
  expect_usage_error({"ntk", "--arch", "-16-", "--dataset", "spirals", "--samples", "64", "--out-matrix", path("nope/K.npy")},
                     {"--out-matrix", "does not exist"});
  // A read-only result file is kept as it is.
  {
    std::ofstream(path("keep.json")) << "mine";
  }
  ::chmod(path("keep.json").c_str(), 0444);
  expect_usage_error({"ntk", "--arch", "-16-", "--dataset", "spirals", "--samples", "64", "--out", path("keep.json")},
                     {"--out", "read-only"});
  std::ifstream f(path("keep.json"));
  std::string text;
  f >> text;
  EXPECT_EQ(text, "mine");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
}

TEST_F(CliFlags, DemoRefusesAFolderWithAnEarlierRunAndOverwriteReplacesIt) {
  const std::vector<std::string> demo{"demo", "--steps", "20", "--save-every", "10", "--samples", "64", "--ntk-samples", "16",
                                      "--quiet", "--out-dir", path("run"), "--map-resolution", "64"};
  auto r = test::run(demo);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(fs::exists(path("run/step_0000020.safetensors")));
  expect_usage_error(demo, {"--out-dir", "earlier run", "--overwrite"});
  // The refused run changed nothing; a shorter run with --overwrite leaves only its own files.
  EXPECT_TRUE(fs::exists(path("run/step_0000020.safetensors")));
  std::vector<std::string> again = demo;
  again[2] = "10";
  again.push_back("--overwrite");
  r = test::run(again);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_FALSE(fs::exists(path("run/step_0000020.safetensors")));
  EXPECT_TRUE(fs::exists(path("run/step_0000010.safetensors")));
  // report.json records the whole configuration.
  std::ifstream f(path("run/report.json"));
  const json report = json::parse(f);
  const json& cfg = report.at("config");
  EXPECT_EQ(cfg.at("optimizer").at("kind"), "adam");
  EXPECT_DOUBLE_EQ(cfg.at("optimizer").at("lr").get<double>(), 1e-2);
  EXPECT_EQ(cfg.at("seed"), 0);
  EXPECT_EQ(cfg.at("data").at("dataset"), "spirals");
  EXPECT_EQ(cfg.at("schedule").at("steps"), 10);
  EXPECT_TRUE(cfg.contains("version"));
  EXPECT_NE(cfg.at("command_line").get<std::string>().find("--overwrite"), std::string::npos);
}

TEST_F(CliFlags, PrecisionFollowsTheMatrixFile) {
  // A PSD float64 matrix with eigenvalues 1e4 .. 1e-3: in float32 the smallest would be far off.
  const index_t n = 40;
  std::vector<double> a(std::size_t(n * n), 0.0);
  for (index_t i = 0; i < n; ++i) a[std::size_t(i * n + i)] = std::pow(10.0, 4.0 - 7.0 * double(i) / double(n - 1));
  io::write_npy(path("a64.npy"), io::Tensor::from(a.data(), {n, n}));
  auto r = test::run({"eigen", "--matrix", path("a64.npy"), "--k", "2", "--which", "smallest", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  json j = json::parse(r.out);
  EXPECT_EQ(j.at("dtype"), "float64");
  EXPECT_NE(j.at("dtype_source").get<std::string>().find("a64.npy"), std::string::npos);
  EXPECT_NEAR(j.at("eigenvalues")[0].get<double>(), 1e-3, 1e-12);
  r = test::run({"eigen", "--matrix", path("a64.npy"), "--k", "2", "--which", "smallest", "--dtype", "float32", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  j = json::parse(r.out);
  EXPECT_EQ(j.at("dtype"), "float32");
  EXPECT_EQ(j.at("dtype_source"), "--dtype");
  std::vector<float> af(a.begin(), a.end());
  io::write_npy(path("a32.npy"), io::Tensor::from(af.data(), {n, n}));
  r = test::run({"eigen", "--matrix", path("a32.npy"), "--k", "1", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(json::parse(r.out).at("dtype"), "float32");
}

TEST_F(CliFlags, NtkAndDemoReportTheSameAlignmentNumbers) {
  // The demo's NTK section on all 48 training samples equals `ntk` on the step-0 checkpoint.
  auto r = test::run({"demo", "--steps", "0", "--samples", "64", "--ntk-samples", "48", "--quiet", "--dtype", "float64",
                          "--no-region-map", "--out-dir", path("run")});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::ifstream f(path("run/report.json"));
  const json demo = json::parse(f).at("checkpoints")[0].at("ntk");
  r = test::run({"ntk", "--model", path("run/step_0000000.safetensors"), "--dataset", "spirals", "--samples", "64",
                     "--test-fraction", "0.25", "--k", "5", "--energy", "1,2,5,10,20", "--quiet", "--dtype", "float64"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json ntk = r.json();
  EXPECT_EQ(ntk.at("energy_targets"), "centered");
  EXPECT_EQ(demo.at("energy_targets"), "centered");
  for (const char* key : {"kta", "kta_centered"})
    EXPECT_NEAR(ntk.at(key).get<double>(), demo.at(key).get<double>(), 1e-12) << key;
  for (const char* k : {"1", "2", "5", "10", "20"})
    EXPECT_NEAR(ntk.at("energy").at(k).get<double>(), demo.at("energy").at(k).get<double>(), 1e-10) << k;
  for (int i = 0; i < 5; ++i)
    EXPECT_NEAR(ntk.at("eigenvalues")[i].get<double>(), demo.at("eigenvalues")[i].get<double>(),
                1e-9 * ntk.at("eigenvalues")[0].get<double>());
  // Without --energy and --k nothing spectral is computed; raw targets give other energies.
  r = test::run({"ntk", "--model", path("run/step_0000000.safetensors"), "--dataset", "spirals", "--samples", "64",
                     "--test-fraction", "0.25", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json plain = json::parse(r.out);
  EXPECT_FALSE(plain.contains("energy"));
  EXPECT_FALSE(plain.contains("eigenvalues"));
  EXPECT_FALSE(plain.contains("eigen"));
  EXPECT_NEAR(plain.at("kta").get<double>(), ntk.at("kta").get<double>(), 1e-12);
  r = test::run({"ntk", "--model", path("run/step_0000000.safetensors"), "--dataset", "spirals", "--samples", "64",
                     "--test-fraction", "0.25", "--energy", "1", "--energy-targets", "raw", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(json::parse(r.out).at("energy_targets"), "raw");
}

TEST_F(CliFlags, InterruptedKernelRunLeavesNoFiles) {
  // A full kernel of 6000 x 2 outputs (1.1 GB in float64) takes seconds; SIGINT once its
  // temporary file exists must remove it and end the process by the signal.
  const std::vector<std::string> args{"ntk", "--arch", "-256-256-", "--dataset", "spirals", "--samples", "6000",
                                      "--outputs", "full", "--dtype", "float64", "--quiet", "--out-matrix", path("K.npy")};
  const pid_t pid = spawn(args);
  ASSERT_GT(pid, 0);
  bool seen = false;
  for (int i = 0; i < 600 && !seen; ++i) {
    for (const auto& e : fs::directory_iterator(dir_))
      if (e.path().filename().string().find(".K.npy.tmp") == 0) seen = true;
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(seen) << "the temporary kernel file never appeared";
  ::kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) << "status " << status;
  std::size_t left = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++left;
  EXPECT_EQ(left, 0u) << "files left behind";
}

}  // namespace
}  // namespace dynascope
