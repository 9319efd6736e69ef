// What eigsh reports about itself: no copy of a repeated eigenvalue missed (the multiplicity
// check), eigenvalues that float arithmetic cannot resolve flagged as precision-limited, and
// progress on every long phase. References: LAPACK's dense syevd in float64 and the spectra the
// matrices are built from.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>

#include "dynascope/linalg.hpp"
#include "linalg/spectra_test_util.hpp"

namespace dynascope {
namespace {

using linalg::EigenMethod;
using linalg::EigenStatus;
using linalg::Which;

double key(double x, Which w) { return w == Which::largest ? x : w == Which::smallest ? -x : std::abs(x); }

// The first k of `all` in the order of `which`.
std::vector<double> wanted(std::vector<double> all, Which w, index_t k) {
  std::stable_sort(all.begin(), all.end(), [&](double a, double b) { return key(a, w) > key(b, w); });
  all.resize(static_cast<std::size_t>(k));
  return all;
}

// Checks a Lanczos result against the dense spectrum `exact` (ascending): the k returned values are
// the k wanted eigenvalues with their multiplicities. Where the k-th and (k+1)-th wanted values tie
// (a multiple eigenvalue cut by k, or +c and -c for magnitude) any choice among the tied copies is
// right, so the check is: the returned keys equal the wanted keys in order, and the returned values
// can be matched one to one to distinct eigenvalues. Plus residuals and orthonormality by naive
// float64 loops.
void expect_wanted_set(const linalg::EigenResult<double>& r, const std::vector<double>& a, index_t n, const std::vector<double>& exact,
                       Which which, double tol, const std::string& what) {
  const index_t k = static_cast<index_t>(r.values.size());
  double anorm = 0;
  for (double l : exact) anorm = std::max(anorm, std::abs(l));
  const double slack = 10 * tol * anorm;
  const auto want = wanted(exact, which, k);
  for (index_t i = 0; i < k; ++i)
    EXPECT_NEAR(key(r.values[std::size_t(i)], which), key(want[std::size_t(i)], which), slack) << what << " value " << i;
  std::vector<bool> used(exact.size(), false);
  for (index_t i = 0; i < k; ++i) {
    bool matched = false;
    for (std::size_t e = 0; e < exact.size() && !matched; ++e)
      if (!used[e] && std::abs(exact[e] - r.values[std::size_t(i)]) <= slack) used[e] = matched = true;
    EXPECT_TRUE(matched) << what << ": value " << i << " = " << r.values[std::size_t(i)]
                         << " has no eigenvalue left to match (a copy returned more often than it occurs)";
  }
  for (index_t i = 0; i < k; ++i) {
    const double res = test::naive_residual(a, n, r.vectors.data() + i * n, r.values[std::size_t(i)]);
    EXPECT_LE(res, slack) << what << " residual " << i;
  }
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j <= i; ++j) {
      double d = 0;
      for (index_t p = 0; p < n; ++p) d += r.vectors.data()[i * n + p] * r.vectors.data()[j * n + p];
      EXPECT_NEAR(d, i == j ? 1.0 : 0.0, 1e-8) << what << " orthonormality " << i << "," << j;
    }
}

// n - mult values 2 e^{-0.01 i} below a value c = 3 of multiplicity `mult` (largest), the same
// negated (smallest), or +c and -c each `mult` times among values of alternating sign (magnitude).
std::vector<double> multiple_top(index_t n, index_t mult, Which which) {
  std::vector<double> l;
  const index_t copies = which == Which::magnitude ? 2 * mult : mult;
  for (index_t i = 0; i < copies; ++i) l.push_back(which == Which::magnitude && i % 2 ? -3.0 : 3.0);
  for (index_t i = 0; static_cast<index_t>(l.size()) < n; ++i)
    l.push_back(2.0 * std::exp(-0.01 * double(i)) * (which == Which::magnitude && i % 2 ? -1.0 : 1.0));
  if (which == Which::smallest)
    for (auto& v : l) v = -v;
  return l;
}

TEST(LanczosMultiplicity, RepeatedWantedEigenvaluesAreAllReturned) {
  // The case first: top eigenvalue of multiplicity 6, k = 8, block 1, tol 1e-10 returned
  // five (here four) copies with every pair converged.
  const index_t n = 600;
  Context ctx = Context::host();
  for (Which which : {Which::largest, Which::smallest, Which::magnitude}) {
    for (index_t mult : {6, 1, 2, 3, 10}) {
      const auto l = multiple_top(n, mult, which);
      const auto a = test::with_spectrum(l, 11 + unsigned(mult));
      const auto exact = test::dense_eigenvalues(a, n);
      linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
      for (index_t block : {1, 2}) {
        for (index_t k : {4, 8}) {
          linalg::LanczosOptions o;
          o.k = k;
          o.which = which;
          o.tol = 1e-10;
          o.block = block;
          o.method = EigenMethod::lanczos;
          const auto r = linalg::eigsh<double>(op, o);
          const std::string what = std::string(linalg::to_string(which)) + " multiplicity " + std::to_string(mult) + " block " +
                                   std::to_string(block) + " k " + std::to_string(k);
          ASSERT_EQ(r.method, EigenMethod::lanczos);
          EXPECT_TRUE(r.all_converged) << what;
          EXPECT_TRUE(r.multiplicity_checked) << what;
          EXPECT_GE(r.check_passes, 1) << what;
          expect_wanted_set(r, a, n, exact, which, o.tol, what);
        }
      }
    }
  }
}

TEST(LanczosMultiplicity, ClustersTighterThanTheToleranceCountLikeMultipleEigenvalues) {
  // Top eigenvalues 3 (1 + gap j), j < c, gap 1e-8 or 1e-10: at tol 1e-6 the cluster is a multiple
  // eigenvalue as far as the stopping test can tell, and a single start vector sees little more
  // than one direction of it (before the check, c = 10 and k = 8 returned 6 of the 8).
  const index_t n = 600;
  Context ctx = Context::host();
  for (double gap : {1e-8, 1e-10}) {
    for (index_t c : {3, 6, 10}) {
      std::vector<double> l;
      for (index_t j = 0; j < c; ++j) l.push_back(3.0 * (1.0 + gap * double(j)));
      for (index_t i = 0; static_cast<index_t>(l.size()) < n; ++i) l.push_back(2.0 * std::exp(-0.01 * double(i)));
      const auto a = test::with_spectrum(l, 21 + unsigned(c));
      const auto exact = test::dense_eigenvalues(a, n);
      linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
      for (index_t block : {1, 2}) {
        for (index_t k : {4, 8}) {
          linalg::LanczosOptions o;
          o.k = k;
          o.tol = 1e-6;
          o.block = block;
          o.method = EigenMethod::lanczos;
          const auto r = linalg::eigsh<double>(op, o);
          const std::string what = std::string(gap == 1e-8 ? "gap 1e-8" : "gap 1e-10") + " cluster " + std::to_string(c) + " block " + std::to_string(block) +
                                   " k " + std::to_string(k);
          EXPECT_TRUE(r.all_converged) << what;
          EXPECT_TRUE(r.multiplicity_checked) << what;
          expect_wanted_set(r, a, n, exact, Which::largest, o.tol, what);
        }
      }
    }
  }
}

TEST(LanczosMultiplicity, ResolvedClustersAreReturnedMemberByMember) {
  // Six eigenvalues 3 (1 + 1e-8 j) again, now at tol 1e-12: 3e-8 apart is resolvable, and the
  // answer must be the six members in order followed by the next value.
  const index_t n = 600;
  std::vector<double> l;
  for (index_t j = 0; j < 6; ++j) l.push_back(3.0 * (1.0 + 1e-8 * double(j)));
  for (index_t i = 0; static_cast<index_t>(l.size()) < n; ++i) l.push_back(2.0 * std::exp(-0.01 * double(i)));
  const auto a = test::with_spectrum(l, 31);
  const auto exact = test::dense_eigenvalues(a, n);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 7;
  o.tol = 1e-12;
  o.block = 2;
  o.method = EigenMethod::lanczos;
  const auto r = linalg::eigsh<double>(op, o);
  EXPECT_TRUE(r.all_converged);
  EXPECT_TRUE(r.multiplicity_checked);
  const auto want = wanted(exact, Which::largest, o.k);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(r.values[std::size_t(i)], want[std::size_t(i)], 3e-10) << i;
}

TEST(LanczosMultiplicity, TheCheckCanBeTurnedOffAndTheDensePathIsExact) {
  const index_t n = 600;
  const auto l = multiple_top(n, 6, Which::largest);
  const auto a = test::with_spectrum(l, 17);
  const auto exact = test::dense_eigenvalues(a, n);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 8;
  o.tol = 1e-10;
  o.method = EigenMethod::lanczos;
  o.check_multiplicity = false;
  const auto off = linalg::eigsh<double>(op, o);
  EXPECT_FALSE(off.multiplicity_checked);
  EXPECT_EQ(off.check_passes, 0);
  EXPECT_EQ(off.missed_recovered, 0);
  o.check_multiplicity = true;
  const auto on = linalg::eigsh<double>(op, o);
  EXPECT_TRUE(on.multiplicity_checked);
  EXPECT_GT(on.matvecs, off.matvecs);
  // What the check adds is exactly what the first pass missed.
  index_t copies_off = 0;
  for (double v : off.values) copies_off += std::abs(v - 3.0) < 1e-8;
  EXPECT_EQ(on.missed_recovered, 6 - copies_off);
  // The dense path computes the whole spectrum: nothing can be missed, and it says so.
  o.method = EigenMethod::dense;
  const auto d = linalg::eigsh<double>(op, o);
  EXPECT_EQ(d.method, EigenMethod::dense);
  EXPECT_TRUE(d.multiplicity_checked);
  EXPECT_EQ(d.missed_recovered, 0);
  EXPECT_TRUE(d.all_converged);
  expect_wanted_set(d, a, n, exact, Which::largest, 1e-12, "dense");
  // A non-converged first pass is not checked: the field stays false.
  o.method = EigenMethod::lanczos;
  o.max_restarts = 0;
  o.tol = 1e-14;
  const auto early = linalg::eigsh<double>(op, o);
  EXPECT_FALSE(early.all_converged);
  EXPECT_FALSE(early.multiplicity_checked);
}

TEST(LanczosMultiplicity, ASmallComplementIsCheckedByRayleighRitzOnAllOfIt) {
  // n = 40 with a 35-vector basis: the complement of the k = 8 locked vectors (32 dimensions) is
  // too small to grow a Krylov basis in, and the check solves it exactly instead.
  const index_t n = 40;
  const auto l = multiple_top(n, 6, Which::largest);
  const auto a = test::with_spectrum(l, 61);
  const auto exact = test::dense_eigenvalues(a, n);
  Context ctx = Context::host();
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});
  std::vector<std::string> tasks;
  ctx.set_progress_sink([&](std::string_view task, index_t, index_t) { tasks.emplace_back(task); });
  linalg::LanczosOptions o;
  o.k = 8;
  o.tol = 1e-10;
  o.subspace = 35;
  o.method = EigenMethod::lanczos;
  const auto r = linalg::eigsh<double>(op, o);
  ASSERT_EQ(r.method, EigenMethod::lanczos);
  EXPECT_TRUE(r.all_converged);
  EXPECT_TRUE(r.multiplicity_checked);
  EXPECT_GE(r.check_passes, 1);
  EXPECT_NE(tasks.back().find("Rayleigh-Ritz on the whole complement"), std::string::npos) << tasks.back();
  expect_wanted_set(r, a, n, exact, Which::largest, o.tol, "small complement");
}

TEST(LanczosMultiplicity, Float32RunsAreCheckedToo) {
  const index_t n = 600;
  const auto l = multiple_top(n, 6, Which::largest);
  const auto a = test::with_spectrum(l, 71);
  const auto exact = test::dense_eigenvalues(a, n);
  std::vector<float> af(a.begin(), a.end());
  Context ctx = Context::host();
  linalg::DenseOperator<float> op(ctx, {af.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 8;
  o.tol = 1e-5;
  o.method = EigenMethod::lanczos;
  const auto r = linalg::eigsh<float>(op, o);
  EXPECT_TRUE(r.all_converged);
  EXPECT_TRUE(r.multiplicity_checked);
  const auto want = wanted(exact, Which::largest, o.k);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(r.values[std::size_t(i)], want[std::size_t(i)], 1e-4 * 3.0) << i;
}

// ---- precision floor ----

TEST(LanczosPrecision, Float32EigenvaluesBelowItsResolutionAreFlaggedNotConverged) {
  // PSD with eigenvalues spanning 1e-4 .. 1e4: 1e-4, 1e-3, 1e-2, 0.1, 1, then 30 .. 1e4 log-spaced.
  // float32 resolves eigenvalues only to 16 eps ||A|| ~ 0.019: the five smallest meet the stopping
  // test at that floor while being off by up to 100%. They must not read as converged; 30 (floor
  // 6e-4 of it) must.
  const index_t n = 500;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i)
    l[std::size_t(i)] = i < 5 ? std::pow(10.0, -4.0 + double(i)) : 30.0 * std::pow(1e4 / 30.0, double(i - 5) / double(n - 6));
  const auto a = test::with_spectrum(l, 41);
  const auto exact = test::dense_eigenvalues(a, n);  // float64 reference, ascending
  std::vector<float> af(a.begin(), a.end());
  Context ctx = Context::host();
  linalg::DenseOperator<float> op(ctx, {af.data(), n, n, n});
  std::vector<std::string> logged;
  ctx.set_log_sink([&](LogLevel level, std::string_view m) {
    if (level == LogLevel::warning) logged.emplace_back(m);
  });
  for (auto method : {EigenMethod::lanczos, EigenMethod::dense}) {
    linalg::LanczosOptions o;
    o.k = 6;
    o.which = Which::smallest;
    o.tol = 1e-6;
    o.method = method;
    logged.clear();
    const auto r = linalg::eigsh<float>(op, o);
    const std::string what = linalg::to_string(r.method);
    ASSERT_EQ(r.status.size(), std::size_t(o.k));
    EXPECT_FALSE(r.all_converged) << what;
    double worst_flagged = 0;
    for (index_t i = 0; i < o.k; ++i) {
      const double err = std::abs(r.values[std::size_t(i)] - exact[std::size_t(i)]) / exact[std::size_t(i)];
      if (i < 5 || method == EigenMethod::dense) {
        EXPECT_TRUE(r.converged[std::size_t(i)]) << what << " " << i << ": the stopping test is met (at the floor)";
      }
      // Honest: what is off by more than precision_limit is not reported as converged.
      if (err > o.precision_limit) {
        EXPECT_NE(r.status[std::size_t(i)], EigenStatus::converged) << what << " " << i << " err " << err;
      }
      if (i < 5) {
        EXPECT_EQ(r.status[std::size_t(i)], EigenStatus::precision_limited) << what << " " << i;
        worst_flagged = std::max(worst_flagged, err);
      } else if (method == EigenMethod::dense) {
        EXPECT_EQ(r.status[std::size_t(i)], EigenStatus::converged) << what << " " << i;
      } else {
        // Whether float32 Lanczos reaches the 16 eps ||A|| floor for this interior value depends on
        // the BLAS kernel's rounding (it does not under OPENBLAS_CORETYPE=Core2): converged or
        // honestly not converged, but never flagged for precision (its floor is 6e-4 of it).
        EXPECT_NE(r.status[std::size_t(i)], EigenStatus::precision_limited) << what << " " << i;
        if (r.status[std::size_t(i)] == EigenStatus::converged) {
          EXPECT_LT(err, o.precision_limit) << what << " " << i;
        }
      }
    }
    // The flag is not a formality: float32 really gets these wrong (the issue saw 13%; 9-100% here,
    // depending on the BLAS kernel), far beyond the limit that raised the flag.
    EXPECT_GT(worst_flagged, 10 * o.precision_limit) << what;
    ASSERT_GE(r.warnings.size(), 1u) << what;
    EXPECT_NE(r.warnings[0].find("float64"), std::string::npos) << r.warnings[0];
    EXPECT_EQ(logged, r.warnings) << what;
    EXPECT_STREQ(linalg::to_string(r.status[0]), "precision_limited");
  }
  // The top of the same float32 matrix is well resolved: converged and right to float32 accuracy.
  linalg::LanczosOptions o;
  o.k = 4;
  o.tol = 1e-6;
  o.method = EigenMethod::lanczos;
  const auto top = linalg::eigsh<float>(op, o);
  EXPECT_TRUE(top.all_converged);
  EXPECT_TRUE(top.warnings.empty());
  for (index_t i = 0; i < o.k; ++i) {
    EXPECT_EQ(top.status[std::size_t(i)], EigenStatus::converged);
    EXPECT_NEAR(top.values[std::size_t(i)], exact[std::size_t(n - 1 - i)], 1e-5 * exact[std::size_t(n - 1)]);
  }
  // In float64 the floor is ~4e-11: the same smallest eigenvalues are plainly converged, and right.
  linalg::DenseOperator<double> op64(ctx, {a.data(), n, n, n});
  o.k = 6;
  o.which = Which::smallest;
  o.method = EigenMethod::dense;
  const auto d64 = linalg::eigsh<double>(op64, o);
  EXPECT_TRUE(d64.all_converged);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(d64.values[std::size_t(i)], l[std::size_t(i)], 1e-3 * l[std::size_t(i)]);
}

TEST(LanczosPrecision, StatusFollowsThePrecisionLimitOption) {
  // The same float32 run with precision_limit raised above the error it allows is converged.
  const index_t n = 500;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = std::pow(10.0, -1.0 + 5.0 * double(i) / double(n - 1));  // 0.1 .. 1e4
  const auto a = test::with_spectrum(l, 43);
  std::vector<float> af(a.begin(), a.end());
  Context ctx = Context::host();
  linalg::DenseOperator<float> op(ctx, {af.data(), n, n, n});
  linalg::LanczosOptions o;
  o.k = 3;
  o.which = Which::smallest;
  o.tol = 1e-6;
  o.method = EigenMethod::dense;
  // floor 16 eps ||A|| = 0.019 is 19% of the smallest eigenvalue 0.1.
  EXPECT_EQ(linalg::eigsh<float>(op, o).status[0], EigenStatus::precision_limited);
  o.precision_limit = 0.5;
  EXPECT_EQ(linalg::eigsh<float>(op, o).status[0], EigenStatus::converged);
  o.precision_limit = -1;
  EXPECT_THROW(linalg::eigsh<float>(op, o), InvalidArgument);
}

// ---- progress ----

struct Call {
  std::string task;
  index_t done, total;
};

// Calls grouped by task family (the text before ':'), in order.
std::map<std::string, std::vector<Call>> by_family(const std::vector<Call>& calls) {
  std::map<std::string, std::vector<Call>> out;
  for (const auto& c : calls) out[c.task.substr(0, c.task.find(':'))].push_back(c);
  return out;
}

// Within a family: total fixed, done never decreasing and within [0, total], the last call done.
void expect_monotone(const std::vector<Call>& calls, const std::string& what) {
  ASSERT_FALSE(calls.empty()) << what;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].total, calls[0].total) << what << " call " << i;
    EXPECT_GE(calls[i].done, 0) << what;
    EXPECT_LE(calls[i].done, calls[i].total) << what;
    if (i > 0) {
      EXPECT_GE(calls[i].done, calls[i - 1].done) << what << " call " << i;
    }
  }
  EXPECT_EQ(calls.back().done, calls.back().total) << what << ": " << calls.back().task;
}

TEST(Progress, EveryLongPhaseReportsMonotoneProgress) {
  const index_t n = 600;
  const auto l = multiple_top(n, 3, Which::largest);  // a multiple top: the check runs passes
  const auto a = test::with_spectrum(l, 51);
  Context ctx = Context::host();
  std::vector<Call> calls;
  ctx.set_progress_sink([&](std::string_view task, index_t done, index_t total) { calls.push_back({std::string(task), done, total}); });
  linalg::DenseOperator<double> op(ctx, {a.data(), n, n, n});

  linalg::LanczosOptions o;
  o.k = 5;
  o.tol = 1e-10;
  o.method = EigenMethod::lanczos;
  const auto r = linalg::eigsh<double>(op, o);
  ASSERT_TRUE(r.multiplicity_checked);
  auto fam = by_family(calls);
  ASSERT_EQ(fam.size(), std::size_t(1 + r.check_passes));
  index_t rounds = 0;  // one call per Rayleigh-Ritz: restarts + 1 per pass
  for (const auto& [name, seq] : fam) {
    expect_monotone(seq, name);
    EXPECT_TRUE(name == "lanczos" || name.rfind("lanczos missed-eigenvalue check ", 0) == 0) << name;
    EXPECT_EQ(seq[0].total, o.max_restarts);
    for (const auto& c : seq) {
      EXPECT_NE(c.task.find("worst residual"), std::string::npos) << c.task;
      EXPECT_NE(c.task.find("(tol 1e-10)"), std::string::npos) << c.task;
    }
    rounds += index_t(seq.size());
  }
  EXPECT_EQ(rounds, r.iterations + 1 + r.check_passes);
  EXPECT_NE(fam["lanczos"].back().task.find(std::to_string(o.k) + "/" + std::to_string(o.k) + " converged"), std::string::npos)
      << fam["lanczos"].back().task;

  calls.clear();
  o.method = EigenMethod::dense;
  (void)linalg::eigsh<double>(op, o);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].task, "dense eigendecomposition");
  EXPECT_EQ(calls[0].done, 0);
  EXPECT_EQ(calls[1].done, 1);
  EXPECT_EQ(calls[1].total, 1);

  // A matrix-free operator taking at most 7 vectors at a time: the dense path applies it to the
  // identity in chunks and reports them.
  linalg::CallbackOperator<double> cb(
      ctx, 50, [&](MatrixView<const double> x, MatrixView<double> y) {
        for (index_t i = 0; i < x.rows; ++i)
          for (index_t p = 0; p < 50; ++p) {
            double s = 0;
            for (index_t q = 0; q < 50; ++q) s += a[std::size_t(p * n + q)] * x(i, q);
            y(i, p) = s;
          }
      },
      7);
  calls.clear();
  o.k = 3;
  (void)linalg::eigsh<double>(cb, o);
  fam = by_family(calls);
  expect_monotone(fam["dense"], "dense: operator columns");
  EXPECT_EQ(fam["dense"].size(), std::size_t(1 + 8));  // the start and ceil(50 / 7) chunks
  expect_monotone(fam["dense eigendecomposition"], "dense eigendecomposition");

  calls.clear();
  linalg::SlqOptions so;
  so.steps = 25;
  so.probes = 4;
  (void)linalg::slq<double>(op, so);
  ASSERT_EQ(calls.size(), std::size_t(so.steps));
  expect_monotone(calls, "slq");
  for (std::size_t t = 0; t < calls.size(); ++t) EXPECT_EQ(calls[t].done, index_t(t + 1));

  calls.clear();
  (void)linalg::hutchinson<double>(cb, 20, 1);
  expect_monotone(calls, "hutchinson");
  EXPECT_EQ(calls.size(), std::size_t(1 + 3));  // the start and ceil(20 / 7) chunks
  EXPECT_EQ(calls.back().total, 20);

  calls.clear();
  const auto t = linalg::hutchpp_probes<double>(cb, 9, 1);
  expect_monotone(calls, "hutch++");
  EXPECT_EQ(calls.back().total, t.matvecs);
}

}  // namespace
}  // namespace dynascope
