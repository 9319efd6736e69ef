// The curvature operators of a network's loss: Gauss-Newton J^T (H_loss (J V)) and the exact
// Hessian by the R-operator through the network.
#include "dynascope/curvature.hpp"

#include <string>

#include "core/buffer.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/losses.hpp"
#include "linalg/operator_checks.hpp"

namespace dynascope::linalg {

using detail::Buffer;

Curvature parse_curvature(const std::string& text) { return parse_name(curvature_names, text); }
const char* to_string(Curvature c) noexcept { return name_of(curvature_names, c); }

template <class T>
struct CurvatureOperator<T>::Impl {
  Curvature kind;
  model::MlpEngine<T> engine;
  const T* params;
  model::Targets<T> targets;
  model::Loss loss;
  MatrixView<const T> f;
  Buffer<T> g, fdot, gdot;
  double value = 0;
  Impl(const Context& ctx, Curvature k, const model::MlpSpec& s, const T* p, MatrixView<const T> x,
       const model::Targets<T>& t, model::Loss l)
      : kind(k), engine(ctx, s), params(p), targets(t), loss(l) {
    if (t.rows() != x.rows)
      throw ShapeMismatch("CurvatureOperator: " + std::to_string(x.rows) + " inputs but " + std::to_string(t.rows()) + " targets");
    f = engine.forward(p, x);
    MatrixView<T> gv = g.reserve(ctx, x.rows, s.outputs());
    value = model::loss_and_grad<T>(ctx, loss, f, targets, gv).loss;
  }
};

template <class T>
CurvatureOperator<T>::CurvatureOperator(const Context& ctx, Curvature kind, const model::MlpSpec& spec, const T* params,
                                        MatrixView<const T> x, const model::Targets<T>& targets, model::Loss loss)
    : ctx_(ctx), impl_(std::make_unique<Impl>(ctx, kind, spec, params, x, targets, loss)) {}
template <class T>
CurvatureOperator<T>::~CurvatureOperator() = default;
template <class T>
index_t CurvatureOperator<T>::size() const { return impl_->engine.spec().num_params(); }
template <class T>
double CurvatureOperator<T>::loss_value() const { return impl_->value; }

// Gauss-Newton: J^T (H_loss (J V)). Hessian: the R-operator through the network.
template <class T>
void CurvatureOperator<T>::apply(MatrixView<const T> v, MatrixView<T> y) {
  check_apply_block(*this, v, y, "CurvatureOperator");
  Impl& s = *impl_;
  const index_t k = v.rows, n = s.f.rows, o = s.f.cols;
  if (k == 0) return;
  MatrixView<T> gd = s.gdot.reserve(ctx_, k * n, o);
  if (s.kind == Curvature::gauss_newton) {
    MatrixView<T> fd = s.fdot.reserve(ctx_, k * n, o);
    s.engine.jvp(s.params, v, fd);
    model::loss_hessian_apply<T>(ctx_, s.loss, s.f, s.targets, fd, gd);
    s.engine.backprop(s.params, gd, k);
    s.engine.param_grads(y);
  } else {
    const MatrixView<const T> fd = s.engine.hvp_forward(s.params, v);
    model::loss_hessian_apply<T>(ctx_, s.loss, s.f, s.targets, fd, gd);
    s.engine.hvp_backward(s.params, s.g.view(n, o), gd, v, y);
  }
}

template class CurvatureOperator<float>;
template class CurvatureOperator<double>;

}  // namespace dynascope::linalg
