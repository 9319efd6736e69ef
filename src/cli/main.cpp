// The dynascope command-line tool. Results go to --out or stdout as JSON, progress to stderr.
// Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad input.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/common.hpp"
#include "cli/report.hpp"
#include "cli/training_run.hpp"
#include "dynascope/config.hpp"
#include "dynascope/error.hpp"

namespace {

bool is_input_error(dynascope::ErrorCategory c) {
  using dynascope::ErrorCategory;
  return c == ErrorCategory::invalid_argument || c == ErrorCategory::shape_mismatch ||
         c == ErrorCategory::file_format || c == ErrorCategory::io || c == ErrorCategory::not_built_with_cuda ||
         c == ErrorCategory::no_device;
}

}  // namespace

// OpenMP threads that wait at a barrier spin by default. When another process holds one of the
// cores, the spinning partner keeps its own core busy while the descheduled thread waits for a
// time slice, at every one of the thousands of small parallel regions a run makes: the demo took
// 65 s instead of 7 s on a loaded 2-core machine, and no slower with passive waiting on an idle
// one. The runtime reads OMP_WAIT_POLICY when it loads, before main, so when the user has not
// chosen a policy the tool sets it and starts itself again (a few milliseconds); if that fails it
// goes on as it is.
static void prefer_passive_waiting(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (::setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  ::execv("/proc/self/exe", argv);
}

int main(int argc, char** argv) {
  prefer_passive_waiting(argv);
  using namespace dynascope::cli;
  CLI::App app{"dynascope " DYNASCOPE_VERSION_STRING
               ": training-dynamics diagnostics for deep networks (NTK, curvature spectra, linear regions, LLC, "
               "local elasticity)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", DYNASCOPE_VERSION_STRING);
  std::vector<Command> commands;
  commands.push_back(register_info(app));
  commands.push_back(register_datasets(app));
  commands.push_back(register_train(app));
  commands.push_back(register_demo(app));
  commands.push_back(register_ntk(app));
  commands.push_back(register_eigen(app));
  commands.push_back(register_spectrum(app));
  commands.push_back(register_lc(app));
  commands.push_back(register_llc(app));
  commands.push_back(register_regions(app));
  commands.push_back(register_elasticity(app));
  commands.push_back(register_response(app));
  commands.push_back(register_report(app));
  std::string names;
  for (const Command& c : commands) names += (names.empty() ? "" : ", ") + c.app->get_name();
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const Command& c : commands) known = known || c.app->get_name() == argv[1];
    if (!known) {
      std::fprintf(stderr, "dynascope: unknown command '%s'; the commands are: %s (see dynascope --help)\n", argv[1],
                   names.c_str());
      return 2;
    }
  } else if (argc == 1) {
    std::fprintf(stderr, "dynascope: no command given; the commands are: %s (see dynascope --help)\n", names.c_str());
    return 2;
  }
  install_signal_handlers();
  remember_command_line(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    for (const Command& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "dynascope: %s\n", e.what());
    return 2;
  } catch (const dynascope::Error& e) {
    std::fprintf(stderr, "dynascope: %s: %s\n", dynascope::to_string(e.category()), e.what());
    return is_input_error(e.category()) ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dynascope: error: %s\n", e.what());
    return 1;
  }
  return 2;
}
