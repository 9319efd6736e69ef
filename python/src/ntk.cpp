// dynascope.ntk: the empirical NTK of an Mlp, written into caller-allocated outputs.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "dynascope/model.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

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
              const std::string& outputs, const std::string& method, int threads, nb::handle progress, Out<T> out,
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
  Runner run(threads, progress);
  run([&](const Context& ctx) {
    ntk::empirical_ntk_into<T>(ctx, spec, params.data(), view2(x1), x2_view, options, out_view, layer_views);
  });
}

}  // namespace

void register_ntk(nb::module_& m) {
  m.def(
      "kernel_shape",
      [](const std::string& outputs, index_t n1, index_t n2, index_t o) {
        return ntk::kernel_shape(ntk::parse_outputs(outputs), n1, n2, o).tensor;
      },
      "outputs"_a, "n1"_a, "n2"_a, "o"_a, "The NTK's tensor shape for an output mode.");

  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  m.def("ntk_into", &ntk_into<float>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "x2"_a.noconvert().none(), "outputs"_a, "method"_a, "threads"_a, "progress"_a.none(), "out"_a.noconvert(),
        "per_layer"_a.noconvert(), "Writes the empirical NTK into `out` (and per-layer kernels into `per_layer`).");
  m.def("ntk_into", &ntk_into<double>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "x2"_a.noconvert().none(), "outputs"_a, "method"_a, "threads"_a, "progress"_a.none(), "out"_a.noconvert(),
        "per_layer"_a.noconvert());

  // The address nanobind hands to C++ for an input, without conversion: the tests compare it with
  // the caller's data pointer to check that inputs are never copied.
  m.def("input_address", [](nb::ndarray<const float, nb::c_contig, nb::device::cpu> a) {
          return reinterpret_cast<std::uintptr_t>(a.data()); }, "a"_a.noconvert());
  m.def("input_address", [](nb::ndarray<const double, nb::c_contig, nb::device::cpu> a) {
          return reinterpret_cast<std::uintptr_t>(a.data()); }, "a"_a.noconvert());
}

}  // namespace dynascope::python
