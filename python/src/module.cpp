// dynascope._core: the nanobind extension behind the `dynascope` Python package.
// This layer is deliberately thin: the Python side (python/dynascope/__init__.py) checks the
// caller's arrays and allocates results in the caller's framework, and these functions only
// wrap them as views (never copying) and call the library with the GIL released.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dynascope/context.hpp"
#include "dynascope/error.hpp"
#include "dynascope/model.hpp"
#include "dynascope/ntk.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using namespace dynascope;

// Inputs are read-only, C-contiguous host arrays; `.noconvert()` on every argument makes
// nanobind refuse rather than silently copy, and the Python layer has already produced a clear
// message for the usual mistakes.
template <class T> using In2 = nb::ndarray<const T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <class T> using In1 = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T> using Out = nb::ndarray<T, nb::c_contig, nb::device::cpu>;

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

template <class T>
MatrixView<const T> view2(const In2<T>& a) {
  return matrix_view(a.data(), static_cast<index_t>(a.shape(0)), static_cast<index_t>(a.shape(1)));
}

// The kernel as the row-major matrix the library writes, over the caller's buffer of the
// kernel's tensor shape (same elements, same order).
template <class T>
MatrixView<T> kernel_view(Out<T>& out, const ntk::KernelShape& shape, const char* name) {
  if (static_cast<index_t>(out.size()) != shape.rows * shape.cols)
    throw InvalidArgument(std::string(name) + ": expected " + std::to_string(shape.rows * shape.cols) +
                          " elements, got " + std::to_string(out.size()));
  return matrix_view(out.data(), shape.rows, shape.cols);
}

template <class T>
void ntk_into(const model::MlpSpec& spec, In1<T> params, In2<T> x1, std::optional<In2<T>> x2,
              const std::string& outputs, const std::string& method, int threads, Out<T> out,
              std::vector<Out<T>> per_layer) {
  ntk::NtkOptions options;
  options.outputs = ntk::parse_outputs(outputs);
  options.method = ntk::parse_method(method);
  options.per_layer = !per_layer.empty();
  if (static_cast<index_t>(params.shape(0)) != spec.num_params())
    throw ShapeMismatch("params: the network " + spec.arch_string() + " has " + std::to_string(spec.num_params()) +
                        " parameters, got " + std::to_string(params.shape(0)));
  const index_t n1 = static_cast<index_t>(x1.shape(0));
  const index_t n2 = x2 ? static_cast<index_t>(x2->shape(0)) : n1;
  const auto shape = ntk::kernel_shape(options.outputs, n1, n2, spec.outputs());
  MatrixView<T> out_view = kernel_view(out, shape, "out");
  std::vector<MatrixView<T>> layer_views;
  for (auto& l : per_layer) layer_views.push_back(kernel_view(l, shape, "per_layer"));
  std::optional<MatrixView<const T>> x2_view;
  if (x2) x2_view = view2(*x2);
  nb::gil_scoped_release nogil;
  const Context ctx = Context::host(threads);
  ntk::empirical_ntk_into<T>(ctx, spec, params.data(), view2(x1), x2_view, options, out_view, layer_views);
}

model::MlpSpec make_spec(const std::vector<index_t>& widths, const std::vector<bool>& bias,
                         const std::vector<std::string>& activations, const std::string& parameterization,
                         double bias_scale) {
  model::MlpSpec spec;
  spec.widths = widths;
  spec.bias = bias;
  for (const auto& a : activations) spec.activations.push_back(model::parse_activation(a));
  spec.parameterization = model::parse_parameterization(parameterization);
  spec.bias_scale = bias_scale;
  spec.validate();
  return spec;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "dynascope's compiled core (use the `dynascope` package, not this module)";

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

  nb::class_<model::MlpSpec>(m, "MlpSpec", "The architecture of a multilayer perceptron (no parameters).")
      .def_static(
          "from_arch",
          [](const std::string& arch, const std::string& activation, const std::string& parameterization) {
            return model::MlpSpec::from_arch(arch, model::parse_activation(activation),
                                             model::parse_parameterization(parameterization));
          },
          "arch"_a, "activation"_a = "relu", "parameterization"_a = "standard",
          "From an architecture string such as \"784-512-10\", one activation for every hidden layer.")
      .def(nb::new_(&make_spec), "widths"_a, "bias"_a, "activations"_a, "parameterization"_a = "standard",
           "bias_scale"_a = 1.0, "From per-layer widths, biases and activations.")
      .def_prop_ro("widths", [](const model::MlpSpec& s) { return s.widths; })
      .def_prop_ro("bias", [](const model::MlpSpec& s) { return s.bias; })
      .def_prop_ro("activations",
                   [](const model::MlpSpec& s) {
                     std::vector<std::string> names;
                     for (const auto& a : s.activations) names.push_back(model::to_string(a));
                     return names;
                   })
      .def_prop_ro("parameterization",
                   [](const model::MlpSpec& s) { return std::string(model::to_string(s.parameterization)); })
      .def_prop_ro("bias_scale", [](const model::MlpSpec& s) { return s.bias_scale; })
      .def_prop_ro("num_params", &model::MlpSpec::num_params)
      .def_prop_ro("arch", &model::MlpSpec::arch_string)
      .def("set_bias",
           [](model::MlpSpec& s, const std::vector<bool>& bias) {
             model::MlpSpec t = s;
             t.bias = bias;
             t.validate();
             s = t;
           },
           "bias"_a, "Biases per layer.");

  m.def(
      "kernel_shape",
      [](const std::string& outputs, index_t n1, index_t n2, index_t o) {
        return ntk::kernel_shape(ntk::parse_outputs(outputs), n1, n2, o).tensor;
      },
      "outputs"_a, "n1"_a, "n2"_a, "o"_a, "The NTK's tensor shape for an output mode.");

  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  m.def("ntk_into", &ntk_into<float>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "x2"_a.noconvert().none(), "outputs"_a, "method"_a, "threads"_a, "out"_a.noconvert(),
        "per_layer"_a.noconvert(), "Writes the empirical NTK into `out` (and per-layer kernels into `per_layer`).");
  m.def("ntk_into", &ntk_into<double>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "x2"_a.noconvert().none(), "outputs"_a, "method"_a, "threads"_a, "out"_a.noconvert(),
        "per_layer"_a.noconvert());

  // The address nanobind hands to C++ for an input, without conversion: the tests compare it with
  // the caller's data pointer to check that inputs are never copied.
  m.def("input_address", [](nb::ndarray<const float, nb::c_contig, nb::device::cpu> a) {
          return reinterpret_cast<std::uintptr_t>(a.data()); }, "a"_a.noconvert());
  m.def("input_address", [](nb::ndarray<const double, nb::c_contig, nb::device::cpu> a) {
          return reinterpret_cast<std::uintptr_t>(a.data()); }, "a"_a.noconvert());
}
