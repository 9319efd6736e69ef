// Activation-pattern counts against a naive set of sign vectors; region ids; samplers; the
// grid count against the exact plane partition.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "dynascope/regions.hpp"
#include "model/model_test_util.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

template <class T>
Array<T> host_array(const std::vector<double>& v, Shape shape) {
  Array<T> a(Context::host(), std::move(shape));
  for (std::size_t i = 0; i < v.size(); ++i) a.data()[i] = static_cast<T>(v[i]);
  return a;
}

// Sign vectors (z > 0) of every hidden layer of every sample, by the textbook loop.
std::vector<std::vector<std::vector<bool>>> naive_patterns(const model::MlpSpec& s, const std::vector<double>& w,
                                                           const std::vector<double>& x, index_t n) {
  std::vector<std::vector<std::vector<bool>>> out;  // [sample][hidden layer][neuron]
  for (index_t i = 0; i < n; ++i) {
    std::vector<double> a(x.begin() + i * s.inputs(), x.begin() + (i + 1) * s.inputs());
    std::vector<std::vector<bool>> layers;
    for (index_t l = 0; l + 1 < s.layers(); ++l) {
      std::vector<double> z(static_cast<std::size_t>(s.fan_out(l)), 0.0);
      std::vector<bool> signs;
      for (index_t o = 0; o < s.fan_out(l); ++o) {
        double acc = 0;
        for (index_t c = 0; c < s.fan_in(l); ++c) acc += w[std::size_t(s.weight_offset(l) + o * s.fan_in(l) + c)] * a[std::size_t(c)];
        z[std::size_t(o)] = s.weight_scale(l) * acc + w[std::size_t(s.bias_offset(l) + o)];
        signs.push_back(z[std::size_t(o)] > 0);
        z[std::size_t(o)] = std::max(0.0, z[std::size_t(o)]);
      }
      layers.push_back(signs);
      a = z;
    }
    out.push_back(layers);
  }
  return out;
}

TEST(Patterns, CountsMatchNaiveSetsPastWordBoundaries) {
  const Context ctx = Context::host(2);
  for (const char* arch : {"3-5-2", "3-64-65-2", "4-130-1000-2", "2-1-1"}) {
    const model::MlpSpec spec = model::MlpSpec::from_arch(arch);
    const auto w = test::random_vector(std::size_t(spec.num_params()), 3);
    // 300 distinct points, each repeated several times (massive duplication), in scrambled order.
    const index_t distinct_points = 300, n = 1500;
    const auto base = test::random_vector(std::size_t(distinct_points * spec.inputs()), 4, 2.0);
    std::vector<double> x;
    for (index_t i = 0; i < n; ++i) {
      const index_t src = (i * 7919) % distinct_points;
      x.insert(x.end(), base.begin() + src * spec.inputs(), base.begin() + (src + 1) * spec.inputs());
    }
    const auto params = host_array<double>(w, {spec.num_params()});
    const auto xs = host_array<double>(x, {n, spec.inputs()});
    regions::PatternOptions o;
    o.ids = true;
    const auto r = regions::count_patterns<double>(ctx, spec, params.data(), xs.matrix(), o);
    const auto naive = naive_patterns(spec, w, x, n);
    std::set<std::vector<std::vector<bool>>> whole(naive.begin(), naive.end());
    EXPECT_EQ(r.samples, n);
    EXPECT_EQ(r.distinct, static_cast<index_t>(whole.size())) << arch;
    ASSERT_EQ(r.distinct_per_layer.size(), std::size_t(spec.layers() - 1));
    for (std::size_t l = 0; l < r.distinct_per_layer.size(); ++l) {
      std::set<std::vector<bool>> layer;
      for (const auto& p : naive) layer.insert(p[l]);
      EXPECT_EQ(r.distinct_per_layer[l], static_cast<index_t>(layer.size())) << arch << " layer " << l;
    }
    // Ids: one per pattern, 0..K-1, equal exactly when the patterns are.
    ASSERT_EQ(r.ids.size(), n);
    std::map<std::vector<std::vector<bool>>, std::int64_t> id_of;
    std::set<std::int64_t> used;
    for (index_t i = 0; i < n; ++i) {
      const std::int64_t id = r.ids.data()[i];
      ASSERT_GE(id, 0);
      ASSERT_LT(id, r.distinct);
      auto [it, fresh] = id_of.emplace(naive[std::size_t(i)], id);
      EXPECT_EQ(it->second, id) << "sample " << i;
      if (fresh) {
        EXPECT_TRUE(used.insert(id).second) << "id " << id << " given to two patterns";
        // Numbered in order of first appearance: a new pattern gets the next id.
        EXPECT_EQ(id, static_cast<std::int64_t>(used.size()) - 1) << "sample " << i;
      }
    }
  }
}

TEST(Patterns, IndependentOfTilingThreadsAndStrides) {
  const model::MlpSpec spec = model::MlpSpec::from_arch("5-70-40-3");
  const auto w = test::random_vector(std::size_t(spec.num_params()), 8);
  const index_t n = 400;
  const auto x = test::random_vector(std::size_t(n * 5), 9);
  const auto params = host_array<float>(w, {spec.num_params()});
  const auto xs = host_array<float>(x, {n, 5});
  regions::PatternOptions o;
  o.ids = true;
  const auto ref = regions::count_patterns<float>(Context::host(1), spec, params.data(), xs.matrix(), o);
  Context tiled = Context::host(2);
  tiled.set_workspace_budget(50 * (5 + 2 * 113) * sizeof(float));  // 50 samples per tile
  const auto t = regions::count_patterns<float>(tiled, spec, params.data(), xs.matrix(), o);
  EXPECT_EQ(ref.distinct, t.distinct);
  EXPECT_EQ(ref.distinct_per_layer, t.distinct_per_layer);
  for (index_t i = 0; i < n; ++i) ASSERT_EQ(ref.ids.data()[i], t.ids.data()[i]);
  std::vector<double> wide(std::size_t(n * 8), 5.0);
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 0; c < 5; ++c) wide[std::size_t(i * 8 + c)] = x[std::size_t(i * 5 + c)];
  const auto ws = host_array<float>(wide, {n, 8});
  const auto s = regions::count_patterns<float>(Context::host(), spec, params.data(),
                                                MatrixView<const float>(ws.matrix().block(0, 0, n, 5)), o);
  EXPECT_EQ(ref.distinct, s.distinct);
  const auto none = regions::count_patterns<float>(Context::host(), spec, params.data(), MatrixView<const float>{nullptr, 0, 5, 5});
  EXPECT_EQ(none.distinct, 0);
}

TEST(Patterns, GridCountReachesTheExactPlanePartition) {
  const Context ctx = Context::host(2);
  const model::MlpSpec spec = model::MlpSpec::from_arch("2-6-5-2");
  const auto w = test::random_vector(std::size_t(spec.num_params()), 9);
  const std::vector<double> pts{-1.5, -1.5, 1.5, -1.5, -1.5, 1.5};
  const MatrixView<const double> pv{pts.data(), 3, 2, 2};
  const auto exact = regions::plane_regions<double>(ctx, spec, w.data(), pv);
  const auto params = host_array<double>(w, {spec.num_params()});
  index_t previous = 0;
  for (index_t res : {16, 128, 600}) {
    const auto grid = regions::plane_grid<double>(ctx, pv, res);
    const auto r = regions::count_patterns<double>(ctx, spec, params.data(), grid.matrix());
    EXPECT_LE(r.distinct, static_cast<index_t>(exact.polygons.size()));
    EXPECT_GE(r.distinct, previous);
    previous = r.distinct;
  }
  EXPECT_EQ(previous, static_cast<index_t>(exact.polygons.size()));
}

TEST(Patterns, Samplers) {
  const Context ctx = Context::host();
  const std::vector<double> pts{0, 0, 1, 4, 0, 2, 2, 0, 3};  // A, B, C in 3-D
  const auto g = regions::plane_grid<double>(ctx, MatrixView<const double>{pts.data(), 3, 3, 3}, 4);
  ASSERT_EQ(g.shape(), (Shape{16, 3}));
  for (index_t i = 0; i < 4; ++i)
    for (index_t j = 0; j < 4; ++j) {
      const double s = (j + 0.5) / 4, t = (i + 0.5) / 4;
      for (index_t c = 0; c < 3; ++c)
        EXPECT_NEAR(g.data()[(i * 4 + j) * 3 + c], pts[std::size_t(c)] + s * (pts[std::size_t(3 + c)] - pts[std::size_t(c)]) +
                                                       t * (pts[std::size_t(6 + c)] - pts[std::size_t(c)]), 1e-15);
    }
  const double x0[2] = {1, -1}, x1[2] = {3, 5};
  const auto sgm = regions::segment_points<double>(ctx, x0, x1, 2, 5);
  EXPECT_EQ(sgm.data()[0], 1);
  EXPECT_EQ(sgm.data()[1], -1);
  EXPECT_EQ(sgm.data()[8], 3);
  EXPECT_EQ(sgm.data()[9], 5);
  EXPECT_DOUBLE_EQ(sgm.data()[4], 2);
  const auto anchors = host_array<double>({0, 0, 0, 10, 10, 10}, {2, 3});
  const auto b = regions::ball_points<double>(ctx, anchors.matrix(), 0.5, 4000, 7);
  ASSERT_EQ(b.shape(), (Shape{8000, 3}));
  double inner = 0;
  for (index_t a = 0; a < 2; ++a) {
    double mean[3] = {0, 0, 0};
    for (index_t i = 0; i < 4000; ++i) {
      double r2 = 0;
      for (index_t c = 0; c < 3; ++c) {
        const double v = b.data()[(a * 4000 + i) * 3 + c] - anchors.data()[a * 3 + c];
        r2 += v * v;
        mean[c] += v / 4000;
      }
      ASSERT_LE(std::sqrt(r2), 0.5 + 1e-12);
      inner += std::sqrt(r2) < 0.5 * std::cbrt(0.5);
    }
    for (double m : mean) EXPECT_NEAR(m, 0.0, 0.02);
  }
  // Uniform in the ball: half of the volume lies within r / 2^(1/3).
  EXPECT_NEAR(inner / 8000, 0.5, 0.02);
  const auto b2 = regions::ball_points<double>(ctx, anchors.matrix(), 0.5, 4000, 7);
  for (index_t i = 0; i < b.size(); ++i) ASSERT_EQ(b.data()[i], b2.data()[i]);
}

TEST(Patterns, BadInput) {
  const Context ctx = Context::host();
  const model::MlpSpec spec = model::MlpSpec::from_arch("2-4-1");
  const auto w = test::random_vector(std::size_t(spec.num_params()), 1);
  const auto params = host_array<double>(w, {spec.num_params()});
  auto x = host_array<double>({0, 0, 1, std::nan("")}, {2, 2});
  test::expect_error<InvalidArgument>([&] { regions::count_patterns<double>(ctx, spec, params.data(), x.matrix()); }, {"NaN"});
  const auto wrong = host_array<double>({0, 0, 1}, {1, 3});
  test::expect_error<ShapeMismatch>([&] { regions::count_patterns<double>(ctx, spec, params.data(), wrong.matrix()); },
                                    {"samples", "1x2"});
  const auto anchors = host_array<double>({0, 0}, {1, 2});
  test::expect_error<InvalidArgument>([&] { regions::ball_points<double>(ctx, anchors.matrix(), -1, 3, 0); }, {"radius"});
}

}  // namespace
}  // namespace dynascope
