// Feature-space measures against values known another way: effective rank and participation
// ratio in closed form, singular values of matrices built as U diag(s) V^T from random orthogonal
// factors, dead and duplicated units of constructed layers (duplicates also against a naive
// all-pairs distance loop), and feature_space against naive float64 activations and central
// finite differences of the input Jacobian. Backend cases run as .../host and .../cuda.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "dynascope/response.hpp"
#include "model/model_test_util.hpp"
#include "support/backend_test.hpp"
#include "support/naive_mlp.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using response::count_dead;
using response::count_duplicated;
using response::effective_rank;
using response::participation_ratio;

// The definitions written out: exp(-sum p ln p), p = s / sum s; (sum s^2)^2 / sum s^4.
double rank_formula(const std::vector<double>& s) {
  double sum = 0, h = 0;
  for (double v : s) sum += v;
  for (double v : s)
    if (v > 0) h -= v / sum * std::log(v / sum);
  return std::exp(h);
}
double pr_formula(const std::vector<double>& s) {
  double s2 = 0, s4 = 0;
  for (double v : s) s2 += v * v, s4 += v * v * v * v;
  return s2 * s2 / s4;
}

// A random n x n orthogonal matrix (row-major): Gram-Schmidt, twice, on Gaussian columns.
std::vector<double> random_orthogonal(index_t n, unsigned seed) {
  std::vector<double> q = test::random_vector(std::size_t(n * n), seed);
  for (index_t j = 0; j < n; ++j)
    for (int pass = 0; pass < 2; ++pass) {
      for (index_t k = 0; k < j; ++k) {
        double d = 0;
        for (index_t i = 0; i < n; ++i) d += q[std::size_t(i * n + j)] * q[std::size_t(i * n + k)];
        for (index_t i = 0; i < n; ++i) q[std::size_t(i * n + j)] -= d * q[std::size_t(i * n + k)];
      }
      double norm = 0;
      for (index_t i = 0; i < n; ++i) norm += q[std::size_t(i * n + j)] * q[std::size_t(i * n + j)];
      for (index_t i = 0; i < n; ++i) q[std::size_t(i * n + j)] /= std::sqrt(norm);
    }
  return q;
}

// U diag(s) V^T [n, w] for random orthogonal U [n, n], V [w, w] (s has at most min(n, w) entries).
std::vector<double> with_singular_values(index_t n, index_t w, const std::vector<double>& s, unsigned seed) {
  const auto u = random_orthogonal(n, seed), v = random_orthogonal(w, seed + 1000);
  std::vector<double> h(std::size_t(n * w), 0.0);
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < w; ++j)
      for (std::size_t k = 0; k < s.size(); ++k) h[std::size_t(i * w + j)] += u[i * n + k] * s[k] * v[j * w + k];
  return h;
}

template <class T>
std::vector<T> cast(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

TEST(FeatureMeasures, EffectiveRankAndParticipationRatioInClosedForm) {
  const std::vector<double> flat = {2, 2, 2, 2};
  EXPECT_NEAR(effective_rank(flat), 4.0, 1e-14);
  EXPECT_NEAR(participation_ratio(flat), 4.0, 1e-14);
  const std::vector<double> one = {3, 0, 0};
  EXPECT_EQ(effective_rank(one), 1.0);
  EXPECT_EQ(participation_ratio(one), 1.0);
  // s = (2, 1): p = (2/3, 1/3); PR = 5^2 / 17.
  const std::vector<double> two = {2, 1};
  EXPECT_NEAR(effective_rank(two), std::exp(-(2.0 / 3 * std::log(2.0 / 3) + 1.0 / 3 * std::log(1.0 / 3))), 1e-14);
  EXPECT_NEAR(participation_ratio(two), 25.0 / 17.0, 1e-14);
  // Scale-free; order-free; and PR is safe from overflow of s^4.
  const std::vector<double> big = {2e200, 1e200}, swapped = {1, 2};
  EXPECT_NEAR(participation_ratio(big), 25.0 / 17.0, 1e-14);
  EXPECT_NEAR(effective_rank(big), effective_rank(two), 1e-14);
  EXPECT_NEAR(effective_rank(swapped), effective_rank(two), 1e-14);
  // Between 1 and the count of non-zero values.
  const std::vector<double> decay = {5, 3, 2, 1, 0.5, 0.1, 0};
  EXPECT_NEAR(effective_rank(decay), rank_formula(decay), 1e-14);
  EXPECT_NEAR(participation_ratio(decay), pr_formula(decay), 1e-14);
  EXPECT_GT(effective_rank(decay), 1.0);
  EXPECT_LT(effective_rank(decay), 6.0);
}

TEST(FeatureMeasures, ADegenerateLayerHasRankZeroAndBadValuesAreRejected) {
  // All singular values zero (every unit dead) or none at all: the rank of the zero matrix.
  const std::vector<double> zeros = {0, 0, 0}, none = {};
  EXPECT_EQ(effective_rank(zeros), 0.0);
  EXPECT_EQ(participation_ratio(zeros), 0.0);
  EXPECT_EQ(effective_rank(none), 0.0);
  EXPECT_EQ(participation_ratio(none), 0.0);
  const std::vector<double> negative = {1, -0.5}, nan = {1, std::nan("")},
                            inf = {std::numeric_limits<double>::infinity()};
  test::expect_error<InvalidArgument>([&] { effective_rank(negative); }, {"effective_rank", "singular value 1", ">= 0"});
  test::expect_error<InvalidArgument>([&] { participation_ratio(negative); }, {"participation_ratio", "singular value 1"});
  test::expect_error<InvalidArgument>([&] { effective_rank(nan); }, {"effective_rank", "finite"});
  test::expect_error<InvalidArgument>([&] { participation_ratio(inf); }, {"participation_ratio", "singular value 0"});
}

class FeatureSpaceOnBackends : public test::BackendTest {};

template <class T>
void check_known_singular_values(const Context& ctx, index_t n, index_t w, std::vector<double> s, index_t ld,
                                 double tol, unsigned seed) {
  SCOPED_TRACE(::testing::Message() << (sizeof(T) == 4 ? "float " : "double ") << n << "x" << w << " ld " << ld);
  const auto h = with_singular_values(n, w, s, seed);
  const auto stored = test::with_ld(cast<T>(h), n, w, ld);
  const Array<T> dh = Array<T>::from_host(ctx, {n, ld}, stored);
  const auto got = response::singular_values<T>(ctx, test::strided(dh, w));
  std::sort(s.begin(), s.end(), std::greater<>());
  s.resize(std::size_t(std::min(n, w)), 0.0);
  ASSERT_EQ(got.size(), s.size());
  for (std::size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(got[i], s[i], tol * s.front()) << "singular value " << i;
  EXPECT_NEAR(effective_rank(got), rank_formula(s), 20 * tol);
  EXPECT_NEAR(participation_ratio(got), pr_formula(s), 20 * tol);
}

TEST_P(FeatureSpaceOnBackends, SingularValuesOfMatricesWithKnownSpectra) {
  const std::vector<double> s = {5, 3, 2, 1, 0.5, 0.1};
  // Tall (Gram H^T H) and wide (Gram H H^T), dense and strided; a rank-deficient one (zeros).
  for (index_t ld : {index_t(0), index_t(3)}) {
    check_known_singular_values<double>(ctx(), 20, 6, s, 6 + ld, 1e-12, 1);
    check_known_singular_values<double>(ctx(), 6, 13, s, 13 + ld, 1e-12, 2);
    check_known_singular_values<double>(ctx(), 11, 9, {4, 2, 1, 0, 0}, 9 + ld, 1e-12, 3);
    // float: the matrix rounded to float moves each singular value by at most ||E||_2 ~ 1e-7 s_max.
    check_known_singular_values<float>(ctx(), 20, 6, s, 6 + ld, 2e-6, 4);
    check_known_singular_values<float>(ctx(), 6, 13, s, 13 + ld, 2e-6, 5);
  }
}

TEST_P(FeatureSpaceOnBackends, ARankOneMatrixHasRankExactlyOneAndZeroHasRankZero) {
  // u v^T with small integers: exact in float, so the matrix is exactly rank one in both types,
  // and the eigenvalues the Gram's rounding leaves are reported as zeros.
  const index_t n = 9, w = 7;
  std::vector<double> h(std::size_t(n * w));
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < w; ++j) h[std::size_t(i * w + j)] = double((i % 4) - 1) * double(j + 1);
  double fro = 0;
  for (double v : h) fro += v * v;
  for (int type = 0; type < 2; ++type) {
    const auto s = type == 0 ? response::singular_values<double>(ctx(), Array<double>::from_host(ctx(), {n, w}, h).matrix())
                             : response::singular_values<float>(ctx(), Array<float>::from_host(ctx(), {n, w}, cast<float>(h)).matrix());
    ASSERT_EQ(s.size(), std::size_t(w));
    EXPECT_NEAR(s[0], std::sqrt(fro), 1e-12 * std::sqrt(fro));
    for (std::size_t i = 1; i < s.size(); ++i) EXPECT_EQ(s[i], 0.0) << "type " << type << " value " << i;
    EXPECT_EQ(effective_rank(s), 1.0);
    EXPECT_EQ(participation_ratio(s), 1.0);
  }
  const Array<double> zero = Array<double>::zeros(ctx(), {5, 4});
  const auto s0 = response::singular_values<double>(ctx(), zero.matrix());
  EXPECT_EQ(s0, std::vector<double>(4, 0.0));
  EXPECT_EQ(effective_rank(s0), 0.0);
  // A non-finite entry is named.
  std::vector<double> bad(12, 1.0);
  bad[7] = std::nan("");
  const Array<double> dbad = Array<double>::from_host(ctx(), {3, 4}, bad);
  test::expect_error<InvalidArgument>([&] { response::singular_values<double>(ctx(), dbad.matrix()); },
                                      {"singular_values", "h", "row 1, column 3"});
}

TEST_P(FeatureSpaceOnBackends, DeadUnitsOfAConstructedLayer) {
  // Units 1 and 3 are zero on every sample (one of them holds -0.0, which is zero); unit 4 is zero
  // on all samples but one, and unit 0 is tiny but not zero: both alive.
  const index_t n = 7, w = 5, ld = 6;
  std::vector<double> a = test::random_vector(std::size_t(n * w), 11);
  for (index_t i = 0; i < n; ++i) {
    a[std::size_t(i * w + 1)] = 0.0;
    a[std::size_t(i * w + 3)] = i == 2 ? -0.0 : 0.0;
    a[std::size_t(i * w + 4)] = i == 5 ? 0.25 : 0.0;
    a[std::size_t(i * w + 0)] = i == 0 ? 1e-30 : 0.0;
  }
  const Array<double> dd = Array<double>::from_host(ctx(), {n, ld}, test::with_ld(a, n, w, ld));
  EXPECT_EQ(count_dead<double>(ctx(), test::strided(dd, w)), 2);
  // In float 1e-30 is still a (subnormal-free) non-zero.
  const Array<float> df = Array<float>::from_host(ctx(), {n, w}, cast<float>(a));
  EXPECT_EQ(count_dead<float>(ctx(), df.matrix()), 2);
  const MatrixView<const double> none{dd.data(), 0, w, ld, dd.backend()};
  test::expect_error<InvalidArgument>([&] { count_dead<double>(ctx(), none); }, {"count_dead", "no rows"});
}

// The definition written out: unit j counts when some earlier non-zero unit lies within tol.
index_t naive_duplicated(const std::vector<double>& w, const std::vector<double>& b, index_t rows, index_t cols, double tol) {
  std::vector<std::vector<double>> u;
  for (index_t j = 0; j < rows; ++j) {
    std::vector<double> r(w.begin() + j * cols, w.begin() + (j + 1) * cols);
    if (!b.empty()) r.push_back(b[std::size_t(j)]);
    double norm = 0;
    for (double v : r) norm += v * v;
    for (double& v : r) v = norm > 0 ? v / std::sqrt(norm) : 0.0;
    u.push_back(norm > 0 ? r : std::vector<double>{});
  }
  index_t count = 0;
  for (index_t j = 1; j < rows; ++j) {
    if (u[std::size_t(j)].empty()) continue;
    for (index_t k = 0; k < j; ++k) {
      if (u[std::size_t(k)].empty()) continue;
      double d2 = 0;
      for (std::size_t c = 0; c < u[std::size_t(j)].size(); ++c)
        d2 += (u[std::size_t(j)][c] - u[std::size_t(k)][c]) * (u[std::size_t(j)][c] - u[std::size_t(k)][c]);
      if (std::sqrt(d2) <= tol) {
        ++count;
        break;
      }
    }
  }
  return count;
}

TEST_P(FeatureSpaceOnBackends, DuplicatedUnitsOfAConstructedLayer) {
  const index_t rows = 8, cols = 4;
  auto w = test::random_vector(std::size_t(rows * cols), 21);
  auto b = test::random_vector(std::size_t(rows), 22);
  const auto set_row = [&](index_t j, index_t from, double c) {
    for (index_t k = 0; k < cols; ++k) w[std::size_t(j * cols + k)] = c * w[std::size_t(from * cols + k)];
    b[std::size_t(j)] = c * b[std::size_t(from)];
  };
  set_row(1, 0, 2.5);   // a positive multiple of unit 0: the same unit (condensed)
  set_row(2, 0, -1.0);  // the opposite direction: not a duplicate
  set_row(3, 0, 0.0);   // a zero row duplicates nothing
  set_row(6, 3, 1.0);   // ... not even another zero row
  set_row(4, 5, 1e-3);  // a tiny positive multiple of a later unit: unit 5 counts, unit 4 does not
  set_row(7, 2, 0.7);   // a positive multiple of unit 2
  for (index_t k = 0; k < cols; ++k) w[std::size_t(7 * cols + k)] += 1e-5 * double(k);  // within 1e-3
  const index_t expected = 3;  // units 1, 5 and 7
  ASSERT_EQ(naive_duplicated(w, b, rows, cols, 1e-3), expected);
  const Array<double> dw = Array<double>::from_host(ctx(), {rows, cols}, w), db = Array<double>::from_host(ctx(), {rows}, b);
  EXPECT_EQ(count_duplicated<double>(ctx(), dw.matrix(), db.vector(), 1e-3), expected);
  const Array<float> fw = Array<float>::from_host(ctx(), {rows, cols}, cast<float>(w)),
                     fb = Array<float>::from_host(ctx(), {rows}, cast<float>(b));
  EXPECT_EQ(count_duplicated<float>(ctx(), fw.matrix(), fb.vector(), 1e-3), expected);
  // Tolerance 0 finds exact copies, and multiples by powers of two (exact in floating point), only.
  std::vector<double> w0 = test::random_vector(std::size_t(5 * cols), 24), b0 = test::random_vector(5, 25);
  for (index_t k = 0; k < cols; ++k) {
    w0[std::size_t(1 * cols + k)] = w0[std::size_t(k)];
    w0[std::size_t(2 * cols + k)] = 4.0 * w0[std::size_t(k)];
    w0[std::size_t(4 * cols + k)] = w0[std::size_t(3 * cols + k)] + 1e-12 * double(k + 1);
  }
  b0[1] = b0[0];
  b0[2] = 4.0 * b0[0];
  b0[4] = b0[3];
  ASSERT_EQ(naive_duplicated(w0, b0, 5, cols, 0.0), 2);
  const Array<double> dw0 = Array<double>::from_host(ctx(), {5, cols}, w0), db0 = Array<double>::from_host(ctx(), {5}, b0);
  EXPECT_EQ(count_duplicated<double>(ctx(), dw0.matrix(), db0.vector(), 0.0), 2);
  EXPECT_EQ(count_duplicated<double>(ctx(), dw0.matrix(), db0.vector(), 1e-9), 3);

  // Without the bias, rows equal in w but not in b are duplicates.
  std::vector<double> w2 = test::random_vector(std::size_t(3 * cols), 23), b2 = {0.5, 0.1, -2.0};
  std::copy_n(w2.begin(), cols, w2.begin() + 2 * cols);
  const Array<double> dw2 = Array<double>::from_host(ctx(), {3, cols}, w2), db2 = Array<double>::from_host(ctx(), {3}, b2);
  EXPECT_EQ(count_duplicated<double>(ctx(), dw2.matrix(), db2.vector(), 1e-6), 0);
  EXPECT_EQ(count_duplicated<double>(ctx(), dw2.matrix(), VectorView<const double>{}, 1e-6), 1);

  test::expect_error<InvalidArgument>([&] { count_duplicated<double>(ctx(), dw.matrix(), db.vector(), -1e-3); },
                                      {"count_duplicated", "tolerance", ">= 0"});
  test::expect_error<InvalidArgument>([&] { count_duplicated<double>(ctx(), dw.matrix(), db.vector(), std::nan("")); },
                                      {"count_duplicated", "tolerance"});
  test::expect_error<ShapeMismatch>([&] { count_duplicated<double>(ctx(), dw2.matrix(), db.vector(), 1e-3); },
                                    {"count_duplicated", "b", "3", "8"});
}

TEST_P(FeatureSpaceOnBackends, DuplicatedUnitsAtEveryToleranceMatchTheNaiveDistances) {
  // Clusters of noisy copies, so that pairwise distances spread over many scales.
  const index_t rows = 40, cols = 6;
  auto w = test::random_vector(std::size_t(rows * cols), 31);
  auto b = test::random_vector(std::size_t(rows), 32);
  std::mt19937_64 gen(33);
  std::normal_distribution<double> noise(0.0, 1.0);
  for (index_t j = 8; j < rows; ++j) {
    const index_t from = j % 8;
    const double scale = std::pow(10.0, -1.0 - double(j % 5)), c = 0.5 + double(j % 3);
    for (index_t k = 0; k < cols; ++k) w[std::size_t(j * cols + k)] = c * (w[std::size_t(from * cols + k)] + scale * noise(gen));
    b[std::size_t(j)] = c * (b[std::size_t(from)] + scale * noise(gen));
  }
  const Array<double> dw = Array<double>::from_host(ctx(), {rows, cols}, w), db = Array<double>::from_host(ctx(), {rows}, b);
  index_t last = -1;
  for (double tol : {1e-7, 1e-5, 3e-4, 1e-3, 1e-2, 0.1, 0.5, 2.0}) {
    const index_t want = naive_duplicated(w, b, rows, cols, tol);
    EXPECT_EQ(count_duplicated<double>(ctx(), dw.matrix(), db.vector(), tol), want) << "tolerance " << tol;
    EXPECT_GE(want, last);
    last = want;
  }
  EXPECT_EQ(last, rows - 1);  // tolerance 2: every unit but the first
}

// Activations of hidden layer l over the samples [n, d_l] by the naive float64 loops.
std::vector<double> naive_activations(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                      index_t n, index_t l) {
  std::vector<double> out;
  for (index_t i = 0; i < n; ++i) {
    const auto t = test::naive::forward(s, w, test::naive::row(x, i, s.inputs()));
    out.insert(out.end(), t.a[std::size_t(l)].begin(), t.a[std::size_t(l)].end());
  }
  return out;
}

// Mean over samples of ||df/dx||_F by central differences of the naive float64 forward.
double finite_difference_grad_norm(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                                   index_t n, double h) {
  const index_t D = s.inputs(), O = s.outputs();
  double total = 0;
  for (index_t i = 0; i < n; ++i) {
    double f2 = 0;
    for (index_t j = 0; j < D; ++j) {
      auto xp = test::naive::row(x, i, D), xm = xp;
      xp[std::size_t(j)] += h;
      xm[std::size_t(j)] -= h;
      const auto fp = test::naive::forward(s, w, xp).a.back(), fm = test::naive::forward(s, w, xm).a.back();
      for (index_t k = 0; k < O; ++k) {
        const double d = (fp[std::size_t(k)] - fm[std::size_t(k)]) / (2 * h);
        f2 += d * d;
      }
    }
    total += std::sqrt(f2);
  }
  return total / double(n);
}

TEST_P(FeatureSpaceOnBackends, FeatureSpaceOfAConstructedNetwork) {
  auto s = model::MlpSpec::from_arch("4-7-6-3", model::parse_activation("relu"));
  const index_t n = 17, D = 4, P = s.num_params();
  auto w = test::random_vector(std::size_t(P), 41, 0.6);
  const auto x = test::random_vector(std::size_t(n * D), 42);
  // Layer 1: unit 2 dead (zero weights, negative bias), unit 5 = 3 x unit 0.
  for (index_t k = 0; k < D; ++k) {
    w[std::size_t(s.weight_offset(0) + 2 * D + k)] = 0.0;
    w[std::size_t(s.weight_offset(0) + 5 * D + k)] = 3.0 * w[std::size_t(s.weight_offset(0) + k)];
  }
  w[std::size_t(s.bias_offset(0) + 2)] = -1.0;
  w[std::size_t(s.bias_offset(0) + 5)] = 3.0 * w[std::size_t(s.bias_offset(0))];
  // Layer 2: unit 1 dead by a large negative bias, units 3 and 4 copies of unit 0; the other
  // units get a positive bias, so that none is dead by chance.
  const index_t W1 = 7;
  for (index_t j = 0; j < 6; ++j) w[std::size_t(s.bias_offset(1) + j)] = 0.5 + std::abs(w[std::size_t(s.bias_offset(1) + j)]);
  w[std::size_t(s.bias_offset(1) + 1)] = -100.0;
  for (index_t j : {3, 4}) {
    for (index_t k = 0; k < W1; ++k)
      w[std::size_t(s.weight_offset(1) + j * W1 + k)] = double(j - 2) * w[std::size_t(s.weight_offset(1) + k)];
    w[std::size_t(s.bias_offset(1) + j)] = double(j - 2) * w[std::size_t(s.bias_offset(1))];
  }
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx = Array<double>::from_host(ctx(), {n, D}, x);
  const auto fs = response::feature_space<double>(ctx(), s, dw.data(), dx.matrix());
  ASSERT_EQ(fs.layers.size(), 2u);
  const index_t expect_dead[] = {1, 1}, expect_dup[] = {1, 2};
  for (index_t l = 1; l <= 2; ++l) {
    const auto& f = fs.layers[std::size_t(l - 1)];
    const index_t width = s.widths[std::size_t(l)];
    EXPECT_EQ(f.layer, l);
    EXPECT_EQ(f.width, width);
    // Against the naive activations: their dead columns and their spectrum (through the
    // singular_values checked above on known spectra).
    const auto a = naive_activations(s, w, x, n, l);
    index_t dead = 0;
    for (index_t j = 0; j < width; ++j) {
      bool zero = true;
      for (index_t i = 0; i < n; ++i) zero = zero && a[std::size_t(i * width + j)] == 0.0;
      dead += zero;
    }
    EXPECT_EQ(dead, expect_dead[l - 1]);
    EXPECT_EQ(f.dead, expect_dead[l - 1]) << "layer " << l;
    EXPECT_EQ(f.duplicated, expect_dup[l - 1]) << "layer " << l;
    const auto sv = response::singular_values<double>(host, Array<double>::from_host(host, {n, width}, a).matrix());
    EXPECT_NEAR(f.effective_rank, effective_rank(sv), 1e-10) << "layer " << l;
    EXPECT_NEAR(f.participation_ratio, participation_ratio(sv), 1e-10) << "layer " << l;
    // Dead and duplicated units add no direction: rank <= width - dead - duplicated.
    EXPECT_LE(f.effective_rank, double(width - f.dead - f.duplicated) + 1e-12);
  }
  // ReLU is piecewise linear; h = 1e-6 stays inside each sample's linear piece.
  EXPECT_NEAR(fs.input_grad_norm, finite_difference_grad_norm(s, w, x, n, 1e-6), 1e-8 * fs.input_grad_norm);
}

TEST_P(FeatureSpaceOnBackends, InputGradNormMatchesFiniteDifferencesTiledAndInFloat) {
  for (const char* act : {"tanh", "gelu"}) {
    SCOPED_TRACE(act);
    auto s = model::MlpSpec::from_arch("5-8-8-3", model::parse_activation(act), model::Parameterization::ntk);
    s.bias_scale = 0.5;
    const index_t n = 11, D = 5, P = s.num_params();
    const auto w = test::random_vector(std::size_t(P), 51), x = test::random_vector(std::size_t(n * D), 52);
    const double fd = finite_difference_grad_norm(s, w, x, n, 1e-5);
    const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx = Array<double>::from_host(ctx(), {n, D}, x);
    const auto full = response::feature_space<double>(ctx(), s, dw.data(), dx.matrix());
    EXPECT_NEAR(full.input_grad_norm, fd, 1e-8 * fd);
    // Tiles of 3 samples (per sample: (2 + O) sum(widths) + O (O + d0) values) give the same.
    Context tiled = new_context();
    tiled.set_workspace_budget(3 * sizeof(double) * std::size_t(5 * 19 + 3 * 8));
    const auto parts = response::feature_space<double>(tiled, s, dw.data(), dx.matrix());
    EXPECT_NEAR(parts.input_grad_norm, full.input_grad_norm, 1e-13 * fd);
    ASSERT_EQ(parts.layers.size(), full.layers.size());
    for (std::size_t l = 0; l < parts.layers.size(); ++l) {
      EXPECT_NEAR(parts.layers[l].effective_rank, full.layers[l].effective_rank, 1e-12);
      EXPECT_NEAR(parts.layers[l].participation_ratio, full.layers[l].participation_ratio, 1e-12);
      EXPECT_EQ(parts.layers[l].dead, 0);
      EXPECT_EQ(parts.layers[l].duplicated, 0);
    }
    tiled.set_workspace_budget(8);
    test::expect_error<OutOfMemory>([&] { response::feature_space<double>(tiled, s, dw.data(), dx.matrix()); },
                                    {"feature_space", "workspace budget"});
    // float: the same to float rounding.
    const Array<float> fw = Array<float>::from_host(ctx(), {P}, cast<float>(w)),
                       fx = Array<float>::from_host(ctx(), {n, D}, cast<float>(x));
    const auto single = response::feature_space<float>(ctx(), s, fw.data(), fx.matrix());
    EXPECT_NEAR(single.input_grad_norm, fd, 1e-5 * fd);
    for (std::size_t l = 0; l < single.layers.size(); ++l)
      EXPECT_NEAR(single.layers[l].effective_rank, full.layers[l].effective_rank, 1e-4);
  }
}

TEST_P(FeatureSpaceOnBackends, ALinearNetworkHasNoHiddenLayerAndItsWeightsAsJacobian) {
  // One layer: f = W x + b, so ||df/dx||_F = ||W||_F on every sample.
  const auto s = model::MlpSpec::from_arch("3-2");
  const std::vector<double> w = {1, 2, 3, 4, 5, 6, 7, 8};
  const auto x = test::random_vector(12, 61);
  const Array<double> dw = Array<double>::from_host(ctx(), {8}, w), dx = Array<double>::from_host(ctx(), {4, 3}, x);
  const auto fs = response::feature_space<double>(ctx(), s, dw.data(), dx.matrix());
  EXPECT_TRUE(fs.layers.empty());
  EXPECT_NEAR(fs.input_grad_norm, std::sqrt(1.0 + 4 + 9 + 16 + 25 + 36), 1e-14);
}

TEST_P(FeatureSpaceOnBackends, BadInputIsNamed) {
  const auto s = model::MlpSpec::from_arch("3-4-2");
  const Array<double> dw = Array<double>::zeros(ctx(), {s.num_params()});
  const Array<double> x4 = Array<double>::zeros(ctx(), {5, 4}), x0 = Array<double>::zeros(ctx(), {0, 3}),
                      x3 = Array<double>::zeros(ctx(), {5, 3});
  test::expect_error<ShapeMismatch>([&] { response::feature_space<double>(ctx(), s, dw.data(), x4.matrix()); },
                                    {"feature_space", "x", "5x3"});
  test::expect_error<InvalidArgument>([&] { response::feature_space<double>(ctx(), s, dw.data(), x0.matrix()); },
                                      {"feature_space", "x", "no rows"});
  test::expect_error<InvalidArgument>(
      [&] { response::feature_space<double>(ctx(), s, dw.data(), x3.matrix(), {-1.0}); },
      {"feature_space", "tolerance"});
  // All-zero parameters: every hidden unit is dead, the layer degenerate (rank 0), and no unit
  // duplicates another (zero rows).
  const auto fs = response::feature_space<double>(ctx(), s, dw.data(), x3.matrix());
  ASSERT_EQ(fs.layers.size(), 1u);
  EXPECT_EQ(fs.layers[0].dead, 4);
  EXPECT_EQ(fs.layers[0].duplicated, 0);
  EXPECT_EQ(fs.layers[0].effective_rank, 0.0);
  EXPECT_EQ(fs.layers[0].participation_ratio, 0.0);
  EXPECT_EQ(fs.input_grad_norm, 0.0);
  // A non-finite parameter is named by its layer (through the weights, or the activations when
  // they turn non-finite first).
  std::vector<double> nan_w(std::size_t(s.num_params()), 0.5);
  nan_w[2] = std::nan("");
  const Array<double> dnan = Array<double>::from_host(ctx(), {s.num_params()}, nan_w);
  test::expect_error<InvalidArgument>([&] { response::feature_space<double>(ctx(), s, dnan.data(), x3.matrix()); },
                                      {"feature_space", "hidden layer 1", "non-finite"});
  const MatrixView<const double> w1{dnan.data(), 4, 3, 3, dnan.backend()};
  test::expect_error<InvalidArgument>([&] { count_duplicated<double>(ctx(), w1, VectorView<const double>{}, 1e-3); },
                                      {"count_duplicated", "non-finite", "row 0, column 2"});
}

DYNASCOPE_BACKEND_TESTS(FeatureSpaceOnBackends);

}  // namespace
}  // namespace dynascope
