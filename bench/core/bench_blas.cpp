// The machine's GEMM rate through the blas:: dispatch, so every later benchmark can state its
// throughput as a fraction of it. Counter "flops" = 2 m n k / time (printed as e.g. 95G/s).
// Every case runs on host (sgemm, dgemm, ssyrk: wall time) and on cuda (sgemm_cuda, ...: device
// time between CUDA events on the context's stream); a cuda case without a usable device is
// skipped with "no CUDA device".
#include <benchmark/benchmark.h>

#include <vector>

#include "bench_util.hpp"
#include "dynascope/array.hpp"
#include "dynascope/blas.hpp"

namespace {

using namespace dynascope;

template <class T, Backend B>
void BM_gemm(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  const index_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Array<T> a = Array<T>::from_host(*ctx, {m, k}, std::vector<T>(static_cast<std::size_t>(m * k), T(0.5)));
  const Array<T> b = Array<T>::from_host(*ctx, {k, n}, std::vector<T>(static_cast<std::size_t>(k * n), T(0.25)));
  Array<T> c = Array<T>::zeros(*ctx, {m, n});
  const auto run = [&] { blas::gemm<T>(*ctx, blas::Op::none, blas::Op::none, T(1), a.matrix(), b.matrix(), T(0), c.matrix()); };
  run();  // outside the timing: library handles, thread pools, first-touch pages
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    run();
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["flops"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k),
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  state.counters["m"] = double(m);
  state.counters["n"] = double(n);
  state.counters["k"] = double(k);
}

template <class T, Backend B>
void BM_syrk(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  const index_t n = state.range(0), k = state.range(1);
  const Array<T> a = Array<T>::from_host(*ctx, {n, k}, std::vector<T>(static_cast<std::size_t>(n * k), T(0.5)));
  Array<T> c = Array<T>::zeros(*ctx, {n, n});
  const auto run = [&] { blas::syrk<T>(*ctx, blas::Op::none, T(1), a.matrix(), T(0), c.matrix()); };
  run();
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    run();
    benchmark::DoNotOptimize(c.data());
  }
  // Useful work: the n(n+1)/2 k multiply-adds of one triangle.
  state.counters["flops"] = benchmark::Counter(double(n) * double(n + 1) * double(k),
                                               benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void gemm_sizes(benchmark::internal::Benchmark* b) {
  for (int s : {256, 512, 1024, 2048}) b->Args({s, s, s});
  b->Args({512, 1024, 784});  // MNIST-sized layer: batch 512, 784 -> 1024
  b->Unit(benchmark::kMillisecond)->UseManualTime();
}
void cuda_gemm_sizes(benchmark::internal::Benchmark* b) {
  for (int s : {1024, 2048, 4096, 8192}) b->Args({s, s, s});
  b->Args({512, 1024, 784});
  b->Unit(benchmark::kMillisecond)->UseManualTime();
}

BENCHMARK(BM_gemm<float, Backend::host>)->Name("sgemm")->Apply(gemm_sizes);
BENCHMARK(BM_gemm<double, Backend::host>)->Name("dgemm")->Apply(gemm_sizes);
BENCHMARK(BM_syrk<float, Backend::host>)->Name("ssyrk")->Args({1024, 512})->Args({2048, 1024})->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK(BM_gemm<float, Backend::cuda>)->Name("sgemm_cuda")->Apply(cuda_gemm_sizes);
BENCHMARK(BM_gemm<double, Backend::cuda>)->Name("dgemm_cuda")->Apply(cuda_gemm_sizes);
BENCHMARK(BM_syrk<float, Backend::cuda>)->Name("ssyrk_cuda")->Args({2048, 1024})->Args({8192, 4096})->Unit(benchmark::kMillisecond)->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
