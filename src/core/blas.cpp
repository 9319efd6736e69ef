// blas:: and lapack:: dispatch. Host: OpenBLAS (cblas, row-major) and LAPACKE. cuda: cuBLAS and
// cuSOLVER, which are column-major: a row-major matrix is the column-major view of its
// transpose, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T.
#include "dynascope/blas.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <omp.h>

#include <climits>
#include <string>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/config.hpp"
#include "dynascope/error.hpp"
#include "core/blas_kernels.hpp"
#include "core/checks.hpp"
#include "core/omp_threads.hpp"

#if DYNASCOPE_WITH_CUDA
#include "cuda/check.hpp"
#include "cuda/cuda_api.hpp"
#include "cuda/libraries.hpp"
#endif

namespace dynascope {
namespace {

using detail::check_matrix;
using detail::check_vector;
using detail::dims;
using detail::OmpThreads;

int to_int(index_t v, const char* call) {
  if (v > INT_MAX) throw InvalidArgument(std::string(call) + ": dimension " + std::to_string(v) + " exceeds the 32-bit BLAS interface");
  return static_cast<int>(v);
}

// The OpenMP build of OpenBLAS threads every call with the calling thread's nthreads ICV. Small
// products run on one thread: their fork/join costs more than the work, and when another process
// holds a core the whole team waits for it (measured: a 384x64x64 training step 40x slower).
// The ICV is the calling thread's own, set for the call and restored, so embedders are unaffected.
constexpr double kThreadedFlops = double(1 << 24);
class BlasThreads : public OmpThreads {
 public:
  BlasThreads(const Context& ctx, double flops)
      : OmpThreads(flops < kThreadedFlops ? 1 : (ctx.threads() > 0 ? ctx.threads() : omp_get_max_threads())) {}
};

inline index_t op_rows(blas::Op op, index_t r, index_t c) { return op == blas::Op::none ? r : c; }
inline index_t op_cols(blas::Op op, index_t r, index_t c) { return op == blas::Op::none ? c : r; }
inline CBLAS_TRANSPOSE cblas_op(blas::Op op) { return op == blas::Op::none ? CblasNoTrans : CblasTrans; }

// ---- host BLAS overloads ----
void host_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float* a, int lda,
               const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void host_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha, const double* a, int lda,
               const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void host_syrk(CBLAS_TRANSPOSE t, int n, int k, float alpha, const float* a, int lda, float beta, float* c, int ldc) {
  cblas_ssyrk(CblasRowMajor, CblasLower, t, n, k, alpha, a, lda, beta, c, ldc);
}
void host_syrk(CBLAS_TRANSPOSE t, int n, int k, double alpha, const double* a, int lda, double beta, double* c, int ldc) {
  cblas_dsyrk(CblasRowMajor, CblasLower, t, n, k, alpha, a, lda, beta, c, ldc);
}
void host_gemv(CBLAS_TRANSPOSE t, int m, int n, float alpha, const float* a, int lda, const float* x, int incx,
               float beta, float* y, int incy) {
  cblas_sgemv(CblasRowMajor, t, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
void host_gemv(CBLAS_TRANSPOSE t, int m, int n, double alpha, const double* a, int lda, const double* x, int incx,
               double beta, double* y, int incy) {
  cblas_dgemv(CblasRowMajor, t, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
float host_dot(int n, const float* x, int incx, const float* y, int incy) { return cblas_sdot(n, x, incx, y, incy); }
double host_dot(int n, const double* x, int incx, const double* y, int incy) { return cblas_ddot(n, x, incx, y, incy); }
float host_nrm2(int n, const float* x, int incx) { return cblas_snrm2(n, x, incx); }
double host_nrm2(int n, const double* x, int incx) { return cblas_dnrm2(n, x, incx); }
void host_axpy(int n, float a, const float* x, int incx, float* y, int incy) { cblas_saxpy(n, a, x, incx, y, incy); }
void host_axpy(int n, double a, const double* x, int incx, double* y, int incy) { cblas_daxpy(n, a, x, incx, y, incy); }
void host_scal(int n, float a, float* x, int incx) { cblas_sscal(n, a, x, incx); }
void host_scal(int n, double a, double* x, int incx) { cblas_dscal(n, a, x, incx); }

#if DYNASCOPE_WITH_CUDA
cublasHandle_t cublas(const Context& ctx) { return static_cast<cublasHandle_t>(ctx.cublas()); }
cusolverDnHandle_t cusolver(const Context& ctx) { return static_cast<cusolverDnHandle_t>(ctx.cusolver()); }
cublasOperation_t cu_op(blas::Op op) { return op == blas::Op::none ? CUBLAS_OP_N : CUBLAS_OP_T; }

// Typed overloads over the loaded tables (cuda/libraries.hpp); the first argument only selects the
// precision. The handle argument is evaluated first and loads the library if needed.
#define DS_CU_PAIR(name, sfun, dfun)                                                                      \
  template <class... A> cublasStatus_t name(float*, A... args) { return cuda_lib::cublas().sfun(args...); } \
  template <class... A> cublasStatus_t name(double*, A... args) { return cuda_lib::cublas().dfun(args...); }
DS_CU_PAIR(cu_gemm, cublasSgemm, cublasDgemm)
DS_CU_PAIR(cu_gemm_batched, cublasSgemmStridedBatched, cublasDgemmStridedBatched)
DS_CU_PAIR(cu_syrk, cublasSsyrk, cublasDsyrk)
DS_CU_PAIR(cu_gemv, cublasSgemv, cublasDgemv)
DS_CU_PAIR(cu_dot, cublasSdot, cublasDdot)
DS_CU_PAIR(cu_nrm2, cublasSnrm2, cublasDnrm2)
DS_CU_PAIR(cu_axpy, cublasSaxpy, cublasDaxpy)
DS_CU_PAIR(cu_scal, cublasSscal, cublasDscal)
#undef DS_CU_PAIR
#define DS_CUSOLVER_PAIR(name, sfun, dfun)                                  \
  template <class... A> cusolverStatus_t name(float*, A... args) {           \
    return cuda_lib::cusolver().sfun(args...);                               \
  }                                                                          \
  template <class... A> cusolverStatus_t name(double*, A... args) {          \
    return cuda_lib::cusolver().dfun(args...);                               \
  }
DS_CUSOLVER_PAIR(cu_syevd_buffer, cusolverDnSsyevd_bufferSize, cusolverDnDsyevd_bufferSize)
DS_CUSOLVER_PAIR(cu_syevd, cusolverDnSsyevd, cusolverDnDsyevd)
DS_CUSOLVER_PAIR(cu_syevdx_buffer, cusolverDnSsyevdx_bufferSize, cusolverDnDsyevdx_bufferSize)
DS_CUSOLVER_PAIR(cu_syevdx, cusolverDnSsyevdx, cusolverDnDsyevdx)
DS_CUSOLVER_PAIR(cu_geqrf_buffer, cusolverDnSgeqrf_bufferSize, cusolverDnDgeqrf_bufferSize)
DS_CUSOLVER_PAIR(cu_geqrf, cusolverDnSgeqrf, cusolverDnDgeqrf)
DS_CUSOLVER_PAIR(cu_orgqr_buffer, cusolverDnSorgqr_bufferSize, cusolverDnDorgqr_bufferSize)
DS_CUSOLVER_PAIR(cu_orgqr, cusolverDnSorgqr, cusolverDnDorgqr)
#undef DS_CUSOLVER_PAIR

// Reads the device info word written by a cuSOLVER routine (waits for the stream).
int device_info(const Context& ctx, const Array<int>& info) {
  int h = 0;
  detail::copy_bytes(ctx, &h, Backend::host, info.data(), Backend::cuda, sizeof(int));
  return h;
}
#endif

using blas_detail::mirror_lower;

}  // namespace

namespace blas {

template <class T>
void gemm(const Context& ctx, Op op_a, Op op_b, T alpha, MatrixView<const T> a, MatrixView<const T> b, T beta,
          MatrixView<T> c) {
  check_matrix(ctx, a, "blas::gemm", "A");
  check_matrix(ctx, b, "blas::gemm", "B");
  check_matrix(ctx, c, "blas::gemm", "C");
  const index_t m = op_rows(op_a, a.rows, a.cols), k = op_cols(op_a, a.rows, a.cols);
  const index_t kb = op_rows(op_b, b.rows, b.cols), n = op_cols(op_b, b.rows, b.cols);
  if (k != kb || c.rows != m || c.cols != n)
    throw ShapeMismatch("blas::gemm: op(A) is " + dims(m, k) + ", op(B) " + dims(kb, n) + ", C " +
                        dims(c.rows, c.cols));
  if (m == 0 || n == 0) return;
  if (ctx.is_host()) {
    BlasThreads threads(ctx, 2.0 * double(m) * double(n) * double(k));
    host_gemm(cblas_op(op_a), cblas_op(op_b), to_int(m, "gemm"), to_int(n, "gemm"), to_int(k, "gemm"), alpha,
              a.data, to_int(a.ld, "gemm"), b.data, to_int(b.ld, "gemm"), beta, c.data, to_int(c.ld, "gemm"));
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  DYNASCOPE_CUBLAS_CHECK(cu_gemm(c.data, cublas(ctx), cu_op(op_b), cu_op(op_a), to_int(n, "gemm"), to_int(m, "gemm"),
                                 to_int(k, "gemm"), &alpha, b.data, to_int(b.ld, "gemm"), a.data,
                                 to_int(a.ld, "gemm"), &beta, c.data, to_int(c.ld, "gemm")));
#endif
}

template <class T>
void gemm_strided_batched(const Context& ctx, Op op_a, Op op_b, T alpha, MatrixView<const T> a, index_t stride_a,
                          MatrixView<const T> b, index_t stride_b, T beta, MatrixView<T> c, index_t stride_c,
                          index_t batch) {
  constexpr const char* name = "blas::gemm_strided_batched";
  if (batch < 0) throw InvalidArgument("blas::gemm_strided_batched: negative batch count");
  // The whole call is checked on both backends, before anything runs, with this call's name.
  check_matrix(ctx, a, name, "A");
  check_matrix(ctx, b, name, "B");
  check_matrix(ctx, c, name, "C");
  const index_t m = op_rows(op_a, a.rows, a.cols), k = op_cols(op_a, a.rows, a.cols);
  const index_t kb = op_rows(op_b, b.rows, b.cols), n = op_cols(op_b, b.rows, b.cols);
  if (k != kb || c.rows != m || c.cols != n)
    throw ShapeMismatch("blas::gemm_strided_batched: op(A) is " + dims(m, k) + ", op(B) " + dims(kb, n) +
                        ", C " + dims(c.rows, c.cols));
  // Inputs may be shared (stride 0); outputs must not overlap, or the products would race.
  if (stride_a < 0 || stride_b < 0 || (batch > 1 && m > 0 && n > 0 && stride_c < (m - 1) * c.ld + n))
    throw InvalidArgument("blas::gemm_strided_batched: strides must be >= 0 and the C_i must not overlap (stride_c >= "
                          "(m - 1) ldc + n = " + std::to_string((m - 1) * c.ld + n) + ", got " +
                          std::to_string(stride_c) + ")");
  if (batch == 0 || m == 0 || n == 0) return;
  if (ctx.is_host()) {
    // OpenBLAS 0.3.21 has no strided-batched gemm; each product is large enough to thread.
    for (index_t i = 0; i < batch; ++i) {
      MatrixView<const T> ai{a.data + i * stride_a, a.rows, a.cols, a.ld, a.backend, a.device};
      MatrixView<const T> bi{b.data + i * stride_b, b.rows, b.cols, b.ld, b.backend, b.device};
      MatrixView<T> ci{c.data + i * stride_c, c.rows, c.cols, c.ld, c.backend, c.device};
      gemm(ctx, op_a, op_b, alpha, ai, bi, beta, ci);
    }
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  const char* call = "gemm_strided_batched";
  DYNASCOPE_CUBLAS_CHECK(cu_gemm_batched(c.data, cublas(ctx), cu_op(op_b), cu_op(op_a), to_int(n, call),
                                         to_int(m, call), to_int(k, call), &alpha, b.data, to_int(b.ld, call),
                                         static_cast<long long>(stride_b), a.data, to_int(a.ld, call),
                                         static_cast<long long>(stride_a), &beta, c.data, to_int(c.ld, call),
                                         static_cast<long long>(stride_c), to_int(batch, call)));
#endif
}

template <class T>
void syrk(const Context& ctx, Op op, T alpha, MatrixView<const T> a, T beta, MatrixView<T> c) {
  check_matrix(ctx, a, "blas::syrk", "A");
  check_matrix(ctx, c, "blas::syrk", "C");
  const index_t n = op_rows(op, a.rows, a.cols), k = op_cols(op, a.rows, a.cols);
  if (c.rows != n || c.cols != n)
    throw ShapeMismatch("blas::syrk: op(A) is " + dims(n, k) + " so C must be " + dims(n, n) + ", got " +
                        dims(c.rows, c.cols));
  if (n == 0) return;
  if (ctx.is_host()) {
    BlasThreads threads(ctx, double(n) * double(n) * double(k));
    host_syrk(cblas_op(op), to_int(n, "syrk"), to_int(k, "syrk"), alpha, a.data, to_int(a.ld, "syrk"), beta, c.data,
              to_int(c.ld, "syrk"));
  } else {
#if DYNASCOPE_WITH_CUDA
    cuda_api::DeviceScope on_device(ctx.device());
    // Row-major lower = column-major upper; the column-major view of A is A^T.
    DYNASCOPE_CUBLAS_CHECK(cu_syrk(c.data, cublas(ctx), CUBLAS_FILL_MODE_UPPER,
                                   op == Op::none ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(n, "syrk"), to_int(k, "syrk"),
                                   &alpha, a.data, to_int(a.ld, "syrk"), &beta, c.data, to_int(c.ld, "syrk")));
#endif
  }
  mirror_lower(ctx, c);
}

template <class T>
void gemv(const Context& ctx, Op op, T alpha, MatrixView<const T> a, VectorView<const T> x, T beta, VectorView<T> y) {
  check_matrix(ctx, a, "blas::gemv", "A");
  check_vector(ctx, x, "blas::gemv", "x");
  check_vector(ctx, y, "blas::gemv", "y");
  const index_t m = op_rows(op, a.rows, a.cols), n = op_cols(op, a.rows, a.cols);
  if (x.size != n || y.size != m)
    throw ShapeMismatch("blas::gemv: op(A) is " + dims(m, n) + ", x has " + std::to_string(x.size) + ", y has " +
                        std::to_string(y.size) + " elements");
  if (m == 0) return;
  if (n == 0) {
    // op(A) has no columns: y = beta y. The BLAS (reference, OpenBLAS, cuBLAS) return before
    // touching y when a dimension is 0; beta = 0 writes zeros without reading y.
    if (beta != T(0)) {
      scal<T>(ctx, beta, y);
    } else if (y.stride == 1) {
      detail::fill_zero_bytes(ctx, y.data, y.backend, static_cast<std::size_t>(m) * sizeof(T));
    } else {
      for (index_t i = 0; i < m; ++i) detail::fill_zero_bytes(ctx, y.data + i * y.stride, y.backend, sizeof(T));
    }
    return;
  }
  if (ctx.is_host()) {
    BlasThreads threads(ctx, 2.0 * double(m) * double(n));
    host_gemv(cblas_op(op), to_int(a.rows, "gemv"), to_int(a.cols, "gemv"), alpha, a.data, to_int(a.ld, "gemv"),
              x.data, to_int(x.stride, "gemv"), beta, y.data, to_int(y.stride, "gemv"));
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  DYNASCOPE_CUBLAS_CHECK(cu_gemv(y.data, cublas(ctx), op == Op::none ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 to_int(a.cols, "gemv"), to_int(a.rows, "gemv"), &alpha, a.data, to_int(a.ld, "gemv"),
                                 x.data, to_int(x.stride, "gemv"), &beta, y.data, to_int(y.stride, "gemv")));
#endif
}

template <class T>
T dot(const Context& ctx, VectorView<const T> x, VectorView<const T> y) {
  check_vector(ctx, x, "blas::dot", "x");
  check_vector(ctx, y, "blas::dot", "y");
  if (x.size != y.size)
    throw ShapeMismatch("blas::dot: x has " + std::to_string(x.size) + " elements, y " + std::to_string(y.size));
  if (x.size == 0) return T(0);
  if (ctx.is_host()) {
    BlasThreads threads(ctx, 2.0 * double(x.size));
    return host_dot(to_int(x.size, "dot"), x.data, to_int(x.stride, "dot"), y.data, to_int(y.stride, "dot"));
  }
  T r = T(0);
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  DYNASCOPE_CUBLAS_CHECK(cu_dot(&r, cublas(ctx), to_int(x.size, "dot"), x.data, to_int(x.stride, "dot"), y.data,
                                to_int(y.stride, "dot"), &r));
#endif
  return r;
}

template <class T>
T nrm2(const Context& ctx, VectorView<const T> x) {
  check_vector(ctx, x, "blas::nrm2", "x");
  if (x.size == 0) return T(0);
  if (ctx.is_host()) {
    BlasThreads threads(ctx, 2.0 * double(x.size));
    return host_nrm2(to_int(x.size, "nrm2"), x.data, to_int(x.stride, "nrm2"));
  }
  T r = T(0);
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  DYNASCOPE_CUBLAS_CHECK(cu_nrm2(&r, cublas(ctx), to_int(x.size, "nrm2"), x.data, to_int(x.stride, "nrm2"), &r));
#endif
  return r;
}

template <class T>
void axpy(const Context& ctx, T alpha, VectorView<const T> x, VectorView<T> y) {
  check_vector(ctx, x, "blas::axpy", "x");
  check_vector(ctx, y, "blas::axpy", "y");
  if (x.size != y.size)
    throw ShapeMismatch("blas::axpy: x has " + std::to_string(x.size) + " elements, y " + std::to_string(y.size));
  if (x.size == 0) return;
  if (ctx.is_host()) {
    BlasThreads threads(ctx, 2.0 * double(x.size));
    host_axpy(to_int(x.size, "axpy"), alpha, x.data, to_int(x.stride, "axpy"), y.data, to_int(y.stride, "axpy"));
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  DYNASCOPE_CUBLAS_CHECK(cu_axpy(y.data, cublas(ctx), to_int(x.size, "axpy"), &alpha, x.data,
                                 to_int(x.stride, "axpy"), y.data, to_int(y.stride, "axpy")));
#endif
}

template <class T>
void scal(const Context& ctx, T alpha, VectorView<T> x) {
  check_vector(ctx, x, "blas::scal", "x");
  if (x.size == 0) return;
  if (ctx.is_host()) {
    BlasThreads threads(ctx, double(x.size));
    host_scal(to_int(x.size, "scal"), alpha, x.data, to_int(x.stride, "scal"));
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  DYNASCOPE_CUBLAS_CHECK(cu_scal(x.data, cublas(ctx), to_int(x.size, "scal"), &alpha, x.data, to_int(x.stride, "scal")));
#endif
}

std::string host_blas_name() {
  std::string s = openblas_get_config();  // "OpenBLAS 0.3.21 ... USE_OPENMP ..."
  return s;
}

#define DS_INSTANTIATE(T)                                                                                    \
  template void gemm<T>(const Context&, Op, Op, T, MatrixView<const T>, MatrixView<const T>, T, \
                                      MatrixView<T>);                                                       \
  template void gemm_strided_batched<T>(const Context&, Op, Op, T, MatrixView<const T>, index_t, \
                                                      MatrixView<const T>, index_t, T, MatrixView<T>, index_t,  \
                                                      index_t);                                             \
  template void syrk<T>(const Context&, Op, T, MatrixView<const T>, T, MatrixView<T>);         \
  template void gemv<T>(const Context&, Op, T, MatrixView<const T>, VectorView<const T>, T,    \
                                      VectorView<T>);                                                       \
  template T dot<T>(const Context&, VectorView<const T>, VectorView<const T>);                 \
  template T nrm2<T>(const Context&, VectorView<const T>);                                    \
  template void axpy<T>(const Context&, T, VectorView<const T>, VectorView<T>);               \
  template void scal<T>(const Context&, T, VectorView<T>);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace blas

namespace lapack {
namespace {

// Workspace sized by LAPACK's documented formula (jobz = 'V'): the workspace query returns the size
// as a floating-point number, which in single precision rounds below the true size for n >~ 3000
// and makes ssyevd reject its own suggestion.
template <class T>
struct SyevdWork {
  std::vector<T> work;
  std::vector<lapack_int> iwork;
  explicit SyevdWork(int n)
      : work(static_cast<std::size_t>(1 + 6 * std::size_t(n) + 2 * std::size_t(n) * std::size_t(n))),
        iwork(static_cast<std::size_t>(3 + 5 * std::size_t(n))) {}
};
int lapacke_syevd(int n, float* a, int lda, float* w) {
  SyevdWork<float> ws(n);
  return LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'U', n, a, lda, w, ws.work.data(), static_cast<lapack_int>(ws.work.size()),
                             ws.iwork.data(), static_cast<lapack_int>(ws.iwork.size()));
}
int lapacke_syevd(int n, double* a, int lda, double* w) {
  SyevdWork<double> ws(n);
  return LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', n, a, lda, w, ws.work.data(), static_cast<lapack_int>(ws.work.size()),
                             ws.iwork.data(), static_cast<lapack_int>(ws.iwork.size()));
}
int lapacke_syevr(int n, float* a, int lda, int il, int iu, int* m, float* w, float* z, int ldz, int* isuppz) {
  return LAPACKE_ssyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', n, a, lda, 0.f, 0.f, il, iu, 0.f, m, w, z, ldz, isuppz);
}
int lapacke_syevr(int n, double* a, int lda, int il, int iu, int* m, double* w, double* z, int ldz, int* isuppz) {
  return LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', n, a, lda, 0.0, 0.0, il, iu, 0.0, m, w, z, ldz, isuppz);
}
int lapacke_geqrf(int m, int n, float* a, int lda, float* tau) { return LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau); }
int lapacke_geqrf(int m, int n, double* a, int lda, double* tau) { return LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau); }
int lapacke_orgqr(int m, int n, int k, float* a, int lda, const float* tau) {
  return LAPACKE_sorgqr(LAPACK_COL_MAJOR, m, n, k, a, lda, tau);
}
int lapacke_orgqr(int m, int n, int k, double* a, int lda, const double* tau) {
  return LAPACKE_dorgqr(LAPACK_COL_MAJOR, m, n, k, a, lda, tau);
}

void check_info(int info, const char* call) {
  if (info < 0) throw LapackError(std::string(call) + ": argument " + std::to_string(-info) + " was invalid");
  if (info > 0) throw LapackError(std::string(call) + ": failed to converge (info " + std::to_string(info) + ")");
}

}  // namespace

// A symmetric row-major matrix is its own column-major view, so the lower triangle we document is
// LAPACK's upper one, and column i of the column-major eigenvector matrix is row i here.
template <class T>
void syevd(const Context& ctx, MatrixView<T> a, VectorView<T> w) {
  check_matrix(ctx, a, "lapack::syevd", "A");
  check_vector(ctx, w, "lapack::syevd", "w");
  if (a.rows != a.cols) throw ShapeMismatch("lapack::syevd: A must be square, got " + dims(a.rows, a.cols));
  if (w.size != a.rows || w.stride != 1)
    throw ShapeMismatch("lapack::syevd: w must be a contiguous vector of " + std::to_string(a.rows) + " elements");
  const index_t n = a.rows;
  if (n == 0) return;
  if (ctx.is_host()) {
    check_info(lapacke_syevd(to_int(n, "syevd"), a.data, to_int(a.ld, "syevd"), w.data), "lapack::syevd");
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  int lwork = 0;
  DYNASCOPE_CUSOLVER_CHECK(cu_syevd_buffer(a.data, cusolver(ctx), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER,
                                           to_int(n, "syevd"), a.data, to_int(a.ld, "syevd"), w.data, &lwork));
  Array<T> work(ctx, {std::max(lwork, 1)});
  Array<int> info(ctx, {1});
  DYNASCOPE_CUSOLVER_CHECK(cu_syevd(a.data, cusolver(ctx), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER,
                                    to_int(n, "syevd"), a.data, to_int(a.ld, "syevd"), w.data, work.data(), lwork,
                                    info.data()));
  check_info(device_info(ctx, info), "lapack::syevd (cuSOLVER)");
#endif
}

template <class T>
void syevdx(const Context& ctx, MatrixView<T> a, index_t first, index_t last, VectorView<T> w, MatrixView<T> z) {
  check_matrix(ctx, a, "lapack::syevdx", "A");
  check_matrix(ctx, z, "lapack::syevdx", "Z");
  check_vector(ctx, w, "lapack::syevdx", "w");
  if (a.rows != a.cols) throw ShapeMismatch("lapack::syevdx: A must be square, got " + dims(a.rows, a.cols));
  const index_t n = a.rows;
  if (first < 0 || last > n || first >= last)
    throw InvalidArgument("lapack::syevdx: index range [" + std::to_string(first) + ", " + std::to_string(last) +
                          ") is not inside [0, " + std::to_string(n) + ")");
  const index_t m = last - first;
  if (w.size < m || w.stride != 1 || z.rows < m || z.cols != n)
    throw ShapeMismatch("lapack::syevdx: w needs " + std::to_string(m) + " contiguous elements and Z " + dims(m, n));
  if (ctx.is_host()) {
    int found = 0;
    std::vector<int> isuppz(static_cast<std::size_t>(2 * m));
    check_info(lapacke_syevr(to_int(n, "syevdx"), a.data, to_int(a.ld, "syevdx"), static_cast<int>(first + 1),
                             static_cast<int>(last), &found, w.data, z.data, to_int(z.ld, "syevdx"), isuppz.data()),
               "lapack::syevdx");
    if (found != m) throw LapackError("lapack::syevdx: found " + std::to_string(found) + " of " + std::to_string(m) + " eigenpairs");
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  int lwork = 0, found = 0;
  Array<T> wall(ctx, {n});
  DYNASCOPE_CUSOLVER_CHECK(cu_syevdx_buffer(a.data, cusolver(ctx), CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                            CUBLAS_FILL_MODE_UPPER, to_int(n, "syevdx"), a.data, to_int(a.ld, "syevdx"),
                                            T(0), T(0), static_cast<int>(first + 1), static_cast<int>(last), &found,
                                            wall.data(), &lwork));
  Array<T> work(ctx, {std::max(lwork, 1)});
  Array<int> info(ctx, {1});
  DYNASCOPE_CUSOLVER_CHECK(cu_syevdx(a.data, cusolver(ctx), CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                     CUBLAS_FILL_MODE_UPPER, to_int(n, "syevdx"), a.data, to_int(a.ld, "syevdx"), T(0),
                                     T(0), static_cast<int>(first + 1), static_cast<int>(last), &found, wall.data(),
                                     work.data(), lwork, info.data()));
  check_info(device_info(ctx, info), "lapack::syevdx (cuSOLVER)");
  if (found != m) throw LapackError("lapack::syevdx: found " + std::to_string(found) + " of " + std::to_string(m) + " eigenpairs");
  copy(ctx, MatrixView<const T>{wall.data(), 1, m, m, Backend::cuda, wall.device()},
       MatrixView<T>{w.data, 1, m, m, Backend::cuda, w.device});
  copy(ctx, MatrixView<const T>{a.data, m, n, a.ld, Backend::cuda, a.device}, z.block(0, 0, m, n));
#endif
}

void stev(VectorView<double> d, VectorView<double> e, MatrixView<double> z) {
  const index_t n = d.size;
  if (d.backend != Backend::host || e.backend != Backend::host || z.backend != Backend::host)
    throw InvalidArgument("lapack::stev: runs on the host and needs host memory");
  if (d.stride != 1 || e.stride != 1 || (n > 0 && e.size < n - 1))
    throw ShapeMismatch("lapack::stev: d needs n contiguous elements and e at least n-1");
  const bool vectors = z.rows > 0;
  if (vectors && (z.rows != n || z.cols != n))
    throw ShapeMismatch("lapack::stev: Z must be " + dims(n, n) + " or empty, got " + dims(z.rows, z.cols));
  if (n == 0) return;
  // Column-major Z: column i is the eigenvector of d[i]; read row-major it is row i.
  check_info(LAPACKE_dstev(LAPACK_COL_MAJOR, vectors ? 'V' : 'N', to_int(n, "stev"), d.data, e.data,
                           vectors ? z.data : nullptr, vectors ? to_int(z.ld, "stev") : 1),
             "lapack::stev");
}

template <class T>
void orthonormalize_rows(const Context& ctx, MatrixView<T> a) {
  check_matrix(ctx, a, "lapack::orthonormalize_rows", "A");
  const index_t k = a.rows, n = a.cols;
  if (k > n) throw ShapeMismatch("lapack::orthonormalize_rows: " + std::to_string(k) + " rows cannot be orthonormal in dimension " + std::to_string(n));
  if (k == 0) return;
  // Row-major A (k x n) is the column-major n x k matrix A^T: QR of that.
  const int m_ = to_int(n, "orthonormalize_rows"), n_ = to_int(k, "orthonormalize_rows"), lda = to_int(a.ld, "orthonormalize_rows");
  if (ctx.is_host()) {
    std::vector<T> tau(static_cast<std::size_t>(k));
    check_info(lapacke_geqrf(m_, n_, a.data, lda, tau.data()), "lapack::geqrf");
    check_info(lapacke_orgqr(m_, n_, n_, a.data, lda, tau.data()), "lapack::orgqr");
    return;
  }
#if DYNASCOPE_WITH_CUDA
  cuda_api::DeviceScope on_device(ctx.device());
  Array<T> tau(ctx, {k});
  Array<int> info(ctx, {1});
  int lwork_qr = 0, lwork_q = 0;
  DYNASCOPE_CUSOLVER_CHECK(cu_geqrf_buffer(a.data, cusolver(ctx), m_, n_, a.data, lda, &lwork_qr));
  DYNASCOPE_CUSOLVER_CHECK(cu_orgqr_buffer(a.data, cusolver(ctx), m_, n_, n_, a.data, lda, tau.data(), &lwork_q));
  Array<T> work(ctx, {std::max({lwork_qr, lwork_q, 1})});
  DYNASCOPE_CUSOLVER_CHECK(cu_geqrf(a.data, cusolver(ctx), m_, n_, a.data, lda, tau.data(), work.data(),
                                    static_cast<int>(work.size()), info.data()));
  check_info(device_info(ctx, info), "lapack::geqrf (cuSOLVER)");
  DYNASCOPE_CUSOLVER_CHECK(cu_orgqr(a.data, cusolver(ctx), m_, n_, n_, a.data, lda, tau.data(), work.data(),
                                    static_cast<int>(work.size()), info.data()));
  check_info(device_info(ctx, info), "lapack::orgqr (cuSOLVER)");
#endif
}

#define DS_INSTANTIATE(T)                                                                              \
  template void syevd<T>(const Context&, MatrixView<T>, VectorView<T>);                  \
  template void syevdx<T>(const Context&, MatrixView<T>, index_t, index_t, VectorView<T>, \
                                        MatrixView<T>);                                                \
  template void orthonormalize_rows<T>(const Context&, MatrixView<T>);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace lapack
}  // namespace dynascope
