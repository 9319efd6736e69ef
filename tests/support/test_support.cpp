#include "support/test_support.hpp"

#include "support/backend_test.hpp"

#include <atomic>
#include <filesystem>
#include <random>
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

std::string temp_path(const std::string& name) {
  static std::atomic<int> counter{0};
  const auto dir = std::filesystem::temp_directory_path() / ("dynascope_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / (std::to_string(counter++) + "_" + name)).string();
}

}  // namespace dynascope::test
