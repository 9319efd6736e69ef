// The many-blocks Philox normals (core/philox_simd.cpp) against their definition,
// kern::philox_normal (kernels/philox.cuh), bit for bit: every comparison is a memcmp, no
// tolerance. The AVX2 path is also taken apart (Philox words, log, sin/cos, the Box-Muller step on
// chosen words) to reach the inputs random counters almost never produce: u1 = 1 and u1 = 2^-53,
// both sides of the sqrt(2) mantissa select, and every quadrant boundary of sincospi.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/philox_simd.hpp"
#include "dynascope/error.hpp"
#include "kernels/philox.cuh"

namespace dynascope {
namespace {

constexpr std::uint64_t kTwo32 = std::uint64_t{1} << 32;

bool same_bits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

// Where two arrays first differ, with both values in hex, for the failure message.
std::string first_difference(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return "sizes " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(double)) != 0) {
      std::ostringstream os;
      os << "first difference at [" << i << "]: got " << std::hexfloat << got[i] << ", want " << want[i] << " ("
         << std::defaultfloat << std::setprecision(17) << got[i] << " vs " << want[i] << ")";
      return os.str();
    }
  }
  return "no difference";
}

#define EXPECT_SAME_BITS(got, want) EXPECT_TRUE(same_bits(got, want)) << first_difference(got, want)

// The definition: element e = 2 b of block b is the cosine branch, e + 1 the sine branch.
inline void fill_reference(std::uint64_t seed, std::uint32_t stream, std::uint32_t step, std::uint64_t first,
                           index_t blocks, double* out) {
  for (index_t i = 0; i < blocks; ++i) {
    const std::uint64_t e = 2 * (first + std::uint64_t(i));
    out[2 * i] = kern::philox_normal(seed, stream, step, e);
    out[2 * i + 1] = kern::philox_normal(seed, stream, step, e + 1);
  }
}

// Built for the x86-64 baseline, where each fma() is a libm call.
std::vector<double> reference_pairs(std::uint64_t seed, std::uint32_t stream, std::uint32_t step, std::uint64_t first,
                                    index_t blocks) {
  std::vector<double> r(static_cast<std::size_t>(2 * blocks));
  fill_reference(seed, stream, step, first, blocks, r.data());
  return r;
}

#if defined(__x86_64__) && defined(__GNUC__)
// Built for AVX2+FMA (as the SGLD host loop is), where each fma() is one instruction: the same
// bits (this file is compiled with -ffp-contract=off), several times faster than the libm calls,
// so the long runs below fit in the test's time.
__attribute__((target("avx2,fma"))) std::vector<double> reference_pairs_fma(std::uint64_t seed, std::uint32_t stream,
                                                                            std::uint32_t step, std::uint64_t first,
                                                                            index_t blocks) {
  std::vector<double> r(static_cast<std::size_t>(2 * blocks));
  fill_reference(seed, stream, step, first, blocks, r.data());
  return r;
}
#else
std::vector<double> reference_pairs_fma(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                        std::uint64_t first, index_t blocks) {
  return reference_pairs(seed, stream, step, first, blocks);
}
#endif

// philox_normal's Box-Muller step applied to given words (for words no counter is known to give);
// PairFromWordsMatchesPhiloxNormal checks this copy against philox_normal itself.
void reference_pair_from_words(const std::uint32_t* v, double* out) {
  const double u1 = 1.0 - kern::u64_to_unit_double(v[0], v[1]);
  const double u2 = kern::u64_to_unit_double(v[2], v[3]);
  const double radius = std::sqrt(-2.0 * kern::portable_log(u1));
  double s, c;
  kern::portable_sincospi(fma(2.0, u2, -1.0), &s, &c);
  out[0] = radius * c;
  out[1] = radius * s;
}

using PairsFn = void (*)(std::uint64_t, std::uint32_t, std::uint32_t, std::uint64_t, index_t, double*);

// fn's pairs of blocks [first, first + blocks) against the definition; also that fn writes
// nothing past 2 * blocks doubles (the SIMD tail computes eight blocks and keeps some).
void expect_pairs_match(PairsFn fn, std::uint64_t seed, std::uint32_t stream, std::uint32_t step, std::uint64_t first,
                        index_t blocks, bool fma_reference = false) {
  SCOPED_TRACE("seed " + std::to_string(seed) + ", stream " + std::to_string(stream) + ", step " +
               std::to_string(step) + ", first block " + std::to_string(first) + ", blocks " + std::to_string(blocks));
  const double sentinel = -1234.5;
  std::vector<double> got(static_cast<std::size_t>(2 * blocks + 16), sentinel);
  fn(seed, stream, step, first, blocks, got.data());
  for (std::size_t i = std::size_t(2 * blocks); i < got.size(); ++i) ASSERT_EQ(got[i], sentinel) << "wrote past the end at " << i;
  got.resize(std::size_t(2 * blocks));
  const std::vector<double> want = fma_reference ? reference_pairs_fma(seed, stream, step, first, blocks)
                                                 : reference_pairs(seed, stream, step, first, blocks);
  EXPECT_SAME_BITS(got, want);
}

// Block counts around the eight-block groups and the four-lane halves, starting at offsets that
// put the low counter word's wrap past 2^32 inside a group, at every lane.
void expect_tails_match(PairsFn fn) {
  const index_t counts[] = {0, 1, 3, 4, 5, 7, 8, 9, 1000};
  const std::uint64_t firsts[] = {0, 5, kTwo32 - 1, kTwo32 - 4, kTwo32 - 7, 3 * kTwo32 - 5, kTwo32 + 2,
                                  (std::uint64_t{1} << 62) - 3};
  for (const std::uint64_t first : firsts)
    for (const index_t blocks : counts) expect_pairs_match(fn, 0x243f6a8885a308d3ULL, 7, 11, first, blocks);
}

#define SKIP_WITHOUT_AVX2()                                                               \
  if (!detail::philox_simd_supported()) GTEST_SKIP() << "this CPU lacks AVX2 or FMA"

TEST(PhiloxSimd, PairsMatchPhiloxNormalAtEveryTailAndCarry) {
  SKIP_WITHOUT_AVX2();
  expect_tails_match(detail::philox_normal_pairs_avx2);
}

TEST(PhiloxSimd, ScalarFallbackMatchesPhiloxNormalAtEveryTailAndCarry) {
  expect_tails_match(detail::philox_normal_pairs_scalar);
}

TEST(PhiloxSimd, DispatchMatchesPhiloxNormal) {
  expect_pairs_match(detail::philox_normal_pairs, 42, 3, 1, 123456789, 1001);
}

// About 10^7 normals from several keys and counter words (against the AVX2+FMA build of the
// definition; the cases above use its baseline build): over 600,000 blocks through every lane.
TEST(PhiloxSimd, MillionsOfDrawsMatchPhiloxNormal) {
  SKIP_WITHOUT_AVX2();
  struct Case {
    std::uint64_t seed;
    std::uint32_t stream, step;
    std::uint64_t first;
    index_t blocks;
  };
  const Case cases[] = {
      {0, 0, 0, 0, 1 << 20},
      {0xffffffffffffffffULL, 0xffffffffu, 0xffffffffu, kTwo32 - (1 << 19), 1 << 20},  // across the 2^32 carry
      {0x9e3779b97f4a7c15ULL, 12, 40000, 77, 1 << 20},
      {1, 0x80000000u, 3, (std::uint64_t{1} << 40) + 3, 1 << 20},
      {0xdeadbeefcafef00dULL, 5, 0x7fffffffu, 999, 1 << 20},
  };
  for (const Case& c : cases)
    expect_pairs_match(detail::philox_normal_pairs_avx2, c.seed, c.stream, c.step, c.first, c.blocks, true);
}

// Counters whose doubled element index no longer fits 64 bits (blocks >= 2^63) are beyond
// philox_normal; there the fallback, checked above, is the reference, and the block counter wraps
// at 2^64 like philox_block's.
TEST(PhiloxSimd, PairsWrapAtTwoToThe64LikeTheFallback) {
  SKIP_WITHOUT_AVX2();
  for (const std::uint64_t first : {~std::uint64_t{0} - 4, ~std::uint64_t{0}, std::uint64_t{1} << 63}) {
    for (const index_t blocks : {1, 9, 21}) {
      std::vector<double> simd(std::size_t(2 * blocks)), scalar(std::size_t(2 * blocks));
      detail::philox_normal_pairs_avx2(5, 6, 7, first, blocks, simd.data());
      detail::philox_normal_pairs_scalar(5, 6, 7, first, blocks, scalar.data());
      EXPECT_SAME_BITS(simd, scalar);
    }
  }
}

TEST(PhiloxSimd, WordsMatchPhiloxBlock) {
  SKIP_WITHOUT_AVX2();
  const std::uint64_t firsts[] = {0, kTwo32 - 3, ~std::uint64_t{0} - 2};
  const std::uint64_t seeds[] = {0, 0xffffffffffffffffULL, 0xa4093822299f31d0ULL};
  for (const std::uint64_t first : firsts) {
    for (const std::uint64_t seed : seeds) {
      const index_t blocks = 13;
      std::vector<std::uint32_t> words(std::size_t(4 * blocks));
      detail::philox_blocks_avx2(seed, 0x03707344u, 0x13198a2eu, first, blocks, words.data());
      for (index_t i = 0; i < blocks; ++i) {
        const kern::PhiloxBlock b = kern::philox_block(seed, 0x03707344u, 0x13198a2eu, first + std::uint64_t(i));
        for (int j = 0; j < 4; ++j)
          EXPECT_EQ(words[std::size_t(4 * i + j)], b.v[j]) << "block " << first + std::uint64_t(i) << " word " << j;
      }
    }
  }
}

TEST(PhiloxSimd, PairFromWordsMatchesPhiloxNormal) {
  for (std::uint64_t block = 0; block < 4096; ++block) {
    const kern::PhiloxBlock b = kern::philox_block(99, 1, 2, block);
    double pair[2];
    reference_pair_from_words(b.v, pair);
    const std::vector<double> got{pair[0], pair[1]};
    const std::vector<double> want{kern::philox_normal(99, 1, 2, 2 * block), kern::philox_normal(99, 1, 2, 2 * block + 1)};
    ASSERT_TRUE(same_bits(got, want)) << "block " << block << ": " << first_difference(got, want);
  }
}

// u1 = 1 - (v0 2^21 + (v1 >> 11)) 2^-53 and u2 = (v2 2^21 + (v3 >> 11)) 2^-53: the words for a
// chosen 53-bit u1 numerator and u2 numerator (low 11 bits of v1 and v3 set, which must not count).
std::vector<std::uint32_t> words_for(std::uint64_t n1, std::uint64_t n2) {
  return {std::uint32_t(n1 >> 21), std::uint32_t(n1 << 11) | 0x7ffu, std::uint32_t(n2 >> 21),
          std::uint32_t(n2 << 11) | 0x5a5u};
}

TEST(PhiloxSimd, BoxMullerMatchesAtTheEdgesOfLogAndSinCos) {
  SKIP_WITHOUT_AVX2();
  const std::uint64_t top = (std::uint64_t{1} << 53) - 1;
  // u1 numerators: u1 = 1 (numerator 0), u1 = 2^-53 (all ones), u1 just above, at and below
  // sqrt(1/2) (the mantissa select), u1 = 1/2 and its neighbours, u1 = 2^-k.
  std::vector<std::uint64_t> n1 = {0, 1, 2, top, top - 1, std::uint64_t{1} << 52, (std::uint64_t{1} << 52) - 1,
                                   (std::uint64_t{1} << 52) + 1};
  const std::uint64_t sqrt_half = std::uint64_t(std::ldexp(1.0 - std::sqrt(0.5), 53));
  for (std::uint64_t d = 0; d < 5; ++d) {
    n1.push_back(sqrt_half - 2 + d);
  }
  for (int k = 2; k < 53; k += 5) n1.push_back((std::uint64_t{1} << 53) - (std::uint64_t{1} << (53 - k)));
  // u2 numerators: x = 2 u2 - 1 at -1, at and around each quadrant boundary -3/4, -1/4, 1/4, 3/4
  // (u2 = 1/8, 3/8, 5/8, 7/8), at 0 and at its largest value 1 - 2^-52.
  std::vector<std::uint64_t> n2 = {0, 1, top, top - 1, std::uint64_t{1} << 52};
  for (std::uint64_t eighths : {1, 3, 5, 7})
    for (std::uint64_t d = 0; d < 5; ++d) n2.push_back(eighths * (std::uint64_t{1} << 50) - 2 + d);
  std::vector<std::uint32_t> words;
  for (const std::uint64_t a : n1)
    for (const std::uint64_t b : n2) {
      const std::vector<std::uint32_t> w = words_for(a, b);
      words.insert(words.end(), w.begin(), w.end());
    }
  const index_t blocks = index_t(words.size() / 4);
  std::vector<double> got(std::size_t(2 * blocks)), want(std::size_t(2 * blocks));
  detail::normal_pairs_from_words_avx2(words.data(), blocks, got.data());
  for (index_t i = 0; i < blocks; ++i) reference_pair_from_words(&words[std::size_t(4 * i)], &want[std::size_t(2 * i)]);
  EXPECT_SAME_BITS(got, want);
  // The edges are what they claim: u1 = 1 gives radius 0, u1 = 2^-53 the largest radius.
  EXPECT_EQ(got[0], 0.0);
  const std::size_t smallest_u1 = std::size_t(3 * n2.size());  // n1 = top
  EXPECT_NEAR(std::hypot(got[2 * smallest_u1], got[2 * smallest_u1 + 1]), std::sqrt(2.0 * 53.0 * std::log(2.0)), 1e-12);
}

TEST(PhiloxSimd, LogMatchesPortableLogOnChosenInputs) {
  SKIP_WITHOUT_AVX2();
  std::vector<double> x = {1.0, 0x1p-53, 1.0 - 0x1p-53, 0.5, 0.5 + 0x1p-53, 0.75, 0x1p-1022, 0x1p-1074, 0x1.8p-1070,
                           std::numeric_limits<double>::min() * 3.0, 2.0, 1e300};
  // Both sides of the mantissa select m > sqrt(2) at several exponents.
  for (int k = 0; k > -60; k -= 7) {
    const double edge = std::ldexp(1.4142135623730951, k);
    for (double v = std::nextafter(std::nextafter(edge, 0.0), 0.0); v <= std::nextafter(std::nextafter(edge, 4.0), 4.0);
         v = std::nextafter(v, 4.0))
      x.push_back(v);
  }
  // Powers of two and their neighbours, down to the subnormals: k steps there and log(m) is tiny.
  for (int k = 0; k <= 1074; k += 3)
    for (int j = -4; j <= 4; ++j) x.push_back(std::ldexp(1.0 + j * 0x1p-52, -k));
  std::mt19937_64 gen(3);
  for (int i = 0; i < 20000; ++i) x.push_back(double((gen() >> 11) + 1) * 0x1p-53);                // u1's values
  for (int i = 0; i < 20000; ++i) x.push_back(std::ldexp(double(gen() >> 11) * 0x1p-53 + 0.5, -int(gen() % 1000)));
  const index_t n = index_t(x.size());
  std::vector<double> got(x.size()), want(x.size());
  detail::portable_log_avx2(x.data(), n, got.data());
  for (std::size_t i = 0; i < x.size(); ++i) want[i] = kern::portable_log(x[i]);
  EXPECT_SAME_BITS(got, want);
  EXPECT_EQ(got[0], 0.0);
  EXPECT_FALSE(std::signbit(got[0]));
}

TEST(PhiloxSimd, SinCosMatchPortableSincospiOnChosenInputs) {
  SKIP_WITHOUT_AVX2();
  std::vector<double> x = {-0.0, 0.0};
  for (const double edge : {-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0}) {
    double v = edge;
    for (int i = 0; i < 3; ++i) v = std::nextafter(v, -2.0);
    for (int i = 0; i < 7; ++i, v = std::nextafter(v, 2.0))
      if (v >= -1.0 && v <= 1.0) x.push_back(v);
  }
  std::mt19937_64 gen(4);
  for (int i = 0; i < 40000; ++i) x.push_back(fma(2.0, double(gen() >> 11) * 0x1p-53, -1.0));  // 2 u2 - 1
  // Sizes that are not multiples of four: the padded last group.
  for (const index_t n : {index_t(x.size()), index_t(x.size()) - 1, index_t(3), index_t(1)}) {
    const std::size_t count = static_cast<std::size_t>(n);
    std::vector<double> s(count), c(count), ws(count), wc(count);
    detail::portable_sincospi_avx2(x.data(), n, s.data(), c.data());
    for (index_t i = 0; i < n; ++i) kern::portable_sincospi(x[std::size_t(i)], &ws[std::size_t(i)], &wc[std::size_t(i)]);
    EXPECT_SAME_BITS(s, ws);
    EXPECT_SAME_BITS(c, wc);
  }
}

TEST(PhiloxSimd, NegativeCountsAreRejected) {
  double out[2];
  EXPECT_THROW(detail::philox_normal_pairs(1, 2, 3, 4, -1, out), InvalidArgument);
  EXPECT_THROW(detail::philox_normal_pairs_scalar(1, 2, 3, 4, -1, out), InvalidArgument);
  try {
    detail::philox_normal_pairs(1, 2, 3, 4, -5, out);
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("blocks must be >= 0, got -5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dynascope
