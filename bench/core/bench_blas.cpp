// The machine's GEMM rate through the blas:: dispatch, so every later benchmark can state its
// throughput as a fraction of it. Counter "flops" = 2 m n k / time (printed as e.g. 95G/s).
#include <benchmark/benchmark.h>

#include <vector>

#include "dynascope/blas.hpp"

namespace {

using namespace dynascope;

template <class T>
void BM_gemm(benchmark::State& state) {
  const index_t m = state.range(0), n = state.range(1), k = state.range(2);
  Context ctx = Context::host();
  std::vector<T> a(static_cast<std::size_t>(m * k), T(0.5)), b(static_cast<std::size_t>(k * n), T(0.25)),
      c(static_cast<std::size_t>(m * n), T(0));
  for (auto _ : state) {
    blas::gemm<T>(ctx, blas::Op::none, blas::Op::none, T(1), MatrixView<const T>{a.data(), m, k, k},
                  MatrixView<const T>{b.data(), k, n, n}, T(0), MatrixView<T>{c.data(), m, n, n});
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["flops"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k),
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["m"] = double(m);
  state.counters["n"] = double(n);
  state.counters["k"] = double(k);
}

template <class T>
void BM_syrk(benchmark::State& state) {
  const index_t n = state.range(0), k = state.range(1);
  Context ctx = Context::host();
  std::vector<T> a(static_cast<std::size_t>(n * k), T(0.5)), c(static_cast<std::size_t>(n * n), T(0));
  for (auto _ : state) {
    blas::syrk<T>(ctx, blas::Op::none, T(1), MatrixView<const T>{a.data(), n, k, k}, T(0), MatrixView<T>{c.data(), n, n, n});
    benchmark::DoNotOptimize(c.data());
  }
  // Useful work: the n(n+1)/2 k multiply-adds of one triangle.
  state.counters["flops"] = benchmark::Counter(double(n) * double(n + 1) * double(k),
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void gemm_sizes(benchmark::internal::Benchmark* b) {
  for (int s : {256, 512, 1024, 2048}) b->Args({s, s, s});
  b->Args({512, 1024, 784});  // MNIST-sized layer: batch 512, 784 -> 1024
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_gemm<float>)->Name("sgemm")->Apply(gemm_sizes);
BENCHMARK(BM_gemm<double>)->Name("dgemm")->Apply(gemm_sizes);
BENCHMARK(BM_syrk<float>)->Name("ssyrk")->Args({1024, 512})->Args({2048, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
