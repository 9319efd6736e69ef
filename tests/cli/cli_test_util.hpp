#pragma once
// Runs the built dynascope executable (DYNASCOPE_CLI, set by tests/cli/CMakeLists.txt) with
// arguments and returns its exit code, stdout and stderr.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "dynascope/io.hpp"
#include "support/test_support.hpp"

namespace dynascope::test {

struct CliResult {
  int exit_code = -1;  // the process's exit status; 128 + N when killed by signal N
  std::string out, err;

  // stdout parsed as the command's JSON result (a test failure, and null, when it is not JSON).
  nlohmann::json json() const {
    const auto j = nlohmann::json::parse(out, nullptr, false);
    if (j.is_discarded()) ADD_FAILURE() << "stdout is not JSON: " << out << "\nstderr: " << err;
    return j.is_discarded() ? nlohmann::json() : j;
  }
};

// For failure messages: the whole run.
inline std::ostream& operator<<(std::ostream& os, const CliResult& r) {
  return os << "exit " << r.exit_code << "\n--- stdout ---\n" << r.out << "\n--- stderr ---\n" << r.err;
}

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A text file's lines, and one CSV line's comma-separated fields (no quoting).
inline std::vector<std::string> lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) out.push_back(line);
  return out;
}
inline std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream s(line);
  for (std::string f; std::getline(s, f, ',');) out.push_back(f);
  return out;
}

// dynascope ARGS..., with stdin closed and stdout / stderr captured through files.
inline CliResult run(const std::vector<std::string>& args) {
  const std::string out = temp_path("cli.out"), err = temp_path("cli.err");
  // One piece at a time: GCC 12 warns, falsely, about chains of string + (-Wrestrict).
  std::string cmd = shell_quote(DYNASCOPE_CLI);
  for (const std::string& a : args) {
    cmd += ' ';
    cmd += shell_quote(a);
  }
  cmd += " </dev/null >";
  cmd += shell_quote(out);
  cmd += " 2>";
  cmd += shell_quote(err);
  const int status = std::system(cmd.c_str());
  CliResult r;
  if (status != -1 && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  else if (status != -1 && WIFSIGNALED(status)) r.exit_code = 128 + WTERMSIG(status);
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

// Writes values as a .npy of the given shape in the test's temporary directory; returns its path.
template <class T>
std::string npy(const std::string& name, std::vector<T> values, Shape shape) {
  const std::string path = temp_path(name);
  io::write_npy(path, io::Tensor::from(values.data(), std::move(shape)));
  return path;
}

// Expects exit code 2 (bad usage or input) and every phrase in stderr.
inline void expect_usage_error(const CliResult& r, const std::vector<std::string>& phrases) {
  EXPECT_EQ(r.exit_code, 2) << r;
  for (const std::string& p : phrases) EXPECT_NE(r.err.find(p), std::string::npos) << "stderr lacks '" << p << "'\n" << r;
  // Messages are for people: no 20-digit numbers (a type's limits printed as a range).
  std::size_t run_length = 0, longest = 0;
  for (char c : r.err) {
    run_length = (c >= '0' && c <= '9') ? run_length + 1 : 0;
    longest = std::max(longest, run_length);
  }
  EXPECT_LT(longest, 16u) << "a number of " << longest << " digits in stderr\n" << r;
}

}  // namespace dynascope::test
