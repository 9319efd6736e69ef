// The demo's linear-regions section against the commands it summarises, run as separate
// processes: its local-complexity rows equal `dynascope lc` on the same checkpoint, points,
// radius, dims and seed; its region maps are valid PNGs equal to what `dynascope regions --plane
// --exact-2d --image` draws for the same checkpoint, plane and training points; its elasticity and
// response rows equal `dynascope elasticity` and `dynascope response` on the run folder, its class
// matrices hold the CSV's within/across-class means and its aging fit is the least-squares line
// recomputed here. Its Hessian density equals `dynascope spectrum --density` on the same checkpoint
// and, on a network small enough for SLQ to be exact, sits on the dense eigenvalues; its kernel
// velocity is the distance of consecutive `dynascope ntk` kernels computed here; its LLC trace is
// `dynascope llc --out-trace`'s. Plus lc.csv, the stdout table, the switches, the report at the end,
// --long's defaults, runs that never mix and bad flags.
#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/cli_test_util.hpp"
#include "dynascope/datasets.hpp"
#include "dynascope/io.hpp"

namespace dynascope {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::CliResult;
using test::fields;
using test::lines;

// One small demo run shared by the read-only checks: 160 spirals samples (120 train / 40 test),
// checkpoints at steps 0, 20 and 40, 96-pixel maps, the LLC from 3 chains of 10 + 30 steps, the
// elasticity on 32 samples of each class (the default) and the response on all 120 training samples;
// no report (one test writes it).
constexpr int kSamples = 160, kTrain = 120, kTest = 40, kResolution = 96;
const std::vector<std::string> kLlc{"--llc-chains", "3", "--llc-draws", "30", "--llc-burnin", "10"};
const std::vector<std::string> kSmall = [] {
  std::vector<std::string> a{"--samples",     "160", "--steps", "40",         "--save-every", "20",
                             "--ntk-samples", "16",  "--quiet", "--no-report"};
  a.insert(a.end(), kLlc.begin(), kLlc.end());  // last: a run with --no-llc leaves them out
  return a;
}();

std::vector<std::string> demo_args(const std::string& out_dir, std::vector<std::string> extra) {
  std::vector<std::string> a{"demo", "--out-dir", out_dir};
  a.insert(a.end(), kSmall.begin(), kSmall.end());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

json read_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

std::string exact_number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// The last line of the summary table `out` that starts with `prefix` (a step right-aligned in 7
// characters, then two spaces); empty when there is none.
std::string table_line(const std::string& out, const std::string& prefix) {
  std::istringstream table(out);
  std::string found;
  for (std::string line; std::getline(table, line);)
    if (line.rfind(prefix, 0) == 0) found = line;
  return found;
}

// The table's first line (its column names).
std::string table_header(const std::string& out) {
  std::istringstream table(out);
  std::string header;
  std::getline(table, header);
  return header;
}

// A table line's cells as numbers.
std::vector<double> table_cells(const std::string& line) {
  std::istringstream cells(line);
  std::vector<double> v;
  for (std::string cell; cells >> cell;) v.push_back(std::stod(cell));
  return v;
}

// A PNG decoded by libpng (which checks the signature, the chunks' CRCs and the compressed data).
struct Png {
  bool ok = false;
  std::string error;
  unsigned width = 0, height = 0;
  std::vector<unsigned char> rgb;  // [height, width, 3]
};

Png read_png(const std::string& path) {
  Png p;
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, path.c_str())) {
    p.error = image.message;
    return p;
  }
  image.format = PNG_FORMAT_RGB;
  p.rgb.resize(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, p.rgb.data(), 0, nullptr)) {
    p.error = image.message;
    png_image_free(&image);
    return p;
  }
  p.ok = true;
  p.width = image.width;
  p.height = image.height;
  return p;
}

class CliDemo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("dynascope_cli_demo_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    fs::create_directories(*dir_);
    run_ = new CliResult(test::run(demo_args(
        path("run"), {"--map-resolution", std::to_string(kResolution), "--response-samples", std::to_string(kTrain)})));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    delete run_;
  }
  static std::string path(const std::string& name) { return (*dir_ / name).string(); }
  static const CliResult& shared_run() { return *run_; }

 private:
  static fs::path* dir_;
  static CliResult* run_;
};
fs::path* CliDemo::dir_ = nullptr;
CliResult* CliDemo::run_ = nullptr;

TEST_F(CliDemo, LocalComplexityRowsEqualLcOnTheLastCheckpoint) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  const json& lc = report.at("local_complexity");
  // The default radius is 1% of the diagonal of the training inputs' bounding box: the box of the
  // same split computed here through the library.
  const data::Dataset all = data::load_dataset("spirals", {.samples = kSamples});
  const data::Split split = data::train_test_split(all, 0.25, 0);
  ASSERT_EQ(split.train.n, kTrain);
  double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
  for (index_t i = 0; i < split.train.n; ++i)
    for (int j = 0; j < 2; ++j) {
      lo[j] = std::min(lo[j], split.train.x[std::size_t(2 * i + j)]);
      hi[j] = std::max(hi[j], split.train.x[std::size_t(2 * i + j)]);
    }
  const double radius = lc.at("radius").get<double>();
  EXPECT_NEAR(radius, 0.01 * std::hypot(hi[0] - lo[0], hi[1] - lo[1]), 1e-15);
  EXPECT_EQ(lc.at("dims"), 2);
  EXPECT_EQ(lc.at("frame"), "shared");
  EXPECT_EQ(lc.at("samples"), json({{"train", kTrain}, {"test", kTest}, {"random", kTrain}}));

  // One row per checkpoint and point set, in the report and in lc.csv.
  const json& rows = lc.at("rows");
  ASSERT_EQ(rows.size(), 9u);
  const std::vector<std::string> csv = lines(path("run/lc.csv"));
  ASSERT_EQ(csv.size(), 10u);
  EXPECT_EQ(csv[0], "step,points,samples,total_mean,all_layers_mean,layer1,layer2,layer3");
  const char* sets[] = {"train", "test", "random"};
  for (std::size_t k = 0; k < 9; ++k) {
    const json& row = rows[k];
    EXPECT_EQ(row.at("step"), 20 * int(k / 3));
    EXPECT_EQ(row.at("points"), sets[k % 3]);
    const std::vector<std::string> f = fields(csv[k + 1]);
    ASSERT_EQ(f.size(), 8u) << csv[k + 1];
    EXPECT_EQ(f[0], std::to_string(20 * (k / 3)));
    EXPECT_EQ(f[1], sets[k % 3]);
    EXPECT_EQ(std::stoll(f[2]), row.at("samples").get<long long>());
    EXPECT_NEAR(std::stod(f[3]), row.at("total_mean").get<double>(), 1e-9);
    EXPECT_NEAR(std::stod(f[4]), row.at("all_layers_mean").get<double>(), 1e-9);
    for (int l = 0; l < 3; ++l) EXPECT_NEAR(std::stod(f[std::size_t(5 + l)]), row.at("per_layer_mean")[std::size_t(l)].get<double>(), 1e-9);
  }
  // Regions move: the curve is not flat, and points do sit near neurons' sign changes.
  EXPECT_GT(rows[0].at("total_mean").get<double>(), 0.5);
  EXPECT_NE(rows[0].at("total_mean"), rows[6].at("total_mean"));

  // `dynascope lc --checkpoints` on a folder holding only the last checkpoint, with the demo's data
  // flags, radius, dims and seed: the same three rows, the same counts.
  fs::create_directories(path("last"));
  fs::copy_file(path("run/step_0000040.safetensors"), path("last/step_0000040.safetensors"));
  const std::vector<std::string> data{"--dataset", "spirals", "--samples", std::to_string(kSamples), "--test-fraction", "0.25"};
  std::vector<std::string> args{"lc", "--checkpoints", path("last"), "--radius", exact_number(radius), "--dims", "2",
                                "--out-csv", path("lc_last.csv"), "--quiet"};
  args.insert(args.end(), data.begin(), data.end());
  CliResult r = test::run(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  const json theirs = r.json().at("rows");
  ASSERT_EQ(theirs.size(), 3u);
  for (std::size_t k = 0; k < 3; ++k) {
    const json& mine = rows[6 + k];
    EXPECT_EQ(theirs[k].at("step"), 40);
    EXPECT_EQ(theirs[k].at("points"), mine.at("points"));
    EXPECT_EQ(theirs[k].at("total_mean").get<double>(), mine.at("total_mean").get<double>()) << mine;
    EXPECT_EQ(theirs[k].at("all_layers_mean").get<double>(), mine.at("all_layers_mean").get<double>()) << mine;
    EXPECT_EQ(theirs[k].at("per_layer_mean"), mine.at("per_layer_mean")) << mine;
  }
  // lc's CSV has the same columns; its numbers agree to the digits it prints.
  const std::vector<std::string> their_csv = lines(path("lc_last.csv"));
  ASSERT_EQ(their_csv.size(), 4u);
  EXPECT_EQ(their_csv[0], csv[0]);
  for (std::size_t k = 0; k < 3; ++k) {
    const auto a = fields(their_csv[k + 1]), b = fields(csv[7 + k]);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(a[i], b[i]);
    for (std::size_t i = 3; i < a.size(); ++i) EXPECT_NEAR(std::stod(a[i]), std::stod(b[i]), 1e-5 * std::stod(b[i]) + 1e-12);
  }
  // And `lc --model` on the checkpoint (the one-network path) gives the training points' row.
  args = {"lc", "--model", path("run/step_0000040.safetensors"), "--radius", exact_number(radius), "--dims", "2", "--quiet"};
  args.insert(args.end(), data.begin(), data.end());
  r = test::run(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("total_mean").get<double>(), rows[6].at("total_mean").get<double>());
  EXPECT_EQ(r.json().at("per_layer_mean"), rows[6].at("per_layer_mean"));

  // The summary table has the LC columns, with the report's total means of the last checkpoint.
  const std::string& out = shared_run().out;
  EXPECT_NE(out.find("LC train"), std::string::npos) << out;
  EXPECT_NE(out.find("LC test"), std::string::npos) << out;
  EXPECT_NE(out.find("LC rand"), std::string::npos) << out;
  const std::string last_row = table_line(out, "     40  ");
  ASSERT_FALSE(last_row.empty()) << out;
  const std::vector<double> v = table_cells(last_row);
  // 12 columns, the elasticity's ratio and the mean diagonal response, 3 LC, then LLC and its
  // standard error.
  ASSERT_EQ(v.size(), 19u) << last_row;
  for (std::size_t k = 0; k < 3; ++k) EXPECT_NEAR(v[14 + k], rows[6 + k].at("total_mean").get<double>(), 5e-4);
}

// `lc --checkpoints` on the demo's folder with no data flag takes the run's data (dataset, samples,
// test fraction, split seed) from its report.json, as llc, elasticity and response do; with the
// demo's radius, dims and seed it writes the demo's lc.csv byte for byte.
TEST_F(CliDemo, LcCheckpointsTakesTheRunsDataFromItsReport) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  ASSERT_EQ(report.at("config").at("data").at("dataset"), "spirals");
  const double radius = report.at("local_complexity").at("radius").get<double>();
  const CliResult r = test::run({"lc", "--checkpoints", path("run"), "--radius", exact_number(radius), "--dims", "2",
                                 "--out-csv", path("lc_from_report.csv"), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  EXPECT_EQ(j.at("data").at("from"), (fs::path(path("run")) / "report.json").string());
  EXPECT_EQ(j.at("data").at("dataset"), "spirals");
  EXPECT_EQ(j.at("data").at("samples_flag"), kSamples);
  EXPECT_EQ(j.at("checkpoints"), 3);
  EXPECT_EQ(test::slurp(path("lc_from_report.csv")), test::slurp(path("run/lc.csv")));
  EXPECT_EQ(lines(path("lc_from_report.csv")).size(), 10u);
}

TEST_F(CliDemo, LlcRowsEqualTheLlcCommand) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  const json& llc = report.at("llc");
  // The default: three checkpoints (the first, the middle and the last), the chains and draws asked for.
  const json& opt = llc.at("options");
  EXPECT_EQ(opt.at("chains"), 3);
  EXPECT_EQ(opt.at("draws"), 30);
  EXPECT_EQ(opt.at("burnin"), 10);
  EXPECT_EQ(opt.at("seed"), 0);
  EXPECT_EQ(llc.at("samples"), kTrain);
  const json& rows = llc.at("rows");
  ASSERT_EQ(rows.size(), 3u);
  for (std::size_t q = 0; q < 3; ++q) {
    EXPECT_EQ(rows[q].at("step"), 20 * int(q));
    EXPECT_EQ(rows[q].at("llc_per_chain").size(), 3u);
    EXPECT_TRUE(rows[q].at("diverged").empty()) << rows[q];
    EXPECT_GT(rows[q].at("llc_stderr").get<double>(), 0.0);
    EXPECT_NEAR(rows[q].at("nbeta").get<double>(), kTrain / std::log(double(kTrain)), 1e-9);
  }
  const std::vector<std::string> csv = lines(path("run/llc.csv"));
  ASSERT_EQ(csv.size(), 4u);
  EXPECT_EQ(csv[0], "step,llc_mean,llc_stderr,r_hat,llc_std,ess,mala_acceptance,init_loss,nbeta,chains,diverged_chains,warnings");
  for (std::size_t q = 0; q < 3; ++q) {
    const std::vector<std::string> f = fields(csv[q + 1]);
    ASSERT_GE(f.size(), 3u);
    EXPECT_EQ(f[0], std::to_string(20 * q));
    EXPECT_NEAR(std::stod(f[1]), rows[q].at("llc_mean").get<double>(), 1e-9 * std::abs(rows[q].at("llc_mean").get<double>()));
    EXPECT_NEAR(std::stod(f[2]), rows[q].at("llc_stderr").get<double>(), 1e-9 * rows[q].at("llc_stderr").get<double>());
  }

  // `dynascope llc --model` on the last checkpoint with the demo's data flags, chains, draws,
  // burn-in and seed: the same estimate, number for number.
  const std::vector<std::string> data{"--dataset", "spirals", "--samples", std::to_string(kSamples), "--test-fraction", "0.25"};
  std::vector<std::string> args{"llc", "--model", path("run/step_0000040.safetensors"), "--chains", "3", "--draws", "30",
                                "--burnin", "10", "--epsilon", "3e-4", "--out-trace", path("llc_trace_theirs.npy"),
                                "--quiet"};
  args.insert(args.end(), data.begin(), data.end());
  CliResult r = test::run(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  const json one = r.json();
  // The chains' loss traces of the last checkpoint: what --out-trace writes, value for value; and
  // each chain's estimate is n beta (its mean traced loss - L_n(w*)), recomputed here from them.
  EXPECT_EQ(llc.at("trace_file"), "llc_trace_last.npy");
  EXPECT_EQ(llc.at("trace_step"), 40);
  const io::Tensor mine = io::read_array(path("run/llc_trace_last.npy")),
                   theirs_trace = io::read_array(path("llc_trace_theirs.npy"));
  ASSERT_EQ(mine.shape, (std::vector<index_t>{3, 30}));
  ASSERT_EQ(theirs_trace.shape, mine.shape);
  const std::vector<double> trace = mine.to_vector<double>();
  EXPECT_EQ(trace, theirs_trace.to_vector<double>());
  const double nbeta = rows[2].at("nbeta").get<double>(), init = rows[2].at("init_loss").get<double>();
  for (std::size_t chain = 0; chain < 3; ++chain) {
    double mean = 0;
    for (std::size_t d = 0; d < 30; ++d) mean += trace[chain * 30 + d];
    mean /= 30;
    const double expected = rows[2].at("llc_per_chain")[chain].get<double>();
    EXPECT_NEAR(nbeta * (mean - init), expected, 1e-9 * std::max(1.0, std::abs(expected))) << "chain " << chain;
  }
  for (const char* key : {"llc_mean", "llc_std", "llc_stderr", "llc_per_chain", "init_loss", "nbeta", "r_hat", "ess",
                          "mala_acceptance", "diverged", "warnings", "gradient_evaluations"})
    EXPECT_EQ(one.at(key), rows[2].at(key)) << key;
  // The init loss is the training loss the demo reports for that checkpoint.
  EXPECT_NEAR(one.at("init_loss").get<double>(), report.at("checkpoints")[2].at("train_loss").get<double>(),
              1e-5 * report.at("checkpoints")[2].at("train_loss").get<double>());

  // `dynascope llc --checkpoints` on the run folder takes the data from report.json: the same rows
  // and the same CSV.
  r = test::run({"llc", "--checkpoints", path("run"), "--chains", "3", "--draws", "30", "--burnin", "10", "--epsilon",
                 "3e-4", "--out-csv", path("llc_theirs.csv"), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json theirs = r.json();
  EXPECT_EQ(theirs.at("data").at("from"), path("run/report.json"));
  EXPECT_EQ(theirs.at("data").at("train_samples"), kTrain);
  ASSERT_EQ(theirs.at("rows").size(), 3u);
  for (std::size_t q = 0; q < 3; ++q)
    for (const char* key : {"step", "llc_mean", "llc_stderr", "llc_per_chain", "r_hat", "init_loss"})
      EXPECT_EQ(theirs.at("rows")[q].at(key), rows[q].at(key)) << key << " at row " << q;
  EXPECT_EQ(lines(path("llc_theirs.csv")), csv);

  // The summary table's LLC columns: the last row's estimate and error bar.
  const std::string header = table_header(shared_run().out), last_row = table_line(shared_run().out, "     40  ");
  EXPECT_NE(header.find("LLC"), std::string::npos) << header;
  const std::vector<double> v = table_cells(last_row);
  ASSERT_EQ(v.size(), 19u) << last_row;
  EXPECT_NEAR(v[17], rows[2].at("llc_mean").get<double>(), 5e-4 * std::abs(rows[2].at("llc_mean").get<double>()));
  EXPECT_NEAR(v[18], rows[2].at("llc_stderr").get<double>(), 5e-2 * rows[2].at("llc_stderr").get<double>());
  EXPECT_NE(shared_run().out.find("llc.csv"), std::string::npos);
}

TEST_F(CliDemo, RegionMapsArePngsEqualToTheRegionsCommand) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  const json& maps = report.at("region_maps");
  EXPECT_EQ(maps.at("resolution"), kResolution);
  EXPECT_EQ(maps.at("first").at("step"), 0);
  EXPECT_EQ(maps.at("last").at("step"), 40);
  EXPECT_EQ(maps.at("first").at("file"), path("run/region_map_first.png"));
  EXPECT_EQ(maps.at("last").at("file"), path("run/region_map_last.png"));
  EXPECT_TRUE(maps.at("last").at("exact").get<bool>());
  EXPECT_GT(maps.at("last").at("regions").get<int>(), 10);
  // Every pixel is a grid point inside one region, so the grid sees at most the exact regions.
  EXPECT_LE(maps.at("last").at("distinct_on_grid").get<int>(), maps.at("last").at("regions").get<int>());

  // The plane: a square around the training inputs' bounding box, which it holds with a margin.
  const json& plane = maps.at("plane");
  const auto a = plane.at("A").get<std::vector<double>>(), b = plane.at("B").get<std::vector<double>>(),
             c = plane.at("C").get<std::vector<double>>();
  const double side = b[0] - a[0];
  EXPECT_EQ(b[1], a[1]);
  EXPECT_EQ(c[0], a[0]);
  EXPECT_NEAR(c[1] - a[1], side, 1e-12);
  const json& box = report.at("local_complexity").at("bounding_box");
  for (int j = 0; j < 2; ++j) {
    EXPECT_LT(a[std::size_t(j)], box.at("lo")[std::size_t(j)].get<double>());
    EXPECT_GT(a[std::size_t(j)] + side, box.at("hi")[std::size_t(j)].get<double>());
  }

  for (const char* which : {"first", "last"}) {
    const std::string file = path(std::string("run/region_map_") + which + ".png");
    const std::string bytes = test::slurp(file);
    ASSERT_GT(bytes.size(), 8u) << file;
    EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
    const Png png = read_png(file);
    ASSERT_TRUE(png.ok) << file << ": " << png.error;
    EXPECT_EQ(png.width, unsigned(kResolution));
    EXPECT_EQ(png.height, unsigned(kResolution));
  }
  // The two maps differ: training moved the regions.
  EXPECT_NE(read_png(path("run/region_map_first.png")).rgb, read_png(path("run/region_map_last.png")).rgb);

  // `dynascope regions` on the last checkpoint with the same plane, resolution, precision and the
  // training points (the split computed here through the library) draws the same picture.
  const std::vector<double> pts{a[0], a[1], b[0], b[1], c[0], c[1]};
  const std::string plane_file = path("plane.npy");
  io::write_npy(plane_file, io::Tensor::from(pts.data(), {3, 2}));
  const data::Split split = data::train_test_split(data::load_dataset("spirals", {.samples = kSamples}), 0.25, 0);
  io::write_npy(path("xtrain.npy"), io::Tensor::from(split.train.x.data(), {split.train.n, 2}));
  io::write_npy(path("ytrain.npy"), io::Tensor::from(split.train.labels.data(), {split.train.n}));
  const CliResult r = test::run({"regions", "--model", path("run/step_0000040.safetensors"), "--plane", plane_file,
                                 "--resolution", std::to_string(kResolution), "--exact-2d", "--dtype", "float32",
                                 "--image", path("theirs.png"), "--inputs", path("xtrain.npy"), "--targets",
                                 path("ytrain.npy"), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  EXPECT_EQ(j.at("regions"), maps.at("last").at("regions"));
  EXPECT_EQ(j.at("boundary_regions"), maps.at("last").at("boundary_regions"));
  EXPECT_EQ(j.at("distinct"), maps.at("last").at("distinct_on_grid"));
  EXPECT_EQ(j.at("points_drawn"), kTrain);
  const Png mine = read_png(path("run/region_map_last.png")), theirs = read_png(path("theirs.png"));
  ASSERT_TRUE(theirs.ok) << theirs.error;
  ASSERT_EQ(mine.rgb.size(), theirs.rgb.size());
  // regions places the points by least squares, the demo by (x - A) / side: the same positions up
  // to rounding, which may move an anti-aliased edge pixel of a dot by one level.
  std::size_t differ = 0;
  int worst = 0;
  for (std::size_t i = 0; i < mine.rgb.size(); ++i) {
    const int d = std::abs(int(mine.rgb[i]) - int(theirs.rgb[i]));
    differ += d != 0;
    worst = std::max(worst, d);
  }
  EXPECT_LE(worst, 1);
  EXPECT_LE(differ, 20u);
}

// The numbers of a CSV line from column `first` on (an empty field is NaN).
std::vector<double> numbers(const std::string& line, std::size_t first) {
  const std::vector<std::string> f = fields(line);
  std::vector<double> v;
  for (std::size_t i = first; i < f.size(); ++i) v.push_back(f[i].empty() ? NAN : std::stod(f[i]));
  if (!line.empty() && line.back() == ',') v.push_back(NAN);  // getline drops a trailing empty field
  return v;
}

// Within = the mean of the diagonal entries of a class matrix [C, C], across = of the others.
std::pair<double, double> within_across(const std::vector<double>& m, std::size_t c) {
  double within = 0, across = 0;
  for (std::size_t a = 0; a < c; ++a)
    for (std::size_t b = 0; b < c; ++b) (a == b ? within : across) += m[a * c + b];
  return {within / double(c), across / double(c * (c - 1))};
}

TEST_F(CliDemo, ElasticityCurveAndClassMatrices) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  const json& el = report.at("elasticity");
  EXPECT_EQ(el.at("metric"), "kl");
  EXPECT_EQ(el.at("form"), "step");
  EXPECT_EQ(el.at("update"), "sgd");
  EXPECT_EQ(el.at("eta").get<double>(), 1e-3);
  EXPECT_EQ(el.at("loss"), "xent");
  EXPECT_EQ(el.at("dtype"), "float64");
  EXPECT_EQ(el.at("pairs_per_class"), 32);
  EXPECT_EQ(el.at("classes"), 2);
  EXPECT_EQ(el.at("sources"), 64);
  EXPECT_EQ(el.at("targets"), 64);

  // The samples: 32 distinct training samples of each class, class by class, ascending within a
  // class (the labels of the same split computed here through the library).
  const data::Split split = data::train_test_split(data::load_dataset("spirals", {.samples = kSamples}), 0.25, 0);
  const std::vector<index_t> sample = el.at("sample_rows").get<std::vector<index_t>>();
  ASSERT_EQ(sample.size(), 64u);
  for (std::size_t i = 0; i < 64; ++i) {
    ASSERT_GE(sample[i], 0);
    ASSERT_LT(sample[i], kTrain);
    EXPECT_EQ(split.train.labels[std::size_t(sample[i])], std::int64_t(i / 32)) << i;
    if (i % 32 != 0) {
      EXPECT_LT(sample[i - 1], sample[i]) << i;
    }
  }

  // elasticity.csv: one row per checkpoint, finite, ratio = within / across, as in the report.
  const std::vector<std::string> csv = lines(path("run/elasticity.csv"));
  ASSERT_EQ(csv.size(), 4u);
  EXPECT_EQ(csv[0], "step,checkpoint,mean,within_class,across_class,ratio,undefined_sources");
  const json& rows = el.at("rows");
  ASSERT_EQ(rows.size(), 3u);
  for (std::size_t q = 0; q < 3; ++q) {
    const std::vector<std::string> f = fields(csv[q + 1]);
    ASSERT_EQ(f.size(), 7u) << csv[q + 1];
    EXPECT_EQ(f[0], std::to_string(20 * q));
    char name[64];
    std::snprintf(name, sizeof name, "run/step_%07d.safetensors", int(20 * q));
    EXPECT_EQ(f[1], path(name));
    const std::vector<double> v = numbers(csv[q + 1], 2);
    for (double x : v) EXPECT_TRUE(std::isfinite(x)) << csv[q + 1];
    EXPECT_GT(v[0], 0.0);
    EXPECT_NEAR(v[3], v[1] / v[2], 1e-8 * v[3]);
    EXPECT_EQ(v[4], 0.0) << "float64 resolves every source's own change";
    EXPECT_NEAR(v[0], rows[q].at("mean").get<double>(), 1e-9 * v[0]);
    EXPECT_NEAR(v[3], rows[q].at("ratio").get<double>(), 1e-9 * v[3]);
    // Every pair of distinct samples is averaged: 32 x 32 per class pair, 32 x 31 within a class.
    EXPECT_EQ(rows[q].at("pairs"), 64 * 63);
    EXPECT_EQ(rows[q].at("class_pairs"), json({{32 * 31, 32 * 32}, {32 * 32, 32 * 31}}));
  }

  // The class matrices at the first and last checkpoint: float64 [2, 2], holding the CSV's
  // within- and across-class means.
  EXPECT_EQ(el.at("first").at("step"), 0);
  EXPECT_EQ(el.at("last").at("step"), 40);
  for (const auto& [file, q] : {std::pair<std::string, std::size_t>{"run/elasticity_first.npy", 0},
                                std::pair<std::string, std::size_t>{"run/elasticity_last.npy", 2}}) {
    const io::Tensor t = io::read_npy(path(file));
    EXPECT_EQ(t.dtype, DType::f64) << file;
    ASSERT_EQ(t.shape, Shape({2, 2})) << file;
    const std::vector<double> m = t.to_vector<double>();
    const auto [within, across] = within_across(m, 2);
    const std::vector<double> v = numbers(csv[q + 1], 2);
    EXPECT_NEAR(within, v[1], 1e-9 * within) << file;
    EXPECT_NEAR(across, v[2], 1e-9 * across) << file;
    for (std::size_t k = 0; k < 4; ++k)
      EXPECT_EQ(m[k], rows[q].at("class_matrix")[k / 2][k % 2].get<double>()) << file << " entry " << k;
  }

  // `dynascope elasticity --checkpoints` on the run folder with the same K and precision draws the
  // same samples and writes the same CSV.
  const CliResult r = test::run({"elasticity", "--checkpoints", path("run"), "--pairs-per-class", "32", "--dtype",
                                 "float64", "--out-csv", path("elasticity_theirs.csv"), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(lines(path("elasticity_theirs.csv")), csv);
  EXPECT_EQ(r.json().at("class_matrix"), rows[2].at("class_matrix"));

  // The table's LE ratio column: the last checkpoint's ratio.
  const std::string header = table_header(shared_run().out), last_row = table_line(shared_run().out, "     40  ");
  EXPECT_NE(header.find("LE ratio"), std::string::npos) << header;
  const std::vector<double> v = table_cells(last_row);
  ASSERT_EQ(v.size(), 19u) << last_row;
  EXPECT_NEAR(v[12], rows[2].at("ratio").get<double>(), 5e-4 * rows[2].at("ratio").get<double>());
  for (const char* file : {"elasticity.csv", "elasticity_first.npy", "elasticity_last.npy"})
    EXPECT_NE(shared_run().out.find(file), std::string::npos) << file;
}

TEST_F(CliDemo, ResponseAndFeatureSpace) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  const json& resp = report.at("response");
  EXPECT_EQ(resp.at("samples"), kTrain);
  EXPECT_EQ(resp.at("form"), "step");
  EXPECT_EQ(resp.at("eta").get<double>(), 1e-3);
  EXPECT_EQ(resp.at("dtype"), "float64");
  const std::vector<std::string> csv = lines(path("run/response.csv"));
  ASSERT_EQ(csv.size(), 4u);
  // L = 3 layers, 2 hidden.
  EXPECT_EQ(csv[0], "step,checkpoint,mean_diagonal,mean_off_diagonal,layer1_diagonal,layer1_off_diagonal,"
                    "layer2_diagonal,layer2_off_diagonal,layer3_diagonal,layer3_off_diagonal,effective_rank1,"
                    "participation_ratio1,dead1,duplicated1,effective_rank2,participation_ratio2,dead2,duplicated2,"
                    "input_grad_norm");
  const json& rows = resp.at("rows");
  ASSERT_EQ(rows.size(), 3u);
  for (std::size_t q = 0; q < 3; ++q) {
    const std::vector<std::string> f = fields(csv[q + 1]);
    ASSERT_EQ(f.size(), 19u) << csv[q + 1];
    EXPECT_EQ(f[0], std::to_string(20 * q));
    const std::vector<double> v = numbers(csv[q + 1], 2);
    for (double x : v) EXPECT_TRUE(std::isfinite(x)) << csv[q + 1];
    const double diag = v[0];
    EXPECT_GT(diag, 0.0);
    EXPECT_NEAR(diag, rows[q].at("mean_diagonal").get<double>(), 1e-9 * diag);
    // The per-layer responses (the kernel form) sum to the step's total up to the step's O(eta)
    // curvature term.
    const double layers = v[2] + v[4] + v[6];
    EXPECT_NEAR(layers, diag, 0.05 * diag) << csv[q + 1];
    for (int l = 0; l < 3; ++l) EXPECT_GT(v[std::size_t(2 + 2 * l)], 0.0) << "layer " << l + 1;
    // Feature space of the two hidden layers of width 64 on 120 samples.
    for (int h = 0; h < 2; ++h) {
      const double erank = v[std::size_t(8 + 4 * h)], pr = v[std::size_t(9 + 4 * h)], dead = v[std::size_t(10 + 4 * h)],
                   dup = v[std::size_t(11 + 4 * h)];
      EXPECT_GE(erank, 1.0);
      EXPECT_LE(erank, 64.0);
      EXPECT_GE(pr, 1.0);
      EXPECT_LE(pr, 64.0);
      EXPECT_GE(dead, 0.0);
      EXPECT_LE(dead + dup, 64.0);
      EXPECT_EQ(dead, std::floor(dead));
      EXPECT_EQ(dup, std::floor(dup));
      EXPECT_EQ(dead, rows[q].at("features")[h].at("dead").get<double>());
    }
    EXPECT_GT(v[16], 0.0);  // the input-gradient norm
  }
  // Two checkpoints after step 0: too few for the aging fit, which says so.
  EXPECT_TRUE(resp.at("beta").is_null()) << resp.at("beta");
  EXPECT_EQ(resp.at("points"), 2);
  ASSERT_TRUE(resp.contains("fit_warnings"));
  EXPECT_NE(resp.at("fit_warnings")[0].get<std::string>().find("needs 3"), std::string::npos) << resp.at("fit_warnings");
  EXPECT_EQ(resp.at("layers").size(), 3u);
  EXPECT_NE(shared_run().out.find("response aging: no aging fit"), std::string::npos) << shared_run().out;

  // `dynascope response --checkpoints` on the run folder (its first 128 training samples: all 120
  // here) in float64: the same rows.
  const CliResult r = test::run({"response", "--checkpoints", path("run"), "--dtype", "float64", "--out-csv",
                                 path("response_theirs.csv"), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(lines(path("response_theirs.csv")), csv);

  // The table's R diag column.
  const std::string header = table_header(shared_run().out), last_row = table_line(shared_run().out, "     40  ");
  EXPECT_NE(header.find("R diag"), std::string::npos) << header;
  const std::vector<double> v = table_cells(last_row);
  ASSERT_EQ(v.size(), 19u) << last_row;
  EXPECT_NEAR(v[13], rows[2].at("mean_diagonal").get<double>(), 5e-4 * rows[2].at("mean_diagonal").get<double>());
}

TEST_F(CliDemo, AgingFitIsTheLeastSquaresLineAndSwitches) {
  // Checkpoints every 10 steps (4 after step 0); no elasticity: no elasticity files or column.
  const CliResult r = test::run({"demo", "--out-dir", path("aging"), "--no-elasticity", "--no-lc", "--no-region-map",
                                 "--no-llc", "--samples", "160", "--steps", "40", "--save-every", "10", "--ntk-samples",
                                 "16", "--response-samples", "32", "--response-eta", "1e-4", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  for (const char* file : {"elasticity.csv", "elasticity_first.npy", "elasticity_last.npy"})
    EXPECT_FALSE(fs::exists(path(std::string("aging/") + file))) << file;
  EXPECT_EQ(r.out.find("LE "), std::string::npos) << r.out;
  const json report = read_json(path("aging/report.json"));
  EXPECT_EQ(report.at("elasticity"), json({{"skipped", "--no-elasticity"}}));
  const json& resp = report.at("response");
  EXPECT_EQ(resp.at("samples"), 32);
  EXPECT_EQ(resp.at("eta").get<double>(), 1e-4);

  // ln R = ln A - beta ln t by least squares over steps 10..40, from response.csv, with the 95%
  // interval beta +- t_{0.975, 2} SE (t_{0.975, 2} = 4.302652729911275).
  const std::vector<std::string> csv = lines(path("aging/response.csv"));
  ASSERT_EQ(csv.size(), 6u);
  std::vector<double> x, y;
  for (std::size_t q = 2; q < 6; ++q) {
    const std::vector<std::string> f = fields(csv[q]);
    x.push_back(std::log(std::stod(f[0])));
    y.push_back(std::log(std::stod(f[2])));
  }
  const double n = 4, mx = (x[0] + x[1] + x[2] + x[3]) / n, my = (y[0] + y[1] + y[2] + y[3]) / n;
  double sxx = 0, sxy = 0, syy = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (y[i] - my);
    syy += (y[i] - my) * (y[i] - my);
  }
  const double slope = sxy / sxx, beta = -slope, amplitude = std::exp(my - slope * mx);
  const double ssr = syy - slope * sxy, se = std::sqrt(ssr / (n - 2) / sxx);
  // The CSV keeps 10 significant digits of R: the fit agrees to what they carry.
  const double tol = 1e-7 * (1 + std::abs(beta));
  EXPECT_NEAR(resp.at("beta").get<double>(), beta, tol);
  EXPECT_NEAR(resp.at("amplitude").get<double>(), amplitude, 1e-6 * amplitude);
  EXPECT_NEAR(resp.at("r_squared").get<double>(), 1 - ssr / syy, 1e-6);
  EXPECT_NEAR(resp.at("beta_ci")[0].get<double>(), beta - 4.302652729911275 * se, 1e-6 * (1 + se));
  EXPECT_NEAR(resp.at("beta_ci")[1].get<double>(), beta + 4.302652729911275 * se, 1e-6 * (1 + se));
  EXPECT_EQ(resp.at("points"), 4);
  EXPECT_EQ(resp.at("fit_window"), json({1.0, 40.0}));
  EXPECT_EQ(resp.at("fit_to"), "mean_diagonal");
  ASSERT_EQ(resp.at("layers").size(), 3u);
  for (std::size_t l = 0; l < 3; ++l) {
    EXPECT_EQ(resp.at("layers")[l].at("layer"), int(l + 1));
    EXPECT_TRUE(resp.at("layers")[l].at("beta").is_number()) << resp.at("layers")[l];
  }
  // The printed summary gives the fit.
  char buf[64];
  std::snprintf(buf, sizeof buf, "beta = %.4g", resp.at("beta").get<double>());
  EXPECT_NE(r.out.find(buf), std::string::npos) << r.out;

  // --no-response: no response.csv, no R column; the elasticity is still measured.
  std::vector<std::string> no_resp{"demo", "--out-dir", path("noresp"), "--no-response", "--no-lc", "--no-region-map",
                                   "--no-llc", "--elasticity-pairs", "4"};
  no_resp.insert(no_resp.end(), kSmall.begin(), kSmall.end() - std::ptrdiff_t(kLlc.size()));
  const CliResult nr = test::run(no_resp);
  ASSERT_EQ(nr.exit_code, 0) << nr;
  EXPECT_FALSE(fs::exists(path("noresp/response.csv")));
  EXPECT_EQ(nr.out.find("R diag"), std::string::npos) << nr.out;
  EXPECT_EQ(nr.out.find("response aging"), std::string::npos) << nr.out;
  const json nrep = read_json(path("noresp/report.json"));
  EXPECT_EQ(nrep.at("response"), json({{"skipped", "--no-response"}}));
  EXPECT_EQ(nrep.at("elasticity").at("sources"), 8);
  EXPECT_EQ(lines(path("noresp/elasticity.csv")).size(), 4u);
  EXPECT_TRUE(fs::exists(path("noresp/elasticity_last.npy")));
}

TEST_F(CliDemo, SwitchesRadiusAndDims) {
  // --no-lc: no lc.csv, no LC columns, the report says why; the maps are still drawn.
  CliResult r = test::run(demo_args(path("nolc"), {"--no-lc", "--map-resolution", "32"}));
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_FALSE(fs::exists(path("nolc/lc.csv")));
  EXPECT_TRUE(fs::exists(path("nolc/region_map_last.png")));
  EXPECT_EQ(r.out.find("LC train"), std::string::npos) << r.out;
  json report = read_json(path("nolc/report.json"));
  EXPECT_EQ(report.at("local_complexity"), json({{"skipped", "--no-lc"}}));
  EXPECT_EQ(read_png(path("nolc/region_map_last.png")).width, 32u);

  // --no-region-map: no PNGs; the rows are still written. The LLC at 2 checkpoints: the first and
  // the last, "-" in the table for the one between.
  r = test::run(demo_args(path("nomap"), {"--no-region-map", "--llc-checkpoints", "2"}));
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_FALSE(fs::exists(path("nomap/region_map_first.png")));
  EXPECT_FALSE(fs::exists(path("nomap/region_map_last.png")));
  EXPECT_EQ(lines(path("nomap/lc.csv")).size(), 10u);
  report = read_json(path("nomap/report.json"));
  EXPECT_EQ(report.at("region_maps"), json({{"skipped", "--no-region-map"}}));
  ASSERT_EQ(report.at("llc").at("rows").size(), 2u);
  EXPECT_EQ(report.at("llc").at("rows")[0].at("step"), 0);
  EXPECT_EQ(report.at("llc").at("rows")[1].at("step"), 40);
  EXPECT_EQ(lines(path("nomap/llc.csv")).size(), 3u);
  {
    const std::string middle = table_line(r.out, "     20  ");
    ASSERT_GE(middle.size(), 4u) << r.out;
    EXPECT_EQ(middle.substr(middle.size() - 4), "   -") << middle;
  }

  // --no-llc: no llc.csv, no LLC columns, the report says why.
  std::vector<std::string> no_llc{"demo", "--out-dir", path("nollc"), "--no-llc", "--no-lc", "--no-region-map"};
  no_llc.insert(no_llc.end(), kSmall.begin(), kSmall.end() - std::ptrdiff_t(kLlc.size()));
  r = test::run(no_llc);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_FALSE(fs::exists(path("nollc/llc.csv")));
  EXPECT_EQ(r.out.find("LLC"), std::string::npos) << r.out;
  EXPECT_EQ(read_json(path("nollc/report.json")).at("llc"), json({{"skipped", "--no-llc"}}));

  // A radius and dims of one's own; no test set: rows for train and random only; a cap below the
  // partition's size: the map's edges come from the grid and the report says why.
  r = test::run(demo_args(path("tuned"), {"--lc-radius", "0.05", "--lc-dims", "1", "--test-fraction", "0",
                                          "--map-max-regions", "10", "--map-resolution", "40"}));
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out.find("LC test"), std::string::npos) << r.out;
  report = read_json(path("tuned/report.json"));
  const json& lc = report.at("local_complexity");
  EXPECT_EQ(lc.at("radius").get<double>(), 0.05);
  EXPECT_EQ(lc.at("radius_source"), "--lc-radius");
  EXPECT_EQ(lc.at("dims"), 1);
  EXPECT_EQ(lc.at("samples"), json({{"train", kSamples}, {"random", kSamples}}));
  EXPECT_EQ(lc.at("rows").size(), 6u);
  EXPECT_EQ(lines(path("tuned/lc.csv")).size(), 7u);
  const json& last = report.at("region_maps").at("last");
  EXPECT_FALSE(last.at("exact").get<bool>());
  EXPECT_NE(last.at("exact_skipped").get<std::string>().find("more than 10 regions"), std::string::npos) << last;
  EXPECT_EQ(read_png(path("tuned/region_map_last.png")).width, 40u);
  // The same radius and dims through `lc`.
  r = test::run({"lc", "--model", path("tuned/step_0000040.safetensors"), "--dataset", "spirals", "--samples",
                 std::to_string(kSamples), "--radius", "0.05", "--dims", "1", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("total_mean").get<double>(), lc.at("rows")[4].at("total_mean").get<double>());

  // Inputs of another width: no map, and why; P = min(25, D).
  r = test::run({"demo", "--dataset", "gaussians", "--samples", "96", "--arch", "-16-", "--steps", "10", "--ntk-samples",
                 "8", "--out-dir", path("gauss"), "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  report = read_json(path("gauss/report.json"));
  EXPECT_NE(report.at("region_maps").at("skipped").get<std::string>().find("2-D inputs only"), std::string::npos);
  EXPECT_EQ(report.at("local_complexity").at("dims"), 8);
  EXPECT_FALSE(fs::exists(path("gauss/region_map_first.png")));
}

// The rows of hessian_density.csv of one step: (lambda, density) pairs in grid order.
std::vector<std::pair<double, double>> density_rows(const std::string& file, long long step) {
  const std::vector<std::string> csv = lines(file);
  std::vector<std::pair<double, double>> out;
  EXPECT_FALSE(csv.empty()) << file;
  if (csv.empty()) return out;
  EXPECT_EQ(csv[0], "step,lambda,density");
  for (std::size_t i = 1; i < csv.size(); ++i) {
    const std::vector<std::string> f = fields(csv[i]);
    EXPECT_EQ(f.size(), 3u) << csv[i];
    // strtod: far in the tails the density is subnormal, which std::stod refuses.
    if (f.size() == 3 && std::stoll(f[0]) == step)
      out.emplace_back(std::strtod(f[1].c_str(), nullptr), std::strtod(f[2].c_str(), nullptr));
  }
  return out;
}

TEST_F(CliDemo, HessianDensityEqualsTheSpectrumCommand) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  const json& d = report.at("hessian").at("density");
  EXPECT_EQ(d.at("steps"), 90);
  EXPECT_EQ(d.at("probes"), 10);
  EXPECT_EQ(d.at("grid"), 1000);
  EXPECT_EQ(d.at("file"), "hessian_density.csv");
  ASSERT_EQ(d.at("sigma2").size(), 3u);
  // 1000 rows per checkpoint, in step order.
  EXPECT_EQ(lines(path("run/hessian_density.csv")).size(), 1u + 3 * 1000);
  for (long long step : {0, 20, 40}) EXPECT_EQ(density_rows(path("run/hessian_density.csv"), step).size(), 1000u);

  // `dynascope spectrum --density` on the last checkpoint with the demo's data flags and seed: the
  // same grid and density, to the 10 digits the CSV keeps.
  const std::vector<std::pair<double, double>> mine = density_rows(path("run/hessian_density.csv"), 40);
  CliResult r = test::run({"spectrum", "--model", path("run/step_0000040.safetensors"), "--operator", "hessian",
                           "--density", "--steps", "90", "--probes", "10", "--grid", "1000", "--seed", "0", "--dataset",
                           "spirals", "--samples", std::to_string(kSamples), "--test-fraction", "0.25", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json theirs = r.json();
  const auto grid = theirs.at("grid").get<std::vector<double>>(), density = theirs.at("density").get<std::vector<double>>();
  ASSERT_EQ(grid.size(), mine.size());
  double peak = 0;
  for (double v : density) peak = std::max(peak, v);
  for (std::size_t g = 0; g < grid.size(); ++g) {
    EXPECT_NEAR(mine[g].first, grid[g], 1e-9 * std::max(1.0, std::abs(grid[g]))) << g;
    EXPECT_NEAR(mine[g].second, density[g], 1e-9 * density[g] + 1e-12 * peak) << g;
  }
  EXPECT_EQ(d.at("sigma2")[2].get<double>(), theirs.at("sigma2").get<double>());
  EXPECT_EQ(d.at("trace_slq")[2].get<double>(), theirs.at("trace_estimate").get<double>());
}

// On a 2-8-2 network (42 parameters) SLQ's 90 Lanczos steps span the whole space: every probe's
// Ritz values are the Hessian's eigenvalues. So the density is a sum of Gaussians of variance sigma2
// centred on the dense eigenvalues (`spectrum --k 42 --method dense`): its grid spans exactly
// [lambda_min, lambda_max] plus the padding, it integrates to 1, its peaks sit on eigenvalues, and
// n times its mean is the trace to within the probes' standard error.
TEST_F(CliDemo, HessianDensitySitsOnTheDenseEigenvalues) {
  const CliResult run = test::run({"demo", "--out-dir", path("tiny"), "--arch", "-8-", "--samples", "160", "--steps",
                                   "40", "--save-every", "40", "--ntk-samples", "8", "--no-lc", "--no-region-map",
                                   "--no-llc", "--no-elasticity", "--no-response", "--no-report", "--quiet"});
  ASSERT_EQ(run.exit_code, 0) << run;
  const json report = read_json(path("tiny/report.json"));
  const CliResult r = test::run({"spectrum", "--model", path("tiny/step_0000040.safetensors"), "--operator", "hessian",
                                 "--k", "42", "--method", "dense", "--dataset", "spirals", "--samples",
                                 std::to_string(kSamples), "--test-fraction", "0.25", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::vector<double> eig = r.json().at("eigenvalues").get<std::vector<double>>();
  ASSERT_EQ(eig.size(), 42u);
  std::sort(eig.begin(), eig.end());
  const double scale = std::max(std::abs(eig.front()), std::abs(eig.back()));
  double dense_trace = 0;
  for (double v : eig) dense_trace += v;

  const std::vector<std::pair<double, double>> rows = density_rows(path("tiny/hessian_density.csv"), 40);
  ASSERT_EQ(rows.size(), 1000u);
  const double sigma2 = report.at("hessian").at("density").at("sigma2")[1].get<double>(), sigma = std::sqrt(sigma2);
  // The grid: [lo - pad, hi + pad], pad = max(5 sigma, 1% of hi - lo).
  const double g0 = rows.front().first, g1 = rows.back().first;
  double range = (g1 - g0) - 10 * sigma;
  if (5 * sigma < 0.01 * range) range = (g1 - g0) / 1.02;
  const double pad = std::max(5 * sigma, 0.01 * range);
  EXPECT_NEAR(g0 + pad, eig.front(), 1e-4 * scale);
  EXPECT_NEAR(g1 - pad, eig.back(), 1e-4 * scale);
  // Trapezoid rule: the integral and the mean.
  double integral = 0, first_moment = 0;
  for (std::size_t g = 1; g < rows.size(); ++g) {
    const double h = rows[g].first - rows[g - 1].first;
    integral += 0.5 * h * (rows[g].second + rows[g - 1].second);
    first_moment += 0.5 * h * (rows[g].first * rows[g].second + rows[g - 1].first * rows[g - 1].second);
  }
  EXPECT_NEAR(integral, 1.0, 1e-3);
  const json& row = report.at("checkpoints")[1];
  EXPECT_EQ(row.at("step"), 40);
  // n * mean = the SLQ trace estimate; a Hutchinson estimate of the dense trace (10 probes).
  const double slq_trace = report.at("hessian").at("density").at("trace_slq")[1].get<double>();
  EXPECT_NEAR(42 * first_moment, slq_trace, 2e-3 * (std::abs(slq_trace) + scale));
  double spread = 0;
  for (double v : eig) spread += v * v;
  // Rademacher probes: Var(z^T H z) <= 2 |H|_F^2; 10 probes, 5 standard deviations.
  EXPECT_NEAR(slq_trace, dense_trace, 5 * std::sqrt(2 * spread / 10)) << "dense trace " << dense_trace;
  // Every clear peak of the density (a local maximum above 1% of the highest) lies within 3 sigma
  // of an eigenvalue.
  double top = 0;
  for (const auto& p : rows) top = std::max(top, p.second);
  int peaks = 0;
  for (std::size_t g = 1; g + 1 < rows.size(); ++g) {
    if (!(rows[g].second > rows[g - 1].second && rows[g].second >= rows[g + 1].second && rows[g].second > 0.01 * top))
      continue;
    ++peaks;
    double nearest = INFINITY;
    for (double v : eig) nearest = std::min(nearest, std::abs(v - rows[g].first));
    EXPECT_LE(nearest, 3 * sigma + (rows[g + 1].first - rows[g].first)) << "peak at " << rows[g].first;
  }
  EXPECT_GE(peaks, 2);
}

TEST_F(CliDemo, KernelVelocityIsTheDistanceOfConsecutiveKernels) {
  ASSERT_EQ(shared_run().exit_code, 0) << shared_run();
  const json report = read_json(path("run/report.json"));
  const json& rows = report.at("checkpoints");
  ASSERT_EQ(rows.size(), 3u);
  // The NTK section's samples: the first 16 training samples of the split, computed here.
  const data::Split split = data::train_test_split(data::load_dataset("spirals", {.samples = kSamples}), 0.25, 0);
  io::write_npy(path("x16.npy"), io::Tensor::from(split.train.x.data(), {16, 2}));
  // Each checkpoint's trace kernel by `dynascope ntk`, and 1 - <K1, K2> / (|K1| |K2|) in float64 loops.
  std::vector<std::vector<double>> kernels;
  for (int step : {0, 20, 40}) {
    char name[64], k_name[32];
    std::snprintf(name, sizeof name, "run/step_%07d.safetensors", step);
    std::snprintf(k_name, sizeof k_name, "K%d.npy", step);  // not a chain of string + (GCC 12's false -Wrestrict)
    const std::string k_file = path(k_name);
    const CliResult r = test::run({"ntk", "--model", path(name), "--inputs", path("x16.npy"), "--outputs", "trace",
                                   "--out-matrix", k_file, "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r;
    kernels.push_back(io::read_array(k_file).to_vector<double>());
    ASSERT_EQ(kernels.back().size(), 256u);
  }
  const auto distance = [](const std::vector<double>& a, const std::vector<double>& b) {
    double ab = 0, aa = 0, bb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      ab += a[i] * b[i];
      aa += a[i] * a[i];
      bb += b[i] * b[i];
    }
    return 1 - ab / std::sqrt(aa * bb);
  };
  EXPECT_TRUE(rows[0].at("ntk").at("distance_to_previous").is_null()) << rows[0].at("ntk");
  for (std::size_t q = 1; q < 3; ++q) {
    const json& ntk = rows[q].at("ntk");
    const double velocity = ntk.at("distance_to_previous").get<double>();
    EXPECT_NEAR(velocity, distance(kernels[q - 1], kernels[q]), 1e-5) << "checkpoint " << q;
    EXPECT_NEAR(ntk.at("distance_to_init").get<double>(), distance(kernels[0], kernels[q]), 1e-5) << "checkpoint " << q;
    EXPECT_GT(velocity, 0.0);
  }
  // At the second checkpoint the previous kernel is the initial one.
  EXPECT_EQ(rows[1].at("ntk").at("distance_to_previous"), rows[1].at("ntk").at("distance_to_init"));
}

// The demo ends with the report of its run folder: DIR/report/index.html, whose path it prints. A
// build that cannot draw it (no Python extension, no matplotlib) warns with the fix and the demo
// still succeeds; --no-report skips it.
TEST_F(CliDemo, ReportAtTheEnd) {
  std::vector<std::string> args{"demo", "--out-dir", path("rep"), "--samples", "160", "--steps", "40", "--save-every",
                                "20", "--ntk-samples", "16", "--llc-chains", "2", "--llc-draws", "20",
                                "--map-resolution", "64", "--quiet"};
  const CliResult r = test::run(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  const std::string index = path("rep/report/index.html");
  if (fs::exists(index)) {
    EXPECT_NE(r.out.find(index), std::string::npos) << r;
    EXPECT_EQ(r.err.find("warning"), std::string::npos) << r;
    EXPECT_NE(test::slurp(index).find("<img"), std::string::npos);
  } else {
    // No report: the reason, the run folder complete and the command that writes the report later.
    EXPECT_NE(r.err.find("demo: warning: the report's figures were not written"), std::string::npos) << r;
    EXPECT_NE(r.err.find("dynascope report " + path("rep")), std::string::npos) << r;
    EXPECT_TRUE(fs::exists(path("rep/report.json")));
    EXPECT_FALSE(fs::exists(path("rep/report"))) << "a half-written report folder";
  }
  // A second run refuses the folder, report/ included, unless --overwrite, which removes it first.
  args.emplace_back("--no-report");
  if (fs::exists(path("rep/report"))) {
    test::expect_usage_error(test::run(args), {"--out-dir", "earlier run", "report", "--overwrite"});
    EXPECT_TRUE(fs::exists(index));
  }
  args.emplace_back("--overwrite");
  const CliResult again = test::run(args);
  ASSERT_EQ(again.exit_code, 0) << again;
  EXPECT_FALSE(fs::exists(path("rep/report")));
  EXPECT_EQ(again.err.find("warning"), std::string::npos) << again;
  EXPECT_EQ(again.out.find("index.html"), std::string::npos) << again;
  EXPECT_TRUE(fs::exists(path("rep/hessian_density.csv")));
  EXPECT_TRUE(fs::exists(path("rep/llc_trace_last.npy")));
}

// --long: modular addition with a large initialisation, AdamW and weight decay; every flag given
// explicitly wins over its defaults. Checked on 2 steps with every section off but the NTK and the
// curvature's top eigenvalues.
TEST_F(CliDemo, LongSetsItsDefaultsUnlessGiven) {
  const std::vector<std::string> off{"--no-lc",       "--no-llc",      "--no-elasticity", "--no-response",
                                     "--no-density",  "--no-report",   "--ntk-samples",   "8",
                                     "--quiet"};
  std::vector<std::string> args{"demo", "--long", "--steps", "2", "--save-every", "1", "--out-dir", path("long")};
  args.insert(args.end(), off.begin(), off.end());
  CliResult r = test::run(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  json config = read_json(path("long/report.json")).at("config");
  EXPECT_EQ(config.at("data").at("dataset"), "modadd");
  EXPECT_EQ(config.at("data").at("test_fraction").get<double>(), 0.4);
  EXPECT_EQ(config.at("data").at("train_samples").get<int>() + config.at("data").at("test_samples").get<int>(), 529);
  EXPECT_EQ(config.at("network").at("init").at("scale").get<double>(), 3.0);
  EXPECT_EQ(config.at("optimizer").at("kind"), "adamw");
  EXPECT_EQ(config.at("optimizer").at("lr").get<double>(), 3e-3);
  EXPECT_EQ(config.at("optimizer").at("weight_decay").get<double>(), 1.0);
  EXPECT_EQ(read_json(path("long/report.json")).at("steps"), 2);
  EXPECT_EQ(read_json(path("long/report.json")).at("network").at("arch"), "46-256-23");
  EXPECT_EQ(read_json(path("long/report.json")).at("hessian").at("density"), json({{"skipped", "--no-density"}}));
  // Its LLC step size, with the LLC on (one checkpoint, two short chains).
  args = {"demo", "--long", "--steps", "1", "--out-dir", path("long_llc"), "--no-lc", "--no-elasticity", "--no-response",
          "--no-density", "--no-report", "--ntk-samples", "8", "--llc-checkpoints", "1", "--llc-chains", "2",
          "--llc-draws", "5", "--llc-burnin", "0", "--quiet"};
  r = test::run(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(read_json(path("long_llc/report.json")).at("llc").at("options").at("epsilon").get<double>(), 3e-3);
  // Flags of one's own win.
  args = {"demo", "--long", "--steps", "1", "--arch", "-16-", "--init-scale", "1", "--optimizer", "adam", "--lr", "0.01",
          "--test-fraction", "0.5", "--out-dir", path("long2")};
  args.insert(args.end(), off.begin(), off.end());
  r = test::run(args);
  ASSERT_EQ(r.exit_code, 0) << r;
  config = read_json(path("long2/report.json")).at("config");
  EXPECT_EQ(config.at("data").at("dataset"), "modadd");
  EXPECT_EQ(config.at("data").at("test_fraction").get<double>(), 0.5);
  EXPECT_EQ(config.at("network").at("init").at("scale").get<double>(), 1.0);
  EXPECT_EQ(config.at("optimizer").at("kind"), "adam");
  EXPECT_EQ(config.at("optimizer").at("lr").get<double>(), 0.01);
  EXPECT_EQ(read_json(path("long2/report.json")).at("network").at("arch"), "46-16-23");
}

TEST_F(CliDemo, RunsNeverMixAndBadFlagsAreRefused) {
  // A folder holding an earlier demo's lc.csv or map is an earlier run; --overwrite removes them,
  // so a run without the section leaves none behind.
  fs::create_directories(path("old"));
  std::ofstream(path("old/lc.csv")) << "step\n";
  std::ofstream(path("old/region_map_last.png")) << "x";
  for (const char* file : {"elasticity.csv", "elasticity_first.npy", "elasticity_last.npy", "response.csv"})
    std::ofstream(path(std::string("old/") + file)) << "x";
  test::expect_usage_error(test::run(demo_args(path("old"), {"--no-lc", "--no-region-map"})),
                           {"--out-dir", "earlier run", "lc.csv", "region_map_last.png", "elasticity.csv",
                            "elasticity_first.npy", "elasticity_last.npy", "response.csv", "--overwrite"});
  EXPECT_TRUE(fs::exists(path("old/lc.csv")));
  EXPECT_TRUE(fs::exists(path("old/response.csv")));
  const CliResult r = test::run(
      demo_args(path("old"), {"--no-lc", "--no-region-map", "--no-elasticity", "--no-response", "--overwrite"}));
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_FALSE(fs::exists(path("old/lc.csv")));
  EXPECT_FALSE(fs::exists(path("old/region_map_last.png")));
  for (const char* file : {"elasticity.csv", "elasticity_first.npy", "elasticity_last.npy", "response.csv"})
    EXPECT_FALSE(fs::exists(path(std::string("old/") + file))) << file;

  // Every bad flag is refused before the folder is touched.
  const std::string out = path("never");
  auto refused = [&](std::vector<std::string> extra, const std::vector<std::string>& phrases) {
    test::expect_usage_error(test::run(demo_args(out, std::move(extra))), phrases);
    EXPECT_FALSE(fs::exists(out));
  };
  refused({"--lc-radius", "0"}, {"--lc-radius", "> 0"});
  refused({"--lc-radius", "-1"}, {"--lc-radius"});
  refused({"--lc-radius", "nan"}, {"--lc-radius"});
  refused({"--lc-dims", "0"}, {"--lc-dims", ">= 1"});
  refused({"--lc-dims", "3"}, {"--lc-dims 3", "input width 2"});
  refused({"--no-lc", "--lc-radius", "0.1"}, {"--lc-radius", "--no-lc"});
  refused({"--no-lc", "--lc-dims", "1"}, {"--lc-dims", "--no-lc"});
  refused({"--map-resolution", "8"}, {"--map-resolution", "16"});
  refused({"--map-resolution", "5000"}, {"--map-resolution", "4096"});
  refused({"--map-max-regions", "0"}, {"--map-max-regions", ">= 1"});
  refused({"--no-region-map", "--map-resolution", "64"}, {"--map-resolution", "--no-region-map"});
  refused({"--no-region-map", "--map-max-regions", "64"}, {"--map-max-regions", "--no-region-map"});
  refused({"--no-llc"}, {"--llc-chains", "--no-llc"});  // kSmall sets the LLC's chains and draws
  refused({"--llc-chains", "1"}, {"--llc-chains", ">= 2"});
  refused({"--llc-draws", "0"}, {"--llc-draws", ">= 1"});
  refused({"--llc-checkpoints", "0"}, {"--llc-checkpoints", ">= 1"});
  refused({"--llc-burnin", "-1"}, {"--llc-burnin", ">= 0"});
  refused({"--llc-epsilon", "0"}, {"--llc-epsilon"});
  refused({"--elasticity-pairs", "1"}, {"--elasticity-pairs", ">= 2"});
  refused({"--elasticity-pairs", "100"}, {"--elasticity-pairs 100", "class", "has"});
  refused({"--elasticity-eta", "0"}, {"--elasticity-eta"});
  refused({"--elasticity-eta", "nan"}, {"--elasticity-eta"});
  refused({"--response-eta", "-1"}, {"--response-eta"});
  refused({"--response-eta", "inf"}, {"--response-eta"});
  refused({"--response-samples", "1"}, {"--response-samples", ">= 2"});
  refused({"--response-samples", "121"}, {"--response-samples 121", "120 training samples"});
  refused({"--no-elasticity", "--elasticity-pairs", "4"}, {"--elasticity-pairs", "--no-elasticity"});
  refused({"--no-elasticity", "--elasticity-eta", "0.1"}, {"--elasticity-eta", "--no-elasticity"});
  refused({"--no-response", "--response-samples", "8"}, {"--response-samples", "--no-response"});
  refused({"--no-response", "--response-eta", "0.1"}, {"--response-eta", "--no-response"});
  test::expect_usage_error(test::run({"demo", "--dataset", "gaussians", "--samples", "96", "--arch", "-16-",
                                      "--map-resolution", "64", "--out-dir", out, "--quiet"}),
                           {"--map-resolution", "2-D inputs only", "8"});
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace dynascope
