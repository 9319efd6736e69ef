// The shared primitives at the sizes the next families use them:
//   row reductions (segmented sums): the squared norms of C chains of P float parameters into
//   float64, C x P = 64 x 100k (and 1 x 100k, 512 x 1k);
//   distinct-row counting: N bit-packed patterns of W words, about 10 % distinct (1M x 2 words,
//   with and without ids and counts; 1M x 1 and 1M x 16).
// Rates: items/s (elements reduced, rows counted) and bytes/s (the input read once). Cases named
// *_cuda run on device 0 (device time by CUDA events) and are skipped where no device is usable.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "dynascope/array.hpp"
#include "dynascope/primitives.hpp"

namespace {

using namespace dynascope;

template <Backend B>
void BM_row_squared_norms(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  const index_t chains = state.range(0), params = state.range(1);
  std::vector<float> w(static_cast<std::size_t>(chains * params));
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& x : w) x = u(gen);
  const Array<float> weights = Array<float>::from_host(*ctx, {chains, params}, w);
  Array<double> norms(*ctx, {chains});
  const auto run = [&] { primitives::row_squared_norms(*ctx, weights.matrix(), norms.vector()); };
  run();  // outside the timing: thread pools, first-touch pages
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    run();
    benchmark::DoNotOptimize(norms.data());
  }
  state.SetItemsProcessed(state.iterations() * chains * params);
  state.SetBytesProcessed(state.iterations() * chains * params * index_t(sizeof(float)));
  state.counters["C"] = double(chains);
  state.counters["P"] = double(params);
}

// N rows of W words drawn from N / 10 random patterns (about 10 % distinct).
std::vector<std::uint64_t> patterns(index_t n, index_t words) {
  std::mt19937_64 gen(7);
  const index_t distinct = std::max<index_t>(n / 10, 1);
  std::vector<std::uint64_t> base(static_cast<std::size_t>(distinct * words)), rows(static_cast<std::size_t>(n * words));
  for (auto& x : base) x = gen();
  for (index_t i = 0; i < n; ++i) {
    const index_t k = index_t(gen() % std::uint64_t(distinct));
    for (index_t w = 0; w < words; ++w)
      rows[static_cast<std::size_t>(i * words + w)] = base[static_cast<std::size_t>(k * words + w)];
  }
  return rows;
}

template <Backend B>
void BM_distinct_rows(benchmark::State& state) {
  const std::optional<Context> ctx = bench::context_for(state, B);
  if (!ctx) return;
  const index_t n = state.range(0), words = state.range(1);
  const bool outputs = state.range(2) != 0;
  const Array<std::uint64_t> rows = Array<std::uint64_t>::from_host(*ctx, {n, words}, patterns(n, words));
  const primitives::DistinctRowsOptions options{.ids = outputs, .counts = outputs};
  index_t classes = primitives::distinct_rows(*ctx, rows.matrix(), options).count;  // warm-up, outside the timing
  bench::IterationTimer timer(*ctx);
  for (auto _ : state) {
    auto scope = timer.time(state);
    classes = primitives::distinct_rows(*ctx, rows.matrix(), options).count;
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetBytesProcessed(state.iterations() * n * words * index_t(sizeof(std::uint64_t)));
  state.counters["N"] = double(n);
  state.counters["W"] = double(words);
  state.counters["distinct"] = double(classes);
}

void norm_sizes(benchmark::internal::Benchmark* b) {
  b->Args({64, 100000})->Args({1, 100000})->Args({512, 1000})->ArgNames({"C", "P"});
  b->Unit(benchmark::kMicrosecond)->UseManualTime();
}
void pattern_sizes(benchmark::internal::Benchmark* b) {
  b->Args({1000000, 2, 0})->Args({1000000, 2, 1})->Args({1000000, 1, 0})->Args({1000000, 16, 0});
  b->ArgNames({"N", "W", "ids"})->Unit(benchmark::kMillisecond)->UseManualTime();
}

BENCHMARK(BM_row_squared_norms<Backend::host>)->Name("row_squared_norms")->Apply(norm_sizes);
BENCHMARK(BM_distinct_rows<Backend::host>)->Name("distinct_rows")->Apply(pattern_sizes);
BENCHMARK(BM_row_squared_norms<Backend::cuda>)->Name("row_squared_norms_cuda")->Apply(norm_sizes);
BENCHMARK(BM_distinct_rows<Backend::cuda>)->Name("distinct_rows_cuda")->Apply(pattern_sizes);

}  // namespace

BENCHMARK_MAIN();
