// Stochastic Lanczos quadrature and trace estimators against exact traces.
#include <gtest/gtest.h>

#include <cmath>

#include "dynascope/spectra.hpp"
#include "linalg/spectra_test_util.hpp"

namespace dynascope {
namespace {

struct Fixture {
  index_t n = 300;
  std::vector<double> lambda, a;
  double tr = 0, tr2 = 0, var1 = 0, var2 = 0;  // traces and Var(z^T A z), Var(z^T A^2 z)
  Fixture() {
    for (index_t i = 0; i < n; ++i) lambda.push_back(std::sin(0.1 * double(i)) + 0.3 + (i < 5 ? 20.0 : 0.0));
    a = test::with_spectrum(lambda, 9);
    for (double l : lambda) {
      tr += l;
      tr2 += l * l;
    }
    // Var(z^T B z) = 2 (||B||_F^2 - sum_i B_ii^2) for Rademacher z.
    std::vector<double> a2(std::size_t(n * n), 0.0);
    for (index_t i = 0; i < n; ++i)
      for (index_t q = 0; q < n; ++q)
        for (index_t j = 0; j < n; ++j) a2[std::size_t(i * n + j)] += a[std::size_t(i * n + q)] * a[std::size_t(q * n + j)];
    auto var = [&](const std::vector<double>& b) {
      double f = 0, d = 0;
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < n; ++j) f += b[std::size_t(i * n + j)] * b[std::size_t(i * n + j)];
      for (index_t i = 0; i < n; ++i) d += b[std::size_t(i * n + i)] * b[std::size_t(i * n + i)];
      return 2 * (f - d);
    };
    var1 = var(a);
    var2 = var(a2);
  }
};

TEST(Slq, MomentsMatchNormalisedTracesWithinAShrinkingStatisticalTolerance) {
  const Fixture fx;
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {fx.a.data(), fx.n, fx.n, fx.n});
  for (index_t probes : {4, 16, 64}) {
    linalg::SlqOptions o;
    o.steps = 30;
    o.probes = probes;
    o.seed = 5;
    const auto d = linalg::slq<double>(op, o);
    double m1 = 0, m2 = 0;
    for (index_t p = 0; p < probes; ++p)
      for (std::size_t j = 0; j < d.nodes[std::size_t(p)].size(); ++j) {
        m1 += d.weights[std::size_t(p)][j] * d.nodes[std::size_t(p)][j] / double(probes);
        m2 += d.weights[std::size_t(p)][j] * d.nodes[std::size_t(p)][j] * d.nodes[std::size_t(p)][j] / double(probes);
      }
    const double n = double(fx.n);
    // Five standard errors of the probe mean of z^T B z / n.
    EXPECT_NEAR(m1, fx.tr / n, 5 * std::sqrt(fx.var1 / double(probes)) / n) << probes;
    EXPECT_NEAR(m2, fx.tr2 / n, 5 * std::sqrt(fx.var2 / double(probes)) / n) << probes;
    EXPECT_NEAR(d.trace_estimate, m1 * n, 1e-9 * fx.tr);
    // The density integrates to one on its grid.
    double integral = 0;
    for (std::size_t g = 1; g < d.grid.size(); ++g)
      integral += 0.5 * (d.density[g] + d.density[g - 1]) * (d.grid[g] - d.grid[g - 1]);
    EXPECT_NEAR(integral, 1.0, 1e-3);
    EXPECT_EQ(d.matvecs, o.steps * probes);
  }
}

TEST(Slq, WeightsOfEachProbeSumToOneAndNodesLieInTheSpectrum) {
  const Fixture fx;
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {fx.a.data(), fx.n, fx.n, fx.n});
  const auto d = linalg::slq<double>(op, {});
  const double lo = *std::min_element(fx.lambda.begin(), fx.lambda.end()), hi = *std::max_element(fx.lambda.begin(), fx.lambda.end());
  for (std::size_t p = 0; p < d.nodes.size(); ++p) {
    double s = 0;
    for (std::size_t j = 0; j < d.nodes[p].size(); ++j) {
      s += d.weights[p][j];
      EXPECT_GE(d.nodes[p][j], lo - 1e-8);
      EXPECT_LE(d.nodes[p][j], hi + 1e-8);
    }
    EXPECT_NEAR(s, 1.0, 1e-12);
  }
  // 90 steps resolve the five outliers at 20+: each appears as a node.
  int outliers = 0;
  for (double x : d.nodes[0]) outliers += x > 19.0;
  EXPECT_EQ(outliers, 5);
}

TEST(Trace, HutchinsonAndHutchPlusPlusEstimateTheExactTrace) {
  const Fixture fx;
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {fx.a.data(), fx.n, fx.n, fx.n});
  for (index_t probes : {30, 300}) {
    const auto h = linalg::hutchinson<double>(op, probes, 3);
    EXPECT_NEAR(h.trace, fx.tr, 5 * std::sqrt(fx.var1 / double(probes)));
    EXPECT_EQ(h.matvecs, probes);
  }
  // Hutch++ removes the top of the spectrum exactly: with 30 matvecs the five outliers are gone and
  // the error is far below Hutchinson's with the same budget.
  const auto hp = linalg::hutchpp<double>(op, 30, 3);
  EXPECT_NEAR(hp.trace, fx.tr, 0.5 * std::sqrt(fx.var1 / 30.0));
  EXPECT_EQ(hp.matvecs, 30);
  EXPECT_THROW(linalg::hutchpp<double>(op, 10, 3), InvalidArgument);
}

TEST(Trace, PowerIterationFindsTheDominantEigenvalue) {
  const index_t n = 200;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = 1.0 + 0.001 * double(i);
  l[7] = -6.0;  // dominant in magnitude, negative
  const auto a = test::with_spectrum(l, 10);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  const auto r = linalg::power_iteration<double>(op, 1e-12, 2000, 1);
  EXPECT_TRUE(r.converged);
  EXPECT_NEAR(r.value, -6.0, 1e-8);
  EXPECT_LT(r.residual, 1e-4);
}

}  // namespace
}  // namespace dynascope
