#pragma once
// `dynascope report`: the figures of one or more run folders as an HTML page. The page is drawn
// by the Python package (matplotlib): the tool runs `<python> -m dynascope report ...` with the
// interpreter and the package this build was configured with (see report_config.hpp.in).
#include <string>
#include <vector>

#include "cli/common.hpp"

namespace dynascope::cli {

struct ReportOptions {
  std::vector<std::string> dirs;  // run folders; the first receives report/ unless `out` is set
  std::string out;                // the report's folder (default: dirs[0]/report)
  std::string formats;            // "png", "png,svg", ...; empty: the package's default (png)
  bool overwrite = false;         // replace an existing report folder
  bool quiet = false;             // no progress on stderr
};

// Runs the Python report and returns its exit status (0: written, its index.html's path printed
// on stdout; 2: bad input or no Python in this build, with the reason on stderr; 1: another
// failure). When the report is interrupted by SIGINT, SIGTERM or SIGHUP this process ends by the
// same signal, as every other command does.
int run_report(const ReportOptions& opts);

// The demo's report of its own run folder(s): replaces a report folder left there by an earlier
// run (the run files it described were just replaced).
int run_report(const std::vector<std::string>& dirs, bool quiet);

Command register_report(CLI::App& app);

}  // namespace dynascope::cli
