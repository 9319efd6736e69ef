// dynascope report: the command runs the Python package's report (`python -m dynascope report`) with
// the interpreter and package this build was configured with, passes its flags, output and exit
// status through, and on SIGTERM lets the report clean up and ends by the signal. Its flags are
// checked before Python starts. A build without the Python extension says how to get one.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli_test_util.hpp"
#include "cli/report_config.hpp"

namespace dynascope::test {
namespace {

namespace fs = std::filesystem;

TEST(CliReport, FlagsAreCheckedBeforePythonStarts) {
  expect_usage_error(run({"report"}), {"DIR is required"});
  expect_usage_error(run({"report", "--format", "png,gif", temp_path("none")}),
                     {"--format", "png, svg, pdf", "png,gif"});
  expect_usage_error(run({"report", "--format", "", temp_path("none")}), {"--format"});
}

#if DYNASCOPE_REPORT_WITH_PYTHON

// Whether the build's interpreter has matplotlib, which draws the figures.
bool have_matplotlib() {
  const std::string cmd = shell_quote(DYNASCOPE_REPORT_PYTHON) + " -c 'import matplotlib' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// A small `dynascope train` run folder: checkpoints and train.csv (loss and accuracy at every step).
std::string train_run(const std::string& name) {
  const std::string dir = temp_path(name);
  fs::create_directories(dir);
  const CliResult r = run({"train", "--dataset", "spirals", "--samples", "60", "--arch", "2-8-2", "--steps", "30",
                           "--save-every", "10", "--seed", "1", "--out-dir", dir, "--quiet"});
  EXPECT_EQ(r.exit_code, 0) << r;
  return dir;
}

TEST(CliReport, WritesTheReportOfATrainRunAndPrintsItsPath) {
  if (!have_matplotlib()) GTEST_SKIP() << "matplotlib is not installed for " << DYNASCOPE_REPORT_PYTHON;
  const std::string dir = train_run("report_run");
  // The build's package comes first on PYTHONPATH, whatever the caller's holds.
  ::setenv("PYTHONPATH", temp_path("not_a_package").c_str(), 1);
  const CliResult r = run({"report", dir});
  ::unsetenv("PYTHONPATH");
  ASSERT_EQ(r.exit_code, 0) << r;
  const fs::path index = fs::path(dir) / "report" / "index.html";
  EXPECT_EQ(r.out, index.string() + "\n");
  ASSERT_TRUE(fs::exists(index));
  // train.csv alone: the loss and accuracy figure, on the page.
  EXPECT_TRUE(fs::exists(fs::path(dir) / "report" / "loss.png"));
  EXPECT_NE(slurp(index.string()).find("<img src=\"loss.png\""), std::string::npos);

  // An existing report is refused (naming the flag that replaces it) and left as it was; --overwrite
  // replaces it; --quiet prints nothing; --out and --format reach the report.
  const CliResult again = run({"report", dir});
  EXPECT_NE(again.exit_code, 0) << again;
  EXPECT_NE(again.err.find("--overwrite"), std::string::npos) << again;
  EXPECT_TRUE(fs::exists(index));
  const CliResult quiet = run({"report", "--overwrite", "--quiet", dir});
  EXPECT_EQ(quiet.exit_code, 0) << quiet;
  EXPECT_EQ(quiet.out, "");
  const std::string out = temp_path("report_out");
  const CliResult svg = run({"report", "--out", out, "--format", "png,svg", dir});
  ASSERT_EQ(svg.exit_code, 0) << svg;
  EXPECT_EQ(svg.out, (fs::path(out) / "index.html").string() + "\n");
  EXPECT_TRUE(fs::exists(fs::path(out) / "loss.png"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "loss.svg"));
}

TEST(CliReport, BadFolderIsAnErrorNamingIt) {
  if (!have_matplotlib()) GTEST_SKIP() << "matplotlib is not installed for " << DYNASCOPE_REPORT_PYTHON;
  const std::string missing = temp_path("no_such_run");
  const CliResult r = run({"report", missing});
  EXPECT_EQ(r.exit_code, 2) << r;  // bad input, as for every command
  EXPECT_NE(r.err.find(missing), std::string::npos) << r;
  EXPECT_EQ(r.out, "");
  EXPECT_FALSE(fs::exists(missing));
}

// The children of process `pid` (Linux: /proc/PID/task/PID/children).
std::string children_of(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children";
  return slurp(path);
}

TEST(CliReport, SigtermLetsTheReportCleanUpAndEndsByTheSignal) {
  if (!have_matplotlib()) GTEST_SKIP() << "matplotlib is not installed for " << DYNASCOPE_REPORT_PYTHON;
  const std::string dir = train_run("report_sigterm");
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, STDOUT_FILENO);
    ::dup2(null, STDERR_FILENO);
    ::execl(DYNASCOPE_CLI, DYNASCOPE_CLI, "report", dir.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Once Python runs (the CLI re-executes itself first, so wait for a child of the final image, and
  // give the interpreter a moment to start its imports), SIGTERM to the CLI alone, as `kill` sends it.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (children_of(pid).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_FALSE(children_of(pid).empty()) << "the report's Python process did not start";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  // The CLI waited for Python to finish: nothing half-written is left, no report and no temporary folder.
  EXPECT_FALSE(fs::exists(fs::path(dir) / "report"));
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().rfind(".report", 0), std::string::npos) << entry.path();
}

#else

TEST(CliReport, WithoutThePythonExtensionSaysHowToGetIt) {
  expect_usage_error(run({"report", temp_path("run")}),
                     {"built without the Python extension", "DYNASCOPE_PYTHON=ON", "python -m dynascope report"});
}

#endif

}  // namespace
}  // namespace dynascope::test
