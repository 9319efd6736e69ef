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

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "dynascope/context.hpp"
#include "dynascope/error.hpp"
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

template <class T>
MatrixView<const T> view2(const In2<T>& a) {
  return matrix_view(a.data(), static_cast<index_t>(a.shape(0)), static_cast<index_t>(a.shape(1)));
}
template <class T>
MatrixView<T> view2(Out2<T>& a) {
  return matrix_view(a.data(), static_cast<index_t>(a.shape(0)), static_cast<index_t>(a.shape(1)));
}

// Runs library code with the GIL released on a host context with `threads` threads (0: OpenMP's
// default). The context's progress sink takes the GIL, checks for signals (Ctrl-C) and calls
// `progress(task: str, done: int, total: int)` when it is not None. When either raises, the sink
// throws dynascope::Cancelled, the library unwinds, and the Python exception (KeyboardInterrupt,
// or whatever the callable raised) is re-raised to the caller.
//
// Use: `Runner run(threads, progress); run([&](const Context& ctx) { ... });`. A Python callback
// called from inside the computation (an operator's matvec, an LLC loss) takes the GIL itself
// (nb::gil_scoped_acquire) and reports its exception through `run.fail()`.
class Runner {
 public:
  Runner(int threads, nb::handle progress);
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
      return std::forward<F>(fn)(static_cast<const Context&>(ctx_));
    } catch (const Cancelled&) {
      rethrow_pending();
      throw;
    }
  }

 private:
  void rethrow_pending();   // GIL held: re-raises the recorded Python exception, if any
  Context ctx_;
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
