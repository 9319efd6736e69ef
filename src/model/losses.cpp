// Losses with PyTorch's semantics. Each loss is one fused per-sample kernel that writes the
// gradient row and returns the sample's loss to a deterministic reduction.
#include "dynascope/losses.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/checks.hpp"
#include "kernels/launch.cuh"
#include "kernels/math.cuh"

namespace dynascope::model {

using detail::check_matrix;
using detail::check_vector;

Loss parse_loss(const std::string& text) { return parse_name(loss_names, text); }
const char* to_string(Loss loss) noexcept { return name_of(loss_names, loss); }

namespace {

template <class T>
void check_outputs(const Context& ctx, MatrixView<const T> f, const Targets<T>& t, MatrixView<T> grad) {
  if (t.rows() != f.rows)
    throw ShapeMismatch("loss: " + std::to_string(f.rows) + " outputs but " + std::to_string(t.rows()) + " targets");
  if (!t.has_labels() && t.values.cols != f.cols)
    throw ShapeMismatch("loss: outputs have " + std::to_string(f.cols) + " columns, targets " + std::to_string(t.values.cols));
  if (grad.data && (grad.rows != f.rows || grad.cols != f.cols))
    throw ShapeMismatch("loss: the gradient must have the shape of the outputs");
  check_matrix(ctx, f, "loss", "the outputs");
  if (grad.data) check_matrix(ctx, grad, "loss", "the gradient");
  if (t.has_labels()) check_vector(ctx, t.labels, "loss", "the labels");
  else check_matrix(ctx, t.values, "loss", "the targets");
}

}  // namespace

template <class T>
LossValue loss_and_grad(const Context& ctx, Loss loss, MatrixView<const T> f, const Targets<T>& t, MatrixView<T> grad) {
  check_outputs(ctx, f, t, grad);
  const index_t n = f.rows, o = f.cols;
  LossValue r;
  if (n == 0) return r;
  const bool labels = t.has_labels();
  const std::int64_t* lab = t.labels.data;
  const index_t lab_stride = t.labels.stride;
  MatrixView<const T> y = t.values;
  T* g = grad.data;
  const index_t gld = grad.ld;
  if (loss == Loss::mse) {
    // L = 1/(N O) sum (f - y)^2 ;  dL/df = 2 (f - y) / (N O)
    const T gscale = T(2) / static_cast<T>(double(n) * double(o));
    r.loss = kern::reduce_sum(ctx, n, [=] DYNASCOPE_HD(index_t i) {
               double s = 0;
               for (index_t j = 0; j < o; ++j) {
                 const T target = labels ? (lab[i * lab_stride] == j ? T(1) : T(0)) : y(i, j);
                 const T d = f(i, j) - target;
                 s += double(d) * double(d);
                 if (g) g[i * gld + j] = gscale * d;
               }
               return s;
             }) /
             (double(n) * double(o));
  } else {
    if (!labels) throw InvalidArgument("loss xent: needs integer class labels as targets");
    // L = 1/N sum_i (logsumexp f_i - f_{i, y_i}) ;  dL/df = (softmax f_i - onehot y_i) / N
    const T inv_n = T(1) / static_cast<T>(n);
    r.loss = kern::reduce_sum(ctx, n, [=] DYNASCOPE_HD(index_t i) {
               T mx = f(i, 0);
               for (index_t j = 1; j < o; ++j) mx = f(i, j) > mx ? f(i, j) : mx;
               double se = 0;
               for (index_t j = 0; j < o; ++j) se += kern::exp(double(f(i, j) - mx));
               const std::int64_t c = lab[i * lab_stride];
               const bool valid = c >= 0 && c < o;
               if (g)
                 for (index_t j = 0; j < o; ++j)
                   g[i * gld + j] = inv_n * static_cast<T>(kern::exp(double(f(i, j) - mx)) / se - (j == c ? 1.0 : 0.0));
               return valid ? double(mx) + kern::log(se) - double(f(i, valid ? c : 0)) : NAN;
             }) /
             double(n);
  }
  if (labels) {
    const double correct = kern::reduce_sum(ctx, n, [=] DYNASCOPE_HD(index_t i) {
      index_t best = 0;
      for (index_t j = 1; j < o; ++j)
        if (f(i, j) > f(i, best)) best = j;
      return lab[i * lab_stride] == best ? 1.0 : 0.0;
    });
    r.accuracy = correct / double(n);
  }
  return r;
}

template <class T>
void loss_hessian_apply(const Context& ctx, Loss loss, MatrixView<const T> f, const Targets<T>& t, MatrixView<const T> fdot,
                        MatrixView<T> out) {
  check_outputs(ctx, f, t, MatrixView<T>{});
  const index_t n = f.rows, o = f.cols;
  if (fdot.cols != o || fdot.rows % std::max<index_t>(n, 1) != 0 || out.rows != fdot.rows || out.cols != o)
    throw ShapeMismatch("loss_hessian_apply: fdot and out must be [k*N, O] with N = " + std::to_string(n) + ", O = " +
                        std::to_string(o));
  const index_t rows = fdot.rows;
  check_matrix(ctx, fdot, "loss_hessian_apply", "fdot");
  check_matrix(ctx, out, "loss_hessian_apply", "out");
  if (n == 0 || rows == 0) {
    if (rows != 0) throw ShapeMismatch("loss_hessian_apply: output tangents for an empty batch");
    return;
  }
  if (loss == Loss::mse) {
    const T scale = T(2) / static_cast<T>(double(n) * double(o));
    kern::parallel_for(ctx, rows * o, [=] DYNASCOPE_HD(index_t idx) {
      const index_t r = idx / o, j = idx % o;
      out(r, j) = scale * fdot(r, j);
    });
    return;
  }
  if (!t.has_labels()) throw InvalidArgument("loss xent: needs integer class labels as targets");
  // (diag p - p p^T) v / N = p .* (v - <p, v>) / N, one row per (block, sample).
  const T inv_n = T(1) / static_cast<T>(n);
  kern::parallel_for(ctx, rows, [=] DYNASCOPE_HD(index_t r) {
    const index_t i = r % n;
    T mx = f(i, 0);
    for (index_t j = 1; j < o; ++j) mx = f(i, j) > mx ? f(i, j) : mx;
    double se = 0, pv = 0;
    for (index_t j = 0; j < o; ++j) {
      const double e = kern::exp(double(f(i, j) - mx));
      se += e;
      pv += e * double(fdot(r, j));
    }
    pv /= se;
    for (index_t j = 0; j < o; ++j) {
      const double p = kern::exp(double(f(i, j) - mx)) / se;
      out(r, j) = inv_n * static_cast<T>(p * (double(fdot(r, j)) - pv));
    }
  });
}

#define DS_INSTANTIATE(T)                                                                                          \
  template LossValue loss_and_grad<T>(const Context&, Loss, MatrixView<const T>, const Targets<T>&, MatrixView<T>); \
  template void loss_hessian_apply<T>(const Context&, Loss, MatrixView<const T>, const Targets<T>&, MatrixView<const T>, \
                                      MatrixView<T>);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace dynascope::model
