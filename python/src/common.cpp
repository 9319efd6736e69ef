// The runner (GIL, progress, Ctrl-C) and the exception types shared by every binding.
#include "common.hpp"

#include <exception>

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

Runner::Runner(int threads, nb::handle progress) : ctx_(Context::host(threads)) {
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
