// blas:: and lapack:: against naive float64 loops, both precisions, odd sizes, strided views.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "dynascope/blas.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using blas::Op;

template <class T>
struct Tol;
template <> struct Tol<float> { static constexpr double value = 2e-5; };
template <> struct Tol<double> { static constexpr double value = 1e-12; };

// A strided matrix: rows x cols inside a buffer with ld = cols + pad.
template <class T>
struct Strided {
  std::vector<T> buf;
  MatrixView<T> view;
  Strided(index_t rows, index_t cols, index_t pad, unsigned seed) : buf(static_cast<std::size_t>(std::max<index_t>(rows * (cols + pad), 1))) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> d(-1, 1);
    for (auto& x : buf) x = static_cast<T>(d(gen));
    view = {buf.data(), rows, cols, cols + pad, Backend::host};
  }
  double at(index_t i, index_t j) const { return static_cast<double>(view(i, j)); }
};

double op_at(const MatrixView<const double>&, index_t, index_t) = delete;

template <class T>
double op_elem(const Strided<T>& m, Op op, index_t i, index_t j) {
  return op == Op::none ? m.at(i, j) : m.at(j, i);
}

template <class T>
class BlasTest : public ::testing::Test {
 protected:
  Context ctx = Context::host();
};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(BlasTest, Types);

TYPED_TEST(BlasTest, GemmMatchesNaiveLoopsForEveryTransposeAndStride) {
  using T = TypeParam;
  const index_t m = 37, n = 23, k = 41;
  for (Op oa : {Op::none, Op::trans})
    for (Op ob : {Op::none, Op::trans}) {
      Strided<T> a(oa == Op::none ? m : k, oa == Op::none ? k : m, 3, 1);
      Strided<T> b(ob == Op::none ? k : n, ob == Op::none ? n : k, 5, 2);
      Strided<T> c(m, n, 2, 3);
      std::vector<double> ref(static_cast<std::size_t>(m * n));
      const double alpha = 0.75, beta = -0.5;
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
          double s = 0;
          for (index_t p = 0; p < k; ++p) s += op_elem(a, oa, i, p) * op_elem(b, ob, p, j);
          ref[static_cast<std::size_t>(i * n + j)] = alpha * s + beta * c.at(i, j);
        }
      blas::gemm<T>(this->ctx, oa, ob, T(alpha), a.view, b.view, T(beta), c.view);
      double err = 0;
      for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) err = std::max(err, std::abs(c.at(i, j) - ref[static_cast<std::size_t>(i * n + j)]));
      EXPECT_LT(err, Tol<T>::value * k) << "op_a " << int(oa) << " op_b " << int(ob);
    }
}

TYPED_TEST(BlasTest, GemmRejectsMismatchedShapes) {
  using T = TypeParam;
  Strided<T> a(3, 4, 0, 1), b(5, 2, 0, 2), c(3, 2, 0, 3);
  EXPECT_THROW(blas::gemm<T>(this->ctx, Op::none, Op::none, T(1), a.view, b.view, T(0), c.view), ShapeMismatch);
}

TYPED_TEST(BlasTest, StridedBatchedGemmEqualsLoopOfGemms) {
  using T = TypeParam;
  const index_t batch = 4, m = 7, n = 5, k = 9;
  std::vector<T> a(static_cast<std::size_t>(batch * k * m)), b(static_cast<std::size_t>(batch * k * n)),
      c(static_cast<std::size_t>(batch * m * n), T(0));
  std::mt19937 gen(4);
  std::uniform_real_distribution<double> d(-1, 1);
  for (auto& x : a) x = T(d(gen));
  for (auto& x : b) x = T(d(gen));
  // A_i stored transposed (k x m), B_i plain (k x n): C_i = A_i^T B_i.
  blas::gemm_strided_batched<T>(this->ctx, Op::trans, Op::none, T(1), MatrixView<const T>{a.data(), k, m, m},
                                k * m, MatrixView<const T>{b.data(), k, n, n}, k * n, T(0),
                                MatrixView<T>{c.data(), m, n, n}, m * n, batch);
  double err = 0;
  for (index_t t = 0; t < batch; ++t)
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        double s = 0;
        for (index_t p = 0; p < k; ++p) s += double(a[std::size_t(t * k * m + p * m + i)]) * double(b[std::size_t(t * k * n + p * n + j)]);
        err = std::max(err, std::abs(s - double(c[std::size_t(t * m * n + i * n + j)])));
      }
  EXPECT_LT(err, Tol<T>::value * k);
}

TYPED_TEST(BlasTest, SyrkFillsBothTrianglesWithGram) {
  using T = TypeParam;
  for (Op op : {Op::none, Op::trans}) {
    const index_t n = 19, k = 31;
    Strided<T> a(op == Op::none ? n : k, op == Op::none ? k : n, 4, 7);
    Strided<T> c(n, n, 1, 8);
    blas::syrk<T>(this->ctx, op, T(2), a.view, T(0), c.view);
    double err = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < n; ++j) {
        double s = 0;
        for (index_t p = 0; p < k; ++p) s += op_elem(a, op, i, p) * op_elem(a, op, j, p);
        err = std::max(err, std::abs(2 * s - c.at(i, j)));
      }
    EXPECT_LT(err, Tol<T>::value * k) << "op " << int(op);
  }
}

TYPED_TEST(BlasTest, GemvWithStridedVectors) {
  using T = TypeParam;
  for (Op op : {Op::none, Op::trans}) {
    const index_t m = 13, n = 29;
    Strided<T> a(m, n, 3, 9);
    const index_t xn = op == Op::none ? n : m, yn = op == Op::none ? m : n;
    std::vector<T> x(static_cast<std::size_t>(2 * xn)), y(static_cast<std::size_t>(3 * yn));
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = T(std::sin(double(i)));
    for (std::size_t i = 0; i < y.size(); ++i) y[i] = T(std::cos(double(i)));
    std::vector<double> ref(static_cast<std::size_t>(yn));
    for (index_t i = 0; i < yn; ++i) {
      double s = 0;
      for (index_t j = 0; j < xn; ++j) s += op_elem(a, op, i, j) * double(x[std::size_t(2 * j)]);
      ref[std::size_t(i)] = 1.5 * s + 0.25 * double(y[std::size_t(3 * i)]);
    }
    blas::gemv<T>(this->ctx, op, T(1.5), a.view, VectorView<const T>{x.data(), xn, 2}, T(0.25), VectorView<T>{y.data(), yn, 3});
    for (index_t i = 0; i < yn; ++i) EXPECT_NEAR(double(y[std::size_t(3 * i)]), ref[std::size_t(i)], Tol<T>::value * xn);
    // Elements between the strides are untouched.
    EXPECT_EQ(y[1], T(std::cos(1.0)));
  }
}

TYPED_TEST(BlasTest, LevelOneOperationsMatchLoops) {
  using T = TypeParam;
  const index_t n = 101;
  std::vector<T> x(static_cast<std::size_t>(2 * n)), y(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = T(std::sin(0.3 * double(i)));
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = T(std::cos(0.7 * double(i)));
  VectorView<const T> xv{x.data(), n, 2};
  double dot = 0, nrm = 0;
  for (index_t i = 0; i < n; ++i) {
    dot += double(x[std::size_t(2 * i)]) * double(y[std::size_t(i)]);
    nrm += double(x[std::size_t(2 * i)]) * double(x[std::size_t(2 * i)]);
  }
  EXPECT_NEAR(double(blas::dot<T>(this->ctx, xv, VectorView<const T>{y.data(), n, 1})), dot, Tol<T>::value * n);
  EXPECT_NEAR(double(blas::nrm2<T>(this->ctx, xv)), std::sqrt(nrm), Tol<T>::value * n);
  std::vector<T> y0 = y;
  blas::axpy<T>(this->ctx, T(-2), xv, VectorView<T>{y.data(), n, 1});
  for (index_t i = 0; i < n; ++i)
    EXPECT_NEAR(double(y[std::size_t(i)]), double(y0[std::size_t(i)]) - 2 * double(x[std::size_t(2 * i)]), Tol<T>::value);
  blas::scal<T>(this->ctx, T(3), VectorView<T>{y.data(), n, 1});
  for (index_t i = 0; i < n; ++i)
    EXPECT_NEAR(double(y[std::size_t(i)]), 3 * (double(y0[std::size_t(i)]) - 2 * double(x[std::size_t(2 * i)])), 4 * Tol<T>::value);
}

// Symmetric matrix with known spectrum: Q diag(lambda) Q^T with Q from a QR of random rows.
template <class T>
std::vector<double> known_spectrum_matrix(const Context& ctx, index_t n, std::vector<double>& lambda, std::vector<T>& a) {
  std::vector<double> q(static_cast<std::size_t>(n * n));
  std::mt19937 gen(11);
  std::uniform_real_distribution<double> d(-1, 1);
  for (auto& v : q) v = d(gen);
  lapack::orthonormalize_rows<double>(ctx, MatrixView<double>{q.data(), n, n, n});
  lambda.resize(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) lambda[std::size_t(i)] = -3.0 + 7.0 * double(i * i) / double(n * n) + 0.01 * double(i);
  a.assign(static_cast<std::size_t>(n * n), T(0));
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t p = 0; p < n; ++p) s += q[std::size_t(p * n + i)] * lambda[std::size_t(p)] * q[std::size_t(p * n + j)];
      a[std::size_t(i * n + j)] = T(s);
    }
  return q;
}

TYPED_TEST(BlasTest, OrthonormalizeRowsGivesOrthonormalRowsSpanningTheSameSpace) {
  using T = TypeParam;
  const index_t k = 6, n = 15;
  Strided<T> a(k, n, 2, 21);
  Strided<T> orig = a;
  orig.view.data = orig.buf.data();
  lapack::orthonormalize_rows<T>(this->ctx, a.view);
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) {
      double s = 0;
      for (index_t p = 0; p < n; ++p) s += a.at(i, p) * a.at(j, p);
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 50 * Tol<T>::value);
    }
  // Row 0 is parallel to the original row 0 (Gram-Schmidt order).
  double dot = 0, nn = 0;
  for (index_t p = 0; p < n; ++p) {
    dot += a.at(0, p) * orig.at(0, p);
    nn += orig.at(0, p) * orig.at(0, p);
  }
  EXPECT_NEAR(std::abs(dot), std::sqrt(nn), 50 * Tol<T>::value);
}

TYPED_TEST(BlasTest, SyevdRecoversKnownSpectrumAndVectors) {
  using T = TypeParam;
  const index_t n = 33;
  std::vector<double> lambda;
  std::vector<T> a;
  known_spectrum_matrix<T>(this->ctx, n, lambda, a);
  std::vector<T> a0 = a, w(static_cast<std::size_t>(n));
  lapack::syevd<T>(this->ctx, MatrixView<T>{a.data(), n, n, n}, VectorView<T>{w.data(), n, 1});
  for (index_t i = 0; i < n; ++i) EXPECT_NEAR(double(w[std::size_t(i)]), lambda[std::size_t(i)], 100 * Tol<T>::value);
  // Residual ||A u - w u|| per eigenpair, eigenvectors are rows.
  for (index_t i = 0; i < n; ++i) {
    double r = 0;
    for (index_t p = 0; p < n; ++p) {
      double s = 0;
      for (index_t q = 0; q < n; ++q) s += double(a0[std::size_t(p * n + q)]) * double(a[std::size_t(i * n + q)]);
      s -= double(w[std::size_t(i)]) * double(a[std::size_t(i * n + p)]);
      r += s * s;
    }
    EXPECT_LT(std::sqrt(r), 200 * Tol<T>::value);
  }
}

TYPED_TEST(BlasTest, SyevdxReturnsTheRequestedIndexRange) {
  using T = TypeParam;
  const index_t n = 40, first = 30, last = 38;
  std::vector<double> lambda;
  std::vector<T> a;
  known_spectrum_matrix<T>(this->ctx, n, lambda, a);
  std::vector<T> a0 = a, w(static_cast<std::size_t>(last - first));
  std::vector<T> z(static_cast<std::size_t>((last - first) * (n + 3)));
  lapack::syevdx<T>(this->ctx, MatrixView<T>{a.data(), n, n, n}, first, last, VectorView<T>{w.data(), last - first, 1},
                    MatrixView<T>{z.data(), last - first, n, n + 3});
  for (index_t i = 0; i < last - first; ++i) {
    EXPECT_NEAR(double(w[std::size_t(i)]), lambda[std::size_t(first + i)], 100 * Tol<T>::value);
    double r = 0;
    for (index_t p = 0; p < n; ++p) {
      double s = 0;
      for (index_t q = 0; q < n; ++q) s += double(a0[std::size_t(p * n + q)]) * double(z[std::size_t(i * (n + 3) + q)]);
      s -= double(w[std::size_t(i)]) * double(z[std::size_t(i * (n + 3) + p)]);
      r += s * s;
    }
    EXPECT_LT(std::sqrt(r), 200 * Tol<T>::value);
  }
  EXPECT_THROW(lapack::syevdx<T>(this->ctx, MatrixView<T>{a.data(), n, n, n}, 5, 3, VectorView<T>{w.data(), 8, 1},
                                 MatrixView<T>{z.data(), 8, n, n + 3}),
               InvalidArgument);
}

TEST(Lapack, StevMatchesClosedFormOfTheDiscreteLaplacian) {
  // tridiag(-1, 2, -1) of size n has eigenvalues 2 - 2 cos(pi k / (n + 1)).
  const index_t n = 25;
  std::vector<double> d(std::size_t(n), 2.0), e(std::size_t(n - 1), -1.0), z(std::size_t(n * n));
  lapack::stev(VectorView<double>{d.data(), n, 1}, VectorView<double>{e.data(), n - 1, 1}, MatrixView<double>{z.data(), n, n, n});
  const double pi = std::acos(-1.0);
  for (index_t k = 1; k <= n; ++k) EXPECT_NEAR(d[std::size_t(k - 1)], 2 - 2 * std::cos(pi * double(k) / double(n + 1)), 1e-13);
  // Eigenvector k: sin(pi k j / (n + 1)) up to sign and norm.
  for (index_t k = 1; k <= n; ++k) {
    double dot = 0, norm = 0;
    for (index_t j = 1; j <= n; ++j) {
      const double s = std::sin(pi * double(k * j) / double(n + 1));
      dot += s * z[std::size_t((k - 1) * n + j - 1)];
      norm += s * s;
    }
    EXPECT_NEAR(std::abs(dot) / std::sqrt(norm), 1.0, 1e-12);
  }
}

TEST(Blas, ViewOnTheWrongBackendIsRejected) {
  Context ctx = Context::host();
  float x = 1;
  VectorView<const float> v{&x, 1, 1, Backend::cuda};
  EXPECT_THROW(blas::nrm2<float>(ctx, v), InvalidArgument);
}

TEST(Blas, HostBlasIsTheOpenMPBuildOfOpenBLAS) {
  const std::string name = blas::host_blas_name();
  EXPECT_NE(name.find("OpenBLAS"), std::string::npos) << name;
  EXPECT_NE(name.find("OPENMP"), std::string::npos) << name;
}

}  // namespace
}  // namespace dynascope

namespace dynascope {
namespace {

// ssyevd's workspace query reports 1 + 6n + 2n^2 as a float, which rounds below the true size at
// n = 2900 (16837401 is not a float); the solver must still run.
TEST(Lapack, SinglePrecisionSyevdAtSizesWhoseWorkspaceIsNotAFloat) {
  const index_t n = 2900;
  std::vector<float> a(static_cast<std::size_t>(n * n), 0.0f), w(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) a[std::size_t(i * n + i)] = float((i * 37) % n);
  lapack::syevd<float>(Context::host(), {a.data(), n, n, n}, {w.data(), n, 1});
  for (index_t i = 0; i < n; ++i) ASSERT_EQ(w[std::size_t(i)], float(i));  // 37 is coprime to 2900: a permutation
}

}  // namespace
}  // namespace dynascope
