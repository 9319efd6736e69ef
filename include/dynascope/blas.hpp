#pragma once
// The dense linear algebra dynascope needs, on either backend: OpenBLAS/LAPACKE on host,
// cuBLAS/cuSOLVER on cuda. All matrices are row-major MatrixViews on the context's backend;
// float and double. Shapes are checked and a mismatch throws ShapeMismatch naming the call.
#include "dynascope/context.hpp"
#include "dynascope/view.hpp"

namespace dynascope::blas {

enum class Op { none, trans };

// C = alpha op(A) op(B) + beta C.
template <class T>
DYNASCOPE_API void gemm(const Context& ctx, Op op_a, Op op_b, T alpha, MatrixView<const T> a,
                        MatrixView<const T> b, T beta, MatrixView<T> c);

// C_i = alpha op(A_i) op(B_i) + beta C_i for i < batch, where X_i starts at X.data + i * stride_x
// and every X_i has the shape and ld of the view given.
template <class T>
DYNASCOPE_API void gemm_strided_batched(const Context& ctx, Op op_a, Op op_b, T alpha,
                                        MatrixView<const T> a, index_t stride_a,
                                        MatrixView<const T> b, index_t stride_b, T beta,
                                        MatrixView<T> c, index_t stride_c, index_t batch);

// C = alpha op(A) op(A)^T + beta C with op(A) = A (op none: C is rows(A) x rows(A)) or A^T.
// Both triangles of C are written (the lower one by BLAS, the upper one mirrored).
template <class T>
DYNASCOPE_API void syrk(const Context& ctx, Op op, T alpha, MatrixView<const T> a, T beta,
                        MatrixView<T> c);

// y = alpha op(A) x + beta y.
template <class T>
DYNASCOPE_API void gemv(const Context& ctx, Op op, T alpha, MatrixView<const T> a,
                        VectorView<const T> x, T beta, VectorView<T> y);

// Scalars come back to the host (on cuda this waits for the stream).
template <class T>
DYNASCOPE_API T dot(const Context& ctx, VectorView<const T> x, VectorView<const T> y);
template <class T>
DYNASCOPE_API T nrm2(const Context& ctx, VectorView<const T> x);
// y = alpha x + y.
template <class T>
DYNASCOPE_API void axpy(const Context& ctx, T alpha, VectorView<const T> x, VectorView<T> y);
// x = alpha x.
template <class T>
DYNASCOPE_API void scal(const Context& ctx, T alpha, VectorView<T> x);

// A short name for the BLAS library behind the host backend (e.g. "OpenBLAS 0.3.21 ... OPENMP").
DYNASCOPE_API std::string host_blas_name();

}  // namespace dynascope::blas

namespace dynascope::lapack {

// All eigenpairs of the symmetric matrix A (n x n, only its lower triangle is read).
// On return w holds the eigenvalues in ascending order and row i of A the unit eigenvector of
// w[i]. Throws LapackError when the solver fails to converge.
template <class T>
DYNASCOPE_API void syevd(const Context& ctx, MatrixView<T> a, VectorView<T> w);

// Eigenpairs first..last-1 (0-based, ascending order) of the symmetric matrix A. A is destroyed.
// w receives last-first eigenvalues, row i of z (at least last-first rows, n columns) the
// eigenvector of w[i].
template <class T>
DYNASCOPE_API void syevdx(const Context& ctx, MatrixView<T> a, index_t first, index_t last,
                          VectorView<T> w, MatrixView<T> z);

// Eigen-decomposition of the symmetric tridiagonal matrix with diagonal d (n) and off-diagonal
// e (n-1), always on the host (host memory). On return d holds the ascending eigenvalues and,
// when z has n rows, row i of z the eigenvector of d[i]. e is destroyed.
DYNASCOPE_API void stev(VectorView<double> d, VectorView<double> e, MatrixView<double> z);

// Replaces the rows of A (k x n, k <= n) by an orthonormal basis of their span (thin QR of A^T,
// Q's columns become A's rows; the rows keep their order: row i spans like the first i+1 rows).
template <class T>
DYNASCOPE_API void orthonormalize_rows(const Context& ctx, MatrixView<T> a);

}  // namespace dynascope::lapack
