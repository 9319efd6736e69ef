#include "cli/common.hpp"

#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "dynascope/config.hpp"
#include "dynascope/error.hpp"
#include "dynascope/io.hpp"

namespace dynascope::cli {

namespace {

std::string number_text(double v) {
  std::ostringstream s;
  s.precision(12);
  s << v;
  return s.str();
}

template <class N>
std::optional<N> parse_number(const std::string& text) {
  N v{};
  if (!CLI::detail::lexical_cast(text, v)) return std::nullopt;
  return v;
}

// A decimal integer, refused when out of range (CLI11's own parser saturates, and reads a
// leading 0 as octal). Rewrites `text` to plain decimal, which is what CLI11 then reads.
std::optional<long long> parse_integer(std::string& text) {
  long long v = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  text = std::to_string(v);
  return v;
}

}  // namespace

CLI::Validator at_least(long long min) {
  return CLI::Validator(
      [min](std::string& text) -> std::string {
        const std::string given = text;
        const auto v = parse_integer(text);
        if (!v) return "expected an integer in range, got '" + given + "'";
        if (*v < min) return "must be >= " + std::to_string(min) + ", got " + text;
        return {};
      },
      "INT >= " + std::to_string(min));
}

CLI::Validator in_range(long long min, long long max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        const std::string given = text;
        const auto v = parse_integer(text);
        if (!v) return "expected an integer in range, got '" + given + "'";
        if (*v < min || *v > max)
          return "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " + text;
        return {};
      },
      "INT in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
}

CLI::Validator finite_at_least(double min, bool open) {
  const std::string rel = open ? "> " : ">= ";
  return CLI::Validator(
      [min, open, rel](std::string& text) -> std::string {
        const auto v = parse_number<double>(text);
        if (!v) return "expected a number, got '" + text + "'";
        if (!std::isfinite(*v)) return "must be finite, got " + text;
        if (open ? !(*v > min) : !(*v >= min)) return "must be " + rel + number_text(min) + ", got " + text;
        return {};
      },
      "NUMBER " + rel + number_text(min));
}

CLI::Validator finite_in_range(double min, double max, bool max_open) {
  const std::string range = "[" + number_text(min) + ", " + number_text(max) + (max_open ? ")" : "]");
  return CLI::Validator(
      [min, max, max_open, range](std::string& text) -> std::string {
        const auto v = parse_number<double>(text);
        if (!v) return "expected a number, got '" + text + "'";
        if (!std::isfinite(*v) || *v < min || (max_open ? *v >= max : *v > max))
          return "must be in " + range + ", got " + text;
        return {};
      },
      "NUMBER in " + range);
}

bool given(const CLI::App& cmd, const std::string& flag) {
  const CLI::Option* o = cmd.get_option_no_throw(flag);
  return o != nullptr && o->count() > 0;
}

void refuse_together(const CLI::App& cmd, const std::string& a, const std::string& b, const std::string& why) {
  if (!given(cmd, a) || !given(cmd, b)) return;
  // Options with a value are named with it ("--outputs diagonal"), flags as they are.
  const auto shown = [&](const std::string& flag) {
    const CLI::Option* o = cmd.get_option_no_throw(flag);
    if (o == nullptr || o->get_type_size() == 0 || o->results().size() != 1) return flag;
    return flag + " " + o->results().front();
  };
  throw UsageError(shown(a) + " and " + shown(b) + " cannot be used together: " + why);
}

void refuse_ignored(const CLI::App& cmd, const std::string& flag, const std::string& why_ignored) {
  if (given(cmd, flag)) throw UsageError(flag + " has no effect here: " + why_ignored);
}

void check_output(const std::string& flag, const std::string& path) {
  if (path.empty()) return;
  try {
    io::check_writable(path);
  } catch (const Error& e) {
    throw UsageError(flag + ": " + e.what());
  }
}

namespace {

// The precision an array or weights file asks for: f64 when it holds float64 values, else f32;
// nothing when the file cannot be read this way (the real reader reports that later).
struct DtypeHint {
  DType dtype;
  std::string what;  // e.g. "float64 .npy", "F64 safetensors"
};

std::optional<DtypeHint> dtype_hint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  unsigned char head[12] = {};
  f.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = static_cast<std::size_t>(f.gcount());
  if (got >= 10 && std::memcmp(head, "\x93NUMPY", 6) == 0) {
    const std::size_t len = head[6] == 1 ? std::size_t(head[8]) | std::size_t(head[9]) << 8
                                         : (got >= 12 ? std::size_t(head[8]) | std::size_t(head[9]) << 8 |
                                                            std::size_t(head[10]) << 16 | std::size_t(head[11]) << 24
                                                      : 0);
    if (len == 0 || len > (1u << 20)) return std::nullopt;
    std::string header(len, '\0');
    f.seekg(head[6] == 1 ? 10 : 12);
    f.read(header.data(), std::streamsize(len));
    const auto at = header.find("descr");
    if (at == std::string::npos) return std::nullopt;
    const auto q = header.find_first_of("'\"", header.find(':', at));
    if (q == std::string::npos || q + 3 >= header.size()) return std::nullopt;
    const std::string descr = header.substr(q + 1, 3);  // e.g. <f8
    const char kind = descr[1], size = descr[2];
    const bool wide = kind == 'f' && size == '8';
    return DtypeHint{wide ? DType::f64 : DType::f32, std::string(".npy '") + descr + "'"};
  }
  if (got >= 4 && head[0] == 0 && head[1] == 0) {  // IDX: type code in byte 2
    const unsigned char code = head[2];
    const bool wide = code == 0x0E;  // float64
    return DtypeHint{wide ? DType::f64 : DType::f32, "IDX"};
  }
  if (got >= 8) {  // safetensors: u64 header length, then a JSON header with each tensor's dtype
    std::uint64_t n = 0;
    std::memcpy(&n, head, 8);
    if (n < 2 || n > (std::uint64_t{100} << 20)) return std::nullopt;
    std::string header(static_cast<std::size_t>(n), '\0');
    f.seekg(8);
    f.read(header.data(), std::streamsize(n));
    if (f.gcount() != std::streamsize(n) || header[0] != '{') return std::nullopt;
    const auto j = nlohmann::json::parse(header, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    bool f64 = false, any = false;
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "__metadata__" || !it.value().is_object() || !it.value().contains("dtype")) continue;
      any = true;
      if (it.value()["dtype"] == "F64") f64 = true;
    }
    if (!any) return std::nullopt;
    return DtypeHint{f64 ? DType::f64 : DType::f32, f64 ? "F64 safetensors" : "safetensors"};
  }
  return std::nullopt;
}

}  // namespace

void resolve_dtype(CommonOptions& opts, const std::vector<std::string>& files) {
  if (!opts.dtype.empty()) {
    opts.dtype_source = "--dtype";
    return;
  }
  for (const std::string& path : files) {
    if (path.empty()) continue;
    const auto hint = dtype_hint(path);
    if (hint && hint->dtype == DType::f64) {
      opts.dtype = "float64";
      opts.dtype_source = path + " (" + hint->what + ")";
      return;
    }
  }
  opts.dtype = "float32";
  opts.dtype_source = "default (no float64 input)";
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = [](int sig) {
    io::remove_temporary_files();
    static const char msg[] = "\ndynascope: interrupted; partial output removed\n";
    [[maybe_unused]] const ssize_t w = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    // Die by the signal itself, so the caller sees the usual status (130 for Ctrl-C).
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  };
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGHUP, &sa, nullptr);
}

void add_common_flags(CLI::App& cmd, CommonOptions& opts, bool computes) {
  cmd.add_option("--backend", opts.backend, "auto: cuda when built and a device is usable, else host")
      ->check(CLI::IsMember({"auto", "host", "cuda"}))
      ->capture_default_str();
  cmd.add_option("--threads", opts.threads, "host threads, 0..4096 (0 = all cores)")->check(in_range(0, 4096));
  cmd.add_option("--out", opts.out, "result JSON file (default: stdout), written atomically");
  cmd.add_option("--max-memory", opts.max_memory,
                 "workspace budget in bytes (suffixes K, M, G); large problems tile instead of failing");
  cmd.add_flag("--quiet", opts.quiet, "no progress on stderr");
  if (!computes) return;
  cmd.add_option("--dtype", opts.dtype,
                 "compute precision: float32 | float64 (default: float64 when a weights or data file holds float64, "
                 "else float32)")
      ->check(CLI::IsMember({"float32", "float64"}));
  cmd.add_option("--seed", opts.seed, "every random choice is a function of this seed (0 .. 2^64-1)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
              return "expected a non-negative integer, got '" + text + "'";
            return {};
          },
          "UINT64"))
      ->capture_default_str();
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
      if (st.device_count == 0) throw UsageError("--backend cuda: no usable CUDA device: " + st.reason);
      return Context::cuda(0);
    }
    return Context::automatic(opts.threads);
  }();
  attach_sinks(ctx, opts);
  return ctx;
}

Context make_host_context(const CommonOptions& opts) {
  Context ctx = Context::host(opts.threads);
  attach_sinks(ctx, opts);
  return ctx;
}

void attach_sinks(Context& ctx, const CommonOptions& opts) {
  if (!opts.max_memory.empty()) ctx.set_workspace_budget(parse_bytes("--max-memory", opts.max_memory));
  if (!opts.quiet) {
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    struct State {
      int pct = -1;
      std::chrono::steady_clock::time_point at{};
      std::size_t width = 0;
    };
    auto state = std::make_shared<State>();
    ctx.set_progress_sink([tty, state](std::string_view task, index_t done, index_t total) {
      const int pct = total > 0 ? static_cast<int>(100 * done / total) : 100;
      const auto now = std::chrono::steady_clock::now();
      const double since = std::chrono::duration<double>(now - state->at).count();
      // On a terminal redraw in place (at most 10 times a second); in a log write a line every
      // 10 %, and every 5 s on long phases whose percentage moves slowly (Lanczos restarts).
      const bool last = done == total;
      if (!last) {
        if (tty && since < 0.1) return;
        if (!tty && pct / 10 == state->pct / 10 && since < 5.0) return;
      }
      state->pct = pct;
      state->at = now;
      std::string line(task);
      line += " " + std::to_string(done) + "/" + std::to_string(total) + " (" + std::to_string(pct) + "%)";
      if (tty) {
        const std::size_t pad = state->width > line.size() ? state->width - line.size() : 0;
        state->width = line.size();
        std::fprintf(stderr, "\r%s%s%s", line.c_str(), std::string(pad, ' ').c_str(), last ? "\n" : "");
      } else {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
      std::fflush(stderr);
      if (last) *state = State{};
    });
    ctx.set_log_sink([](LogLevel level, std::string_view m) {
      if (level == LogLevel::debug) return;
      std::fprintf(stderr, "%s%.*s\n", level == LogLevel::warning ? "warning: " : "", static_cast<int>(m.size()),
                   m.data());
    });
  }
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
  if (!opts.dtype.empty()) out["dtype"] = opts.dtype;
  if (!opts.dtype_source.empty()) out["dtype_source"] = opts.dtype_source;
  out["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto it = result.begin(); it != result.end(); ++it) out[it.key()] = it.value();
  // The command's own warnings (said in words) come first; every NaN or infinity nulled is added.
  std::vector<std::string> warnings;
  if (out.contains("warnings") && out["warnings"].is_array())
    for (const auto& w : out["warnings"]) warnings.push_back(w.is_string() ? w.get<std::string>() : w.dump());
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
