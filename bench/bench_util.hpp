#pragma once
// Shared by the benchmark suites: the machine's sgemm rate measured once in this binary, so each
// benchmark can report its own rate as a fraction of it, and a per-iteration timer that measures
// device time on cuda contexts (CUDA events) and wall time on host ones.
#include <benchmark/benchmark.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dynascope/blas.hpp"
#include "dynascope/config.hpp"

#if DYNASCOPE_WITH_CUDA
#include <cuda_runtime.h>
#endif

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

// The context a benchmark case runs on: host, or cuda device 0. A cuda case on a machine (or
// build) without a usable device is skipped with the error "no CUDA device" and gets nullopt.
inline std::optional<Context> context_for(benchmark::State& state, Backend backend) {
  if (backend == Backend::host) return Context::host();
  if (!cuda_available()) {
    state.SkipWithError("no CUDA device");
    return std::nullopt;
  }
  return Context::cuda(0);
}

// Per-iteration time of the work a loop body queues, for benchmarks registered with
// UseManualTime():
//   IterationTimer timer(ctx);
//   for (auto _ : state) { auto scope = timer.time(state); work(ctx); }
// On a cuda context the scope records a CUDA event on ctx.stream() when it opens and another when
// it closes, waits for the second and reports the time between them: the device time of the work
// queued on that stream in between, without the host's launch overhead around it or the wait. On a
// host context it reports the wall time of the scope. `seconds` sums what was reported.
class IterationTimer {
 public:
  explicit IterationTimer(const Context& ctx) : ctx_(ctx) {
#if DYNASCOPE_WITH_CUDA
    if (ctx_.is_cuda()) {
      const DeviceScope on(ctx_.device());
      check(cudaEventCreate(&start_), "cudaEventCreate");
      check(cudaEventCreate(&stop_), "cudaEventCreate");
    }
#endif
  }
  ~IterationTimer() {
#if DYNASCOPE_WITH_CUDA
    if (start_) cudaEventDestroy(start_);
    if (stop_) cudaEventDestroy(stop_);
#endif
  }
  IterationTimer(const IterationTimer&) = delete;
  IterationTimer& operator=(const IterationTimer&) = delete;

  class Scope {
   public:
    Scope(IterationTimer& t, benchmark::State& state) : t_(t), state_(state) { t_.start(); }
    ~Scope() {
      try {
        const double s = t_.stop();
        t_.seconds += s;
        state_.SetIterationTime(s);
      } catch (const std::exception& e) {
        state_.SkipWithError(e.what());  // a failed CUDA call ends the case with its message
      }
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    IterationTimer& t_;
    benchmark::State& state_;
  };
  Scope time(benchmark::State& state) { return Scope(*this, state); }

  double seconds = 0;

 private:
  void start() {
#if DYNASCOPE_WITH_CUDA
    if (ctx_.is_cuda()) {
      const DeviceScope on(ctx_.device());
      check(cudaEventRecord(start_, static_cast<cudaStream_t>(ctx_.stream())), "cudaEventRecord");
      return;
    }
#endif
    t0_ = std::chrono::steady_clock::now();
  }
  double stop() {
#if DYNASCOPE_WITH_CUDA
    if (ctx_.is_cuda()) {
      const DeviceScope on(ctx_.device());
      check(cudaEventRecord(stop_, static_cast<cudaStream_t>(ctx_.stream())), "cudaEventRecord");
      check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
      return 1e-3 * double(ms);
    }
#endif
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

#if DYNASCOPE_WITH_CUDA
  static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
  }
  // Events belong to the device current when they are created and can only be recorded on that
  // device's streams: make the context's device current, and restore the caller's.
  struct DeviceScope {
    explicit DeviceScope(int device) {
      check(cudaGetDevice(&previous), "cudaGetDevice");
      if (previous != device) check(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceScope() {
      int now = previous;
      if (cudaGetDevice(&now) == cudaSuccess && now != previous) cudaSetDevice(previous);
    }
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;
    int previous = 0;
  };
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
#endif
  Context ctx_;
  std::chrono::steady_clock::time_point t0_{};
};

}  // namespace dynascope::bench
