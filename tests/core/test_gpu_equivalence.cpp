// The core on every backend against oracles computed another way: the launcher against a plain
// loop, Philox fills against the documented element-by-element layout, BLAS/LAPACK against naive
// float64 loops and a Jacobi eigensolver. Each case runs as .../host and .../cuda (the latter
// skips without a device); compiled by nvcc in CUDA builds, since it launches kernels itself.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "dynascope/blas.hpp"
#include "dynascope/random.hpp"
#include "kernels/launch.cuh"
#include "kernels/philox.cuh"
#include "support/backend_test.hpp"
#include "support/reference.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using test::kNaN;
using test::kSentinel;

class CoreOnBackends : public test::BackendTest {};

struct Square {
  double* y;
  DYNASCOPE_HD void operator()(index_t i) const { y[i] = double(i) * double(i) + 0.5; }
};

// ---- oracles ----

// C = alpha op(A) op(B) + beta C by the textbook triple loop; A is ra x ca, B rb x cb, dense.
std::vector<double> naive_gemm(blas::Op op_a, blas::Op op_b, double alpha, const std::vector<double>& a, index_t ra,
                               index_t ca, const std::vector<double>& b, index_t rb, index_t cb, double beta,
                               std::vector<double> c) {
  const bool ta = op_a == blas::Op::trans, tb = op_b == blas::Op::trans;
  const index_t m = ta ? ca : ra, k = ta ? ra : ca, n = tb ? rb : cb;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t p = 0; p < k; ++p)
        s += (ta ? a[std::size_t(p * ca + i)] : a[std::size_t(i * ca + p)]) * (tb ? b[std::size_t(j * cb + p)] : b[std::size_t(p * cb + j)]);
      c[std::size_t(i * n + j)] = alpha * s + beta * c[std::size_t(i * n + j)];
    }
  return c;
}
// op(A) op(A)^T for A r x c.
std::vector<double> naive_gram(blas::Op op, const std::vector<double>& a, index_t r, index_t c) {
  const index_t n = op == blas::Op::none ? r : c;
  return naive_gemm(op, op == blas::Op::none ? blas::Op::trans : blas::Op::none, 1.0, a, r, c, a, r, c, 0.0,
                    std::vector<double>(std::size_t(n * n), 0.0));
}

// Philox draws element by element, as random.hpp documents them (kernels/philox.cuh's scalar
// functions at each element index), independent of how a fill launches.
template <class T>
std::vector<T> layout_uniform(random::Stream s, index_t n, T lo, T hi) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (index_t e = 0; e < n; ++e) v[std::size_t(e)] = std::fma(hi - lo, kern::philox_uniform<T>(s.seed, s.stream, s.step, std::uint64_t(e)), lo);
  return v;
}
template <class T>
std::vector<T> layout_normal(random::Stream s, index_t n, T mean, T stddev) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (index_t e = 0; e < n; ++e)
    v[std::size_t(e)] = static_cast<T>(std::fma(double(stddev), kern::philox_normal(s.seed, s.stream, s.step, std::uint64_t(e)), double(mean)));
  return v;
}
template <class T>
std::vector<T> layout_rademacher(random::Stream s, index_t n) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (index_t e = 0; e < n; ++e) v[std::size_t(e)] = (kern::philox_block(s.seed, s.stream, s.step, std::uint64_t(e) / 4).v[e % 4] >> 31) ? T(1) : T(-1);
  return v;
}
// 64 bits (words 2(e mod 2), 2(e mod 2) + 1 of block e / 2) times the range, high half.
std::vector<std::int64_t> layout_integers(random::Stream s, index_t n, std::int64_t range) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (index_t e = 0; e < n; ++e) {
    const kern::PhiloxBlock b = kern::philox_block(s.seed, s.stream, s.step, std::uint64_t(e) / 2);
    const int w = int(e % 2) * 2;
    const std::uint64_t bits = (std::uint64_t(b.v[w]) << 32) | b.v[w + 1];
    __extension__ using u128 = unsigned __int128;
    v[std::size_t(e)] = static_cast<std::int64_t>((u128(bits) * u128(std::uint64_t(range))) >> 64);
  }
  return v;
}

// ---- launcher ----

TEST_P(CoreOnBackends, ParallelForMatchesALoop) {
  const index_t n = 1000003;
  Array<double> y(ctx(), {n});
  kern::parallel_for(ctx(), n, Square{y.data()});
  std::vector<double> ref(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) ref[std::size_t(i)] = double(i) * double(i) + 0.5;
  EXPECT_EQ(y.to_vector(ctx()), ref);
  // An empty range launches nothing and writes nothing.
  Array<double> untouched = Array<double>::from_host(ctx(), {1}, std::vector<double>{kSentinel<double>});
  kern::parallel_for(ctx(), 0, Square{untouched.data()});
  EXPECT_EQ(untouched.to_vector(ctx()), std::vector<double>{kSentinel<double>});
}

// ---- Philox ----

TEST_P(CoreOnBackends, PhiloxDrawsFollowTheDocumentedLayout) {
  const index_t n = 100001;
  const random::Stream s{77, 3, 9};
  Array<double> dn(ctx(), {n}), du(ctx(), {n});
  Array<float> df(ctx(), {n});
  random::fill_normal<double>(ctx(), s, dn.vector());
  random::fill_uniform<double>(ctx(), s, du.vector());
  random::fill_normal<float>(ctx(), s, df.vector(), 0.5f, 2.0f);
  EXPECT_EQ(dn.to_vector(ctx()), layout_normal<double>(s, n, 0.0, 1.0));
  EXPECT_EQ(du.to_vector(ctx()), layout_uniform<double>(s, n, 0.0, 1.0));
  EXPECT_EQ(df.to_vector(ctx()), layout_normal<float>(s, n, 0.5f, 2.0f));
}

TEST_P(CoreOnBackends, EveryPhiloxFillFollowsTheDocumentedLayout) {
  const index_t n = 70001;
  const random::Stream s{12, 4, 2};
  Array<float> du(ctx(), {n}), dr(ctx(), {n});
  Array<std::int64_t> di(ctx(), {n});
  random::fill_uniform<float>(ctx(), s, du.vector(), -1.0f, 2.0f);
  random::fill_rademacher<float>(ctx(), s, dr.vector());
  random::fill_integers(ctx(), s, di.vector(), 1000003);
  EXPECT_EQ(du.to_vector(ctx()), layout_uniform<float>(s, n, -1.0f, 2.0f));
  EXPECT_EQ(dr.to_vector(ctx()), layout_rademacher<float>(s, n));
  EXPECT_EQ(di.to_vector(ctx()), layout_integers(s, n, 1000003));
  // Rademacher from element 5 on (not a Philox block boundary): the tail of the whole sequence.
  Array<float> dt(ctx(), {n - 5});
  random::fill_rademacher<float>(ctx(), s, dt.vector(), 5);
  const auto whole = layout_rademacher<float>(s, n);
  EXPECT_EQ(dt.to_vector(ctx()), std::vector<float>(whole.begin() + 5, whole.end()));
}

TEST_P(CoreOnBackends, PhiloxFillsWriteStridedAndEmptyViews) {
  // Element i of a view with stride 3 is draw i; the two elements between stay as they were.
  const index_t n = 40001, stride = 3;
  const random::Stream s{5, 1, 7};
  Array<double> buf = Array<double>::from_host(ctx(), {n * stride}, std::vector<double>(std::size_t(n * stride), kSentinel<double>));
  random::fill_normal<double>(ctx(), s, VectorView<double>{buf.data(), n, stride, buf.backend()}, 1.0, 3.0);
  const auto got = buf.to_vector(ctx());
  const auto ref = layout_normal<double>(s, n, 1.0, 3.0);
  index_t wrong = 0, touched = 0;
  for (index_t i = 0; i < n; ++i) {
    wrong += got[std::size_t(i * stride)] != ref[std::size_t(i)];
    touched += got[std::size_t(i * stride + 1)] != kSentinel<double> || got[std::size_t(i * stride + 2)] != kSentinel<double>;
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(touched, 0);
  // Empty views (any data pointer, any backend tag) are no-ops.
  EXPECT_NO_THROW(random::fill_uniform<float>(ctx(), s, VectorView<float>{nullptr, 0, 1, Backend::host}));
  EXPECT_NO_THROW(random::fill_integers(ctx(), s, VectorView<std::int64_t>{nullptr, 0, 1, ctx().backend()}, 5));
}

// ---- BLAS and LAPACK ----

TEST_P(CoreOnBackends, RemainingBlasAndLapackPathsMatchNaiveLoops) {
  const index_t m = 31, k = 17;
  const auto va = test::random_values<double>(k * m, 5);
  const Array<double> da = Array<double>::from_host(ctx(), {k, m}, va);
  // syrk with op trans: A^T A is m x m.
  Array<double> dg = Array<double>::zeros(ctx(), {m, m});
  blas::syrk<double>(ctx(), blas::Op::trans, 1.0, da.matrix(), 0.0, dg.matrix());
  const auto g = naive_gram(blas::Op::trans, va, k, m);
  EXPECT_LT(test::max_rel_diff(dg.to_vector(ctx()).data(), g.data(), m * m), 1e-13);
  // gemv without transpose, then axpy and scal.
  std::vector<double> x(static_cast<std::size_t>(m), 0.5), y(static_cast<std::size_t>(k), 1.0);
  Array<double> dxv = Array<double>::from_host(ctx(), {m}, x), dyv = Array<double>::from_host(ctx(), {k}, y);
  blas::gemv<double>(ctx(), blas::Op::none, 2.0, da.matrix(), dxv.vector(), 0.5, dyv.vector());
  blas::axpy<double>(ctx(), -1.5, VectorView<const double>{dxv.data(), k, 1, ctx().backend()}, dyv.vector());
  blas::scal<double>(ctx(), 3.0, dyv.vector());
  for (index_t i = 0; i < k; ++i) {
    double s = 0;
    for (index_t p = 0; p < m; ++p) s += va[std::size_t(i * m + p)] * x[std::size_t(p)];
    y[std::size_t(i)] = 3.0 * ((2.0 * s + 0.5 * y[std::size_t(i)]) - 1.5 * x[std::size_t(i)]);
  }
  EXPECT_LT(test::max_rel_diff(dyv.to_vector(ctx()).data(), y.data(), k), 1e-13);
  // syevdx: eigenpairs 20..29 of the Gram matrix against Jacobi's, by eigenvalue and (up to sign)
  // eigenvector; the Gram matrix has rank 17, so these are its distinct positive eigenvalues.
  const test::SymmetricEigen ref = test::jacobi_eigen(g, m);
  Array<double> dg2 = Array<double>::from_host(ctx(), {m, m}, g);
  Array<double> dw(ctx(), {10}), dz(ctx(), {10, m});
  lapack::syevdx<double>(ctx(), dg2.matrix(), 20, 30, dw.vector(), dz.matrix());
  EXPECT_LT(test::max_rel_diff(dw.to_vector(ctx()).data(), ref.values.data() + 20, 10), 1e-10);
  const auto z = dz.to_vector(ctx());
  for (index_t i = 0; i < 10; ++i) {
    double dot = 0;
    for (index_t p = 0; p < m; ++p) dot += z[std::size_t(i * m + p)] * ref.vectors[std::size_t((20 + i) * m + p)];
    EXPECT_NEAR(std::abs(dot), 1.0, 1e-8);  // the same eigenvector up to sign
  }
}

TEST_P(CoreOnBackends, BlasAndLapackMatchNaiveLoops) {
  const index_t m = 67, n = 45, k = 33;
  const auto va = test::random_values<double>(m * k, 1), vb = test::random_values<double>(n * k, 2);
  const Array<double> da = Array<double>::from_host(ctx(), {m, k}, va), db = Array<double>::from_host(ctx(), {n, k}, vb);
  Array<double> dc = Array<double>::zeros(ctx(), {m, n});
  blas::gemm<double>(ctx(), blas::Op::none, blas::Op::trans, 1.0, da.matrix(), db.matrix(), 0.0, dc.matrix());
  const auto c = naive_gemm(blas::Op::none, blas::Op::trans, 1.0, va, m, k, vb, n, k, 0.0, std::vector<double>(std::size_t(m * n)));
  EXPECT_LT(test::max_rel_diff(dc.to_vector(ctx()).data(), c.data(), m * n), 1e-13);

  Array<double> dg = Array<double>::zeros(ctx(), {m, m});
  blas::syrk<double>(ctx(), blas::Op::none, 1.0, da.matrix(), 0.0, dg.matrix());
  const auto g = naive_gram(blas::Op::none, va, m, k);
  EXPECT_LT(test::max_rel_diff(dg.to_vector(ctx()).data(), g.data(), m * m), 1e-13);

  // All eigenvalues (rank 33: 34 of them are zero to rounding) against Jacobi's.
  const test::SymmetricEigen ref = test::jacobi_eigen(g, m);
  Array<double> dw(ctx(), {m});
  Array<double> dg2 = Array<double>::from_host(ctx(), {m, m}, g);
  lapack::syevd<double>(ctx(), dg2.matrix(), dw.vector());
  EXPECT_LT(test::max_rel_diff(dw.to_vector(ctx()).data(), ref.values.data(), m), 1e-10);

  double dot = 0;
  for (double v : va) dot += v * v;
  EXPECT_NEAR(blas::dot<double>(ctx(), da.vector(), da.vector()), dot, 1e-10);
  EXPECT_NEAR(blas::nrm2<double>(ctx(), da.vector()), std::sqrt(dot), 1e-12);
}

TEST_P(CoreOnBackends, OrthonormalizeRowsKeepsTheSpanOfEachLeadingBlock) {
  const index_t k = 5, n = 40;
  const auto v = test::random_values<float>(k * n, 3);
  Array<float> da = Array<float>::from_host(ctx(), {k, n}, v);
  lapack::orthonormalize_rows<float>(ctx(), da.matrix());
  const auto q = da.to_vector(ctx());
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) {
      double s = 0;
      for (index_t p = 0; p < n; ++p) s += double(q[std::size_t(i * n + p)]) * double(q[std::size_t(j * n + p)]);
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-5);
    }
  // Row i of A lies in the span of rows 0..i of Q (thin QR of A^T).
  for (index_t i = 0; i < k; ++i) {
    std::vector<double> r(v.begin() + i * n, v.begin() + (i + 1) * n);
    double norm = 0;
    for (double x : r) norm += x * x;
    for (index_t j = 0; j <= i; ++j) {
      double c = 0;
      for (index_t p = 0; p < n; ++p) c += double(q[std::size_t(j * n + p)]) * double(v[std::size_t(i * n + p)]);
      for (index_t p = 0; p < n; ++p) r[std::size_t(p)] -= c * double(q[std::size_t(j * n + p)]);
    }
    double res = 0;
    for (double x : r) res += x * x;
    EXPECT_LT(std::sqrt(res / norm), 1e-5) << "row " << i;
  }
}

TEST_P(CoreOnBackends, BlasReadsAndWritesStridedViews) {
  // Inputs with ld > cols padded with NaN (reading the padding would poison the result), outputs
  // padded with a sentinel that must survive.
  const index_t m = 23, n = 14, k = 9;
  for (auto [op_a, op_b] : {std::pair{blas::Op::none, blas::Op::none}, std::pair{blas::Op::none, blas::Op::trans},
                            std::pair{blas::Op::trans, blas::Op::none}}) {
    const index_t ra = op_a == blas::Op::none ? m : k, ca = op_a == blas::Op::none ? k : m;
    const index_t rb = op_b == blas::Op::none ? k : n, cb = op_b == blas::Op::none ? n : k;
    const index_t lda = ca + 3, ldb = cb + 5, ldc = n + 2;
    const auto a = test::random_values<double>(ra * ca, 11), b = test::random_values<double>(rb * cb, 12),
               c0 = test::random_values<double>(m * n, 13);
    const Array<double> da = Array<double>::from_host(ctx(), {ra, lda}, test::with_ld(a, ra, ca, lda));
    const Array<double> db = Array<double>::from_host(ctx(), {rb, ldb}, test::with_ld(b, rb, cb, ldb));
    Array<double> dc = Array<double>::from_host(ctx(), {m, ldc}, test::with_ld(c0, m, n, ldc, kSentinel<double>));
    blas::gemm<double>(ctx(), op_a, op_b, 0.75, test::strided(da, ca), test::strided(db, cb), 0.5, test::strided(dc, n));
    const auto got = dc.to_vector(ctx());
    const auto ref = naive_gemm(op_a, op_b, 0.75, a, ra, ca, b, rb, cb, 0.5, c0);
    EXPECT_LT(test::max_rel_diff(test::without_ld(got, m, n, ldc).data(), ref.data(), m * n), 1e-13)
        << "ops " << int(op_a) << int(op_b);
    EXPECT_EQ(test::padding_changed(got, m, n, ldc), 0);
  }
  for (blas::Op op : {blas::Op::none, blas::Op::trans}) {
    const index_t r = 19, c = 8, nn = op == blas::Op::none ? r : c, lda = c + 4, ldc = nn + 3;
    const auto a = test::random_values<double>(r * c, 14);
    const Array<double> da = Array<double>::from_host(ctx(), {r, lda}, test::with_ld(a, r, c, lda));
    Array<double> dc = Array<double>::from_host(ctx(), {nn, ldc}, std::vector<double>(std::size_t(nn * ldc), kSentinel<double>));
    blas::syrk<double>(ctx(), op, 1.0, test::strided(da, c), 0.0, test::strided(dc, nn));
    const auto got = dc.to_vector(ctx());
    const auto ref = naive_gram(op, a, r, c);
    EXPECT_LT(test::max_rel_diff(test::without_ld(got, nn, nn, ldc).data(), ref.data(), nn * nn), 1e-13) << "op " << int(op);
    EXPECT_EQ(test::padding_changed(got, nn, nn, ldc), 0);
  }
  // gemv on a strided A with x of stride 2 (NaN between) and y of stride 3 (sentinels between).
  for (blas::Op op : {blas::Op::none, blas::Op::trans}) {
    const index_t r = 17, c = 11, lda = c + 2, nx = op == blas::Op::none ? c : r, ny = op == blas::Op::none ? r : c;
    const auto a = test::random_values<double>(r * c, 15), x = test::random_values<double>(nx, 16),
               y0 = test::random_values<double>(ny, 17);
    std::vector<double> xs(std::size_t(2 * nx), kNaN<double>), ys(std::size_t(3 * ny), kSentinel<double>);
    for (index_t i = 0; i < nx; ++i) xs[std::size_t(2 * i)] = x[std::size_t(i)];
    for (index_t i = 0; i < ny; ++i) ys[std::size_t(3 * i)] = y0[std::size_t(i)];
    const Array<double> da = Array<double>::from_host(ctx(), {r, lda}, test::with_ld(a, r, c, lda));
    const Array<double> dx = Array<double>::from_host(ctx(), {2 * nx}, xs);
    Array<double> dy = Array<double>::from_host(ctx(), {3 * ny}, ys);
    blas::gemv<double>(ctx(), op, -1.25, test::strided(da, c), VectorView<const double>{dx.data(), nx, 2, ctx().backend()}, 2.0,
                       VectorView<double>{dy.data(), ny, 3, ctx().backend()});
    const auto got = dy.to_vector(ctx());
    const auto ref = naive_gemm(op, blas::Op::none, -1.25, a, r, c, x, nx, 1, 2.0, y0);
    std::vector<double> y(static_cast<std::size_t>(ny));
    index_t touched = 0;
    for (index_t i = 0; i < ny; ++i) {
      y[std::size_t(i)] = got[std::size_t(3 * i)];
      touched += got[std::size_t(3 * i + 1)] != kSentinel<double> || got[std::size_t(3 * i + 2)] != kSentinel<double>;
    }
    EXPECT_LT(test::max_rel_diff(y.data(), ref.data(), ny), 1e-13) << "op " << int(op);
    EXPECT_EQ(touched, 0);
    const double dot_ref = [&] {
      double s = 0;
      for (index_t i = 0; i < ny; ++i) s += ref[std::size_t(i)] * ref[std::size_t(i)];
      return s;
    }();
    const VectorView<const double> yv{dy.data(), ny, 3, ctx().backend()};
    EXPECT_NEAR(blas::dot<double>(ctx(), yv, yv), dot_ref, 1e-12 * dot_ref);
    EXPECT_NEAR(blas::nrm2<double>(ctx(), yv), std::sqrt(dot_ref), 1e-12 * std::sqrt(dot_ref));
  }
}

TEST_P(CoreOnBackends, BlasOnAnEmptyBatchIsANoOp) {
  // Zero rows: nothing to compute, nothing written, no error; empty vectors reduce to 0.
  const index_t n = 6, k = 4;
  const auto b = test::random_values<double>(n * k, 21);
  const Array<double> db = Array<double>::from_host(ctx(), {n, k}, b);
  Array<double> dc = Array<double>::from_host(ctx(), {1}, std::vector<double>{kSentinel<double>});
  const MatrixView<const double> a0{nullptr, 0, k, k, ctx().backend()};
  blas::gemm<double>(ctx(), blas::Op::none, blas::Op::trans, 1.0, a0, db.matrix(), 0.0, {dc.data(), 0, n, n, ctx().backend()});
  blas::syrk<double>(ctx(), blas::Op::none, 1.0, a0, 0.0, {dc.data(), 0, 0, 1, ctx().backend()});
  blas::gemv<double>(ctx(), blas::Op::none, 1.0, a0, VectorView<const double>{db.data(), k, 1, ctx().backend()}, 0.0,
                     {dc.data(), 0, 1, ctx().backend()});
  blas::axpy<double>(ctx(), 2.0, VectorView<const double>{nullptr, 0, 1, ctx().backend()}, {dc.data(), 0, 1, ctx().backend()});
  blas::scal<double>(ctx(), 2.0, {dc.data(), 0, 1, ctx().backend()});
  lapack::syevd<double>(ctx(), {dc.data(), 0, 0, 1, ctx().backend()}, {dc.data(), 0, 1, ctx().backend()});
  EXPECT_EQ(dc.to_vector(ctx()), std::vector<double>{kSentinel<double>});
  EXPECT_EQ(blas::dot<double>(ctx(), {nullptr, 0, 1, ctx().backend()}, {nullptr, 0, 1, ctx().backend()}), 0.0);
  EXPECT_EQ(blas::nrm2<double>(ctx(), {nullptr, 0, 1, ctx().backend()}), 0.0);
  // A product over an empty inner dimension is beta C.
  const auto c0 = test::random_values<double>(3 * n, 22);
  Array<double> dc2 = Array<double>::from_host(ctx(), {3, n}, c0);
  blas::gemm<double>(ctx(), blas::Op::none, blas::Op::trans, 1.0, {nullptr, 3, 0, 1, ctx().backend()},
                     {nullptr, n, 0, 1, ctx().backend()}, 0.5, dc2.matrix());
  std::vector<double> half(c0);
  for (double& x : half) x *= 0.5;
  EXPECT_EQ(dc2.to_vector(ctx()), half);
}

// The BLAS (reference, OpenBLAS, cuBLAS) return before touching y when op(A) has no columns;
// blas::gemv makes y = beta y itself (zeros for beta = 0, as MlpEngine::param_grads needs for an
// empty batch).
TEST_P(CoreOnBackends, GemvOverAnEmptyInnerDimensionIsBetaY) {
  const index_t m = 5;
  const auto y0 = test::random_values<double>(m, 23);
  for (blas::Op op : {blas::Op::none, blas::Op::trans}) {
    const MatrixView<const double> a = op == blas::Op::none ? MatrixView<const double>{nullptr, m, 0, 1, ctx().backend()}
                                                            : MatrixView<const double>{nullptr, 0, m, m, ctx().backend()};
    for (double beta : {0.0, 0.5}) {
      Array<double> dy = Array<double>::from_host(ctx(), {m}, y0);
      blas::gemv<double>(ctx(), op, 1.0, a, VectorView<const double>{nullptr, 0, 1, ctx().backend()}, beta, dy.vector());
      std::vector<double> ref(y0);
      for (double& v : ref) v *= beta;
      EXPECT_EQ(dy.to_vector(ctx()), ref) << "op " << int(op) << " beta " << beta;
    }
  }
}

TEST_P(CoreOnBackends, ANanInOneRowStaysInThatRowsProducts) {
  // Rows are samples: C = A B^T and G = A A^T with a NaN in row 3 of A. Row 3 of C (row and
  // column 3 of G) become NaN; every other entry is finite and equals the naive product.
  const index_t m = 12, n = 9, k = 7;
  auto a = test::random_values<double>(m * k, 31);
  const auto b = test::random_values<double>(n * k, 32);
  a[std::size_t(3 * k + 2)] = kNaN<double>;
  const Array<double> da = Array<double>::from_host(ctx(), {m, k}, a), db = Array<double>::from_host(ctx(), {n, k}, b);
  Array<double> dc = Array<double>::zeros(ctx(), {m, n}), dg = Array<double>::zeros(ctx(), {m, m});
  blas::gemm<double>(ctx(), blas::Op::none, blas::Op::trans, 1.0, da.matrix(), db.matrix(), 0.0, dc.matrix());
  blas::syrk<double>(ctx(), blas::Op::none, 1.0, da.matrix(), 0.0, dg.matrix());
  const auto c = dc.to_vector(ctx()), g = dg.to_vector(ctx());
  const auto cref = naive_gemm(blas::Op::none, blas::Op::trans, 1.0, a, m, k, b, n, k, 0.0, std::vector<double>(std::size_t(m * n)));
  const auto gref = naive_gram(blas::Op::none, a, m, k);
  for (index_t j = 0; j < n; ++j) EXPECT_TRUE(std::isnan(c[std::size_t(3 * n + j)])) << "C(3, " << j << ")";
  for (index_t j = 0; j < m; ++j) EXPECT_TRUE(std::isnan(g[std::size_t(3 * m + j)]) && std::isnan(g[std::size_t(j * m + 3)])) << j;
  const auto dcmp = test::max_rel_diff_finite(c.data(), cref.data(), m * n), dgmp = test::max_rel_diff_finite(g.data(), gref.data(), m * m);
  EXPECT_EQ(dcmp.finiteness_mismatches, 0);
  EXPECT_LT(dcmp.max_rel, 1e-13);
  EXPECT_EQ(dgmp.finiteness_mismatches, 0);
  EXPECT_LT(dgmp.max_rel, 1e-13);
}

DYNASCOPE_BACKEND_TESTS(CoreOnBackends);

}  // namespace
}  // namespace dynascope
