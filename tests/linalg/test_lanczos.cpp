// Thick-restart Lanczos against the dense solver on matrices built to be hard.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "dynascope/linalg.hpp"
#include "linalg/spectra_test_util.hpp"

namespace dynascope {
namespace {

using linalg::EigenMethod;
using linalg::Which;

struct Spectrum {
  std::string name;
  std::vector<double> lambda;
};

std::vector<double> sorted_wanted(std::vector<double> l, Which w, index_t k) {
  std::stable_sort(l.begin(), l.end(), [&](double a, double b) {
    if (w == Which::largest) return a > b;
    if (w == Which::smallest) return a < b;
    return std::abs(a) > std::abs(b);
  });
  l.resize(static_cast<std::size_t>(k));
  return l;
}

std::vector<Spectrum> hard_spectra(index_t n) {
  std::vector<Spectrum> out;
  std::vector<double> clustered(static_cast<std::size_t>(n)), mult(static_cast<std::size_t>(n)), rankdef(std::size_t(n), 0.0), indef(static_cast<std::size_t>(n)),
      wide(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const double t = double(i) / double(n);
    clustered[std::size_t(i)] = i < 6 ? 10.0 + 1e-6 * double(i) : t;  // six top eigenvalues within 1e-5
    mult[std::size_t(i)] = i < 3 ? 5.0 : (i < 5 ? 4.0 : t);           // exact multiplicities 3 and 2
    if (i < 8) rankdef[std::size_t(i)] = 1.0 + double(i);                 // rank 8, the rest exactly zero
    indef[std::size_t(i)] = (i % 2 ? -1.0 : 1.0) * (1.0 + 3.0 * t);
    wide[std::size_t(i)] = std::pow(10.0, -8.0 + 12.0 * t);              // 1e-8 .. 1e4
  }
  out.push_back({"clustered", clustered});
  out.push_back({"multiplicities", mult});
  out.push_back({"rank_deficient", rankdef});
  out.push_back({"indefinite", indef});
  out.push_back({"wide_range", wide});
  return out;
}

// ||A u_i - lambda_i u_i|| by a naive float64 loop, independent of the solver.
double naive_residual(const std::vector<double>& a, index_t n, const linalg::EigenResult<double>& r, index_t i) {
  double res = 0;
  for (index_t p = 0; p < n; ++p) {
    double s = -r.values[std::size_t(i)] * r.vectors.data()[i * n + p];
    for (index_t q = 0; q < n; ++q) s += a[std::size_t(p * n + q)] * r.vectors.data()[i * n + q];
    res += s * s;
  }
  return std::sqrt(res);
}

void check_result(const linalg::EigenResult<double>& r, const std::vector<double>& a, index_t n, const std::vector<double>& want,
                  double tol, const std::string& what) {
  double norm = 0;
  for (double w : want) norm = std::max(norm, std::abs(w));
  const index_t k = static_cast<index_t>(want.size());
  ASSERT_EQ(static_cast<index_t>(r.values.size()), k) << what;
  EXPECT_TRUE(r.all_converged) << what;
  double anorm = 0;
  for (double v : a) anorm = std::max(anorm, std::abs(v));
  for (index_t i = 0; i < k; ++i) {
    EXPECT_NEAR(r.values[std::size_t(i)], want[std::size_t(i)], 10 * tol * std::max(1.0, norm)) << what << " value " << i;
    const double res = naive_residual(a, n, r, i);
    EXPECT_LE(res, 10 * tol * std::max(1.0, norm)) << what << " residual " << i;
    EXPECT_NEAR(res, r.residuals[std::size_t(i)], 1e-12 * std::max(1.0, norm)) << what;
  }
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < k; ++j) {
      double d = 0;
      for (index_t p = 0; p < n; ++p) d += r.vectors.data()[i * n + p] * r.vectors.data()[j * n + p];
      EXPECT_NEAR(d, i == j ? 1.0 : 0.0, 1e-10) << what << " orthogonality " << i << "," << j;
    }
}

class LanczosHard : public ::testing::TestWithParam<index_t> {};

TEST_P(LanczosHard, MatchesDenseSolverOnHardSpectra) {
  const index_t n = GetParam();
  Context ctx = Context::host();
  for (const auto& sp : hard_spectra(n)) {
    const auto a = test::with_spectrum(sp.lambda, 7);
    linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
    for (Which which : {Which::largest, Which::smallest, Which::magnitude}) {
      linalg::LanczosOptions o;
      o.k = std::min<index_t>(6, n - 4);
      o.which = which;
      o.tol = 1e-10;
      o.method = EigenMethod::lanczos;
      // Multiplicities need a block at least as wide as the multiplicity.
      o.block = sp.name == "multiplicities" ? 3 : 1;
      // The bottom of these spectra is densely packed (gaps ~1e-4 ||A||): a wider basis.
      if (which == Which::smallest) o.subspace = 60;
      if (sp.name == "rank_deficient" && which == Which::smallest) continue;  // a zero eigenspace of dimension n - 8
      if (sp.name == "wide_range" && which == Which::smallest) {
        // 1e-8 at the bottom of ||A|| = 1e4 is below what Lanczos on A resolves at tol 1e-10 (it
        // would need shift-invert): the solver must say so rather than return a wrong answer.
        o.max_restarts = 20;
        const auto r = linalg::eigsh<double>(op, o);
        if (r.method == linalg::EigenMethod::lanczos) {
          EXPECT_FALSE(r.all_converged) << n;
        }
        continue;
      }
      const auto r = linalg::eigsh<double>(op, o);
      const std::string what = sp.name + " " + linalg::to_string(which) + " n=" + std::to_string(n) + " (" + linalg::to_string(r.method) + ")";
      check_result(r, a, n, sorted_wanted(sp.lambda, which, o.k), o.tol, what);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, LanczosHard, ::testing::Values(10, 60, 300, 1500));

TEST(Lanczos, KCloseToNAndTheDensePathAgree) {
  const index_t n = 50;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = std::sin(double(i)) * 3;
  const auto a = test::with_spectrum(l, 3);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = n - 8;
  o.tol = 1e-10;
  o.method = EigenMethod::lanczos;
  o.subspace = n - 4;
  const auto r = linalg::eigsh<double>(op, o);
  check_result(r, a, n, sorted_wanted(l, Which::largest, o.k), o.tol, "k close to n");
  EXPECT_TRUE(r.multiplicity_checked);  // the 8-dimensional complement, solved exactly
  o.method = EigenMethod::dense;
  const auto d = linalg::eigsh<double>(op, o);
  EXPECT_EQ(d.method, linalg::EigenMethod::dense);
  check_result(d, a, n, sorted_wanted(l, Which::largest, o.k), 1e-12, "dense");
  o.k = n;
  o.method = EigenMethod::automatic;
  EXPECT_EQ(linalg::eigsh<double>(op, o).values.size(), std::size_t(n));
}

TEST(Lanczos, WarmStartConvergesInFewerApplications) {
  const index_t n = 800;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = 1.0 / (1.0 + 0.05 * double(i));  // slowly decaying: a hard top-10
  const auto a = test::with_spectrum(l, 4);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 10;
  o.tol = 1e-9;
  o.method = EigenMethod::lanczos;
  const auto cold = linalg::eigsh<double>(op, o);
  ASSERT_TRUE(cold.all_converged);
  // Perturb the matrix slightly (the next checkpoint) and warm-start from the previous vectors.
  std::vector<double> l2 = l;
  for (auto& v : l2) v *= 1.01;
  const auto a2 = test::with_spectrum(l2, 4);
  linalg::DenseOperator<double> op2(ctx, {a2.data(), n, n, n});
  const auto cold2 = linalg::eigsh<double>(op2, o);
  const auto warm2 = linalg::eigsh<double>(op2, o, MatrixView<const double>(cold.vectors.matrix()));
  EXPECT_TRUE(warm2.all_converged);
  EXPECT_LT(warm2.matvecs, cold2.matvecs);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(warm2.values[std::size_t(i)], l2[std::size_t(i)], 1e-8);
}

TEST(Lanczos, BlockVariantFindsTheSamePairs) {
  const index_t n = 400;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = std::exp(-0.02 * double(i));
  const auto a = test::with_spectrum(l, 5);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 8;
  o.tol = 1e-10;
  o.method = EigenMethod::lanczos;
  for (index_t b : {1, 2, 4}) {
    o.block = b;
    const auto r = linalg::eigsh<double>(op, o);
    check_result(r, a, n, sorted_wanted(l, Which::largest, o.k), o.tol, "block " + std::to_string(b));
  }
}

TEST(Lanczos, NonConvergenceIsAResultWithHonestResiduals) {
  const index_t n = 500;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = 1.0 - 1e-4 * double(i);  // tightly packed top
  const auto a = test::with_spectrum(l, 6);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 5;
  o.tol = 1e-12;
  o.max_restarts = 0;
  o.method = EigenMethod::lanczos;
  const auto r = linalg::eigsh<double>(op, o);
  EXPECT_FALSE(r.all_converged);
  EXPECT_EQ(r.iterations, 0);
  for (index_t i = 0; i < o.k; ++i) {
    EXPECT_NEAR(r.residuals[std::size_t(i)], naive_residual(a, n, r, i), 1e-12);
    if (!r.converged[std::size_t(i)]) {
      EXPECT_GT(r.residuals[std::size_t(i)], o.tol * std::abs(r.values[std::size_t(i)]));
    }
  }
}

TEST(Lanczos, FloatVectorsReachWorkingPrecision) {
  const index_t n = 600;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = std::exp(-0.05 * double(i));
  const auto a = test::with_spectrum(l, 8);
  std::vector<float> af(a.begin(), a.end());
  Context ctx = Context::host();
  linalg::DenseOperator<float> op(ctx, {af.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 5;
  o.tol = 1e-6;
  o.method = EigenMethod::lanczos;
  const auto r = linalg::eigsh<float>(op, o);
  EXPECT_TRUE(r.all_converged);
  for (index_t i = 0; i < o.k; ++i) {
    EXPECT_NEAR(r.values[std::size_t(i)], l[std::size_t(i)], 1e-5);
    EXPECT_LT(r.residuals[std::size_t(i)], 1e-5);
  }
}

TEST(Lanczos, BadInputIsRejected) {
  Context ctx = Context::host();
  std::vector<double> a{1, 2, 3, 4, 5, 6};
  EXPECT_THROW(linalg::DenseOperator<double>(ctx, {a.data(), 2, 3, 3}), ShapeMismatch);
  std::vector<double> ns{1, 2, 3, 4};
  EXPECT_THROW(linalg::check_symmetric<double>({ns.data(), 2, 2, 2}), InvalidArgument);
  std::vector<double> nf{1, NAN, NAN, 1};
  EXPECT_THROW(linalg::check_symmetric<double>({nf.data(), 2, 2, 2}), InvalidArgument);
  std::vector<double> sym{2, 1, 1, 2};
  EXPECT_NO_THROW(linalg::check_symmetric<double>({sym.data(), 2, 2, 2}));
  linalg::DenseOperator<double> op(ctx, {sym.data(), 2, 2, 2});
  linalg::LanczosOptions o;
  o.k = 3;
  EXPECT_THROW(linalg::eigsh<double>(op, o), InvalidArgument);
  o.k = 1;
  o.tol = 0;
  EXPECT_THROW(linalg::eigsh<double>(op, o), InvalidArgument);
  EXPECT_THROW(linalg::parse_which("biggest"), InvalidArgument);
}

// eigh is eigsh's dense path for the whole spectrum: the prescribed eigenvalues in the order asked
// for, orthonormal vectors that reconstruct A, naive residuals at rounding level, and the same
// result type and statuses as eigsh.
TEST(Eigh, WholeSpectrumOfAPrescribedMatrixInTheOrderAskedFor) {
  const index_t n = 24;
  std::vector<double> lambda(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) lambda[std::size_t(i)] = (i % 3 == 0 ? -1.0 : 1.0) * (0.5 + double(i));
  lambda[5] = lambda[6] = 3.25;  // a repeated pair
  const auto a = test::with_spectrum(lambda, 11);
  Context ctx = Context::host();
  for (Which which : {Which::largest, Which::smallest, Which::magnitude}) {
    SCOPED_TRACE(linalg::to_string(which));
    const auto r = linalg::eigh<double>(ctx, {a.data(), n, n, n}, which);
    const auto want = sorted_wanted(lambda, which, n);
    ASSERT_EQ(r.values.size(), std::size_t(n));
    ASSERT_EQ(r.vectors.shape(), (Shape{n, n}));
    EXPECT_EQ(r.method, EigenMethod::dense);
    EXPECT_TRUE(r.all_converged);
    EXPECT_TRUE(r.multiplicity_checked);
    EXPECT_EQ(r.iterations, 1);
    for (index_t i = 0; i < n; ++i) {
      EXPECT_NEAR(r.values[std::size_t(i)], want[std::size_t(i)], 1e-12 * double(n));
      EXPECT_EQ(r.status[std::size_t(i)], linalg::EigenStatus::converged);
      EXPECT_LT(naive_residual(a, n, r, i), 1e-11 * double(n));
      EXPECT_NEAR(r.residuals[std::size_t(i)], naive_residual(a, n, r, i), 1e-11 * double(n));
    }
    // A = sum_i lambda_i u_i u_i^T, by a naive float64 loop.
    double worst = 0;
    for (index_t p = 0; p < n; ++p)
      for (index_t q = 0; q < n; ++q) {
        double s = 0;
        for (index_t i = 0; i < n; ++i) s += r.values[std::size_t(i)] * r.vectors.data()[i * n + p] * r.vectors.data()[i * n + q];
        worst = std::max(worst, std::abs(s - a[std::size_t(p * n + q)]));
      }
    EXPECT_LT(worst, 1e-11 * double(n));
  }
  // The same numbers as eigsh's dense path for the top k.
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 5;
  o.method = EigenMethod::dense;
  const auto top = linalg::eigsh<double>(op, o);
  const auto all = linalg::eigh<double>(ctx, {a.data(), n, n, n});
  for (index_t i = 0; i < o.k; ++i) EXPECT_EQ(top.values[std::size_t(i)], all.values[std::size_t(i)]);
  // float32 agrees with the float64 spectrum to float32 rounding of ||A||.
  std::vector<float> af(a.begin(), a.end());
  const auto rf = linalg::eigh<float>(ctx, {af.data(), n, n, n});
  for (index_t i = 0; i < n; ++i) EXPECT_NEAR(rf.values[std::size_t(i)], all.values[std::size_t(i)], 1e-5 * double(n));
}

TEST(Eigh, EmptyAndNonSquareMatrices) {
  Context ctx = Context::host();
  const auto r = linalg::eigh<double>(ctx, MatrixView<const double>{nullptr, 0, 0, 1});
  EXPECT_TRUE(r.values.empty());
  EXPECT_EQ(r.vectors.size(), 0);
  EXPECT_TRUE(r.all_converged);
  std::vector<double> rect(6, 1.0);
  EXPECT_THROW(linalg::eigh<double>(ctx, {rect.data(), 2, 3, 3}), ShapeMismatch);
}

}  // namespace
}  // namespace dynascope
