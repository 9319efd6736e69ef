// Generic paths for any model: the NTK / Gram kernel of per-sample Jacobians through the library's
// tiled ntk::gram_from_jacobians, from Jacobians the caller holds in memory or from a Python
// callable that computes them on demand (dynascope.torch_ntk: torch.func / functorch).
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "common.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

// Jacobians in memory: [N, O, P] or [N, P] (O = 1), C-contiguous.
template <class T>
using InJac = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;

template <class T>
MatrixView<T> kernel_view(Out<T>& out, const ntk::KernelShape& shape) {
  if (static_cast<index_t>(out.size()) != shape.rows * shape.cols)
    throw ShapeMismatch("out: expected " + std::to_string(shape.rows * shape.cols) + " elements, got " +
                        std::to_string(out.size()));
  return matrix_view(out.data(), shape.rows, shape.cols);
}

// The workspace budget of one call (the CLI's --max-memory); 0 keeps the library's default.
Context with_budget(const Context& ctx, std::size_t max_memory) {
  Context c = ctx;
  if (max_memory > 0) c.set_workspace_budget(max_memory);
  return c;
}

struct JacDims {
  index_t n = 0, o = 0, p = 0;
};

template <class T>
JacDims jac_dims(const InJac<T>& j, const char* name) {
  if (j.ndim() != 2 && j.ndim() != 3)
    throw ShapeMismatch(std::string(name) + ": expected [N, O, P] Jacobians or [N, P] per-sample gradients, got " +
                        std::to_string(j.ndim()) + " dimensions");
  JacDims d;
  d.n = static_cast<index_t>(j.shape(0));
  d.o = j.ndim() == 3 ? static_cast<index_t>(j.shape(1)) : 1;
  d.p = static_cast<index_t>(j.shape(j.ndim() - 1));
  if (d.n == 0 || d.o == 0 || d.p == 0) throw InvalidArgument(std::string(name) + ": the Jacobians are empty");
  return d;
}

// Rows [row0, row0 + rows) of samples copied into the library's tile (its leading dimension may
// exceed P).
template <class T>
ntk::JacobianSource<T> memory_source(const T* data, JacDims d) {
  return [data, d](index_t row0, index_t rows, MatrixView<T> out) {
    const T* src = data + row0 * d.o * d.p;
    if (out.ld == d.p) {
      std::memcpy(out.data, src, sizeof(T) * std::size_t(rows * d.o * d.p));
      return;
    }
    for (index_t r = 0; r < rows * d.o; ++r)
      std::memcpy(out.data + r * out.ld, src + r * d.p, sizeof(T) * std::size_t(d.p));
  };
}

template <class T>
void gram_into(InJac<T> j1, std::optional<InJac<T>> j2, const std::string& outputs, int threads, nb::handle progress,
               std::size_t max_memory, Out<T> out) {
  const ntk::Outputs mode = ntk::parse_outputs(outputs);
  const JacDims d1 = jac_dims(j1, "j1");
  JacDims d2 = d1;
  if (j2) {
    d2 = jac_dims(*j2, "j2");
    if (d2.o != d1.o || d2.p != d1.p)
      throw ShapeMismatch("j2: expected " + std::to_string(d1.o) + " outputs and " + std::to_string(d1.p) +
                          " parameters per sample as in j1, got " + std::to_string(d2.o) + " and " +
                          std::to_string(d2.p));
  }
  const auto shape = ntk::kernel_shape(mode, d1.n, d2.n, d1.o);
  MatrixView<T> out_view = kernel_view(out, shape);
  const ntk::JacobianSource<T> s1 = memory_source<T>(j1.data(), d1);
  std::optional<ntk::JacobianSource<T>> s2;
  if (j2) s2 = memory_source<T>(j2->data(), d2);
  Runner run(threads, progress);
  run([&](const Context& ctx) {
    ntk::gram_from_jacobians<T>(with_budget(ctx, max_memory), s1, d1.n, s2 ? &*s2 : nullptr, d2.n, d1.o, d1.p, mode,
                                out_view);
  });
}

// Jacobians computed by Python on demand: fill(row0, rows, out) writes rows [row0, row0 + rows)
// of samples into `out`, a NumPy view [rows * O, P] of the library's tile (row n * O + a =
// d f_a(x_{row0+n}) / dw). The library calls it with the GIL released, so it takes the GIL; the
// view is only valid during the call.
template <class T>
ntk::JacobianSource<T> callback_source(Runner& run, const nb::callable& fill) {
  return [&run, &fill](index_t row0, index_t rows, MatrixView<T> out) {
    nb::gil_scoped_acquire gil;
    run.check_signals();
    try {
      const std::size_t shape[2] = {static_cast<std::size_t>(out.rows), static_cast<std::size_t>(out.cols)};
      const std::int64_t strides[2] = {static_cast<std::int64_t>(out.ld), 1};
      nb::ndarray<nb::numpy, T, nb::ndim<2>> view(out.data, 2, shape, nb::handle(), strides);
      // rv_policy::reference: a view of the tile (nanobind would otherwise copy unowned data).
      fill(row0, rows, nb::cast(view, nb::rv_policy::reference));
    } catch (nb::python_error& e) {
      throw run.fail(std::move(e));
    }
  };
}

template <class T>
void gram_callback_into(nb::callable fill1, index_t n1, std::optional<nb::callable> fill2, index_t n2, index_t o,
                        index_t p, const std::string& outputs, int threads, nb::handle progress, std::size_t max_memory,
                        Out<T> out) {
  const ntk::Outputs mode = ntk::parse_outputs(outputs);
  const auto shape = ntk::kernel_shape(mode, n1, fill2 ? n2 : n1, o);
  MatrixView<T> out_view = kernel_view(out, shape);
  Runner run(threads, progress);
  const ntk::JacobianSource<T> s1 = callback_source<T>(run, fill1);
  std::optional<ntk::JacobianSource<T>> s2;
  if (fill2) s2 = callback_source<T>(run, *fill2);
  run([&](const Context& ctx) {
    ntk::gram_from_jacobians<T>(with_budget(ctx, max_memory), s1, n1, s2 ? &*s2 : nullptr, n2, o, p, mode, out_view);
  });
}

}  // namespace

void register_generic(nb::module_& m) {
  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  m.def("gram_into", &gram_into<float>, "j1"_a.noconvert(), "j2"_a.noconvert().none(), "outputs"_a, "threads"_a,
        "progress"_a.none(), "max_memory"_a, "out"_a.noconvert(),
        "Writes the kernel of per-sample Jacobians j1 [N1, O, P] (and j2) into `out`, tiled.");
  m.def("gram_into", &gram_into<double>, "j1"_a.noconvert(), "j2"_a.noconvert().none(), "outputs"_a, "threads"_a,
        "progress"_a.none(), "max_memory"_a, "out"_a.noconvert());
  m.def("gram_callback_into", &gram_callback_into<float>, "fill1"_a, "n1"_a, "fill2"_a.none(), "n2"_a, "o"_a, "p"_a,
        "outputs"_a, "threads"_a, "progress"_a.none(), "max_memory"_a, "out"_a.noconvert(),
        "Writes the kernel of Jacobians produced by fill(row0, rows, out_view) into `out`, tiled.");
  m.def("gram_callback_into", &gram_callback_into<double>, "fill1"_a, "n1"_a, "fill2"_a.none(), "n2"_a, "o"_a, "p"_a,
        "outputs"_a, "threads"_a, "progress"_a.none(), "max_memory"_a, "out"_a.noconvert());
}

}  // namespace dynascope::python
