// cuda against host: every CUDA-only piece of the core (launcher, copies, cuBLAS/cuSOLVER
// dispatch, Philox on device). Skips in the fixture when no device is usable.
#include <gtest/gtest.h>

#include <vector>

#include "dynascope/blas.hpp"
#include "dynascope/random.hpp"
#include "kernels/launch.cuh"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using test::GpuTest;

struct Square {
  double* y;
  DYNASCOPE_HD void operator()(index_t i) const { y[i] = double(i) * double(i) + 0.5; }
};

template <class T>
std::vector<T> to_host(const Context& cuda, const Array<T>& a) {
  std::vector<T> out(static_cast<std::size_t>(a.size()));
  detail::copy_bytes(cuda, out.data(), Backend::host, a.data(), Backend::cuda, a.bytes());
  return out;
}

template <class T>
Array<T> upload(const Context& cuda, const std::vector<T>& v, Shape shape) {
  Array<T> a(cuda, std::move(shape));
  detail::copy_bytes(cuda, a.data(), Backend::cuda, v.data(), Backend::host, a.bytes());
  return a;
}

class CoreGpu : public GpuTest {};

TEST_F(CoreGpu, ParallelForMatchesHost) {
  Context dev = cuda();
  const index_t n = 1000003;
  Array<double> y(dev, {n});
  kern::parallel_for(dev, n, Square{y.data()});
  std::vector<double> ref(static_cast<std::size_t>(n));
  kern::parallel_for(host, n, Square{ref.data()});
  EXPECT_EQ(to_host(dev, y), ref);
}

TEST_F(CoreGpu, PhiloxDrawsAreBitIdenticalToHost) {
  Context dev = cuda();
  const index_t n = 100001;
  const random::Stream s{77, 3, 9};
  std::vector<double> hn(static_cast<std::size_t>(n)), hu(static_cast<std::size_t>(n));
  std::vector<float> hf(static_cast<std::size_t>(n));
  random::fill_normal<double>(host, s, vector_view(hn.data(), n));
  random::fill_uniform<double>(host, s, vector_view(hu.data(), n));
  random::fill_normal<float>(host, s, vector_view(hf.data(), n), 0.5f, 2.0f);
  Array<double> dn(dev, {n}), du(dev, {n});
  Array<float> df(dev, {n});
  random::fill_normal<double>(dev, s, dn.vector());
  random::fill_uniform<double>(dev, s, du.vector());
  random::fill_normal<float>(dev, s, df.vector(), 0.5f, 2.0f);
  EXPECT_EQ(to_host(dev, dn), hn);
  EXPECT_EQ(to_host(dev, du), hu);
  EXPECT_EQ(to_host(dev, df), hf);
}

TEST_F(CoreGpu, EveryPhiloxFillIsBitIdenticalToHost) {
  Context dev = cuda();
  const index_t n = 70001;
  const random::Stream s{12, 4, 2};
  std::vector<float> hu(static_cast<std::size_t>(n)), hr(static_cast<std::size_t>(n));
  std::vector<std::int64_t> hi(static_cast<std::size_t>(n));
  random::fill_uniform<float>(host, s, vector_view(hu.data(), n), -1.0f, 2.0f);
  random::fill_rademacher<float>(host, s, vector_view(hr.data(), n));
  random::fill_integers(host, s, vector_view(hi.data(), n), 1000003);
  Array<float> du(dev, {n}), dr(dev, {n});
  Array<std::int64_t> di(dev, {n});
  random::fill_uniform<float>(dev, s, du.vector(), -1.0f, 2.0f);
  random::fill_rademacher<float>(dev, s, dr.vector());
  random::fill_integers(dev, s, di.vector(), 1000003);
  EXPECT_EQ(to_host(dev, du), hu);
  EXPECT_EQ(to_host(dev, dr), hr);
  EXPECT_EQ(to_host(dev, di), hi);
}

TEST_F(CoreGpu, RemainingBlasAndLapackPathsMatchHost) {
  Context dev = cuda();
  const index_t m = 31, k = 17;
  Array<double> a = test::random_array<double>(host, {k, m}, 5);
  std::vector<double> va(a.data(), a.data() + a.size());
  Array<double> da = upload(dev, va, {k, m});
  // syrk with op trans: A^T A is m x m.
  Array<double> g(host, {m, m}), dg = Array<double>::zeros(dev, {m, m});
  blas::syrk<double>(host, blas::Op::trans, 1.0, a.matrix(), 0.0, g.matrix());
  blas::syrk<double>(dev, blas::Op::trans, 1.0, da.matrix(), 0.0, dg.matrix());
  EXPECT_LT(test::max_rel_diff(to_host(dev, dg).data(), g.data(), g.size()), 1e-13);
  // gemv without transpose, then axpy and scal.
  std::vector<double> x(static_cast<std::size_t>(m), 0.5), y(static_cast<std::size_t>(k), 1.0);
  Array<double> dxv = upload(dev, x, {m}), dyv = upload(dev, y, {k});
  blas::gemv<double>(host, blas::Op::none, 2.0, a.matrix(), vector_view<const double>(x.data(), m), 0.5, vector_view(y.data(), k));
  blas::gemv<double>(dev, blas::Op::none, 2.0, da.matrix(), dxv.vector(), 0.5, dyv.vector());
  blas::axpy<double>(host, -1.5, vector_view<const double>(x.data(), k), vector_view(y.data(), k));
  blas::axpy<double>(dev, -1.5, VectorView<const double>{dxv.data(), k, 1, Backend::cuda}, dyv.vector());
  blas::scal<double>(host, 3.0, vector_view(y.data(), k));
  blas::scal<double>(dev, 3.0, dyv.vector());
  EXPECT_LT(test::max_rel_diff(to_host(dev, dyv).data(), y.data(), k), 1e-13);
  // syevdx: eigenpairs 20..29 of the Gram matrix, compared by eigenvalue and residual.
  std::vector<double> gh(g.data(), g.data() + g.size());
  Array<double> dg2 = upload(dev, gh, {m, m});
  std::vector<double> wh(10), zh(static_cast<std::size_t>(10 * m));
  lapack::syevdx<double>(host, g.matrix(), 20, 30, vector_view(wh.data(), 10), {zh.data(), 10, m, m});
  Array<double> dw(dev, {10}), dz(dev, {10, m});
  lapack::syevdx<double>(dev, dg2.matrix(), 20, 30, dw.vector(), dz.matrix());
  EXPECT_LT(test::max_rel_diff(to_host(dev, dw).data(), wh.data(), 10), 1e-10);
  const auto z = to_host(dev, dz);
  for (index_t i = 0; i < 10; ++i) {
    double dot = 0;
    for (index_t p = 0; p < m; ++p) dot += z[std::size_t(i * m + p)] * zh[std::size_t(i * m + p)];
    EXPECT_NEAR(std::abs(dot), 1.0, 1e-8);  // the same eigenvector up to sign
  }
}

TEST_F(CoreGpu, BlasAndLapackMatchHost) {
  Context dev = cuda();
  const index_t m = 67, n = 45, k = 33;
  Array<double> a = test::random_array<double>(host, {m, k}, 1), b = test::random_array<double>(host, {n, k}, 2);
  std::vector<double> va(a.data(), a.data() + a.size()), vb(b.data(), b.data() + b.size());
  Array<double> c(host, {m, n});
  blas::gemm<double>(host, blas::Op::none, blas::Op::trans, 1.0, a.matrix(), b.matrix(), 0.0, c.matrix());
  Array<double> da = upload(dev, va, {m, k}), db = upload(dev, vb, {n, k});
  Array<double> dc = Array<double>::zeros(dev, {m, n});
  blas::gemm<double>(dev, blas::Op::none, blas::Op::trans, 1.0, da.matrix(), db.matrix(), 0.0, dc.matrix());
  auto hc = to_host(dev, dc);
  EXPECT_LT(test::max_rel_diff(hc.data(), c.data(), c.size()), 1e-13);

  Array<double> g(host, {m, m});
  blas::syrk<double>(host, blas::Op::none, 1.0, a.matrix(), 0.0, g.matrix());
  Array<double> dg = Array<double>::zeros(dev, {m, m});
  blas::syrk<double>(dev, blas::Op::none, 1.0, da.matrix(), 0.0, dg.matrix());
  auto hg = to_host(dev, dg);
  EXPECT_LT(test::max_rel_diff(hg.data(), g.data(), g.size()), 1e-13);

  std::vector<double> w(static_cast<std::size_t>(m));
  std::vector<double> gh(g.data(), g.data() + g.size());
  lapack::syevd<double>(host, g.matrix(), vector_view(w.data(), m));
  Array<double> dw(dev, {m});
  Array<double> dg2 = upload(dev, gh, {m, m});
  lapack::syevd<double>(dev, dg2.matrix(), dw.vector());
  auto hw = to_host(dev, dw);
  EXPECT_LT(test::max_rel_diff(hw.data(), w.data(), m), 1e-10);

  EXPECT_NEAR(blas::dot<double>(dev, da.vector(), da.vector()), blas::dot<double>(host, a.vector(), a.vector()), 1e-10);
  EXPECT_NEAR(blas::nrm2<double>(dev, da.vector()), blas::nrm2<double>(host, a.vector()), 1e-12);
}

TEST_F(CoreGpu, OrthonormalizeRowsOnDevice) {
  Context dev = cuda();
  const index_t k = 5, n = 40;
  Array<float> a = test::random_array<float>(host, {k, n}, 3);
  std::vector<float> v(a.data(), a.data() + a.size());
  Array<float> da = upload(dev, v, {k, n});
  lapack::orthonormalize_rows<float>(dev, da.matrix());
  auto q = to_host(dev, da);
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) {
      double s = 0;
      for (index_t p = 0; p < n; ++p) s += double(q[std::size_t(i * n + p)]) * double(q[std::size_t(j * n + p)]);
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-5);
    }
}

}  // namespace
}  // namespace dynascope
