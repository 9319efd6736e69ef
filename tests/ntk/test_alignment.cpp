// Alignment metrics against naive float64 formulas and closed forms.
#include <gtest/gtest.h>

#include <cmath>

#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"
#include "model/model_test_util.hpp"

namespace dynascope {
namespace {

// A random symmetric PSD matrix B B^T.
std::vector<double> psd(index_t m, unsigned seed) {
  const auto b = test::random_vector(std::size_t(m * m), seed);
  std::vector<double> k(std::size_t(m * m), 0.0);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j)
      for (index_t q = 0; q < m; ++q) k[std::size_t(i * m + j)] += b[std::size_t(i * m + q)] * b[std::size_t(j * m + q)];
  return k;
}

TEST(Alignment, EigenpairsAreDescendingAndReconstructTheKernel) {
  const index_t m = 12;
  const auto k = psd(m, 1);
  Context ctx = Context::host();
  const auto e = linalg::eigh<double>(ctx, {k.data(), m, m, m});
  for (index_t i = 1; i < m; ++i) EXPECT_GE(e.values[std::size_t(i - 1)], e.values[std::size_t(i)]);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) {
      double s = 0;
      for (index_t q = 0; q < m; ++q) s += e.values[std::size_t(q)] * e.vectors.data()[q * m + i] * e.vectors.data()[q * m + j];
      EXPECT_NEAR(s, k[std::size_t(i * m + j)], 1e-10);
    }
}

TEST(Alignment, CumulativeEnergyOfAnEigenvectorAndItsEnd) {
  const index_t m = 10;
  const auto k = psd(m, 2);
  Context ctx = Context::host();
  const auto e = linalg::eigh<double>(ctx, {k.data(), m, m, m});
  // v = 3 u_2 + 4 u_5: E_1 = 0, E_2 = 9/25, E_5 = 1.
  std::vector<double> v(static_cast<std::size_t>(m));
  for (index_t j = 0; j < m; ++j) v[std::size_t(j)] = 3 * e.vectors.data()[1 * m + j] + 4 * e.vectors.data()[4 * m + j];
  const auto en = ntk::cumulative_energy<double>(e, {v.data(), m, 1, 1}, {1, 2, 4, 5, 10});
  EXPECT_NEAR(en[0], 0.0, 1e-12);
  EXPECT_NEAR(en[1], 9.0 / 25, 1e-12);
  EXPECT_NEAR(en[2], 9.0 / 25, 1e-12);
  EXPECT_NEAR(en[3], 1.0, 1e-12);
  // Any targets reach 1 at k = M.
  const auto y = test::random_vector(std::size_t(m * 3), 3);
  EXPECT_NEAR(ntk::cumulative_energy<double>(e, {y.data(), m, 3, 3}, {m}).back(), 1.0, 1e-12);
  EXPECT_EQ(ntk::energy_ks(120), (std::vector<index_t>{1, 2, 5, 10, 20, 50, 100, 120}));
}

TEST(Alignment, KernelTargetAlignmentMatchesNaiveFormulas) {
  const index_t m = 9;
  const auto k = psd(m, 4);
  const auto y = test::random_vector(std::size_t(m), 5);
  double yky = 0, kf = 0, yy = 0;
  for (index_t i = 0; i < m; ++i) {
    yy += y[std::size_t(i)] * y[std::size_t(i)];
    for (index_t j = 0; j < m; ++j) {
      yky += y[std::size_t(i)] * k[std::size_t(i * m + j)] * y[std::size_t(j)];
      kf += k[std::size_t(i * m + j)] * k[std::size_t(i * m + j)];
    }
  }
  EXPECT_NEAR(ntk::kernel_target_alignment({k.data(), m, m, m}, {y.data(), m, 1, 1}, false), yky / (std::sqrt(kf) * yy), 1e-14);
  // Centred: H K H and H y built by explicit matrix products.
  std::vector<double> h(static_cast<std::size_t>(m * m)), hk(std::size_t(m * m), 0.0), hkh(std::size_t(m * m), 0.0), hy(std::size_t(m), 0.0);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) h[std::size_t(i * m + j)] = (i == j) - 1.0 / double(m);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j)
      for (index_t q = 0; q < m; ++q) hk[std::size_t(i * m + j)] += h[std::size_t(i * m + q)] * k[std::size_t(q * m + j)];
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j)
      for (index_t q = 0; q < m; ++q) hkh[std::size_t(i * m + j)] += hk[std::size_t(i * m + q)] * h[std::size_t(q * m + j)];
  for (index_t i = 0; i < m; ++i)
    for (index_t q = 0; q < m; ++q) hy[std::size_t(i)] += h[std::size_t(i * m + q)] * y[std::size_t(q)];
  double num = 0, kcf = 0, hyy = 0;
  for (index_t i = 0; i < m; ++i) {
    hyy += hy[std::size_t(i)] * hy[std::size_t(i)];
    for (index_t j = 0; j < m; ++j) {
      num += hy[std::size_t(i)] * hkh[std::size_t(i * m + j)] * hy[std::size_t(j)];
      kcf += hkh[std::size_t(i * m + j)] * hkh[std::size_t(i * m + j)];
    }
  }
  EXPECT_NEAR(ntk::kernel_target_alignment({k.data(), m, m, m}, {y.data(), m, 1, 1}, true), num / (std::sqrt(kcf) * hyy), 1e-13);
  // The ideal kernel y y^T is perfectly aligned.
  std::vector<double> ideal(static_cast<std::size_t>(m * m));
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) ideal[std::size_t(i * m + j)] = y[std::size_t(i)] * y[std::size_t(j)];
  EXPECT_NEAR(ntk::kernel_target_alignment({ideal.data(), m, m, m}, {y.data(), m, 1, 1}, false), 1.0, 1e-14);
}

TEST(Alignment, FloatKernelsAndTopEigenvectorsGiveTheSameNumbers) {
  // The float32 overload reads the kernel in place (no float64 copy): equal to the float64 one to
  // float32 rounding of K. E_k from the top-k eigenvector rows equals E_k from all of them.
  const index_t m = 12, c = 3;
  const auto k = psd(m, 6);
  const auto y = test::random_vector(std::size_t(m * c), 7);
  std::vector<float> kf(k.begin(), k.end());
  for (bool centered : {false, true}) {
    const double d = ntk::kernel_target_alignment({k.data(), m, m, m}, {y.data(), m, c, c}, centered);
    const double f = ntk::kernel_target_alignment(MatrixView<const float>{kf.data(), m, m, m}, {y.data(), m, c, c}, centered);
    EXPECT_NEAR(f, d, 1e-6 * std::abs(d)) << centered;
  }
  const linalg::EigenResult<double> eig = linalg::eigh<double>(Context::host(), {k.data(), m, m, m});
  const std::vector<index_t> ks{1, 2, 5};
  const auto all = ntk::cumulative_energy<double>(eig, {y.data(), m, c, c}, ks);
  const auto top = ntk::cumulative_energy<double>(MatrixView<const double>{eig.vectors.data(), 5, m, m}, {y.data(), m, c, c}, ks);
  for (std::size_t i = 0; i < ks.size(); ++i) EXPECT_NEAR(top[i], all[i], 1e-14);
  // Asking for more eigenvectors than were given is an error, not a silent clip.
  EXPECT_THROW(ntk::cumulative_energy<double>(MatrixView<const double>{eig.vectors.data(), 5, m, m}, {y.data(), m, c, c}, {6}),
               InvalidArgument);
  // The top 5 by Lanczos-or-dense (eigsh) give the same energies as the whole decomposition, and
  // the same refusal beyond what they hold (k above M is clipped to M first, as for eigh's result).
  linalg::DenseOperator<double> op(Context::host(), {k.data(), m, m, m});
  linalg::LanczosOptions o;
  o.k = 5;
  const linalg::EigenResult<double> top5 = linalg::eigsh<double>(op, o);
  const auto from_top5 = ntk::cumulative_energy<double>(top5, {y.data(), m, c, c}, ks);
  for (std::size_t i = 0; i < ks.size(); ++i) EXPECT_NEAR(from_top5[i], all[i], 1e-12);
  EXPECT_THROW(ntk::cumulative_energy<double>(top5, {y.data(), m, c, c}, {6}), InvalidArgument);
  EXPECT_NEAR(ntk::cumulative_energy<double>(eig, {y.data(), m, c, c}, {m + 5}).back(), 1.0, 1e-12);
  EXPECT_THROW(ntk::cumulative_energy<double>(eig, {y.data(), m - 1, c, c}, {1}), ShapeMismatch);
}

TEST(Alignment, KernelDistanceIsZeroForScaledKernelsAndOneForOrthogonal) {
  const index_t m = 6;
  const auto k = psd(m, 6);
  std::vector<double> k2 = k;
  for (auto& v : k2) v *= 3.5;
  EXPECT_NEAR(ntk::kernel_distance({k.data(), m, m, m}, {k2.data(), m, m, m}), 0.0, 1e-14);
  std::vector<double> e1(std::size_t(m * m), 0.0), e2(std::size_t(m * m), 0.0);
  e1[0] = 1;
  e2[std::size_t(m * m - 1)] = 2;
  EXPECT_NEAR(ntk::kernel_distance({e1.data(), m, m, m}, {e2.data(), m, m, m}), 1.0, 1e-15);
  EXPECT_THROW(ntk::kernel_distance({e1.data(), m, m, m}, {e2.data(), m - 1, m, m}), ShapeMismatch);
}

}  // namespace
}  // namespace dynascope
