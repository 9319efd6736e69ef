#include "cli/common.hpp"

#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>

#include "dynascope/config.hpp"
#include "dynascope/error.hpp"
#include "dynascope/io.hpp"

namespace dynascope::cli {

void add_common_flags(CLI::App& cmd, CommonOptions& opts) {
  cmd.add_option("--backend", opts.backend, "auto: cuda when built and a device is usable, else host")
      ->check(CLI::IsMember({"auto", "host", "cuda"}))
      ->capture_default_str();
  cmd.add_option("--dtype", opts.dtype, "compute precision")
      ->check(CLI::IsMember({"float32", "float64"}))
      ->capture_default_str();
  cmd.add_option("--threads", opts.threads, "host threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  cmd.add_option("--seed", opts.seed, "every random choice is a function of this seed")->capture_default_str();
  cmd.add_option("--out", opts.out, "result JSON file (default: stdout)");
  cmd.add_option("--max-memory", opts.max_memory,
                 "workspace budget in bytes (suffixes K, M, G); large problems tile instead of failing");
  cmd.add_flag("--quiet", opts.quiet, "no progress on stderr");
}

DType parse_dtype(const std::string& v) {
  if (v == "float32") return DType::f32;
  if (v == "float64") return DType::f64;
  throw UsageError("--dtype: expected float32 or float64, got '" + v + "'");
}

std::size_t parse_bytes(const std::string& flag, const std::string& value) {
  std::size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(value, &pos);
  } catch (const std::exception&) {
    throw UsageError(flag + ": expected a byte count such as 512M or 2G, got '" + value + "'");
  }
  std::string suffix = value.substr(pos);
  double mult = 1;
  if (suffix == "K" || suffix == "k" || suffix == "KB") mult = 1024.0;
  else if (suffix == "M" || suffix == "MB") mult = 1024.0 * 1024;
  else if (suffix == "G" || suffix == "GB") mult = 1024.0 * 1024 * 1024;
  else if (!suffix.empty()) throw UsageError(flag + ": unknown size suffix '" + suffix + "' (use K, M or G)");
  if (!(x > 0) || !std::isfinite(x * mult) || x * mult > 1e18)
    throw UsageError(flag + ": expected a positive byte count, got '" + value + "'");
  return static_cast<std::size_t>(x * mult);
}

Context make_context(const CommonOptions& opts) {
  if (opts.threads > 0) omp_set_num_threads(opts.threads);
  Context ctx = [&] {
    if (opts.backend == "host") return Context::host(opts.threads);
    if (opts.backend == "cuda") {
      const CudaStatus st = cuda_status();
      if (!st.built) throw UsageError("--backend cuda: this dynascope was built without CUDA");
      if (st.device_count == 0) throw UsageError("--backend cuda: no usable CUDA device (" + st.reason + ")");
      return Context::cuda(0);
    }
    return Context::automatic(opts.threads);
  }();
  if (!opts.max_memory.empty()) ctx.set_workspace_budget(parse_bytes("--max-memory", opts.max_memory));
  if (!opts.quiet) {
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    auto last = std::make_shared<int>(-1);
    ctx.set_progress_sink([tty, last](std::string_view task, index_t done, index_t total) {
      const int pct = total > 0 ? static_cast<int>(100 * done / total) : 100;
      // On a terminal redraw in place; in a log write a line every 10%.
      if (!tty && pct / 10 == *last / 10 && done != total) return;
      *last = pct;
      std::fprintf(stderr, "%s%.*s %lld/%lld (%d%%)%s", tty ? "\r" : "", static_cast<int>(task.size()), task.data(),
                   static_cast<long long>(done), static_cast<long long>(total), pct,
                   (!tty || done == total) ? "\n" : "");
      std::fflush(stderr);
      if (done == total) *last = -1;
    });
    ctx.set_log_sink([](LogLevel level, std::string_view m) {
      if (level == LogLevel::debug) return;
      std::fprintf(stderr, "%s%.*s\n", level == LogLevel::warning ? "warning: " : "", static_cast<int>(m.size()),
                   m.data());
    });
  }
  return ctx;
}

namespace {
void replace_non_finite(json& j, const std::string& path, std::vector<std::string>& warnings) {
  if (j.is_number_float()) {
    const double v = j.get<double>();
    if (!std::isfinite(v)) {
      warnings.push_back(path + " is " + (std::isnan(v) ? "NaN" : "infinite") + " (written as null)");
      j = nullptr;
    }
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) replace_non_finite(it.value(), path + "." + it.key(), warnings);
  } else if (j.is_array()) {
    for (std::size_t i = 0; i < j.size(); ++i) replace_non_finite(j[i], path + "[" + std::to_string(i) + "]", warnings);
  }
}
}  // namespace

void emit_result(const std::string& command, const CommonOptions& opts, const Context& ctx, json result,
                 std::chrono::steady_clock::time_point start) {
  json out;
  out["command"] = command;
  out["version"] = DYNASCOPE_VERSION_STRING;
  out["backend"] = to_string(ctx.backend());
  out["dtype"] = opts.dtype;
  out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto it = result.begin(); it != result.end(); ++it) out[it.key()] = it.value();
  std::vector<std::string> warnings;
  replace_non_finite(out, "$", warnings);
  if (!warnings.empty()) out["warnings"] = warnings;
  const std::string text = out.dump(2) + "\n";
  if (opts.out.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  } else {
    io::write_text_atomic(opts.out, text);
  }
}

void print_status(const CommonOptions& opts, const std::string& line) {
  if (opts.quiet) return;
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace dynascope::cli
