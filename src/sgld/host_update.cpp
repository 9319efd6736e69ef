// The host side of the fused SGLD update (kernels/sgld.cuh), always compiled by the host compiler.
//
// The Philox normals are built from explicit fma() calls so that host and device round alike.
// Without FMA instructions in the target (the portable x86-64 baseline), every fma() is a libm
// call that emulates it in software, which made the update cost as much as the network's GEMMs.
// So the item loop is compiled twice, once for CPUs with AVX2 and FMA (fma() becomes one
// instruction, correctly rounded like the software one: the same bits) and once for the
// baseline, and the CPU picks at run time. This file is compiled with -ffp-contract=off, so
// neither version fuses any other multiply-add: both give the same bits on every x86-64 CPU.
#include "sgld/host_update.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/philox_simd.hpp"
#include "kernels/sgld.cuh"

namespace dynascope::sgld::detail {
namespace {

// The normals of elements [begin, end) of chain c (begin even): one Philox block per pair, the
// draws kern::SgldUpdate::run makes on the device, bit for bit (an AVX2 build of them where the
// CPU has it, core/philox_simd.cpp). out has room for end - begin + 1 values.
inline void slice_normals(std::uint64_t seed, std::uint32_t chain, std::uint32_t step, index_t begin, index_t end,
                          double* out) {
  dynascope::detail::philox_normal_pairs(seed, chain, step, static_cast<std::uint64_t>(begin / 2),
                                         (end - begin + 1) / 2, out);
}

// One (chain, slice) item: its normals first (a loop of its own), then the update in element
// order, so the sums add in the same order as kern::SgldUpdate::run.
template <class T>
[[gnu::always_inline]] inline void run_item(const kern::SgldUpdate<T>& u, index_t item, index_t slices,
                                            double* partials, double* noise) {
  const index_t c = item / slices, s = item % slices;
  const index_t begin = s * kern::kSgldSlice, end = std::min(u.P, begin + kern::kSgldSlice);
  slice_normals(u.seed, static_cast<std::uint32_t>(c), u.step, begin, end, noise);
  double sums[kern::kSgldSums] = {0, 0, 0};
  for (index_t i = begin; i < end; ++i) u.element(c, i, noise[i - begin], sums);
  for (int q = 0; q < kern::kSgldSums; ++q) partials[item * kern::kSgldSums + q] = sums[q];
}

// The item, built for the CPU's features. No OpenMP inside: an outlined parallel region would not
// inherit the target attribute.
#if defined(__x86_64__) && defined(__GNUC__)
#define DYNASCOPE_HAVE_FMA_CLONE 1
template <class T>
__attribute__((target("avx2,fma"))) void item_fma(const kern::SgldUpdate<T>& u, index_t item, index_t slices,
                                                   double* partials, double* noise) {
  run_item(u, item, slices, partials, noise);
}
bool cpu_has_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

template <class T>
void item_baseline(const kern::SgldUpdate<T>& u, index_t item, index_t slices, double* partials, double* noise) {
  run_item(u, item, slices, partials, noise);
}

}  // namespace

template <class T>
void host_update(const kern::SgldUpdate<T>& u, index_t chains, index_t slices, double* partials, int threads) {
  const index_t items = chains * slices;
  // Below 2^16 parameters in all (about a millisecond of work) one thread does it: a parallel
  // region would cost more on a busy machine (see batched_engine.cpp). The sums do not depend on it.
  if (chains * u.P < (index_t{1} << 16)) threads = 1;
  auto item = &item_baseline<T>;
#if defined(DYNASCOPE_HAVE_FMA_CLONE)
  if (cpu_has_fma()) item = &item_fma<T>;
#endif
#pragma omp parallel num_threads(threads) if (items > 1 && threads > 1)
  {
    std::vector<double> noise(static_cast<std::size_t>(kern::kSgldSlice) + 1);
#pragma omp for schedule(static)
    for (index_t i = 0; i < items; ++i) item(u, i, slices, partials, noise.data());
  }
}

template void host_update<float>(const kern::SgldUpdate<float>&, index_t, index_t, double*, int);
template void host_update<double>(const kern::SgldUpdate<double>&, index_t, index_t, double*, int);

}  // namespace dynascope::sgld::detail
