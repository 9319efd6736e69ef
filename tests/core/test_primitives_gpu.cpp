// cuda against the host twin for the shared primitives: row reductions (segmented sums) and
// distinct-row counting. The host results are themselves checked against float64 loops and a
// std::map oracle in test_primitives.cpp. Skips in the fixture when no device is usable.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "dynascope/primitives.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using test::GpuTest;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

template <class T>
Array<T> upload(const Context& dev, const std::vector<T>& v) {
  return Array<T>::from_host(dev, {index_t(v.size())}, v);
}

class PrimitivesGpu : public GpuTest {};

// A [rows, cols] with leading dimension ld (NaN padding, so reading past a row shows), a few NaN
// items in chosen rows, reduced on both backends into out with stride 2 (a sentinel in the gaps).
template <class T, class Out>
void compare_row_reductions(const Context& host, const Context& dev, index_t rows, index_t cols, index_t ld,
                            const std::vector<index_t>& nan_rows) {
  SCOPED_TRACE(::testing::Message() << "rows " << rows << " cols " << cols << " ld " << ld << " T " << sizeof(T)
                                    << " Out " << sizeof(Out));
  std::vector<T> a(static_cast<std::size_t>(std::max<index_t>(rows * ld, 1)), T(kNaN)), x(static_cast<std::size_t>(cols));
  std::mt19937 gen(unsigned(rows + 3 * cols));
  std::uniform_real_distribution<double> u(-2.0, 2.0);
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) a[static_cast<std::size_t>(i * ld + j)] = T(u(gen));
  for (auto& v : x) v = T(u(gen));
  if (cols > 0)
    for (index_t r : nan_rows) a[static_cast<std::size_t>(r * ld + cols / 3)] = T(kNaN);
  const Array<T> da = upload(dev, a), dx = upload(dev, x);
  const MatrixView<const T> ha{a.data(), rows, cols, ld}, dav{da.data(), rows, cols, ld, Backend::cuda};
  const VectorView<const T> hx{x.data(), cols, 1}, dxv{dx.data(), cols, 1, Backend::cuda};
  const Out sentinel = Out(-777.25);
  for (int kind = 0; kind < 3; ++kind) {
    std::vector<Out> ho(static_cast<std::size_t>(2 * rows + 1), sentinel);
    Array<Out> dout = upload(dev, ho);
    const VectorView<Out> hov{ho.data(), rows, 2}, dov{dout.data(), rows, 2, Backend::cuda};
    if (kind == 0) {
      primitives::row_sums(host, ha, hov);
      primitives::row_sums(dev, dav, dov);
    } else if (kind == 1) {
      primitives::row_squared_norms(host, ha, hov);
      primitives::row_squared_norms(dev, dav, dov);
    } else {
      primitives::row_squared_distances(host, ha, hx, hov);
      primitives::row_squared_distances(dev, dav, dxv, dov);
    }
    const std::vector<Out> got = dout.to_vector(dev);
    for (index_t r = 0; r < rows; ++r) {
      const double h = double(ho[static_cast<std::size_t>(2 * r)]), d = double(got[static_cast<std::size_t>(2 * r)]);
      if (std::isnan(h)) {
        EXPECT_TRUE(std::isnan(d)) << "kind " << kind << " row " << r;
        continue;
      }
      // Both sum in float64 in different orders: they differ by rounding of the float64 sum,
      // far below the one rounding into Out.
      double mag = 0;  // sum of |term|
      for (index_t j = 0; j < cols; ++j) {
        const double v = double(a[static_cast<std::size_t>(r * ld + j)]), e = v - double(x[static_cast<std::size_t>(j)]);
        mag += kind == 0 ? std::abs(v) : kind == 1 ? v * v : e * e;
      }
      const double bound = std::numeric_limits<Out>::epsilon() * std::abs(h) +
                           2 * double(cols) * std::numeric_limits<double>::epsilon() * mag;
      EXPECT_NEAR(d, h, bound) << "kind " << kind << " row " << r;
    }
    for (index_t r = 0; r < rows; ++r) EXPECT_EQ(got[static_cast<std::size_t>(2 * r + 1)], sentinel) << "gap after row " << r;
    for (index_t r : nan_rows) {
      if (r < rows && cols > 0) {
        EXPECT_TRUE(std::isnan(double(got[static_cast<std::size_t>(2 * r)]))) << "NaN row " << r;
      }
    }
  }
}

TEST_F(PrimitivesGpu, RowReductionsMatchHost) {
  Context dev = cuda();
  // One tile per row, several tiles per row, strided, empty rows and no rows.
  compare_row_reductions<float, float>(host, dev, 64, 1000, 1003, {5, 63});
  compare_row_reductions<float, double>(host, dev, 64, 100000, 100000, {0});
  compare_row_reductions<double, double>(host, dev, 3, 4097 * 5, 4097 * 5 + 1, {1});
  compare_row_reductions<double, double>(host, dev, 70000, 3, 5, {69999});
  compare_row_reductions<float, double>(host, dev, 17, 0, 2, {});
  compare_row_reductions<double, double>(host, dev, 0, 10, 10, {});
}

TEST_F(PrimitivesGpu, RowReductionOfOneRowDoesNotDependOnTheOthers) {
  // Chain c's value is the same whether 1 or 16 chains are reduced (the tiles depend on the row
  // length only): bit-identical on the device too.
  Context dev = cuda();
  const index_t rows = 16, cols = 50000;
  std::vector<float> a(static_cast<std::size_t>(rows * cols));
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& v : a) v = u(gen);
  const Array<float> da = upload(dev, a);
  Array<double> all(dev, {rows}), one(dev, {1});
  primitives::row_squared_norms(dev, MatrixView<const float>{da.data(), rows, cols, cols, Backend::cuda}, all.vector());
  const auto got = all.to_vector(dev);
  for (index_t r = 0; r < rows; ++r) {
    primitives::row_squared_norms(dev, MatrixView<const float>{da.data() + r * cols, 1, cols, cols, Backend::cuda},
                                  one.vector());
    const double alone = one.to_vector(dev)[0];
    EXPECT_EQ(std::memcmp(&alone, &got[static_cast<std::size_t>(r)], sizeof alone), 0) << "row " << r;
  }
}

// Rows drawn from `distinct` random patterns, stored with leading dimension ld (junk padding).
std::vector<std::uint64_t> patterns(index_t n, index_t words, index_t ld, index_t distinct, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<std::uint64_t> base(static_cast<std::size_t>(distinct * words));
  for (auto& w : base) w = gen();
  std::vector<std::uint64_t> out(static_cast<std::size_t>(std::max<index_t>(n * ld, 1)));
  for (index_t i = 0; i < n; ++i) {
    const index_t k = index_t(gen() % std::uint64_t(distinct));
    for (index_t j = 0; j < ld; ++j) out[static_cast<std::size_t>(i * ld + j)] = j < words ? base[static_cast<std::size_t>(k * words + j)] : gen();
  }
  return out;
}

void compare_distinct(const Context& host, const Context& dev, index_t n, index_t words, index_t ld, index_t distinct) {
  SCOPED_TRACE(::testing::Message() << "N " << n << " W " << words << " ld " << ld);
  const auto rows = patterns(n, words, ld, distinct, std::uint64_t(n + words));
  const Array<std::uint64_t> drows = upload(dev, rows);
  const primitives::DistinctRowsOptions all{.ids = true, .counts = true};
  const auto h = primitives::distinct_rows(host, MatrixView<const std::uint64_t>{rows.data(), n, words, ld}, all);
  const auto d = primitives::distinct_rows(dev, MatrixView<const std::uint64_t>{drows.data(), n, words, ld, Backend::cuda}, all);
  EXPECT_EQ(d.count, h.count);
  ASSERT_EQ(d.ids.backend(), Backend::cuda);
  EXPECT_EQ(d.ids.to_vector(dev), h.ids.to_vector(host));
  EXPECT_EQ(d.counts.to_vector(dev), h.counts.to_vector(host));
  EXPECT_EQ(d.first.to_vector(dev), h.first.to_vector(host));
}

TEST_F(PrimitivesGpu, DistinctRowsMatchHost) {
  Context dev = cuda();
  compare_distinct(host, dev, 100000, 2, 2, 10000);  // 10% distinct
  compare_distinct(host, dev, 5000, 1, 3, 37);       // strided, many duplicates
  compare_distinct(host, dev, 3000, 16, 17, 3000);   // 1024-bit patterns, mostly distinct
  compare_distinct(host, dev, 1000, 3, 3, 1);        // all equal
  compare_distinct(host, dev, 0, 2, 2, 1);           // no rows
  compare_distinct(host, dev, 10, 0, 1, 1);          // zero words
}

TEST_F(PrimitivesGpu, DistinctRowsPastOneScanChunk) {
  // The device scan runs in chunks of 2^24 items, each raised by the sum before it.
  Context dev = cuda();
  compare_distinct(host, dev, (index_t{1} << 24) * 2 + 4099, 1, 1, 100000);
}

}  // namespace
}  // namespace dynascope
