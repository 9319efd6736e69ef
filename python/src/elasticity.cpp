// dynascope.elasticity and dynascope.response: how one training step on a sample moves the
// network's outputs elsewhere (include/dynascope/elasticity.hpp, response.hpp). The library
// returns its float64 results in arrays it owns; they are handed to Python as NumPy arrays over
// that same memory (a capsule keeps the library's array alive), never copied.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/model.hpp"
#include "dynascope/response.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

using DoubleIn1 = nb::ndarray<const double, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using DoubleIn2 = nb::ndarray<const double, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <class V> using NumpyArray = nb::ndarray<nb::numpy, V>;

// A NumPy array over `data`, which lives in `storage` (an Array or a std::vector; moving either
// keeps its elements where they are); the capsule keeps `storage` alive as long as the array.
template <class V, class Storage>
NumpyArray<V> adopt(Storage storage, V* data, std::initializer_list<std::size_t> shape) {
  auto* owner = new Storage(std::move(storage));
  nb::capsule keep(owner, [](void* p) noexcept { delete static_cast<Storage*>(p); });
  return NumpyArray<V>(data, shape, keep);
}

NumpyArray<double> numpy_of(Array<double>&& a, std::size_t rows, std::size_t cols) {
  double* data = a.data();
  return adopt<double>(std::move(a), data, {rows, cols});
}

NumpyArray<double> numpy_of(std::vector<double>&& v) {
  double* data = v.data();
  const std::size_t n = v.size();
  return adopt<double>(std::move(v), data, {n});
}

NumpyArray<std::int64_t> numpy_of(const std::vector<index_t>& v) {
  std::vector<std::int64_t> copy(v.begin(), v.end());
  std::int64_t* data = copy.data();
  const std::size_t n = copy.size();
  return adopt<std::int64_t>(std::move(copy), data, {n});
}

// The targets of the step: float values [N, O] or integer labels [N] (exactly one of the two).
constexpr const char* kTargets = "targets: give either float values [N, O] or integer class labels [N]";

// The pair result as the Python layer reads it.
nb::dict pair_dict(elasticity::PairResult&& r) {
  nb::dict out;
  out["metric"] = elasticity::to_string(r.metric);
  const std::size_t n1 = std::size_t(r.s_rel.dim(0)), n2 = std::size_t(r.s_rel.dim(1));
  out["s_rel"] = numpy_of(std::move(r.s_rel), n1, n2);
  if (r.s_ker.empty())
    out["s_ker"] = nb::none();
  else
    out["s_ker"] = numpy_of(std::move(r.s_ker), n1, n2);
  out["self_change"] = numpy_of(std::move(r.self_change));
  out["undefined_sources"] = numpy_of(r.undefined_sources);
  out["unresolved_sources"] = numpy_of(r.unresolved_sources);
  out["flops"] = r.flops;
  return out;
}

// Host float64 [rows, cols] from the caller's array (copied: the library's OutputChanges owns its arrays).
Array<double> host_array(const DoubleIn2& a, const char* name, index_t rows, index_t cols) {
  if (static_cast<index_t>(a.shape(0)) != rows || static_cast<index_t>(a.shape(1)) != cols)
    throw ShapeMismatch(std::string(name) + ": expected shape [" + std::to_string(rows) + ", " + std::to_string(cols) +
                        "], got [" + std::to_string(a.shape(0)) + ", " + std::to_string(a.shape(1)) + "]");
  return Array<double>::from_host(Context::host(), {rows, cols}, a.data());
}

// The metrics of output changes computed elsewhere (the generic torch path takes the steps with
// torch.func and measures them here, with the same definitions as the built-in path).
nb::dict metrics_of_changes(DoubleIn2 base1, DoubleIn2 base2, DoubleIn2 loss_grad, DoubleIn2 self_delta,
                            DoubleIn2 delta, double eta, std::vector<index_t> unresolved, const std::string& metric,
                            const std::string& form) {
  elasticity::OutputChanges ch;
  ch.sources = static_cast<index_t>(base1.shape(0));
  ch.outputs = static_cast<index_t>(base1.shape(1));
  ch.targets = static_cast<index_t>(base2.shape(0));
  ch.base1 = host_array(base1, "base1", ch.sources, ch.outputs);
  ch.base2 = host_array(base2, "base2", ch.targets, ch.outputs);
  ch.loss_grad = host_array(loss_grad, "loss_grad", ch.sources, ch.outputs);
  ch.self_delta = host_array(self_delta, "self_delta", ch.sources, ch.outputs);
  ch.delta = host_array(delta, "delta", ch.sources, ch.targets * ch.outputs);
  ch.eta = eta;
  ch.unresolved_sources = std::move(unresolved);
  return pair_dict(elasticity::metrics(ch, elasticity::parse_metric(metric), elasticity::parse_form(form)));
}

template <class T>
nb::dict elasticity_pairs(const model::MlpSpec& spec, In1<T> params, In2<T> x1, std::optional<In2<T>> values,
                          std::optional<Labels> labels, std::optional<In2<T>> x2, double eta,
                          const std::string& update, double adam_eps, const std::string& form,
                          const std::string& metric, const std::string& loss, int threads, nb::handle progress) {
  check_params(spec, params.shape(0));
  elasticity::Options options;
  options.eta = eta;
  options.update = elasticity::parse_update(update);
  options.adam_eps = adam_eps;
  options.form = elasticity::parse_form(form);
  options.metric = elasticity::parse_metric(metric);
  options.loss = model::parse_loss(loss);
  const model::Targets<T> y1 = targets_of<T>(values, labels, kTargets);
  std::optional<MatrixView<const T>> x2_view;
  if (x2) x2_view = view2(*x2);
  elasticity::PairResult r;
  Runner run(threads, progress);
  run([&](const Context& ctx) { r = elasticity::pairwise<T>(ctx, spec, params.data(), view2(x1), y1, x2_view, options); });
  return pair_dict(std::move(r));
}

nb::dict class_matrix(DoubleIn2 s_rel, Labels labels1, Labels labels2, index_t classes, bool same_set) {
  const MatrixView<const double> s =
      matrix_view(s_rel.data(), static_cast<index_t>(s_rel.shape(0)), static_cast<index_t>(s_rel.shape(1)));
  elasticity::ClassMatrix m = elasticity::class_matrix(
      s, vector_view(labels1.data(), static_cast<index_t>(labels1.shape(0))),
      vector_view(labels2.data(), static_cast<index_t>(labels2.shape(0))), classes, same_set);
  nb::dict out;
  const std::size_t c = std::size_t(m.classes);
  out["class_matrix"] = numpy_of(std::move(m.matrix), c, c);
  std::int64_t* pairs = m.pairs.data();
  out["class_pairs"] = adopt<std::int64_t>(std::move(m.pairs), pairs, {c, c});
  out["within_class"] = m.within;
  out["across_class"] = m.across;
  out["ratio"] = m.ratio;
  out["empty_cells"] = m.empty_cells;
  return out;
}

NumpyArray<std::int64_t> sample_per_class(Labels labels, index_t classes, index_t k, std::uint64_t seed) {
  std::vector<std::int64_t> idx = elasticity::sample_per_class(
      vector_view(labels.data(), static_cast<index_t>(labels.shape(0))), classes, k, seed);
  std::int64_t* data = idx.data();
  const std::size_t n = idx.size();
  return adopt<std::int64_t>(std::move(idx), data, {n});
}

template <class T>
nb::dict training_response(const model::MlpSpec& spec, In1<T> params, In2<T> x, std::optional<In2<T>> values,
                           std::optional<Labels> labels, double eta, const std::string& form,
                           const std::string& loss, bool per_layer, double duplicate_tolerance, int threads,
                           nb::handle progress) {
  check_params(spec, params.shape(0));
  response::Options options;
  options.eta = eta;
  options.form = elasticity::parse_form(form);
  options.loss = model::parse_loss(loss);
  options.per_layer = per_layer;
  if (!std::isfinite(duplicate_tolerance) || duplicate_tolerance < 0)
    throw InvalidArgument("duplicate_tolerance: expected a finite value >= 0, got " + std::to_string(duplicate_tolerance));
  response::FeatureOptions feature_options;
  feature_options.duplicate_tolerance = duplicate_tolerance;
  const model::Targets<T> y = targets_of<T>(values, labels, kTargets);
  response::Response r;
  response::FeatureSpace f;
  Runner run(threads, progress);
  run([&](const Context& ctx) {
    r = response::training_response<T>(ctx, spec, params.data(), view2(x), y, options);
    f = response::feature_space<T>(ctx, spec, params.data(), view2(x), feature_options);
  });
  nb::dict out;
  const std::size_t n = std::size_t(r.samples);
  out["samples"] = r.samples;
  out["matrix"] = numpy_of(std::move(r.matrix), n, n);
  out["mean_diagonal"] = r.mean_diagonal;
  out["mean_off_diagonal"] = r.mean_off_diagonal;
  out["layer_diagonal"] = numpy_of(std::move(r.layer_diagonal));
  out["layer_off_diagonal"] = numpy_of(std::move(r.layer_off_diagonal));
  out["undefined_sources"] = numpy_of(r.undefined_sources);
  out["unresolved_sources"] = numpy_of(r.unresolved_sources);
  out["kernel_gap"] = r.kernel_gap;
  out["flops"] = r.flops;
  nb::list features;
  for (const response::LayerFeatures& h : f.layers) {
    nb::dict d;
    d["layer"] = h.layer;
    d["width"] = h.width;
    d["effective_rank"] = h.effective_rank;
    d["participation_ratio"] = h.participation_ratio;
    d["dead"] = h.dead;
    d["duplicated"] = h.duplicated;
    features.append(d);
  }
  out["features"] = features;
  out["input_grad_norm"] = f.input_grad_norm;
  return out;
}

// ---- the feature-space measures, for activations captured elsewhere ----
// (the generic torch path hooks a module's outputs and measures them with the library's
// definitions, as feature_space does for an Mlp's hidden layers)

template <class T>
NumpyArray<double> singular_values_of(In2<T> h, int threads) {
  std::vector<double> s;
  Runner run(threads, nb::none());
  run([&](const Context& ctx) { s = response::singular_values<T>(ctx, view2(h)); });
  return numpy_of(std::move(s));
}

double effective_rank_of(DoubleIn1 s) { return response::effective_rank({s.data(), s.shape(0)}); }
double participation_ratio_of(DoubleIn1 s) { return response::participation_ratio({s.data(), s.shape(0)}); }

template <class T>
index_t count_dead_of(In2<T> a, int threads) {
  index_t dead = 0;
  Runner run(threads, nb::none());
  run([&](const Context& ctx) { dead = response::count_dead<T>(ctx, view2(a)); });
  return dead;
}

template <class T>
index_t count_duplicated_of(In2<T> w, std::optional<In1<T>> b, double tolerance, int threads) {
  const VectorView<const T> bv = b ? vector_view(b->data(), static_cast<index_t>(b->shape(0))) : VectorView<const T>{};
  index_t duplicated = 0;
  Runner run(threads, nb::none());
  run([&](const Context& ctx) { duplicated = response::count_duplicated<T>(ctx, view2(w), bv, tolerance); });
  return duplicated;
}

nb::dict fit_power_law(DoubleIn1 t, DoubleIn1 r, double t_min, double t_max, double confidence) {
  if (t.shape(0) != r.shape(0))
    throw ShapeMismatch("steps and responses: expected one response per step, got " + std::to_string(t.shape(0)) +
                        " steps and " + std::to_string(r.shape(0)) + " responses");
  const response::PowerLawFit fit = response::fit_power_law({t.data(), t.shape(0)}, {r.data(), r.shape(0)}, t_min,
                                                            t_max, confidence);
  nb::dict out;
  out["amplitude"] = fit.amplitude;
  out["beta"] = fit.beta;
  out["beta_low"] = fit.beta_low;
  out["beta_high"] = fit.beta_high;
  out["beta_stderr"] = fit.beta_stderr;
  out["r_squared"] = fit.r_squared;
  out["confidence"] = fit.confidence;
  out["points"] = fit.points;
  out["skipped"] = fit.skipped;
  return out;
}

}  // namespace

void register_elasticity(nb::module_& m) {
  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  m.def("elasticity_pairs", &elasticity_pairs<float>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "values"_a.noconvert().none(), "labels"_a.noconvert().none(), "x2"_a.noconvert().none(), "eta"_a, "update"_a,
        "adam_eps"_a, "form"_a, "metric"_a, "loss"_a, "threads"_a, "progress"_a.none(),
        "S_rel (and S_ker) of every (source, target) pair, as a dict of NumPy arrays and numbers.");
  m.def("elasticity_pairs", &elasticity_pairs<double>, "spec"_a, "params"_a.noconvert(), "x1"_a.noconvert(),
        "values"_a.noconvert().none(), "labels"_a.noconvert().none(), "x2"_a.noconvert().none(), "eta"_a, "update"_a,
        "adam_eps"_a, "form"_a, "metric"_a, "loss"_a, "threads"_a, "progress"_a.none());
  m.def("elasticity_metrics", &metrics_of_changes, "base1"_a.noconvert(), "base2"_a.noconvert(),
        "loss_grad"_a.noconvert(), "self_delta"_a.noconvert(), "delta"_a.noconvert(), "eta"_a, "unresolved"_a,
        "metric"_a, "form"_a, "S_rel (and S_ker) of output changes computed elsewhere, as elasticity_pairs returns.");
  m.def("elasticity_class_matrix", &class_matrix, "s_rel"_a.noconvert(), "labels1"_a.noconvert(),
        "labels2"_a.noconvert(), "classes"_a, "same_set"_a,
        "The class-pair matrix of S_rel with its pair counts, within/across means and their ratio.");
  m.def("elasticity_sample_per_class", &sample_per_class, "labels"_a.noconvert(), "classes"_a, "k"_a, "seed"_a,
        "K distinct samples of every class (Philox, seeded), class by class.");
  m.def("training_response", &training_response<float>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(),
        "values"_a.noconvert().none(), "labels"_a.noconvert().none(), "eta"_a, "form"_a, "loss"_a, "per_layer"_a,
        "duplicate_tolerance"_a, "threads"_a, "progress"_a.none(),
        "The training response over all pairs of samples and the hidden layers' feature space, as a dict.");
  m.def("training_response", &training_response<double>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(),
        "values"_a.noconvert().none(), "labels"_a.noconvert().none(), "eta"_a, "form"_a, "loss"_a, "per_layer"_a,
        "duplicate_tolerance"_a, "threads"_a, "progress"_a.none());
  m.def("response_singular_values", &singular_values_of<float>, "h"_a.noconvert(), "threads"_a,
        "All min(N, width) singular values of h [N, width], descending, float64 (rounding-level ones are 0).");
  m.def("response_singular_values", &singular_values_of<double>, "h"_a.noconvert(), "threads"_a);
  m.def("response_effective_rank", &effective_rank_of, "s"_a.noconvert(),
        "exp of the entropy of the normalised singular values s (0 when all are zero).");
  m.def("response_participation_ratio", &participation_ratio_of, "s"_a.noconvert(),
        "(sum s^2)^2 / sum s^4 of the singular values s (0 when all are zero).");
  m.def("response_count_dead", &count_dead_of<float>, "a"_a.noconvert(), "threads"_a,
        "Columns (units) of a [N, width] that are exactly zero in every row.");
  m.def("response_count_dead", &count_dead_of<double>, "a"_a.noconvert(), "threads"_a);
  m.def("response_count_duplicated", &count_duplicated_of<float>, "w"_a.noconvert(), "b"_a.noconvert().none(),
        "tolerance"_a, "threads"_a,
        "Units (rows of w [width, fan_in], with the bias b appended) within `tolerance` of an earlier unit, "
        "normalised.");
  m.def("response_count_duplicated", &count_duplicated_of<double>, "w"_a.noconvert(), "b"_a.noconvert().none(),
        "tolerance"_a, "threads"_a);
  m.def("fit_power_law", &fit_power_law, "t"_a.noconvert(), "r"_a.noconvert(), "t_min"_a, "t_max"_a,
        "confidence"_a, "The aging fit R_t ~ A t^(-beta) by least squares in log-log, with Student's t interval.");
}

}  // namespace dynascope::python
