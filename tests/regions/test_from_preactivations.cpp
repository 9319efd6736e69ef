// Local complexity and patterns from the caller's pre-activations, on both backends
// (FromPreactivations.Case/host and /cuda), against naive float64 loops: the vertices against
// x +- r v_p with the frames of random_frame, the sign-change counts and the distinct patterns
// against sign vectors compared one by one, and the whole pipeline on an Mlp (vertices, a naive
// forward pass, the counts layer by layer) against the naive vertex loop.
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "dynascope/regions.hpp"
#include "support/backend_test.hpp"
#include "support/naive_mlp.hpp"
#include "support/test_support.hpp"

namespace dynascope::test {
namespace {

class FromPreactivations : public BackendTest {};

// Naive count: columns of z whose sign differs between rows of one sample's block.
std::vector<std::int32_t> naive_counts(const std::vector<double>& z, index_t rows, index_t cols, index_t vertices) {
  std::vector<std::int32_t> out;
  for (index_t s = 0; s < rows / vertices; ++s) {
    std::int32_t c = 0;
    for (index_t j = 0; j < cols; ++j) {
      std::set<bool> signs;
      for (index_t v = 0; v < vertices; ++v) signs.insert(z[std::size_t((s * vertices + v) * cols + j)] > 0);
      c += signs.size() > 1;
    }
    out.push_back(c);
  }
  return out;
}

TEST_P(FromPreactivations, VerticesAreTheCrossPolytopeOfTheFrames) {
  const index_t n = 9, d = 6, p = 3, first = 4;
  const double r = 0.25;
  const auto xv = random_values<double>(n * d, 11);
  const auto xs = Array<double>::from_host(ctx(), {n, 8}, with_ld(xv, n, d, 8));  // strided input
  for (regions::Frame kind : {regions::Frame::shared, regions::Frame::per_sample}) {
    regions::LcOptions o;
    o.radius = r;
    o.dims = p;
    o.seed = 5;
    o.frame = kind;
    Array<double> out(ctx(), {n * 2 * p, d});
    regions::cross_polytope_vertices<double>(ctx(), strided(xs, d), o, out.matrix(), first);
    const auto got = out.to_vector(ctx());
    for (index_t s = 0; s < n; ++s) {
      // The frame of sample first + s (per-sample frames follow the caller's whole-set index).
      const auto f = regions::random_frame<double>(ctx(), d, p, 5, kind, first + s).to_vector(ctx());
      for (index_t v = 0; v < 2 * p; ++v)
        for (index_t c = 0; c < d; ++c) {
          const double want = xv[std::size_t(s * d + c)] + ((v & 1) ? -r : r) * f[std::size_t((v / 2) * d + c)];
          EXPECT_EQ(got[std::size_t((s * 2 * p + v) * d + c)], want) << "sample " << s << " vertex " << v;
        }
    }
  }
  // A given frame: the identity's first two rows, so the vertices are x +- r e_p exactly.
  std::vector<double> eye(std::size_t(2 * d), 0.0);
  eye[0] = eye[std::size_t(d + 1)] = 1.0;
  const auto frame = Array<double>::from_host(ctx(), {2, d}, eye);
  regions::LcOptions o;
  o.radius = r;
  o.frame = regions::Frame::given;
  Array<double> out(ctx(), {n * 4, d});
  regions::cross_polytope_vertices<double>(ctx(), strided(xs, d), o, out.matrix(), 0, frame.matrix());
  const auto got = out.to_vector(ctx());
  for (index_t s = 0; s < n; ++s)
    for (index_t v = 0; v < 4; ++v)
      for (index_t c = 0; c < d; ++c)
        EXPECT_EQ(got[std::size_t((s * 4 + v) * d + c)],
                  xv[std::size_t(s * d + c)] + (c == v / 2 ? ((v & 1) ? -r : r) : 0.0));
}

TEST_P(FromPreactivations, SignChangeCountsMatchNaiveSignSets) {
  // 300 neurons (past the host sweep's 256-neuron chunk), 13 samples of 6 vertices, stored with
  // leading dimension 307 and NaN padding; ties at exactly 0 count as "not > 0".
  const index_t m = 13, vertices = 6, w = 300, ld = 307;
  auto z = random_values<double>(m * vertices * w, 21);
  for (std::size_t i = 0; i < z.size(); i += 17) z[i] = 0.0;
  // Sample 4 has every neuron of one sign at all vertices: count 0.
  for (index_t v = 0; v < vertices; ++v)
    for (index_t j = 0; j < w; ++j) z[std::size_t((4 * vertices + v) * w + j)] = 1.0 + double(j);
  const auto zs = Array<double>::from_host(ctx(), {m * vertices, ld}, with_ld(z, m * vertices, w, ld));
  // counts [20, 3] prefilled with a sentinel: only rows 5..17 of column 1 may change.
  auto counts = Array<std::int32_t>::from_host(ctx(), {20, 3}, std::vector<std::int32_t>(60, -5));
  regions::sign_change_counts<double>(ctx(), strided(zs, w), vertices, counts.matrix(), 5, 1);
  const auto got = counts.to_vector(ctx());
  const auto want = naive_counts(z, m * vertices, w, vertices);
  EXPECT_EQ(want[4], 0);
  for (index_t i = 0; i < 20; ++i)
    for (index_t c = 0; c < 3; ++c) {
      const bool written = c == 1 && i >= 5 && i < 5 + m;
      EXPECT_EQ(got[std::size_t(i * 3 + c)], written ? want[std::size_t(i - 5)] : -5) << i << "," << c;
    }
  // float32 the same, on the values rounded to float (signs are unchanged by the rounding).
  std::vector<float> zf(z.begin(), z.end());
  const auto zfs = Array<float>::from_host(ctx(), {m * vertices, w}, zf);
  Array<std::int32_t> cf(ctx(), {m, 1});
  regions::sign_change_counts<float>(ctx(), zfs.matrix(), vertices, cf.matrix(), 0, 0);
  EXPECT_EQ(cf.to_vector(ctx()), want);
}

TEST_P(FromPreactivations, MlpPipelineMatchesTheNaiveVertexLoopAndLocalComplexity) {
  const model::MlpSpec spec = model::MlpSpec::from_arch("5-30-20-3");
  const auto w = random_values<double>(spec.num_params(), 31);
  const index_t n = 17, d = 5, p = 3, layers = spec.layers();
  const auto xv = random_values<double>(n * d, 32);
  const auto x = Array<double>::from_host(ctx(), {n, d}, xv);
  const auto params = Array<double>::from_host(ctx(), {spec.num_params()}, w);
  regions::LcOptions o;
  o.radius = 0.4;
  o.dims = p;
  o.seed = 7;
  o.frame = regions::Frame::per_sample;
  // Two tiles of samples (0..9, 10..16), as a caller with a memory limit would do them.
  Array<std::int32_t> counts(ctx(), {n, layers});
  for (index_t s0 : {index_t(0), index_t(10)}) {
    const index_t m = s0 == 0 ? 10 : n - 10;
    Array<double> verts(ctx(), {m * 2 * p, d});
    regions::cross_polytope_vertices<double>(ctx(), x.matrix().block(s0, 0, m, d), o, verts.matrix(), s0);
    const auto vh = verts.to_vector(ctx());
    // The caller's network: the naive float64 forward pass, each layer's z as [m * 2P, width].
    std::vector<std::vector<double>> z(static_cast<std::size_t>(layers));
    for (index_t r = 0; r < m * 2 * p; ++r) {
      const auto t = naive::forward<double>(spec, w, std::vector<double>(vh.begin() + r * d, vh.begin() + (r + 1) * d));
      for (index_t l = 1; l <= layers; ++l) z[std::size_t(l - 1)].insert(z[std::size_t(l - 1)].end(), t.z[std::size_t(l)].begin(), t.z[std::size_t(l)].end());
    }
    for (index_t l = 0; l < layers; ++l) {
      const index_t width = spec.widths[std::size_t(l + 1)];
      const auto zl = Array<double>::from_host(ctx(), {m * 2 * p, width}, z[std::size_t(l)]);
      regions::sign_change_counts<double>(ctx(), zl.matrix(), 2 * p, counts.matrix(), s0, l);
    }
  }
  const auto got = counts.to_vector(ctx());
  // Oracle: every vertex x_i +- r v_p through the naive network, signs compared one by one.
  std::vector<std::int32_t> want;
  for (index_t i = 0; i < n; ++i) {
    const auto f = regions::random_frame<double>(ctx(), d, p, 7, regions::Frame::per_sample, i).to_vector(ctx());
    std::vector<naive::Trace<double>> t;
    for (index_t v = 0; v < 2 * p; ++v) {
      std::vector<double> xi(static_cast<std::size_t>(d));
      for (index_t c = 0; c < d; ++c) xi[std::size_t(c)] = xv[std::size_t(i * d + c)] + ((v & 1) ? -0.4 : 0.4) * f[std::size_t((v / 2) * d + c)];
      t.push_back(naive::forward<double>(spec, w, xi));
    }
    for (index_t l = 1; l <= layers; ++l) {
      std::int32_t c = 0;
      for (std::size_t j = 0; j < t[0].z[std::size_t(l)].size(); ++j) {
        std::set<bool> signs;
        for (const auto& tv : t) signs.insert(tv.z[std::size_t(l)][j] > 0);
        c += signs.size() > 1;
      }
      want.push_back(c);
    }
  }
  EXPECT_EQ(got, want);
  long total = 0;
  for (auto c : want) total += c;
  EXPECT_GT(total, 0);
  // The header's promise: an Mlp handed back layer by layer gets local_complexity's counts.
  const auto lc = regions::local_complexity<double>(ctx(), spec, params.data(), x.matrix(), o);
  EXPECT_EQ(lc.counts.to_vector(ctx()), want);
}

TEST_P(FromPreactivations, PackedPatternsMatchNaiveSignVectors) {
  // Two "layers" of 70 and 3 neurons (2 words and 1 word), 200 samples drawn from 40 distinct
  // rows with heavy duplication; a third layer of 0 neurons (no words) is allowed.
  const index_t m = 200, distinct_rows = 40, w1 = 70, w2 = 3;
  const auto base1 = random_values<double>(distinct_rows * w1, 41);
  const auto base2 = random_values<double>(distinct_rows * w2, 42);
  std::vector<double> z1, z2;
  std::vector<index_t> src;
  for (index_t i = 0; i < m; ++i) {
    // Rows 0..19 of base2 are reused for 20..39 so that layer 2 alone has fewer patterns.
    const index_t s = (i * 7919 + 3) % distinct_rows;
    src.push_back(s);
    z1.insert(z1.end(), base1.begin() + s * w1, base1.begin() + (s + 1) * w1);
    z2.insert(z2.end(), base2.begin() + (s % 20) * w2, base2.begin() + (s % 20 + 1) * w2);
  }
  const index_t words = regions::pattern_words(w1) + regions::pattern_words(w2);
  ASSERT_EQ(words, 3);
  Array<std::uint64_t> packed(ctx(), {m, words});
  // Layer 1 in two tiles of rows, layer 2 in one.
  const auto a1 = Array<double>::from_host(ctx(), {m, w1}, z1);
  const auto a2 = Array<double>::from_host(ctx(), {m, w2}, z2);
  regions::pack_signs<double>(ctx(), a1.matrix().block(0, 0, 120, w1), packed.matrix(), 0, 0);
  regions::pack_signs<double>(ctx(), a1.matrix().block(120, 0, m - 120, w1), packed.matrix(), 120, 0);
  regions::pack_signs<double>(ctx(), a2.matrix(), packed.matrix(), 0, 2);
  regions::PatternOptions po;
  po.ids = true;
  const auto r = regions::count_packed_patterns(ctx(), packed.matrix(), {0, 2, 3, 3}, po);
  // Oracle: sign vectors as std::vector<bool>, ids in order of first appearance.
  std::map<std::vector<bool>, index_t> all;
  std::set<std::vector<bool>> l1, l2;
  std::vector<std::int64_t> want_ids;
  for (index_t i = 0; i < m; ++i) {
    std::vector<bool> s1, s2;
    for (index_t j = 0; j < w1; ++j) s1.push_back(z1[std::size_t(i * w1 + j)] > 0);
    for (index_t j = 0; j < w2; ++j) s2.push_back(z2[std::size_t(i * w2 + j)] > 0);
    l1.insert(s1);
    l2.insert(s2);
    std::vector<bool> both = s1;
    both.insert(both.end(), s2.begin(), s2.end());
    const auto it = all.emplace(both, index_t(all.size())).first;
    want_ids.push_back(it->second);
  }
  EXPECT_EQ(r.samples, m);
  EXPECT_EQ(r.distinct, index_t(all.size()));
  EXPECT_EQ(r.distinct, distinct_rows);
  ASSERT_EQ(r.distinct_per_layer.size(), 3u);
  EXPECT_EQ(r.distinct_per_layer[0], index_t(l1.size()));
  EXPECT_EQ(r.distinct_per_layer[1], index_t(l2.size()));
  EXPECT_LT(r.distinct_per_layer[1], r.distinct);
  EXPECT_EQ(r.distinct_per_layer[2], 1);
  EXPECT_EQ(r.ids.to_vector(ctx()), want_ids);
}

TEST_P(FromPreactivations, BadInputIsRefusedWithClearMessages) {
  const index_t vertices = 4, w = 5;
  auto z = random_values<double>(3 * vertices * w, 51);
  z[std::size_t((1 * vertices + 2) * w + 3)] = std::nan("");  // sample 1 (7 in the caller's numbering)
  const auto zs = Array<double>::from_host(ctx(), {3 * vertices, w}, z);
  Array<std::int32_t> counts(ctx(), {10, 2});
  expect_error<InvalidArgument>(
      [&] { regions::sign_change_counts<double>(ctx(), zs.matrix(), vertices, counts.matrix(), 6, 0); },
      {"sample 7", "NaN"});
  expect_error<ShapeMismatch>(
      [&] { regions::sign_change_counts<double>(ctx(), zs.matrix(), 5, counts.matrix(), 0, 0); },
      {"not a multiple", "5 vertices"});
  expect_error<ShapeMismatch>(
      [&] { regions::sign_change_counts<double>(ctx(), zs.matrix(), vertices, counts.matrix(), 8, 0); },
      {"fall outside counts"});
  expect_error<ShapeMismatch>(
      [&] { regions::sign_change_counts<double>(ctx(), zs.matrix(), vertices, counts.matrix(), 0, 2); },
      {"column 2"});
  expect_error<InvalidArgument>(
      [&] { regions::sign_change_counts<double>(ctx(), zs.matrix(), 1, counts.matrix(), 0, 0); }, {"at least 2"});
  Array<std::uint64_t> packed(ctx(), {12, 1});
  expect_error<InvalidArgument>([&] { regions::pack_signs<double>(ctx(), zs.matrix(), packed.matrix(), 0, 0); },
                                {"NaN"});
  expect_error<ShapeMismatch>([&] { regions::pack_signs<double>(ctx(), zs.matrix(), packed.matrix(), 1, 0); },
                              {"fall outside packed"});
  expect_error<InvalidArgument>([&] { regions::count_packed_patterns(ctx(), packed.matrix(), {0, 2}); },
                                {"layer_words"});
  const auto x = Array<double>::from_host(ctx(), {2, 3}, random_values<double>(6, 52));
  regions::LcOptions o;
  o.radius = 0.1;
  o.dims = 2;
  Array<double> wrong(ctx(), {6, 3});
  expect_error<ShapeMismatch>([&] { regions::cross_polytope_vertices<double>(ctx(), x.matrix(), o, wrong.matrix()); },
                              {"out must be 8x3"});
  o.dims = 4;
  Array<double> out(ctx(), {16, 3});
  expect_error<InvalidArgument>([&] { regions::cross_polytope_vertices<double>(ctx(), x.matrix(), o, out.matrix()); },
                                {"between 1 and the input width 3"});
  o.dims = 2;
  o.radius = 0;
  expect_error<InvalidArgument>([&] { regions::cross_polytope_vertices<double>(ctx(), x.matrix(), o, wrong.matrix()); },
                                {"radius"});
}

DYNASCOPE_BACKEND_TESTS(FromPreactivations);

}  // namespace
}  // namespace dynascope::test
