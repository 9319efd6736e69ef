// Philox streams: known answers, the documented counter layout, independence from launch shape
// and thread count, distribution moments, and our portable log/sin/cos against libm.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dynascope/error.hpp"
#include "dynascope/random.hpp"
#include "kernels/philox.cuh"

namespace dynascope {
namespace {

TEST(Philox, KnownAnswerVectorsOfRandom123) {
  struct Kat { std::uint32_t ctr[4], key[2], out[4]; };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}, {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}, {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    const std::uint64_t seed = (std::uint64_t(k.key[1]) << 32) | k.key[0];
    const std::uint64_t block = (std::uint64_t(k.ctr[1]) << 32) | k.ctr[0];
    const kern::PhiloxBlock b = kern::philox_block(seed, k.ctr[3], k.ctr[2], block);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(b.v[i], k.out[i]) << "word " << i;
  }
}

TEST(Philox, FillsFollowTheDocumentedCounterLayout) {
  Context ctx = Context::host();
  const random::Stream s{0x1234567890abcdefULL, 7, 3};
  std::vector<float> u(10);
  random::fill_uniform<float>(ctx, s, vector_view(u.data(), 10));
  for (std::uint64_t e = 0; e < 10; ++e) {
    const std::uint32_t w = kern::philox_block(s.seed, s.stream, s.step, e / 4).v[e % 4];
    EXPECT_EQ(u[e], float(w >> 8) * 0x1p-24f);
  }
  std::vector<double> r(9);
  random::fill_rademacher<double>(ctx, s, vector_view(r.data(), 9));
  for (std::uint64_t e = 0; e < 9; ++e) {
    const std::uint32_t w = kern::philox_block(s.seed, s.stream, s.step, e / 4).v[e % 4];
    EXPECT_EQ(r[e], (w >> 31) ? 1.0 : -1.0);
  }
}

TEST(Philox, RademacherFromAnOffsetFollowsTheLayoutAndPiecesMakeTheWhole) {
  const random::Stream s{0xfeedULL, 0x68757463u, 0};
  for (const std::uint64_t first : {0ull, 1ull, 2ull, 3ull, 4ull, 7ull, 4097ull, (1ull << 33) + 5}) {
    for (const index_t n : {1, 2, 3, 5, 8, 13}) {
      std::vector<double> r(std::size_t(n), 0.0);
      random::fill_rademacher<double>(Context::host(2), s, vector_view(r.data(), n), first);
      for (index_t i = 0; i < n; ++i) {
        const std::uint64_t e = first + std::uint64_t(i);
        const std::uint32_t w = kern::philox_block(s.seed, s.stream, s.step, e / 4).v[e % 4];
        ASSERT_EQ(r[std::size_t(i)], (w >> 31) ? 1.0 : -1.0) << "first " << first << " n " << n << " i " << i;
      }
    }
  }
  // Pieces of uneven sizes (not multiples of four) give the values of one call.
  std::vector<float> whole(1000), pieces(1000);
  random::fill_rademacher<float>(Context::host(2), s, vector_view(whole.data(), 1000));
  index_t at = 0;
  for (const index_t len : {3, 1, 250, 7, 739}) {
    random::fill_rademacher<float>(Context::host(1), s, vector_view(pieces.data() + at, len), std::uint64_t(at));
    at += len;
  }
  ASSERT_EQ(at, 1000);
  EXPECT_EQ(whole, pieces);
  std::vector<float> none;
  random::fill_rademacher<float>(Context::host(), s, vector_view(none.data(), 0), 5);   // an empty piece: no-op
}

TEST(Philox, DrawsDoNotDependOnThreadCountOrLength) {
  const random::Stream s{42, 1, 0};
  std::vector<double> a(50001), b(50001), c(1000);
  random::fill_normal<double>(Context::host(1), s, vector_view(a.data(), 50001));
  random::fill_normal<double>(Context::host(2), s, vector_view(b.data(), 50001));
  random::fill_normal<double>(Context::host(2), s, vector_view(c.data(), 1000));
  EXPECT_EQ(a, b);
  for (std::size_t i = 0; i < c.size(); ++i) ASSERT_EQ(a[i], c[i]);
}

TEST(Philox, StreamsAndStepsAreDistinct) {
  Context ctx = Context::host();
  std::vector<float> a(64), b(64), c(64);
  random::fill_uniform<float>(ctx, {5, 0, 0}, vector_view(a.data(), 64));
  random::fill_uniform<float>(ctx, {5, 1, 0}, vector_view(b.data(), 64));
  random::fill_uniform<float>(ctx, {5, 0, 1}, vector_view(c.data(), 64));
  int same_ab = 0, same_ac = 0;
  for (int i = 0; i < 64; ++i) {
    same_ab += a[std::size_t(i)] == b[std::size_t(i)];
    same_ac += a[std::size_t(i)] == c[std::size_t(i)];
  }
  EXPECT_LT(same_ab, 2);
  EXPECT_LT(same_ac, 2);
}

template <class T>
void check_normal_moments() {
  const index_t n = 400000;
  std::vector<T> x(static_cast<std::size_t>(n));
  random::fill_normal<T>(Context::host(), {9, 2, 5}, vector_view(x.data(), n), T(1.5), T(2));
  double m = 0, v = 0, k4 = 0;
  for (T xi : x) m += double(xi);
  m /= double(n);
  for (T xi : x) {
    const double d = double(xi) - m;
    v += d * d;
    k4 += d * d * d * d;
  }
  v /= double(n);
  k4 /= double(n);
  // Standard errors: mean 2/sqrt(n), variance 4*sqrt(2/n), kurtosis sqrt(24/n). Allow 5 sigma.
  EXPECT_NEAR(m, 1.5, 5 * 2 / std::sqrt(double(n)));
  EXPECT_NEAR(v, 4.0, 5 * 4 * std::sqrt(2.0 / double(n)));
  EXPECT_NEAR(k4 / (v * v), 3.0, 5 * std::sqrt(24.0 / double(n)));
}
TEST(Philox, NormalDrawsHaveTheRightMoments) {
  check_normal_moments<float>();
  check_normal_moments<double>();
}

TEST(Philox, UniformAndIntegerDrawsStayInRangeAndAreFlat) {
  Context ctx = Context::host();
  const index_t n = 200000;
  std::vector<double> u(static_cast<std::size_t>(n));
  random::fill_uniform<double>(ctx, {3, 0, 0}, vector_view(u.data(), n), -2.0, 3.0);
  double mean = 0;
  for (double x : u) {
    ASSERT_GE(x, -2.0);
    ASSERT_LT(x, 3.0);
    mean += x;
  }
  EXPECT_NEAR(mean / double(n), 0.5, 5 * 5 / std::sqrt(12.0 * double(n)));
  std::vector<std::int64_t> k(static_cast<std::size_t>(n));
  random::fill_integers(ctx, {3, 1, 0}, vector_view(k.data(), n), 7);
  std::vector<double> counts(7, 0);
  for (auto v : k) {
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 7);
    counts[std::size_t(v)] += 1;
  }
  // Chi-square with 6 degrees of freedom: 99.99% quantile is about 27.9.
  double chi2 = 0;
  for (double c : counts) chi2 += (c - double(n) / 7) * (c - double(n) / 7) / (double(n) / 7);
  EXPECT_LT(chi2, 27.9);
  std::vector<float> r(static_cast<std::size_t>(n));
  random::fill_rademacher<float>(ctx, {3, 2, 0}, vector_view(r.data(), n));
  double s = 0;
  for (float x : r) {
    ASSERT_TRUE(x == 1.0f || x == -1.0f);
    s += double(x);
  }
  EXPECT_LT(std::abs(s) / std::sqrt(double(n)), 5.0);
}

TEST(Philox, BadArgumentsAreRejected) {
  Context ctx = Context::host();
  std::vector<float> x(4);
  EXPECT_THROW(random::fill_uniform<float>(ctx, {}, vector_view(x.data(), 4), 1.0f, 1.0f), InvalidArgument);
  EXPECT_THROW(random::fill_normal<float>(ctx, {}, vector_view(x.data(), 4), 0.0f, -1.0f), InvalidArgument);
  std::vector<std::int64_t> k(4);
  EXPECT_THROW(random::fill_integers(ctx, {}, vector_view(k.data(), 4), 0), InvalidArgument);
}

TEST(PortableMath, LogMatchesLibmToTwoUlp) {
  for (int i = 1; i <= 200000; ++i) {
    const double x = double(i) / 200000.0 * (1 - 1e-17);
    const double ref = std::log(x);
    ASSERT_NEAR(kern::portable_log(x), ref, 2 * std::abs(ref) * 2.2e-16 + 1e-300) << x;
  }
  EXPECT_EQ(kern::portable_log(1.0), 0.0);
  EXPECT_NEAR(kern::portable_log(0x1p-53), -53 * std::log(2.0), 1e-13);
}

TEST(PortableMath, SinCosPiMatchLibm) {
  const double pi = std::acos(-1.0);
  for (int i = -100000; i <= 100000; ++i) {
    const double x = double(i) / 100000.0;
    double s, c;
    kern::portable_sincospi(x, &s, &c);
    ASSERT_NEAR(s, std::sin(pi * x), 1e-15) << x;
    ASSERT_NEAR(c, std::cos(pi * x), 1e-15) << x;
  }
}

}  // namespace
}  // namespace dynascope
