// Class-pair matrices of S_rel and the per-class sampling of pairs (dynascope/elasticity.hpp).
// The matrices are checked on S_rel built so that every cell's mean is known by construction
// (cell value plus deviations that cancel within the cell); the sampling by its invariants
// (distinct members of the right class, ascending, reproducible, independent of the other
// classes) and by the uniformity of the draw over many seeds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <vector>

#include "dynascope/elasticity.hpp"
#include "dynascope/error.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using elasticity::class_matrix;
using elasticity::sample_per_class;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

VectorView<const std::int64_t> view(const std::vector<std::int64_t>& v) {
  return vector_view(v.data(), static_cast<index_t>(v.size()));
}

// Deviations with zero sum over the members of each class: d_i = g(i) - mean of g over i's class.
std::vector<double> zero_sum_per_class(const std::vector<std::int64_t>& labels, index_t classes, double scale,
                                       double phase) {
  std::vector<double> g(labels.size()), sum(classes, 0.0), count(classes, 0.0);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    g[i] = scale * std::sin(1.7 * double(i) + phase);
    sum[labels[i]] += g[i];
    count[labels[i]] += 1;
  }
  for (std::size_t i = 0; i < labels.size(); ++i) g[i] -= sum[labels[i]] / count[labels[i]];
  return g;
}

// The cell means M[a][b]: distinct values, larger on the diagonal (local, as elasticity finds).
double cell_value(index_t a, index_t b) {
  return a == b ? 1.0 + 0.25 * double(a) : 0.1 + 0.03 * double(a) + 0.011 * double(b);
}

// S_rel(i, j) = M[l1_i][l2_j] + e_i + h_j with e, h summing to zero within every class: each
// cell's mean is exactly M (up to rounding).
std::vector<double> constructed_s_rel(const std::vector<std::int64_t>& l1, const std::vector<std::int64_t>& l2,
                                      index_t classes) {
  const auto e = zero_sum_per_class(l1, classes, 0.3, 0.1);
  const auto h = zero_sum_per_class(l2, classes, 0.2, 0.7);
  std::vector<double> s(l1.size() * l2.size());
  for (std::size_t i = 0; i < l1.size(); ++i)
    for (std::size_t j = 0; j < l2.size(); ++j) s[i * l2.size() + j] = cell_value(l1[i], l2[j]) + e[i] + h[j];
  return s;
}

MatrixView<const double> matrix(const std::vector<double>& s, std::size_t rows, std::size_t cols) {
  return matrix_view(s.data(), static_cast<index_t>(rows), static_cast<index_t>(cols));
}

TEST(ClassMatrix, KnownClassMeans) {
  const index_t classes = 3;
  const std::vector<std::int64_t> l1 = {0, 1, 2, 0, 1, 2, 0, 2, 2};
  const std::vector<std::int64_t> l2 = {2, 0, 1, 1, 0, 2, 1, 0};
  const auto s = constructed_s_rel(l1, l2, classes);
  const auto cm = class_matrix(matrix(s, l1.size(), l2.size()), view(l1), view(l2), classes, false);
  ASSERT_EQ(cm.classes, classes);
  ASSERT_EQ(cm.matrix.shape(), (Shape{3, 3}));
  ASSERT_EQ(cm.pairs.shape(), (Shape{3, 3}));
  const index_t n1[3] = {3, 2, 4}, n2[3] = {3, 3, 2};
  double within = 0, across = 0;
  for (index_t a = 0; a < 3; ++a)
    for (index_t b = 0; b < 3; ++b) {
      EXPECT_NEAR(cm.matrix.data()[a * 3 + b], cell_value(a, b), 1e-15) << a << "," << b;
      EXPECT_EQ(cm.pairs.data()[a * 3 + b], n1[a] * n2[b]) << a << "," << b;
      (a == b ? within : across) += cell_value(a, b);
    }
  within /= 3, across /= 6;
  EXPECT_NEAR(cm.within, within, 1e-15);
  EXPECT_NEAR(cm.across, across, 1e-15);
  EXPECT_NEAR(cm.ratio, within / across, 1e-14);
  EXPECT_EQ(cm.empty_cells, 0);

  // A strided view (ld > cols) reads the same entries.
  std::vector<double> padded(l1.size() * 11, -7.0);
  for (std::size_t i = 0; i < l1.size(); ++i)
    std::copy_n(&s[i * l2.size()], l2.size(), &padded[i * 11]);
  const MatrixView<const double> strided{padded.data(), index_t(l1.size()), index_t(l2.size()), 11};
  const auto cs = class_matrix(strided, view(l1), view(l2), classes, false);
  for (int k = 0; k < 9; ++k) EXPECT_EQ(cs.matrix.data()[k], cm.matrix.data()[k]);
}

TEST(ClassMatrix, UndefinedEntriesAreSkipped) {
  const index_t classes = 3;
  const std::vector<std::int64_t> l1 = {0, 1, 2, 0, 1, 2, 0}, l2 = {1, 2, 0, 0, 1, 2};
  const auto s = constructed_s_rel(l1, l2, classes);
  const auto base = class_matrix(matrix(s, l1.size(), l2.size()), view(l1), view(l2), classes, false);

  // Two undefined sources (NaN rows, as pairwise leaves them) inserted at rows 2 and 5, of classes
  // 1 and 0: nothing changes, not even the pair counts.
  std::vector<std::int64_t> l1n = l1;
  l1n.insert(l1n.begin() + 2, 1);
  l1n.insert(l1n.begin() + 5, 0);
  std::vector<double> sn;
  for (std::size_t i = 0, src = 0; i < l1n.size(); ++i) {
    if (i == 2 || i == 5) {
      sn.insert(sn.end(), l2.size(), kNaN);
    } else {
      sn.insert(sn.end(), s.begin() + src * l2.size(), s.begin() + (src + 1) * l2.size());
      ++src;
    }
  }
  const auto with_nan = class_matrix(matrix(sn, l1n.size(), l2.size()), view(l1n), view(l2), classes, false);
  for (int k = 0; k < 9; ++k) {
    EXPECT_EQ(with_nan.matrix.data()[k], base.matrix.data()[k]);
    EXPECT_EQ(with_nan.pairs.data()[k], base.pairs.data()[k]);
  }
  EXPECT_EQ(with_nan.within, base.within);
  EXPECT_EQ(with_nan.across, base.across);

  // A single undefined entry leaves its cell's mean over the remaining pairs, one pair fewer.
  std::vector<double> s1 = s;
  s1[1 * l2.size() + 1] = kNaN;  // source 1 (class 1), target 1 (class 2)
  const auto one = class_matrix(matrix(s1, l1.size(), l2.size()), view(l1), view(l2), classes, false);
  double sum = 0;
  int count = 0;
  for (std::size_t i = 0; i < l1.size(); ++i)
    for (std::size_t j = 0; j < l2.size(); ++j)
      if (l1[i] == 1 && l2[j] == 2 && !std::isnan(s1[i * l2.size() + j])) sum += s1[i * l2.size() + j], ++count;
  EXPECT_EQ(one.pairs.data()[1 * 3 + 2], base.pairs.data()[1 * 3 + 2] - 1);
  EXPECT_EQ(one.pairs.data()[1 * 3 + 2], count);
  EXPECT_NEAR(one.matrix.data()[1 * 3 + 2], sum / count, 1e-15);
}

TEST(ClassMatrix, SameSetExcludesSelfPairs) {
  const index_t classes = 3;
  const std::vector<std::int64_t> l = {0, 1, 2, 1, 0, 2, 2, 0, 1, 1};
  const std::size_t n = l.size();
  // Off the diagonal: within-class cells carry an antisymmetric deviation w_ij - w_ji (which sums
  // to zero over the ordered pairs i != j of a class), across-class cells the zero-sum e_i + h_j.
  // The self pairs carry a value far from every cell: any of them in a mean would show.
  const auto e = zero_sum_per_class(l, classes, 0.3, 0.2);
  const auto h = zero_sum_per_class(l, classes, 0.1, 1.1);
  std::vector<double> s(n * n);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const double w = 0.05 * std::cos(double(3 * i + 7 * j)) - 0.05 * std::cos(double(3 * j + 7 * i));
      s[i * n + j] = i == j ? 1e6 : cell_value(l[i], l[j]) + (l[i] == l[j] ? w : e[i] + h[j]);
    }
  const auto cm = class_matrix(matrix(s, n, n), view(l), view(l), classes, true);
  const index_t count[3] = {3, 4, 3};
  for (index_t a = 0; a < 3; ++a)
    for (index_t b = 0; b < 3; ++b) {
      EXPECT_NEAR(cm.matrix.data()[a * 3 + b], cell_value(a, b), 1e-14) << a << "," << b;
      EXPECT_EQ(cm.pairs.data()[a * 3 + b], a == b ? count[a] * (count[a] - 1) : count[a] * count[b]);
    }
  // Without same_set the self pairs count (and swamp the diagonal).
  const auto all = class_matrix(matrix(s, n, n), view(l), view(l), classes, false);
  EXPECT_EQ(all.pairs.data()[0], 9);
  EXPECT_GT(all.matrix.data()[0], 1e5);

  // A class with a single member has no within-class pair in the same set: an empty cell.
  const std::vector<std::int64_t> l2 = {0, 0, 1, 2, 2};
  std::vector<double> s2(25, 0.5);
  for (int i = 0; i < 5; ++i) s2[i * 5 + i] = 1.0;
  const auto single = class_matrix(matrix(s2, 5, 5), view(l2), view(l2), 3, true);
  EXPECT_TRUE(std::isnan(single.matrix.data()[1 * 3 + 1]));
  EXPECT_EQ(single.pairs.data()[1 * 3 + 1], 0);
  EXPECT_EQ(single.empty_cells, 1);
  EXPECT_EQ(single.within, 0.5);  // the two defined diagonal cells only
  EXPECT_EQ(single.across, 0.5);
  EXPECT_EQ(single.ratio, 1.0);
}

TEST(ClassMatrix, EmptyCells) {
  // Class 2 has sources but no targets, class 3 neither: its row and column are empty.
  const index_t classes = 4;
  const std::vector<std::int64_t> l1 = {0, 1, 2, 0, 2}, l2 = {1, 0, 0, 1};
  const auto s = constructed_s_rel(l1, l2, classes);
  const auto cm = class_matrix(matrix(s, l1.size(), l2.size()), view(l1), view(l2), classes, false);
  index_t empty = 0;
  double within = 0, across = 0;
  int nw = 0, na = 0;
  for (index_t a = 0; a < 4; ++a)
    for (index_t b = 0; b < 4; ++b) {
      const bool has = a <= 2 && b <= 1;
      const double v = cm.matrix.data()[a * 4 + b];
      if (!has) {
        EXPECT_TRUE(std::isnan(v)) << a << "," << b;
        EXPECT_EQ(cm.pairs.data()[a * 4 + b], 0);
        ++empty;
        continue;
      }
      EXPECT_NEAR(v, cell_value(a, b), 1e-15);
      if (a == b) within += v, ++nw;
      else across += v, ++na;
    }
  EXPECT_EQ(cm.empty_cells, empty);
  EXPECT_EQ(empty, 10);
  EXPECT_NEAR(cm.within, within / nw, 1e-15);  // cells (0,0) and (1,1)
  EXPECT_NEAR(cm.across, across / na, 1e-15);  // (0,1), (1,0), (2,0), (2,1)
  EXPECT_EQ(nw, 2);
  EXPECT_EQ(na, 4);

  // One class: no across-class cell, so across and the ratio are undefined (NaN), not zero.
  const std::vector<std::int64_t> z = {0, 0};
  const std::vector<double> s1 = {1.0, 0.2, 0.4, 1.0};
  const auto one = class_matrix(matrix(s1, 2, 2), view(z), view(z), 1, true);
  EXPECT_DOUBLE_EQ(one.within, 0.3);
  EXPECT_TRUE(std::isnan(one.across));
  EXPECT_TRUE(std::isnan(one.ratio));
  EXPECT_EQ(one.empty_cells, 0);
}

TEST(ClassMatrix, Errors) {
  const std::vector<std::int64_t> l1 = {0, 1, 2}, l2 = {1, 0};
  const std::vector<double> s(6, 0.5);
  const auto m = matrix(s, 3, 2);
  test::expect_error<InvalidArgument>([&] { class_matrix(m, view({0, 1, 3}), view(l2), 3, false); },
                                      {"labels1[2] = 3", "[0, 3)"});
  test::expect_error<InvalidArgument>([&] { class_matrix(m, view(l1), view({-1, 0}), 3, false); },
                                      {"labels2[0] = -1", "[0, 3)"});
  test::expect_error<ShapeMismatch>([&] { class_matrix(m, view({0, 1}), view(l2), 3, false); }, {"labels1", "3", "2"});
  test::expect_error<ShapeMismatch>([&] { class_matrix(m, view(l1), view({0, 1, 2}), 3, false); }, {"labels2"});
  test::expect_error<InvalidArgument>([&] { class_matrix(m, view(l1), view(l2), 0, false); }, {"classes", ">= 1"});
  test::expect_error<ShapeMismatch>([&] { class_matrix(m, view(l1), view(l2), 3, true); }, {"same_set", "square"});
  const std::vector<double> sq(9, 0.5);
  test::expect_error<InvalidArgument>([&] { class_matrix(matrix(sq, 3, 3), view(l1), view({0, 2, 2}), 3, true); },
                                      {"same_set", "sample 1"});
}

// ---- sampling ----

// Labels of 500 samples in 6 classes with unequal sizes (70 each of classes 3..5, 97 or 96 of
// classes 0..2), interleaved.
std::vector<std::int64_t> uneven_labels() {
  std::vector<std::int64_t> l;
  for (int i = 0; i < 500; ++i) l.push_back(i < 420 ? i % 6 : i % 3);
  return l;
}

TEST(SamplePerClass, DistinctMembersOfEachClassAscending) {
  const auto labels = uneven_labels();
  std::vector<int> size(6, 0);
  for (auto c : labels) ++size[c];
  for (int c = 0; c < 6; ++c) ASSERT_GE(size[c], 12) << c;
  ASSERT_NE(*std::min_element(size.begin(), size.end()), *std::max_element(size.begin(), size.end()));
  for (const index_t k : {index_t{1}, index_t{5}, index_t{12}}) {
    const auto s = sample_per_class(view(labels), 6, k, 1234);
    ASSERT_EQ(s.size(), std::size_t(6 * k));
    for (index_t c = 0; c < 6; ++c) {
      const std::vector<std::int64_t> block(s.begin() + c * k, s.begin() + (c + 1) * k);
      EXPECT_TRUE(std::is_sorted(block.begin(), block.end()));
      EXPECT_EQ(std::set<std::int64_t>(block.begin(), block.end()).size(), std::size_t(k)) << "class " << c;
      for (auto i : block) {
        ASSERT_GE(i, 0);
        ASSERT_LT(i, 500);
        EXPECT_EQ(labels[i], c);
      }
    }
    EXPECT_EQ(sample_per_class(view(labels), 6, k, 1234), s);  // deterministic
  }
  // k equal to a class's size takes the whole class.
  const int smallest = int(std::min_element(size.begin(), size.end()) - size.begin());
  const auto all = sample_per_class(view(labels), 6, size[smallest], 9);
  std::vector<std::int64_t> members;
  for (int i = 0; i < 500; ++i)
    if (labels[i] == smallest) members.push_back(i);
  const auto first = all.begin() + smallest * size[smallest];
  EXPECT_EQ(std::vector<std::int64_t>(first, first + size[smallest]), members);
}

// The ranks (positions among its class's members, ascending) of a class's sampled samples.
std::vector<std::int64_t> ranks(const std::vector<std::int64_t>& labels, const std::vector<std::int64_t>& sample,
                                std::int64_t c, index_t k) {
  std::vector<std::int64_t> out;
  for (index_t t = 0; t < k; ++t) {
    const std::int64_t idx = sample[c * k + t];
    out.push_back(std::count(labels.begin(), labels.begin() + idx, c));
  }
  return out;
}

TEST(SamplePerClass, SeedsAndOtherClasses) {
  const auto labels = uneven_labels();
  const index_t k = 6;
  const auto a = sample_per_class(view(labels), 6, k, 77);
  const auto b = sample_per_class(view(labels), 6, k, 78);
  int differ = 0;
  for (index_t c = 0; c < 6; ++c)
    if (!std::equal(a.begin() + c * k, a.begin() + (c + 1) * k, b.begin() + c * k)) ++differ;
  EXPECT_GE(differ, 5) << "different seeds should give different samples in (almost) every class";

  // Samples of classes 1 and 4 added at the front, in the middle and at the end: every index
  // moves, but the other classes' draws, as ranks within their class, do not change.
  std::vector<std::int64_t> more = {1, 4, 4, 1};
  more.insert(more.end(), labels.begin(), labels.begin() + 250);
  for (int i = 0; i < 40; ++i) more.push_back(i % 2 ? 1 : 4);
  more.insert(more.end(), labels.begin() + 250, labels.end());
  more.insert(more.end(), {4, 4, 4});
  const auto m = sample_per_class(view(more), 6, k, 77);
  for (std::int64_t c : {0, 2, 3, 5}) EXPECT_EQ(ranks(more, m, c, k), ranks(labels, a, c, k)) << "class " << c;
  // The grown classes are drawn from a larger pool: a different sample (ranks) is expected.
  EXPECT_NE(ranks(more, m, 4, k), ranks(labels, a, 4, k));
}

// Without replacement and uniform: with n = 5 members and k = 2 every one of the 10 subsets is
// equally likely; over 4000 seeds each count is binomial(4000, 0.1) (sd 19): within 5 sd of 400.
// Larger classes: each member's inclusion frequency is k / n.
TEST(SamplePerClass, UniformOverSubsets) {
  const std::vector<std::int64_t> labels = {1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};  // 5 of class 1, 11 of 0
  const int seeds = 4000;
  std::map<std::vector<std::int64_t>, int> subsets;
  std::vector<int> included(labels.size(), 0);
  for (int seed = 0; seed < seeds; ++seed) {
    const auto s = sample_per_class(view(labels), 2, 2, std::uint64_t(seed) * 0x9e3779b97f4a7c15ULL);
    ++subsets[{s[2], s[3]}];
    ++included[s[0]], ++included[s[1]];
  }
  EXPECT_EQ(subsets.size(), 10u);
  for (const auto& [pair, n] : subsets) EXPECT_NEAR(n, 400, 5 * 19) << pair[0] << "," << pair[1];
  // Class 0: 11 members, 2 drawn: inclusion 2/11, sd sqrt(4000 p (1 - p)) = 24.4.
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] != 0) continue;
    EXPECT_NEAR(included[i], 4000.0 * 2 / 11, 5 * 24.4) << "sample " << i;
  }
}

TEST(SamplePerClass, Errors) {
  const std::vector<std::int64_t> labels = {0, 1, 2, 0, 1, 0, 2, 0, 1};  // sizes 4, 3, 2
  test::expect_error<InvalidArgument>([&] { sample_per_class(view(labels), 3, 3, 1); },
                                      {"class 2", "has 2 samples", "k = 3"});
  test::expect_error<InvalidArgument>([&] { sample_per_class(view(labels), 4, 2, 1); },
                                      {"class 3", "has 0 samples", "k = 2"});
  test::expect_error<InvalidArgument>([&] { sample_per_class(view(labels), 3, 0, 1); }, {"k", ">= 1", "got 0"});
  test::expect_error<InvalidArgument>([&] { sample_per_class(view(labels), 2, 1, 1); }, {"labels[2] = 2", "[0, 2)"});
  test::expect_error<InvalidArgument>([&] { sample_per_class(view(labels), 0, 1, 1); }, {"classes", ">= 1"});
}

}  // namespace
}  // namespace dynascope
