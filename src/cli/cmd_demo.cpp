// dynascope demo: the main job on an embedded default. Trains a small network on a built-in
// dataset and measures it along training, writing a report folder (checkpoints, train.csv,
// report.json, lc.csv, llc.csv, elasticity.csv and its class matrices, response.csv, region maps)
// and a summary table on stdout.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <optional>

#include "cli/ntk_summary.hpp"
#include "cli/region_map.hpp"
#include "cli/report.hpp"
#include "cli/training_run.hpp"
#include "dynascope/curvature.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"
#include "dynascope/regions.hpp"
#include "dynascope/response.hpp"
#include "dynascope/sgld.hpp"

namespace dynascope::cli {

namespace {

// The linear-regions section's switches and settings.
struct RegionFlags {
  bool no_lc = false;
  double lc_radius = 0;  // 0: kLcRadiusFraction of the training inputs' bounding-box diagonal
  index_t lc_dims = 0;   // 0: min(25, input width)
  bool no_map = false;
  index_t map_resolution = 512;
  index_t map_max_regions = 50000;
};
constexpr double kLcRadiusFraction = 0.01;
constexpr double kMapMargin = 0.05;  // of the box's longer side, on every side

// The LLC section's switches: how many checkpoints (evenly spaced, the first and the last among
// them) and how many chains and draws; every other sampler setting is the library's default.
struct LlcFlags {
  bool no_llc = false;
  index_t checkpoints = 3;
  index_t chains = 4;
  // Calibrated on the demo's own run (`dynascope llc --calibrate` on its last checkpoint): at
  // epsilon 3e-4 with 200 burn-in steps and 200 draws the 4 chains mix (R-hat 1.04) at MALA
  // acceptance 0.9; the library's default 1e-4 with 100 + 100 steps left R-hat at 1.3.
  index_t draws = 200;
  index_t burnin = 200;
  double epsilon = 3e-4;
};

// The local-elasticity and training-response sections' switches. Both take one step of plain SGD
// from each checkpoint's weights on a fixed set of training samples (drawn once, before training)
// and measure in float64 whatever the training precision: the step form's change of the outputs
// is the difference of two forwards, which float32 does not resolve once the loss gradients are
// small (on the default run at step 600, float32 leaves 15 of the elasticity's 64 sources with no
// measurable change of their own, and the mean diagonal response of the first 128 training
// samples comes out 39% low). K = 32 samples per class (64 sources x 64 targets) and N = 64
// response samples cost 10-25 ms each per checkpoint for the default network on 2 cores.
struct ProbeFlags {
  bool no_elasticity = false;
  index_t elasticity_pairs = 32;  // K samples per class: K x K pairs per ordered class pair
  double elasticity_eta = 1e-3;
  bool no_response = false;
  index_t response_samples = 64;
  double response_eta = 1e-3;
};

struct DemoCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  TrainFlags train;
  index_t ntk_samples = 128;
  RegionFlags regions;
  LlcFlags llc;
  ProbeFlags probes;
  bool no_density = false;
  bool no_report = false;
  bool long_run = false;
  CLI::App* app = nullptr;
};

// The NTK section: at each checkpoint, the trace kernel on a fixed subset of the training set,
// summarised exactly as `dynascope ntk --k 5 --energy 1,2,5,10,20` does (kernel_summary): top
// eigenvalues, E_k of the centred targets, uncentred and centred kernel-target alignment; plus
// the distance to the kernel at initialisation and to the previous checkpoint's kernel (the
// kernel's velocity between checkpoints; none at the first).
struct NtkRow {
  json summary;
  double distance_to_init = 0;
  std::optional<double> distance_to_previous;
};
const std::vector<index_t> kEnergyKs{1, 2, 5, 10, 20};

template <class T>
class NtkTracker {
 public:
  NtkTracker(const Context& ctx, const Context& host, const model::MlpSpec& spec, const data::Dataset& train,
             index_t samples, std::uint64_t seed)
      : ctx_(ctx), host_(host), spec_(spec) {
    n_ = std::min(samples, train.n);
    std::vector<index_t> rows(static_cast<std::size_t>(n_));
    for (index_t i = 0; i < n_; ++i) rows[std::size_t(i)] = i;
    const data::Dataset sub = train.subset(rows);
    x_ = model::to_device<T>(ctx, sub).x;
    targets_ = kernel_targets(sub, false, spec.outputs());
    request_.top_k = std::min<index_t>(5, n_);
    for (index_t k : kEnergyKs)
      if (k <= n_) request_.energy_ks.push_back(k);
    request_.center_energy = true;
    request_.seed = seed;
  }
  NtkRow measure(const Array<T>& params) {
    std::vector<T> k(std::size_t(n_ * n_));
    ntk::empirical_ntk_into<T>(ctx_, spec_, params.data(), x_.matrix(), std::nullopt, {ntk::Outputs::trace},
                               {k.data(), n_, n_, n_, Backend::host});
    const MatrixView<const T> kv{k.data(), n_, n_, n_, Backend::host};
    NtkRow row;
    row.summary = kernel_summary<T>(host_, kv, targets_, request_);
    std::vector<double> kd(k.begin(), k.end());
    if (k0_.empty()) k0_ = kd;
    row.distance_to_init = ntk::kernel_distance({k0_.data(), n_, n_, n_}, {kd.data(), n_, n_, n_});
    if (!previous_.empty())
      row.distance_to_previous = ntk::kernel_distance({previous_.data(), n_, n_, n_}, {kd.data(), n_, n_, n_});
    previous_ = std::move(kd);
    return row;
  }
  index_t samples() const { return n_; }
  const KernelSummaryRequest& request() const { return request_; }

 private:
  Context ctx_, host_;
  model::MlpSpec spec_;
  index_t n_ = 0;
  Array<T> x_;
  KernelTargets targets_;
  KernelSummaryRequest request_;
  std::vector<double> k0_, previous_;
};

// The curvature section: the loss Hessian's top eigenvalues (Lanczos, warm-started from the
// previous checkpoint's eigenvectors), its trace (Hutch++) and its spectral density (stochastic
// Lanczos quadrature), on the whole training set.
struct CurvatureRow {
  std::vector<double> top;
  double trace = 0;
  index_t matvecs = 0;
  bool converged = false;
  std::optional<linalg::SpectralDensity> density;
};
// The density's settings: `dynascope spectrum --density`'s defaults (PyHessian's 90 Lanczos steps
// and 10 probes), so that each checkpoint's density is what that command gives for it with the
// demo's data flags and seed. They cost 900 Hessian-vector products per checkpoint, about 0.5 s
// for the default network on 2 cores.
constexpr index_t kDensitySteps = 90, kDensityProbes = 10, kDensityGrid = 1000;

template <class T>
class CurvatureTracker {
 public:
  CurvatureTracker(const Context& ctx, const model::MlpSpec& spec, const data::Split& split, model::Loss loss)
      : ctx_(ctx), spec_(spec), data_(model::to_device<T>(ctx, split.train)), loss_(loss) {}
  CurvatureRow measure(const Array<T>& params, std::uint64_t seed, bool density) {
    linalg::CurvatureOperator<T> h(ctx_, linalg::Curvature::hessian, spec_, params.data(), data_.x.matrix(), data_.targets(), loss_);
    linalg::LanczosOptions o;
    o.k = 3;
    o.tol = 1e-4;
    o.block = 3;
    o.seed = seed;
    o.method = linalg::EigenMethod::lanczos;
    std::optional<MatrixView<const T>> warm;
    if (!previous_.empty()) warm = MatrixView<const T>(previous_.matrix());
    const auto e = linalg::eigsh<T>(h, o, warm);
    previous_ = e.vectors.to(ctx_);
    const auto t = linalg::hutchpp<T>(h, 30, seed);
    CurvatureRow row{e.values, t.trace, e.matvecs + t.matvecs, e.all_converged, std::nullopt};
    if (density) {
      linalg::SlqOptions so;
      so.steps = kDensitySteps;
      so.probes = kDensityProbes;
      so.grid = kDensityGrid;
      so.seed = seed;
      row.density = linalg::slq<T>(h, so);
    }
    return row;
  }

 private:
  Context ctx_;
  model::MlpSpec spec_;
  model::DeviceData<T> data_;
  model::Loss loss_;
  Array<T> previous_;
};

// The linear-regions section, part 1: the local complexity at every checkpoint of the training,
// test and random points, exactly as `dynascope lc --checkpoints` computes it (the same point
// sets, shared random frame, seed and CSV columns).
struct LcSettings {
  double radius = 0;
  std::string radius_source;
  index_t dims = 0;
  BoundingBox box;
};

template <class T>
class LcTracker {
 public:
  LcTracker(const Context& ctx, const model::MlpSpec& spec, const data::Split& split, const LcSettings& s, std::uint64_t seed)
      : ctx_(ctx), spec_(spec), sets_(lc_point_sets<T>(ctx, split, 0, seed)), csv_(lc_csv_header(spec.layers())) {
    options_.radius = s.radius;
    options_.dims = s.dims;
    options_.seed = seed;
    options_.frame = regions::Frame::shared;
  }
  // Appends one row per point set; returns their total means (the summary table's columns).
  std::vector<double> measure(index_t step, const Array<T>& params) {
    std::vector<double> totals;
    for (const LcPointSet<T>& set : sets_) {
      const auto r = regions::local_complexity<T>(ctx_, spec_, params.data(), set.x.matrix(), options_);
      csv_ += lc_csv_row(step, set.name, set.x.dim(0), r);
      rows_.push_back(lc_row_json(step, set.name, set.x.dim(0), r));
      totals.push_back(r.total_mean);
    }
    return totals;
  }
  const std::vector<LcPointSet<T>>& sets() const { return sets_; }
  const std::string& csv() const { return csv_; }
  const json& rows() const { return rows_; }

 private:
  Context ctx_;
  model::MlpSpec spec_;
  regions::LcOptions options_;
  std::vector<LcPointSet<T>> sets_;
  std::string csv_;
  json rows_ = json::array();
};

// Part 2 (2-D inputs): the region map of a checkpoint over a square around the training inputs'
// bounding box, as `dynascope regions --plane P.npy --resolution R --exact-2d --image` draws it,
// with the training points. The exact partition is used while it stays under the cap; past it (or
// for activations that are not piecewise linear) the edges come from the grid's patterns and
// report.json says why.
struct MapPlane {
  std::vector<double> points;  // A, B, C [3, 2]: A + s (B - A) + t (C - A), s, t in [0, 1]
  double side = 1;
};

MapPlane map_plane(const BoundingBox& box) {
  const double w = box.hi[0] - box.lo[0], h = box.hi[1] - box.lo[1];
  double side = std::max(w, h) * (1 + 2 * kMapMargin);
  if (!(side > 0)) side = 1;  // every training input at one point
  const double x0 = 0.5 * (box.lo[0] + box.hi[0]) - 0.5 * side, y0 = 0.5 * (box.lo[1] + box.hi[1]) - 0.5 * side;
  return {{x0, y0, x0 + side, y0, x0, y0 + side}, side};
}

bool piecewise_linear(const model::MlpSpec& spec) {
  for (const auto& a : spec.activations)
    if (a.kind != model::Activation::relu && a.kind != model::Activation::leaky_relu && a.kind != model::Activation::abs &&
        a.kind != model::Activation::identity)
      return false;
  return true;
}

template <class T>
json draw_region_map(const Context& ctx, const model::MlpSpec& spec, const Array<T>& params, index_t step,
                     const MapPlane& plane, const data::Dataset& train, const RegionFlags& f, const std::string& path) {
  json info;
  info["step"] = step;
  const std::vector<T> host = params.to_vector(ctx);
  if (!std::all_of(host.begin(), host.end(), [](T v) { return std::isfinite(v); })) {
    info["skipped"] = "the parameters hold NaN or infinite values (the run diverged)";
    return info;
  }
  const MatrixView<const double> pts{plane.points.data(), 3, 2, 2};
  const Array<T> grid = regions::plane_grid<T>(ctx, pts, f.map_resolution);
  regions::PatternOptions po;
  po.ids = true;
  const regions::PatternResult pr = regions::count_patterns<T>(ctx, spec, params.data(), grid.matrix(), po);
  RegionMap map;
  map.resolution = f.map_resolution;
  const Array<std::int64_t> ids = pr.ids.to_host(ctx);
  map.region.assign(ids.data(), ids.data() + ids.size());
  map.label = predicted_classes<T>(ctx, spec, params.data(), grid.matrix());
  regions::PlaneRegions exact;
  if (!piecewise_linear(spec)) {
    info["exact"] = false;
    info["exact_skipped"] = "the exact partition needs piecewise-linear activations (relu, leaky_relu, abs, identity); "
                            "edges drawn where the grid's activation pattern changes";
  } else {
    try {
      exact = regions::plane_regions<T>(ctx, spec, params.data(), pts, f.map_max_regions);
      map.exact = &exact;
      info["exact"] = true;
      info["regions"] = exact.polygons.size();
      info["boundary_regions"] = exact.boundary_regions;
    } catch (const InvalidArgument& e) {  // past --map-max-regions
      info["exact"] = false;
      info["exact_skipped"] = "--map-max-regions " + std::to_string(f.map_max_regions) + ": " + e.what() +
                              "; edges drawn where the grid's activation pattern changes";
    }
  }
  info["distinct_on_grid"] = pr.distinct;
  for (index_t i = 0; i < train.n; ++i) {
    map.points.push_back({(train.x[std::size_t(2 * i)] - plane.points[0]) / plane.side,
                          (train.x[std::size_t(2 * i + 1)] - plane.points[1]) / plane.side});
    if (train.task == data::Task::classification) map.point_labels.push_back(int(train.labels[std::size_t(i)]));
  }
  write_region_map(path, map);
  info["file"] = path;
  return info;
}

// The LLC section: after training, the local learning coefficient at --llc-checkpoints evenly
// spaced over the run (the first and the last among them; checkpoints whose training loss is not
// finite are skipped), each read back from its file exactly as `dynascope llc --model FILE` reads
// it, with the run's training data and loss and the same sampler options and seed, so that each
// row is what that command reports.
template <class T>
json llc_section(const Context& ctx, const DemoCommand& c, const std::vector<CheckpointRow>& rows,
                 const data::Split& split, model::Loss loss, std::vector<std::optional<sgld::LlcResult>>& per_row) {
  const auto start = std::chrono::steady_clock::now();
  per_row.assign(rows.size(), std::nullopt);
  std::vector<std::size_t> usable;
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (std::isfinite(rows[i].train.loss) && !rows[i].file.empty()) usable.push_back(i);
  std::vector<std::size_t> chosen;
  const std::size_t m = usable.size(), k = std::min<std::size_t>(std::size_t(c.llc.checkpoints), m);
  for (std::size_t j = 0; j < k; ++j) {
    const std::size_t at = k == 1 ? m - 1 : (j * (m - 1) + (k - 1) / 2) / (k - 1);
    if (chosen.empty() || chosen.back() != usable[at]) chosen.push_back(usable[at]);
  }
  sgld::LlcOptions o;
  o.chains = c.llc.chains;
  o.draws = c.llc.draws;
  o.burnin = c.llc.burnin;
  o.epsilon = c.llc.epsilon;
  o.seed = c.common.seed;
  const model::DeviceData<T> dev = model::to_device<T>(ctx, split.train);
  std::string csv = llc_csv_header("step");
  json out_rows = json::array();
  for (std::size_t q = 0; q < chosen.size(); ++q) {
    const CheckpointRow& row = rows[chosen[q]];
    const std::string task = "demo: llc at step " + std::to_string(row.step) + " (" + std::to_string(q + 1) + "/" +
                             std::to_string(chosen.size()) + ")";
    o.on_progress = [&](const sgld::LlcProgress& p) {
      ctx.progress(task, p.step, p.total_steps);
      return true;
    };
    ModelFlags mf = c.model;
    mf.model = row.file;
    mf.arch.clear();
    const model::Mlp<T> net = load_network<T>(ctx, mf, c.common.seed, split);
    const sgld::LlcResult r = sgld::estimate_llc<T>(ctx, net.spec, net.params.data(), dev.x.matrix(), dev.targets(), loss, o);
    csv += llc_csv_row(std::to_string(row.step), r);
    json j;
    j["step"] = row.step;
    j["checkpoint"] = row.file;
    const json est = llc_json(r);
    for (auto it = est.begin(); it != est.end(); ++it) j[it.key()] = it.value();
    out_rows.push_back(j);
    per_row[chosen[q]] = r;
  }
  const std::string csv_file = (std::filesystem::path(c.train.out_dir) / "llc.csv").string();
  io::write_text_atomic(csv_file, csv);
  json section;
  // The chains' loss traces at the last checkpoint estimated, so that a bad calibration (a drift,
  // chains that have not mixed, a loss below L_n(w*)) can be seen: what `dynascope llc --model
  // CHECKPOINT --out-trace F` writes for it.
  if (!chosen.empty()) {
    const sgld::LlcResult& last = *per_row[chosen.back()];
    io::write_npy((std::filesystem::path(c.train.out_dir) / "llc_trace_last.npy").string(),
                  io::Tensor::from(last.loss_trace.data(), {last.chains, last.draws}));
    section["trace_file"] = "llc_trace_last.npy";
    section["trace_step"] = rows[chosen.back()].step;
  }
  o.on_progress = nullptr;
  section["options"] = llc_options_json(o);
  section["samples"] = split.train.n;
  section["csv_file"] = csv_file;
  section["note"] = "local learning coefficient (Lau, Furman, Wang, Murfet, Wei): lambda = n*beta (E[L_B(w)] - L_n(w*)) "
                    "over SGLD chains localized at the checkpoint's weights w* (library defaults: epsilon 1e-4, gamma "
                    "100, n*beta = n / ln n with n the training samples, full batch), on the training set with the run's "
                    "loss; llc_stderr = std over chains / sqrt(chains). The same numbers as `dynascope llc --model "
                    "CHECKPOINT --chains C --draws D --burnin B --seed S` with the demo's data flags. trace_file: the loss "
                    "L_B(w) of every chain [chains, draws] (float64) at the checkpoint of step trace_step, as "
                    "`--out-trace` writes it.";
  section["rows"] = out_rows;
  section["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return section;
}

// The network's parameters in float64 on ctx's backend: the precision the elasticity and response
// sections measure in.
template <class T>
Array<double> in_float64(const Context& ctx, const Array<T>& params) {
  const std::vector<T> h = params.to_vector(ctx);
  return Array<double>::from_host(ctx, {index_t(h.size())}, std::vector<double>(h.begin(), h.end()));
}

json matrix_json(const Array<double>& a) {
  json rows = json::array();
  for (index_t i = 0; i < a.dim(0); ++i) {
    json row = json::array();
    for (index_t j = 0; j < a.dim(1); ++j) {
      const double v = a.data()[i * a.dim(1) + j];
      row.push_back(std::isfinite(v) ? json(v) : json(nullptr));
    }
    rows.push_back(row);
  }
  return rows;
}

json finite_json(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// The samples of the elasticity section, drawn once before training, or why there are none.
struct ElasticitySettings {
  bool labels = false;
  index_t classes = 0;
  index_t per_class = 0;      // K (labels): K x K pairs per ordered class pair; value targets: the samples
  std::vector<index_t> rows;  // indices into the training split
  std::string skipped;        // non-empty: the section is not measured, and why
};

// The local-elasticity section: at every checkpoint, S_rel of one SGD step of size eta on each
// sample of a fixed set, measured at every sample of the set (metric auto: the KL divergence of
// the softmax for class labels, |Delta f| for value targets), with the class-pair matrix for
// labels. The samples are elasticity::sample_per_class's draw of K per class (seeded) from the
// training split, exactly as `dynascope elasticity --checkpoints DIR --pairs-per-class K` draws
// them, so its rows are the ones that command writes with --dtype float64.
class ElasticityTracker {
 public:
  ElasticityTracker(const Context& ctx, const model::MlpSpec& spec, const data::Dataset& train,
                    const ElasticitySettings& s, double eta, model::Loss loss)
      : ctx_(ctx), spec_(spec), s_(s), csv_(elasticity_csv_header()) {
    const data::Dataset sub = train.subset(s.rows);
    data_ = model::to_device<double>(ctx, sub);
    labels_ = sub.labels;
    options_.eta = eta;
    options_.update = elasticity::Update::sgd;
    options_.form = elasticity::Form::step;
    options_.metric = elasticity::Metric::automatic;
    options_.loss = loss;
    metric_ = elasticity::resolve(options_, s.labels);
  }
  // Appends the checkpoint's row; returns the summary table's number (the within/across ratio for
  // labels, the mean S_rel for value targets).
  double measure(index_t step, const std::string& checkpoint, const Array<double>& params) {
    const auto t0 = std::chrono::steady_clock::now();
    const elasticity::PairResult r = elasticity::pairwise<double>(ctx_, spec_, params.data(), data_.x.matrix(),
                                                                  data_.targets(), std::nullopt, options_);
    index_t pairs = 0;
    const double mean = elasticity_mean(r.s_rel, true, &pairs);
    std::optional<elasticity::ClassMatrix> cm;
    if (s_.labels) {
      const VectorView<const std::int64_t> l = vector_view<const std::int64_t>(labels_.data(), index_t(labels_.size()));
      cm = elasticity::class_matrix(r.s_rel.matrix(), l, l, s_.classes, true);
    }
    csv_ += elasticity_csv_row(step, checkpoint, mean, cm ? &*cm : nullptr, r.undefined_sources.size());
    json j;
    j["step"] = step;
    j["checkpoint"] = checkpoint;
    j["mean"] = finite_json(mean);
    j["pairs"] = pairs;
    if (cm) {
      j["class_matrix"] = matrix_json(cm->matrix);
      json counts = json::array();
      for (index_t a = 0; a < cm->classes; ++a) {
        json row = json::array();
        for (index_t b = 0; b < cm->classes; ++b) row.push_back(cm->pairs.data()[a * cm->classes + b]);
        counts.push_back(row);
      }
      j["class_pairs"] = counts;
      j["within_class"] = finite_json(cm->within);
      j["across_class"] = finite_json(cm->across);
      j["ratio"] = finite_json(cm->ratio);
      j["empty_cells"] = cm->empty_cells;
    } else {
      j["class_matrix"] = j["within_class"] = j["across_class"] = j["ratio"] = nullptr;
    }
    json undefined = json::array();  // as rows of the training split
    for (index_t i : r.undefined_sources) undefined.push_back(s_.rows[std::size_t(i)]);
    j["undefined_sources"] = undefined;
    j["flops"] = r.flops;
    rows_.push_back(j);
    flops_ += r.flops;
    const double summary = cm ? cm->ratio : mean;
    if (cm && !first_) {
      first_step_ = step;
      first_ = std::move(cm);
    } else if (cm) {
      last_step_ = step;
      last_ = std::move(cm);
    }
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return summary;
  }
  // Writes elasticity.csv (and for labels elasticity_first.npy, elasticity_last.npy); the report's
  // section.
  json finish(const std::filesystem::path& dir) {
    json j;
    j["metric"] = elasticity::to_string(metric_);
    j["form"] = elasticity::to_string(options_.form);
    j["update"] = elasticity::to_string(options_.update);
    j["eta"] = options_.eta;
    j["loss"] = model::to_string(options_.loss);
    j["dtype"] = "float64";
    j["sources"] = j["targets"] = index_t(s_.rows.size());
    j["same_set"] = true;
    j["pairs_per_class"] = s_.labels ? json(s_.per_class) : json(nullptr);
    if (s_.labels) j["classes"] = s_.classes;
    j["sample_rows"] = s_.rows;
    // The top-level measurement is the last checkpoint's, as `dynascope elasticity` gives it.
    if (!rows_.empty())
      for (const char* key : {"mean", "class_matrix", "within_class", "across_class", "ratio", "undefined_sources"})
        j[key] = rows_.back()[key];
    j["flops"] = flops_;
    const std::string csv_file = (dir / "elasticity.csv").string();
    io::write_text_atomic(csv_file, csv_);
    j["csv_file"] = csv_file;
    if (first_) {
      if (!last_) last_step_ = first_step_;  // one checkpoint: it is the first and the last
      const elasticity::ClassMatrix& last = last_ ? *last_ : *first_;
      const std::string first_file = (dir / "elasticity_first.npy").string(), last_file = (dir / "elasticity_last.npy").string();
      io::write_npy(first_file, io::Tensor::from(first_->matrix.data(), {s_.classes, s_.classes}));
      io::write_npy(last_file, io::Tensor::from(last.matrix.data(), {s_.classes, s_.classes}));
      j["first"] = {{"step", first_step_}, {"file", first_file}};
      j["last"] = {{"step", last_step_}, {"file", last_file}};
    }
    j["note"] = "local elasticity (He & Su; Dan, Mukherjee, Das, Gampa): one SGD step w+ = w - eta grad l(x_i) on each "
                "sampled training sample x_i (the run's loss), and S_rel(x_i, x_j) = m(x_j) / m(x_i) at every sampled "
                "x_j, with m = KL(p_w || p_w+) of the softmax for class labels (|f(w+) - f(w)| for value targets), in "
                "float64. Samples: pairs_per_class of every class drawn by the seed (value targets: the first "
                "training samples). mean: over the pairs of distinct samples; class_matrix[a][b]: the mean over "
                "sources of class a and targets of class b; within_class / across_class: the mean diagonal / "
                "off-diagonal entry; ratio = within / across (above 1: a step moves its own class more). The rows "
                "are what `dynascope elasticity --checkpoints DIR --pairs-per-class K --eta E --dtype float64 "
                "--out-csv F` writes for this run.";
    j["seconds"] = seconds_;
    j["rows"] = rows_;
    return j;
  }
  bool labels() const { return s_.labels; }

 private:
  Context ctx_;
  model::MlpSpec spec_;
  ElasticitySettings s_;
  model::DeviceData<double> data_;
  std::vector<std::int64_t> labels_;
  elasticity::Options options_;
  elasticity::Metric metric_ = elasticity::Metric::abs;
  std::string csv_;
  json rows_ = json::array();
  std::optional<elasticity::ClassMatrix> first_, last_;
  index_t first_step_ = -1, last_step_ = -1;
  double flops_ = 0, seconds_ = 0;
};

// The training-response section (Nakazato): at every checkpoint, on the first N training samples,
// the response R(x_j, x_i) = -<g_i, Delta f(x_j)> / (eta |g_i|^2) of one SGD step on x_i (step form,
// g_i = dl/df at x_i; the per-layer split from the per-layer NTK) and the hidden layers' feature
// space; after training, the aging fit R_t ~ A t^-beta of the mean diagonal response (and of each
// layer's) over the checkpoints after step 0.
class ResponseTracker {
 public:
  ResponseTracker(const Context& ctx, const model::MlpSpec& spec, const data::Dataset& train, index_t samples, double eta,
                  model::Loss loss)
      : ctx_(ctx), spec_(spec), samples_(samples), csv_(response_csv_header(spec.layers())) {
    std::vector<index_t> rows(static_cast<std::size_t>(samples));
    for (index_t i = 0; i < samples; ++i) rows[std::size_t(i)] = i;
    data_ = model::to_device<double>(ctx, train.subset(rows));
    options_.eta = eta;
    options_.form = elasticity::Form::step;
    options_.loss = loss;
    options_.per_layer = true;
  }
  // Appends the checkpoint's row; returns its mean diagonal response.
  double measure(index_t step, const std::string& checkpoint, const Array<double>& params) {
    const auto t0 = std::chrono::steady_clock::now();
    const response::Response r =
        response::training_response<double>(ctx_, spec_, params.data(), data_.x.matrix(), data_.targets(), options_);
    const response::FeatureSpace f = response::feature_space<double>(ctx_, spec_, params.data(), data_.x.matrix());
    csv_ += response_csv_row(step, checkpoint, spec_.layers(), r, f);
    json j = response_row_json(r, f);
    j["step"] = step;
    j["checkpoint"] = checkpoint;
    rows_.push_back(j);
    steps_.push_back(double(step));
    diagonal_.push_back(r.mean_diagonal);
    layer_diagonal_.push_back(r.layer_diagonal);
    flops_ += r.flops;
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r.mean_diagonal;
  }
  // Writes response.csv; the report's section with the aging fits.
  json finish(const std::filesystem::path& dir) {
    json j;
    // The fit window: every checkpoint after step 0 (t = 0 has no logarithm), as `dynascope
    // response --checkpoints` takes it by default.
    const double a = 1, b = steps_.empty() ? 1.0 : std::max(steps_.back(), 1.0);
    std::vector<std::string> notes;
    const auto fit = [&](const std::vector<double>& r, const std::string& what) -> json {
      index_t usable = 0;
      for (std::size_t i = 0; i < steps_.size(); ++i)
        if (steps_[i] >= a && steps_[i] <= b && std::isfinite(r[i]) && r[i] > 0) ++usable;
      const auto none = [&](const std::string& why) {
        json f = power_law_json(response::PowerLawFit{}, a, b);
        for (const char* key : {"beta", "beta_ci", "beta_stderr", "amplitude", "r_squared"}) f[key] = nullptr;
        f["points"] = usable;
        f["skipped"] = index_t(steps_.size()) - usable;
        notes.push_back("no aging fit of " + what + ": " + why);
        return f;
      };
      if (usable < 3)
        return none(std::to_string(usable) + " checkpoint" + (usable == 1 ? "" : "s") +
                    " after step 0 with a positive response; the fit needs 3 (--save-every sets how often checkpoints "
                    "are taken)");
      try {
        return power_law_json(response::fit_power_law(steps_, r, a, b, 0.95), a, b);
      } catch (const InvalidArgument& e) {
        return none(e.what());
      }
    };
    j["fit_to"] = "mean_diagonal";
    const json total = fit(diagonal_, "the mean diagonal response");
    for (auto it = total.begin(); it != total.end(); ++it) j[it.key()] = it.value();
    json layers = json::array();
    for (index_t l = 0; l < spec_.layers(); ++l) {
      std::vector<double> r;
      for (const auto& v : layer_diagonal_)
        r.push_back(std::size_t(l) < v.size() ? v[std::size_t(l)] : std::numeric_limits<double>::quiet_NaN());
      json one;
      one["layer"] = l + 1;
      const json lf = fit(r, "layer " + std::to_string(l + 1) + "'s diagonal response");
      for (auto it = lf.begin(); it != lf.end(); ++it) one[it.key()] = it.value();
      layers.push_back(one);
    }
    if (!notes.empty()) j["fit_warnings"] = notes;
    j["layers"] = layers;
    j["form"] = elasticity::to_string(options_.form);
    j["update"] = "sgd";
    j["eta"] = options_.eta;
    j["loss"] = model::to_string(options_.loss);
    j["dtype"] = "float64";
    j["samples"] = samples_;
    j["flops"] = flops_;
    const std::string csv_file = (dir / "response.csv").string();
    io::write_text_atomic(csv_file, csv_);
    j["csv_file"] = csv_file;
    j["note"] = "training response (Nakazato): R(x', x) = -<g, f(x'; w+) - f(x'; w)> / (eta |g|^2) for one SGD step "
                "w+ = w - eta grad l(x) (the run's loss, g = dl/df at x; for one output Delta f(x') / (-eta dl/df)), "
                "over all pairs of the first training samples, in float64; mean_diagonal = mean R(x, x), "
                "mean_off_diagonal = mean over x' != x; per layer from the per-layer NTK g^T Theta_l g / |g|^2. "
                "beta: least squares of ln R on ln t over the checkpoints t > 0 of the mean diagonal response "
                "(R ~ A t^-beta; beta > 0 aging, 0 a fixed kernel), beta_ci the 95% interval (Student's t). "
                "Feature space of each hidden layer on the same samples: effective rank exp(-sum p ln p) of the "
                "normalised singular values, participation ratio (sum s^2)^2 / sum s^4, dead units (zero on every "
                "sample), duplicated units (unit (w, b) directions within 1e-3); input_grad_norm = mean |df/dx|_F. "
                "The rows and the fit are what `dynascope response --checkpoints DIR --samples N --eta E "
                "--dtype float64 --out-csv F` gives for this run, N the samples above.";
    j["seconds"] = seconds_;
    j["rows"] = rows_;
    return j;
  }

 private:
  Context ctx_;
  model::MlpSpec spec_;
  index_t samples_ = 0;
  model::DeviceData<double> data_;
  response::Options options_;
  std::string csv_;
  json rows_ = json::array();
  std::vector<double> steps_, diagonal_;
  std::vector<std::vector<double>> layer_diagonal_;
  double flops_ = 0, seconds_ = 0;
};

// The elasticity section's samples, checked against the data before any work: an explicit
// --elasticity-pairs K must fit every class; the default shrinks to the smallest class.
ElasticitySettings elasticity_settings(const DemoCommand& c, const data::Dataset& train) {
  const CLI::App& cmd = *c.app;
  const ProbeFlags& f = c.probes;
  ElasticitySettings s;
  if (f.no_elasticity) {
    refuse_ignored(cmd, "--elasticity-pairs", "--no-elasticity switches the local elasticity off");
    refuse_ignored(cmd, "--elasticity-eta", "--no-elasticity switches the local elasticity off");
    s.skipped = "--no-elasticity";
    return s;
  }
  const bool explicit_k = given(cmd, "--elasticity-pairs");
  s.labels = train.task == data::Task::classification;
  if (!s.labels) {
    if (explicit_k && f.elasticity_pairs > train.n)
      throw UsageError("--elasticity-pairs " + std::to_string(f.elasticity_pairs) + " exceeds the " +
                       std::to_string(train.n) + " training samples (value targets: the first K samples are the sources "
                       "and targets of the steps)");
    s.per_class = std::min(f.elasticity_pairs, train.n);
    if (s.per_class < 2) {
      s.skipped = "fewer than 2 training samples";
      return s;
    }
    for (index_t i = 0; i < s.per_class; ++i) s.rows.push_back(i);
    return s;
  }
  s.classes = train.outputs;
  std::vector<index_t> count(std::size_t(s.classes), 0);
  for (std::int64_t l : train.labels) ++count[std::size_t(l)];
  const auto smallest = std::min_element(count.begin(), count.end());
  s.per_class = explicit_k ? f.elasticity_pairs : std::min(f.elasticity_pairs, *smallest);
  if (!explicit_k && s.per_class < 2) {
    s.skipped = "class " + std::to_string(smallest - count.begin()) + " has " + std::to_string(*smallest) +
                " training samples; the within-class pairs need 2 of every class";
    return s;
  }
  try {
    const std::vector<std::int64_t> idx = elasticity::sample_per_class(
        vector_view<const std::int64_t>(train.labels.data(), index_t(train.labels.size())), s.classes, s.per_class,
        c.common.seed);
    s.rows.assign(idx.begin(), idx.end());
  } catch (const InvalidArgument& e) {
    throw UsageError("--elasticity-pairs " + std::to_string(s.per_class) + ": " + e.what() + " (of the " +
                     std::to_string(train.n) + " training samples)");
  }
  return s;
}

// The response section's samples: an explicit --response-samples N must fit the training split;
// the default shrinks to it.
index_t response_samples(const DemoCommand& c, const data::Dataset& train, std::string& skipped) {
  const CLI::App& cmd = *c.app;
  const ProbeFlags& f = c.probes;
  if (f.no_response) {
    refuse_ignored(cmd, "--response-samples", "--no-response switches the training response off");
    refuse_ignored(cmd, "--response-eta", "--no-response switches the training response off");
    skipped = "--no-response";
    return 0;
  }
  if (given(cmd, "--response-samples") && f.response_samples > train.n)
    throw UsageError("--response-samples " + std::to_string(f.response_samples) + " exceeds the " +
                     std::to_string(train.n) + " training samples");
  const index_t n = std::min(f.response_samples, train.n);
  if (n < 2) skipped = "fewer than 2 training samples (the response compares pairs of samples)";
  return n;
}

// Checks the section's flags against each other and the data before any work; the settings.
LcSettings lc_settings(const DemoCommand& c, const data::Split& split) {
  const CLI::App& cmd = *c.app;
  const RegionFlags& f = c.regions;
  const index_t d = split.train.d;
  LcSettings s;
  s.box = bounding_box(split.train.x, split.train.n, d);
  if (f.no_lc) {
    refuse_ignored(cmd, "--lc-radius", "--no-lc switches the local complexity off");
    refuse_ignored(cmd, "--lc-dims", "--no-lc switches the local complexity off");
  } else {
    if (f.lc_dims > d)
      throw UsageError("--lc-dims " + std::to_string(f.lc_dims) + " exceeds the input width " + std::to_string(d) +
                       " (the directions must be orthonormal)");
    s.dims = f.lc_dims > 0 ? f.lc_dims : std::min<index_t>(25, d);
    if (given(cmd, "--lc-radius")) {
      s.radius = f.lc_radius;
      s.radius_source = "--lc-radius";
    } else {
      s.radius = kLcRadiusFraction * s.box.diagonal();
      s.radius_source = "1% of the diagonal of the training inputs' bounding box (--lc-radius to choose)";
      if (!(s.radius > 0))
        throw UsageError("--lc-radius: the training inputs all lie at one point, so the default radius (1% of their "
                         "bounding box's diagonal) is 0; give --lc-radius R > 0 or --no-lc");
    }
  }
  if (c.llc.no_llc)
    for (const char* flag : {"--llc-checkpoints", "--llc-chains", "--llc-draws", "--llc-burnin", "--llc-epsilon"})
      refuse_ignored(cmd, flag, "--no-llc switches the local learning coefficient off");
  if (f.no_map) {
    refuse_ignored(cmd, "--map-resolution", "--no-region-map switches the region maps off");
    refuse_ignored(cmd, "--map-max-regions", "--no-region-map switches the region maps off");
  } else if (d != 2) {
    refuse_ignored(cmd, "--map-resolution", "region maps are drawn for 2-D inputs only and these have " + std::to_string(d));
    refuse_ignored(cmd, "--map-max-regions", "region maps are drawn for 2-D inputs only and these have " + std::to_string(d));
  }
  return s;
}

// The report of the run folder (DIR/report/index.html and its figures), by `dynascope report`'s
// code. The run folder is complete before it starts, so a report that cannot be written (no Python
// extension in this build, no matplotlib) is a warning: the demo itself succeeded, and `dynascope
// report DIR` writes the figures once the cause is fixed.
void write_report(const DemoCommand& c) {
  std::fflush(stdout);  // the report runs in a child process that shares stdout and stderr
  print_status(c.common, "demo: writing the report (figures of every section) in " + c.train.out_dir + "/report/");
  // Quiet: the demo prints the page's path itself, with or without its own --quiet (which silences
  // progress on stderr only; the table and the files written always go to stdout).
  const int rc = run_report({c.train.out_dir}, true);
  const std::string index = (std::filesystem::path(c.train.out_dir) / "report" / "index.html").string();
  std::error_code ec;
  if (rc == 0 && std::filesystem::is_regular_file(index, ec)) {
    std::printf("report: %s\n", index.c_str());
    return;
  }
  std::fprintf(stderr,
               "demo: warning: the report's figures were not written (exit status %d; the reason is above). The run "
               "folder %s is complete; `dynascope report %s` writes them once that is fixed, and --no-report skips "
               "this step.\n",
               rc, c.train.out_dir.c_str(), c.train.out_dir.c_str());
}

template <class T>
int run(const DemoCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  check_output("--out", c.common.out);
  const Context ctx = make_context(c.common);
  const Context host = ctx.is_host() ? ctx : make_host_context(c.common);
  const data::Split split = load_data(c.data, c.common.seed);
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split);
  print_status(c.common, "demo: " + net.spec.arch_string() + " " + model::to_string(net.spec.activations.front()) + " on " +
                             split.train.name + " (" + std::to_string(split.train.n) + " train / " +
                             std::to_string(split.test.n) + " test samples), " + std::to_string(c.train.steps) + " steps of " +
                             c.train.optimizer + "; report in " + c.train.out_dir + "/");
  const LcSettings lc = lc_settings(c, split);
  const bool do_lc = !c.regions.no_lc, do_map = !c.regions.no_map && split.train.d == 2;
  NtkTracker<T> tracker(ctx, host, net.spec, split.train, c.ntk_samples, c.common.seed);
  const model::Loss loss = c.train.loss.empty() ? default_loss(split.train) : model::parse_loss(c.train.loss);
  CurvatureTracker<T> curvature(ctx, net.spec, split, loss);
  std::optional<LcTracker<T>> lc_tracker;
  if (do_lc) lc_tracker.emplace(ctx, net.spec, split, lc, c.common.seed);
  const ElasticitySettings es = elasticity_settings(c, split.train);
  std::string response_skipped;
  const index_t n_response = response_samples(c, split.train, response_skipped);
  std::optional<ElasticityTracker> elasticity_tracker;
  std::optional<ResponseTracker> response_tracker;
  try {
    if (es.skipped.empty())
      elasticity_tracker.emplace(ctx, net.spec, split.train, es, c.probes.elasticity_eta, loss);
    if (response_skipped.empty())
      response_tracker.emplace(ctx, net.spec, split.train, n_response, c.probes.response_eta, loss);
  } catch (const InvalidArgument& e) {  // options the library refuses for this data
    throw UsageError(e.what());
  }
  std::vector<double> elasticity_summary, response_summary;
  std::vector<NtkRow> ntk_rows;
  std::vector<CurvatureRow> curvature_rows;
  std::vector<std::vector<double>> lc_totals;
  // The maps are drawn after training, from the parameters of the first and the latest checkpoint.
  Array<T> first_params, last_params;
  index_t first_step = -1, last_step = -1;
  const auto outcome = run_training<T>(ctx, c.common, c.train, net, split, true, [&](index_t step, const Array<T>& params,
                                                                                    const std::string& file) {
    ntk_rows.push_back(tracker.measure(params));
    if (elasticity_tracker || response_tracker) {
      const Array<double> p64 = in_float64(ctx, params);
      if (elasticity_tracker) elasticity_summary.push_back(elasticity_tracker->measure(step, file, p64));
      if (response_tracker) response_summary.push_back(response_tracker->measure(step, file, p64));
    }
    curvature_rows.push_back(curvature.measure(params, c.common.seed, !c.no_density));
    if (lc_tracker) lc_totals.push_back(lc_tracker->measure(step, params));
    if (do_map) {
      if (first_step < 0) {
        first_params = params.to(ctx);
        first_step = step;
      } else {
        last_params = params.to(ctx);
        last_step = step;
      }
    }
  });
  const std::filesystem::path out_dir(c.train.out_dir);
  json lc_json, maps_json;
  if (lc_tracker) {
    const std::string csv_file = (out_dir / "lc.csv").string();
    io::write_text_atomic(csv_file, lc_tracker->csv());
    json samples;
    for (const auto& set : lc_tracker->sets()) samples[set.name] = set.x.dim(0);
    lc_json = {{"radius", lc.radius},
               {"radius_source", lc.radius_source},
               {"bounding_box", {{"lo", lc.box.lo}, {"hi", lc.box.hi}, {"diagonal", lc.box.diagonal()}}},
               {"dims", lc.dims},
               {"frame", "shared"},
               {"seed", c.common.seed},
               {"samples", samples},
               {"csv_file", csv_file},
               {"note", "local complexity (Humayun, Balestriero & Baraniuk): at each point x, the neurons whose "
                        "pre-activation sign is not the same at all 2P vertices x +- r v_p of a cross-polytope spanned by "
                        "one random orthonormal frame of P = dims directions shared by all points (seeded); total_mean = "
                        "mean over the points of the count summed over hidden layers, all_layers_mean with the output "
                        "layer, per_layer_mean per linear layer (the output layer last). Point sets: the training "
                        "inputs, the test inputs and as many uniform random points in the training inputs' bounding box "
                        "as training points. The same rows as `dynascope lc --checkpoints DIR --radius R --dims P "
                        "--out-csv F` with the demo's data flags and seed."},
               {"rows", lc_tracker->rows()}};
  } else {
    lc_json = {{"skipped", "--no-lc"}};
  }
  if (c.regions.no_map) {
    maps_json = {{"skipped", "--no-region-map"}};
  } else if (!do_map) {
    maps_json = {{"skipped", "the inputs have " + std::to_string(split.train.d) +
                                 " dimensions; region maps are drawn for 2-D inputs only (for a 2-D slice of a checkpoint "
                                 "use dynascope regions --plane P.npy --image map.png)"}};
  } else {
    if (last_step < 0) {  // one checkpoint: it is the first and the last
      last_params = first_params.to(ctx);
      last_step = first_step;
    }
    print_status(c.common, "demo: region maps of steps " + std::to_string(first_step) + " and " + std::to_string(last_step));
    const MapPlane plane = map_plane(lc.box);
    maps_json["plane"] = {{"A", {plane.points[0], plane.points[1]}},
                          {"B", {plane.points[2], plane.points[3]}},
                          {"C", {plane.points[4], plane.points[5]}}};
    maps_json["resolution"] = c.regions.map_resolution;
    maps_json["max_regions"] = c.regions.map_max_regions;
    maps_json["note"] = "the square x = A + s (B - A) + t (C - A), s, t in [0, 1], around the training inputs' bounding "
                        "box (5% margin), drawn as `dynascope regions --plane P.npy --exact-2d --image` does: linear "
                        "regions in shades of their predicted class, their edges (the exact partition unless past "
                        "max_regions), the decision boundary in black, the training points coloured by class";
    maps_json["first"] = draw_region_map<T>(ctx, net.spec, first_params, first_step, plane, split.train, c.regions,
                                            (out_dir / "region_map_first.png").string());
    maps_json["last"] = draw_region_map<T>(ctx, net.spec, last_params, last_step, plane, split.train, c.regions,
                                           (out_dir / "region_map_last.png").string());
  }

  json llc_report;
  std::vector<std::optional<sgld::LlcResult>> llc_rows(outcome.rows.size());
  if (c.llc.no_llc) {
    llc_report = {{"skipped", "--no-llc"}};
  } else {
    print_status(c.common, "demo: local learning coefficient at " +
                               std::to_string(std::min<std::size_t>(std::size_t(c.llc.checkpoints), outcome.rows.size())) +
                               " checkpoints (" + std::to_string(c.llc.chains) + " chains x " +
                               std::to_string(c.llc.draws) + " draws)");
    llc_report = llc_section<T>(ctx, c, outcome.rows, split, outcome.loss, llc_rows);
  }

  const json elasticity_report =
      elasticity_tracker ? elasticity_tracker->finish(out_dir) : json({{"skipped", es.skipped}});
  const json response_report =
      response_tracker ? response_tracker->finish(out_dir) : json({{"skipped", response_skipped}});

  json rows = json::array();
  for (std::size_t i = 0; i < outcome.rows.size(); ++i) {
    const auto& r = outcome.rows[i];
    const NtkRow& nr = ntk_rows[i];
    json j;
    j["step"] = r.step;
    j["train_loss"] = r.train.loss;
    j["train_accuracy"] = r.train.accuracy;
    j["test_loss"] = r.test.loss;
    j["test_accuracy"] = r.test.accuracy;
    j["checkpoint"] = r.file;
    json ntk_json = nr.summary;
    ntk_json["distance_to_init"] = nr.distance_to_init;
    ntk_json["distance_to_previous"] = nr.distance_to_previous ? json(*nr.distance_to_previous) : json(nullptr);
    j["ntk"] = ntk_json;
    const CurvatureRow& cr = curvature_rows[i];
    j["hessian"] = {{"top_eigenvalues", cr.top}, {"trace_hutchpp", cr.trace}, {"matvecs", cr.matvecs}, {"converged", cr.converged}};
    rows.push_back(j);
  }
  json report;
  report["config"] = run_config("demo", c.common, ctx, c.model, c.data, c.train, net.spec, net.source, split, outcome.loss);
  report["config"]["ntk_samples"] = c.ntk_samples;
  report["network"] = spec_json(net);
  report["dataset"] = split.train.name;
  report["train_samples"] = split.train.n;
  report["test_samples"] = split.test.n;
  report["loss"] = model::to_string(outcome.loss);
  report["steps"] = outcome.result.steps;
  report["diverged"] = outcome.result.diverged;
  report["checkpoints"] = rows;
  report["hessian"] = {{"samples", split.train.n},
                       {"note", "exact loss Hessian (R-operator) on the training set: top-3 eigenvalues by block Lanczos "
                                "(tol 1e-4, warm-started), trace by Hutch++ with 30 Hessian-vector products"}};
  if (c.no_density) {
    report["hessian"]["density"] = {{"skipped", "--no-density"}};
  } else {
    // One row per grid point per checkpoint. Each checkpoint has its own grid (the range of its
    // Ritz values, padded), as `dynascope spectrum --density` lays it out.
    std::string csv = "step,lambda,density\n";
    json sigma2 = json::array(), traces = json::array(), matvecs = json::array();
    for (std::size_t i = 0; i < outcome.rows.size(); ++i) {
      const linalg::SpectralDensity& d = *curvature_rows[i].density;
      char line[96];
      for (std::size_t g = 0; g < d.grid.size(); ++g) {
        std::snprintf(line, sizeof line, "%lld,%.10g,%.10g\n", static_cast<long long>(outcome.rows[i].step), d.grid[g],
                      d.density[g]);
        csv += line;
      }
      sigma2.push_back(d.sigma2);
      traces.push_back(finite_json(d.trace_estimate));
      matvecs.push_back(d.matvecs);
    }
    io::write_text_atomic((out_dir / "hessian_density.csv").string(), csv);
    report["hessian"]["density"] = {
        {"steps", kDensitySteps},
        {"probes", kDensityProbes},
        {"grid", kDensityGrid},
        {"seed", c.common.seed},
        {"file", "hessian_density.csv"},
        {"sigma2", sigma2},
        {"trace_slq", traces},
        {"matvecs", matvecs},
        {"note", "spectral density of the same Hessian by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao; "
                 "PyHessian's conventions): `probes` Rademacher probes, `steps` Lanczos steps each with full "
                 "reorthogonalization; the Ritz values, weighted by the squared first components of their vectors, "
                 "smoothed by Gaussians of variance sigma2 (1e-5 max(1, range of the Ritz values)) on `grid` points "
                 "spanning that range, padded; the density integrates to 1. trace_slq = n mean over probes of the "
                 "quadrature of lambda. hessian_density.csv: step,lambda,density, one row per grid point per "
                 "checkpoint. Each checkpoint's density is what `dynascope spectrum --model CHECKPOINT --operator "
                 "hessian --density --steps S --probes V --grid G --seed SEED` gives with the demo's data flags."}};
  }
  report["ntk"] = {{"samples", tracker.samples()},
                   {"outputs", "trace"},
                   {"k", tracker.request().top_k},
                   {"energy_ks", tracker.request().energy_ks},
                   {"energy_targets", "centered"},
                   {"note", "trace kernel on the first training samples, summarised as `dynascope ntk --k 5 --energy "
                            "1,2,5,10,20` does: eigenvalues = the top eigenvalues; energy[k] = E_k(y), the share of the "
                            "centred targets' energy (one-hot for classes) in the top-k eigenvectors; kta = uncentred "
                            "and kta_centered = centred kernel-target alignment; distance_to_init = 1 - <K0,K>/(|K0||K|) with K0 the "
                            "kernel at the first checkpoint; distance_to_previous = the same distance to the previous "
                            "checkpoint's kernel (the kernel's velocity; null at the first)"}};
  report["local_complexity"] = lc_json;
  report["region_maps"] = maps_json;
  report["llc"] = llc_report;
  report["elasticity"] = elasticity_report;
  report["response"] = response_report;
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  io::write_text_atomic((std::filesystem::path(c.train.out_dir) / "report.json").string(), report.dump(2) + "\n");

  std::printf("%7s  %10s  %9s  %10s  %9s  %10s  %7s  %7s  %6s  %7s  %9s  %9s", "step", "train loss", "train acc",
              "test loss", "test acc", "NTK l1", "l1/l2", "E_5(y)", "cKTA", "S(K0,K)", "Hess l1", "Hess tr");
  // The elasticity's within/across-class ratio (its mean S_rel for value targets) and the mean
  // diagonal training response.
  if (elasticity_tracker) std::printf("  %8s", elasticity_tracker->labels() ? "LE ratio" : "LE mean");
  if (response_tracker) std::printf("  %9s", "R diag");
  // The local complexity's total mean of each point set (train, test when there is one, random).
  if (lc_tracker)
    for (const auto& set : lc_tracker->sets())
      std::printf("  %8s", set.name == "random" ? "LC rand" : ("LC " + set.name).c_str());
  if (!c.llc.no_llc) std::printf("  %10s  %7s", "LLC", "LLC SE");
  std::printf("\n");
  for (std::size_t i = 0; i < outcome.rows.size(); ++i) {
    const auto& r = outcome.rows[i];
    const NtkRow& nr = ntk_rows[i];
    const CurvatureRow& cr = curvature_rows[i];
    const std::vector<double> top = nr.summary["eigenvalues"].get<std::vector<double>>();
    const json& energy = nr.summary["energy"];
    const double e5 = energy.contains("5") ? energy["5"].get<double>() : energy.back().get<double>();
    std::printf("%7lld  %10.6f  %9.4f  %10.6f  %9.4f  %10.4g  %7.2f  %7.4f  %6.3f  %7.4f  %9.4g  %9.4g",
                static_cast<long long>(r.step), r.train.loss, r.train.accuracy, r.test.loss, r.test.accuracy, top[0],
                top.size() > 1 ? top[0] / top[1] : 0.0, e5, nr.summary["kta_centered"].get<double>(),
                nr.distance_to_init, cr.top[0], cr.trace);
    if (i < elasticity_summary.size()) std::printf("  %8.4g", elasticity_summary[i]);
    if (i < response_summary.size()) std::printf("  %9.4g", response_summary[i]);
    if (i < lc_totals.size())
      for (double v : lc_totals[i]) std::printf("  %8.3f", v);
    // The LLC where it was measured (with its standard error over the chains), "-" elsewhere.
    if (!c.llc.no_llc) {
      if (llc_rows[i]) std::printf("  %10.4g  %7.2g", llc_rows[i]->llc_mean, llc_rows[i]->llc_stderr);
      else std::printf("  %10s  %7s", "-", "-");
    }
    std::printf("\n");
  }
  // What the LLC's chains looked like when they looked unhealthy.
  for (std::size_t i = 0; i < outcome.rows.size(); ++i)
    if (llc_rows[i])
      for (const std::string& w : llc_rows[i]->warnings)
        std::printf("LLC at step %lld: %s\n", static_cast<long long>(outcome.rows[i].step), w.c_str());
  // The response's aging fit, from the mean diagonal response of the checkpoints after step 0.
  if (response_tracker) {
    if (response_report["beta"].is_number()) {
      const json& ci = response_report["beta_ci"];
      const json& w = response_report["fit_window"];
      std::printf("response aging R ~ A t^-beta over steps %g..%g: beta = %.4g (95%% CI %.4g .. %.4g), R^2 %.3f, %lld "
                  "checkpoints; per layer:",
                  w[0].get<double>(), w[1].get<double>(), response_report["beta"].get<double>(),
                  ci[0].is_number() ? ci[0].get<double>() : NAN, ci[1].is_number() ? ci[1].get<double>() : NAN,
                  response_report["r_squared"].is_number() ? response_report["r_squared"].get<double>() : NAN,
                  response_report["points"].get<long long>());
      for (const json& l : response_report["layers"]) {
        if (l["beta"].is_number()) std::printf(" %.3g", l["beta"].get<double>());
        else std::printf(" -");
      }
      std::printf("\n");
    } else {
      const json& notes = response_report["fit_warnings"];
      std::printf("response aging: %s\n", notes.empty() ? "no fit" : notes[0].get<std::string>().c_str());
    }
  }
  std::string files = c.train.out_dir + "/report.json, " + c.train.out_dir + "/train.csv";
  if (!c.no_density) files += ", " + c.train.out_dir + "/hessian_density.csv";
  if (lc_tracker) files += ", " + c.train.out_dir + "/lc.csv";
  if (llc_report.contains("csv_file")) files += ", " + c.train.out_dir + "/llc.csv";
  if (llc_report.contains("trace_file")) files += ", " + c.train.out_dir + "/llc_trace_last.npy";
  if (elasticity_report.contains("csv_file")) files += ", " + c.train.out_dir + "/elasticity.csv";
  if (elasticity_report.contains("first"))
    files += ", " + c.train.out_dir + "/elasticity_first.npy, " + c.train.out_dir + "/elasticity_last.npy";
  if (response_report.contains("csv_file")) files += ", " + c.train.out_dir + "/response.csv";
  if (maps_json.contains("first") && maps_json["first"].contains("file"))
    files += ", " + c.train.out_dir + "/region_map_first.png";
  if (maps_json.contains("last") && maps_json["last"].contains("file"))
    files += ", " + c.train.out_dir + "/region_map_last.png";
  std::printf("run folder: %s, %zu checkpoints (%.1f s)\n", files.c_str(), outcome.rows.size(),
              report["seconds"].get<double>());
  if (!c.common.out.empty()) emit_result("demo", c.common, ctx, report, start);
  if (!c.no_report) write_report(c);
  return outcome.result.diverged ? 1 : 0;
}

// --long: a training long enough for grokking to show. Modular addition (a + b) mod 23 on one-hot
// pairs, 60% of the 529 pairs for training, a 46-256-23 ReLU network with its initial weights
// scaled up and AdamW with a strong weight decay (Liu, Michaud & Tegmark's Omnigrok recipe: a large
// initialization memorises first, and weight decay then pulls the weights down to the norm where
// the network generalises). The training set is fitted within ~1000 steps while the test accuracy
// stays at chance (1% at step 1000); it rises long after (23% at step 3000, 90% at step 10000). Checkpoints every 500 steps (the LC curve's phases and the
// NTK's late alignment need several). Each default applies only where its flag is not given.
// On this run the training points' local complexity jumps while the training set is memorised
// (17 -> 51 by step 500), stays flat while the test accuracy is at chance, and climbs again as it
// rises (76 at step 10000); the late descent of Humayun et al.'s curves does not show within 10000
// steps.
constexpr const char* kLongHelp =
    "a longer run that shows memorisation, then late generalisation (grokking), and the local complexity moving with "
    "them: "
    "modular addition (modadd, 60% train), a 46-256-23 ReLU network at --init-scale 3, AdamW (lr 3e-3, weight decay "
    "1), 10000 full-batch steps, a checkpoint every 1000 and at 16 log-spaced steps (--save-log), the LLC at "
    "--llc-epsilon 3e-3, into dynascope-demo-long/; any flag given explicitly wins";

void apply_long_defaults(DemoCommand& c) {
  const CLI::App& cmd = *c.app;
  const auto unless = [&](const char* flag, auto& field, auto value) {
    if (!given(cmd, flag)) field = value;
  };
  if (!given(cmd, "--inputs")) {  // data of one's own replaces the dataset
    unless("--dataset", c.data.dataset, std::string("modadd"));
    unless("--samples", c.data.samples, index_t(0));
  }
  unless("--test-fraction", c.data.test_fraction, 0.4);
  if (!given(cmd, "--model")) {  // so does a network of one's own
    unless("--arch", c.model.arch, std::string("-256-"));
    unless("--init-scale", c.model.init_scale, 3.0);
  }
  unless("--optimizer", c.train.optimizer, std::string("adamw"));
  unless("--lr", c.train.lr, 3e-3);
  unless("--weight-decay", c.train.weight_decay, 1.0);
  unless("--steps", c.train.steps, index_t(10000));
  unless("--save-every", c.train.save_every, index_t(1000));
  // Log-spaced checkpoints as well: memorisation happens in the first few hundred steps, and the
  // LC's first phases with it, so even spacing alone would leave one or two points there.
  unless("--save-log", c.train.save_log, index_t(16));
  unless("--out-dir", c.train.out_dir, std::string("dynascope-demo-long"));
  // Calibrated with `dynascope llc --calibrate` on this run's last checkpoint: at 3e-3 the 4 chains
  // mix at steps 0, 5000 and 10000 (R-hat 1.01-1.06, MALA acceptance 0.56); the spirals' 3e-4 left
  // R-hat at 1.5.
  unless("--llc-epsilon", c.llc.epsilon, 3e-3);
}

}  // namespace

Command register_demo(CLI::App& app) {
  auto* cmd = app.add_subcommand("demo", "The main job: train a small network on a built-in dataset and track the "
                                         "diagnostics along training (report folder + summary table)");
  auto c = std::make_shared<DemoCommand>();
  c->app = cmd;
  // The embedded default: two spirals, a 2-64-64-2 ReLU network, full-batch Adam.
  c->data.dataset = "spirals";
  c->data.samples = 512;
  c->data.test_fraction = 0.25;
  c->model.arch = "-64-64-";
  c->train.optimizer = "adam";
  c->train.lr = 1e-2;
  c->train.steps = 600;
  c->train.save_every = 100;
  c->train.out_dir = "dynascope-demo";
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, false);
  add_data_flags(*cmd, c->data, true);
  add_train_flags(*cmd, c->train);
  add_out_dir_flags(*cmd, c->train, "run folder (checkpoints, train.csv, report.json, hessian_density.csv, lc.csv, "
                                     "llc.csv, llc_trace_last.npy, elasticity.csv, elasticity_first.npy, "
                                     "elasticity_last.npy, response.csv, region_map_first.png, region_map_last.png, "
                                     "report/)");
  cmd->add_option("--ntk-samples", c->ntk_samples, "training samples the NTK section uses, >= 1")
      ->check(at_least(1))
      ->capture_default_str();
  RegionFlags& rf = c->regions;
  cmd->add_flag("--no-lc", rf.no_lc,
                "no local complexity (the linear-regions section's lc.csv, report rows and LC columns)");
  cmd->add_option("--lc-radius", rf.lc_radius,
                  "radius r of the local complexity's cross-polytopes, > 0, in input units (default: 1% of the "
                  "diagonal of the training inputs' bounding box)")
      ->check(finite_at_least(0, /*open=*/true));
  cmd->add_option("--lc-dims", rf.lc_dims,
                  "directions P of the local complexity's cross-polytopes, 1 <= P <= input width (default: min(25, "
                  "input width))")
      ->check(at_least(1));
  cmd->add_flag("--no-region-map", rf.no_map,
                "no region maps (2-D inputs: region_map_first.png and region_map_last.png)");
  cmd->add_option("--map-resolution", rf.map_resolution,
                  "region maps: pixels per side, one grid point each, 16..4096")
      ->check(in_range(16, 4096))
      ->capture_default_str();
  cmd->add_option("--map-max-regions", rf.map_max_regions,
                  "region maps: draw the exact partition when it has at most this many regions, else the grid's "
                  "edges, >= 1")
      ->check(at_least(1))
      ->capture_default_str();
  LlcFlags& lf = c->llc;
  cmd->add_flag("--no-llc", lf.no_llc, "no local learning coefficient (llc.csv, the report's llc section, the LLC columns)");
  cmd->add_option("--llc-checkpoints", lf.checkpoints,
                  "the LLC at this many checkpoints, evenly spaced with the first and the last among them, >= 1")
      ->check(at_least(1))
      ->capture_default_str();
  cmd->add_option("--llc-chains", lf.chains, "SGLD chains per LLC estimate, >= 2 (the error bar is their spread)")
      ->check(at_least(2))
      ->capture_default_str();
  cmd->add_option("--llc-draws", lf.draws, "recorded draws per chain, >= 1")->check(at_least(1))->capture_default_str();
  cmd->add_option("--llc-burnin", lf.burnin, "SGLD steps before the first draw, >= 0")
      ->check(at_least(0))
      ->capture_default_str();
  cmd->add_option("--llc-epsilon", lf.epsilon, "SGLD step size epsilon, > 0 (llc --calibrate shows how to choose it)")
      ->check(finite_at_least(0.0, true))
      ->capture_default_str();
  cmd->add_flag("--no-density", c->no_density,
                "no spectral density of the Hessian (hessian_density.csv and the report's hessian.density)");
  cmd->add_flag("--no-report", c->no_report,
                "do not write the report (report/index.html and its figures) at the end; `dynascope report DIR` "
                "writes it later");
  cmd->add_flag("--long", c->long_run, kLongHelp);
  ProbeFlags& pf = c->probes;
  cmd->add_flag("--no-elasticity", pf.no_elasticity,
                "no local elasticity (elasticity.csv, elasticity_{first,last}.npy, the report's elasticity section, the "
                "LE column)");
  cmd->add_option("--elasticity-pairs", pf.elasticity_pairs,
                  "local elasticity: K training samples of every class (seeded), K x K pairs per class pair; value "
                  "targets: the first K samples; >= 2 (default: 32, fewer when a class has fewer)")
      ->check(at_least(2));
  cmd->add_option("--elasticity-eta", pf.elasticity_eta, "local elasticity: the SGD step size eta, > 0")
      ->check(finite_at_least(0.0, true))
      ->capture_default_str();
  cmd->add_flag("--no-response", pf.no_response,
                "no training response (response.csv, the report's response section, the R column and the aging fit)");
  cmd->add_option("--response-samples", pf.response_samples,
                  "training response and feature space: the first N training samples, >= 2 (default: 64, fewer when "
                  "the training set has fewer)")
      ->check(at_least(2));
  cmd->add_option("--response-eta", pf.response_eta, "training response: the SGD step size eta, > 0")
      ->check(finite_at_least(0.0, true))
      ->capture_default_str();
  return {cmd, [c] {
            if (c->long_run) apply_long_defaults(*c);
            resolve_dtype(c->common, {c->model.model, c->data.inputs});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
