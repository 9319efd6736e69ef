// The runner (GIL, progress, Ctrl-C) and the exception types shared by every binding.
#include "common.hpp"

#include <cstdint>
#include <exception>
#include <string>

namespace dynascope::python {

namespace {
PyObject* g_error = nullptr;
PyObject* g_invalid_argument = nullptr;
PyObject* g_shape_mismatch = nullptr;
PyObject* g_out_of_memory = nullptr;

PyObject* new_exception(nb::module_& m, const char* name, PyObject* base, PyObject* extra, const char* doc) {
  nb::object bases = extra ? nb::make_tuple(nb::handle(base), nb::handle(extra)) : nb::borrow(base);
  const std::string qualified = std::string("dynascope.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (!type) throw nb::python_error();
  m.attr(name) = nb::handle(type);
  return type;
}
}  // namespace

namespace {
Context make_context(int threads, const Placement& where, std::uintptr_t stream) {
  if (where.backend != Backend::cuda) return Context::host(threads);
  // cudaStreamLegacy ((cudaStream_t)0x1, driver_types.h; no CUDA header here): the legacy default
  // stream by an explicit handle. A null stream would make Context::cuda create a stream of its
  // own, unordered with the caller's work on the default stream.
  void* s = stream == 0 ? reinterpret_cast<void*>(std::uintptr_t{1}) : reinterpret_cast<void*>(stream);
  return Context::cuda(where.device, s);
}
}  // namespace

void check_params(const model::MlpSpec& spec, std::size_t count) {
  if (static_cast<index_t>(count) != spec.num_params())
    throw ShapeMismatch("params: the network " + spec.arch_string() + " has " + std::to_string(spec.num_params()) +
                        " parameters, got " + std::to_string(count));
}

std::string placement_name(const Placement& p) {
  return p.backend == Backend::cuda ? "cuda:" + std::to_string(p.device) : std::string("cpu");
}

Placement placement(int device_type, int device_id, const char* name) {
  if (device_type == nb::device::cpu::value) return {Backend::host, 0};
  if (device_type == nb::device::cuda::value) return {Backend::cuda, device_id};
  const char* kind = device_type == nb::device::cuda_host::value      ? "pinned CUDA host"
                     : device_type == nb::device::cuda_managed::value ? "CUDA managed"
                     : device_type == nb::device::rocm::value         ? "ROCm"
                                                                      : "non-CPU, non-CUDA";
  throw InvalidArgument(std::string(name) + ": the array is in " + kind + " memory (DLPack device type " +
                        std::to_string(device_type) + "); pass a CPU array or a CUDA device array");
}

void require_placement(const Placement& expected, const Placement& got, const char* name, const char* first) {
  if (got == expected) return;
  throw InvalidArgument(std::string(name) + ": on " + placement_name(got) + ", but " + first + " is on " +
                        placement_name(expected) + "; every array of one call must be on one device");
}

Runner::Runner(int threads, nb::handle progress) : Runner(threads, progress, Placement{}, 0) {}

Runner::Runner(int threads, nb::handle progress, const Placement& where, std::uintptr_t stream)
    : ctx_(make_context(threads, where, stream)) {
  if (!progress.is_none()) progress_ = nb::borrow(progress);
  ctx_.set_progress_sink([this](std::string_view task, index_t done, index_t total) {
    nb::gil_scoped_acquire gil;
    check_signals();
    if (!progress_) return;
    try {
      progress_(nb::str(task.data(), task.size()), done, total);
    } catch (nb::python_error& e) {
      throw fail(std::move(e));
    }
  });
  // Between small units of work (every SGLD step, every operator application): Ctrl-C within
  // ~50 ms however far apart progress reports are. Signals are looked at (GIL taken) at most
  // every 50 ms, so the check costs a clock read per unit.
  ctx_.set_cancel_check([this] {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_poll_ < std::chrono::milliseconds(50)) return false;
    last_poll_ = now;
    nb::gil_scoped_acquire gil;
    check_signals();
    return false;
  });
}

Cancelled Runner::fail(nb::python_error&& error) {
  if (!pending_) pending_ = std::make_unique<nb::python_error>(std::move(error));  // the first one wins
  return Cancelled("stopped by an exception raised in Python");
}

void Runner::check_signals() {
  if (PyErr_CheckSignals() != 0) throw fail(nb::python_error());
}

void Runner::rethrow_pending() {
  if (!pending_) return;
  std::unique_ptr<nb::python_error> e = std::move(pending_);
  e->restore();
  throw nb::python_error();
}

void register_errors(nb::module_& m) {
  g_error = new_exception(m, "Error", PyExc_RuntimeError, nullptr, "Base class of dynascope's errors.");
  g_invalid_argument = new_exception(m, "InvalidArgument", g_error, PyExc_ValueError,
                                     "A value out of range or inconsistent options.");
  g_shape_mismatch = new_exception(m, "ShapeMismatch", g_error, PyExc_ValueError,
                                   "Array shapes that do not fit together.");
  g_out_of_memory = new_exception(m, "OutOfMemory", g_error, PyExc_MemoryError,
                                  "An allocation failed or the workspace budget is too small.");
  // The messages are the library's, the same the command-line tool prints.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      PyObject* type = g_error;
      switch (e.category()) {
        case ErrorCategory::invalid_argument: type = g_invalid_argument; break;
        case ErrorCategory::shape_mismatch: type = g_shape_mismatch; break;
        case ErrorCategory::out_of_memory: type = g_out_of_memory; break;
        default: break;
      }
      PyErr_SetString(type, e.what());
    }
  });
}

}  // namespace dynascope::python
