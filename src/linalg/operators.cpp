// The generic operators: a dense symmetric matrix.
#include <string>

#include "core/checks.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/linalg.hpp"
#include "linalg/operator_checks.hpp"

namespace dynascope::linalg {

template <class T>
DenseOperator<T>::DenseOperator(const Context& ctx, MatrixView<const T> a) : ctx_(ctx), a_(a) {
  if (a.rows != a.cols) throw ShapeMismatch("DenseOperator: the matrix must be square, got " + detail::dims(a.rows, a.cols));
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
  check_apply_block(*this, x, y, "DenseOperator");
  if (x.rows == 0) return;
  blas::gemm<T>(ctx_, blas::Op::none, blas::Op::trans, T(1), x, a_, T(0), y);
}

template class DenseOperator<float>;
template class DenseOperator<double>;

}  // namespace dynascope::linalg
