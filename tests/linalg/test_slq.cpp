// Stochastic Lanczos quadrature and trace estimators against exact traces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dynascope/linalg.hpp"
#include "dynascope/random.hpp"
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

// Full reorthogonalization (one Gram-Schmidt pass, a second where the DGKS criterion asks) keeps
// the Lanczos basis orthogonal: with as many steps as the dimension, on a spectrum spread over six
// decades (where Lanczos without reorthogonalization repeats its extreme Ritz values as "ghosts"),
// every probe's nodes are the n eigenvalues themselves, once each, in float64 and in float32.
TEST(Slq, AFullKrylovSpaceGivesEveryEigenvalueOnceWithoutGhosts) {
  const index_t n = 48;
  std::vector<double> lambda;
  for (index_t i = 0; i < n; ++i) lambda.push_back(std::pow(10.0, -3.0 + 6.0 * double(i) / double(n - 1)));
  const std::vector<double> a = test::with_spectrum(lambda, 5);
  Context ctx = Context::host();
  linalg::SlqOptions o;
  o.steps = n;
  o.probes = 3;
  const auto check = [&](const linalg::SpectralDensity& d, double tol, const char* what) {
    for (std::size_t p = 0; p < d.nodes.size(); ++p) {
      std::vector<double> nodes = d.nodes[p];
      ASSERT_EQ(nodes.size(), std::size_t(n)) << what;
      std::sort(nodes.begin(), nodes.end());
      for (index_t i = 0; i < n; ++i)
        EXPECT_NEAR(nodes[std::size_t(i)], lambda[std::size_t(i)], tol * lambda.back()) << what << " probe " << p << " node " << i;
    }
  };
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  check(linalg::slq<double>(op, o), 1e-10, "float64");
  std::vector<float> af(a.begin(), a.end());
  linalg::DenseOperator<float> opf(ctx, {af.data(), n, n, n});
  check(linalg::slq<float>(opf, o), 1e-5, "float32");
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
  // The probe-count entry point: 20 probes are 10 sketch vectors and 10 residual probes, the same
  // estimator as the 30-matvec budget above (same seed, same draws).
  const auto pp = linalg::hutchpp_probes<double>(op, 20, 3);
  EXPECT_EQ(pp.matvecs, 30);
  EXPECT_DOUBLE_EQ(pp.trace, hp.trace);
  EXPECT_DOUBLE_EQ(pp.std_error, hp.std_error);
  // Odd counts give the extra vector to the sketch: 21 probes = 11 + 10, 2 * 11 + 10 matvecs.
  EXPECT_EQ(linalg::hutchpp_probes<double>(op, 21, 3).matvecs, 32);
  EXPECT_THROW(linalg::hutchpp_probes<double>(op, 1, 3), InvalidArgument);
  EXPECT_THROW(linalg::hutchinson<double>(op, 0, 3), InvalidArgument);
}

TEST(Trace, HutchinsonInBlocksIsTheNaiveEstimateOfItsDocumentedProbes) {
  // Probe i is elements i*n .. of the Rademacher sequence (seed, stream 0x68757463): a naive
  // float64 loop over those probes gives the estimate and its standard error, whatever block
  // sizes the probes are applied in (one block, the operator's max_block, a remainder).
  const Fixture fx;
  Context ctx = Context::host(2);
  const index_t n = fx.n, probes = 23;
  const std::uint64_t seed = 77;
  std::vector<double> z(std::size_t(probes * n));
  random::fill_rademacher<double>(ctx, {seed, 0x68757463u, 0}, vector_view(z.data(), probes * n));
  std::vector<double> q;
  for (index_t p = 0; p < probes; ++p) {
    double v = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < n; ++j)
        v += z[std::size_t(p * n + i)] * fx.a[std::size_t(i * n + j)] * z[std::size_t(p * n + j)];
    q.push_back(v);
  }
  double mean = 0, var = 0;
  for (double v : q) mean += v / double(probes);
  for (double v : q) var += (v - mean) * (v - mean) / double(probes - 1);
  const double se = std::sqrt(var / double(probes));
  const linalg::DenseOperator<double> dense(ctx, {fx.a.data(), n, n, n});
  for (const index_t block : {index_t(0), index_t(1), index_t(5), index_t(23), index_t(40)}) {
    index_t calls = 0, largest = 0;
    linalg::CallbackOperator<double> op(ctx, n, [&](MatrixView<const double> x, MatrixView<double> y) {
      ++calls;
      largest = std::max(largest, x.rows);
      const_cast<linalg::DenseOperator<double>&>(dense).apply(x, y);
    }, block);
    const auto h = linalg::hutchinson<double>(op, probes, seed);
    EXPECT_NEAR(h.trace, mean, 1e-12 * std::abs(mean)) << "max_block " << block;
    EXPECT_NEAR(h.std_error, se, 1e-10 * se) << "max_block " << block;
    EXPECT_EQ(h.matvecs, probes);
    const index_t expect = block == 0 ? probes : std::min(block, probes);
    EXPECT_EQ(largest, expect) << "max_block " << block;
    EXPECT_EQ(calls, (probes + expect - 1) / expect) << "max_block " << block;
  }
}

TEST(Trace, StandardErrorsAreNaNFromOneSampleAndZeroWhenExact) {
  const Fixture fx;
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {fx.a.data(), fx.n, fx.n, fx.n});
  EXPECT_TRUE(std::isnan(linalg::hutchinson<double>(op, 1, 3).std_error));
  EXPECT_TRUE(std::isnan(linalg::hutchpp_probes<double>(op, 2, 3).std_error));  // one residual probe
  // A sketch as wide as the space makes Hutch++ exact: no probes are spent and the error is 0.
  const index_t n = 12;
  std::vector<double> l(static_cast<std::size_t>(n));
  double tr = 0;
  for (index_t i = 0; i < n; ++i) tr += l[std::size_t(i)] = std::cos(double(i)) * 4;
  const auto a = test::with_spectrum(l, 2);
  linalg::DenseOperator<double> small(ctx, {a.data(), n, n, n});
  const auto t = linalg::hutchpp_probes<double>(small, 30, 1);
  EXPECT_NEAR(t.trace, tr, 1e-12 * 4 * double(n));
  EXPECT_EQ(t.std_error, 0.0);
  EXPECT_EQ(t.matvecs, 2 * n);
}

// Over many seeds, the reported standard errors must match the spread of the estimates: the
// empirical variance of R estimates against the mean reported variance (std_error^2), within
// five standard errors of their difference, each standard error estimated from the same R
// samples (the sample variance's from the fourth central moment). Fixed seeds: deterministic.
void expect_calibrated(const std::vector<double>& est, const std::vector<double>& se, double exact, const std::string& what) {
  const double r = double(est.size());
  double mean = 0, mean_se2 = 0;
  for (std::size_t i = 0; i < est.size(); ++i) {
    mean += est[i] / r;
    mean_se2 += se[i] * se[i] / r;
  }
  double m2 = 0, m4 = 0, v_se2 = 0;
  for (std::size_t i = 0; i < est.size(); ++i) {
    const double d = est[i] - mean;
    m2 += d * d / r;
    m4 += d * d * d * d / r;
    v_se2 += (se[i] * se[i] - mean_se2) * (se[i] * se[i] - mean_se2) / r;
  }
  const double var = m2 * r / (r - 1);
  const double se_var = std::sqrt(std::max(0.0, m4 - m2 * m2 * (r - 3) / (r - 1)) / r);
  const double se_mean_se2 = std::sqrt(v_se2 / r);
  const double band = 5 * std::sqrt(se_var * se_var + se_mean_se2 * se_mean_se2);
  EXPECT_NEAR(var, mean_se2, band) << what;
  // The band is narrow enough to mean something: it would catch a factor 1.2 in std_error (1.44
  // in its square).
  EXPECT_LT(band, 0.3 * mean_se2) << what;
  // And the estimator is unbiased: the mean of R estimates is within five of its standard errors.
  EXPECT_NEAR(mean, exact, 5 * std::sqrt(var / r)) << what;
}

TEST(Trace, StandardErrorsMatchTheSpreadOverSeeds) {
  const Fixture fx;
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {fx.a.data(), fx.n, fx.n, fx.n});
  const index_t reps = 1500;
  std::vector<double> est, se, est_h, se_h;
  for (index_t s = 0; s < reps; ++s) {
    const auto t = linalg::hutchpp_probes<double>(op, 16, 1000 + std::uint64_t(s));
    est.push_back(t.trace);
    se.push_back(t.std_error);
    const auto h = linalg::hutchinson<double>(op, 8, 1000 + std::uint64_t(s));
    est_h.push_back(h.trace);
    se_h.push_back(h.std_error);
  }
  expect_calibrated(est, se, fx.tr, "hutch++ 16 probes");
  expect_calibrated(est_h, se_h, fx.tr, "hutchinson 8 probes");
  // Hutchinson's variance is also known in closed form: Var(z^T A z) / probes; the mean of the
  // reported squares must match it within five of its own standard errors.
  double mean_se2 = 0, var_se2 = 0;
  for (double v : se_h) mean_se2 += v * v / double(reps);
  for (double v : se_h) var_se2 += (v * v - mean_se2) * (v * v - mean_se2) / double(reps - 1);
  EXPECT_NEAR(mean_se2, fx.var1 / 8.0, 5 * std::sqrt(var_se2 / double(reps)));
  // Hutch++ deflates the five outliers: its error is well below Hutchinson's with the same probes.
  double mean_se2_pp = 0;
  for (double v : se) mean_se2_pp += v * v / double(reps);
  EXPECT_LT(mean_se2_pp, 0.5 * fx.var1 / 16.0);
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
