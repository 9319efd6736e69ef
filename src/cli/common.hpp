#pragma once
// What every dynascope subcommand shares: the common flags of IO.md, the context they build,
// progress on stderr, JSON results on --out or stdout, and the mapping of errors to exit codes
// (0 ok, 1 runtime failure, 2 bad usage or bad input).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "dynascope/context.hpp"
#include "dynascope/types.hpp"

namespace dynascope::cli {

using json = nlohmann::ordered_json;

struct CommonOptions {
  std::string backend = "auto";
  std::string dtype = "float32";
  int threads = 0;
  std::uint64_t seed = 0;
  std::string out;
  std::string max_memory;
  bool quiet = false;
};

// Adds --backend --dtype --threads --seed --out --max-memory --quiet to `cmd`.
void add_common_flags(CLI::App& cmd, CommonOptions& opts);

// Context for the chosen backend, with the budget, threads and a stderr progress sink.
Context make_context(const CommonOptions& opts);
DType parse_dtype(const std::string& flag_value);  // float32 | float64
std::size_t parse_bytes(const std::string& flag, const std::string& value);  // 123, 64M, 2G

// Error raised by a command for bad usage or bad input: exit code 2, message printed as is.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Adds command, backend, dtype, seconds and version, replaces NaN/Inf by null (listing them under
// "warnings"), and writes the object to opts.out (atomically) or stdout.
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

}  // namespace dynascope::cli
