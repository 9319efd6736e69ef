// Closed-form learning coefficients (dynascope/llc_theory.hpp), checked against hand computations,
// against each other (Aoyagi's deep-linear theorem contains Aoyagi-Watanabe's reduced-rank one),
// against an independent floating-point re-implementation that enumerates every index set of the
// theorem, and, for the quadratic loss, against the stationary AR(1) variance and a simulated SGLD.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "dynascope/error.hpp"
#include "dynascope/llc_theory.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using sgld::theory::deep_linear_llc;
using sgld::theory::quadratic_llc_expectation;
using sgld::theory::reduced_rank_llc;

TEST(LlcTheory, ReducedRankHandValues) {
  // M + H < N + r: 2 + 1 < 5 + 1, (HM - Hr + Nr) / 2 = (2 - 1 + 5) / 2 = 3.
  EXPECT_EQ(reduced_rank_llc(2, 1, 5, 1), 3.0);
  // N + H < M + r (the transpose): (HN - Hr + Mr) / 2 = (2 - 1 + 5) / 2 = 3.
  EXPECT_EQ(reduced_rank_llc(5, 1, 2, 1), 3.0);
  // M + N < H + r: 2 + 3 < 6 + 1, MN / 2 = 3: a wide hidden layer is as good as a 2 x 3 matrix.
  EXPECT_EQ(reduced_rank_llc(2, 6, 3, 1), 3.0);
  // Otherwise, M + H + N + r = 10 even: [2·4·6 - 0 - 16] / 8 = 32 / 8 = 4.
  EXPECT_EQ(reduced_rank_llc(3, 3, 3, 1), 4.0);
  // Otherwise, M + H + N + r = 9 odd: [2·3·6 - 0 - 9 + 1] / 8 = 28 / 8 = 3.5.
  EXPECT_EQ(reduced_rank_llc(3, 2, 3, 1), 3.5);
  // r = 0, M = H = N = 2 (the zero map): [2·2·4 - 0 - 4] / 8 = 12 / 8 = 1.5, far below d/2 = 4.
  EXPECT_EQ(reduced_rank_llc(2, 2, 2, 0), 1.5);
  // A bottleneck as narrow as the true rank, M = 4, H = r = 2, N = 3: N + H = 5 < M + r = 6, so
  // (HN - Hr + Mr) / 2 = (6 - 4 + 8) / 2 = 5 = r (M + N - r) / 2, half the dimension of the rank-2
  // 3 x 4 matrices.
  EXPECT_EQ(reduced_rank_llc(4, 2, 3, 2), 5.0);
}

// Which of Aoyagi-Watanabe's cases (M, H, N, r) falls in: 0, 1, 2, 3 (even), 4 (odd).
int rrr_branch(index_t M, index_t H, index_t N, index_t r) {
  if (M + H < N + r) return 0;
  if (N + H < M + r) return 1;
  if (M + N < H + r) return 2;
  return (M + H + N + r) % 2 == 0 ? 3 : 4;
}

TEST(LlcTheory, DeepLinearWithOneHiddenLayerIsReducedRank) {
  int hits[5] = {0, 0, 0, 0, 0};
  for (index_t M = 1; M <= 9; ++M)
    for (index_t H = 1; H <= 9; ++H)
      for (index_t N = 1; N <= 9; ++N)
        for (index_t r = 0; r <= std::min({M, H, N}); ++r) {
          ++hits[rrr_branch(M, H, N, r)];
          const double rrr = reduced_rank_llc(M, H, N, r);
          ASSERT_EQ(deep_linear_llc({M, H, N}, r), rrr) << M << " " << H << " " << N << " r = " << r;
          // Transposing the regression (y = B A x  <->  x = Aᵀ Bᵀ y) changes nothing.
          ASSERT_EQ(reduced_rank_llc(N, H, M, r), rrr);
          // Never above the regular value d/2, d = H (M + N).
          ASSERT_LE(rrr, 0.5 * static_cast<double>(H * (M + N)));
        }
  for (int b = 0; b < 5; ++b) EXPECT_GT(hits[b], 20) << "branch " << b << " barely exercised";
}

TEST(LlcTheory, DeepLinearHandValues) {
  // widths 5-3-4-2, r = 1: Δ = H - r = (4, 2, 3, 1), sorted 1, 2, 3, 4.
  //   Σ = {1, 2}: ℓ = 1, S = 3; max 2 < 3 and 3 >= 1·2, but 3 < 1·3 fails.
  //   Σ = {1, 2, 3}: ℓ = 2, S = 6; 3 < 4, 6 >= 2·3, 6 < 2·4: chosen.
  //   M = ceil(6/2) = 3, a = 6 - 2·2 = 2, a(ℓ - a) = 0; pairs 1·2 + 1·3 + 2·3 = 11.
  //   λ = (-1 + 1·(5 + 2))/2 + 0 - (2·1/4)(6/2)² + 11/2 = 3 - 4.5 + 5.5 = 4.
  EXPECT_EQ(deep_linear_llc({5, 3, 4, 2}, 1), 4.0);
  // widths 2-2-2-2, r = 0: Δ = (2, 2, 2, 2); no proper prefix has a gap, so Σ = all, ℓ = 3, S = 8
  //   (8 >= 3·2). M = ceil(8/3) = 3, a = 8 - 2·3 = 2, a(ℓ - a)/(4ℓ) = 2/12 = 1/6;
  //   -(3·2/4)(8/3)² = -32/3; pairs 6·4 = 24, half 12; λ = 0 + 1/6 - 32/3 + 12 = 3/2.
  EXPECT_DOUBLE_EQ(deep_linear_llc({2, 2, 2, 2}, 0), 1.5);
  // widths 4-6-5-7-3, r = 1: Δ = (3, 5, 4, 6, 2), sorted 2, 3, 4, 5, 6.
  //   {2, 3}: S = 5 < 1·4 fails.  {2, 3, 4}: ℓ = 2, S = 9; 4 < 5, 9 >= 8, 9 < 10: chosen.
  //   M = 5, a = 9 - 4·2 = 1, a(ℓ - a)/(4ℓ) = 1/8; -(2·1/4)(9/2)² = -81/8; pairs 6 + 8 + 12 = 26.
  //   λ = (-1 + 7)/2 + 1/8 - 81/8 + 13 = 3 - 10 + 13 = 6 (d/2 = 55).
  EXPECT_EQ(deep_linear_llc({4, 6, 5, 7, 3}, 1), 6.0);
  // widths 3-10-2-8, r = 2: Δ = (1, 8, 0, 6), sorted 0, 1, 6, 8; {0, 1}: ℓ = 1, S = 1; 1 < 6,
  //   1 >= 1, 1 < 6: chosen. λ = (-4 + 2·11)/2 + 0 - 0 + ½·0·1 = 9 = r (H_0 + H_L - r) / 2: the
  //   bottleneck of width r makes the model the smooth manifold of rank-2 8 x 3 matrices.
  EXPECT_EQ(deep_linear_llc({3, 10, 2, 8}, 2), 9.0);
}

TEST(LlcTheory, DeepLinearRegularCases) {
  for (index_t a = 1; a <= 12; ++a)
    for (index_t b = 1; b <= 12; ++b)
      for (index_t r = 0; r <= std::min(a, b); ++r)  // one layer: linear regression, λ = d/2
        ASSERT_EQ(deep_linear_llc({a, b}, r), 0.5 * static_cast<double>(a * b)) << a << " " << b;
  // r equal to the narrowest width (> 0): near w* the product map is a submersion onto the smooth
  // manifold of rank-r H_L x H_0 matrices, of dimension r (H_0 + H_L - r), and λ is half that.
  std::mt19937_64 gen(3);
  for (int trial = 0; trial < 500; ++trial) {
    const index_t layers = 2 + static_cast<index_t>(gen() % 5);
    std::vector<index_t> w(static_cast<std::size_t>(layers + 1));
    for (auto& v : w) v = 1 + static_cast<index_t>(gen() % 9);
    const index_t r = *std::min_element(w.begin(), w.end());
    ASSERT_EQ(deep_linear_llc(w, r), 0.5 * static_cast<double>(r * (w.front() + w.back() - r)));
  }
}

// Aoyagi's theorem implemented again, independently: every subset Σ of layer indices is tried, in
// floating point with ceil, exactly as the theorem states it; returns λ of every Σ meeting the three
// conditions.
std::vector<double> theorem_by_enumeration(const std::vector<index_t>& w, index_t r) {
  const std::size_t n = w.size();
  std::vector<double> values;
  for (unsigned mask = 1; mask < (1u << n); ++mask) {
    std::vector<double> in, out;
    for (std::size_t k = 0; k < n; ++k) ((mask >> k) & 1 ? in : out).push_back(static_cast<double>(w[k] - r));
    const double ell = static_cast<double>(in.size()) - 1;
    if (ell < 1) continue;  // ℓ = 0 would need Σ Δ < 0
    double sum = 0, pairs = 0;
    for (std::size_t i = 0; i < in.size(); ++i) {
      sum += in[i];
      for (std::size_t j = i + 1; j < in.size(); ++j) pairs += in[i] * in[j];
    }
    const double max_in = *std::max_element(in.begin(), in.end());
    const double min_out = out.empty() ? HUGE_VAL : *std::min_element(out.begin(), out.end());
    if (!(max_in < min_out && sum >= ell * max_in && sum < ell * min_out)) continue;
    const double M = std::ceil(sum / ell), a = sum - (M - 1) * ell, rd = static_cast<double>(r);
    values.push_back((-rd * rd + rd * static_cast<double>(w.front() + w.back())) / 2 + a * (ell - a) / (4 * ell) -
                     ell * (ell - 1) / 4 * (sum / ell) * (sum / ell) + pairs / 2);
  }
  return values;
}

TEST(LlcTheory, DeepLinearMatchesEveryIndexSetOfTheTheorem) {
  std::mt19937_64 gen(5);
  for (int trial = 0; trial < 3000; ++trial) {
    const index_t layers = 1 + static_cast<index_t>(gen() % 7);
    std::vector<index_t> w(static_cast<std::size_t>(layers + 1));
    for (auto& v : w) v = 1 + static_cast<index_t>(gen() % 8);
    const index_t r = static_cast<index_t>(gen() % static_cast<std::uint64_t>(*std::min_element(w.begin(), w.end()) + 1));
    const double lambda = deep_linear_llc(w, r);
    const std::vector<double> all = theorem_by_enumeration(w, r);
    ASSERT_FALSE(all.empty()) << "the theorem promises an index set";
    for (double v : all) ASSERT_NEAR(v, lambda, 1e-9 * std::max(1.0, lambda));
    // Symmetries of the statement: reversing the network (transposing every layer) and permuting
    // the hidden widths leave λ alone; λ never exceeds the regular d/2.
    std::vector<index_t> rev(w.rbegin(), w.rend());
    ASSERT_EQ(deep_linear_llc(rev, r), lambda);
    if (w.size() > 3) {
      std::vector<index_t> perm = w;
      std::shuffle(perm.begin() + 1, perm.end() - 1, gen);
      ASSERT_EQ(deep_linear_llc(perm, r), lambda);
    }
    index_t d = 0;
    for (std::size_t k = 0; k + 1 < w.size(); ++k) d += w[k] * w[k + 1];
    ASSERT_LE(lambda, 0.5 * static_cast<double>(d));
    ASSERT_GT(lambda, 0.0);
  }
}

TEST(LlcTheory, DeepLinearRejectsBadInput) {
  test::expect_error<InvalidArgument>([] { deep_linear_llc({4}, 1); }, {"deep_linear_llc", "widths", "at least"});
  test::expect_error<InvalidArgument>([] { deep_linear_llc({4, 0, 3}, 0); }, {"widths[1]", "got 0"});
  test::expect_error<InvalidArgument>([] { deep_linear_llc({4, 2, 3}, 3); }, {"true rank r", "[0, 2]", "got 3"});
  test::expect_error<InvalidArgument>([] { deep_linear_llc({4, 2, 3}, -1); }, {"true rank r", "got -1"});
  test::expect_error<InvalidArgument>([] { deep_linear_llc({4, index_t{1} << 30}, 0); }, {"widths[1]", "2^24"});
  test::expect_error<InvalidArgument>([] { reduced_rank_llc(0, 2, 3, 0); }, {"reduced_rank_llc", "M (input width)", "got 0"});
  test::expect_error<InvalidArgument>([] { reduced_rank_llc(2, -1, 3, 0); }, {"H (hidden width)"});
  test::expect_error<InvalidArgument>([] { reduced_rank_llc(2, 2, 0, 0); }, {"N (output width)"});
  test::expect_error<InvalidArgument>([] { reduced_rank_llc(4, 2, 3, 3); }, {"true rank r", "[0, 2]", "got 3"});
}

// E[nβ L] from the stationary variance of each coordinate's AR(1) x <- c x + √ε ξ,
// c = 1 - ε a / 2: v = ε Σ_k c^{2k}, summed term by term until the terms stop mattering.
double expectation_by_series(const std::vector<double>& h, double nbeta, double gamma, double eps) {
  double total = 0;
  for (double hi : h) {
    const double a = nbeta * hi + gamma, c2 = (1 - eps * a / 2) * (1 - eps * a / 2);
    double v = 0, term = eps;
    for (long k = 0; k < 100000000 && term > 1e-18 * v; ++k, term *= c2) v += term;
    total += 0.5 * nbeta * hi * v;
  }
  return total;
}

TEST(LlcTheory, QuadraticMatchesStationaryAr1Variance) {
  const std::vector<double> h = {1.0, 0.3, 2.5, 0.05, 7.0};
  struct Case { double nbeta, gamma, eps; };
  for (const Case& c : {Case{10, 1, 1e-2}, Case{100, 100, 1e-3}, Case{50, 0, 5e-3}, Case{1000, 10, 5e-4}}) {
    const double closed = quadratic_llc_expectation(h, c.nbeta, c.gamma, c.eps);
    const double series = expectation_by_series(h, c.nbeta, c.gamma, c.eps);
    EXPECT_NEAR(closed, series, 1e-12 * series) << "nbeta " << c.nbeta << " gamma " << c.gamma << " eps " << c.eps;
    // ε > 0 inflates the stationary variance above the diffusion's 1/a: the estimate is biased up.
    EXPECT_GT(closed, quadratic_llc_expectation(h, c.nbeta, c.gamma, 0.0));
  }
}

TEST(LlcTheory, QuadraticMatchesSimulatedSgld) {
  // The SGLD step of sgld.hpp on L = ½ Σ h_i (w_i - w*_i)², full batch, w* = 0:
  //   w <- w - (ε/2)(nβ h w + γ w) + √ε ξ, and λ̂ = nβ mean_t L(w_t).
  const std::vector<double> h = {1.0, 0.2, 4.0};
  const double nbeta = 20, gamma = 5, eps = 0.02;
  const double expected = quadratic_llc_expectation(h, nbeta, gamma, eps);
  std::mt19937_64 gen(17);
  std::normal_distribution<double> normal;
  const long burn = 2000, steps = 400000;
  std::vector<double> w(h.size(), 0.0);
  double sum = 0;
  for (long t = 0; t < burn + steps; ++t) {
    if (t >= burn) {
      double loss = 0;
      for (std::size_t i = 0; i < h.size(); ++i) loss += 0.5 * h[i] * w[i] * w[i];
      sum += nbeta * loss;
    }
    for (std::size_t i = 0; i < h.size(); ++i)
      w[i] += -0.5 * eps * (nbeta * h[i] + gamma) * w[i] + std::sqrt(eps) * normal(gen);
  }
  const double estimate = sum / static_cast<double>(steps);
  // Sampling sd of the time average: coordinate i contributes nβ h_i x²/2 with Var = 2 (nβ h_i v_i / 2)²
  // and integrated autocorrelation time (1 + c_i²) / (1 - c_i²) (x² of a Gaussian AR(1) has
  // correlation c^{2t}); independent coordinates add.
  double var = 0;
  for (double hi : h) {
    const double a = nbeta * hi + gamma, c2 = (1 - eps * a / 2) * (1 - eps * a / 2);
    const double mean_i = 0.5 * nbeta * hi * eps / (1 - c2);
    var += 2 * mean_i * mean_i * (1 + c2) / (1 - c2) / static_cast<double>(steps);
  }
  EXPECT_NEAR(estimate, expected, 5 * std::sqrt(var)) << "sd " << std::sqrt(var);
}

TEST(LlcTheory, QuadraticLimitIsHalfTheDimension) {
  const std::vector<double> h = {1.0, 0.3, 2.5, 0.0, 7.0};  // one flat direction: d = 4
  EXPECT_EQ(quadratic_llc_expectation(h, 100, 0, 0), 2.0);
  // Approaching the limit: the correction is O(γ / (nβ h_min) + ε nβ h_max / 4).
  const double near = quadratic_llc_expectation(h, 100, 1e-6, 1e-9);
  EXPECT_NEAR(near, 2.0, 1e-6);
  EXPECT_GT(quadratic_llc_expectation(h, 100, 0, 1e-9), 2.0);  // ε alone biases up
  EXPECT_LT(quadratic_llc_expectation(h, 100, 1e-3, 0), 2.0);  // γ alone biases down
  // Strong localisation γ >> nβ h shrinks the estimate to ~ nβ Σ h_i / (2γ).
  EXPECT_NEAR(quadratic_llc_expectation({1.0, 2.0}, 1, 1e6, 0), 3.0 / 2e6, 1e-11);
}

TEST(LlcTheory, QuadraticRejectsBadInput) {
  const std::vector<double> h = {1.0, 2.0};
  // Coordinate 1: a = 10·2 + 1 = 21, stable only for ε < 4/21 = 0.190476.
  test::expect_error<InvalidArgument>([&] { quadratic_llc_expectation(h, 10, 1, 0.2); },
                                      {"epsilon", "unstable", "coordinate 1", "0.190476"});
  EXPECT_NO_THROW(quadratic_llc_expectation(h, 10, 1, 0.19));
  // Even a coordinate the loss does not see diverges when ε γ >= 4.
  test::expect_error<InvalidArgument>([] { quadratic_llc_expectation({0.0}, 1, 100, 0.05); }, {"coordinate 0"});
  test::expect_error<InvalidArgument>([] { quadratic_llc_expectation({}, 1, 1, 0.1); }, {"h", "empty"});
  test::expect_error<InvalidArgument>([] { quadratic_llc_expectation({1.0, 2.0, -0.5}, 1, 1, 0.1); }, {"h[2]", ">= 0"});
  test::expect_error<InvalidArgument>([] { quadratic_llc_expectation({1.0, NAN}, 1, 1, 0.1); }, {"h[1]"});
  test::expect_error<InvalidArgument>([&] { quadratic_llc_expectation(h, 0, 1, 0.1); }, {"nbeta", "> 0"});
  test::expect_error<InvalidArgument>([&] { quadratic_llc_expectation(h, 1, -1, 0.1); }, {"gamma", ">= 0"});
  test::expect_error<InvalidArgument>([&] { quadratic_llc_expectation(h, 1, 1, -0.1); }, {"epsilon", ">= 0"});
  test::expect_error<InvalidArgument>([&] { quadratic_llc_expectation(h, 1, INFINITY, 0.1); }, {"gamma"});
}

}  // namespace
}  // namespace dynascope
