#include "support/test_support.hpp"

#include "support/backend_test.hpp"

#include <atomic>
#include <filesystem>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <unistd.h>

namespace dynascope::test {

void GpuTest::SetUp() {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_status().reason;
}

Context GpuTest::cuda() const { return Context::cuda(0); }

void BackendTest::SetUp() {
  if (backend() == Backend::cuda && !cuda_available())
    GTEST_SKIP() << "no usable CUDA device: " << cuda_status().reason;
  ctx_ = new_context();
}

// Two host threads, so that the OpenMP paths run even where ctest sets OMP_NUM_THREADS=1.
Context BackendTest::new_context() const { return backend() == Backend::cuda ? Context::cuda(0) : Context::host(2); }

std::string backend_case_name(const ::testing::TestParamInfo<Backend>& info) { return to_string(info.param); }

template <class T>
Array<T> random_array(const Context& host, Shape shape, unsigned seed) {
  Array<T> a(host, std::move(shape));
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (index_t i = 0; i < a.size(); ++i) a.data()[i] = static_cast<T>(dist(gen));
  return a;
}
template Array<float> random_array<float>(const Context&, Shape, unsigned);
template Array<double> random_array<double>(const Context&, Shape, unsigned);

namespace {

// This process's own temporary folder, made by mkdtemp (a name no other process has, even one that
// reuses this pid: a folder named by the pid alone could hold a file left by an earlier test, which
// broke "nothing under the name before commit" checks), and removed when the process exits.
// (Never destroyed, so that the exit handler can still read it.)
const std::filesystem::path& temp_dir() {
  static const std::filesystem::path* const dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "dynascope_test_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    auto* made = new std::filesystem::path(pattern);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(temp_dir(), ec);
    });
    return made;
  }();
  return *dir;
}

}  // namespace

std::string temp_path(const std::string& name) {
  static std::atomic<int> counter{0};
  return (temp_dir() / (std::to_string(counter++) + "_" + name)).string();
}

}  // namespace dynascope::test
