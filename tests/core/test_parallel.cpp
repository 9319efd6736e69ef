#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

// Host contexts only (the cuda twins are in test_gpu_equivalence.cpp, compiled by nvcc).
#define DYNASCOPE_HOST_LAUNCH_ONLY
#include "kernels/launch.cuh"

namespace dynascope {
namespace {

struct Axpby {
  const double* x;
  double* y;
  double a, b;
  DYNASCOPE_HD void operator()(index_t i) const { y[i] = a * x[i] + b * y[i]; }
};

TEST(ParallelFor, VisitsEveryIndexExactlyOnceForAnySizeAndThreadCount) {
  for (int threads : {1, 2, 3}) {
    Context ctx = Context::host(threads);
    for (index_t n : {0, 1, 17, 2047, 2048, 100003}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      kern::parallel_for(ctx, n, [&](index_t i) { hits[std::size_t(i)].fetch_add(1); });
      for (index_t i = 0; i < n; ++i) ASSERT_EQ(hits[std::size_t(i)].load(), 1) << "n " << n << " i " << i;
    }
  }
}

TEST(ParallelFor, FunctorBodyMatchesSerialLoop) {
  Context ctx = Context::host();
  const index_t n = 12345;
  const auto un = static_cast<std::size_t>(n);
  std::vector<double> x(un), y(un), ref(un);
  for (index_t i = 0; i < n; ++i) {
    x[std::size_t(i)] = 0.5 * double(i);
    y[std::size_t(i)] = 1.0 / double(i + 1);
    ref[std::size_t(i)] = 2.0 * x[std::size_t(i)] - 3.0 * y[std::size_t(i)];
  }
  kern::parallel_for(ctx, n, Axpby{x.data(), y.data(), 2.0, -3.0});
  EXPECT_EQ(y, ref);
}

TEST(ParallelFor, UsesTheRequestedNumberOfThreads) {
  Context ctx = Context::host(2);
  std::vector<std::atomic<int>> seen(64);
  kern::parallel_for(ctx, 1 << 16, [&](index_t) { seen[std::size_t(omp_get_thread_num())].store(1); });
  int count = 0;
  for (auto& s : seen) count += s.load();
  EXPECT_LE(count, 2);
  EXPECT_GE(count, 1);
}

// reduce_sum's documented order: items added left to right within blocks of kReduceBlock, the block
// sums added in block order. That one number comes back for every thread count (the OpenMP split
// of the blocks changes with it, the arithmetic must not).
TEST(ReduceSum, IsTheDocumentedBlockedSumForEveryThreadCount) {
  const index_t n = 3 * kern::kReduceBlock + 17;
  // Twelve decades of magnitudes and both signs: a different order gives a different sum.
  const auto body = [](index_t i) { return std::ldexp(std::sin(double(i)), int(i % 41) - 20); };
  double blocked = 0, sequential = 0;
  for (index_t b0 = 0; b0 < n; b0 += kern::kReduceBlock) {
    double s = 0;
    for (index_t i = b0; i < std::min(n, b0 + kern::kReduceBlock); ++i) s += body(i);
    blocked += s;
  }
  for (index_t i = 0; i < n; ++i) sequential += body(i);
  ASSERT_NE(blocked, sequential) << "the data cannot tell summation orders apart";
  for (int threads : {1, 2, 3}) EXPECT_EQ(kern::reduce_sum(Context::host(threads), n, body), blocked) << threads << " threads";
}

}  // namespace
}  // namespace dynascope
