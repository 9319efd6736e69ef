// Exact regions on segments and planes against closed forms (line arrangements, a hand-built
// network), dense sampling of activation patterns with the textbook forward loop, and each other.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

#include "dynascope/regions.hpp"
#include "model/model_test_util.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

// Hidden-layer sign pattern (z > 0) and logits at x, by the textbook loop.
struct Eval {
  std::vector<bool> pattern;
  std::vector<double> logits;
};

Eval evaluate(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x) {
  Eval e;
  std::vector<double> a = x;
  for (index_t l = 0; l < s.layers(); ++l) {
    std::vector<double> z(static_cast<std::size_t>(s.fan_out(l)), 0.0);
    for (index_t o = 0; o < s.fan_out(l); ++o) {
      double acc = 0;
      for (index_t c = 0; c < s.fan_in(l); ++c) acc += w[std::size_t(s.weight_offset(l) + o * s.fan_in(l) + c)] * a[std::size_t(c)];
      z[std::size_t(o)] = s.weight_scale(l) * acc + (s.bias[std::size_t(l)] ? w[std::size_t(s.bias_offset(l) + o)] : 0.0);
    }
    if (l + 1 == s.layers()) {
      e.logits = z;
      break;
    }
    const auto& act = s.activations[std::size_t(l)];
    const kern::ActParams ap{static_cast<kern::Act>(static_cast<int>(act.kind)), act.slope};
    for (double& v : z) {
      e.pattern.push_back(v > 0);
      v = kern::act_value(ap, v);
    }
    a = z;
  }
  return e;
}

std::vector<double> on_plane(const std::vector<double>& pts, index_t d, double s, double t) {
  std::vector<double> x(static_cast<std::size_t>(d));
  for (index_t i = 0; i < d; ++i) {
    const double a = pts[std::size_t(i)], b = pts[std::size_t(d + i)], c = pts[std::size_t(2 * d + i)];
    x[std::size_t(i)] = a + s * (b - a) + t * (c - a);
  }
  return x;
}

regions::PlaneRegions plane(const model::MlpSpec& spec, const std::vector<double>& w, const std::vector<double>& pts,
                            index_t cap = 200000) {
  const Context ctx = Context::host();
  return regions::plane_regions<double>(ctx, spec, w.data(), MatrixView<const double>{pts.data(), 3, spec.inputs(), spec.inputs()},
                                        cap);
}

double total_area(const regions::PlaneRegions& r) {
  double a = 0;
  for (const auto& p : r.polygons)
    for (std::size_t i = 0; i < p.vertices.size(); ++i) {
      const auto& u = p.vertices[i];
      const auto& v = p.vertices[(i + 1) % p.vertices.size()];
      a += 0.5 * (u[0] * v[1] - v[0] * u[1]);
    }
  return a;
}

// n lines in general position cut a box that holds all their crossings into 1 + n + n(n-1)/2 regions.
TEST(ExactRegions, LineArrangementInABox) {
  for (int n : {1, 2, 5, 9}) {
    std::mt19937_64 gen{static_cast<unsigned>(n)};
    std::normal_distribution<double> g;
    model::MlpSpec spec = model::MlpSpec::from_arch("2-" + std::to_string(n) + "-1");
    std::vector<double> w(std::size_t(spec.num_params()), 0.0);
    for (int j = 0; j < n; ++j) {
      w[std::size_t(spec.weight_offset(0) + 2 * j)] = g(gen);
      w[std::size_t(spec.weight_offset(0) + 2 * j + 1)] = g(gen);
      w[std::size_t(spec.bias_offset(0) + j)] = g(gen);
    }
    double lo = -1, hi = 1;
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j) {
        const double a1 = w[std::size_t(2 * i)], b1 = w[std::size_t(2 * i + 1)], c1 = w[std::size_t(spec.bias_offset(0) + i)];
        const double a2 = w[std::size_t(2 * j)], b2 = w[std::size_t(2 * j + 1)], c2 = w[std::size_t(spec.bias_offset(0) + j)];
        const double det = a1 * b2 - a2 * b1;
        const double x = (-c1 * b2 + c2 * b1) / det, y = (-a1 * c2 + a2 * c1) / det;
        lo = std::min({lo, x, y});
        hi = std::max({hi, x, y});
      }
    lo -= 1;
    hi += 1;
    const auto r = plane(spec, w, {lo, lo, hi, lo, lo, hi});
    EXPECT_EQ(static_cast<int>(r.polygons.size()), 1 + n + n * (n - 1) / 2) << n << " lines";
    EXPECT_NEAR(total_area(r), 1.0, 1e-12);
  }
}

// h = relu(x, y), g = relu(h1 + h2 - 1): four quadrants, three of which the second layer cuts.
TEST(ExactRegions, TwoLayerHandBuiltNetworkHasSevenRegions) {
  model::MlpSpec spec = model::MlpSpec::from_arch("2-2-1-1");
  std::vector<double> w(std::size_t(spec.num_params()), 0.0);
  w[std::size_t(spec.weight_offset(0) + 0)] = 1;  // h1 = x
  w[std::size_t(spec.weight_offset(0) + 3)] = 1;  // h2 = y
  w[std::size_t(spec.weight_offset(1) + 0)] = 1;
  w[std::size_t(spec.weight_offset(1) + 1)] = 1;
  w[std::size_t(spec.bias_offset(1))] = -1;
  w[std::size_t(spec.weight_offset(2))] = 1;
  const auto r = plane(spec, w, {-2, -2, 2, -2, -2, 2});
  EXPECT_EQ(r.polygons.size(), 7u);
  EXPECT_NEAR(total_area(r), 1.0, 1e-12);
  // On the segment y = 0.5 from x = -2 to 2: x < 0 | 0 < x < 0.5 | x > 0.5.
  const Context ctx = Context::host();
  const double x0[2] = {-2, 0.5}, x1[2] = {2, 0.5};
  const auto seg = regions::segment_regions<double>(ctx, spec, w.data(), x0, x1);
  EXPECT_EQ(seg.regions, 3);
  ASSERT_EQ(seg.breakpoints.size(), 2u);
  EXPECT_NEAR(seg.breakpoints[0], 0.5, 1e-15);     // x = 0
  EXPECT_NEAR(seg.breakpoints[1], 0.625, 1e-15);   // x = 0.5
}

struct RandomNet {
  model::MlpSpec spec;
  std::vector<double> w;
};

RandomNet random_net(const std::string& arch, unsigned seed, const std::string& act = "relu") {
  RandomNet n{model::MlpSpec::from_arch(arch, model::parse_activation(act)), {}};
  n.w = test::random_vector(std::size_t(n.spec.num_params()), seed);
  return n;
}

// Breakpoints are where the pattern changes: just before and after each one the patterns
// differ, and dense samples between two breakpoints all share one pattern.
TEST(ExactRegions, SegmentBreakpointsAreThePatternChanges) {
  const Context ctx = Context::host();
  for (const char* act : {"relu", "leaky_relu:0.1", "abs"}) {
    const auto net = random_net("3-12-10-8-2", 5, act);
    const double x0[3] = {-2, 1, 0.5}, x1[3] = {2, -1.5, 1};
    const auto seg = regions::segment_regions<double>(ctx, net.spec, net.w.data(), x0, x1);
    EXPECT_EQ(seg.regions, static_cast<index_t>(seg.breakpoints.size()) + 1);
    EXPECT_GT(seg.regions, 5) << act;
    auto at = [&](double t) {
      std::vector<double> x(3);
      for (int i = 0; i < 3; ++i) x[std::size_t(i)] = x0[i] + t * (x1[i] - x0[i]);
      return evaluate(net.spec, net.w, x).pattern;
    };
    std::vector<double> ends{0.0};
    ends.insert(ends.end(), seg.breakpoints.begin(), seg.breakpoints.end());
    ends.push_back(1.0);
    for (std::size_t q = 0; q + 1 < ends.size(); ++q) {
      ASSERT_LT(ends[q], ends[q + 1]);
      const auto mid = at(0.5 * (ends[q] + ends[q + 1]));
      for (int k = 1; k < 20; ++k) EXPECT_EQ(at(ends[q] + (ends[q + 1] - ends[q]) * k / 20.0), mid) << act << " interval " << q;
      if (q > 0) {
        EXPECT_NE(at(ends[q] - 1e-9), at(ends[q] + 1e-9)) << act << " breakpoint " << ends[q];
      }
    }
  }
}

// The exact partition against a dense grid: every grid pattern is one polygon's pattern, the
// polygons' patterns are all distinct, a fine grid finds them all, and lines through the plane
// cross as many polygons as the segment walk finds regions.
TEST(ExactRegions, PlaneAgreesWithDenseGridAndSegments) {
  const Context ctx = Context::host();
  const auto net = random_net("2-6-5-2", 9);
  const std::vector<double> pts{-1.5, -1.5, 1.5, -1.5, -1.5, 1.5};
  const auto r = plane(net.spec, net.w, pts);
  EXPECT_NEAR(total_area(r), 1.0, 1e-12);
  std::set<std::vector<bool>> exact;
  for (const auto& p : r.polygons) {
    double cs = 0, ct = 0;
    for (const auto& v : p.vertices) {
      cs += v[0];
      ct += v[1];
    }
    exact.insert(evaluate(net.spec, net.w, on_plane(pts, 2, cs / double(p.vertices.size()), ct / double(p.vertices.size()))).pattern);
  }
  EXPECT_EQ(exact.size(), r.polygons.size());  // one polygon per pattern
  for (int res : {20, 600}) {
    std::set<std::vector<bool>> grid;
    for (int i = 0; i < res; ++i)
      for (int j = 0; j < res; ++j) grid.insert(evaluate(net.spec, net.w, on_plane(pts, 2, (i + 0.5) / res, (j + 0.5) / res)).pattern);
    EXPECT_LE(grid.size(), exact.size());
    for (const auto& g : grid) EXPECT_TRUE(exact.count(g));
    if (res == 600) {
      EXPECT_EQ(grid.size(), exact.size());
    }
  }
  for (double t : {0.1, 0.37, 0.8}) {
    const auto a = on_plane(pts, 2, 0, t), b = on_plane(pts, 2, 1, t);
    const auto seg = regions::segment_regions<double>(ctx, net.spec, net.w.data(), a.data(), b.data());
    index_t crossed = 0;
    for (const auto& p : r.polygons) {
      double lo = 2, hi = -1;
      for (const auto& v : p.vertices) {
        lo = std::min(lo, v[1]);
        hi = std::max(hi, v[1]);
      }
      if (lo < t && t < hi) ++crossed;
    }
    EXPECT_EQ(crossed, seg.regions) << "t = " << t;
  }
}

// A polygon is a boundary region exactly when the predicted class is not the same at all its
// vertices (argmax of affine logits over a convex polygon is decided at the vertices).
TEST(ExactRegions, BoundaryRegionsAreWhereTheClassChanges) {
  for (const char* arch : {"2-8-8-2", "2-8-8-3", "2-8-1"}) {
    // A network whose predicted class is not the same everywhere on the plane.
    const std::vector<double> pts{-2, -2, 2, -2, -2, 2};
    RandomNet net;
    regions::PlaneRegions r;
    for (unsigned seed = 13;; ++seed) {
      ASSERT_LT(seed, 40u) << "no seed gives a network with a decision boundary on the plane";
      net = random_net(arch, seed);
      r = plane(net.spec, net.w, pts);
      std::set<int> labels;
      for (const auto& p : r.polygons) labels.insert(p.label);
      if (labels.size() > 1) break;
    }
    index_t flagged = 0;
    for (const auto& p : r.polygons) {
      std::set<int> labels;
      // Vertices sit on region edges, so evaluate slightly inside, towards the centroid.
      double cs = 0, ct = 0;
      for (const auto& v : p.vertices) {
        cs += v[0] / double(p.vertices.size());
        ct += v[1] / double(p.vertices.size());
      }
      for (const auto& v : p.vertices) {
        const auto e = evaluate(net.spec, net.w, on_plane(pts, 2, v[0] + 1e-7 * (cs - v[0]), v[1] + 1e-7 * (ct - v[1])));
        if (e.logits.size() == 1) labels.insert(e.logits[0] > 0 ? 1 : 0);
        else labels.insert(int(std::max_element(e.logits.begin(), e.logits.end()) - e.logits.begin()));
      }
      EXPECT_EQ(p.boundary, labels.size() > 1) << arch;
      flagged += p.boundary;
    }
    EXPECT_EQ(flagged, r.boundary_regions);
    EXPECT_GT(flagged, 0) << arch;
    EXPECT_GE(r.boundary_segments.size(), std::size_t(flagged)) << arch;
    // Every boundary piece lies on a tie of the logits (or on the zero of the one logit).
    for (const auto& sgm : r.boundary_segments)
      for (int end = 0; end < 2; ++end) {
        const auto e = evaluate(net.spec, net.w, on_plane(pts, 2, sgm[std::size_t(2 * end)], sgm[std::size_t(2 * end + 1)]));
        auto l = e.logits;
        std::sort(l.begin(), l.end());
        const double gap = l.size() == 1 ? std::abs(l[0]) : l[l.size() - 1] - l[l.size() - 2];
        EXPECT_LT(gap, 1e-9) << arch;
      }
  }
}

TEST(ExactRegions, BadInputGetsClearErrors) {
  const Context ctx = Context::host();
  const auto tanh_net = random_net("2-4-1", 1, "tanh");
  test::expect_error<InvalidArgument>([&] { plane(tanh_net.spec, tanh_net.w, {0, 0, 1, 0, 0, 1}); },
                                      {"piecewise-linear", "hidden layer 1 is tanh"});
  const auto net = random_net("2-30-30-1", 2);
  test::expect_error<InvalidArgument>([&] { plane(net.spec, net.w, {0, 0, 1, 1, 2, 2}); }, {"collinear"});
  test::expect_error<InvalidArgument>([&] { plane(net.spec, net.w, {0, 0, 0, 0, 0, 1}); }, {"collinear"});
  test::expect_error<InvalidArgument>([&] { plane(net.spec, net.w, {-3, -3, 3, -3, -3, 3}, 20); }, {"more than 20 regions", "cap"});
  test::expect_error<ShapeMismatch>([&] { regions::plane_regions<double>(ctx, net.spec, net.w.data(),
                                                                        MatrixView<const double>{net.w.data(), 2, 2, 2}); },
                                    {"3 points", "[2, 2]"});
  const double a[2] = {1, 1};
  test::expect_error<InvalidArgument>([&] { regions::segment_regions<double>(ctx, net.spec, net.w.data(), a, a); }, {"equal"});
  const double b[2] = {-3, 3};
  test::expect_error<InvalidArgument>([&] { regions::segment_regions<double>(ctx, net.spec, net.w.data(), a, b, 2); },
                                      {"more than 2 regions"});
}

}  // namespace
}  // namespace dynascope
