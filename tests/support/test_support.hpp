#pragma once
// Shared helpers for the test suites: contexts for each backend, a fixture that skips GPU cases
// when no device is usable, and naive float64 references. One test source for both backends:
// backend_test.hpp (fixture), naive_mlp.hpp and reference.hpp (oracles).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"

namespace dynascope::test {

// Cuda-only test cases derive from this fixture: SetUp skips (reported as SKIPPED by ctest) when
// no CUDA device is usable, so a GPU test never passes without having run. A test that should run
// on both backends uses BackendTest (backend_test.hpp) instead.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override;
  Context host = Context::host();
  Context cuda() const;  // a fresh cuda context on device 0
};

// A host array filled with deterministic pseudo-random values in [-1, 1).
template <class T>
Array<T> random_array(const Context& host, Shape shape, unsigned seed);

// Largest |a_i - b_i| / max(1, |b_i|); NaN as soon as one difference is NaN (a NaN in either, or
// infinities of one sign), so that EXPECT_LT(max_rel_diff(...), tol) fails on it: std::max would
// silently drop a NaN given as its second argument.
template <class T, class U>
double max_rel_diff(const T* a, const U* b, index_t n) {
  double m = 0;
  for (index_t i = 0; i < n; ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i]));
    if (std::isnan(d)) return d;
    m = std::max(m, d / std::max(1.0, std::abs(static_cast<double>(b[i]))));
  }
  return m;
}

// Expects `f` to throw E whose message contains every phrase.
template <class E, class F>
void expect_error(F&& f, const std::vector<std::string>& phrases) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one containing '" << phrases.front() << "'";
  } catch (const E& e) {
    const std::string m = e.what();
    for (const auto& p : phrases) EXPECT_NE(m.find(p), std::string::npos) << "message lacks '" << p << "': " << m;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

// A unique path in the test's temporary directory.
std::string temp_path(const std::string& name);

}  // namespace dynascope::test
