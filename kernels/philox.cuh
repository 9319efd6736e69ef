#pragma once
// Philox4x32-10 draws and their transforms, identical on host and device.
// Every multiply-add is an explicit fma so that neither compiler may contract differently;
// log, sin and cos are our own polynomials for the same reason (libm and CUDA's math library
// round differently in the last place).
#include <cmath>
#include <cstdint>
#include <cstring>

#include <Random123/philox.h>

#include "dynascope/view.hpp"

namespace dynascope::kern {

struct PhiloxBlock {
  std::uint32_t v[4];
};

DYNASCOPE_HD inline PhiloxBlock philox_block(std::uint64_t seed, std::uint32_t stream,
                                             std::uint32_t step, std::uint64_t block) {
  r123array4x32 ctr = {{static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), step, stream}};
  r123array2x32 key = {{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)}};
  const r123array4x32 r = philox4x32_R(10, ctr, key);
  return {{r.v[0], r.v[1], r.v[2], r.v[3]}};
}

// [0, 1) with 24 random bits.
DYNASCOPE_HD inline float u32_to_unit_float(std::uint32_t x) {
  return static_cast<float>(x >> 8) * 5.9604644775390625e-8f;  // 2^-24
}
// [0, 1) with 53 random bits.
DYNASCOPE_HD inline double u64_to_unit_double(std::uint32_t hi, std::uint32_t lo) {
  const std::uint64_t bits = (static_cast<std::uint64_t>(hi) << 21) ^ (lo >> 11);
  return static_cast<double>(bits) * 1.1102230246251565e-16;  // 2^-53
}

// Natural log for x in (0, 1], about 1 ulp, the same bits on both backends.
DYNASCOPE_HD inline double portable_log(double x) {
  std::uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  int k = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;  // mantissa m in [1, 2)
  double m;
  std::memcpy(&m, &bits, sizeof m);
  // keep m in [sqrt(1/2), sqrt(2)); selects, not a branch: on random input a branch mispredicts
  // half of the time (the same arithmetic either way, so the bits do not change)
  const bool high = m > 1.4142135623730951;
  m = high ? m * 0.5 : m;
  k += high ? 1 : 0;
  // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double p = 1.0 / 25.0;
  p = fma(p, s2, 1.0 / 23.0);
  p = fma(p, s2, 1.0 / 21.0);
  p = fma(p, s2, 1.0 / 19.0);
  p = fma(p, s2, 1.0 / 17.0);
  p = fma(p, s2, 1.0 / 15.0);
  p = fma(p, s2, 1.0 / 13.0);
  p = fma(p, s2, 1.0 / 11.0);
  p = fma(p, s2, 1.0 / 9.0);
  p = fma(p, s2, 1.0 / 7.0);
  p = fma(p, s2, 1.0 / 5.0);
  p = fma(p, s2, 1.0 / 3.0);
  const double log_m = fma(2.0 * s * s2, p, 2.0 * s);
  const double kd = static_cast<double>(k);
  return fma(kd, 0.6931471805599453, fma(kd, 2.3190468138462996e-17, log_m));
}

// sin(pi x) and cos(pi x) for x in [-1, 1].
DYNASCOPE_HD inline void portable_sincospi(double x, double* sin_out, double* cos_out) {
  const double q = std::floor(fma(2.0, x, 0.5));  // nearest quadrant
  const double r = fma(-0.5, q, x);               // exact: |r| <= 1/4
  const double a = r * 3.141592653589793;         // |a| <= pi/4
  const double a2 = a * a;
  double sp = -1.0 / 1307674368000.0;             // -1/15!
  sp = fma(sp, a2, 1.0 / 6227020800.0);
  sp = fma(sp, a2, -1.0 / 39916800.0);
  sp = fma(sp, a2, 1.0 / 362880.0);
  sp = fma(sp, a2, -1.0 / 5040.0);
  sp = fma(sp, a2, 1.0 / 120.0);
  sp = fma(sp, a2, -1.0 / 6.0);
  const double sn = fma(a * a2, sp, a);
  double cp = 1.0 / 20922789888000.0;             // 1/16!
  cp = fma(cp, a2, -1.0 / 87178291200.0);
  cp = fma(cp, a2, 1.0 / 479001600.0);
  cp = fma(cp, a2, -1.0 / 3628800.0);
  cp = fma(cp, a2, 1.0 / 40320.0);
  cp = fma(cp, a2, -1.0 / 720.0);
  cp = fma(cp, a2, 1.0 / 24.0);
  cp = fma(cp, a2, -0.5);
  const double cs = fma(a2, cp, 1.0);
  // Quadrant 0: (sn, cs), 1: (cs, -sn), 2: (-sn, -cs), 3: (-cs, sn), by selects and exact sign
  // flips rather than a switch, which mispredicts three times in four on random input.
  const int quadrant = static_cast<int>(q) & 3;
  const bool odd = (quadrant & 1) != 0;
  const double sin_sign = (quadrant & 2) ? -1.0 : 1.0;
  const double cos_sign = ((quadrant + 1) & 2) ? -1.0 : 1.0;
  *sin_out = (odd ? cs : sn) * sin_sign;
  *cos_out = (odd ? sn : cs) * cos_sign;
}

// The two standard normals of one Philox block: Box-Muller on two 53-bit uniforms, the draws of
// elements 2b (cosine) and 2b + 1 (sine) of block b. Every caller that needs both (the SGLD
// update, the host's batched normals) goes through this one definition, so the bits agree.
DYNASCOPE_HD inline void box_muller(const PhiloxBlock& b, double* cos_normal, double* sin_normal) {
  const double u1 = 1.0 - u64_to_unit_double(b.v[0], b.v[1]);  // (0, 1]
  const double u2 = u64_to_unit_double(b.v[2], b.v[3]);        // [0, 1)
  const double radius = sqrt(-2.0 * portable_log(u1));
  double s, c;
  portable_sincospi(fma(2.0, u2, -1.0), &s, &c);
  *cos_normal = radius * c;
  *sin_normal = radius * s;
}

// Standard normal draw for element e (Box-Muller on one Philox block per pair of elements).
DYNASCOPE_HD inline double philox_normal(std::uint64_t seed, std::uint32_t stream,
                                         std::uint32_t step, std::uint64_t e) {
  double c, s;
  box_muller(philox_block(seed, stream, step, e >> 1), &c, &s);
  return (e & 1) ? s : c;
}

// Uniform [0, 1) draw for element e with the precision of T.
template <class T>
DYNASCOPE_HD inline T philox_uniform(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                     std::uint64_t e);
template <>
DYNASCOPE_HD inline float philox_uniform<float>(std::uint64_t seed, std::uint32_t stream,
                                                std::uint32_t step, std::uint64_t e) {
  return u32_to_unit_float(philox_block(seed, stream, step, e >> 2).v[e & 3]);
}
template <>
DYNASCOPE_HD inline double philox_uniform<double>(std::uint64_t seed, std::uint32_t stream,
                                                  std::uint32_t step, std::uint64_t e) {
  const PhiloxBlock b = philox_block(seed, stream, step, e >> 1);
  const int w = static_cast<int>(e & 1) * 2;
  return u64_to_unit_double(b.v[w], b.v[w + 1]);
}

DYNASCOPE_HD inline std::uint32_t philox_u32(std::uint64_t seed, std::uint32_t stream,
                                             std::uint32_t step, std::uint64_t e) {
  return philox_block(seed, stream, step, e >> 2).v[e & 3];
}

}  // namespace dynascope::kern

namespace dynascope::kern {
// High 64 bits of a * b: maps 64 random bits to [0, n) by multiplication (Lemire).
DYNASCOPE_HD inline std::uint64_t mulhi64(std::uint64_t a, std::uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  __extension__ using u128 = unsigned __int128;
  return static_cast<std::uint64_t>((static_cast<u128>(a) * b) >> 64);
#endif
}
}  // namespace dynascope::kern
