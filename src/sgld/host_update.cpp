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

#include "kernels/sgld.cuh"

namespace dynascope::sgld::detail {
namespace {

template <class T>
inline void run_item(const kern::SgldUpdate<T>& u, index_t item, index_t slices, double* partials) {
  const index_t c = item / slices, s = item % slices;
  const index_t begin = s * kern::kSgldSlice, end = std::min(u.P, begin + kern::kSgldSlice);
  double sums[kern::kSgldSums] = {0, 0, 0};
  u.run(c, begin, end, sums);
  for (int q = 0; q < kern::kSgldSums; ++q) partials[item * kern::kSgldSums + q] = sums[q];
}

#if defined(__x86_64__) && defined(__GNUC__)
#define DYNASCOPE_HAVE_FMA_CLONE 1
template <class T>
__attribute__((target("avx2,fma"))) void items_fma(const kern::SgldUpdate<T>& u, index_t items, index_t slices,
                                                    double* partials, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (items > 1)
  for (index_t item = 0; item < items; ++item) run_item(u, item, slices, partials);
}
bool cpu_has_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#endif

template <class T>
void items_baseline(const kern::SgldUpdate<T>& u, index_t items, index_t slices, double* partials, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (items > 1)
  for (index_t item = 0; item < items; ++item) run_item(u, item, slices, partials);
}

}  // namespace

template <class T>
void host_update(const kern::SgldUpdate<T>& u, index_t chains, index_t slices, double* partials, int threads) {
  const index_t items = chains * slices;
#if defined(DYNASCOPE_HAVE_FMA_CLONE)
  if (cpu_has_fma()) {
    items_fma(u, items, slices, partials, threads);
    return;
  }
#endif
  items_baseline(u, items, slices, partials, threads);
}

template void host_update<float>(const kern::SgldUpdate<float>&, index_t, index_t, double*, int);
template void host_update<double>(const kern::SgldUpdate<double>&, index_t, index_t, double*, int);

}  // namespace dynascope::sgld::detail
