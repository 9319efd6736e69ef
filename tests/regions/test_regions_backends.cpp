// Every linear-regions kernel on both backends (Regions.Case/host and /cuda), each against an
// oracle computed on the host by the naive float64 network of tests/support/naive_mlp.hpp:
// cross-polytope counts, the exact first-layer formula, distinct patterns and region ids, the
// samplers' formulas; strided inputs, empty sets and NaN samples.
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

class Regions : public BackendTest {};

struct Net {
  model::MlpSpec spec;
  std::vector<double> w;
  std::vector<double> x;
  index_t n;
};

Net make_net(const std::string& arch, index_t n, unsigned seed) {
  Net net{model::MlpSpec::from_arch(arch), {}, {}, n};
  net.w = random_values<double>(net.spec.num_params(), seed);
  net.x = random_values<double>(n * net.spec.inputs(), seed + 1);
  return net;
}

// counts(i, l) by pushing each vertex x_i +- r v_p through the naive network; frames [F * P, D].
std::vector<std::int32_t> naive_lc(const Net& net, const std::vector<double>& frames, index_t p, double r, bool per_sample) {
  const index_t d = net.spec.inputs(), layers = net.spec.layers();
  std::vector<std::int32_t> out;
  for (index_t i = 0; i < net.n; ++i) {
    std::vector<naive::Trace<double>> t;
    for (index_t v = 0; v < 2 * p; ++v) {
      std::vector<double> x(static_cast<std::size_t>(d));
      const index_t f = (per_sample ? i * p : 0) + v / 2;
      for (index_t c = 0; c < d; ++c)
        x[std::size_t(c)] = net.x[std::size_t(i * d + c)] + ((v & 1) ? -r : r) * frames[std::size_t(f * d + c)];
      t.push_back(naive::forward<double>(net.spec, net.w, x));
    }
    for (index_t l = 1; l <= layers; ++l) {
      std::int32_t c = 0;
      for (std::size_t j = 0; j < t[0].z[std::size_t(l)].size(); ++j)
        for (index_t v = 1; v < 2 * p; ++v)
          if ((t[std::size_t(v)].z[std::size_t(l)][j] > 0) != (t[0].z[std::size_t(l)][j] > 0)) {
            ++c;
            break;
          }
      out.push_back(c);
    }
  }
  return out;
}

TEST_P(Regions, LocalComplexityMatchesTheNaiveVertexLoop) {
  const Net net = make_net("7-40-33-70-3", 37, 5);
  const auto params = Array<double>::from_host(ctx(), {net.spec.num_params()}, net.w);
  // x stored with leading dimension 9 and NaN padding: a kernel that reads past a row fails.
  const auto xs = Array<double>::from_host(ctx(), {net.n, 9}, with_ld(net.x, net.n, 7, 9));
  for (regions::Frame kind : {regions::Frame::shared, regions::Frame::per_sample}) {
    regions::LcOptions o;
    o.radius = 0.3;
    o.dims = 4;
    o.seed = 3;
    o.frame = kind;
    const auto lc = regions::local_complexity<double>(ctx(), net.spec, params.data(), strided(xs, 7), o);
    EXPECT_EQ(lc.counts.backend(), backend());
    std::vector<double> frames;
    for (index_t i = 0; i < (kind == regions::Frame::per_sample ? net.n : 1); ++i) {
      const auto f = regions::random_frame<double>(ctx(), 7, 4, 3, kind, i).to_vector(ctx());
      frames.insert(frames.end(), f.begin(), f.end());
    }
    const auto want = naive_lc(net, frames, 4, 0.3, kind == regions::Frame::per_sample);
    EXPECT_EQ(lc.counts.to_vector(ctx()), want);
    long total = 0;
    for (auto c : want) total += c;
    EXPECT_GT(total, 0);
  }
}

TEST_P(Regions, RandomFramesAreOrthonormal) {
  for (regions::Frame kind : {regions::Frame::shared, regions::Frame::per_sample}) {
    const auto f = regions::random_frame<double>(ctx(), 50, 25, 9, kind, 7).to_vector(ctx());
    for (index_t i = 0; i < 25; ++i)
      for (index_t k = 0; k <= i; ++k) {
        double dot = 0;
        for (index_t c = 0; c < 50; ++c) dot += f[std::size_t(i * 50 + c)] * f[std::size_t(k * 50 + c)];
        EXPECT_NEAR(dot, i == k ? 1.0 : 0.0, 1e-13);
      }
  }
}

TEST_P(Regions, FirstLayerCountsFollowTheFormula) {
  const Net net = make_net("6-90-2", 41, 8);
  const auto params = Array<double>::from_host(ctx(), {net.spec.num_params()}, net.w);
  const auto x = Array<double>::from_host(ctx(), {net.n, 6}, net.x);
  const auto frame = regions::random_frame<double>(ctx(), 6, 3, 1);
  const auto f = frame.to_vector(ctx());
  const double r = 0.25;
  const auto got = regions::first_layer_counts<double>(ctx(), net.spec, params.data(), x.matrix(), frame.matrix(), r)
                       .to_vector(ctx());
  ASSERT_EQ(got.size(), std::size_t(net.n));
  long total = 0;
  for (index_t i = 0; i < net.n; ++i) {
    std::int32_t want = 0;
    for (index_t j = 0; j < 90; ++j) {
      double z = net.w[std::size_t(net.spec.bias_offset(0) + j)], reach = 0;
      for (index_t c = 0; c < 6; ++c) z += net.w[std::size_t(j * 6 + c)] * net.x[std::size_t(i * 6 + c)];
      for (index_t p = 0; p < 3; ++p) {
        double a = 0;
        for (index_t c = 0; c < 6; ++c) a += net.w[std::size_t(j * 6 + c)] * f[std::size_t(p * 6 + c)];
        reach = std::max(reach, std::abs(a));
      }
      want += std::abs(z) < r * reach;
    }
    EXPECT_EQ(got[std::size_t(i)], want) << "sample " << i;
    total += want;
  }
  EXPECT_GT(total, 0);
}

TEST_P(Regions, PatternsAndIdsMatchNaiveSignVectors) {
  const Net net = make_net("3-70-129-2", 600, 12);
  // Heavy duplication: 600 rows drawn from 150 distinct points.
  std::vector<double> x;
  for (index_t i = 0; i < net.n; ++i) {
    const index_t src = (i * 37) % 150;
    x.insert(x.end(), net.x.begin() + src * 3, net.x.begin() + src * 3 + 3);
  }
  const auto params = Array<double>::from_host(ctx(), {net.spec.num_params()}, net.w);
  const auto xs = Array<double>::from_host(ctx(), {net.n, 5}, with_ld(x, net.n, 3, 5));
  regions::PatternOptions o;
  o.ids = true;
  const auto r = regions::count_patterns<double>(ctx(), net.spec, params.data(), strided(xs, 3), o);
  std::vector<std::vector<bool>> whole;
  std::vector<std::set<std::vector<bool>>> layer(2);
  for (index_t i = 0; i < net.n; ++i) {
    const auto t = naive::forward<double>(net.spec, net.w, std::vector<double>(x.begin() + i * 3, x.begin() + i * 3 + 3));
    std::vector<bool> all;
    for (std::size_t l = 1; l <= 2; ++l) {
      std::vector<bool> s;
      for (double z : t.z[l]) s.push_back(z > 0);
      layer[l - 1].insert(s);
      all.insert(all.end(), s.begin(), s.end());
    }
    whole.push_back(all);
  }
  EXPECT_EQ(r.distinct, static_cast<index_t>(std::set<std::vector<bool>>(whole.begin(), whole.end()).size()));
  EXPECT_EQ(r.distinct_per_layer, (std::vector<index_t>{index_t(layer[0].size()), index_t(layer[1].size())}));
  const auto ids = r.ids.to_vector(ctx());
  std::map<std::vector<bool>, std::int64_t> first;
  for (index_t i = 0; i < net.n; ++i) {
    auto [it, fresh] = first.emplace(whole[std::size_t(i)], static_cast<std::int64_t>(first.size()));
    EXPECT_EQ(ids[std::size_t(i)], it->second) << "sample " << i;  // numbered by first appearance
  }
}

TEST_P(Regions, SamplersFollowTheirFormulas) {
  const std::vector<double> pts{0, 1, 2, 3, 1, 1, 0, -2, 1};  // A, B, C in 3-D
  const auto g = regions::plane_grid<double>(ctx(), MatrixView<const double>{pts.data(), 3, 3, 3}, 5).to_vector(ctx());
  ASSERT_EQ(g.size(), 75u);
  for (index_t i = 0; i < 5; ++i)
    for (index_t j = 0; j < 5; ++j)
      for (index_t c = 0; c < 3; ++c) {
        const double s = (j + 0.5) / 5, t = (i + 0.5) / 5;
        const double want = pts[std::size_t(c)] + s * (pts[std::size_t(3 + c)] - pts[std::size_t(c)]) + t * (pts[std::size_t(6 + c)] - pts[std::size_t(c)]);
        EXPECT_NEAR(g[std::size_t((i * 5 + j) * 3 + c)], want, 1e-15);
      }
  const double x0[2] = {-1, 2}, x1[2] = {3, -2};
  const auto sg = regions::segment_points<double>(ctx(), x0, x1, 2, 9).to_vector(ctx());
  for (index_t i = 0; i < 9; ++i) {
    EXPECT_NEAR(sg[std::size_t(2 * i)], -1 + 4.0 * i / 8, 1e-15);
    EXPECT_NEAR(sg[std::size_t(2 * i + 1)], 2 - 4.0 * i / 8, 1e-15);
  }
  const auto anchors = Array<double>::from_host(ctx(), {2, 4}, std::vector<double>{0, 0, 0, 0, 5, 5, 5, 5});
  const auto b = regions::ball_points<double>(ctx(), anchors.matrix(), 0.5, 500, 3).to_vector(ctx());
  ASSERT_EQ(b.size(), 4000u);
  for (index_t row = 0; row < 1000; ++row) {
    double r2 = 0;
    for (index_t c = 0; c < 4; ++c) {
      const double v = b[std::size_t(row * 4 + c)] - (row < 500 ? 0.0 : 5.0);
      r2 += v * v;
    }
    EXPECT_LE(std::sqrt(r2), 0.5 + 1e-12);
  }
  // The cross-polytope of LC's shared frame: each point is anchor + frame^T c with sum |c_p| <= r,
  // and uniform in that L1 ball (half of its volume lies within r / 2^(1/P)).
  const index_t p = 3, m = 4000;
  const auto cp = regions::cross_polytope_points<double>(ctx(), anchors.matrix(), 0.5, p, m, 3).to_vector(ctx());
  const auto frame = regions::random_frame<double>(ctx(), 4, p, 3).to_vector(ctx());
  ASSERT_EQ(cp.size(), std::size_t(2 * m * 4));
  index_t inner = 0;
  for (index_t row = 0; row < 2 * m; ++row) {
    std::vector<double> v(4);
    for (index_t c = 0; c < 4; ++c) v[std::size_t(c)] = cp[std::size_t(row * 4 + c)] - (row < m ? 0.0 : 5.0);
    double l1 = 0, rest = 0;
    std::vector<double> back(4, 0.0);
    for (index_t q = 0; q < p; ++q) {
      double coef = 0;
      for (index_t c = 0; c < 4; ++c) coef += frame[std::size_t(q * 4 + c)] * v[std::size_t(c)];
      l1 += std::abs(coef);
      for (index_t c = 0; c < 4; ++c) back[std::size_t(c)] += coef * frame[std::size_t(q * 4 + c)];
    }
    for (index_t c = 0; c < 4; ++c) rest = std::max(rest, std::abs(back[std::size_t(c)] - v[std::size_t(c)]));
    EXPECT_LE(l1, 0.5 + 1e-12);
    EXPECT_LT(rest, 1e-12);  // inside the frame's span
    inner += l1 < 0.5 / std::cbrt(2.0);
  }
  EXPECT_NEAR(double(inner) / double(2 * m), 0.5, 0.025);
}

TEST_P(Regions, EmptySetsAndNanSamples) {
  const Net net = make_net("3-8-2", 4, 2);
  const auto params = Array<double>::from_host(ctx(), {net.spec.num_params()}, net.w);
  regions::LcOptions o;
  o.radius = 0.5;
  o.dims = 2;
  const MatrixView<const double> none{nullptr, 0, 3, 3, ctx().backend()};
  EXPECT_EQ(regions::local_complexity<double>(ctx(), net.spec, params.data(), none, o).counts.size(), 0);
  EXPECT_EQ(regions::count_patterns<double>(ctx(), net.spec, params.data(), none).distinct, 0);
  std::vector<double> x = net.x;
  x[7] = std::nan("");
  const auto xs = Array<double>::from_host(ctx(), {4, 3}, x);
  expect_error<InvalidArgument>([&] { regions::local_complexity<double>(ctx(), net.spec, params.data(), xs.matrix(), o); },
                                {"sample 2", "NaN"});
  expect_error<InvalidArgument>([&] { regions::count_patterns<double>(ctx(), net.spec, params.data(), xs.matrix()); },
                                {"NaN"});
}

DYNASCOPE_BACKEND_TESTS(Regions);

}  // namespace
}  // namespace dynascope::test
