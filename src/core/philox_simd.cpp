// Philox Box-Muller normals, many blocks at once (core/philox_simd.hpp), always compiled by the
// host compiler.
//
// kern::philox_normal (kernels/philox.cuh) defines the bits. The AVX2 path below transcribes it
// operation for operation: each fma() there is an FMA instruction here, each +, -, *, / and sqrt
// the same IEEE operation on four lanes, each select a blend, floor a round-down; integer-to-double
// conversions are exact. Every one of these is correctly rounded, so each lane gives the bits the
// scalar code gives. The file is compiled with -ffp-contract=off: GCC writes _mm256_mul_pd and
// _mm256_add_pd as vector arithmetic that it could otherwise fuse into an FMA the scalar code does
// not have, and the scalar fallback must not be contracted either.
#include "core/philox_simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "dynascope/error.hpp"
#include "kernels/philox.cuh"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DYNASCOPE_PHILOX_AVX2 1
#endif

namespace dynascope::detail {
namespace {

void check_count(index_t n, const char* call, const char* name) {
  if (n < 0) throw InvalidArgument(std::string(call) + ": " + name + " must be >= 0, got " + std::to_string(n));
}

// kern::philox_normal's two elements of one block (cosine branch first) from one Philox call,
// through kern::box_muller, the one definition both use.
inline void normal_pair(const kern::PhiloxBlock& b, double* out) { kern::box_muller(b, out, out + 1); }

#if defined(DYNASCOPE_PHILOX_AVX2)
#define DYNASCOPE_AVX2 __attribute__((target("avx2,fma")))

DYNASCOPE_AVX2 inline __m256d splat(double x) { return _mm256_set1_pd(x); }
DYNASCOPE_AVX2 inline __m256i splat32(std::uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }

// Random123's mulhilo32 on eight lanes: _mm256_mul_epu32 multiplies the even 32-bit lanes into
// 64-bit products, so the odd lanes go through it shifted down, and the halves are blended back.
DYNASCOPE_AVX2 inline void mulhilo8(__m256i x, __m256i m, __m256i& lo, __m256i& hi) {
  const __m256i even = _mm256_mul_epu32(x, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xaa);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xaa);
}

// Philox4x32-10 output words v[0..3] of blocks block, ..., block + 7 (lane j: block + j).
struct Words8 {
  __m256i v[4];
};

DYNASCOPE_AVX2 inline Words8 philox8(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                     std::uint64_t block) {
  // Counter (low word of the block, high word, step, stream), as kern::philox_block lays it out;
  // a lane whose low word wrapped past 2^32 carries into its high word (unsigned compare by
  // flipping the sign bits).
  const __m256i base_lo = splat32(static_cast<std::uint32_t>(block));
  const __m256i lo = _mm256_add_epi32(base_lo, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i flip = splat32(0x80000000u);
  const __m256i wrapped = _mm256_cmpgt_epi32(_mm256_xor_si256(base_lo, flip), _mm256_xor_si256(lo, flip));
  __m256i c0 = lo;
  __m256i c1 = _mm256_sub_epi32(splat32(static_cast<std::uint32_t>(block >> 32)), wrapped);
  __m256i c2 = splat32(step);
  __m256i c3 = splat32(stream);
  const __m256i m0 = splat32(PHILOX_M4x32_0), m1 = splat32(PHILOX_M4x32_1);
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {  // philox4x32bumpkey
      k0 += PHILOX_W32_0;
      k1 += PHILOX_W32_1;
    }
    __m256i lo0, hi0, lo1, hi1;
    mulhilo8(c0, m0, lo0, hi0);
    mulhilo8(c2, m1, lo1, hi1);
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), splat32(k0));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), splat32(k1));
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

// u64_to_unit_double on four lanes: (hi 2^21 + (lo >> 11)) 2^-53 = hi 2^-32 + (lo >> 11) 2^-53.
// Both terms are exact (hi converted as signed after flipping its sign bit, then shifted back by
// 2^31), and so is their sum, a 53-bit integer times 2^-53: the same double as the scalar one.
DYNASCOPE_AVX2 inline __m256d unit_double4(__m128i hi, __m128i lo) {
  const __m256d h = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(hi, _mm_set1_epi32(INT32_MIN))),
                                  splat(2147483648.0));
  const __m256d l = _mm256_cvtepi32_pd(_mm_srli_epi32(lo, 11));
  return _mm256_add_pd(_mm256_mul_pd(h, splat(0x1p-32)), _mm256_mul_pd(l, splat(0x1p-53)));
}

// kern::portable_log on four lanes.
DYNASCOPE_AVX2 inline __m256d log4(__m256d x) {
  const __m256i bits = _mm256_castpd_si256(x);
  const __m256i e = _mm256_and_si256(_mm256_srli_epi64(bits, 52), _mm256_set1_epi64x(0x7ff));
  // The exponent field as a double: placed in the mantissa of 2^52, minus 2^52 (both exact).
  const __m256d ed = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(e, _mm256_set1_epi64x(0x4330000000000000))),
                                   splat(0x1p52));
  __m256d m = _mm256_castsi256_pd(_mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi64x(0x000fffffffffffff)),
                                                  _mm256_set1_epi64x(0x3ff0000000000000)));
  const __m256d high = _mm256_cmp_pd(m, splat(1.4142135623730951), _CMP_GT_OQ);
  m = _mm256_blendv_pd(m, _mm256_mul_pd(m, splat(0.5)), high);
  // double(k) for k = e - 1023 + high: small integers, so every step is exact (and 0 is +0 as there).
  const __m256d kd = _mm256_add_pd(_mm256_sub_pd(ed, splat(1023.0)), _mm256_and_pd(high, splat(1.0)));
  const __m256d one = splat(1.0);
  const __m256d s = _mm256_div_pd(_mm256_sub_pd(m, one), _mm256_add_pd(m, one));
  const __m256d s2 = _mm256_mul_pd(s, s);
  __m256d p = splat(1.0 / 25.0);
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 23.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 21.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 19.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 17.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 15.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 13.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 11.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 9.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 7.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 5.0));
  p = _mm256_fmadd_pd(p, s2, splat(1.0 / 3.0));
  const __m256d two_s = _mm256_mul_pd(splat(2.0), s);
  const __m256d log_m = _mm256_fmadd_pd(_mm256_mul_pd(two_s, s2), p, two_s);
  return _mm256_fmadd_pd(kd, splat(0.6931471805599453), _mm256_fmadd_pd(kd, splat(2.3190468138462996e-17), log_m));
}

// kern::portable_sincospi on four lanes.
DYNASCOPE_AVX2 inline void sincospi4(__m256d x, __m256d& sin_out, __m256d& cos_out) {
  const __m256d q = _mm256_round_pd(_mm256_fmadd_pd(splat(2.0), x, splat(0.5)), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m256d r = _mm256_fmadd_pd(splat(-0.5), q, x);
  const __m256d a = _mm256_mul_pd(r, splat(3.141592653589793));
  const __m256d a2 = _mm256_mul_pd(a, a);
  __m256d sp = splat(-1.0 / 1307674368000.0);
  sp = _mm256_fmadd_pd(sp, a2, splat(1.0 / 6227020800.0));
  sp = _mm256_fmadd_pd(sp, a2, splat(-1.0 / 39916800.0));
  sp = _mm256_fmadd_pd(sp, a2, splat(1.0 / 362880.0));
  sp = _mm256_fmadd_pd(sp, a2, splat(-1.0 / 5040.0));
  sp = _mm256_fmadd_pd(sp, a2, splat(1.0 / 120.0));
  sp = _mm256_fmadd_pd(sp, a2, splat(-1.0 / 6.0));
  const __m256d sn = _mm256_fmadd_pd(_mm256_mul_pd(a, a2), sp, a);
  __m256d cp = splat(1.0 / 20922789888000.0);
  cp = _mm256_fmadd_pd(cp, a2, splat(-1.0 / 87178291200.0));
  cp = _mm256_fmadd_pd(cp, a2, splat(1.0 / 479001600.0));
  cp = _mm256_fmadd_pd(cp, a2, splat(-1.0 / 3628800.0));
  cp = _mm256_fmadd_pd(cp, a2, splat(1.0 / 40320.0));
  cp = _mm256_fmadd_pd(cp, a2, splat(-1.0 / 720.0));
  cp = _mm256_fmadd_pd(cp, a2, splat(1.0 / 24.0));
  cp = _mm256_fmadd_pd(cp, a2, splat(-0.5));
  const __m256d cs = _mm256_fmadd_pd(a2, cp, splat(1.0));
  // int(q) & 3: q + 1.5 2^52 is exact for |q| < 2^51 and leaves q's two's complement low bits in
  // the mantissa. blendv reads the sign bit, so each flag is shifted up to bit 63.
  const __m256i qi = _mm256_castpd_si256(_mm256_add_pd(q, splat(0x1.8p52)));
  const __m256d odd = _mm256_castsi256_pd(_mm256_slli_epi64(qi, 63));
  const __m256d sin_negative = _mm256_castsi256_pd(_mm256_slli_epi64(qi, 62));
  const __m256d cos_negative = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(qi, _mm256_set1_epi64x(1)), 62));
  const __m256d plus = splat(1.0), minus = splat(-1.0);
  sin_out = _mm256_mul_pd(_mm256_blendv_pd(sn, cs, odd), _mm256_blendv_pd(plus, minus, sin_negative));
  cos_out = _mm256_mul_pd(_mm256_blendv_pd(cs, sn, odd), _mm256_blendv_pd(plus, minus, cos_negative));
}

// The normal pairs of four blocks from their words (lane j of each): out[0..7] = c0 s0 c1 s1 ...
DYNASCOPE_AVX2 inline void normal_pairs4(__m128i v0, __m128i v1, __m128i v2, __m128i v3, double* out) {
  const __m256d u1 = _mm256_sub_pd(splat(1.0), unit_double4(v0, v1));
  const __m256d u2 = unit_double4(v2, v3);
  const __m256d radius = _mm256_sqrt_pd(_mm256_mul_pd(splat(-2.0), log4(u1)));
  __m256d s, c;
  sincospi4(_mm256_fmadd_pd(splat(2.0), u2, splat(-1.0)), s, c);
  const __m256d nc = _mm256_mul_pd(radius, c), ns = _mm256_mul_pd(radius, s);
  const __m256d even = _mm256_unpacklo_pd(nc, ns);  // c0 s0 c2 s2
  const __m256d odd = _mm256_unpackhi_pd(nc, ns);   // c1 s1 c3 s3
  _mm256_storeu_pd(out, _mm256_permute2f128_pd(even, odd, 0x20));
  _mm256_storeu_pd(out + 4, _mm256_permute2f128_pd(even, odd, 0x31));
}

DYNASCOPE_AVX2 inline void normal_pairs8(const Words8& w, double* out) {
  normal_pairs4(_mm256_castsi256_si128(w.v[0]), _mm256_castsi256_si128(w.v[1]), _mm256_castsi256_si128(w.v[2]),
                _mm256_castsi256_si128(w.v[3]), out);
  normal_pairs4(_mm256_extracti128_si256(w.v[0], 1), _mm256_extracti128_si256(w.v[1], 1),
                _mm256_extracti128_si256(w.v[2], 1), _mm256_extracti128_si256(w.v[3], 1), out + 8);
}

DYNASCOPE_AVX2 void normal_pairs_avx2(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                      std::uint64_t first_block, index_t blocks, double* out) {
  index_t i = 0;
  for (; i + 8 <= blocks; i += 8)
    normal_pairs8(philox8(seed, stream, step, first_block + static_cast<std::uint64_t>(i)), out + 2 * i);
  if (i < blocks) {  // the last 1..7 blocks: eight computed, the ones asked for kept
    double tail[16];
    normal_pairs8(philox8(seed, stream, step, first_block + static_cast<std::uint64_t>(i)), tail);
    std::memcpy(out + 2 * i, tail, static_cast<std::size_t>(2 * (blocks - i)) * sizeof(double));
  }
}

DYNASCOPE_AVX2 void blocks_avx2(std::uint64_t seed, std::uint32_t stream, std::uint32_t step, std::uint64_t first_block,
                                index_t blocks, std::uint32_t* words) {
  for (index_t i = 0; i < blocks; i += 8) {
    const Words8 w = philox8(seed, stream, step, first_block + static_cast<std::uint64_t>(i));
    alignas(32) std::uint32_t lanes[4][8];
    for (int j = 0; j < 4; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[j]), w.v[j]);
    for (index_t b = i; b < blocks && b < i + 8; ++b)
      for (int j = 0; j < 4; ++j) words[4 * b + j] = lanes[j][b - i];
  }
}

DYNASCOPE_AVX2 void from_words_avx2(const std::uint32_t* words, index_t blocks, double* out) {
  for (index_t i = 0; i < blocks; i += 4) {
    alignas(16) std::uint32_t lanes[4][4] = {};
    for (index_t b = i; b < blocks && b < i + 4; ++b)
      for (int j = 0; j < 4; ++j) lanes[j][b - i] = words[4 * b + j];
    double pairs[8];
    normal_pairs4(_mm_load_si128(reinterpret_cast<const __m128i*>(lanes[0])),
                  _mm_load_si128(reinterpret_cast<const __m128i*>(lanes[1])),
                  _mm_load_si128(reinterpret_cast<const __m128i*>(lanes[2])),
                  _mm_load_si128(reinterpret_cast<const __m128i*>(lanes[3])), pairs);
    const index_t n = std::min<index_t>(4, blocks - i);
    std::memcpy(out + 2 * i, pairs, static_cast<std::size_t>(2 * n) * sizeof(double));
  }
}

// Four lanes at a time; a short last group is padded with `pad`.
DYNASCOPE_AVX2 inline __m256d load4(const double* x, index_t i, index_t n, double pad) {
  double lanes[4] = {pad, pad, pad, pad};
  for (index_t j = i; j < n && j < i + 4; ++j) lanes[j - i] = x[j];
  return _mm256_loadu_pd(lanes);
}
DYNASCOPE_AVX2 inline void store4(double* y, index_t i, index_t n, __m256d v) {
  double lanes[4];
  _mm256_storeu_pd(lanes, v);
  for (index_t j = i; j < n && j < i + 4; ++j) y[j] = lanes[j - i];
}

DYNASCOPE_AVX2 void log_avx2(const double* x, index_t n, double* out) {
  for (index_t i = 0; i < n; i += 4) store4(out, i, n, log4(load4(x, i, n, 1.0)));
}

DYNASCOPE_AVX2 void sincospi_avx2(const double* x, index_t n, double* sin_out, double* cos_out) {
  for (index_t i = 0; i < n; i += 4) {
    __m256d s, c;
    sincospi4(load4(x, i, n, 0.0), s, c);
    store4(sin_out, i, n, s);
    store4(cos_out, i, n, c);
  }
}
#endif  // DYNASCOPE_PHILOX_AVX2

void require_simd(const char* call) {
  if (!philox_simd_supported())
    throw InvalidArgument(std::string(call) + ": this CPU lacks AVX2 or FMA (check philox_simd_supported() first)");
}

}  // namespace

bool philox_simd_supported() {
#if defined(DYNASCOPE_PHILOX_AVX2)
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

void philox_normal_pairs_scalar(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                std::uint64_t first_block, index_t blocks, double* out) {
  check_count(blocks, "philox_normal_pairs_scalar", "blocks");
  for (index_t i = 0; i < blocks; ++i)
    normal_pair(kern::philox_block(seed, stream, step, first_block + static_cast<std::uint64_t>(i)), out + 2 * i);
}

void philox_normal_pairs(std::uint64_t seed, std::uint32_t stream, std::uint32_t step, std::uint64_t first_block,
                         index_t blocks, double* out) {
  check_count(blocks, "philox_normal_pairs", "blocks");
#if defined(DYNASCOPE_PHILOX_AVX2)
  if (philox_simd_supported()) {
    normal_pairs_avx2(seed, stream, step, first_block, blocks, out);
    return;
  }
#endif
  philox_normal_pairs_scalar(seed, stream, step, first_block, blocks, out);
}

void philox_normal_pairs_avx2(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                              std::uint64_t first_block, index_t blocks, double* out) {
  check_count(blocks, "philox_normal_pairs_avx2", "blocks");
  require_simd("philox_normal_pairs_avx2");
#if defined(DYNASCOPE_PHILOX_AVX2)
  normal_pairs_avx2(seed, stream, step, first_block, blocks, out);
#else
  (void)seed, (void)stream, (void)step, (void)first_block, (void)out;
#endif
}

void philox_blocks_avx2(std::uint64_t seed, std::uint32_t stream, std::uint32_t step, std::uint64_t first_block,
                        index_t blocks, std::uint32_t* words) {
  check_count(blocks, "philox_blocks_avx2", "blocks");
  require_simd("philox_blocks_avx2");
#if defined(DYNASCOPE_PHILOX_AVX2)
  blocks_avx2(seed, stream, step, first_block, blocks, words);
#else
  (void)seed, (void)stream, (void)step, (void)first_block, (void)words;
#endif
}

void normal_pairs_from_words_avx2(const std::uint32_t* words, index_t blocks, double* out) {
  check_count(blocks, "normal_pairs_from_words_avx2", "blocks");
  require_simd("normal_pairs_from_words_avx2");
#if defined(DYNASCOPE_PHILOX_AVX2)
  from_words_avx2(words, blocks, out);
#else
  (void)words, (void)out;
#endif
}

void portable_log_avx2(const double* x, index_t n, double* out) {
  check_count(n, "portable_log_avx2", "n");
  require_simd("portable_log_avx2");
#if defined(DYNASCOPE_PHILOX_AVX2)
  log_avx2(x, n, out);
#else
  (void)x, (void)out;
#endif
}

void portable_sincospi_avx2(const double* x, index_t n, double* sin_out, double* cos_out) {
  check_count(n, "portable_sincospi_avx2", "n");
  require_simd("portable_sincospi_avx2");
#if defined(DYNASCOPE_PHILOX_AVX2)
  sincospi_avx2(x, n, sin_out, cos_out);
#else
  (void)x, (void)sin_out, (void)cos_out;
#endif
}

}  // namespace dynascope::detail
