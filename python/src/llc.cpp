// dynascope.llc: SGLD chains on an Mlp (the library's batched engine) or on a Python batched
// loss-and-gradient callback (sgld.hpp's BatchedLossGrad), and the ε x nβ calibration sweep.
//
// The Python layer (python/dynascope/_llc.py) checks the arguments, builds an LlcOptions and, for
// the callback path, wraps the user's function so that it receives the chains' parameters in the
// caller's framework and writes its results into the library's buffers. Results come back as a
// dict with the keys of the CLI's JSON; the traces as NumPy arrays that own their memory.
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "dynascope/model.hpp"
#include "dynascope/sgld.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

// A float64 NumPy array that owns a copy of `values` (the traces, per-chain estimates).
nb::object numpy_owning(std::vector<double> values, std::initializer_list<std::size_t> shape) {
  auto* heap = new std::vector<double>(std::move(values));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<double>*>(p); });
  return nb::ndarray<nb::numpy, double>(heap->data(), shape, owner).cast();
}

nb::dict result_dict(const sgld::LlcResult& r) {
  nb::dict d;
  d["llc_mean"] = r.llc_mean;
  d["llc_std"] = r.llc_std;
  d["llc_stderr"] = r.llc_stderr;
  d["llc_per_chain"] = numpy_owning(r.llc_per_chain, {r.llc_per_chain.size()});
  d["init_loss"] = r.init_loss;
  d["nbeta"] = r.nbeta;
  d["n"] = r.n;
  d["chains"] = r.chains;
  d["draws"] = r.draws;
  d["r_hat"] = r.r_hat;
  d["ess"] = r.ess;
  d["mala_acceptance"] = r.mala_acceptance;
  const auto C = static_cast<std::size_t>(r.chains), D = static_cast<std::size_t>(r.draws);
  d["loss_trace"] = numpy_owning(r.loss_trace, {C, D});
  d["distance_trace"] = numpy_owning(r.distance_trace, {C, D});
  nb::dict diverged;
  for (const auto& [chain, draw] : r.diverged) diverged[nb::int_(chain)] = draw;
  d["diverged"] = diverged;
  d["warnings"] = r.warnings;
  d["gradient_evaluations"] = r.gradient_evaluations;
  d["sampling_seconds"] = r.seconds;
  return d;
}

// The chains' progress through the runner's sink (which takes the GIL, honours Ctrl-C and calls
// the Python progress callable): "llc" with the running estimate as the bar's description.
void report_progress(const Context& ctx, const std::string& task, const sgld::LlcProgress& p) {
  std::string text = task;
  if (p.draws > 0 && std::isfinite(p.llc_mean)) {
    char buf[96];
    std::snprintf(buf, sizeof buf, ": llc %.4g after %lld draws, %lld diverged", p.llc_mean,
                  static_cast<long long>(p.draws), static_cast<long long>(p.diverged));
    text += buf;
  }
  ctx.progress(text, p.step, p.total_steps);
}

constexpr const char* kTargets = "targets: give either integer labels [N] or float targets [N, O]";

template <class T>
nb::dict llc_mlp(const model::MlpSpec& spec, In1<T> params, In2<T> inputs, std::optional<Labels> labels,
                 std::optional<In2<T>> values, const std::string& loss, sgld::LlcOptions options, int threads,
                 nb::handle progress) {
  check_params(spec, params.shape(0));
  const model::Targets<T> targets = targets_of<T>(values, labels, kTargets);
  const model::Loss l = model::parse_loss(loss);
  Runner run(threads, progress);
  const Context& ctx = run.context();
  options.on_progress = [&ctx](const sgld::LlcProgress& p) {
    report_progress(ctx, "llc", p);
    return true;
  };
  sgld::LlcResult r = run([&](const Context& c) {
    return sgld::estimate_llc<T>(c, spec, params.data(), view2(inputs), targets, l, options);
  });
  return result_dict(r);
}

// The user's callback, called with the GIL held as
//   fn(params [C, P], batch [C, m] int64 or None, step, losses_out [C], grads_out [C, P])
// on NumPy views of the library's buffers (no copies; valid during the call only). The Python
// wrapper (_llc.py) converts them to the caller's framework and copies the results in.
template <class T>
sgld::BatchedLossGrad<T> python_loss_grad(Runner& run, nb::handle fn) {
  return [&run, fn](const sgld::LossGradRequest<T>& req) {
    nb::gil_scoped_acquire gil;
    run.check_signals();
    try {
      const auto C = static_cast<std::size_t>(req.params.rows), P = static_cast<std::size_t>(req.params.cols);
      // The rows of params and grads are contiguous in the sampler's buffers (ld == P); the views
      // say so explicitly through their strides all the same.
      const std::int64_t pld = req.params.ld, gld = req.grads.ld;
      nb::object params = nb::ndarray<nb::numpy, T, nb::ndim<2>>(const_cast<T*>(req.params.data), {C, P},
                                                                 nb::handle(), {pld, 1})
                              .cast(nb::rv_policy::reference);
      nb::object batch = nb::none();
      if (req.batch.cols > 0) {
        const auto m = static_cast<std::size_t>(req.batch.cols);
        const std::int64_t bld = req.batch.ld;
        batch = nb::ndarray<nb::numpy, std::int64_t, nb::ndim<2>>(const_cast<std::int64_t*>(req.batch.data),
                                                                  {C, m}, nb::handle(), {bld, 1})
                    .cast(nb::rv_policy::reference);
      }
      const std::int64_t ls = req.losses.stride;
      nb::object losses = nb::ndarray<nb::numpy, T, nb::ndim<1>>(req.losses.data, {C}, nb::handle(), {ls})
                              .cast(nb::rv_policy::reference);
      nb::object grads = nb::ndarray<nb::numpy, T, nb::ndim<2>>(req.grads.data, {C, P}, nb::handle(), {gld, 1})
                             .cast(nb::rv_policy::reference);
      fn(params, batch, req.step, losses, grads);
    } catch (nb::python_error& e) {
      throw run.fail(std::move(e));
    }
  };
}

template <class T>
nb::dict llc_callback(nb::object fn, In1<T> w_star, index_t n, sgld::LlcOptions options, int threads,
                      nb::handle progress) {
  Runner run(threads, progress);
  const Context& ctx = run.context();
  options.on_progress = [&ctx](const sgld::LlcProgress& p) {
    report_progress(ctx, "llc", p);
    return true;
  };
  const sgld::BatchedLossGrad<T> loss_grad = python_loss_grad<T>(run, fn);
  const VectorView<const T> w{w_star.data(), static_cast<index_t>(w_star.shape(0)), 1};
  sgld::LlcResult r = run([&](const Context& c) { return sgld::estimate_llc<T>(c, loss_grad, w, n, options); });
  return result_dict(r);
}

// The sweep: one estimate per (nβ, ε) pair, nβ-major, as sgld::calibrate orders them; each
// estimate gets its own progress bar ("llc 3/15").
template <class T, class Estimate>
nb::list sweep(Runner& run, const sgld::LlcOptions& options, const std::vector<double>& epsilons,
               const std::vector<double>& nbetas, Estimate&& estimate) {
  if (epsilons.empty() || nbetas.empty()) throw InvalidArgument("calibrate: give at least one epsilon and one nbeta");
  const Context& ctx = run.context();
  std::vector<sgld::LlcResult> results;
  run([&](const Context& c) {
    const std::size_t total = epsilons.size() * nbetas.size();
    for (double nb_value : nbetas)
      for (double eps : epsilons) {
        sgld::LlcOptions o = options;
        o.epsilon = eps;
        o.nbeta_rule = sgld::NBeta::value;
        o.nbeta = nb_value;
        const std::string task = "llc " + std::to_string(results.size() + 1) + "/" + std::to_string(total);
        o.on_progress = [&ctx, task](const sgld::LlcProgress& p) {
          report_progress(ctx, task, p);
          return true;
        };
        results.push_back(estimate(c, o));
      }
  });
  nb::list out;
  std::size_t k = 0;
  for (double nb_value : nbetas)
    for (double eps : epsilons) {
      nb::dict d = result_dict(results[k++]);
      d["epsilon"] = eps;
      d["nbeta"] = nb_value;
      out.append(d);
    }
  return out;
}

template <class T>
nb::list calibrate_mlp(const model::MlpSpec& spec, In1<T> params, In2<T> inputs, std::optional<Labels> labels,
                       std::optional<In2<T>> values, const std::string& loss, const sgld::LlcOptions& options,
                       const std::vector<double>& epsilons, const std::vector<double>& nbetas, int threads,
                       nb::handle progress) {
  check_params(spec, params.shape(0));
  const model::Targets<T> targets = targets_of<T>(values, labels, kTargets);
  const model::Loss l = model::parse_loss(loss);
  Runner run(threads, progress);
  return sweep<T>(run, options, epsilons, nbetas, [&](const Context& c, const sgld::LlcOptions& o) {
    return sgld::estimate_llc<T>(c, spec, params.data(), view2(inputs), targets, l, o);
  });
}

template <class T>
nb::list calibrate_callback(nb::object fn, In1<T> w_star, index_t n, const sgld::LlcOptions& options,
                            const std::vector<double>& epsilons, const std::vector<double>& nbetas, int threads,
                            nb::handle progress) {
  Runner run(threads, progress);
  const sgld::BatchedLossGrad<T> loss_grad = python_loss_grad<T>(run, fn);
  const VectorView<const T> w{w_star.data(), static_cast<index_t>(w_star.shape(0)), 1};
  return sweep<T>(run, options, epsilons, nbetas, [&](const Context& c, const sgld::LlcOptions& o) {
    return sgld::estimate_llc<T>(c, loss_grad, w, n, o);
  });
}

template <class T>
void def_dtype(nb::module_& m) {
  m.def("llc_mlp", &llc_mlp<T>, "spec"_a, "params"_a.noconvert(), "inputs"_a.noconvert(),
        "labels"_a.noconvert().none(), "values"_a.noconvert().none(), "loss"_a, "options"_a, "threads"_a,
        "progress"_a.none(), "The LLC of an Mlp at params on (inputs, labels or values): a dict of the results.");
  m.def("llc_callback", &llc_callback<T>, "fn"_a, "w_star"_a.noconvert(), "n"_a, "options"_a, "threads"_a,
        "progress"_a.none(),
        "The LLC of a batched loss-and-gradient callback fn(params, batch, step, losses_out, grads_out) at w_star.");
  m.def("llc_calibrate_mlp", &calibrate_mlp<T>, "spec"_a, "params"_a.noconvert(), "inputs"_a.noconvert(),
        "labels"_a.noconvert().none(), "values"_a.noconvert().none(), "loss"_a, "options"_a, "epsilons"_a,
        "nbetas"_a, "threads"_a, "progress"_a.none(), "The epsilon x nbeta sweep for an Mlp: a list of dicts.");
  m.def("llc_calibrate_callback", &calibrate_callback<T>, "fn"_a, "w_star"_a.noconvert(), "n"_a, "options"_a,
        "epsilons"_a, "nbetas"_a, "threads"_a, "progress"_a.none(),
        "The epsilon x nbeta sweep for a batched loss-and-gradient callback: a list of dicts.");
}

}  // namespace

void register_llc(nb::module_& m) {
  nb::class_<sgld::LlcOptions>(m, "LlcOptions", "The SGLD sampler's settings (sgld.hpp's LlcOptions).")
      .def(nb::init<>())
      .def_rw("chains", &sgld::LlcOptions::chains)
      .def_rw("draws", &sgld::LlcOptions::draws)
      .def_rw("burnin", &sgld::LlcOptions::burnin)
      .def_rw("thin", &sgld::LlcOptions::thin)
      .def_rw("epsilon", &sgld::LlcOptions::epsilon)
      .def_rw("gamma", &sgld::LlcOptions::gamma)
      .def_prop_rw(
          "nbeta_rule", [](const sgld::LlcOptions& o) { return std::string(name_of(sgld::nbeta_names, o.nbeta_rule)); },
          [](sgld::LlcOptions& o, const std::string& s) { o.nbeta_rule = parse_name(sgld::nbeta_names, s); })
      .def_rw("nbeta", &sgld::LlcOptions::nbeta)
      .def_rw("batch", &sgld::LlcOptions::batch)
      .def_prop_rw(
          "sampler", [](const sgld::LlcOptions& o) { return std::string(sgld::to_string(o.sampler)); },
          [](sgld::LlcOptions& o, const std::string& s) { o.sampler = sgld::parse_sampler(s); })
      .def_rw("rmsprop_alpha", &sgld::LlcOptions::rmsprop_alpha)
      .def_rw("rmsprop_eps", &sgld::LlcOptions::rmsprop_eps)
      .def_rw("mask", &sgld::LlcOptions::mask)
      .def_rw("bounding_box", &sgld::LlcOptions::bounding_box)
      .def_prop_rw(
          "init_loss",
          [](const sgld::LlcOptions& o) { return std::string(name_of(sgld::init_loss_names, o.init_loss)); },
          [](sgld::LlcOptions& o, const std::string& s) { o.init_loss = parse_name(sgld::init_loss_names, s); })
      .def_rw("mala", &sgld::LlcOptions::mala)
      .def_rw("seed", &sgld::LlcOptions::seed)
      .def_rw("progress_every", &sgld::LlcOptions::progress_every);
  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  def_dtype<float>(m);
  def_dtype<double>(m);
}

}  // namespace dynascope::python
