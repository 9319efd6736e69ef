#pragma once
// Shared by the benchmark suites: the machine's sgemm rate measured once in this binary, so each
// benchmark can report its own rate as a fraction of it.
#include <benchmark/benchmark.h>

#include <chrono>
#include <vector>

#include "dynascope/blas.hpp"

namespace dynascope::bench {

// sgemm GFLOP/s at 512 x 1024 x 1024 (an MNIST-sized layer), best of several runs.
inline double sgemm_gflops() {
  static const double rate = [] {
    const index_t m = 512, n = 1024, k = 1024;
    Context ctx = Context::host();
    std::vector<float> a(std::size_t(m * k), 0.5f), b(std::size_t(k * n), 0.25f), c(std::size_t(m * n));
    double best = 1e300;
    for (int rep = 0; rep < 8; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      blas::gemm<float>(ctx, blas::Op::none, blas::Op::none, 1.0f, {a.data(), m, k, k}, {b.data(), k, n, n}, 0.0f,
                        {c.data(), m, n, n});
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return 2.0 * double(m) * double(n) * double(k) / best * 1e-9;
  }();
  return rate;
}

// Times the loop body itself, so that the achieved rate can be set next to the sgemm rate:
//   Timer t; for (auto _ : state) { auto scope = t.scope(); work(); }  t.report(state, flops_per_iter);
class Timer {
 public:
  struct Scope {
    Timer& t;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    ~Scope() { t.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
  };
  Scope scope() { return Scope{*this}; }
  // Counters: "flops" (a rate, printed like 95.1G/s) and "of_sgemm" = achieved / sgemm rate.
  void report(benchmark::State& state, double flops_per_iter) const {
    const double rate = seconds > 0 ? flops_per_iter * double(state.iterations()) / seconds : 0;
    state.counters["flops"] = benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
    state.counters["of_sgemm"] = rate * 1e-9 / sgemm_gflops();
  }
  double seconds = 0;
};

}  // namespace dynascope::bench
