// Split R-hat and effective sample size (dynascope/chain_stats.hpp), checked two ways:
//  - against ArviZ itself on fixed traces (tests/sgld/data/chain_stats_reference.inc, written by
//    tests/sgld/data/make_chain_stats_reference.py: the traces, az.rhat(method="rank"),
//    az.ess(method="bulk"), az.ess(method="mean") and scipy's ndtri);
//  - against theory that needs no ArviZ: iid and AR(1) chains, whose ESS is N (1 - ρ) / (1 + ρ),
//    with tolerances from the sampling variability of the estimators, and chains that disagree.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "dynascope/chain_stats.hpp"
#include "dynascope/error.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct ChainStatsCase {
  const char* name;
  index_t chains, draws;
  const double* trace;
  double rhat, ess_bulk, ess_mean;
};

#include "tests/sgld/data/chain_stats_reference.inc"

// |a - b| / |b|, 0 when both are the same infinity or both NaN, NaN (failing any EXPECT_LT) when
// only one is NaN or infinite.
double rel_diff(double a, double b) {
  if (std::isnan(a) && std::isnan(b)) return 0;
  if (std::isinf(b) || std::isinf(a)) return a == b ? 0 : kNaN;
  return std::abs(a - b) / std::abs(b);
}

// ArviZ's numbers and ours differ only by summation order and the FFT's rounding; 1e-10 leaves
// five orders of magnitude above what is seen (max_rel printed below) and catches any change of
// method (a different rank offset, tie rule, split or truncation moves the values by > 1e-4).
constexpr double kArvizTol = 1e-10;

TEST(ChainStats, MatchesArviz) {
  double worst = 0;
  for (const auto& c : kChainStatsCases) {
    SCOPED_TRACE(c.name);
    const double rhat = stats::split_rhat(c.trace, c.chains, c.draws);
    const double bulk = stats::bulk_ess(c.trace, c.chains, c.draws);
    const double basic = stats::basic_ess(c.trace, c.chains, c.draws);
    EXPECT_LT(rel_diff(rhat, c.rhat), kArvizTol) << rhat << " vs ArviZ " << c.rhat;
    EXPECT_LT(rel_diff(bulk, c.ess_bulk), kArvizTol) << bulk << " vs ArviZ " << c.ess_bulk;
    EXPECT_LT(rel_diff(basic, c.ess_mean), kArvizTol) << basic << " vs ArviZ " << c.ess_mean;
    for (double d : {rel_diff(rhat, c.rhat), rel_diff(bulk, c.ess_bulk), rel_diff(basic, c.ess_mean)})
      worst = std::max(worst, d);
  }
  std::printf("largest relative difference from ArviZ: %.3g\n", worst);
}

TEST(ChainStats, ReferenceCoversTheCases) {
  // The reference must keep exercising what it was built for: a one-chain trace, an odd draw count,
  // ties, a trace with ESS > N, a non-finite R-hat of each kind.
  bool one_chain = false, odd = false, ess_above_n = false, inf_rhat = false, nan_rhat = false;
  for (const auto& c : kChainStatsCases) {
    one_chain |= c.chains == 1;
    odd |= c.draws % 2 == 1;
    ess_above_n |= c.ess_bulk > static_cast<double>(c.chains * c.draws);
    inf_rhat |= std::isinf(c.rhat);
    nan_rhat |= std::isnan(c.rhat);
  }
  EXPECT_TRUE(one_chain && odd && ess_above_n && inf_rhat && nan_rhat);
}

TEST(ChainStats, NormalQuantileMatchesScipy) {
  for (const auto& row : kNormalQuantile) {
    const double z = stats::normal_quantile(row[0]);
    if (row[1] == 0) {
      EXPECT_EQ(z, 0.0);
      continue;
    }
    // A few ulp: scipy's Cephes ndtri and our refined Acklam both round; 4e-15 relative.
    EXPECT_LT(rel_diff(z, row[1]), 4e-15) << "p = " << row[0] << ": " << z << " vs " << row[1];
  }
}

TEST(ChainStats, NormalQuantileInvertsErfc) {
  // Φ(z) = erfc(-z / √2) / 2 from libm, independent of the inversion.
  for (double p = 1e-12; p < 1; p = p < 0.01 ? p * 3 : p + 0.0137) {
    const double z = stats::normal_quantile(p);
    const double back = 0.5 * std::erfc(-z / std::sqrt(2.0));
    // dΦ/dz = φ(z): an error δz moves Φ by φ δz; one ulp of z is allowed.
    const double phi = std::exp(-0.5 * z * z) / std::sqrt(2 * std::numbers::pi);
    EXPECT_LE(std::abs(back - p), 8e-16 * p + phi * std::abs(z) * 2.3e-16) << "p = " << p;
  }
  EXPECT_EQ(stats::normal_quantile(0.0), -kInf);
  EXPECT_EQ(stats::normal_quantile(1.0), kInf);
  EXPECT_EQ(stats::normal_quantile(0.5), 0.0);
  EXPECT_EQ(stats::normal_quantile(0.75), -stats::normal_quantile(0.25));  // 1 - 0.25 is exact
  test::expect_error<InvalidArgument>([] { stats::normal_quantile(1.5); }, {"normal_quantile", "p must be in [0, 1]"});
  test::expect_error<InvalidArgument>([] { stats::normal_quantile(kNaN); }, {"normal_quantile"});
}

TEST(ChainStats, AutocovarianceMatchesDirectSum) {
  std::mt19937_64 gen(7);
  std::normal_distribution<double> normal;
  for (index_t n : {1, 2, 3, 5, 8, 63, 64, 65, 100, 1000, 4097}) {
    std::vector<double> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = 3.0 + normal(gen);  // a non-zero mean, which must be removed
    const std::vector<double> acov = stats::autocovariance(x.data(), n);
    ASSERT_EQ(static_cast<index_t>(acov.size()), n);
    double mu = 0;
    for (double v : x) mu += v;
    mu /= static_cast<double>(n);
    double worst = 0, scale = 0;
    for (index_t t = 0; t < n; ++t) {
      double s = 0;
      for (index_t i = 0; i + t < n; ++i) s += (x[i] - mu) * (x[i + t] - mu);
      s /= static_cast<double>(n);
      if (t == 0) scale = s;
      worst = std::max(worst, std::abs(acov[t] - s));
    }
    // FFT rounding is ~ε log2(m) relative to acov[0] (n = 1: both are exactly 0).
    EXPECT_LE(worst, 1e-14 * std::max(scale, 1e-300)) << "n = " << n;
  }
  test::expect_error<InvalidArgument>([] { stats::autocovariance(nullptr, 0); }, {"autocovariance", "n must be >= 1"});
}

// C chains of a stationary Gaussian AR(1) x_t = ρ x_{t-1} + e_t (ρ = 0: iid N(0, 1)).
std::vector<double> ar1_chains(index_t chains, index_t draws, double rho, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::vector<double> x(static_cast<std::size_t>(chains * draws));
  for (index_t c = 0; c < chains; ++c) {
    double v = normal(gen) / std::sqrt(1 - rho * rho);  // the stationary law, so no burn-in
    for (index_t d = 0; d < draws; ++d) {
      if (d > 0) v = rho * v + normal(gen);
      x[c * draws + d] = v;
    }
  }
  return x;
}

// Standard deviation of split R-hat around 1 for chains with integrated autocorrelation time τ:
// R² = (B/W + n - 1) / n with B/W ~ τ χ²_{m-1} / (m - 1) about τ, so R - 1 ≈ (B/W - 1) / (2n) has
// sd ≈ τ sqrt(2 / (m - 1)) / (2n) (m halves of n draws). Checked empirically with ArviZ over 20
// seeds: 1.9e-4 (iid, 8 x 2000) and 3.7e-4 (ρ = 0.9, 8 x 20000) against 1.8e-4 and 3.5e-4 here.
double rhat_sd(index_t chains, index_t draws, double tau) {
  const double m = 2.0 * static_cast<double>(chains), n = static_cast<double>(draws / 2);
  return tau * std::sqrt(2.0 / (m - 1.0)) / (2.0 * n);
}

// Relative sd of an ESS estimate, from the variance of a windowed autocorrelation time estimate
// (Madras & Sokal 1988): var(τ̂) / τ² ≈ 2 (2K + 1) / N for a window of K lags. Geyer's sequence stops
// near the lag where ρ^K falls to the noise level 2 / sqrt(N); K >= 3 for short correlations.
// Empirically (ArviZ, 20 seeds) 1.9% (iid, N = 16000), 2.9% (ρ = 0.5, N = 40000) and 3.0%
// (ρ = 0.9, N = 160000), against 3.0%, 2.7% and 3.6% here.
double ess_rel_sd(index_t chains, index_t draws, double rho) {
  const double n = static_cast<double>(chains * draws);
  const double k = rho > 0 ? std::max(3.0, std::log(2.0 / std::sqrt(n)) / std::log(rho)) : 3.0;
  return std::sqrt(2.0 * (2.0 * k + 1.0) / n);
}

TEST(ChainStats, IidChainsAgree) {
  const index_t chains = 8, draws = 2000;
  const auto x = ar1_chains(chains, draws, 0.0, 11);
  const double rhat = stats::split_rhat(x.data(), chains, draws);
  EXPECT_LT(std::abs(rhat - 1.0), 5 * rhat_sd(chains, draws, 1.0)) << rhat;  // ~9e-4
  const double n = static_cast<double>(chains * draws), tol = 4 * ess_rel_sd(chains, draws, 0.0);
  EXPECT_LT(std::abs(stats::bulk_ess(x.data(), chains, draws) / n - 1.0), tol);
  EXPECT_LT(std::abs(stats::basic_ess(x.data(), chains, draws) / n - 1.0), tol);
}

TEST(ChainStats, Ar1EssIsNTimesOneMinusRhoOverOnePlusRho) {
  // τ = Σ_t ρ^|t| = (1 + ρ) / (1 - ρ), so ESS = N (1 - ρ) / (1 + ρ).
  struct Case { double rho; index_t chains, draws; unsigned seed; };
  for (const Case& c : {Case{0.5, 8, 5000, 21}, Case{0.9, 8, 20000, 22}}) {
    SCOPED_TRACE(c.rho);
    const auto x = ar1_chains(c.chains, c.draws, c.rho, c.seed);
    const double expected = static_cast<double>(c.chains * c.draws) * (1 - c.rho) / (1 + c.rho);
    const double tol = 4 * ess_rel_sd(c.chains, c.draws, c.rho);
    const double bulk = stats::bulk_ess(x.data(), c.chains, c.draws);
    const double basic = stats::basic_ess(x.data(), c.chains, c.draws);
    EXPECT_LT(std::abs(basic / expected - 1.0), tol) << basic << " vs " << expected;
    // Rank normalisation of a Gaussian process keeps its correlations to O(1/N): the same target.
    EXPECT_LT(std::abs(bulk / expected - 1.0), tol) << bulk << " vs " << expected;
    const double tau = (1 + c.rho) / (1 - c.rho);
    const double rhat = stats::split_rhat(x.data(), c.chains, c.draws);
    EXPECT_LT(std::abs(rhat - 1.0), 5 * rhat_sd(c.chains, c.draws, tau)) << rhat;
  }
}

TEST(ChainStats, SeparatedChainsGiveLargeRhat) {
  // Chain 0 of 4 shifted by s standard deviations. Once it no longer overlaps the others, it holds
  // exactly the top quarter of the ranks, and the rank-normalised halves are truncated normals:
  // with b = Φ⁻¹(3/4), the 2 top halves have mean μ1 = φ(b)/(1/4) and variance
  // v1 = 1 + b μ1 - μ1², the 6 others μ0 = -φ(b)/(3/4), v0 = 1 - b φ(b)/(3/4) - μ0², so
  // B / W -> n var(means) / W and R-hat -> sqrt(1 + var(means) / W) ≈ 1.528 (n -> inf), far above
  // 1.1 however long the chains run.
  const double b = stats::normal_quantile(0.75), phi = std::exp(-0.5 * b * b) / std::sqrt(2 * std::numbers::pi);
  const double mu1 = phi / 0.25, mu0 = -phi / 0.75;
  const double v1 = 1 + b * mu1 - mu1 * mu1, v0 = 1 - b * phi / 0.75 - mu0 * mu0;
  const double within = (2 * v1 + 6 * v0) / 8, between = (2 * mu1 * mu1 + 6 * mu0 * mu0) / 7;  // mean(means) = 0
  const double limit = std::sqrt(1 + between / within);
  const index_t chains = 4, draws = 1000;
  double previous = 1.0;
  for (double shift : {1.0, 2.0, 4.0, 8.0}) {
    auto x = ar1_chains(chains, draws, 0.0, 31);
    for (index_t d = 0; d < draws; ++d) x[d] += shift;
    const double rhat = stats::split_rhat(x.data(), chains, draws);
    EXPECT_GT(rhat, previous) << "R-hat must grow with the separation; shift " << shift;
    previous = rhat;
    if (shift >= 2) {
      EXPECT_GT(rhat, 1.2) << "shift " << shift;
      // Few effective draws: the chains do not cover one distribution.
      EXPECT_LT(stats::bulk_ess(x.data(), chains, draws), 0.2 * chains * draws) << "shift " << shift;
    }
  }
  // Sampling noise of the 8 half means (sd ~ 0.03 each) moves the ratio by ~1%.
  EXPECT_NEAR(previous, limit, 0.03) << "limit " << limit;
  // A chain stuck in a trend (every half has a different mean) as well.
  std::vector<double> trend(static_cast<std::size_t>(chains * draws));
  for (index_t c = 0; c < chains; ++c)
    for (index_t d = 0; d < draws; ++d) trend[c * draws + d] = 0.01 * static_cast<double>(d) + std::sin(0.7 * d + c);
  EXPECT_GT(stats::split_rhat(trend.data(), chains, draws), 1.5);
}

TEST(ChainStats, InvariantUnderMonotoneMaps) {
  const index_t chains = 3, draws = 301;
  const auto x = ar1_chains(chains, draws, 0.6, 41);
  std::vector<double> e(x.size()), neg(x.size()), affine(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    e[i] = std::exp(x[i]);
    neg[i] = -x[i];
    affine[i] = 2.5 * x[i] + 7.0;
  }
  // Ranks are all the rank-normalised statistics see, and Blom scores are exactly antisymmetric.
  const double bulk = stats::bulk_ess(x.data(), chains, draws);
  EXPECT_EQ(stats::bulk_ess(e.data(), chains, draws), bulk);
  EXPECT_EQ(stats::bulk_ess(neg.data(), chains, draws), bulk);
  // The folded half of R-hat sees |x - median|, which affine maps preserve up to rounding.
  const double rhat = stats::split_rhat(x.data(), chains, draws);
  EXPECT_NEAR(stats::split_rhat(affine.data(), chains, draws), rhat, 1e-12);
  EXPECT_NEAR(stats::split_rhat(neg.data(), chains, draws), rhat, 1e-12);
  EXPECT_NEAR(stats::basic_ess(affine.data(), chains, draws), stats::basic_ess(x.data(), chains, draws), 1e-9);
  // Reordering chains changes nothing but summation order.
  std::vector<double> swapped(x.size());
  for (index_t c = 0; c < chains; ++c)
    std::copy(x.begin() + c * draws, x.begin() + (c + 1) * draws, swapped.begin() + (chains - 1 - c) * draws);
  EXPECT_NEAR(stats::split_rhat(swapped.data(), chains, draws), rhat, 1e-12);
  EXPECT_NEAR(stats::bulk_ess(swapped.data(), chains, draws), bulk, 1e-9 * bulk);
}

TEST(ChainStats, ConstantAndStuckTraces) {
  const std::vector<double> flat(5 * 8, 1.25);
  EXPECT_TRUE(std::isnan(stats::split_rhat(flat.data(), 5, 8)));
  EXPECT_EQ(stats::bulk_ess(flat.data(), 5, 8), 40.0);
  EXPECT_EQ(stats::basic_ess(flat.data(), 5, 8), 40.0);
  // Odd draws: the middle draw is not used, so a trace constant elsewhere counts as constant.
  std::vector<double> odd(2 * 9, 3.0);
  odd[4] = 100.0;
  odd[9 + 4] = -1.0;
  EXPECT_TRUE(std::isnan(stats::split_rhat(odd.data(), 2, 9)));
  EXPECT_EQ(stats::bulk_ess(odd.data(), 2, 9), 16.0);
  // Two chains, each constant, at different values: no mixing at all.
  std::vector<double> stuck(2 * 6, 0.0);
  std::fill(stuck.begin() + 6, stuck.end(), 1.0);
  EXPECT_EQ(stats::split_rhat(stuck.data(), 2, 6), kInf);
}

TEST(ChainStats, RejectsBadInput) {
  const std::vector<double> x(12, 0.5);
  for (auto* f : {&stats::split_rhat, &stats::bulk_ess, &stats::basic_ess}) {
    test::expect_error<InvalidArgument>([&] { f(x.data(), 0, 12); }, {"chains must be >= 1", "got 0"});
    test::expect_error<InvalidArgument>([&] { f(x.data(), 4, 3); }, {"draws must be >= 4", "got 3"});
    test::expect_error<InvalidArgument>([&] { f(nullptr, 2, 6); }, {"trace is null"});
    std::vector<double> bad = x;
    bad[1 * 6 + 2] = kNaN;
    test::expect_error<InvalidArgument>([&] { f(bad.data(), 2, 6); }, {"non-finite", "chain 1, draw 2", "diverge"});
    bad[1 * 6 + 2] = -kInf;
    test::expect_error<InvalidArgument>([&] { f(bad.data(), 2, 6); }, {"non-finite", "chain 1, draw 2"});
  }
  test::expect_error<InvalidArgument>([&] { stats::split_rhat(x.data(), -1, 12); }, {"split_rhat", "chains"});
  test::expect_error<InvalidArgument>([&] { stats::bulk_ess(x.data(), 1, 2); }, {"bulk_ess", "draws"});
}

}  // namespace
}  // namespace dynascope
