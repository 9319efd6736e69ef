// eigsh, slq, trace (Hutchinson, Hutch++) on built-in and Python operators.
//
// An operator crosses into Python as `_core.Operator`: its dtype, its size and a recipe that
// builds the library's LinearOperator on the context of the call that uses it (the context
// carries that call's threads and progress sink, and a Python callback needs that call's Runner
// to report its exceptions). The recipe holds the caller's arrays (nb::ndarray references keep
// them alive), never copies of them.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common.hpp"
#include "dynascope/curvature.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

template <class T>
using Factory = std::function<std::unique_ptr<linalg::LinearOperator<T>>(const Context&, Runner&)>;


struct Operator {
  std::string dtype;  // "float32" or "float64"
  index_t size = 0;
  std::string kind;   // "dense", "callback", "ntk", "ggn", "hessian"
  Factory<float> make32;
  Factory<double> make64;

  template <class T>
  const Factory<T>& factory() const {
    if constexpr (std::is_same_v<T, float>) return make32; else return make64;
  }
};

template <class T>
const char* dtype_name() { return std::is_same_v<T, float> ? "float32" : "float64"; }

template <class T>
void set_factory(Operator& op, Factory<T> f) {
  op.dtype = dtype_name<T>();
  if constexpr (std::is_same_v<T, float>) op.make32 = std::move(f); else op.make64 = std::move(f);
}

// ---- operators ----

template <class T>
Operator dense_operator(In2<T> a) {
  const index_t n = static_cast<index_t>(a.shape(0));
  if (a.shape(0) != a.shape(1))
    throw ShapeMismatch("operator: expected a square [n, n] matrix, got shape [" + std::to_string(a.shape(0)) + ", " +
                        std::to_string(a.shape(1)) + "]");
  if (n == 0) throw InvalidArgument("operator: the matrix is empty");
  {
    // The same check and tolerance as the command line's `eigen --matrix`.
    nb::gil_scoped_release nogil;
    linalg::check_symmetric<T>(view2(a), std::is_same_v<T, float> ? 1e-5 : 1e-10);
  }
  Operator op;
  op.size = n;
  op.kind = "dense";
  set_factory<T>(op, [a](const Context& ctx, Runner&) -> std::unique_ptr<linalg::LinearOperator<T>> {
    return std::make_unique<linalg::DenseOperator<T>>(ctx, view2(a));
  });
  return op;
}

// The library's buffers as NumPy arrays for the duration of one call (no owner: the Python side
// must not keep them, see _spectra.py, which only reads x and writes y inside the call).
template <class T>
nb::object numpy_view(MatrixView<T> m) {
  using Arr = nb::ndarray<nb::numpy, std::remove_const_t<T>, nb::ndim<2>>;
  const std::size_t shape[2] = {static_cast<std::size_t>(m.rows), static_cast<std::size_t>(m.cols)};
  const std::int64_t strides[2] = {static_cast<std::int64_t>(m.ld), 1};
  // rv_policy::reference: without an owner the default policy would copy, and y must be written in place.
  return Arr(const_cast<std::remove_const_t<T>*>(m.data), 2, shape, nb::handle(), strides).cast(nb::rv_policy::reference);
}

// `apply(x, y)`: a Python callable that writes A x into y for x, y [k, n] (NumPy views). It runs
// with the GIL taken; its exceptions (and Ctrl-C) stop the computation and reach the caller.
template <class T>
Operator callback_operator(index_t size, nb::callable apply, index_t max_block) {
  if (size < 1) throw InvalidArgument("size: expected an operator size >= 1, got " + std::to_string(size));
  if (max_block < 0) throw InvalidArgument("max_block: expected >= 0 (0: any), got " + std::to_string(max_block));
  Operator op;
  op.size = size;
  op.kind = "callback";
  // The callable is held by the Operator (destroyed with the GIL held, by Python); the factory
  // and the library's operator only borrow it.
  auto held = std::make_shared<nb::callable>(std::move(apply));
  set_factory<T>(op, [held, size, max_block](const Context& ctx,
                                             Runner& run) -> std::unique_ptr<linalg::LinearOperator<T>> {
    nb::callable* fn = held.get();
    Runner* r = &run;
    return std::make_unique<linalg::CallbackOperator<T>>(
        ctx, size,
        [fn, r](MatrixView<const T> x, MatrixView<T> y) {
          if (x.rows == 0) return;
          nb::gil_scoped_acquire gil;
          r->check_signals();
          try {
            (*fn)(numpy_view(x), numpy_view(y));
          } catch (nb::python_error& e) {
            throw r->fail(std::move(e));
          }
        },
        max_block);
  });
  return op;
}

template <class T>
Operator ntk_operator(const model::MlpSpec& spec, In1<T> params, In2<T> x) {
  check_params(spec, params.shape(0));
  Operator op;
  op.size = static_cast<index_t>(x.shape(0)) * spec.outputs();
  op.kind = "ntk";
  set_factory<T>(op, [spec, params, x](const Context& ctx, Runner&) -> std::unique_ptr<linalg::LinearOperator<T>> {
    return std::make_unique<ntk::NtkOperator<T>>(ctx, spec, params.data(), view2(x));
  });
  return op;
}

// Targets: float values [N, O] or int64 labels [N] (exactly one of the two).
constexpr const char* kTargets = "targets: expected either float targets [N, O] or int64 labels [N]";

template <class T>
Operator curvature_operator(const model::MlpSpec& spec, In1<T> params, In2<T> x, std::optional<In2<T>> values,
                            std::optional<Labels> labels, const std::string& curvature, const std::string& loss) {
  check_params(spec, params.shape(0));
  targets_of<T>(values, labels, kTargets);   // checked now; the factory builds them again for its context
  const linalg::Curvature kind = linalg::parse_curvature(curvature);
  const model::Loss l = model::parse_loss(loss);
  Operator op;
  op.size = spec.num_params();
  op.kind = linalg::to_string(kind);
  set_factory<T>(op, [spec, params, x, values, labels, kind, l](const Context& ctx,
                                                              Runner&) -> std::unique_ptr<linalg::LinearOperator<T>> {
    const model::Targets<T> t = targets_of<T>(values, labels, kTargets);
    return std::make_unique<linalg::CurvatureOperator<T>>(ctx, kind, spec, params.data(), view2(x), t, l);
  });
  return op;
}

// ---- solvers ----

template <class T>
nb::dict eigsh_typed(const Operator& op, const linalg::LanczosOptions& o, std::optional<In2<T>> start, Out2<T> vectors,
                     int threads, nb::handle progress) {
  if (o.k > op.size)
    throw InvalidArgument("k: " + std::to_string(o.k) + " exceeds the operator's size " + std::to_string(op.size));
  if (static_cast<index_t>(vectors.shape(0)) != o.k || static_cast<index_t>(vectors.shape(1)) != op.size)
    throw ShapeMismatch("vectors: expected [k, n] = [" + std::to_string(o.k) + ", " + std::to_string(op.size) + "]");
  std::optional<MatrixView<const T>> start_view;
  if (start) {
    if (static_cast<index_t>(start->shape(1)) != op.size)
      throw ShapeMismatch("start: expected rows of the operator's size " + std::to_string(op.size) + ", got shape [" +
                          std::to_string(start->shape(0)) + ", " + std::to_string(start->shape(1)) + "]");
    start_view = view2(*start);
  }
  Runner run(threads, progress);
  linalg::EigenResult<T> r = run([&](const Context& ctx) {
    auto lop = op.factory<T>()(ctx, run);
    auto res = linalg::eigsh<T>(*lop, o, start_view);
    const index_t k = static_cast<index_t>(res.values.size());
    if (k != o.k) throw ShapeMismatch("eigsh returned " + std::to_string(k) + " eigenpairs, expected " + std::to_string(o.k));
    // The result lives on the host context: copy its rows into the caller's buffer.
    for (index_t i = 0; i < k; ++i)
      std::copy_n(res.vectors.data() + i * op.size, op.size, vectors.data() + i * op.size);
    return res;
  });
  nb::dict d;
  d["eigenvalues"] = r.values;
  d["residuals"] = r.residuals;
  d["converged"] = r.converged;
  std::vector<std::string> status;
  for (auto s : r.status) status.emplace_back(linalg::to_string(s));
  d["status"] = status;
  d["all_converged"] = r.all_converged;
  d["multiplicity_checked"] = r.multiplicity_checked;
  d["missed_recovered"] = r.missed_recovered;
  d["check_passes"] = r.check_passes;
  d["iterations"] = r.iterations;
  d["matvecs"] = r.matvecs;
  d["method"] = std::string(linalg::to_string(r.method));
  d["eigen_warnings"] = r.warnings;
  return d;
}

template <class F>
decltype(auto) dispatch(const Operator& op, F&& f) {
  if (op.dtype == "float32") return f(float{});
  return f(double{});
}

nb::dict slq(const Operator& op, index_t steps, index_t probes, std::uint64_t seed, index_t grid, double sigma2,
             int threads, nb::handle progress) {
  linalg::SlqOptions o;
  o.steps = steps;
  o.probes = probes;
  o.seed = seed;
  o.grid = grid;
  o.sigma2 = sigma2;
  Runner run(threads, progress);
  const linalg::SpectralDensity s = dispatch(op, [&](auto tag) {
    using T = decltype(tag);
    return run([&](const Context& ctx) {
      auto lop = op.factory<T>()(ctx, run);
      return linalg::slq<T>(*lop, o);
    });
  });
  nb::dict d;
  d["nodes"] = s.nodes;
  d["weights"] = s.weights;
  d["grid"] = s.grid;
  d["density"] = s.density;
  d["sigma2"] = s.sigma2;
  d["trace_estimate"] = s.trace_estimate;
  d["trace_stderr"] = s.trace_stderr;
  d["matvecs"] = s.matvecs;
  return d;
}

nb::dict trace(const Operator& op, const std::string& method, index_t probes, std::uint64_t seed, int threads,
               nb::handle progress) {
  if (method != "hutchinson" && method != "hutchpp")
    throw InvalidArgument("method: expected 'hutchinson' or 'hutchpp', got '" + method + "'");
  if (probes < 1) throw InvalidArgument("probes: expected >= 1, got " + std::to_string(probes));
  if (method == "hutchpp" && probes < 2)
    throw InvalidArgument("probes: hutchpp needs probes >= 2 (half sketch, half residual probes), got " +
                          std::to_string(probes));
  Runner run(threads, progress);
  const linalg::TraceEstimate t = dispatch(op, [&](auto tag) {
    using T = decltype(tag);
    return run([&](const Context& ctx) {
      auto lop = op.factory<T>()(ctx, run);
      return method == "hutchpp" ? linalg::hutchpp_probes<T>(*lop, probes, seed)
                                 : linalg::hutchinson<T>(*lop, probes, seed);
    });
  });
  nb::dict d;
  d["trace_estimate"] = t.trace;
  d["trace_stderr"] = t.std_error;
  d["matvecs"] = t.matvecs;
  return d;
}

// L(w) of a curvature operator (built once for the purpose: one forward pass).
double loss_value(const Operator& op, int threads) {
  if (op.kind != "ggn" && op.kind != "hessian") throw InvalidArgument("loss_value: only curvature operators have a loss");
  Runner run(threads, nb::none());
  return dispatch(op, [&](auto tag) {
    using T = decltype(tag);
    return run([&](const Context& ctx) {
      auto lop = op.factory<T>()(ctx, run);
      return static_cast<linalg::CurvatureOperator<T>&>(*lop).loss_value();
    });
  });
}

// y = A x for x, y [k, n], in blocks of at most the operator's max_block rows (the bound on the
// buffers its products reserve; 0: one block).
template <class T>
void apply_blocks(linalg::LinearOperator<T>& lop, MatrixView<const T> x, MatrixView<T> y) {
  const index_t k = x.rows, n = x.cols, b = lop.max_block() > 0 ? lop.max_block() : std::max<index_t>(k, 1);
  for (index_t r0 = 0; r0 < k; r0 += b) {
    const index_t m = std::min(b, k - r0);
    lop.apply(x.block(r0, 0, m, n), y.block(r0, 0, m, n));
  }
}

template <class T>
void check_apply_args(const std::string& dtype, index_t size, const In2<T>& x, const Out2<T>& y) {
  if (dtype != dtype_name<T>())
    throw InvalidArgument(std::string("x: dtype ") + dtype_name<T>() + " differs from the operator's (" + dtype + ")");
  if (static_cast<index_t>(x.shape(1)) != size || x.shape(0) != y.shape(0) || x.shape(1) != y.shape(1))
    throw ShapeMismatch("x: expected [k, " + std::to_string(size) + "] (and y of the same shape)");
}

// y = A x through the library's operator, built for this call (for tests and single products).
template <class T>
void apply_into(const Operator& op, In2<T> x, Out2<T> y, int threads) {
  check_apply_args<T>(op.dtype, op.size, x, y);
  Runner run(threads, nb::none());
  run([&](const Context& ctx) {
    auto lop = op.factory<T>()(ctx, run);
    apply_blocks<T>(*lop, view2(x), view2(y));
  });
}

// An operator built once (Python's `op.prepared()`): the forward pass, the loss gradient and the
// workspaces of the NTK and curvature operators are computed at construction and reused by every
// product, which therefore sees the arrays as they were then. It owns the Runner its context was
// made by (the context's progress sink and Ctrl-C check point at it); the Python object that
// holds it keeps the Operator (and so the arrays) alive and serializes calls with a lock.
struct PreparedOperator {
  std::string dtype, kind;
  index_t size = 0;
  std::unique_ptr<Runner> run;
  std::unique_ptr<linalg::LinearOperator<float>> op32;
  std::unique_ptr<linalg::LinearOperator<double>> op64;

  template <class T>
  linalg::LinearOperator<T>& get() {
    if constexpr (std::is_same_v<T, float>) return *op32; else return *op64;
  }
};

std::unique_ptr<PreparedOperator> prepare(const Operator& op, int threads) {
  auto p = std::make_unique<PreparedOperator>();
  p->dtype = op.dtype;
  p->kind = op.kind;
  p->size = op.size;
  p->run = std::make_unique<Runner>(threads, nb::none());
  Runner& run = *p->run;
  dispatch(op, [&](auto tag) {
    using T = decltype(tag);
    run([&](const Context& ctx) {
      auto lop = op.factory<T>()(ctx, run);
      if constexpr (std::is_same_v<T, float>) p->op32 = std::move(lop); else p->op64 = std::move(lop);
    });
    return 0;
  });
  return p;
}

template <class T>
void prepared_apply(PreparedOperator& p, In2<T> x, Out2<T> y) {
  check_apply_args<T>(p.dtype, p.size, x, y);
  (*p.run)([&](const Context&) { apply_blocks<T>(p.get<T>(), view2(x), view2(y)); });
}

double prepared_loss_value(const PreparedOperator& p) {
  if (p.kind != "ggn" && p.kind != "hessian") throw InvalidArgument("loss_value: only curvature operators have a loss");
  if (p.dtype == "float32") return static_cast<const linalg::CurvatureOperator<float>&>(*p.op32).loss_value();
  return static_cast<const linalg::CurvatureOperator<double>&>(*p.op64).loss_value();
}

linalg::LanczosOptions lanczos_options(index_t k, const std::string& which, double tol, const std::string& method,
                                       index_t block, index_t subspace, index_t max_restarts, std::uint64_t seed) {
  if (k < 1) throw InvalidArgument("k: expected >= 1, got " + std::to_string(k));
  if (!(tol > 0)) throw InvalidArgument("tol: expected > 0, got " + std::to_string(tol));
  if (block < 1) throw InvalidArgument("block: expected >= 1, got " + std::to_string(block));
  if (subspace < 0) throw InvalidArgument("subspace: expected >= 0 (0: automatic), got " + std::to_string(subspace));
  if (max_restarts < 0) throw InvalidArgument("max_restarts: expected >= 0, got " + std::to_string(max_restarts));
  linalg::LanczosOptions o;
  o.k = k;
  o.which = linalg::parse_which(which);
  o.tol = tol;
  o.method = linalg::parse_eigen_method(method);
  o.block = block;
  o.subspace = subspace;
  o.max_restarts = max_restarts;
  o.seed = seed;
  return o;
}

template <class T>
nb::dict eigsh(const Operator& op, index_t k, const std::string& which, double tol, const std::string& method,
               index_t block, index_t subspace, index_t max_restarts, std::uint64_t seed, std::optional<In2<T>> start,
               Out2<T> vectors, int threads, nb::handle progress) {
  if (op.dtype != dtype_name<T>())
    throw InvalidArgument(std::string("vectors: dtype ") + dtype_name<T>() + " differs from the operator's (" +
                          op.dtype + ")");
  return eigsh_typed<T>(op, lanczos_options(k, which, tol, method, block, subspace, max_restarts, seed), start,
                        vectors, threads, progress);
}

}  // namespace

void register_spectra(nb::module_& m) {
  nb::class_<Operator>(m, "Operator", "A symmetric linear operator for eigsh, slq and trace (built by the package).")
      .def_ro("dtype", &Operator::dtype)
      .def_ro("size", &Operator::size)
      .def_ro("kind", &Operator::kind);

  m.def("dense_operator", &dense_operator<float>, "a"_a.noconvert(),
        "A dense symmetric matrix [n, n], viewed (checked square, finite and symmetric).");
  m.def("dense_operator", &dense_operator<double>, "a"_a.noconvert());
  m.def(
      "callback_operator",
      [](index_t size, const std::string& dtype, nb::callable apply, index_t max_block) {
        if (dtype == "float32") return callback_operator<float>(size, std::move(apply), max_block);
        if (dtype == "float64") return callback_operator<double>(size, std::move(apply), max_block);
        throw InvalidArgument("dtype: expected 'float32' or 'float64', got '" + dtype + "'");
      },
      "size"_a, "dtype"_a, "apply"_a, "max_block"_a = 0,
      "An operator whose products `apply(x, y)` computes in Python: y = A x for x, y [k, size] NumPy views.");
  m.def("ntk_operator", &ntk_operator<float>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(),
        "The NTK J J^T of an Mlp on inputs x [N, D] (size N*O).");
  m.def("ntk_operator", &ntk_operator<double>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert());
  m.def("curvature_operator", &curvature_operator<float>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(),
        "values"_a.noconvert().none(), "labels"_a.noconvert().none(), "curvature"_a, "loss"_a,
        "The Gauss-Newton matrix or the loss Hessian of an Mlp on data (size P).");
  m.def("curvature_operator", &curvature_operator<double>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(),
        "values"_a.noconvert().none(), "labels"_a.noconvert().none(), "curvature"_a, "loss"_a);

  m.def("eigsh", &eigsh<float>, "op"_a, "k"_a, "which"_a, "tol"_a, "method"_a, "block"_a, "subspace"_a,
        "max_restarts"_a, "seed"_a, "start"_a.noconvert().none(), "vectors"_a.noconvert(), "threads"_a,
        "progress"_a.none(), "Top-k eigenpairs; writes the eigenvectors into `vectors` [k, n].");
  m.def("eigsh", &eigsh<double>, "op"_a, "k"_a, "which"_a, "tol"_a, "method"_a, "block"_a, "subspace"_a,
        "max_restarts"_a, "seed"_a, "start"_a.noconvert().none(), "vectors"_a.noconvert(), "threads"_a,
        "progress"_a.none());
  m.def("slq", &slq, "op"_a, "steps"_a, "probes"_a, "seed"_a, "grid"_a, "sigma2"_a, "threads"_a, "progress"_a.none(),
        "Spectral density by stochastic Lanczos quadrature.");
  m.def("trace", &trace, "op"_a, "method"_a, "probes"_a, "seed"_a, "threads"_a, "progress"_a.none(),
        "Trace estimate by Hutchinson or Hutch++.");
  m.def("operator_loss_value", &loss_value, "op"_a, "threads"_a, "L(w) of a curvature operator.");
  m.def("operator_apply", &apply_into<float>, "op"_a, "x"_a.noconvert(), "y"_a.noconvert(), "threads"_a,
        "y = A x for x, y [k, n].");
  m.def("operator_apply", &apply_into<double>, "op"_a, "x"_a.noconvert(), "y"_a.noconvert(), "threads"_a);

  nb::class_<PreparedOperator>(m, "PreparedOperator", "An operator built once for many products (op.prepared()).")
      .def_ro("dtype", &PreparedOperator::dtype)
      .def_ro("size", &PreparedOperator::size)
      .def_ro("kind", &PreparedOperator::kind);
  m.def("prepare_operator", &prepare, "op"_a, "threads"_a,
        "Builds the operator once (forward pass, gradient, workspaces) for prepared_apply.");
  m.def("prepared_apply", &prepared_apply<float>, "op"_a, "x"_a.noconvert(), "y"_a.noconvert(),
        "y = A x for x, y [k, n] through a prepared operator.");
  m.def("prepared_apply", &prepared_apply<double>, "op"_a, "x"_a.noconvert(), "y"_a.noconvert());
  m.def("prepared_loss_value", &prepared_loss_value, "op"_a, "L(w) of a prepared curvature operator.");
}

}  // namespace dynascope::python
