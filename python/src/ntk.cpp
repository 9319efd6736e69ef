// dynascope.ntk: the empirical NTK of an Mlp, written into caller-allocated outputs, and what the
// CLI's `ntk` reports about a kernel matrix (alignment, top eigenvalues, energies E_k, distance).
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <string>
#include <vector>

#include "common.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/model.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

// The kernel as the row-major matrix the library writes, over the caller's buffer of the
// kernel's tensor shape (same elements, same order), in the caller's memory (host or CUDA).
template <class T>
MatrixView<T> kernel_view(DevOut<T>& out, const ntk::KernelShape& shape, const Placement& where, const char* name) {
  if (static_cast<index_t>(out.size()) != shape.rows * shape.cols)
    throw InvalidArgument(std::string(name) + ": expected " + std::to_string(shape.rows * shape.cols) +
                          " elements, got " + std::to_string(out.size()));
  return matrix_view(out.data(), shape.rows, shape.cols, where.backend, where.device);
}

template <class T>
MatrixView<const T> device_view2(const DevIn2<T>& a, const Placement& where) {
  return matrix_view(a.data(), static_cast<index_t>(a.shape(0)), static_cast<index_t>(a.shape(1)), where.backend,
                     where.device);
}

// Computes where x1 lives: on the host, or on its CUDA device with the caller's `stream` (see
// Runner), reading params, x1 and x2 and writing out and per_layer in place. Every array must be
// where x1 is (the Python layer says so first, with the fix; this is the binding's own check).
template <class T>
void ntk_into(const model::MlpSpec& spec, DevIn1<T> params, DevIn2<T> x1, std::optional<DevIn2<T>> x2,
              const std::string& outputs, const std::string& method, int threads, nb::handle progress, DevOut<T> out,
              std::vector<DevOut<T>> per_layer, std::uintptr_t stream) {
  ntk::NtkOptions options;
  options.outputs = ntk::parse_outputs(outputs);
  options.method = ntk::parse_method(method);
  options.per_layer = !per_layer.empty();
  check_params(spec, params.shape(0));
  const Placement where = placement_of(x1, "x1");
  require_placement(where, placement_of(params, "params"), "params", "x1");
  if (x2) require_placement(where, placement_of(*x2, "x2"), "x2", "x1");
  require_placement(where, placement_of(out, "out"), "out", "x1");
  for (const auto& l : per_layer) require_placement(where, placement_of(l, "per_layer"), "per_layer", "x1");
  const index_t n1 = static_cast<index_t>(x1.shape(0));
  const index_t n2 = x2 ? static_cast<index_t>(x2->shape(0)) : n1;
  const auto shape = ntk::kernel_shape(options.outputs, n1, n2, spec.outputs());
  MatrixView<T> out_view = kernel_view(out, shape, where, "out");
  std::vector<MatrixView<T>> layer_views;
  for (auto& l : per_layer) layer_views.push_back(kernel_view(l, shape, where, "per_layer"));
  std::optional<MatrixView<const T>> x2_view;
  if (x2) x2_view = device_view2(*x2, where);
  const MatrixView<const T> x1_view = device_view2(x1, where);
  Runner run(threads, progress, where, stream);
  run([&](const Context& ctx) {
    ntk::empirical_ntk_into<T>(ctx, spec, params.data(), x1_view, x2_view, options, out_view, layer_views);
  });
}

template <class T>
double alignment(In2<T> kernel, In2<double> y, bool centered) {
  nb::gil_scoped_release nogil;
  // The centred alignment's one-pass formula assumes a symmetric kernel.
  if (centered) linalg::check_symmetric<T>(view2(kernel), std::is_same_v<T, float> ? 1e-5 : 1e-10);
  return ntk::kernel_target_alignment(view2(kernel), view2(y), centered);
}

double distance(In2<double> k1, In2<double> k2) {
  nb::gil_scoped_release nogil;
  return ntk::kernel_distance(view2(k1), view2(k2));
}

// The top `values.size()` eigenpairs of a symmetric kernel matrix, as the CLI's `ntk` computes them
// (--k, --energy): the dense solver when the kernel is small or a large share of its eigenvectors
// is wanted, else Lanczos on the kernel in place. Writes values (descending) and the unit
// eigenvectors as rows of `vectors` [k, M]; returns the solver's report (the CLI's "eigen" JSON).
template <class T>
nb::dict kernel_eigen_into(In2<T> kernel, std::uint64_t seed, int threads, nb::handle progress, Out1<double> values,
                           Out2<T> vectors) {
  const MatrixView<const T> k = view2(kernel);
  const index_t m = k.rows, want = static_cast<index_t>(values.shape(0));
  if (want < 1 || want > m)
    throw InvalidArgument("k: expected 1 <= k <= " + std::to_string(m) + " (the kernel's size), got " +
                          std::to_string(want));
  if (static_cast<index_t>(vectors.shape(0)) != want || static_cast<index_t>(vectors.shape(1)) != m)
    throw ShapeMismatch("vectors: expected [" + std::to_string(want) + ", " + std::to_string(m) + "]");
  linalg::LanczosOptions o;
  o.k = want;
  o.which = linalg::Which::largest;
  o.tol = std::is_same_v<T, float> ? 1e-5 : 1e-10;
  o.seed = seed;
  o.method = (m <= o.dense_below || 4 * want > m) ? linalg::EigenMethod::dense : linalg::EigenMethod::lanczos;
  Runner run(threads, progress);
  const linalg::EigenResult<T> e = run([&](const Context& ctx) {
    linalg::check_symmetric<T>(k, std::is_same_v<T, float> ? 1e-5 : 1e-10);
    linalg::DenseOperator<T> op(ctx, k);
    return linalg::eigsh<T>(op, o);
  });
  for (index_t i = 0; i < want; ++i) values.data()[i] = e.values[std::size_t(i)];
  std::copy(e.vectors.data(), e.vectors.data() + want * m, vectors.data());
  nb::dict info;
  info["method"] = linalg::to_string(e.method);
  nb::list status;
  for (const auto st : e.status) status.append(linalg::to_string(st));
  info["status"] = status;
  info["all_converged"] = e.all_converged;
  info["multiplicity_checked"] = e.multiplicity_checked;
  if (e.missed_recovered > 0) info["missed_recovered"] = e.missed_recovered;
  info["k"] = want;
  info["tol"] = o.tol;
  if (!e.warnings.empty()) {
    nb::list w;
    for (const auto& s : e.warnings) w.append(nb::str(s.c_str()));
    info["warnings"] = w;
  }
  info["max_residual"] = e.residuals.empty() ? 0.0 : *std::max_element(e.residuals.begin(), e.residuals.end());
  info["matvecs"] = e.matvecs;
  return info;
}

template <class T>
std::vector<double> energy_from_vectors(In2<T> vectors, In2<double> y, const std::vector<index_t>& ks) {
  nb::gil_scoped_release nogil;
  return ntk::cumulative_energy<T>(view2(vectors), view2(y), ks);
}

}  // namespace

void register_ntk(nb::module_& m) {
  // The library's view of CUDA (here because dynascope.ntk is the package's first CUDA path).
  m.def(
      "cuda_status",
      [] {
        const CudaStatus st = cuda_status();
        nb::dict d;
        d["built"] = st.built;
        d["device_count"] = st.device_count;
        d["reason"] = st.reason;
        return d;
      },
      "{'built', 'device_count', 'reason'}: whether the library has the CUDA backend, how many devices it "
      "can use, and why none when none (never touches a device when none is usable).");
  m.def("cuda_available", [] { return cuda_available(); },
        "True when the library has the CUDA backend and at least one usable device.");

  m.def(
      "kernel_shape",
      [](const std::string& outputs, index_t n1, index_t n2, index_t o) {
        return ntk::kernel_shape(ntk::parse_outputs(outputs), n1, n2, o).tensor;
      },
      "outputs"_a, "n1"_a, "n2"_a, "o"_a, "The NTK's tensor shape for an output mode.");

  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  // Arrays on the host or one CUDA device (all of them in one place); `stream`: the caller's
  // cudaStream_t as an integer (0: the default stream), ignored on the host.
  m.def("ntk_into", &ntk_into<float>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "x2"_a.noconvert().none(), "outputs"_a, "method"_a, "threads"_a, "progress"_a.none(), "out"_a.noconvert(),
        "per_layer"_a.noconvert(), "stream"_a = 0,
        "Writes the empirical NTK into `out` (and per-layer kernels into `per_layer`), where x1 lives.");
  m.def("ntk_into", &ntk_into<double>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "x2"_a.noconvert().none(), "outputs"_a, "method"_a, "threads"_a, "progress"_a.none(), "out"_a.noconvert(),
        "per_layer"_a.noconvert(), "stream"_a = 0);

  m.def("kernel_target_alignment", &alignment<float>, "kernel"_a.noconvert(), "y"_a.noconvert(), "centered"_a,
        "Kernel-target alignment of a square kernel [M, M] with float64 targets [M, C].");
  m.def("kernel_target_alignment", &alignment<double>, "kernel"_a.noconvert(), "y"_a.noconvert(), "centered"_a);
  m.def("kernel_distance", &distance, "k1"_a.noconvert(), "k2"_a.noconvert(),
        "1 - <K1, K2>_F / (||K1||_F ||K2||_F) of two float64 matrices of one shape.");
  m.def("energy_ks", &ntk::energy_ks, "m"_a, "The k values 1, 2, 5, 10, 20, 50, ... up to m (and m).");
  m.def("kernel_eigen_into", &kernel_eigen_into<float>, "kernel"_a.noconvert(), "seed"_a, "threads"_a,
        "progress"_a.none(), "values"_a.noconvert(), "vectors"_a.noconvert(),
        "Top eigenpairs of a symmetric kernel (as the CLI's ntk --k); returns the solver's report.");
  m.def("kernel_eigen_into", &kernel_eigen_into<double>, "kernel"_a.noconvert(), "seed"_a, "threads"_a,
        "progress"_a.none(), "values"_a.noconvert(), "vectors"_a.noconvert());
  m.def("cumulative_energy", &energy_from_vectors<float>, "vectors"_a.noconvert(), "y"_a.noconvert(), "ks"_a,
        "E_k of float64 targets [M, C] in the leading eigenvectors (rows of `vectors` [k, M]).");
  m.def("cumulative_energy", &energy_from_vectors<double>, "vectors"_a.noconvert(), "y"_a.noconvert(), "ks"_a);

  // The address nanobind hands to C++ for an input (host or CUDA), without conversion: the tests
  // compare it with the caller's data pointer to check that inputs are never copied.
  m.def("input_address", [](DevIn<float> a) { return reinterpret_cast<std::uintptr_t>(a.data()); },
        "a"_a.noconvert());
  m.def("input_address", [](DevIn<double> a) { return reinterpret_cast<std::uintptr_t>(a.data()); },
        "a"_a.noconvert());
}

}  // namespace dynascope::python
