#pragma once
// What every dynascope subcommand shares: the common flags (docs/cli.md), the context they build,
// progress on stderr, JSON results on --out or stdout, and the mapping of errors to exit codes
// (0 ok, 1 runtime failure, 2 bad usage or bad input).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dynascope/context.hpp"
#include "dynascope/dispatch.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/types.hpp"

namespace dynascope::cli {

using json = nlohmann::ordered_json;

struct CommonOptions {
  std::string backend = "auto";
  std::string dtype;         // float32 | float64; empty until resolve_dtype (default: the data's)
  std::string dtype_source;  // "--dtype", or the file or default it was taken from
  int threads = 0;
  std::uint64_t seed = 0;
  std::string out;
  std::string max_memory;
  bool quiet = false;
};

// Adds --backend --threads --out --max-memory --quiet to `cmd`, and --dtype --seed for commands
// that compute (`computes`).
void add_common_flags(CLI::App& cmd, CommonOptions& opts, bool computes = true);

// Numeric flag checks with readable messages ("--k: must be >= 1, got 0"). The finite_ variants
// also refuse NaN and infinity.
CLI::Validator at_least(long long min);
CLI::Validator in_range(long long min, long long max);
CLI::Validator finite_at_least(double min, bool open = false);  // open: > min
CLI::Validator finite_in_range(double min, double max, bool max_open = false);

// A flag that names an enum value takes the canonical names of its table (CLI11 refuses anything
// else with "X not in {a,b,c}"); help texts list them with choices(names), "a | b | c".
template <class E, std::size_t N>
CLI::IsMember one_of(const EnumNames<E, N>& names) {
  return CLI::IsMember(canonical_names(names));
}
template <class E, std::size_t N>
std::string choices(const EnumNames<E, N>& names) {
  return known_names(names, " | ");
}

// Precision follows the data: an explicit --dtype wins; otherwise float64 when any of `files`
// (weights, inputs, a matrix; not label files) holds float64 values, else float32. Sets opts.dtype
// and opts.dtype_source.
void resolve_dtype(CommonOptions& opts, const std::vector<std::string>& files);

// Whether the flag was given on the command line.
bool given(const CLI::App& cmd, const std::string& flag);
// UsageError when both flags were given: "--a and --b cannot be used together: why".
void refuse_together(const CLI::App& cmd, const std::string& a, const std::string& b, const std::string& why);
// UsageError when `flag` was given although `why_ignored` says it would have no effect.
void refuse_ignored(const CLI::App& cmd, const std::string& flag, const std::string& why_ignored);

// Every output file of a command is checked before any work starts (folder exists and takes new
// files, target not a folder or read-only); the message names the flag.
void check_output(const std::string& flag, const std::string& path);

// SIGINT / SIGTERM: remove the temporary files of writes in progress, say so, and end with the
// signal's usual status.
void install_signal_handlers();

// Context for the chosen backend, with the budget, threads and a stderr progress sink.
Context make_context(const CommonOptions& opts);
// A host context with the same threads, budget and sinks (for work on host memory, e.g. a kernel
// matrix, whatever the command's backend).
Context make_host_context(const CommonOptions& opts);
void attach_sinks(Context& ctx, const CommonOptions& opts);
DType parse_dtype(const std::string& flag_value);  // float32 | float64
std::size_t parse_bytes(const std::string& flag, const std::string& value);  // 123, 64M, 2G

// Error raised by a command for bad usage or bad input: exit code 2, message printed as is.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Adds command, backend, dtype, seconds and version, replaces NaN/Inf by null (listing them under
// "warnings", after the result's own "warnings" when it has them), and writes the object to opts.out (atomically) or stdout.
void emit_result(const std::string& command, const CommonOptions& opts, const Context& ctx, json result,
                 std::chrono::steady_clock::time_point start);

// Writes a progress line to stderr unless quiet.
void print_status(const CommonOptions& opts, const std::string& line);

// A subcommand: registers its flags on `app` and returns the function that runs it.
using CommandRunner = std::function<int()>;
struct Command {
  CLI::App* app;
  CommandRunner run;
};

Command register_info(CLI::App& app);
Command register_datasets(CLI::App& app);
Command register_train(CLI::App& app);
Command register_demo(CLI::App& app);
Command register_ntk(CLI::App& app);
Command register_eigen(CLI::App& app);
Command register_spectrum(CLI::App& app);
Command register_lc(CLI::App& app);
Command register_llc(CLI::App& app);
Command register_regions(CLI::App& app);
Command register_elasticity(CLI::App& app);
Command register_response(CLI::App& app);

}  // namespace dynascope::cli
