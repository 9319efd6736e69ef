// dynascope regions: the linear regions a network cuts its input space into — distinct activation
// patterns among samples, exact regions along a segment or on a plane, and the region map picture.
#include <cmath>
#include <fstream>

#include "cli/model_flags.hpp"
#include "cli/region_map.hpp"
#include "cli/training_run.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/dispatch.hpp"
#include "dynascope/io.hpp"
#include "dynascope/regions.hpp"

namespace dynascope::cli {

namespace {

struct RegionsCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;  // --inputs/--dataset: the points drawn on --image
  std::string samples;
  std::string around;
  double radius = 0;
  index_t count = 0;
  std::string shape = "ball";
  index_t dims = 0;
  std::string segment;
  std::string plane;
  index_t resolution = 512;
  bool exact = false;
  bool exact_2d = false;
  std::string image;
  std::string out_ids;
  std::string out_polygons;
  index_t max_regions = 200000;
  CLI::App* app = nullptr;
};

void validate(const RegionsCommand& c) {
  const CLI::App& cmd = *c.app;
  const int sources = !c.samples.empty() + !c.around.empty() + !c.segment.empty() + !c.plane.empty();
  if (sources != 1)
    throw UsageError("regions needs exactly one of --samples S.npy, --around X.npy, --segment S.npy, --plane P.npy (got " +
                     std::to_string(sources) + ")");
  if (c.model.model.empty() && c.model.arch.empty()) throw UsageError("regions needs --model FILE (or --arch)");
  if (!c.around.empty() && !(c.radius > 0)) throw UsageError("--around needs --radius R > 0");
  if (c.around.empty()) refuse_ignored(cmd, "--radius", "it is the radius of the balls of --around");
  if (c.around.empty()) refuse_ignored(cmd, "--shape", "it is the neighbourhood of --around");
  if (c.shape != "cross-polytope") refuse_ignored(cmd, "--dims", "it is the dimension of --shape cross-polytope");
  if (c.around.empty() && c.segment.empty()) refuse_ignored(cmd, "--count", "it is the number of points of --around or --segment");
  if (!c.around.empty() && c.count < 1) throw UsageError("--around needs --count M >= 1 (points per anchor)");
  if (c.exact && c.segment.empty()) throw UsageError("--exact walks a segment: it needs --segment S.npy");
  if (c.exact_2d && c.plane.empty()) throw UsageError("--exact-2d partitions a plane: it needs --plane P.npy");
  if (!c.image.empty() && c.plane.empty()) throw UsageError("--image draws the plane: it needs --plane P.npy");
  if (c.plane.empty()) refuse_ignored(cmd, "--resolution", "it is the grid of --plane");
  if (!c.out_polygons.empty() && !c.exact_2d) throw UsageError("--out-polygons writes the polygons of --exact-2d");
  if (!c.exact && !c.exact_2d) refuse_ignored(cmd, "--max-regions", "it caps --exact and --exact-2d");
  if (c.image.empty() && (!c.data.inputs.empty() || !c.data.dataset.empty()))
    throw UsageError("--inputs/--dataset give the points drawn on --image; without --image they have no effect");
  if (!c.image.empty() && c.resolution > 4096)
    throw UsageError("--image: --resolution " + std::to_string(c.resolution) + " would make an image wider than 4096 pixels");
  check_output("--out", c.common.out);
  check_output("--out-ids", c.out_ids);
  check_output("--image", c.image);
  check_output("--out-polygons", c.out_polygons);
}

// A float64 [rows, D] matrix from a .npy, checked: `what` names the flag.
std::vector<double> read_points(const std::string& flag, const std::string& path, index_t rows, index_t d) {
  const io::Tensor t = io::read_array(path);
  if (t.shape.size() != 2 || (rows > 0 && t.shape[0] != rows) || t.shape[1] != d)
    throw UsageError(flag + ": '" + path + "' must be [" + (rows > 0 ? std::to_string(rows) : std::string("M")) + ", " +
                     std::to_string(d) + "] for a network of " + std::to_string(d) + " inputs, got " + shape_string(t.shape));
  std::vector<double> v = t.to_vector<double>();
  for (double x : v)
    if (!std::isfinite(x)) throw UsageError(flag + ": '" + path + "' holds a NaN or infinite value");
  return v;
}

template <class T>
int run(const RegionsCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  validate(c);
  const Context ctx = make_context(c.common);
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, 0, 0);
  const index_t d = net.spec.inputs();
  json r;
  r["network"] = spec_json(net);

  Array<T> samples;
  std::vector<double> plane_pts;
  if (!c.samples.empty()) {
    const io::Tensor t = io::read_array(c.samples);
    if (t.shape.size() != 2 || t.shape[1] != d)
      throw UsageError("--samples: '" + c.samples + "' must be [M, " + std::to_string(d) + "], got " + shape_string(t.shape));
    samples = Array<T>::from_host(ctx, t.shape, t.to_vector<T>());
    r["sampler"] = "samples";
  } else if (!c.around.empty()) {
    const auto anchors = read_points("--around", c.around, 0, d);
    const index_t a = static_cast<index_t>(anchors.size()) / d;
    const Array<T> av = Array<T>::from_host(ctx, {a, d}, std::vector<T>(anchors.begin(), anchors.end()));
    if (c.shape == "ball") {
      samples = regions::ball_points<T>(ctx, av.matrix(), c.radius, c.count, c.common.seed);
    } else {
      const index_t p = c.dims > 0 ? c.dims : std::min<index_t>(25, d);
      if (p > d)
        throw UsageError("--dims " + std::to_string(p) + " exceeds the input width " + std::to_string(d));
      samples = regions::cross_polytope_points<T>(ctx, av.matrix(), c.radius, p, c.count, c.common.seed);
      r["dims"] = p;
    }
    r["sampler"] = c.shape;
    r["anchors"] = a;
    r["radius"] = c.radius;
  } else if (!c.segment.empty()) {
    const auto ends = read_points("--segment", c.segment, 2, d);
    if (c.exact) {
      const auto seg = regions::segment_regions<T>(ctx, net.spec, net.params.data(), ends.data(), ends.data() + d,
                                                   c.max_regions);
      r["regions"] = seg.regions;
      r["breakpoints"] = seg.breakpoints;
    }
    samples = regions::segment_points<T>(ctx, ends.data(), ends.data() + d, d, c.count > 0 ? c.count : 10000);
    r["sampler"] = "segment";
  } else {
    plane_pts = read_points("--plane", c.plane, 3, d);
    samples = regions::plane_grid<T>(ctx, MatrixView<const double>{plane_pts.data(), 3, d, d}, c.resolution);
    r["sampler"] = "plane";
    r["resolution"] = c.resolution;
  }

  regions::PatternOptions po;
  po.ids = !c.out_ids.empty() || !c.image.empty();
  const regions::PatternResult pr = regions::count_patterns<T>(ctx, net.spec, net.params.data(), samples.matrix(), po);
  r["samples"] = pr.samples;
  r["distinct"] = pr.distinct;
  r["distinct_per_layer"] = pr.distinct_per_layer;

  regions::PlaneRegions exact2d;
  if (c.exact_2d) {
    exact2d = regions::plane_regions<T>(ctx, net.spec, net.params.data(), MatrixView<const double>{plane_pts.data(), 3, d, d},
                                        c.max_regions);
    r["regions"] = exact2d.polygons.size();
    r["boundary_regions"] = exact2d.boundary_regions;
    if (!c.out_polygons.empty()) {
      json polys = json::array();
      for (const auto& p : exact2d.polygons) {
        json v = json::array();
        for (const auto& q : p.vertices) v.push_back({q[0], q[1]});
        polys.push_back({{"vertices", v}, {"boundary", p.boundary}, {"label", p.label}});
      }
      json doc{{"plane", "x = A + s (B - A) + t (C - A), s, t in [0, 1]"}, {"polygons", polys}};
      io::write_text_atomic(c.out_polygons, doc.dump() + "\n");
      r["polygons_file"] = c.out_polygons;
    }
  }
  if (!c.out_ids.empty()) {
    const Array<std::int64_t> ids = pr.ids.to_host(ctx);
    io::write_npy(c.out_ids, io::Tensor::from(ids.data(), Shape{pr.samples}));
    r["ids_file"] = c.out_ids;
  }
  if (!c.image.empty()) {
    RegionMap map;
    map.resolution = c.resolution;
    const Array<std::int64_t> ids = pr.ids.to_host(ctx);
    map.region.assign(ids.data(), ids.data() + ids.size());
    // The predicted class at every grid point.
    map.label = predicted_classes<T>(ctx, net.spec, net.params.data(), samples.matrix());
    if (c.exact_2d) map.exact = &exact2d;
    if (!c.data.inputs.empty() || !c.data.dataset.empty()) {
      const data::Split split = load_data(c.data, c.common.seed);
      const data::Dataset& ds = split.train;
      if (ds.d != d)
        throw UsageError("--inputs has " + std::to_string(ds.d) + " columns but the network takes " + std::to_string(d));
      // Least-squares (s, t) of each point on the plane; points farther from the plane than a
      // tenth of its smaller side are not drawn.
      double uu = 0, uv = 0, vv = 0, side2 = 0;
      for (index_t k = 0; k < d; ++k) {
        const double u = plane_pts[std::size_t(d + k)] - plane_pts[std::size_t(k)], v = plane_pts[std::size_t(2 * d + k)] - plane_pts[std::size_t(k)];
        uu += u * u;
        uv += u * v;
        vv += v * v;
      }
      side2 = std::min(uu, vv);
      const double det = uu * vv - uv * uv;
      for (index_t i = 0; i < ds.n; ++i) {
        double bu = 0, bv = 0, xx = 0;
        for (index_t k = 0; k < d; ++k) {
          const double x = ds.x[std::size_t(i * d + k)] - plane_pts[std::size_t(k)];
          const double u = plane_pts[std::size_t(d + k)] - plane_pts[std::size_t(k)], v = plane_pts[std::size_t(2 * d + k)] - plane_pts[std::size_t(k)];
          bu += x * u;
          bv += x * v;
          xx += x * x;
        }
        const double s = (vv * bu - uv * bv) / det, t = (uu * bv - uv * bu) / det;
        const double dist2 = std::max(0.0, xx - (s * bu + t * bv));
        if (s < 0 || s > 1 || t < 0 || t > 1 || dist2 > 0.01 * side2) continue;
        map.points.push_back({s, t});
        if (ds.task == data::Task::classification) map.point_labels.push_back(int(ds.labels[std::size_t(i)]));
      }
      r["points_drawn"] = map.points.size();
    }
    write_region_map(c.image, map);
    r["image_file"] = c.image;
  }
  emit_result("regions", c.common, ctx, r, start);
  return 0;
}

}  // namespace

Command register_regions(CLI::App& app) {
  auto* cmd = app.add_subcommand("regions", "Linear regions: distinct activation patterns, exact regions on a segment or plane, region maps");
  auto c = std::make_shared<RegionsCommand>();
  c->app = cmd;
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, false);
  // The points drawn on --image (not add_data_flags: --samples is this command's sample file).
  auto* ds = cmd->add_option("--dataset", c->data.dataset, "with --image: draw this built-in dataset's points");
  auto* xs = cmd->add_option("--inputs", c->data.inputs, "with --image: draw these points [N, D] (.npy)")
                 ->check(CLI::ExistingFile);
  auto* ys = cmd->add_option("--targets", c->data.targets, "with --inputs: class labels [N] that colour the points")
                 ->check(CLI::ExistingFile);
  ds->excludes(xs);
  ys->needs(xs);
  cmd->add_option("--samples", c->samples, "count the distinct patterns of these points [M, D] (.npy)")->check(CLI::ExistingFile);
  cmd->add_option("--around", c->around, "anchors [A, D] (.npy): sample --count points uniformly in the ball of --radius around each")
      ->check(CLI::ExistingFile);
  cmd->add_option("--radius", c->radius, "radius of the neighbourhoods of --around, > 0")->check(finite_at_least(0, true));
  cmd->add_option("--shape", c->shape,
                  "neighbourhood of --around: ball (uniform in the Euclidean ball) | cross-polytope (uniform in the L1 ball "
                  "spanned by lc's shared random frame of --dims directions and --seed: the neighbourhood lc tests)")
      ->check(CLI::IsMember({"ball", "cross-polytope"}))
      ->capture_default_str();
  cmd->add_option("--dims", c->dims, "directions of --shape cross-polytope, 1 <= P <= input width (default min(25, D))")
      ->check(at_least(1));
  cmd->add_option("--count", c->count, "points per anchor (--around) or along the segment (--segment; default 10000)")
      ->check(at_least(1));
  cmd->add_option("--segment", c->segment, "end points [2, D] (.npy): evenly spaced points from the first to the second")
      ->check(CLI::ExistingFile);
  cmd->add_option("--plane", c->plane, "points A, B, C [3, D] (.npy): a --resolution grid on {A + s(B-A) + t(C-A) : s, t in [0, 1]}")
      ->check(CLI::ExistingFile);
  cmd->add_option("--resolution", c->resolution, "grid points per side of --plane (and the image's size in pixels)")
      ->check(in_range(1, 8192))
      ->capture_default_str();
  cmd->add_flag("--exact", c->exact, "with --segment: the exact regions crossed and breakpoints (float64; piecewise-linear activations)");
  cmd->add_flag("--exact-2d", c->exact_2d, "with --plane: the exact partition into polygons and the regions the decision boundary crosses");
  cmd->add_option("--max-regions", c->max_regions, "stop --exact/--exact-2d with an error past this many regions")
      ->check(at_least(1))
      ->capture_default_str();
  cmd->add_option("--image", c->image, "with --plane: draw the region map to this PNG (regions, edges, decision boundary, --inputs points)");
  cmd->add_option("--out-ids", c->out_ids, "write the region id of every sample to this .npy (int64)");
  cmd->add_option("--out-polygons", c->out_polygons, "with --exact-2d: write the polygons (s, t vertices) to this JSON file");
  return {cmd, [c] {
            resolve_dtype(c->common, {c->model.model, c->samples, c->around, c->segment, c->plane});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
