#pragma once
// Shared pieces of the nanobind extension dynascope._core. Each family registers its functions in
// its own translation unit (ntk.cpp, spectra.cpp, ...) through a register_* function declared
// here; module.cpp calls them all.
//
// The pattern every binding follows: the Python layer (python/dynascope/) checks the caller's
// arrays and allocates outputs in the caller's framework; the binding wraps them as views (never
// copying: every ndarray argument is `.noconvert()`), builds the options, and runs the library
// through `run_released`, which releases the GIL, forwards progress to a Python callable and turns
// Ctrl-C into a clean stop.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "dynascope/context.hpp"
#include "dynascope/error.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"
#include "dynascope/types.hpp"
#include "dynascope/view.hpp"

namespace dynascope::python {

namespace nb = nanobind;

// Read-only, C-contiguous host arrays of a given rank, and writable outputs of any rank.
template <class T> using In1 = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T> using In2 = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <class T> using InAny = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
template <class T> using Out = nb::ndarray<T, nb::c_contig, nb::device::cpu>;
template <class T> using Out1 = nb::ndarray<T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T> using Out2 = nb::ndarray<T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// The same without a device constraint: host or CUDA memory (torch CUDA tensors, any DLPack
// array), for the bindings that compute where the caller's data lives. The binding finds out where
// with `placement` and checks that every array of a call is in one place.
template <class T> using DevIn1 = nb::ndarray<const T, nb::ndim<1>, nb::c_contig>;
template <class T> using DevIn2 = nb::ndarray<const T, nb::ndim<2>, nb::c_contig>;
template <class T> using DevIn = nb::ndarray<const T, nb::c_contig>;
template <class T> using DevOut = nb::ndarray<T, nb::c_contig>;

// Integer class labels [N] (the Python layer converts any integer dtype to int64 once).
using Labels = nb::ndarray<const std::int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Where an array's memory lives, in the library's terms (the backend and device of its views).
struct Placement {
  Backend backend = Backend::host;
  int device = 0;  // the cuda device; 0 on the host
  bool operator==(const Placement&) const = default;
};
// "cpu" or "cuda:N", as torch names devices.
std::string placement_name(const Placement& p);
// From DLPack's device type and id; InvalidArgument naming `name` for anything but host (kDLCPU)
// or CUDA device memory (kDLCUDA): pinned host, managed, ROCm, ... memory is refused.
Placement placement(int device_type, int device_id, const char* name);
template <class A>
Placement placement_of(const A& a, const char* name) {
  return placement(a.device_type(), a.device_id(), name);
}
// InvalidArgument unless `got` (the array `name`'s place) is `expected` (that of `first`):
// one call computes in one place.
void require_placement(const Placement& expected, const Placement& got, const char* name, const char* first);

template <class T>
MatrixView<const T> view2(const In2<T>& a) {
  return matrix_view(a.data(), static_cast<index_t>(a.shape(0)), static_cast<index_t>(a.shape(1)));
}
template <class T>
MatrixView<T> view2(Out2<T>& a) {
  return matrix_view(a.data(), static_cast<index_t>(a.shape(0)), static_cast<index_t>(a.shape(1)));
}

// ShapeMismatch naming `params` unless the network `spec` has `count` parameters.
void check_params(const model::MlpSpec& spec, std::size_t count);

// A loss's targets: float values [N, O] or integer class labels [N], exactly one of the two;
// InvalidArgument(`message`) otherwise (each family words it as its documentation does).
template <class T>
model::Targets<T> targets_of(const std::optional<In2<T>>& values, const std::optional<Labels>& labels,
                             const char* message) {
  if (values.has_value() == labels.has_value()) throw InvalidArgument(message);
  model::Targets<T> t;
  if (values)
    t.values = view2(*values);
  else
    t.labels = vector_view(labels->data(), static_cast<index_t>(labels->shape(0)));
  return t;
}

// Runs library code with the GIL released on a host context with `threads` threads (0: OpenMP's
// default), or on a cuda context (Context::cuda) for a Placement on a CUDA device. The context's
// progress sink takes the GIL, checks for signals (Ctrl-C) and calls
// `progress(task: str, done: int, total: int)` when it is not None. When either raises, the sink
// throws dynascope::Cancelled, the library unwinds, and the Python exception (KeyboardInterrupt,
// or whatever the callable raised) is re-raised to the caller. The context's cancel check
// (Context::set_cancel_check, asked every SGLD step and operator application) looks for signals
// too, at most every 50 ms, so Ctrl-C does not wait for the next progress report.
//
// Use: `Runner run(threads, progress); run([&](const Context& ctx) { ... });`. A Python callback
// called from inside the computation (an operator's matvec, an LLC loss) takes the GIL itself
// (nb::gil_scoped_acquire) and reports its exception through `run.fail()`.
//
// On CUDA the library's kernels, copies and cuBLAS calls are queued on the caller's stream
// (`stream`: a cudaStream_t as an integer, e.g. torch.cuda.current_stream().cuda_stream), so they
// run after the work that produced the inputs; stream 0 is the legacy default stream (torch's
// default stream), not a stream of the library's own. `run(...)` synchronizes that stream before
// it returns, so the outputs are complete when Python sees them; on an exception it still waits
// for the queued work (best effort) before the caller's buffers can be freed.
class Runner {
 public:
  Runner(int threads, nb::handle progress);
  Runner(int threads, nb::handle progress, const Placement& where, std::uintptr_t stream);
  Runner(const Runner&) = delete;             // the context's sink points at this object
  Runner& operator=(const Runner&) = delete;

  const Context& context() const { return ctx_; }

  // Records the Python exception now set (call with the GIL held, inside a `catch
  // (nb::python_error&)` or after a failed C-API call) and returns the exception to throw from the
  // library side, which ends the computation.
  Cancelled fail(nb::python_error&& error);
  // With the GIL held: stop when Ctrl-C was pressed (throws Cancelled after recording it).
  void check_signals();

  template <class F>
  decltype(auto) operator()(F&& fn) {
    try {
      nb::gil_scoped_release nogil;
      Drain drain{ctx_};
      if constexpr (std::is_void_v<std::invoke_result_t<F, const Context&>>) {
        std::forward<F>(fn)(static_cast<const Context&>(ctx_));
        drain.now();
      } else {
        decltype(auto) result = std::forward<F>(fn)(static_cast<const Context&>(ctx_));
        drain.now();
        return result;
      }
    } catch (const Cancelled&) {
      rethrow_pending();
      throw;
    }
  }

 private:
  // Waits for the context's stream (a no-op on the host): `now()` on success, where a failure of
  // the queued work is reported; the destructor on unwinding, where it is swallowed (the first
  // exception is the one to report).
  struct Drain {
    const Context& ctx;
    bool done = false;
    void now() {
      done = true;
      ctx.synchronize();
    }
    ~Drain() {
      if (done) return;
      try {
        ctx.synchronize();
      } catch (...) {
      }
    }
  };
  void rethrow_pending();   // GIL held: re-raises the recorded Python exception, if any
  Context ctx_;
  std::chrono::steady_clock::time_point last_poll_{};   // the cancel check's last look at signals
  nb::object progress_;
  std::unique_ptr<nb::python_error> pending_;
};

void register_errors(nb::module_& m);
void register_models(nb::module_& m);
void register_ntk(nb::module_& m);
void register_spectra(nb::module_& m);
void register_regions(nb::module_& m);
void register_llc(nb::module_& m);
void register_elasticity(nb::module_& m);
void register_train(nb::module_& m);
void register_generic(nb::module_& m);
void register_io(nb::module_& m);

}  // namespace dynascope::python
