#pragma once
// One test source for both backends (Ginkgo's pattern). A suite's fixture derives from
// BackendTest, its cases are TEST_P, and DYNASCOPE_BACKEND_TESTS(Suite) instantiates them as
//   Suite.Case/host   on Context::host(2) (two threads, so the threaded paths run), and
//   Suite.Case/cuda   on Context::cuda(0), skipped in SetUp when no device is usable.
// Each case compares what its backend computes with an oracle computed another way on the host
// (naive float64 loops, a closed form, a dense Jacobi eigensolver), never with the other backend,
// so the host case is checked on every machine and the cuda case wherever a GPU is.
// tests/CMakeLists.txt registers every case whose name ends in /cuda with the ctest label `gpu`.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"

namespace dynascope {
// gtest prints a case's parameter with this ("GetParam() = cuda" in failure messages).
inline void PrintTo(Backend backend, std::ostream* os) { *os << to_string(backend); }
}  // namespace dynascope

namespace dynascope::test {

class BackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  // Skips the cuda case (reported SKIPPED, never PASSED) when no device is usable, then makes
  // the case's context.
  void SetUp() override;

  Backend backend() const { return GetParam(); }
  // This case's context: Context::host(2) or Context::cuda(0).
  const Context& ctx() const { return *ctx_; }
  // Another context of this case's backend with settings of its own (a context is a handle to
  // shared resources: a workspace budget set on a copy of ctx() would change ctx() too).
  Context new_context() const;

  // The host context oracles and host-side buffers use.
  Context host = Context::host();

 private:
  std::optional<Context> ctx_;
};

// "host" / "cuda": the case names DYNASCOPE_BACKEND_TESTS gives.
std::string backend_case_name(const ::testing::TestParamInfo<Backend>& info);

// n values uniform in [-1, 1) from mt19937_64(seed): the same numbers as random_array.
template <class T>
std::vector<T> random_values(index_t n, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(dist(gen));
  return v;
}

// ---- host copies of views and strided layouts ----

// The rows x cols elements of a view on ctx's backend (any leading dimension), row-major.
template <class T>
std::vector<std::remove_const_t<T>> to_vector(const Context& ctx, MatrixView<T> v) {
  using U = std::remove_const_t<T>;
  std::vector<U> out(static_cast<std::size_t>(v.rows * v.cols));
  if (!out.empty())
    copy<U>(ctx, MatrixView<const U>{v.data, v.rows, v.cols, v.ld, v.backend}, MatrixView<U>{out.data(), v.rows, v.cols, v.cols});
  return out;
}

// A quiet NaN of T: the default padding of strided inputs, so that a kernel that reads past a
// row's end poisons its result instead of passing by luck.
template <class T>
constexpr T kNaN = std::numeric_limits<T>::quiet_NaN();
// The padding of strided outputs: a value no computation here produces, checked unchanged.
template <class T>
constexpr T kSentinel = T(-777.25);

// `dense` (rows x cols, row-major) stored with leading dimension ld >= cols, the padding filled
// with `pad`.
template <class T>
std::vector<T> with_ld(const std::vector<T>& dense, index_t rows, index_t cols, index_t ld, T pad = kNaN<T>) {
  std::vector<T> out(static_cast<std::size_t>(rows * ld), pad);
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) out[std::size_t(i * ld + j)] = dense[std::size_t(i * cols + j)];
  return out;
}
// The rows x cols values of a buffer stored with leading dimension ld.
template <class T>
std::vector<T> without_ld(const std::vector<T>& stored, index_t rows, index_t cols, index_t ld) {
  std::vector<T> out(static_cast<std::size_t>(rows * cols));
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) out[std::size_t(i * cols + j)] = stored[std::size_t(i * ld + j)];
  return out;
}
// Elements of a leading-dimension-ld buffer past each row's cols that no longer hold `pad`, bit
// for bit (so a NaN padding counts as kept).
template <class T>
index_t padding_changed(const std::vector<T>& stored, index_t rows, index_t cols, index_t ld, T pad = kSentinel<T>) {
  index_t changed = 0;
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = cols; j < ld; ++j)
      changed += std::memcmp(&stored[std::size_t(i * ld + j)], &pad, sizeof(T)) != 0;
  return changed;
}
// A rows x cols view of an array [rows, ld] (ld >= cols): a strided matrix.
template <class T>
MatrixView<T> strided(Array<T>& a, index_t cols) {
  return {a.data(), a.dim(0), cols, a.dim(1), a.backend()};
}
template <class T>
MatrixView<const T> strided(const Array<T>& a, index_t cols) {
  return {a.data(), a.dim(0), cols, a.dim(1), a.backend()};
}

// Largest |a_i - b_i| / max(1, |b_i|) over the entries where both are finite, and the count of
// entries where exactly one of them is not: for per-sample outputs with poisoned samples.
struct FiniteDiff {
  double max_rel = 0;
  index_t finiteness_mismatches = 0;
};
template <class T, class U>
FiniteDiff max_rel_diff_finite(const T* a, const U* b, index_t n) {
  FiniteDiff r;
  for (index_t i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (std::isfinite(x) != std::isfinite(y)) {
      ++r.finiteness_mismatches;
    } else if (std::isfinite(x)) {
      r.max_rel = std::max(r.max_rel, std::abs(x - y) / std::max(1.0, std::abs(y)));
    }
  }
  return r;
}

}  // namespace dynascope::test

// Runs every TEST_P of `fixture` (derived from dynascope::test::BackendTest) on host and on cuda,
// named fixture.Case/host and fixture.Case/cuda.
#define DYNASCOPE_BACKEND_TESTS(fixture)                                                               \
  INSTANTIATE_TEST_SUITE_P(, fixture, ::testing::Values(::dynascope::Backend::host, ::dynascope::Backend::cuda), \
                           ::dynascope::test::backend_case_name)
