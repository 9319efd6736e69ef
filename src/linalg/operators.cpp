// The built-in operators: dense matrix, NTK in function space, Gauss-Newton and Hessian.
#include <string>

#include "dynascope/blas.hpp"
#include "dynascope/ntk.hpp"
#include "dynascope/spectra.hpp"
#include "model/buffers.hpp"

namespace dynascope::linalg {

namespace {
template <class T>
void check_block(const LinearOperator<T>& op, MatrixView<const T> x, MatrixView<T> y, const char* who) {
  if (x.cols != op.size() || y.cols != op.size() || x.rows != y.rows)
    throw ShapeMismatch(std::string(who) + "::apply: X and Y must be [k, " + std::to_string(op.size()) + "], got " +
                        std::to_string(x.rows) + "x" + std::to_string(x.cols) + " and " + std::to_string(y.rows) + "x" +
                        std::to_string(y.cols));
}
}  // namespace

template <class T>
DenseOperator<T>::DenseOperator(const Context& ctx, MatrixView<const T> a) : ctx_(ctx), a_(a) {
  if (a.rows != a.cols)
    throw ShapeMismatch("DenseOperator: the matrix must be square, got " + std::to_string(a.rows) + "x" + std::to_string(a.cols));
}

template <class T>
index_t DenseOperator<T>::size() const { return a_.rows; }
template <class T>
const Context& DenseOperator<T>::context() const { return ctx_; }
template <class T>
MatrixView<const T> DenseOperator<T>::matrix() const { return a_; }

// Y = X A^T = X A for symmetric A.
template <class T>
void DenseOperator<T>::apply(MatrixView<const T> x, MatrixView<T> y) {
  check_block(*this, x, y, "DenseOperator");
  if (x.rows == 0) return;
  blas::gemm<T>(ctx_, blas::Op::none, blas::Op::trans, T(1), x, a_, T(0), y);
}

template <class T>
struct NtkFunctionOperator<T>::Impl {
  ntk::NtkOperator<T> op;
  Impl(const Context& ctx, const model::MlpSpec& s, const T* p, MatrixView<const T> x) : op(ctx, s, p, x) {}
};

template <class T>
NtkFunctionOperator<T>::NtkFunctionOperator(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                            MatrixView<const T> x)
    : ctx_(ctx), impl_(std::make_unique<Impl>(ctx, spec, params, x)) {}
template <class T>
NtkFunctionOperator<T>::~NtkFunctionOperator() = default;
template <class T>
index_t NtkFunctionOperator<T>::size() const { return impl_->op.size(); }
template <class T>
void NtkFunctionOperator<T>::apply(MatrixView<const T> x, MatrixView<T> y) {
  check_block(*this, x, y, "NtkFunctionOperator");
  impl_->op.apply(x, y);
}

template <class T>
struct CurvatureOperator<T>::Impl {
  Curvature kind;
  model::MlpEngine<T> engine;
  const T* params;
  model::Targets<T> targets;
  model::Loss loss;
  MatrixView<const T> f;
  model::Buffer<T> g, fdot, gdot;
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
  check_block(*this, v, y, "CurvatureOperator");
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

template class DenseOperator<float>;
template class DenseOperator<double>;
template class NtkFunctionOperator<float>;
template class NtkFunctionOperator<double>;
template class CurvatureOperator<float>;
template class CurvatureOperator<double>;

}  // namespace dynascope::linalg
