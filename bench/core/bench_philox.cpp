// Philox Box-Muller normals on the host, 2^20 per iteration (the SGLD update draws one per
// parameter per chain per step): kern::philox_normal element by element, compiled for the x86-64
// baseline (each fma() a libm call) and for AVX2+FMA (the SGLD host loop's build), then the
// many-blocks functions of core/philox_simd.hpp, scalar fallback and dispatch (AVX2 where the CPU
// has it). All give the same bits (tests/core/test_philox_simd.cpp). Rate: items/s = normals/s.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "core/philox_simd.hpp"
#include "kernels/philox.cuh"

namespace {

using namespace dynascope;

constexpr index_t kNormals = index_t{1} << 20;
constexpr std::uint64_t kSeed = 0x9e3779b97f4a7c15ULL;

void elementwise(std::uint32_t step, double* out) {
  for (index_t e = 0; e < kNormals; ++e) out[e] = kern::philox_normal(kSeed, 0, step, std::uint64_t(e));
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void elementwise_fma(std::uint32_t step, double* out) {
  for (index_t e = 0; e < kNormals; ++e) out[e] = kern::philox_normal(kSeed, 0, step, std::uint64_t(e));
}
bool cpu_has_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#else
void elementwise_fma(std::uint32_t step, double* out) { elementwise(step, out); }
bool cpu_has_fma() { return false; }
#endif

template <class Fill>
void run(benchmark::State& state, Fill fill) {
  std::vector<double> out(static_cast<std::size_t>(kNormals));
  std::uint32_t step = 0;
  fill(step, out.data());  // outside the timing: first-touch pages
  for (auto _ : state) {
    fill(++step, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kNormals);
}

void BM_philox_normal_elementwise_baseline(benchmark::State& state) { run(state, elementwise); }

void BM_philox_normal_elementwise_fma(benchmark::State& state) {
  if (!cpu_has_fma()) {
    state.SkipWithError("this CPU lacks AVX2 or FMA");
    return;
  }
  run(state, elementwise_fma);
}

void BM_philox_normal_pairs_scalar(benchmark::State& state) {
  run(state, [](std::uint32_t step, double* out) { detail::philox_normal_pairs_scalar(kSeed, 0, step, 0, kNormals / 2, out); });
}

void BM_philox_normal_pairs(benchmark::State& state) {
  state.SetLabel(detail::philox_simd_supported() ? "avx2+fma" : "scalar fallback");
  run(state, [](std::uint32_t step, double* out) { detail::philox_normal_pairs(kSeed, 0, step, 0, kNormals / 2, out); });
}

BENCHMARK(BM_philox_normal_elementwise_baseline)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_philox_normal_elementwise_fma)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_philox_normal_pairs_scalar)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_philox_normal_pairs)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
