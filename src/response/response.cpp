// The training response (docs/definitions.md): the output changes of one SGD step per source
// (elasticity::output_changes, batched over the sources), projected on the source's own loss
// gradient and normalised by the step, R(x_j; x_i) = -<g_i, Delta_i(x_j)> / (eta ||g_i||^2).
// With per_layer the same projection is taken of the per-layer kernel changes (the ntk form,
// whose layers sum to its total), so a step-form total comes with kernel-form layers.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dynascope/response.hpp"

namespace dynascope::response {

namespace {

// R [N, N] from the changes delta [N, N*O] (row i, columns j*O..j*O+O-1 = Delta_i(x_j)) and the
// loss gradients g [N, O]: NaN rows for the undefined sources.
Array<double> project(const Array<double>& delta, const Array<double>& g, index_t n, index_t o, double eta,
                      const std::vector<char>& defined) {
  Array<double> r(Context::host(), {n, n});
  const double* dp = delta.data();
  const double* gp = g.data();
  double* rp = r.data();
  for (index_t i = 0; i < n; ++i) {
    if (!defined[std::size_t(i)]) {
      std::fill_n(rp + i * n, n, std::numeric_limits<double>::quiet_NaN());
      continue;
    }
    const double* gi = gp + i * o;
    double g2 = 0;
    for (index_t k = 0; k < o; ++k) g2 += gi[k] * gi[k];
    const double scale = -1.0 / (eta * g2);
    for (index_t j = 0; j < n; ++j) {
      const double* d = dp + i * n * o + j * o;
      double dot = 0;
      for (index_t k = 0; k < o; ++k) dot += gi[k] * d[k];
      rp[i * n + j] = scale * dot;
    }
  }
  return r;
}

// Means of the diagonal and the off-diagonal entries over the defined sources (rows); NaN when
// no source is defined.
std::pair<double, double> means(const Array<double>& r, index_t n, const std::vector<char>& defined) {
  double diag = 0, off = 0;
  index_t rows = 0;
  for (index_t i = 0; i < n; ++i) {
    if (!defined[std::size_t(i)]) continue;
    ++rows;
    for (index_t j = 0; j < n; ++j) (i == j ? diag : off) += r.data()[i * n + j];
  }
  if (rows == 0) return {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::quiet_NaN()};
  return {diag / double(rows), off / (double(rows) * double(n - 1))};
}

}  // namespace

template <class T>
Response training_response(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x,
                           const model::Targets<T>& targets, const Options& options) {
  if (!std::isfinite(options.eta) || options.eta <= 0)
    throw InvalidArgument("training_response: eta must be finite and > 0, got " + std::to_string(options.eta));
  spec.validate();
  const index_t n = x.rows;
  if (x.cols != spec.inputs())
    throw ShapeMismatch("training_response: x must have " + std::to_string(spec.inputs()) +
                        " columns (the network's inputs), got " + std::to_string(x.cols));
  if (n < 2)
    throw InvalidArgument("training_response: x must hold at least 2 samples (a source and another target), got " +
                          std::to_string(n));
  if (targets.rows() != n)
    throw ShapeMismatch("training_response: targets must have one row per sample of x (" + std::to_string(n) +
                        "), got " + std::to_string(targets.rows()));

  elasticity::Options eo;
  eo.eta = options.eta;
  eo.update = elasticity::Update::sgd;  // the response is defined for the plain gradient step
  eo.form = options.form;
  eo.loss = options.loss;
  const bool layers_in_same_call = options.per_layer && options.form == elasticity::Form::ntk;
  const elasticity::OutputChanges changes =
      elasticity::output_changes<T>(ctx, spec, params, x, targets, std::nullopt, eo, layers_in_same_call, "response");
  const index_t o = changes.outputs;

  Response out;
  out.samples = n;
  out.flops = changes.flops;
  // A source whose loss gradient is zero takes no step: R is 0/0 there. One whose own change is
  // below the step form's precision (unresolved) has a response that is rounding noise. (A
  // non-finite gradient is neither: its row comes out NaN and the means with it, as a diverged
  // model should.)
  std::vector<char> defined(std::size_t(n), 0), unresolved(std::size_t(n), 0);
  for (const index_t i : changes.unresolved_sources) unresolved[std::size_t(i)] = 1;
  for (index_t i = 0; i < n; ++i) {
    double g2 = 0;
    for (index_t k = 0; k < o; ++k) g2 += changes.loss_grad.data()[i * o + k] * changes.loss_grad.data()[i * o + k];
    defined[std::size_t(i)] = g2 != 0 && !unresolved[std::size_t(i)];
    if (!defined[std::size_t(i)]) out.undefined_sources.push_back(i);
    if (unresolved[std::size_t(i)]) out.unresolved_sources.push_back(i);
  }
  out.matrix = project(changes.delta, changes.loss_grad, n, o, options.eta, defined);
  std::tie(out.mean_diagonal, out.mean_off_diagonal) = means(out.matrix, n, defined);
  // The projection: N^2 O multiply-adds and as many for ||g||^2 and the scaling.
  out.flops += 2.0 * double(n) * double(n) * double(o);
  if (!options.per_layer) return out;

  std::optional<elasticity::OutputChanges> kernel;
  if (!layers_in_same_call) {
    elasticity::Options ko = eo;
    ko.form = elasticity::Form::ntk;
    kernel = elasticity::output_changes<T>(ctx, spec, params, x, targets, std::nullopt, ko, true, "response");
    out.flops += kernel->flops;
  }
  const elasticity::OutputChanges& k = kernel ? *kernel : changes;
  // The defined set stays the step's, so that the layers average the same sources as the total.
  for (const Array<double>& layer : k.layer_delta) {
    const Array<double> rl = project(layer, k.loss_grad, n, o, options.eta, defined);
    const auto [diag, off] = means(rl, n, defined);
    out.layer_diagonal.push_back(diag);
    out.layer_off_diagonal.push_back(off);
    out.flops += 2.0 * double(n) * double(n) * double(o);
  }
  if (options.form == elasticity::Form::step) {
    // The one step against its eta -> 0 limit over the same sources.
    double limit = 0;
    for (const double v : out.layer_diagonal) limit += v;
    out.kernel_gap = std::abs(out.mean_diagonal - limit) / std::abs(limit);
  }
  return out;
}

template Response training_response<float>(const Context&, const model::MlpSpec&, const float*, MatrixView<const float>,
                                           const model::Targets<float>&, const Options&);
template Response training_response<double>(const Context&, const model::MlpSpec&, const double*,
                                            MatrixView<const double>, const model::Targets<double>&, const Options&);

}  // namespace dynascope::response
