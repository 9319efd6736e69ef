// Host backend of the shared primitives: segmented sums and the row reductions built on them,
// exact distinct-row counting, and the strided-batched GEMM, each against naive float64 loops or
// std::map oracles. The cuda backend is compared with these host results in
// test_primitives_gpu.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "dynascope/blas.hpp"
#include "dynascope/primitives.hpp"
#include "support/backend_test.hpp"
#include "support/test_support.hpp"

// The tests call kern::segmented_sum with bodies of their own, on host contexts only.
#define DYNASCOPE_HOST_LAUNCH_ONLY
#include "kernels/rows.cuh"
#include "kernels/segmented.cuh"

namespace dynascope {
namespace {

using test::expect_error;
constexpr double kEps64 = std::numeric_limits<double>::epsilon();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// ---------------------------------------------------------------------------------------------
// Segmented sums
// ---------------------------------------------------------------------------------------------

// Small integers: every summation order gives the exact sum, so any item missed or counted twice
// by the tiling shows as an inequality.
struct IntegerItems {
  DYNASCOPE_HD double operator()(index_t s, index_t i) const { return double((s * 31 + i * 7) % 1001 - 500); }
};

TEST(SegmentedSum, EveryItemCountedOnceAcrossTileBoundaries) {
  const Context ctx = Context::host(2);
  for (index_t length : {index_t(0), index_t(1), index_t(7), index_t(4095), index_t(4096), index_t(4097),
                         index_t(3 * 4096 + 5), index_t(50000)}) {
    for (index_t segments : {index_t(1), index_t(3), index_t(17)}) {
      std::vector<double> out(static_cast<std::size_t>(segments), -1.0);
      kern::segmented_sum(ctx, segments, length, IntegerItems{}, vector_view(out.data(), segments));
      for (index_t s = 0; s < segments; ++s) {
        double ref = 0;
        for (index_t i = 0; i < length; ++i) ref += IntegerItems{}(s, i);
        EXPECT_EQ(out[static_cast<std::size_t>(s)], ref) << "segment " << s << " of length " << length;
      }
    }
  }
}

TEST(SegmentedSum, ZeroSegmentsWritesNothing) {
  const Context ctx = Context::host(2);
  double sentinel = -777.25;
  kern::segmented_sum(ctx, 0, 100, IntegerItems{}, vector_view(&sentinel, 0));
  EXPECT_EQ(sentinel, -777.25);
}

struct RandomItems {
  const double* v;
  index_t length;
  DYNASCOPE_HD double operator()(index_t s, index_t i) const { return v[s * length + i]; }
};

TEST(SegmentedSum, RandomValuesWithinTheSummationErrorBound) {
  const Context ctx = Context::host(2);
  std::mt19937_64 gen(11);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const index_t segments = 5, length = 30011;
  std::vector<double> v(static_cast<std::size_t>(segments * length));
  for (auto& x : v) x = u(gen) * std::exp(6 * u(gen));
  std::vector<double> out(static_cast<std::size_t>(segments));
  kern::segmented_sum(ctx, segments, length, RandomItems{v.data(), length}, vector_view(out.data(), segments));
  for (index_t s = 0; s < segments; ++s) {
    long double ref = 0, abs_sum = 0;
    for (index_t i = 0; i < length; ++i) {
      ref += v[static_cast<std::size_t>(s * length + i)];
      abs_sum += std::abs(v[static_cast<std::size_t>(s * length + i)]);
    }
    // Any order of n additions errs by at most (n - 1) eps sum |x|.
    EXPECT_NEAR(out[static_cast<std::size_t>(s)], double(ref), double(length) * kEps64 * double(abs_sum)) << "segment " << s;
  }
}

// ---------------------------------------------------------------------------------------------
// Row reductions
// ---------------------------------------------------------------------------------------------

// A [rows, cols] stored with leading dimension ld, the padding NaN: a reduction that reads past a
// row's end turns NaN.
template <class T>
struct Strided {
  std::vector<T> data;
  index_t rows, cols, ld;
  Strided(index_t r, index_t c, index_t l, unsigned seed) : data(static_cast<std::size_t>(r * l), T(kNaN)), rows(r), cols(c), ld(l) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> u(-2.0, 2.0);
    for (index_t i = 0; i < r; ++i)
      for (index_t j = 0; j < c; ++j) data[static_cast<std::size_t>(i * l + j)] = T(u(gen));
  }
  MatrixView<const T> view() const { return {data.data(), rows, cols, ld}; }
  double at(index_t i, index_t j) const { return double(data[static_cast<std::size_t>(i * ld + j)]); }
};

// out with stride 2, the gaps holding a sentinel that must survive.
template <class Out>
struct StridedOut {
  std::vector<Out> data;
  index_t n;
  explicit StridedOut(index_t size) : data(static_cast<std::size_t>(2 * size + 1), Out(-777.25)), n(size) {}
  VectorView<Out> view() { return {data.data(), n, 2}; }
  Out operator[](index_t i) const { return data[static_cast<std::size_t>(2 * i)]; }
  bool gaps_kept() const {
    for (index_t i = 0; i < n; ++i)
      if (data[static_cast<std::size_t>(2 * i + 1)] != Out(-777.25)) return false;
    return true;
  }
};

enum class Reduction { sum, squared_norm, squared_distance };

// The float64 reference of row r and the sum of the magnitudes of its terms.
template <class T>
std::pair<long double, long double> reference_row(const Strided<T>& a, const std::vector<T>& x, index_t r,
                                                  Reduction kind) {
  long double s = 0, m = 0;
  for (index_t j = 0; j < a.cols; ++j) {
    const double v = a.at(r, j);
    const long double term = kind == Reduction::sum            ? (long double)v
                             : kind == Reduction::squared_norm ? (long double)v * v
                                                               : ((long double)v - x[static_cast<std::size_t>(j)]) * ((long double)v - x[static_cast<std::size_t>(j)]);
    s += term;
    m += std::abs(term);
  }
  return {s, m};
}

template <class T, class Out>
void check_row_reduction(Reduction kind, index_t rows, index_t cols, index_t ld) {
  SCOPED_TRACE(::testing::Message() << "rows " << rows << " cols " << cols << " ld " << ld << " kind " << int(kind)
                                    << " T " << sizeof(T) << " Out " << sizeof(Out));
  const Context ctx = Context::host(2);
  const Strided<T> a(rows, cols, ld, unsigned(rows * 7 + cols));
  std::vector<T> x(static_cast<std::size_t>(cols));
  for (index_t j = 0; j < cols; ++j) x[static_cast<std::size_t>(j)] = T(0.25 * double(j % 9) - 1.0);
  StridedOut<Out> out(rows);
  const VectorView<const T> xv{x.data(), cols, 1};
  if (kind == Reduction::sum) primitives::row_sums(ctx, a.view(), out.view());
  if (kind == Reduction::squared_norm) primitives::row_squared_norms(ctx, a.view(), out.view());
  if (kind == Reduction::squared_distance) primitives::row_squared_distances(ctx, a.view(), xv, out.view());
  EXPECT_TRUE(out.gaps_kept());
  // Summed in float64 (n eps64 sum|x|), then rounded once to Out (half an ulp of Out).
  const double round_out = std::numeric_limits<Out>::epsilon() / 2;
  for (index_t r = 0; r < rows; ++r) {
    const auto [ref, mag] = reference_row(a, x, r, kind);
    EXPECT_NEAR(double(out[r]), double(ref), round_out * std::abs(double(ref)) + double(cols) * kEps64 * double(mag))
        << "row " << r;
  }
}

TEST(RowReductions, MatchFloat64LoopsOnStridedRows) {
  for (Reduction kind : {Reduction::sum, Reduction::squared_norm, Reduction::squared_distance}) {
    const std::vector<std::tuple<index_t, index_t, index_t>> shapes = {
        {1, 1, 1}, {6, 13, 16}, {3, 4097, 4100}, {64, 1000, 1003}, {2, 20000, 20000}, {40, 0, 3}, {0, 5, 5}};
    for (auto [rows, cols, ld] : shapes) {
      check_row_reduction<float, float>(kind, rows, cols, ld);
      check_row_reduction<float, double>(kind, rows, cols, ld);
      check_row_reduction<double, double>(kind, rows, cols, ld);
    }
  }
}

TEST(RowReductions, NanStaysInItsRow) {
  const Context ctx = Context::host(2);
  for (index_t cols : {index_t(10), index_t(9000)}) {
    Strided<double> a(4, cols, cols + 1, 3);
    a.data[static_cast<std::size_t>(2 * a.ld + cols / 2)] = kNaN;
    std::vector<double> out(4), norms(4);
    primitives::row_sums(ctx, a.view(), vector_view(out.data(), 4));
    primitives::row_squared_norms(ctx, a.view(), vector_view(norms.data(), 4));
    for (index_t r = 0; r < 4; ++r) {
      const auto [ref, mag] = reference_row(a, {}, r, Reduction::sum);
      if (r == 2) {
        EXPECT_TRUE(std::isnan(out[2]));
        EXPECT_TRUE(std::isnan(norms[2]));
      } else {
        EXPECT_NEAR(out[static_cast<std::size_t>(r)], double(ref), double(cols) * kEps64 * double(mag));
        EXPECT_TRUE(std::isfinite(norms[static_cast<std::size_t>(r)]));
      }
    }
  }
}

TEST(RowReductions, BitIdenticalForOneAndTwoThreads) {
  // Sizes past the serial threshold, with one tile per row and with many.
  const std::vector<std::pair<index_t, index_t>> shapes = {{3000, 100}, {5, 50000}, {64, 4096 * 3 + 17}};
  for (auto [rows, cols] : shapes) {
    const Strided<double> a(rows, cols, cols + 2, 5);
    std::vector<double> one(static_cast<std::size_t>(rows)), two(static_cast<std::size_t>(rows));
    primitives::row_squared_norms(Context::host(1), a.view(), vector_view(one.data(), rows));
    primitives::row_squared_norms(Context::host(2), a.view(), vector_view(two.data(), rows));
    for (index_t r = 0; r < rows; ++r) ASSERT_TRUE(same_bits(one[static_cast<std::size_t>(r)], two[static_cast<std::size_t>(r)])) << "row " << r;
  }
}

TEST(RowReductions, ARowGetsTheSameBitsHoweverManyRowsAreSummed) {
  // Chain c's norm must not depend on how many chains run beside it.
  const index_t rows = 16, cols = 4096 * 2 + 300;
  const Strided<float> a(rows, cols, cols, 9);
  std::vector<double> all(static_cast<std::size_t>(rows));
  primitives::row_squared_norms(Context::host(2), a.view(), vector_view(all.data(), rows));
  for (index_t r = 0; r < rows; ++r) {
    double alone = 0;
    const MatrixView<const float> row{a.data.data() + r * cols, 1, cols, cols};
    primitives::row_squared_norms(Context::host(1), row, vector_view(&alone, 1));
    ASSERT_TRUE(same_bits(alone, all[static_cast<std::size_t>(r)])) << "row " << r;
  }
}

TEST(RowReductions, BadArgumentsAreNamed) {
  const Context ctx = Context::host();
  std::vector<double> a(12), out(3), x(4);
  expect_error<ShapeMismatch>([&] { primitives::row_sums(ctx, MatrixView<const double>{a.data(), 4, 3, 3}, vector_view(out.data(), 3)); },
                              {"primitives::row_sums", "out", "(4)", "got 3"});
  expect_error<InvalidArgument>(
      [&] { primitives::row_squared_norms(ctx, MatrixView<const double>{a.data(), 3, 4, 3}, vector_view(out.data(), 3)); },
      {"primitives::row_squared_norms", "A", "leading dimension"});
  expect_error<ShapeMismatch>(
      [&] {
        primitives::row_squared_distances(ctx, MatrixView<const double>{a.data(), 3, 4, 4}, VectorView<const double>{x.data(), 3, 1},
                                          vector_view(out.data(), 3));
      },
      {"primitives::row_squared_distances", "x", "(4)", "got 3"});
  expect_error<InvalidArgument>(
      [&] { primitives::row_sums(ctx, MatrixView<const double>{a.data(), 3, 4, 4}, VectorView<double>{out.data(), 3, 0}); },
      {"primitives::row_sums", "out", "stride"});
}

// ---------------------------------------------------------------------------------------------
// Distinct rows
// ---------------------------------------------------------------------------------------------

using Row = std::vector<std::uint64_t>;

std::uint64_t splitmix(std::uint64_t x) {  // a bijection of 64-bit words
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Rows [n, words] stored with leading dimension ld; the padding holds junk that differs per row.
struct Patterns {
  std::vector<std::uint64_t> data;
  index_t n, words, ld;
  Patterns(const std::vector<Row>& rows, index_t w, index_t l) : data(rows.size() * static_cast<std::size_t>(l)), n(index_t(rows.size())), words(w), ld(l) {
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < l; ++j)
        data[static_cast<std::size_t>(i * l + j)] = j < w ? rows[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] : splitmix(std::uint64_t(i * 1000 + j));
  }
  MatrixView<const std::uint64_t> view() const { return {data.data(), n, words, ld}; }
};

// The oracle: a std::map from row to class, classes opened in order of first appearance.
struct Oracle {
  std::vector<std::int64_t> ids, counts, first;
  explicit Oracle(const std::vector<Row>& rows) {
    std::map<Row, std::int64_t> classes;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto [it, opened] = classes.emplace(rows[i], std::int64_t(counts.size()));
      if (opened) {
        counts.push_back(0);
        first.push_back(std::int64_t(i));
      }
      ids.push_back(it->second);
      ++counts[static_cast<std::size_t>(it->second)];
    }
  }
};

void check_distinct(const Context& ctx, const std::vector<Row>& rows, index_t words, index_t ld) {
  SCOPED_TRACE(::testing::Message() << "N " << rows.size() << " W " << words << " ld " << ld);
  const Patterns p(rows, words, ld);
  const Oracle oracle(rows);
  const auto full = primitives::distinct_rows(ctx, p.view(), {.ids = true, .counts = true});
  EXPECT_EQ(full.count, index_t(oracle.counts.size()));
  EXPECT_EQ(full.ids.to_vector(ctx), oracle.ids);
  EXPECT_EQ(full.counts.to_vector(ctx), oracle.counts);
  EXPECT_EQ(full.first.to_vector(ctx), oracle.first);
  const auto bare = primitives::distinct_rows(ctx, p.view());
  EXPECT_EQ(bare.count, full.count);
  EXPECT_TRUE(bare.ids.empty() && bare.counts.empty() && bare.first.empty());
}

// n rows drawn from `distinct` random patterns of `words` words, some words with the top bit set.
std::vector<Row> duplicated(index_t n, index_t words, index_t distinct, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<Row> base(static_cast<std::size_t>(distinct), Row(static_cast<std::size_t>(words)));
  for (auto& r : base)
    for (auto& w : r) w = gen();
  // Rows that differ in one word only, at each end, so every word decides some comparison.
  if (distinct >= 3 && words >= 2) {
    base[1] = base[0];
    base[1].back() ^= 1;
    base[2] = base[0];
    base[2].front() ^= std::uint64_t(1) << 63;
  }
  std::vector<Row> rows(static_cast<std::size_t>(n));
  for (auto& r : rows) r = base[static_cast<std::size_t>(gen() % std::uint64_t(distinct))];
  return rows;
}

TEST(DistinctRows, ManyDuplicatesMatchTheMapOracle) {
  const Context ctx = Context::host(2);
  for (index_t words : {1, 2, 3, 16}) {
    check_distinct(ctx, duplicated(5000, words, 37, std::uint64_t(words)), words, words);
    check_distinct(ctx, duplicated(5000, words, 37, std::uint64_t(words)), words, words + 3);  // strided rows
  }
}

TEST(DistinctRows, AllEqualRowsAreOneClass) {
  const Context ctx = Context::host(2);
  check_distinct(ctx, std::vector<Row>(1000, Row{0xdeadbeefULL, ~0ULL}), 2, 2);
  const auto r = primitives::distinct_rows(ctx, Patterns(std::vector<Row>(1000, Row{7}), 1, 2).view(),
                                           {.ids = true, .counts = true});
  EXPECT_EQ(r.count, 1);
  EXPECT_EQ(r.counts.to_vector(ctx), std::vector<std::int64_t>{1000});
  EXPECT_EQ(r.first.to_vector(ctx), std::vector<std::int64_t>{0});
}

TEST(DistinctRows, AllDistinctRowsAreTheirOwnClasses) {
  const Context ctx = Context::host(2);
  for (index_t words : {1, 2}) {
    std::vector<Row> rows(3000, Row(static_cast<std::size_t>(words), 0));
    for (std::size_t i = 0; i < rows.size(); ++i) rows[i].back() = splitmix(i);  // distinct by construction
    check_distinct(ctx, rows, words, words + 1);
    EXPECT_EQ(primitives::distinct_rows(ctx, Patterns(rows, words, words).view()).count, 3000);
  }
}

TEST(DistinctRows, ClassesAreNumberedByFirstAppearance) {
  const Context ctx = Context::host(1);
  const std::vector<Row> rows = {{1ULL << 63, 0}, {0, 5}, {1, 0}, {0, 5}, {0, 4}, {1ULL << 63, 0}};
  const auto r = primitives::distinct_rows(ctx, Patterns(rows, 2, 2).view(), {.ids = true, .counts = true});
  EXPECT_EQ(r.count, 4);
  EXPECT_EQ(r.ids.to_vector(ctx), (std::vector<std::int64_t>{0, 1, 2, 1, 3, 0}));
  EXPECT_EQ(r.counts.to_vector(ctx), (std::vector<std::int64_t>{2, 2, 1, 1}));
  EXPECT_EQ(r.first.to_vector(ctx), (std::vector<std::int64_t>{0, 1, 2, 4}));
}

TEST(DistinctRows, RowsSharingAKeyAreStillToldApart) {
  // Rows built to share their 64-bit key: h = mix64(mix64(h0 ^ a) ^ b), so (a', b') with
  // b' = b ^ mix64(h0 ^ a) ^ mix64(h0 ^ a') collides with (a, b). The words must decide.
  const std::uint64_t h0 = 0x9e3779b97f4a7c15ULL, a = 12345, b = 678;
  const auto partner = [&](std::uint64_t a2) { return Row{a2, b ^ kern::mix64(h0 ^ a) ^ kern::mix64(h0 ^ a2)}; };
  const Row x{a, b}, y = partner(999), z = partner(1ULL << 63);
  std::vector<Row> rows = {x, y, x, z, y, {1, 2}, x, z, {1, 2}, y};
  for (index_t i = 0; i < 3000; ++i) rows.push_back(i % 3 == 0 ? x : i % 3 == 1 ? y : Row{std::uint64_t(i % 7), 5});
  for (index_t ld : {2, 4}) {
    const Patterns p(rows, 2, ld);
    ASSERT_EQ(kern::row_key(p.view(), 0), kern::row_key(p.view(), 1));  // the collision is real
    ASSERT_EQ(kern::row_key(p.view(), 0), kern::row_key(p.view(), 3));
    check_distinct(Context::host(2), rows, 2, ld);
  }
  // Three words: the collision of the first two carries through the third.
  std::vector<Row> wide;
  for (const Row& r : rows) wide.push_back({r[0], r[1], 42});
  check_distinct(Context::host(2), wide, 3, 3);
}

TEST(DistinctRows, EmptyInputsAndZeroWords) {
  const Context ctx = Context::host(2);
  std::uint64_t unused = 0;
  const auto none = primitives::distinct_rows(ctx, MatrixView<const std::uint64_t>{&unused, 0, 2, 2},
                                              {.ids = true, .counts = true});
  EXPECT_EQ(none.count, 0);
  EXPECT_EQ(none.ids.size(), 0);
  EXPECT_EQ(none.counts.size(), 0);
  EXPECT_EQ(none.first.size(), 0);
  // W = 0: every row is the empty pattern.
  std::vector<std::uint64_t> junk(5, 3);
  const auto zero = primitives::distinct_rows(ctx, MatrixView<const std::uint64_t>{junk.data(), 5, 0, 1},
                                              {.ids = true, .counts = true});
  EXPECT_EQ(zero.count, 1);
  EXPECT_EQ(zero.ids.to_vector(ctx), std::vector<std::int64_t>(5, 0));
  EXPECT_EQ(zero.counts.to_vector(ctx), std::vector<std::int64_t>{5});
  EXPECT_EQ(zero.first.to_vector(ctx), std::vector<std::int64_t>{0});
}

TEST(DistinctRows, ColumnBlockCountsThoseWordsAlone) {
  // Per-layer counts: the words of one layer are a column block of the packed matrix.
  const Context ctx = Context::host(2);
  const auto rows = duplicated(4000, 3, 200, 17);
  const Patterns p(rows, 3, 3);
  std::vector<Row> middle(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) middle[i] = {rows[i][1]};
  const auto r = primitives::distinct_rows(ctx, p.view().block(0, 1, p.n, 1), {.ids = true, .counts = true});
  const Oracle oracle(middle);
  EXPECT_EQ(r.count, index_t(oracle.counts.size()));
  EXPECT_EQ(r.ids.to_vector(ctx), oracle.ids);
  EXPECT_EQ(r.counts.to_vector(ctx), oracle.counts);
}

TEST(DistinctRows, SameResultForOneAndTwoThreads) {
  // 10% distinct, past the threshold where the host loops and sorts run threaded.
  const auto rows = duplicated(100000, 2, 10000, 23);
  const Patterns p(rows, 2, 2);
  const Context ctx = Context::host(1), ctx2 = Context::host(2);
  const auto one = primitives::distinct_rows(ctx, p.view(), {.ids = true, .counts = true});
  const auto two = primitives::distinct_rows(ctx2, p.view(), {.ids = true, .counts = true});
  const Oracle oracle(rows);
  EXPECT_EQ(one.count, index_t(oracle.counts.size()));
  EXPECT_EQ(one.ids.to_vector(ctx), oracle.ids);
  EXPECT_EQ(two.ids.to_vector(ctx), oracle.ids);
  EXPECT_EQ(one.counts.to_vector(ctx), oracle.counts);
  EXPECT_EQ(two.counts.to_vector(ctx), oracle.counts);
  EXPECT_EQ(two.first.to_vector(ctx), oracle.first);
}

TEST(DistinctRows, BadLeadingDimensionIsNamed) {
  std::vector<std::uint64_t> a(8);
  expect_error<InvalidArgument>(
      [&] { primitives::distinct_rows(Context::host(), MatrixView<const std::uint64_t>{a.data(), 4, 2, 1}); },
      {"primitives::distinct_rows", "rows", "leading dimension"});
}

// ---------------------------------------------------------------------------------------------
// Strided-batched GEMM (blas::gemm_strided_batched) against naive float64 loops
// ---------------------------------------------------------------------------------------------

// C_b = alpha op(A_b) op(B_b) + beta C_b for b < batch, every operand strided (ld > cols, and a
// gap between batch items), the padding NaN in A and B (never to be read) and a sentinel in C
// (never to be written).
template <class T>
void check_strided_batched(blas::Op op_a, blas::Op op_b, index_t batch, index_t m, index_t n, index_t k, T alpha,
                           T beta) {
  SCOPED_TRACE(::testing::Message() << "op_a " << int(op_a) << " op_b " << int(op_b) << " batch " << batch << " m "
                                    << m << " n " << n << " k " << k << " T " << sizeof(T));
  const Context ctx = Context::host(2);
  const bool ta = op_a == blas::Op::trans, tb = op_b == blas::Op::trans;
  const index_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  const index_t lda = ac + 3, ldb = bc + 2, ldc = n + 5;
  const index_t sa = ar * lda + 7, sb = br * ldb + 1, sc = m * ldc + 4;
  const T sentinel = T(-777.25);
  std::vector<T> a(static_cast<std::size_t>(std::max<index_t>(batch, 1) * sa), T(kNaN)), b(static_cast<std::size_t>(std::max<index_t>(batch, 1) * sb), T(kNaN)),
      c(static_cast<std::size_t>(std::max<index_t>(batch, 1) * sc), sentinel);
  std::mt19937 gen(unsigned(batch * 100 + m + n + k));
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (index_t q = 0; q < batch; ++q) {
    for (index_t i = 0; i < ar; ++i)
      for (index_t j = 0; j < ac; ++j) a[static_cast<std::size_t>(q * sa + i * lda + j)] = T(u(gen));
    for (index_t i = 0; i < br; ++i)
      for (index_t j = 0; j < bc; ++j) b[static_cast<std::size_t>(q * sb + i * ldb + j)] = T(u(gen));
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) c[static_cast<std::size_t>(q * sc + i * ldc + j)] = T(u(gen));
  }
  const std::vector<T> c0 = c;
  blas::gemm_strided_batched<T>(ctx, op_a, op_b, alpha, {a.data(), ar, ac, lda}, sa, {b.data(), br, bc, ldb}, sb, beta,
                                {c.data(), m, n, ldc}, sc, batch);
  const double eps = std::numeric_limits<T>::epsilon();
  for (index_t q = 0; q < batch; ++q)
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        double ref = 0, mag = 0;
        for (index_t p = 0; p < k; ++p) {
          const double x = double(ta ? a[static_cast<std::size_t>(q * sa + p * lda + i)] : a[static_cast<std::size_t>(q * sa + i * lda + p)]);
          const double y = double(tb ? b[static_cast<std::size_t>(q * sb + j * ldb + p)] : b[static_cast<std::size_t>(q * sb + p * ldb + j)]);
          ref += x * y;
          mag += std::abs(x * y);
        }
        const double cij = double(c0[static_cast<std::size_t>(q * sc + i * ldc + j)]);
        const double want = double(alpha) * ref + double(beta) * cij;
        const double bound = 2 * double(k + 2) * eps * (std::abs(double(alpha)) * mag + std::abs(double(beta) * cij));
        ASSERT_NEAR(double(c[static_cast<std::size_t>(q * sc + i * ldc + j)]), want, bound) << "batch " << q << " (" << i << ", " << j << ")";
      }
  // Padding and the gaps between batch items, and every C_b with b >= batch, untouched.
  for (std::size_t e = 0; e < c.size(); ++e) {
    const index_t q = index_t(e) / sc, off = index_t(e) % sc;
    const bool inside = q < batch && off < m * ldc && off % ldc < n;
    if (!inside) {
      ASSERT_EQ(c[e], sentinel) << "element " << e << " written";
    }
  }
}

TEST(GemmStridedBatched, MatchesFloat64LoopsForEveryOpCombination) {
  for (blas::Op op_a : {blas::Op::none, blas::Op::trans})
    for (blas::Op op_b : {blas::Op::none, blas::Op::trans}) {
      for (index_t batch : {0, 1, 3}) {
        check_strided_batched<float>(op_a, op_b, batch, 7, 5, 9, 0.75f, -0.5f);
        check_strided_batched<double>(op_a, op_b, batch, 7, 5, 9, 0.75, -0.5);
      }
      check_strided_batched<double>(op_a, op_b, 4, 33, 17, 64, -1.25, 2.0);
      check_strided_batched<float>(op_a, op_b, 2, 1, 1, 1, 2.0f, 0.0f);
    }
}

TEST(GemmStridedBatched, EmptyInnerDimensionScalesC) {
  // k = 0: op(A) op(B) is the zero matrix, so C_b = beta C_b.
  check_strided_batched<double>(blas::Op::none, blas::Op::none, 2, 3, 4, 0, 1.5, -0.5);
}

TEST(GemmStridedBatched, NegativeBatchIsRefused) {
  std::vector<double> a(4), b(4), c(4);
  expect_error<InvalidArgument>(
      [&] {
        blas::gemm_strided_batched<double>(Context::host(), blas::Op::none, blas::Op::none, 1.0, {a.data(), 2, 2, 2}, 4,
                                           {b.data(), 2, 2, 2}, 4, 0.0, {c.data(), 2, 2, 2}, 4, -1);
      },
      {"gemm_strided_batched", "batch"});
}

// ---------------------------------------------------------------------------------------------
// Gathers (host and cuda cases)
// ---------------------------------------------------------------------------------------------

class Gather : public test::BackendTest {};

template <class T>
void check_gather_rows(const Context& ctx) {
  // src [9, 5] with ld 7 (NaN padding: never read), indices with stride 2 (repeats, first and last
  // row), out [5, 5] with ld 6 (sentinel padding: never written).
  const index_t n = 9, d = 5, lds = 7, ldo = 6;
  const std::vector<std::int64_t> rows = {3, -99, 0, -99, 8, -99, 3, -99, 5};  // every other one is used
  const index_t k = 5;
  const auto src_host = test::with_ld(test::random_values<T>(n * d, 61), n, d, lds);
  const auto src = Array<T>::from_host(ctx, {n, lds}, src_host);
  const auto idx = Array<std::int64_t>::from_host(ctx, {index_t(rows.size())}, rows);
  auto out = Array<T>::from_host(ctx, {k, ldo}, std::vector<T>(std::size_t(k * ldo), test::kSentinel<T>));
  primitives::gather_rows<T>(ctx, test::strided(src, d), {idx.data(), k, 2, idx.backend(), idx.device()},
                             test::strided(out, d));
  const auto got = out.to_vector(ctx);
  EXPECT_EQ(test::padding_changed(got, k, d, ldo), 0);
  for (index_t i = 0; i < k; ++i)
    for (index_t j = 0; j < d; ++j)
      EXPECT_EQ(got[std::size_t(i * ldo + j)], src_host[std::size_t(rows[std::size_t(2 * i)] * lds + j)]) << i << ", " << j;
  // No indices: nothing written.
  primitives::gather_rows<T>(ctx, test::strided(src, d), {idx.data(), 0, 1, idx.backend(), idx.device()},
                             test::strided(out, d).block(0, 0, 0, d));
  EXPECT_EQ(out.to_vector(ctx), got);
}

TEST_P(Gather, RowsAreCopiedExactlyFromStridedViews) {
  check_gather_rows<float>(ctx());
  check_gather_rows<double>(ctx());
}

TEST_P(Gather, Int64ElementsAreCopiedExactly) {
  std::vector<std::int64_t> src(11);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = std::int64_t(1000 + 7 * i) * (i % 2 ? -1 : 1);
  const std::vector<std::int64_t> idx = {10, 0, 0, 4, 9, 1};
  const auto dsrc = Array<std::int64_t>::from_host(ctx(), {11}, src);
  const auto didx = Array<std::int64_t>::from_host(ctx(), {6}, idx);
  // out with stride 3: the elements between stay untouched.
  auto out = Array<std::int64_t>::from_host(ctx(), {18}, std::vector<std::int64_t>(18, -777));
  primitives::gather(ctx(), dsrc.vector(), didx.vector(), {out.data(), 6, 3, out.backend(), out.device()});
  const auto got = out.to_vector(ctx());
  for (std::size_t e = 0; e < got.size(); ++e)
    EXPECT_EQ(got[e], e % 3 ? std::int64_t(-777) : src[std::size_t(idx[e / 3])]) << "element " << e;
}

TEST_P(Gather, OutOfRangeIndicesThrowOnHostAndNeverReadOutsideOnCuda) {
  const index_t n = 4, d = 3;
  const auto src_host = test::random_values<double>(n * d, 62);
  const auto src = Array<double>::from_host(ctx(), {n, d}, src_host);
  const auto idx = Array<std::int64_t>::from_host(ctx(), {3}, std::vector<std::int64_t>{1, 4, 0});
  auto out = Array<double>::from_host(ctx(), {3, d}, std::vector<double>(std::size_t(3 * d), test::kSentinel<double>));
  const auto lsrc = Array<std::int64_t>::from_host(ctx(), {4}, std::vector<std::int64_t>{5, 6, 7, 8});
  const auto lidx = Array<std::int64_t>::from_host(ctx(), {2}, std::vector<std::int64_t>{-1, 2});
  auto lout = Array<std::int64_t>::from_host(ctx(), {2}, std::vector<std::int64_t>{-777, -777});
  if (ctx().is_host()) {
    expect_error<InvalidArgument>([&] { primitives::gather_rows<double>(ctx(), src.matrix(), idx.vector(), out.matrix()); },
                                  {"primitives::gather_rows", "rows[1] = 4", "outside [0, 4)"});
    EXPECT_EQ(out.to_vector(ctx()), std::vector<double>(std::size_t(3 * d), test::kSentinel<double>)) << "written before the check";
    expect_error<InvalidArgument>([&] { primitives::gather(ctx(), lsrc.vector(), lidx.vector(), lout.vector()); },
                                  {"primitives::gather", "idx[0] = -1", "outside [0, 4)"});
    EXPECT_EQ(lout.to_vector(ctx()), (std::vector<std::int64_t>{-777, -777}));
    return;
  }
  // cuda: not checked; the bad index's row is NaN and its label -1, the others exact.
  primitives::gather_rows<double>(ctx(), src.matrix(), idx.vector(), out.matrix());
  primitives::gather(ctx(), lsrc.vector(), lidx.vector(), lout.vector());
  const auto got = out.to_vector(ctx());
  for (index_t j = 0; j < d; ++j) {
    EXPECT_EQ(got[std::size_t(j)], src_host[std::size_t(d + j)]);
    EXPECT_TRUE(std::isnan(got[std::size_t(d + j)]));
    EXPECT_EQ(got[std::size_t(2 * d + j)], src_host[std::size_t(j)]);
  }
  EXPECT_EQ(lout.to_vector(ctx()), (std::vector<std::int64_t>{-1, 7}));
}

TEST_P(Gather, BadShapesThrowNamingTheArgument) {
  const auto src = Array<float>::from_host(ctx(), {4, 3}, std::vector<float>(12, 1.0f));
  const auto idx = Array<std::int64_t>::from_host(ctx(), {2}, std::vector<std::int64_t>{0, 1});
  Array<float> out_rows(ctx(), {3, 3}), out_cols(ctx(), {2, 2});
  expect_error<ShapeMismatch>([&] { primitives::gather_rows<float>(ctx(), src.matrix(), idx.vector(), out_rows.matrix()); },
                              {"primitives::gather_rows", "out must be 2x3", "got 3x3"});
  expect_error<ShapeMismatch>([&] { primitives::gather_rows<float>(ctx(), src.matrix(), idx.vector(), out_cols.matrix()); },
                              {"out must be 2x3", "got 2x2"});
  Array<std::int64_t> lout(ctx(), {3});
  expect_error<ShapeMismatch>([&] { primitives::gather(ctx(), idx.vector(), idx.vector(), lout.vector()); },
                              {"primitives::gather", "out must have one element per index (2)"});
  // Host memory given to a cuda context (or the reverse) is named too.
  if (ctx().is_cuda()) {
    std::vector<std::int64_t> host_idx = {0, 1};
    Array<float> out(ctx(), {2, 3});
    expect_error<InvalidArgument>(
        [&] { primitives::gather_rows<float>(ctx(), src.matrix(), vector_view<const std::int64_t>(host_idx.data(), 2), out.matrix()); },
        {"rows lives on host"});
  }
}

DYNASCOPE_BACKEND_TESTS(Gather);

}  // namespace
}  // namespace dynascope
