// dynascope.local_complexity, count_patterns, exact_regions and the samplers of the linear-regions
// family (include/dynascope/regions.hpp), for an Mlp and, through the caller's pre-activations,
// for any network (the generic path: vertices out, pre-activations in).
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common.hpp"
#include "dynascope/model.hpp"
#include "dynascope/regions.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

regions::LcOptions lc_options(double radius, index_t dims, const std::string& frame, std::uint64_t seed) {
  regions::LcOptions o;
  o.radius = radius;
  o.dims = dims;
  o.seed = seed;
  if (frame == "shared") o.frame = regions::Frame::shared;
  else if (frame == "per_sample") o.frame = regions::Frame::per_sample;
  else if (frame == "given") o.frame = regions::Frame::given;
  else throw InvalidArgument("frame: expected 'shared', 'per_sample' or 'given', got '" + frame + "'");
  return o;
}

// A library-owned host array copied into the caller's buffer of the same element count.
template <class T, class U>
void copy_out(const Array<T>& a, Out<U>& out, const char* name) {
  static_assert(sizeof(T) == sizeof(U));
  if (static_cast<index_t>(out.size()) != a.size())
    throw ShapeMismatch(std::string(name) + ": expected " + std::to_string(a.size()) + " elements, got " +
                        std::to_string(out.size()));
  if (a.size() > 0) std::memcpy(out.data(), a.data(), std::size_t(a.size()) * sizeof(T));
}

// Mlp path: the counts go into `counts` [N, L]; returns (per_layer_mean, total_mean,
// all_layers_mean, dims).
template <class T>
std::tuple<std::vector<double>, double, double, index_t> lc_into(const model::MlpSpec& spec, In1<T> params, In2<T> x,
                                                                 double radius, index_t dims, const std::string& frame_kind,
                                                                 std::optional<In2<T>> frame, std::uint64_t seed,
                                                                 int threads, nb::handle progress, Out<std::int32_t> counts) {
  check_params(spec, params.shape(0));
  const regions::LcOptions o = lc_options(radius, dims, frame_kind, seed);
  MatrixView<const T> fv;
  if (frame) fv = view2(*frame);
  Runner run(threads, progress);
  regions::LcResult r = run([&](const Context& ctx) {
    return regions::local_complexity<T>(ctx, spec, params.data(), view2(x), o, fv);
  });
  copy_out(r.counts, counts, "counts");
  return {r.per_layer_mean, r.total_mean, r.all_layers_mean, r.dims};
}

template <class T>
void first_layer_counts_into(const model::MlpSpec& spec, In1<T> params, In2<T> x, In2<T> frame, double radius,
                             int threads, Out<std::int32_t> counts) {
  check_params(spec, params.shape(0));
  Runner run(threads, nb::none());
  Array<std::int32_t> c = run([&](const Context& ctx) {
    return regions::first_layer_counts<T>(ctx, spec, params.data(), view2(x), view2(frame), radius);
  });
  copy_out(c, counts, "counts");
}

template <class T>
void random_frame_into(index_t inputs, index_t dims, std::uint64_t seed, bool per_sample, index_t sample, Out<T> out) {
  Runner run(1, nb::none());
  Array<T> f = run([&](const Context& ctx) {
    return regions::random_frame<T>(ctx, inputs, dims, seed,
                                    per_sample ? regions::Frame::per_sample : regions::Frame::shared, sample);
  });
  copy_out(f, out, "out");
}

// Patterns of an Mlp; the ids (when `ids` is given) go into it. Returns (samples, distinct,
// distinct_per_layer).
template <class T>
std::tuple<index_t, index_t, std::vector<index_t>> patterns_into(const model::MlpSpec& spec, In1<T> params, In2<T> samples,
                                                                 int threads, nb::handle progress,
                                                                 std::optional<Out<std::int64_t>> ids) {
  check_params(spec, params.shape(0));
  regions::PatternOptions po;
  po.ids = ids.has_value();
  Runner run(threads, progress);
  regions::PatternResult r = run([&](const Context& ctx) {
    return regions::count_patterns<T>(ctx, spec, params.data(), view2(samples), po);
  });
  if (ids) copy_out(r.ids, *ids, "ids");
  return {r.samples, r.distinct, r.distinct_per_layer};
}

// ---- samplers: [M, D] points written into `out` ----
template <class T>
void plane_grid_into(In2<double> points, index_t resolution, Out<T> out) {
  Runner run(1, nb::none());
  Array<T> a = run([&](const Context& ctx) { return regions::plane_grid<T>(ctx, view2(points), resolution); });
  copy_out(a, out, "out");
}
template <class T>
void segment_points_into(In2<double> ends, index_t count, Out<T> out) {
  if (ends.shape(0) != 2) throw ShapeMismatch("segment: expected 2 end points, got " + std::to_string(ends.shape(0)));
  const index_t d = static_cast<index_t>(ends.shape(1));
  Runner run(1, nb::none());
  Array<T> a = run([&](const Context& ctx) {
    return regions::segment_points<T>(ctx, ends.data(), ends.data() + d, d, count);
  });
  copy_out(a, out, "out");
}
template <class T>
void ball_points_into(In2<T> anchors, double radius, index_t count, std::uint64_t seed, int threads, Out<T> out) {
  Runner run(threads, nb::none());
  Array<T> a = run([&](const Context& ctx) { return regions::ball_points<T>(ctx, view2(anchors), radius, count, seed); });
  copy_out(a, out, "out");
}
template <class T>
void cross_polytope_points_into(In2<T> anchors, double radius, index_t dims, index_t count, std::uint64_t seed,
                                int threads, Out<T> out) {
  Runner run(threads, nb::none());
  Array<T> a = run([&](const Context& ctx) {
    return regions::cross_polytope_points<T>(ctx, view2(anchors), radius, dims, count, seed);
  });
  copy_out(a, out, "out");
}

// ---- exact regions (float64 inside) ----
template <class T>
std::tuple<index_t, std::vector<double>> segment_regions(const model::MlpSpec& spec, In1<T> params, In2<double> ends,
                                                         index_t max_regions) {
  check_params(spec, params.shape(0));
  if (ends.shape(0) != 2 || static_cast<index_t>(ends.shape(1)) != spec.inputs())
    throw ShapeMismatch("segment: expected [2, " + std::to_string(spec.inputs()) + "] end points");
  const index_t d = spec.inputs();
  Runner run(1, nb::none());
  regions::SegmentRegions r = run([&](const Context& ctx) {
    return regions::segment_regions<T>(ctx, spec, params.data(), ends.data(), ends.data() + d, max_regions);
  });
  return {r.regions, r.breakpoints};
}

// Returns (polygons as (vertices [[s, t], ...], boundary, label), boundary_regions,
// boundary_segments as [s0, t0, s1, t1] rows).
template <class T>
std::tuple<std::vector<std::tuple<std::vector<std::vector<double>>, bool, int>>, index_t, std::vector<std::vector<double>>>
plane_regions(const model::MlpSpec& spec, In1<T> params, In2<double> points, index_t max_regions) {
  check_params(spec, params.shape(0));
  if (points.shape(0) != 3 || static_cast<index_t>(points.shape(1)) != spec.inputs())
    throw ShapeMismatch("plane: expected [3, " + std::to_string(spec.inputs()) + "] points A, B, C");
  Runner run(1, nb::none());
  regions::PlaneRegions r = run([&](const Context& ctx) {
    return regions::plane_regions<T>(ctx, spec, params.data(), view2(points), max_regions);
  });
  std::vector<std::tuple<std::vector<std::vector<double>>, bool, int>> polys;
  polys.reserve(r.polygons.size());
  for (const auto& p : r.polygons) {
    std::vector<std::vector<double>> v;
    for (const auto& q : p.vertices) v.push_back({q[0], q[1]});
    polys.emplace_back(std::move(v), p.boundary, p.label);
  }
  std::vector<std::vector<double>> segs;
  for (const auto& s : r.boundary_segments) segs.push_back({s[0], s[1], s[2], s[3]});
  return {std::move(polys), r.boundary_regions, std::move(segs)};
}

// ---- the generic path: vertices out, pre-activations in ----
template <class T>
void vertices_into(In2<T> x, double radius, index_t dims, const std::string& frame_kind, std::optional<In2<T>> frame,
                   std::uint64_t seed, index_t first, int threads, Out2<T> out) {
  const regions::LcOptions o = lc_options(radius, dims, frame_kind, seed);
  MatrixView<const T> fv;
  if (frame) fv = view2(*frame);
  Runner run(threads, nb::none());
  run([&](const Context& ctx) { regions::cross_polytope_vertices<T>(ctx, view2(x), o, view2(out), first, fv); });
}

template <class T>
void sign_change_counts_into(In2<T> z, index_t vertices, index_t first, index_t column, int threads,
                             Out2<std::int32_t> counts) {
  Runner run(threads, nb::none());
  run([&](const Context& ctx) { regions::sign_change_counts<T>(ctx, view2(z), vertices, view2(counts), first, column); });
}

template <class T>
void pack_signs_into(In2<T> z, index_t first, index_t word0, int threads, Out2<std::uint64_t> packed) {
  Runner run(threads, nb::none());
  run([&](const Context& ctx) { regions::pack_signs<T>(ctx, view2(z), view2(packed), first, word0); });
}

std::tuple<index_t, index_t, std::vector<index_t>> count_packed_patterns(In2<std::uint64_t> packed,
                                                                         std::vector<index_t> layer_words, int threads,
                                                                         std::optional<Out<std::int64_t>> ids) {
  regions::PatternOptions po;
  po.ids = ids.has_value();
  Runner run(threads, nb::none());
  regions::PatternResult r = run([&](const Context& ctx) {
    return regions::count_packed_patterns(ctx, view2(packed), layer_words, po);
  });
  if (ids) copy_out(r.ids, *ids, "ids");
  return {r.samples, r.distinct, r.distinct_per_layer};
}

template <class T>
void register_typed(nb::module_& m) {
  m.def("lc_into", &lc_into<T>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(), "radius"_a, "dims"_a,
        "frame_kind"_a, "frame"_a.noconvert().none(), "seed"_a, "threads"_a, "progress"_a.none(), "counts"_a.noconvert(),
        "Local complexity of an Mlp; counts [N, L] written into `counts`.");
  m.def("first_layer_counts_into", &first_layer_counts_into<T>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(),
        "frame"_a.noconvert(), "radius"_a, "threads"_a, "counts"_a.noconvert(),
        "The exact first-layer counts [N] written into `counts`.");
  m.def("random_frame_into", &random_frame_into<T>, "inputs"_a, "dims"_a, "seed"_a, "per_sample"_a, "sample"_a,
        "out"_a.noconvert(), "The random frame [P, D] local_complexity uses, written into `out`.");
  m.def("patterns_into", &patterns_into<T>, "spec"_a, "params"_a.noconvert(), "samples"_a.noconvert(), "threads"_a,
        "progress"_a.none(), "ids"_a.noconvert().none(), "Distinct activation patterns of an Mlp.");
  m.def("plane_grid_into", &plane_grid_into<T>, "points"_a.noconvert(), "resolution"_a, "out"_a.noconvert());
  m.def("segment_points_into", &segment_points_into<T>, "ends"_a.noconvert(), "count"_a, "out"_a.noconvert());
  m.def("ball_points_into", &ball_points_into<T>, "anchors"_a.noconvert(), "radius"_a, "count"_a, "seed"_a, "threads"_a,
        "out"_a.noconvert());
  m.def("cross_polytope_points_into", &cross_polytope_points_into<T>, "anchors"_a.noconvert(), "radius"_a, "dims"_a,
        "count"_a, "seed"_a, "threads"_a, "out"_a.noconvert());
  m.def("segment_regions", &segment_regions<T>, "spec"_a, "params"_a.noconvert(), "ends"_a.noconvert(), "max_regions"_a);
  m.def("plane_regions", &plane_regions<T>, "spec"_a, "params"_a.noconvert(), "points"_a.noconvert(), "max_regions"_a);
  m.def("vertices_into", &vertices_into<T>, "x"_a.noconvert(), "radius"_a, "dims"_a, "frame_kind"_a,
        "frame"_a.noconvert().none(), "seed"_a, "first"_a, "threads"_a, "out"_a.noconvert(),
        "The cross-polytope vertices [m * 2P, D] of samples first.. into `out`.");
  m.def("sign_change_counts_into", &sign_change_counts_into<T>, "z"_a.noconvert(), "vertices"_a, "first"_a, "column"_a,
        "threads"_a, "counts"_a.noconvert(), "One layer's sign-change counts into column `column` of `counts`.");
  m.def("pack_signs_into", &pack_signs_into<T>, "z"_a.noconvert(), "first"_a, "word0"_a, "threads"_a,
        "packed"_a.noconvert(), "One layer's sign bits into `packed`.");
}

}  // namespace

void register_regions(nb::module_& m) {
  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  register_typed<float>(m);
  register_typed<double>(m);
  m.def("count_packed_patterns", &count_packed_patterns, "packed"_a.noconvert(), "layer_words"_a, "threads"_a,
        "ids"_a.noconvert().none(), "Distinct rows of packed sign patterns.");
  m.def("pattern_words", [](index_t width) { return regions::pattern_words(width); }, "width"_a);
}

}  // namespace dynascope::python
