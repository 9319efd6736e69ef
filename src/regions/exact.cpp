// Exact activation regions on a segment and on a plane, in float64 on the host.
//
// Each region carries the affine map from the slice coordinates (t on a segment, (s, t) on a
// plane) to the current layer's activations: M [width, K + 1], activation j = M_j . (coords, 1).
// The next layer's pre-activations are Z = c W M + beta b e_{K+1}; every neuron's zero set is a
// point (K = 1) or a line (K = 2) in the slice, and it splits the regions it crosses. Once a layer
// has split everything, each piece has one sign pattern, read at an interior point, and the
// activations there are diag(slope) Z. This is the construction behind SplineCam (Humayun et al.,
// CVPR 2023), written here as direct polygon splitting instead of a planar graph.
#include "dynascope/regions.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "dynascope/error.hpp"

namespace dynascope::regions {
namespace {

struct Network {
  model::MlpSpec spec;
  std::vector<double> w;
  double slope(index_t layer, double z) const {  // sigma'(z) of hidden layer `layer` (0-based)
    const auto& a = spec.activations[std::size_t(layer)];
    switch (a.kind) {
      case model::Activation::relu: return z > 0 ? 1.0 : 0.0;
      case model::Activation::leaky_relu: return z > 0 ? 1.0 : a.slope;
      case model::Activation::abs: return z > 0 ? 1.0 : -1.0;
      default: return 1.0;  // identity
    }
  }
};

template <class T>
Network host_network(const Context& ctx, const model::MlpSpec& spec, const T* params, const char* call) {
  spec.validate();
  for (std::size_t l = 0; l < spec.activations.size(); ++l) {
    const auto k = spec.activations[l].kind;
    if (k != model::Activation::relu && k != model::Activation::leaky_relu && k != model::Activation::abs &&
        k != model::Activation::identity)
      throw InvalidArgument(std::string(call) + ": exact regions need piecewise-linear activations (relu, leaky_relu, "
                            "abs, identity); hidden layer " + std::to_string(l + 1) + " is " +
                            model::to_string(spec.activations[l]));
  }
  const index_t n = spec.num_params();
  std::vector<T> raw(static_cast<std::size_t>(n));
  detail::copy_bytes(ctx, raw.data(), Backend::host, params, ctx.backend(), raw.size() * sizeof(T));
  Network net{spec, std::vector<double>(raw.begin(), raw.end())};
  for (double v : net.w)
    if (!std::isfinite(v)) throw InvalidArgument(std::string(call) + ": the parameters hold a NaN or infinite value");
  return net;
}

// Z [out, K1] = c W_l M + beta b (last column) for layer l, from M [in, K1] (row-major).
std::vector<double> next_map(const Network& net, index_t l, const std::vector<double>& m, index_t k1) {
  const auto& s = net.spec;
  const index_t in = s.fan_in(l), out = s.fan_out(l);
  const double c = s.weight_scale(l);
  std::vector<double> z(static_cast<std::size_t>(out * k1), 0.0);
  const double* w = net.w.data() + s.weight_offset(l);
  for (index_t j = 0; j < out; ++j) {
    double* zj = z.data() + j * k1;
    for (index_t i = 0; i < in; ++i) {
      const double wji = c * w[j * in + i];
      if (wji == 0.0) continue;
      const double* mi = m.data() + i * k1;
      for (index_t q = 0; q < k1; ++q) zj[q] += wji * mi[q];
    }
    if (s.bias[std::size_t(l)]) zj[k1 - 1] += s.bias_scale * net.w[std::size_t(s.bias_offset(l) + j)];
  }
  return z;
}

// diag(slope(z at the point)) Z: the activations of layer l on the region containing `point`.
std::vector<double> activate(const Network& net, index_t l, std::vector<double> z, index_t k1, const double* point) {
  const index_t out = static_cast<index_t>(z.size()) / k1;
  for (index_t j = 0; j < out; ++j) {
    double* zj = z.data() + j * k1;
    double v = zj[k1 - 1];
    for (index_t q = 0; q + 1 < k1; ++q) v += zj[q] * point[q];
    const double d = net.slope(l, v);
    for (index_t q = 0; q < k1; ++q) zj[q] *= d;
  }
  return z;
}

// ---- segment -------------------------------------------------------------------------------------

struct Interval {
  double t0, t1;
  std::vector<double> m;  // [width, 2]
};

// ---- plane ---------------------------------------------------------------------------------------

using Point = std::array<double, 2>;
using Poly = std::vector<Point>;

double area(const Poly& p) {
  double a = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const Point& u = p[i];
    const Point& v = p[(i + 1) % p.size()];
    a += u[0] * v[1] - v[0] * u[1];
  }
  return 0.5 * a;
}

Point centroid(const Poly& p) {
  // The area centroid: strictly inside a convex polygon of positive area.
  double cx = 0, cy = 0, a = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const Point& u = p[i];
    const Point& v = p[(i + 1) % p.size()];
    const double cr = u[0] * v[1] - v[0] * u[1];
    a += cr;
    cx += (u[0] + v[0]) * cr;
    cy += (u[1] + v[1]) * cr;
  }
  return {cx / (3 * a), cy / (3 * a)};
}

// Pieces of area below this (the whole slice has area 1) are rounding debris, not regions.
constexpr double kMinArea = 1e-16;

// Splits the convex polygon p by the line f(s, t) = a s + b t + c = 0 into its parts with f >= 0
// and f <= 0. A vertex within rounding of the line belongs to both sides and is not duplicated.
void split(const Poly& p, const double* f, Poly& pos, Poly& neg) {
  pos.clear();
  neg.clear();
  const double tol = 1e-12 * (std::abs(f[0]) + std::abs(f[1]) + std::abs(f[2]));
  const std::size_t n = p.size();
  std::vector<double> v(n);
  std::vector<int> side(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = f[0] * p[i][0] + f[1] * p[i][1] + f[2];
    side[i] = v[i] > tol ? 1 : (v[i] < -tol ? -1 : 0);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t j = (i + 1) % n;
    if (side[i] >= 0) pos.push_back(p[i]);
    if (side[i] <= 0) neg.push_back(p[i]);
    if (side[i] * side[j] < 0) {
      const double r = v[i] / (v[i] - v[j]);
      const Point x{p[i][0] + r * (p[j][0] - p[i][0]), p[i][1] + r * (p[j][1] - p[i][1])};
      pos.push_back(x);
      neg.push_back(x);
    }
  }
  if (pos.size() < 3 || area(pos) < kMinArea) pos.clear();
  if (neg.size() < 3 || area(neg) < kMinArea) neg.clear();
}

struct Region {
  Poly poly;
  std::vector<double> m;  // [width, 3]
};

}  // namespace

template <class T>
SegmentRegions segment_regions(const Context& ctx, const model::MlpSpec& spec, const T* params, const double* x0,
                               const double* x1, index_t max_regions) {
  constexpr const char* call = "segment_regions";
  const Network net = host_network(ctx, spec, params, call);
  const index_t d = spec.inputs();
  bool moves = false;
  for (index_t i = 0; i < d; ++i) {
    if (!std::isfinite(x0[i]) || !std::isfinite(x1[i]))
      throw InvalidArgument(std::string(call) + ": the segment's end points hold a NaN or infinite value");
    moves = moves || x0[i] != x1[i];
  }
  if (!moves) throw InvalidArgument(std::string(call) + ": the segment's two end points are equal");
  // Input map: x(t) = (x1 - x0) t + x0.
  std::vector<double> m0(static_cast<std::size_t>(2 * d));
  for (index_t i = 0; i < d; ++i) {
    m0[std::size_t(2 * i)] = x1[i] - x0[i];
    m0[std::size_t(2 * i + 1)] = x0[i];
  }
  std::vector<Interval> cur{{0.0, 1.0, m0}};
  for (index_t l = 0; l + 1 < spec.layers(); ++l) {
    std::vector<Interval> next;
    for (const Interval& iv : cur) {
      const std::vector<double> z = next_map(net, l, iv.m, 2);
      // Zeros of every neuron strictly inside the interval (a neuron that only touches 0 at an
      // end, or is 0 throughout, splits nothing).
      std::vector<double> cuts{iv.t0, iv.t1};
      const double len = iv.t1 - iv.t0;
      for (std::size_t j = 0; j < z.size() / 2; ++j) {
        const double a = z[2 * j], b = z[2 * j + 1];
        if (a == 0.0) continue;
        const double r = -b / a;
        if (r > iv.t0 + 1e-13 * len && r < iv.t1 - 1e-13 * len) cuts.push_back(r);
      }
      std::sort(cuts.begin(), cuts.end());
      cuts.erase(std::unique(cuts.begin(), cuts.end(), [&](double u, double v) { return v - u <= 1e-14; }), cuts.end());
      for (std::size_t q = 0; q + 1 < cuts.size(); ++q) {
        const double mid = 0.5 * (cuts[q] + cuts[q + 1]);
        next.push_back({cuts[q], cuts[q + 1], activate(net, l, z, 2, &mid)});
      }
      if (static_cast<index_t>(next.size()) > max_regions)
        throw InvalidArgument(std::string(call) + ": the segment crosses more than " + std::to_string(max_regions) +
                              " regions (the cap); raise the cap or shorten the segment");
    }
    cur = std::move(next);
  }
  SegmentRegions out;
  out.regions = static_cast<index_t>(cur.size());
  for (std::size_t q = 1; q < cur.size(); ++q) out.breakpoints.push_back(cur[q].t0);
  return out;
}

template <class T>
PlaneRegions plane_regions(const Context& ctx, const model::MlpSpec& spec, const T* params,
                           MatrixView<const double> points, index_t max_regions) {
  constexpr const char* call = "plane_regions";
  const Network net = host_network(ctx, spec, params, call);
  const index_t d = spec.inputs();
  if (points.rows != 3 || points.cols != d)
    throw ShapeMismatch(std::string(call) + ": the plane needs 3 points of " + std::to_string(d) +
                        " coordinates ([3, " + std::to_string(d) + "]), got [" + std::to_string(points.rows) + ", " +
                        std::to_string(points.cols) + "]");
  if (points.backend != Backend::host) throw InvalidArgument(std::string(call) + ": the plane's points must be host memory");
  double uu = 0, vv = 0, uv = 0;
  for (index_t i = 0; i < d; ++i) {
    for (index_t r = 0; r < 3; ++r)
      if (!std::isfinite(points(r, i))) throw InvalidArgument(std::string(call) + ": the plane's points hold a NaN or infinite value");
    const double u = points(1, i) - points(0, i), v = points(2, i) - points(0, i);
    uu += u * u;
    vv += v * v;
    uv += u * v;
  }
  if (!(uu * vv - uv * uv > 1e-20 * uu * vv) || uu == 0 || vv == 0)
    throw InvalidArgument(std::string(call) + ": the points A, B, C are collinear (or two are equal), so they span no plane");
  // Input map: x(s, t) = (B - A) s + (C - A) t + A.
  std::vector<double> m0(static_cast<std::size_t>(3 * d));
  for (index_t i = 0; i < d; ++i) {
    m0[std::size_t(3 * i)] = points(1, i) - points(0, i);
    m0[std::size_t(3 * i + 1)] = points(2, i) - points(0, i);
    m0[std::size_t(3 * i + 2)] = points(0, i);
  }
  std::vector<Region> cur{{Poly{{0, 0}, {1, 0}, {1, 1}, {0, 1}}, m0}};
  Poly pos, neg;
  for (index_t l = 0; l + 1 < spec.layers(); ++l) {
    std::vector<Region> next;
    for (const Region& r : cur) {
      const std::vector<double> z = next_map(net, l, r.m, 3);
      std::vector<Poly> pieces{r.poly};
      for (std::size_t j = 0; j < z.size() / 3; ++j) {
        std::vector<Poly> split_pieces;
        for (const Poly& p : pieces) {
          split(p, z.data() + 3 * j, pos, neg);
          if (!pos.empty()) split_pieces.push_back(pos);
          if (!neg.empty()) split_pieces.push_back(neg);
        }
        pieces = std::move(split_pieces);
        if (static_cast<index_t>(next.size() + pieces.size()) > max_regions)
          throw InvalidArgument(std::string(call) + ": the plane holds more than " + std::to_string(max_regions) +
                                " regions (the cap); raise the cap or choose a smaller plane");
      }
      for (Poly& p : pieces) {
        const Point c = centroid(p);
        next.push_back({std::move(p), activate(net, l, z, 3, c.data())});
      }
    }
    cur = std::move(next);
  }

  // The output layer on each region: logits F = c W_L M + b, affine in (s, t).
  PlaneRegions out;
  const index_t outputs = spec.outputs();
  for (Region& r : cur) {
    const std::vector<double> f = next_map(net, spec.layers() - 1, r.m, 3);
    PlanePolygon poly;
    const Point c = centroid(r.poly);
    auto value = [&](index_t k, const Point& p) { return f[std::size_t(3 * k)] * p[0] + f[std::size_t(3 * k + 1)] * p[1] + f[std::size_t(3 * k + 2)]; };
    if (outputs == 1) {
      poly.label = value(0, c) > 0 ? 1 : 0;
      split(r.poly, f.data(), pos, neg);
      if (!pos.empty() && !neg.empty()) {
        poly.boundary = true;
        // The boundary piece: the vertices of pos that lie on the line (the two crossing points).
        std::vector<Point> on;
        const double tol = 1e-9 * (std::abs(f[0]) + std::abs(f[1]) + std::abs(f[2]));
        for (const Point& p : pos)
          if (std::abs(value(0, p)) <= tol) on.push_back(p);
        if (on.size() >= 2) out.boundary_segments.push_back({on.front()[0], on.front()[1], on.back()[0], on.back()[1]});
      }
    } else {
      index_t best = 0;
      for (index_t k = 1; k < outputs; ++k)
        if (value(k, c) > value(best, c)) best = k;
      poly.label = static_cast<int>(best);
      // Cell of class k: the polygon clipped to f_k - f_j >= 0 for every j. More than one
      // non-empty cell: the boundary crosses; the cells' edges on a tie line are its pieces.
      int cells = 0;
      for (index_t k = 0; k < outputs; ++k) {
        Poly cell = r.poly;
        for (index_t j = 0; j < outputs && !cell.empty(); ++j) {
          if (j == k) continue;
          const double g[3] = {f[std::size_t(3 * k)] - f[std::size_t(3 * j)], f[std::size_t(3 * k + 1)] - f[std::size_t(3 * j + 1)],
                               f[std::size_t(3 * k + 2)] - f[std::size_t(3 * j + 2)]};
          split(cell, g, pos, neg);
          cell = pos;
        }
        if (cell.empty()) continue;
        ++cells;
        for (std::size_t e = 0; e < cell.size(); ++e) {
          const Point& p = cell[e];
          const Point& q = cell[(e + 1) % cell.size()];
          for (index_t j = k + 1; j < outputs; ++j) {
            const double g[3] = {f[std::size_t(3 * k)] - f[std::size_t(3 * j)], f[std::size_t(3 * k + 1)] - f[std::size_t(3 * j + 1)],
                                 f[std::size_t(3 * k + 2)] - f[std::size_t(3 * j + 2)]};
            const double tol = 1e-9 * (std::abs(g[0]) + std::abs(g[1]) + std::abs(g[2]));
            auto gv = [&](const Point& x) { return g[0] * x[0] + g[1] * x[1] + g[2]; };
            if (std::abs(gv(p)) <= tol && std::abs(gv(q)) <= tol) out.boundary_segments.push_back({p[0], p[1], q[0], q[1]});
          }
        }
      }
      poly.boundary = cells > 1;
    }
    if (poly.boundary) ++out.boundary_regions;
    poly.vertices = std::move(r.poly);
    out.polygons.push_back(std::move(poly));
  }
  return out;
}

template SegmentRegions segment_regions<float>(const Context&, const model::MlpSpec&, const float*, const double*,
                                               const double*, index_t);
template SegmentRegions segment_regions<double>(const Context&, const model::MlpSpec&, const double*, const double*,
                                                const double*, index_t);
template PlaneRegions plane_regions<float>(const Context&, const model::MlpSpec&, const float*, MatrixView<const double>,
                                           index_t);
template PlaneRegions plane_regions<double>(const Context&, const model::MlpSpec&, const double*,
                                            MatrixView<const double>, index_t);

}  // namespace dynascope::regions
