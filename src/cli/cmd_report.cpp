// dynascope report: the figures of run folders as an HTML page. The figures are matplotlib's, so
// the page is drawn by the Python package: this command runs `<python> -m dynascope report ...`
// with the interpreter and the package this build was configured with, passes its output through
// and ends with its exit status.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/common.hpp"
#include "cli/report.hpp"
#include "cli/report_config.hpp"

extern char** environ;

namespace dynascope::cli {
namespace {

// "png,svg": every item one of the formats the report draws.
std::string check_formats(std::string& value) {
  if (value.empty()) return "must name at least one of png, svg, pdf";
  std::size_t begin = 0;
  while (begin <= value.size()) {
    const std::size_t end = std::min(value.find(',', begin), value.size());
    const std::string item = value.substr(begin, end - begin);
    if (item != "png" && item != "svg" && item != "pdf")
      return "expected a comma-separated list of png, svg, pdf, got '" + value + "'";
    begin = end + 1;
  }
  return {};
}

#if DYNASCOPE_REPORT_WITH_PYTHON
constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP};

volatile sig_atomic_t g_child = 0;   // the report's process while it runs
volatile sig_atomic_t g_signal = 0;  // a stop signal this process received meanwhile

// While the report runs, a stop signal is remembered (this process ends by it once the report has
// cleaned up) and, when another process sent it to this one alone (kill: si_code <= 0), passed on
// as SIGINT: Python turns SIGINT into KeyboardInterrupt, on which the report removes its temporary
// folder, whereas SIGTERM and SIGHUP would end it on the spot. One the kernel sent for the terminal
// (Ctrl-C, hangup) reached the report's process too, as a member of the same process group: a
// second copy could interrupt the report's own cleanup.
void on_stop_signal(int sig, siginfo_t* info, void*) {
  g_signal = sig;
  if (info != nullptr && info->si_code <= 0 && g_child > 0) ::kill(static_cast<pid_t>(g_child), SIGINT);
}

int spawn_and_wait(const std::vector<std::string>& args) {
  const std::string python = DYNASCOPE_REPORT_PYTHON, path = DYNASCOPE_REPORT_PYTHONPATH;
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(fs::path(path) / "dynascope" / "__init__.py", ec)) {
    std::fprintf(stderr,
                 "dynascope: report: the Python package this build lays out in %s is missing (the build folder "
                 "was moved or cleaned): rebuild with `cmake --build <build folder>`, or run `python -m dynascope "
                 "report` with the package installed (`pip install .`)\n",
                 path.c_str());
    return 2;
  }
  if (::access(python.c_str(), X_OK) != 0) {
    std::fprintf(stderr,
                 "dynascope: report: the Python interpreter this build was configured with, %s, cannot be run (%s): "
                 "re-create it (scripts/install-deps.sh creates .venv) or reconfigure with "
                 "-DPython_EXECUTABLE=<python>\n",
                 python.c_str(), std::strerror(errno));
    return 2;
  }

  // The build's package first on PYTHONPATH, the caller's entries after it.
  std::vector<std::string> env;
  std::string pythonpath = "PYTHONPATH=" + path;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, "PYTHONPATH=", 11) == 0) {
      if ((*e)[11] != '\0') pythonpath += std::string(":") + (*e + 11);
    } else {
      env.emplace_back(*e);
    }
  }
  env.push_back(pythonpath);
  std::vector<char*> envp, argv;
  for (std::string& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_storage = args;
  argv_storage.insert(argv_storage.begin(), {python, "-m", "dynascope", "report"});
  for (std::string& s : argv_storage) argv.push_back(s.data());
  argv.push_back(nullptr);

  // The handlers are in place before the child exists, so no stop signal is lost in between; the
  // previous ones come back afterwards (the demo's remove its temporary files).
  struct sigaction forward {}, previous[std::size(kForwarded)];
  forward.sa_sigaction = on_stop_signal;
  forward.sa_flags = SA_SIGINFO;
  sigemptyset(&forward.sa_mask);
  g_signal = 0;
  g_child = 0;
  // A signal this process ignores (nohup) stays ignored, here and in the child.
  bool replaced[std::size(kForwarded)] = {};
  for (std::size_t i = 0; i < std::size(kForwarded); ++i) {
    ::sigaction(kForwarded[i], nullptr, &previous[i]);
    replaced[i] = previous[i].sa_handler != SIG_IGN;
    if (replaced[i]) ::sigaction(kForwarded[i], &forward, nullptr);
  }
  const auto restore = [&] {
    g_child = 0;
    for (std::size_t i = 0; i < std::size(kForwarded); ++i)
      if (replaced[i]) ::sigaction(kForwarded[i], &previous[i], nullptr);
  };

  pid_t pid = 0;
  const int spawn_error = ::posix_spawn(&pid, python.c_str(), nullptr, nullptr, argv.data(), envp.data());
  if (spawn_error != 0) {
    restore();
    std::fprintf(stderr, "dynascope: report: cannot start %s: %s\n", python.c_str(), std::strerror(spawn_error));
    return 1;
  }
  g_child = pid;
  if (g_signal != 0) ::kill(pid, SIGINT);  // arrived while the child was being started
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  restore();
  if (g_signal != 0) ::raise(g_signal);  // the previous handler (or the default) ends this process
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    for (int s : kForwarded)
      if (s == sig) ::raise(sig);  // stopped from outside: end the same way
    std::fprintf(stderr, "dynascope: report: the Python process was killed by signal %d (%s)\n", sig,
                 strsignal(sig));
    return 1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
#endif

}  // namespace

int run_report(const ReportOptions& opts) {
#if DYNASCOPE_REPORT_WITH_PYTHON
  // Options first and `--` before the folders, so that a folder named like a flag stays a folder.
  std::vector<std::string> args;
  if (!opts.out.empty()) args.insert(args.end(), {"--out", opts.out});
  if (!opts.formats.empty()) args.insert(args.end(), {"--format", opts.formats});
  if (opts.overwrite) args.emplace_back("--overwrite");
  if (opts.quiet) args.emplace_back("--quiet");
  args.emplace_back("--");
  args.insert(args.end(), opts.dirs.begin(), opts.dirs.end());
  return spawn_and_wait(args);
#else
  (void)opts;
  std::fprintf(stderr,
               "dynascope: report: this dynascope was built without the Python extension, which draws the report "
               "(matplotlib): run scripts/install-deps.sh (it creates .venv with nanobind and matplotlib) and "
               "reconfigure with -DDYNASCOPE_PYTHON=ON, or use an installed package: `pip install .` then "
               "`python -m dynascope report DIR`\n");
  return 2;
#endif
}

int run_report(const std::vector<std::string>& dirs, bool quiet) {
  ReportOptions opts;
  opts.dirs = dirs;
  opts.overwrite = true;
  opts.quiet = quiet;
  return run_report(opts);
}

Command register_report(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "report",
      "The figures of run folders (train, demo, the Python Tracker) as an HTML page, DIR/report/index.html; several "
      "folders overlay on the same axes. Drawn by the Python package (matplotlib)");
  auto opts = std::make_shared<ReportOptions>();
  cmd->add_option("DIR", opts->dirs, "Run folders (the first receives report/ unless --out is given)")->required();
  cmd->add_option("--out", opts->out, "The report's folder (default: DIR/report of the first DIR)");
  cmd->add_option("--format", opts->formats,
                  "Figure files besides the page's PNGs: a comma-separated list of png, svg, pdf (default png)")
      ->check(CLI::Validator(check_formats, "LIST"));
  cmd->add_flag("--overwrite", opts->overwrite, "Replace an existing report folder");
  cmd->add_flag("--quiet", opts->quiet, "No progress on stderr");
  return {cmd, [opts] { return run_report(*opts); }};
}

}  // namespace dynascope::cli
