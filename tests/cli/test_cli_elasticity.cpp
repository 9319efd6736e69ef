// dynascope elasticity and dynascope response against the library they drive: S_rel written by
// --out-matrix equals elasticity::pairwise called here on the same network and data, the JSON's
// mean and class-pair matrix equal means taken here directly over that matrix, the response JSON
// equals response::training_response and response::feature_space, and the aging fit equals a
// least-squares line through (ln t, ln R) computed here. Along a small `train` run: one CSV row
// per checkpoint, equal to one --model run per checkpoint, with the run's data from its
// report.json as from the data flags. Plus bad input: every bad flag is refused with a message
// naming it, before any file is written.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "cli/cli_test_util.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/io.hpp"
#include "dynascope/model.hpp"
#include "dynascope/response.hpp"

namespace dynascope::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// A float64 network in a file (so that the CLI computes in float64 too) and its data.
struct Problem {
  std::string net, x, y, x2;
  std::vector<double> xs, ys, x2s;
  std::vector<std::int64_t> labels;
  index_t n = 0, n2 = 0, d = 2, classes = 0;
};

std::string save_net(const std::string& name, const std::string& arch, std::uint64_t seed) {
  const Context host = Context::host(1);
  const model::MlpSpec spec = model::MlpSpec::from_arch(arch, model::ActivationSpec{model::Activation::tanh});
  const Array<double> params = model::init_params<double>(host, spec, {model::Init::pytorch, 1.0, seed});
  const std::string path = temp_path(name);
  model::save_mlp<double>(host, path, spec, params);
  return path;
}

// Regression: a 2-6-1 tanh network, 30 sources with smooth targets, 7 other targets of the move.
Problem regression() {
  Problem p;
  p.n = 30;
  p.n2 = 7;
  for (index_t i = 0; i < p.n; ++i) {
    const double a = -1.0 + 2.0 * double(i) / double(p.n - 1), b = std::cos(3.0 * double(i));
    p.xs.insert(p.xs.end(), {a, b});
    p.ys.push_back(std::sin(2.0 * a) + 0.5 * b);
  }
  for (index_t j = 0; j < p.n2; ++j) p.x2s.insert(p.x2s.end(), {0.3 * double(j) - 0.9, std::sin(double(j))});
  p.x = npy<double>("x.npy", p.xs, {p.n, 2});
  p.y = npy<double>("y.npy", p.ys, {p.n, 1});
  p.x2 = npy<double>("x2.npy", p.x2s, {p.n2, 2});
  p.net = save_net("net.safetensors", "2-6-1", 3);
  return p;
}

// Classification: a 2-8-3 tanh network, 36 samples of 3 classes (12 each) around three centres.
Problem classification() {
  Problem p;
  p.n = 36;
  p.classes = 3;
  const double cx[3] = {1.0, -0.5, -0.5}, cy[3] = {0.0, 0.87, -0.87};
  for (index_t i = 0; i < p.n; ++i) {
    const index_t c = i % 3;
    p.xs.insert(p.xs.end(), {cx[c] + 0.3 * std::sin(1.7 * double(i)), cy[c] + 0.3 * std::cos(2.3 * double(i))});
    p.labels.push_back(c);
  }
  p.x = npy<double>("xc.npy", p.xs, {p.n, 2});
  p.y = npy<std::int64_t>("yc.npy", p.labels, {p.n});
  p.net = save_net("netc.safetensors", "2-8-3", 5);
  return p;
}

model::Targets<double> targets_of(const Problem& p) {
  model::Targets<double> t;
  if (p.labels.empty()) t.values = {p.ys.data(), p.n, 1, 1, Backend::host};
  else t.labels = vector_view(p.labels.data(), p.n);
  return t;
}

// The library's S_rel for the problem, with the network read back from its file as the CLI does.
elasticity::PairResult library_pairs(const Problem& p, const elasticity::Options& o, bool second,
                                     const std::vector<index_t>& rows = {}) {
  const Context host = Context::host(1);
  const model::Mlp<double> net = model::load_mlp<double>(host, p.net);
  std::vector<double> xs = p.xs;
  std::vector<double> ys = p.ys;
  std::vector<std::int64_t> labels = p.labels;
  index_t n = p.n;
  if (!rows.empty()) {
    xs.clear();
    ys.clear();
    labels.clear();
    for (index_t r : rows) {
      xs.insert(xs.end(), {p.xs[std::size_t(2 * r)], p.xs[std::size_t(2 * r + 1)]});
      if (!p.ys.empty()) ys.push_back(p.ys[std::size_t(r)]);
      if (!p.labels.empty()) labels.push_back(p.labels[std::size_t(r)]);
    }
    n = index_t(rows.size());
  }
  model::Targets<double> t;
  if (labels.empty()) t.values = {ys.data(), n, 1, 1, Backend::host};
  else t.labels = vector_view(labels.data(), n);
  std::optional<MatrixView<const double>> x2;
  if (second) x2 = MatrixView<const double>{p.x2s.data(), p.n2, 2, 2, Backend::host};
  return elasticity::pairwise<double>(host, net.spec, net.params.data(), {xs.data(), n, 2, 2, Backend::host}, t, x2, o);
}

std::vector<double> read_matrix(const std::string& path, Shape expected) {
  const io::Tensor t = io::read_npy(path);
  EXPECT_EQ(t.dtype, DType::f64) << path;
  EXPECT_EQ(t.shape, expected) << path;
  return t.to_vector<double>();
}

void expect_same_matrix(const std::vector<double>& cli, const Array<double>& lib, const std::string& what) {
  ASSERT_EQ(cli.size(), std::size_t(lib.size())) << what;
  for (std::size_t k = 0; k < cli.size(); ++k) {
    if (std::isnan(lib.data()[k])) {
      EXPECT_TRUE(std::isnan(cli[k])) << what << "[" << k << "]";
    } else {
      EXPECT_EQ(cli[k], lib.data()[k]) << what << "[" << k << "]";
    }
  }
}

// The mean of S over the pairs (i, j) with `keep`, its finite entries only: written out here,
// independently of the tool's and the library's means.
template <class Keep>
double mean_of(const std::vector<double>& s, index_t n1, index_t n2, Keep keep, index_t* count = nullptr) {
  double sum = 0;
  index_t k = 0;
  for (index_t i = 0; i < n1; ++i)
    for (index_t j = 0; j < n2; ++j) {
      const double v = s[std::size_t(i * n2 + j)];
      if (!keep(i, j) || !std::isfinite(v)) continue;
      sum += v;
      ++k;
    }
  if (count) *count = k;
  return k > 0 ? sum / double(k) : std::numeric_limits<double>::quiet_NaN();
}

void expect_close(const json& j, double v, const std::string& what) {
  ASSERT_TRUE(j.is_number()) << what << ": " << j;
  EXPECT_NEAR(j.get<double>(), v, 1e-12 * std::abs(v) + 1e-300) << what;
}

TEST(CliElasticity, RegressionMatrixAndMeanEqualTheLibrary) {
  const Problem p = regression();
  const std::string s_path = temp_path("s.npy");
  const std::vector<std::string> base{"elasticity", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--threads", "1",
                                      "--quiet"};
  struct Case {
    std::vector<std::string> flags;
    elasticity::Options options;
    bool second;
  };
  elasticity::Options step;
  step.eta = 0.01;
  elasticity::Options ntk = step;
  ntk.form = elasticity::Form::ntk;
  elasticity::Options adam = step;
  adam.update = elasticity::Update::adam;
  adam.adam_eps = 1e-6;
  const std::vector<Case> cases{
      {{"--eta", "0.01"}, step, false},
      {{"--eta", "0.01", "--form", "ntk"}, ntk, false},
      {{"--eta", "0.01", "--update", "adam", "--adam-eps", "1e-6"}, adam, false},
      {{"--eta", "0.01", "--inputs2", p.x2}, step, true},
  };
  for (const Case& c : cases) {
    fs::remove(s_path);
    const CliResult r = run(base + c.flags + std::vector<std::string>{"--out-matrix", s_path});
    ASSERT_EQ(r.exit_code, 0) << r;
    const json j = r.json();
    const elasticity::PairResult lib = library_pairs(p, c.options, c.second);
    const index_t n2 = c.second ? p.n2 : p.n;
    const std::vector<double> s = read_matrix(s_path, {p.n, n2});
    expect_same_matrix(s, lib.s_rel, "S_rel " + c.flags.back());
    EXPECT_EQ(j.at("metric"), "abs");
    EXPECT_EQ(j.at("form"), c.options.form == elasticity::Form::ntk ? "ntk" : "step");
    EXPECT_EQ(j.at("update"), c.options.update == elasticity::Update::adam ? "adam" : "sgd");
    EXPECT_EQ(j.at("eta"), 0.01);
    EXPECT_EQ(j.at("loss"), "mse");
    EXPECT_EQ(j.at("sources"), p.n);
    EXPECT_EQ(j.at("targets"), n2);
    EXPECT_TRUE(j.at("pairs_per_class").is_null());
    EXPECT_TRUE(j.at("class_matrix").is_null());
    EXPECT_TRUE(j.at("within_class").is_null());
    EXPECT_TRUE(j.at("ratio").is_null());
    EXPECT_EQ(j.at("undefined_sources").size(), lib.undefined_sources.size());
    EXPECT_EQ(j.at("flops").get<double>(), lib.flops);
    EXPECT_GT(j.at("pairs_per_second").get<double>(), 0);
    EXPECT_EQ(j.at("matrix_file"), s_path);
    // The mean leaves out a sample's pair with itself when the targets are the sources.
    index_t count = 0;
    const double mean = mean_of(s, p.n, n2, [&](index_t i, index_t k) { return c.second || i != k; }, &count);
    expect_close(j.at("mean"), mean, "mean");
    EXPECT_EQ(j.at("pairs"), count);
    if (!c.second) {
      // S_rel(x, x) = 1: the step's own change divided by itself.
      for (index_t i = 0; i < p.n; ++i) EXPECT_NEAR(s[std::size_t(i * p.n + i)], 1.0, 1e-12) << i;
    }
  }
}

TEST(CliElasticity, ClassMatrixEqualsMeansOverTheMatrix) {
  const Problem p = classification();
  const std::string s_path = temp_path("sc.npy"), c_path = temp_path("cc.npy");
  for (const std::string metric : {"auto", "l2", "kl-compat"}) {
    const CliResult r = run({"elasticity", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--metric", metric,
                             "--eta", "0.05", "--out-matrix", s_path, "--out-class-matrix", c_path, "--threads", "1",
                             "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r;
    const json j = r.json();
    EXPECT_EQ(j.at("metric"), metric == "auto" ? "kl" : metric);
    EXPECT_EQ(j.at("loss"), "xent");
    elasticity::Options o;
    o.eta = 0.05;
    o.loss = model::Loss::xent;
    o.metric = elasticity::parse_metric(metric);
    const elasticity::PairResult lib = library_pairs(p, o, false);
    const std::vector<double> s = read_matrix(s_path, {p.n, p.n});
    expect_same_matrix(s, lib.s_rel, "S_rel " + metric);
    const std::vector<double> cm = read_matrix(c_path, {p.classes, p.classes});
    // Entry (a, b): the mean over sources of class a and targets of class b, a sample never with itself.
    double within = 0, across = 0;
    for (index_t a = 0; a < p.classes; ++a)
      for (index_t b = 0; b < p.classes; ++b) {
        const double m = mean_of(s, p.n, p.n, [&](index_t i, index_t k) {
          return i != k && p.labels[std::size_t(i)] == a && p.labels[std::size_t(k)] == b;
        });
        EXPECT_NEAR(cm[std::size_t(a * p.classes + b)], m, 1e-12 * std::abs(m)) << metric << " " << a << "," << b;
        expect_close(j.at("class_matrix")[std::size_t(a)][std::size_t(b)], m, "class_matrix");
        (a == b ? within : across) += m;
      }
    within /= double(p.classes);
    across /= double(p.classes * (p.classes - 1));
    expect_close(j.at("within_class"), within, metric + " within_class");
    expect_close(j.at("across_class"), across, metric + " across_class");
    expect_close(j.at("ratio"), within / across, metric + " ratio");
    EXPECT_EQ(j.at("class_pairs")[0][0], 12 * 11);
    EXPECT_EQ(j.at("class_pairs")[0][1], 12 * 12);
  }

  // K per class: the library's draw, then the K x K pairs of every class pair.
  const index_t k = 4;
  const CliResult r = run({"elasticity", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--eta", "0.05",
                           "--pairs-per-class", "4", "--seed", "9", "--out-matrix", s_path, "--threads", "1", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  const std::vector<std::int64_t> drawn =
      elasticity::sample_per_class(vector_view(p.labels.data(), p.n), p.classes, k, 9);
  ASSERT_EQ(drawn.size(), std::size_t(k * p.classes));
  EXPECT_EQ(j.at("pairs_per_class"), k);
  // The drawn samples by their row in the training split: row i / column q of --out-matrix is
  // sample drawn[i] / drawn[q].
  EXPECT_EQ(j.at("source_rows"), json(drawn));
  EXPECT_EQ(j.at("target_rows"), json(drawn));
  EXPECT_EQ(j.at("sources"), k * p.classes);
  EXPECT_EQ(j.at("targets"), k * p.classes);
  elasticity::Options o;
  o.eta = 0.05;
  o.loss = model::Loss::xent;
  const elasticity::PairResult lib = library_pairs(p, o, false, std::vector<index_t>(drawn.begin(), drawn.end()));
  const index_t m = k * p.classes;
  const std::vector<double> s = read_matrix(s_path, {m, m});
  expect_same_matrix(s, lib.s_rel, "S_rel of the drawn samples");
  for (index_t a = 0; a < p.classes; ++a)
    for (index_t b = 0; b < p.classes; ++b) {
      const double mean = mean_of(s, m, m, [&](index_t i, index_t q) {
        return i != q && p.labels[std::size_t(drawn[std::size_t(i)])] == a && p.labels[std::size_t(drawn[std::size_t(q)])] == b;
      });
      expect_close(j.at("class_matrix")[std::size_t(a)][std::size_t(b)], mean, "class_matrix of the drawn samples");
      EXPECT_EQ(j.at("class_pairs")[std::size_t(a)][std::size_t(b)], a == b ? k * (k - 1) : k * k);
    }

  // The same data as a second set (--inputs2 --targets2): the targets take their own draw, the
  // same one, so S_rel is the same matrix; as two sets, a sample's pair with itself now counts.
  const std::string s2_path = temp_path("s2.npy");
  const CliResult two = run({"elasticity", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--inputs2", p.x,
                             "--targets2", p.y, "--eta", "0.05", "--pairs-per-class", "4", "--seed", "9", "--out-matrix",
                             s2_path, "--threads", "1", "--quiet"});
  ASSERT_EQ(two.exit_code, 0) << two;
  const json t = two.json();
  EXPECT_EQ(t.at("same_set"), false);
  EXPECT_EQ(t.at("source_rows"), json(drawn));
  EXPECT_EQ(t.at("target_rows"), json(drawn));
  EXPECT_EQ(read_matrix(s2_path, {m, m}), s);
  for (index_t a = 0; a < p.classes; ++a) {
    EXPECT_EQ(t.at("class_pairs")[std::size_t(a)][std::size_t(a)], k * k);
    const double mean = mean_of(s, m, m, [&](index_t i, index_t q) {
      return p.labels[std::size_t(drawn[std::size_t(i)])] == a && p.labels[std::size_t(drawn[std::size_t(q)])] == a;
    });
    expect_close(t.at("class_matrix")[std::size_t(a)][std::size_t(a)], mean, "class_matrix of two sets");
  }
}

// A small classification run of `train` in `dir` (report.json = train's result, which records the
// data) and its data flags.
std::vector<std::string> train_run(const std::string& dir, const std::string& steps, const std::string& every) {
  const std::vector<std::string> data{"--dataset", "spirals", "--samples", "60", "--test-fraction", "0.25"};
  const CliResult train = run(std::vector<std::string>{"train", "--arch", "2-8-2", "--activation", "tanh", "--steps", steps,
                                                       "--save-every", every, "--lr", "0.3", "--seed", "2", "--out-dir",
                                                       dir, "--quiet"} +
                              data);
  EXPECT_EQ(train.exit_code, 0) << train;
  std::ofstream(fs::path(dir) / "report.json") << train.out;
  return data + std::vector<std::string>{"--seed", "2"};
}

std::string checkpoint(const std::string& dir, int step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%07d.safetensors", step);
  return (fs::path(dir) / name).string();
}

TEST(CliElasticity, CheckpointsCsvEqualsOneRunPerCheckpoint) {
  const std::string dir = temp_path("run");
  const std::vector<std::string> data = train_run(dir, "40", "20");
  const std::string csv = temp_path("elasticity.csv"), csv2 = temp_path("elasticity2.csv");
  const std::vector<std::string> opts{"--eta", "0.01", "--threads", "1", "--quiet"};
  const CliResult r = run(std::vector<std::string>{"elasticity", "--checkpoints", dir, "--out-csv", csv} + data + opts);
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  EXPECT_EQ(j.at("checkpoints"), 3);
  EXPECT_EQ(j.at("metric"), "kl");
  EXPECT_EQ(j.at("sources"), 45);
  const std::vector<std::string> text = lines(csv);
  ASSERT_EQ(text.size(), 4u);
  EXPECT_EQ(text[0], "step,checkpoint,mean,within_class,across_class,ratio,undefined_sources");
  for (std::size_t q = 0; q < 3; ++q) {
    const int step = 20 * int(q);
    const CliResult one = run(std::vector<std::string>{"elasticity", "--model", checkpoint(dir, step)} + data + opts);
    ASSERT_EQ(one.exit_code, 0) << one;
    const json o = one.json();
    const json& row = j.at("rows")[q];
    EXPECT_EQ(row.at("step"), step);
    for (const char* key : {"mean", "within_class", "across_class", "ratio", "class_matrix", "undefined_sources"})
      EXPECT_EQ(row.at(key), o.at(key)) << key << " at step " << step;
    const std::vector<std::string> f = fields(text[q + 1]);
    ASSERT_EQ(f.size(), 7u) << text[q + 1];
    EXPECT_EQ(f[0], std::to_string(step));
    EXPECT_EQ(f[1], checkpoint(dir, step));
    const char* columns[] = {"mean", "within_class", "across_class", "ratio"};
    for (std::size_t k = 0; k < 4; ++k)
      EXPECT_NEAR(std::stod(f[k + 2]), o.at(columns[k]).get<double>(), 1e-9 * std::abs(o.at(columns[k]).get<double>()))
          << columns[k];
    EXPECT_EQ(f[6], std::to_string(o.at("undefined_sources").size()));
    if (q == 2) {
      for (const char* key : {"mean", "within_class", "across_class", "ratio", "class_matrix"})
        EXPECT_EQ(j.at(key), o.at(key)) << "the top level is the last checkpoint's " << key;
    }
  }
  EXPECT_NE(j.at("rows")[0].at("mean"), j.at("rows")[2].at("mean"));

  // Without data flags, the run's data comes from its report.json: the same curve.
  const CliResult again =
      run(std::vector<std::string>{"elasticity", "--checkpoints", dir, "--out-csv", csv2} + opts);
  ASSERT_EQ(again.exit_code, 0) << again;
  EXPECT_EQ(slurp(csv2), slurp(csv));
  EXPECT_EQ(again.json().at("data").at("from"), (fs::path(dir) / "report.json").string());
}

TEST(CliResponse, OneNetworkEqualsTheLibrary) {
  const Problem p = regression();
  for (const std::string form : {"step", "ntk"}) {
    const CliResult r = run({"response", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--eta", "0.001", "--form",
                             form, "--duplicate-tolerance", "0.01", "--threads", "1", "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r;
    const json j = r.json();
    const Context host = Context::host(1);
    const model::Mlp<double> net = model::load_mlp<double>(host, p.net);
    response::Options o;
    o.eta = 0.001;
    o.form = elasticity::parse_form(form);
    const MatrixView<const double> x{p.xs.data(), p.n, 2, 2, Backend::host};
    const response::Response lib = response::training_response<double>(host, net.spec, net.params.data(), x, targets_of(p), o);
    const response::FeatureSpace fsp = response::feature_space<double>(host, net.spec, net.params.data(), x, {0.01});
    EXPECT_EQ(j.at("samples"), p.n);
    expect_close(j.at("mean_diagonal"), lib.mean_diagonal, form + " mean_diagonal");
    expect_close(j.at("mean_off_diagonal"), lib.mean_off_diagonal, form + " mean_off_diagonal");
    ASSERT_EQ(j.at("layer_diagonal").size(), 2u);
    for (std::size_t l = 0; l < 2; ++l) {
      expect_close(j.at("layer_diagonal")[l], lib.layer_diagonal[l], "layer_diagonal");
      expect_close(j.at("layer_off_diagonal")[l], lib.layer_off_diagonal[l], "layer_off_diagonal");
    }
    // The per-layer responses (kernel form) sum to the ntk-form total.
    if (form == "ntk") {
      EXPECT_NEAR(lib.layer_diagonal[0] + lib.layer_diagonal[1], lib.mean_diagonal, 1e-12 * std::abs(lib.mean_diagonal));
    }
    ASSERT_EQ(j.at("features").size(), 1u);
    const json& h = j.at("features")[0];
    EXPECT_EQ(h.at("layer"), 1);
    EXPECT_EQ(h.at("width"), 6);
    expect_close(h.at("effective_rank"), fsp.layers[0].effective_rank, "effective_rank");
    expect_close(h.at("participation_ratio"), fsp.layers[0].participation_ratio, "participation_ratio");
    EXPECT_EQ(h.at("dead"), fsp.layers[0].dead);
    EXPECT_EQ(h.at("duplicated"), fsp.layers[0].duplicated);
    expect_close(j.at("input_grad_norm"), fsp.input_grad_norm, "input_grad_norm");
    EXPECT_FALSE(j.contains("beta")) << "one network has no aging fit";
  }
}

// The least-squares slope of ln R on ln t, written out here.
double slope(const std::vector<double>& t, const std::vector<double>& r) {
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    mx += std::log(t[i]);
    my += std::log(r[i]);
  }
  mx /= double(t.size());
  my /= double(t.size());
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    sxy += (std::log(t[i]) - mx) * (std::log(r[i]) - my);
    sxx += (std::log(t[i]) - mx) * (std::log(t[i]) - mx);
  }
  return sxy / sxx;
}

TEST(CliResponse, CheckpointsCsvAndTheAgingFit) {
  const std::string dir = temp_path("rrun");
  const std::vector<std::string> data = train_run(dir, "60", "15");
  const std::string csv = temp_path("response.csv");
  const std::vector<std::string> opts{"--eta", "0.001", "--form", "ntk", "--threads", "1", "--quiet"};
  const CliResult r = run(std::vector<std::string>{"response", "--checkpoints", dir, "--out-csv", csv} + data + opts);
  ASSERT_EQ(r.exit_code, 0) << r;
  const json j = r.json();
  EXPECT_EQ(j.at("checkpoints"), 5);
  EXPECT_EQ(j.at("samples"), 45);
  const std::vector<std::string> text = lines(csv);
  ASSERT_EQ(text.size(), 6u);
  EXPECT_EQ(text[0],
            "step,checkpoint,mean_diagonal,mean_off_diagonal,layer1_diagonal,layer1_off_diagonal,layer2_diagonal,"
            "layer2_off_diagonal,effective_rank1,participation_ratio1,dead1,duplicated1,input_grad_norm");
  std::vector<double> t, total, layer1;
  for (std::size_t q = 0; q < 5; ++q) {
    const int step = 15 * int(q);
    const json& row = j.at("rows")[q];
    EXPECT_EQ(row.at("step"), step);
    const std::vector<std::string> f = fields(text[q + 1]);
    ASSERT_EQ(f.size(), 13u) << text[q + 1];
    EXPECT_EQ(f[0], std::to_string(step));
    EXPECT_NEAR(std::stod(f[2]), row.at("mean_diagonal").get<double>(), 1e-9 * row.at("mean_diagonal").get<double>());
    EXPECT_NEAR(std::stod(f[8]), row.at("features")[0].at("effective_rank").get<double>(), 1e-8);
    EXPECT_EQ(f[10], std::to_string(row.at("features")[0].at("dead").get<int>()));
    if (step > 0) {
      t.push_back(step);
      total.push_back(row.at("mean_diagonal").get<double>());
      layer1.push_back(row.at("layer_diagonal")[0].get<double>());
    }
    if (q == 2) {
      // Each row is what `response --model` gives for that checkpoint.
      const CliResult one = run(std::vector<std::string>{"response", "--model", checkpoint(dir, step)} + data + opts);
      ASSERT_EQ(one.exit_code, 0) << one;
      const json o = one.json();
      for (const char* key : {"mean_diagonal", "mean_off_diagonal", "layer_diagonal", "layer_off_diagonal", "features",
                              "input_grad_norm"})
        EXPECT_EQ(row.at(key), o.at(key)) << key;
    }
  }
  EXPECT_EQ(j.at("last"), j.at("rows")[4]);
  // The fit over the steps > 0: beta is minus the slope of ln R on ln t.
  EXPECT_EQ(j.at("fit_to"), "mean_diagonal");
  EXPECT_EQ(j.at("points"), 4);
  EXPECT_EQ(j.at("fit_window"), json::array({1, 60}));
  EXPECT_TRUE(j.at("fit_window")[1].is_number_integer()) << j.at("fit_window");
  expect_close(j.at("beta"), -slope(t, total), "beta");
  ASSERT_EQ(j.at("beta_ci").size(), 2u);
  EXPECT_LT(j.at("beta_ci")[0].get<double>(), j.at("beta").get<double>());
  EXPECT_GT(j.at("beta_ci")[1].get<double>(), j.at("beta").get<double>());
  EXPECT_TRUE(j.at("amplitude").is_number());
  EXPECT_TRUE(j.at("r_squared").is_number());
  ASSERT_EQ(j.at("layers").size(), 2u);
  EXPECT_EQ(j.at("layers")[0].at("layer"), 1);
  expect_close(j.at("layers")[0].at("beta"), -slope(t, layer1), "layer 1 beta");

  // A window with 3 checkpoints: the fit over them only.
  const CliResult w = run(std::vector<std::string>{"response", "--checkpoints", dir, "--out-csv", csv, "--fit-window",
                                                   "20,60"} + data + opts);
  ASSERT_EQ(w.exit_code, 0) << w;
  EXPECT_EQ(w.json().at("points"), 3);
  EXPECT_EQ(w.json().at("fit_window"), json::array({20, 60}));
  EXPECT_TRUE(w.json().at("fit_window")[0].is_number_integer()) << w.json().at("fit_window");
  expect_close(w.json().at("beta"), -slope({30, 45, 60}, {total[1], total[2], total[3]}), "beta over 20..60");

  // Too few checkpoints in the window: no fit, a warning, and still the CSV (not an error).
  fs::remove(csv);
  const std::string few_json = temp_path("few.json");
  const CliResult few = run(std::vector<std::string>{"response", "--checkpoints", dir, "--out-csv", csv, "--fit-window",
                                                     "1,20", "--out", few_json} + data + opts);
  ASSERT_EQ(few.exit_code, 0) << few;
  // The summary (stdout with --out) says it once, without a doubled prefix.
  EXPECT_NE(few.out.find("no aging fit of the mean diagonal response: 1 checkpoint with a step in [1, 20]"),
            std::string::npos) << few;
  EXPECT_EQ(few.out.find("no aging fit: no aging fit"), std::string::npos) << few;
  const json fj = json::parse(slurp(few_json));
  EXPECT_TRUE(fj.at("beta").is_null());
  EXPECT_TRUE(fj.at("beta_ci").is_null());
  EXPECT_TRUE(fj.at("amplitude").is_null());
  EXPECT_EQ(fj.at("points"), 1);
  ASSERT_TRUE(fj.contains("warnings"));
  EXPECT_NE(fj.at("warnings")[0].get<std::string>().find("no aging fit"), std::string::npos) << fj.at("warnings");
  EXPECT_EQ(lines(csv).size(), 6u);
}

TEST(CliResponse, RecordedDataIsCutToTheDefaultSampleCount) {
  // 160 training samples: response takes its default 128 of a run's recorded data, elasticity all
  // (under its 512); data flags with --samples take what they say, and --samples alone caps the
  // recorded data.
  const std::string dir = temp_path("big");
  const std::vector<std::string> data{"--dataset", "spirals", "--samples", "160"};
  const CliResult train = run(std::vector<std::string>{"train", "--arch", "2-4-2", "--steps", "2", "--save-every", "1",
                                                       "--out-dir", dir, "--quiet"} + data);
  ASSERT_EQ(train.exit_code, 0) << train;
  std::ofstream(fs::path(dir) / "report.json") << train.out;
  const std::string csv = temp_path("big.csv");
  const CliResult r = run({"response", "--checkpoints", dir, "--out-csv", csv, "--threads", "1", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json().at("samples"), 128);
  EXPECT_EQ(r.json().at("data").at("train_samples"), 160);
  const CliResult all = run(std::vector<std::string>{"response", "--checkpoints", dir, "--out-csv", csv, "--threads", "1",
                                                     "--quiet"} + data);
  ASSERT_EQ(all.exit_code, 0) << all;
  EXPECT_EQ(all.json().at("samples"), 160);
  const CliResult e = run({"elasticity", "--checkpoints", dir, "--out-csv", csv, "--threads", "1", "--quiet"});
  ASSERT_EQ(e.exit_code, 0) << e;
  EXPECT_EQ(e.json().at("sources"), 160);
  // --samples alone keeps the recorded data and takes its first N training samples.
  for (const std::string command : {"elasticity", "response"}) {
    const CliResult n = run({command, "--checkpoints", dir, "--out-csv", csv, "--samples", "50", "--threads", "1", "--quiet"});
    ASSERT_EQ(n.exit_code, 0) << n;
    EXPECT_EQ(n.json().at(command == "response" ? "samples" : "sources"), 50) << command;
    EXPECT_EQ(n.json().at("data").at("from"), (fs::path(dir) / "report.json").string()) << command;
    // The JSON says how many training samples were taken, not only the run's own --samples.
    EXPECT_EQ(n.json().at("data").at("samples"), 50) << command;
    EXPECT_EQ(n.json().at("data").at("train_samples"), 160) << command;
    // More than the run's training split is an error naming both counts (it was silently fewer),
    // before any file is written; --samples 0 takes them all.
    fs::remove(csv);
    const std::string out = temp_path("never_big.json");
    expect_usage_error(run({command, "--checkpoints", dir, "--out-csv", csv, "--samples", "200", "--out", out, "--quiet"}),
                       {"--samples 200", "160", "training split"});
    EXPECT_FALSE(fs::exists(csv)) << command;
    EXPECT_FALSE(fs::exists(out)) << command;
    const CliResult all_of_it =
        run({command, "--checkpoints", dir, "--out-csv", csv, "--samples", "0", "--threads", "1", "--quiet"});
    ASSERT_EQ(all_of_it.exit_code, 0) << all_of_it;
    EXPECT_EQ(all_of_it.json().at("data").at("samples"), 160) << command;
  }
  EXPECT_EQ(r.json().at("data").at("samples"), 128);
  EXPECT_EQ(e.json().at("data").at("samples"), 160);
}

TEST(CliElasticity, BadInputIsRefusedBeforeAnythingIsWritten) {
  const Problem p = regression();
  const Problem c = classification();
  const std::string out = temp_path("never.json"), s = temp_path("never.npy"), cm = temp_path("never_c.npy");
  const auto refused = [&](const std::vector<std::string>& args, const std::vector<std::string>& phrases) {
    expect_usage_error(run(args + std::vector<std::string>{"--out", out, "--quiet"}), phrases);
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(s));
    EXPECT_FALSE(fs::exists(cm));
  };
  const std::vector<std::string> reg{"elasticity", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--out-matrix", s};
  const std::vector<std::string> cls{"elasticity", "--model", c.net, "--inputs", c.x, "--targets", c.y, "--out-matrix", s,
                                     "--out-class-matrix", cm};
  refused(reg + std::vector<std::string>{"--eta", "0"}, {"--eta", "> 0"});
  refused(reg + std::vector<std::string>{"--eta", "-1"}, {"--eta"});
  refused(reg + std::vector<std::string>{"--eta", "nan"}, {"--eta"});
  refused(reg + std::vector<std::string>{"--metric", "kl"}, {"--metric kl", "class labels"});
  refused(reg + std::vector<std::string>{"--metric", "l2"}, {"--metric l2", "class labels"});
  refused(cls + std::vector<std::string>{"--metric", "abs"}, {"--metric abs", "class labels"});
  refused(cls + std::vector<std::string>{"--metric", "kl-compat", "--form", "ntk"}, {"--metric kl-compat", "--form ntk"});
  refused(reg + std::vector<std::string>{"--update", "adam", "--form", "ntk"}, {"--update adam", "--form ntk"});
  refused(reg + std::vector<std::string>{"--adam-eps", "1e-6"}, {"--adam-eps", "--update adam"});
  refused(reg + std::vector<std::string>{"--update", "adam", "--adam-eps", "0"}, {"--adam-eps", "> 0"});
  refused(reg + std::vector<std::string>{"--metric", "cosine"}, {"--metric"});
  refused(reg + std::vector<std::string>{"--form", "exact"}, {"--form"});
  refused(reg + std::vector<std::string>{"--pairs-per-class", "2"}, {"--pairs-per-class", "float targets"});
  refused(reg + std::vector<std::string>{"--out-class-matrix", cm}, {"--out-class-matrix", "float targets"});
  refused(reg + std::vector<std::string>{"--loss", "xent"}, {"--loss xent", "integer class labels"});
  refused(cls + std::vector<std::string>{"--pairs-per-class", "13"},
          {"--pairs-per-class 13: class 0 of the sources has 12 samples, fewer than 13"});
  {
    // In the flag's terms, not the library's function names.
    const CliResult r = run(cls + std::vector<std::string>{"--pairs-per-class", "13", "--quiet"});
    EXPECT_EQ(r.err.find("sample_per_class"), std::string::npos) << r;
    EXPECT_EQ(r.err.find("elasticity::"), std::string::npos) << r;
  }
  refused(cls + std::vector<std::string>{"--pairs-per-class", "0"}, {"--pairs-per-class", ">= 1"});
  refused(reg + std::vector<std::string>{"--out-csv", temp_path("x.csv")}, {"--out-csv", "--checkpoints"});
  refused(reg + std::vector<std::string>{"--out-class-matrix", s}, {"--out-class-matrix and --out-matrix name the same file"});
  // The targets of the move: the network's input width; labels only for labelled sources.
  const std::string x3 = npy<double>("x3.npy", std::vector<double>(12, 0.5), {4, 3});
  refused(reg + std::vector<std::string>{"--inputs2", x3}, {"--inputs2", "3 values per sample", "takes 2"});
  const std::string l2 = npy<std::int64_t>("l2.npy", {0, 1, 2, 0, 1, 2, 0}, {7});
  refused(reg + std::vector<std::string>{"--inputs2", p.x2, "--targets2", l2}, {"--targets2", "float targets"});
  refused(cls + std::vector<std::string>{"--inputs2", p.x2}, {"--out-class-matrix", "--targets2"});
  // Labels of another length than --inputs2 (7 rows): the message names --targets2 and both counts.
  const std::string l5 = npy<std::int64_t>("l5.npy", {0, 1, 2, 0, 1}, {5});
  refused(cls + std::vector<std::string>{"--inputs2", p.x2, "--targets2", l5}, {"--targets2 " + l5, "7 rows", "[5]"});
  refused(reg + std::vector<std::string>{"--targets2", l2}, {"--targets2", "--inputs2"});
  refused({"elasticity", "--inputs", p.x, "--targets", p.y}, {"elasticity needs --model"});
  refused({"elasticity", "--model", p.net, "--inputs", p.x, "--out-matrix", s}, {"elasticity needs the sources' targets"});

  // Checkpoints: --out-csv needed, the one-network outputs and flags refused, architectures equal.
  const std::string dir = temp_path("mixed");
  fs::create_directories(dir);
  fs::copy_file(p.net, checkpoint(dir, 0));
  fs::copy_file(save_net("other.safetensors", "2-5-1", 1), checkpoint(dir, 10));
  const std::string csv = temp_path("never.csv");
  const std::vector<std::string> along{"elasticity", "--checkpoints", dir, "--inputs", p.x, "--targets", p.y};
  refused(along, {"--checkpoints", "--out-csv"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--out-matrix", s}, {"--out-matrix", "--checkpoints"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--model", p.net}, {"--checkpoints", "--model"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--init", "pytorch"}, {"--init", "--checkpoints"});
  refused(along + std::vector<std::string>{"--out-csv", csv}, {"another architecture", "2-5-1", "2-6-1"});
  EXPECT_FALSE(fs::exists(csv));
  // A train folder without report.json and no data flags: the message says what to give.
  refused({"elasticity", "--checkpoints", dir, "--out-csv", csv}, {"--checkpoints", "report.json", "--dataset"});

  // A read-only output file is refused before the work, and stays as it was.
  const std::string locked = temp_path("locked.npy");
  std::ofstream(locked) << "keep";
  ::chmod(locked.c_str(), 0444);
  expect_usage_error(run({"elasticity", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--out-matrix", locked}),
                     {"--out-matrix"});
  EXPECT_EQ(slurp(locked), "keep");
}

TEST(CliResponse, BadInputIsRefusedBeforeAnythingIsWritten) {
  const Problem p = regression();
  const std::string out = temp_path("never.json"), csv = temp_path("never.csv");
  const auto refused = [&](const std::vector<std::string>& args, const std::vector<std::string>& phrases) {
    expect_usage_error(run(args + std::vector<std::string>{"--out", out, "--quiet"}), phrases);
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(csv));
  };
  const std::vector<std::string> one{"response", "--model", p.net, "--inputs", p.x, "--targets", p.y};
  refused(one + std::vector<std::string>{"--eta", "0"}, {"--eta", "> 0"});
  refused(one + std::vector<std::string>{"--duplicate-tolerance", "-1"}, {"--duplicate-tolerance", ">= 0"});
  refused(one + std::vector<std::string>{"--fit-window", "1,10"}, {"--fit-window", "--checkpoints"});
  refused(one + std::vector<std::string>{"--out-csv", csv}, {"--out-csv", "--checkpoints"});
  refused(one + std::vector<std::string>{"--loss", "xent"}, {"--loss xent", "integer class labels"});
  refused(one + std::vector<std::string>{"--samples", "1"}, {"at least 2 samples"});
  refused({"response", "--model", p.net, "--inputs", p.x}, {"response needs targets"});
  refused({"response", "--inputs", p.x, "--targets", p.y}, {"response needs --checkpoints"});
  const std::string dir = temp_path("rmixed");
  fs::create_directories(dir);
  fs::copy_file(p.net, checkpoint(dir, 0));
  fs::copy_file(save_net("other.safetensors", "2-5-1", 1), checkpoint(dir, 10));
  const std::vector<std::string> along{"response", "--checkpoints", dir, "--inputs", p.x, "--targets", p.y};
  refused(along, {"--checkpoints", "--out-csv"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--fit-window", "5"}, {"--fit-window", "two steps"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--fit-window", "10,5"}, {"--fit-window", "after the last"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--fit-window", "-1,5"}, {"--fit-window", ">= 0"});
  // Checkpoints are named by integer steps: 1e2 is refused rather than read some other way.
  refused(along + std::vector<std::string>{"--out-csv", csv, "--fit-window", "1e2,6e2"},
          {"--fit-window 1e2,6e2", "integers", "'1e2'"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--fit-window", "10,20.5"}, {"--fit-window", "'20.5'"});
  refused(along + std::vector<std::string>{"--out-csv", csv, "--arch", "2-4-1"}, {"--checkpoints", "--arch"});
  refused(along + std::vector<std::string>{"--out-csv", csv}, {"another architecture"});
  refused(along + std::vector<std::string>{"--out-csv", out}, {"--out-csv and --out name the same file"});
}

// The outputs of the network in `path` at the problem's sources, in float64.
std::vector<double> outputs_of(const Problem& p) {
  const Context host = Context::host(1);
  const model::Mlp<double> net = model::load_mlp<double>(host, p.net);
  model::MlpEngine<double> engine(host, net.spec);
  const MatrixView<const double> f = engine.forward(net.params.data(), {p.xs.data(), p.n, 2, 2, Backend::host});
  std::vector<double> out(std::size_t(p.n));
  for (index_t i = 0; i < p.n; ++i) out[std::size_t(i)] = f(i, 0);
  return out;
}

// A network of `arch` whose parameters are all zero: its output is exactly 0 everywhere, so a
// source with target 0 has an exactly zero loss gradient.
std::string zero_net(const std::string& name, const std::string& arch) {
  const Context host = Context::host(1);
  const model::MlpSpec spec = model::MlpSpec::from_arch(arch, model::ActivationSpec{model::Activation::tanh});
  Array<double> params = model::init_params<double>(host, spec, {model::Init::pytorch, 1.0, 1});
  for (index_t k = 0; k < params.size(); ++k) params.data()[k] = 0.0;
  const std::string path = temp_path(name);
  model::save_mlp<double>(host, path, spec, params);
  return path;
}

std::string warnings_of(const json& j) {
  std::string all;
  if (j.contains("warnings"))
    for (const json& w : j.at("warnings")) all += w.get<std::string>() + "\n";
  return all;
}

TEST(CliElasticity, Float64IsTheDefaultAndUnresolvedSourcesAreToldApart) {
  // Every third source sits 1e-4 from its target (a tiny loss gradient), the others 0.5: with
  // eta = 1e-3 the tiny ones' own change is ~1e-7, below float32's rounding of two forwards
  // (32 eps = 4e-6) but far above float64's.
  Problem p = regression();
  const std::vector<double> f = outputs_of(p);
  std::vector<index_t> tiny;
  for (index_t i = 0; i < p.n; ++i) {
    const bool small = i % 3 == 0;
    p.ys[std::size_t(i)] = f[std::size_t(i)] + (small ? 1e-4 : 0.5);
    if (small) tiny.push_back(i);
  }
  p.y = npy<double>("y_tiny.npy", p.ys, {p.n, 1});
  // The network and the inputs in float32 files: the precision no longer follows them.
  const std::vector<float> xf(p.xs.begin(), p.xs.end());
  const std::string x32 = npy<float>("x32.npy", xf, {p.n, 2});
  const std::string s_path = temp_path("s_prec.npy"), s32_path = temp_path("s_prec32.npy"),
                    ntk_path = temp_path("s_prec_ntk.npy");
  const std::vector<std::string> base{"elasticity", "--model", p.net, "--targets", p.y, "--eta", "1e-3", "--threads", "1",
                                      "--quiet"};

  // Default: float64, whatever the files hold, and every source resolved.
  const CliResult d = run(base + std::vector<std::string>{"--inputs", x32, "--out-matrix", s_path});
  ASSERT_EQ(d.exit_code, 0) << d;
  const json dj = d.json();
  EXPECT_EQ(dj.at("dtype"), "float64");
  EXPECT_EQ(dj.at("dtype_source"), "default of elasticity/response: a step's change is a difference of two forwards");
  EXPECT_TRUE(dj.at("undefined_sources").empty()) << dj.at("undefined_sources");
  EXPECT_TRUE(dj.at("unresolved_sources").empty()) << dj.at("unresolved_sources");
  EXPECT_FALSE(dj.contains("warnings")) << dj.at("warnings");
  // ... and right: the step's S_rel of the tiny sources agrees with the eta -> 0 limit (ntk form,
  // a product, not a difference) to O(eta).
  const CliResult n = run(base + std::vector<std::string>{"--inputs", x32, "--form", "ntk", "--out-matrix", ntk_path});
  ASSERT_EQ(n.exit_code, 0) << n;
  const std::vector<double> s = read_matrix(s_path, {p.n, p.n}), sn = read_matrix(ntk_path, {p.n, p.n});
  double worst = 0;
  for (index_t i : tiny)
    for (index_t j = 0; j < p.n; ++j) {
      const std::size_t k = std::size_t(i * p.n + j);
      ASSERT_TRUE(std::isfinite(s[k])) << i << "," << j;
      worst = std::max(worst, std::abs(s[k] - sn[k]) / std::max(1.0, std::abs(sn[k])));
    }
  EXPECT_LT(worst, 1e-2) << "float64 step vs ntk on the tiny-gradient sources";

  // --dtype float32 is honoured: the tiny sources are unresolved (not "zero loss gradient"), named
  // apart in the JSON and the warnings, with the remedy.
  const CliResult f32 = run(base + std::vector<std::string>{"--inputs", p.x, "--dtype", "float32", "--out-matrix", s32_path});
  ASSERT_EQ(f32.exit_code, 0) << f32;
  const json fj = f32.json();
  EXPECT_EQ(fj.at("dtype"), "float32");
  EXPECT_EQ(fj.at("dtype_source"), "--dtype");
  EXPECT_EQ(fj.at("unresolved_sources"), json(tiny));
  EXPECT_EQ(fj.at("undefined_sources"), json(tiny));
  const std::string w = warnings_of(fj);
  EXPECT_NE(w.find(std::to_string(tiny.size()) + " sources have no S_rel: unresolved at float32"), std::string::npos) << w;
  EXPECT_NE(w.find("use --dtype float64 or --form ntk"), std::string::npos) << w;
  EXPECT_EQ(w.find("zero loss gradient"), std::string::npos) << w;
  const std::vector<double> s32 = read_matrix(s32_path, {p.n, p.n});
  for (index_t i : tiny) EXPECT_TRUE(std::isnan(s32[std::size_t(i * p.n)])) << i;
  // The other sources keep their S_rel, close to float64's.
  for (index_t i = 1; i < p.n; i += 3)
    EXPECT_NEAR(s32[std::size_t(i * p.n + 2)], s[std::size_t(i * p.n + 2)], 1e-2 * std::max(1.0, std::abs(s[std::size_t(i * p.n + 2)])))
        << i;

  // response: the same default, and the same sources unresolved at float32.
  const CliResult rd = run({"response", "--model", p.net, "--inputs", x32, "--targets", p.y, "--threads", "1", "--quiet"});
  ASSERT_EQ(rd.exit_code, 0) << rd;
  EXPECT_EQ(rd.json().at("dtype"), "float64");
  EXPECT_EQ(rd.json().at("dtype_source"), dj.at("dtype_source"));
  EXPECT_TRUE(rd.json().at("unresolved_sources").empty());
  const CliResult r32 = run({"response", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--dtype", "float32",
                             "--threads", "1", "--quiet"});
  ASSERT_EQ(r32.exit_code, 0) << r32;
  EXPECT_EQ(r32.json().at("dtype"), "float32");
  EXPECT_EQ(r32.json().at("unresolved_sources"), json(tiny));
  EXPECT_NE(warnings_of(r32.json()).find("unresolved at float32"), std::string::npos) << r32.json();
}

TEST(CliElasticity, ZeroGradientSourcesAndNetworksWithoutAnySRel) {
  // A network with all parameters zero outputs 0: sources with target 0 have a zero loss gradient;
  // for the others (target 1) the step moves only the output bias, by the same amount at every
  // input, so their S_rel is exactly 1 everywhere.
  Problem p = regression();
  p.net = zero_net("zero.safetensors", "2-6-1");
  std::vector<double> mixed(std::size_t(p.n)), zeros(std::size_t(p.n), 0.0);
  std::vector<index_t> flat;
  for (index_t i = 0; i < p.n; ++i) {
    mixed[std::size_t(i)] = i % 2 == 0 ? 0.0 : 1.0;
    if (i % 2 == 0) flat.push_back(i);
  }
  const std::string y_mixed = npy<double>("y_mixed.npy", mixed, {p.n, 1}), y_zero = npy<double>("y_zero.npy", zeros, {p.n, 1});
  const std::string s_path = temp_path("s_zero.npy"), out = temp_path("zero.json");
  const CliResult m = run({"elasticity", "--model", p.net, "--inputs", p.x, "--targets", y_mixed, "--out-matrix", s_path,
                           "--threads", "1", "--quiet"});
  ASSERT_EQ(m.exit_code, 0) << m;
  const json mj = m.json();
  EXPECT_EQ(mj.at("undefined_sources"), json(flat));
  EXPECT_TRUE(mj.at("unresolved_sources").empty());
  const std::string w = warnings_of(mj);
  EXPECT_NE(w.find(std::to_string(flat.size()) + " sources have no S_rel: zero loss gradient"), std::string::npos) << w;
  EXPECT_EQ(w.find("unresolved"), std::string::npos) << w;
  const std::vector<double> s = read_matrix(s_path, {p.n, p.n});
  for (index_t i = 0; i < p.n; ++i)
    for (index_t j = 0; j < p.n; ++j) {
      if (i % 2 == 0) EXPECT_TRUE(std::isnan(s[std::size_t(i * p.n + j)])) << i << "," << j;
      else EXPECT_NEAR(s[std::size_t(i * p.n + j)], 1.0, 1e-12) << i << "," << j;
    }
  expect_close(mj.at("mean"), 1.0, "mean over the bias-only steps");

  // No source with S_rel: exit 1, what happened and what to change, and no output at all.
  fs::remove(s_path);
  for (const std::string command : {"elasticity", "response"}) {
    std::vector<std::string> args{command, "--model", p.net, "--inputs", p.x, "--targets", y_zero, "--out", out, "--quiet"};
    if (command == "elasticity") args = args + std::vector<std::string>{"--out-matrix", s_path};
    const CliResult r = run(args);
    EXPECT_EQ(r.exit_code, 1) << r;
    const std::string none = command == "elasticity" ? "none of the 30 sources has S_rel" : "none of the 30 samples has a response";
    for (const std::string& phrase : {none, std::string("30 have a zero loss gradient"), std::string("measure other samples")})
      EXPECT_NE(r.err.find(phrase), std::string::npos) << phrase << "\n" << r;
    EXPECT_FALSE(fs::exists(out)) << command;
    EXPECT_FALSE(fs::exists(s_path)) << command;
  }
  // Every source below float32's rounding (a step of 1e-9): the remedy is the precision or the form.
  const Problem q = regression();
  const CliResult tiny = run({"elasticity", "--model", q.net, "--inputs", q.x, "--targets", q.y, "--eta", "1e-9", "--dtype",
                              "float32", "--out", out, "--quiet"});
  EXPECT_EQ(tiny.exit_code, 1) << tiny;
  for (const char* phrase : {"none of the 30 sources has S_rel", "30 are unresolved at float32", "--dtype float64 or --form ntk"})
    EXPECT_NE(tiny.err.find(phrase), std::string::npos) << phrase << "\n" << tiny;
  EXPECT_FALSE(fs::exists(out));

  // Along checkpoints such a network keeps its row, empty, and a warning names it: the curve goes on.
  const std::string dir = temp_path("zrun");
  fs::create_directories(dir);
  fs::copy_file(p.net, checkpoint(dir, 0));
  fs::copy_file(q.net, checkpoint(dir, 10));
  const std::string csv = temp_path("zero.csv");
  const CliResult e = run({"elasticity", "--checkpoints", dir, "--inputs", p.x, "--targets", y_zero, "--out-csv", csv,
                           "--threads", "1", "--quiet"});
  ASSERT_EQ(e.exit_code, 0) << e;
  const json ej = e.json();
  EXPECT_TRUE(ej.at("rows")[0].at("mean").is_null());
  EXPECT_TRUE(ej.at("rows")[1].at("mean").is_number());
  EXPECT_NE(warnings_of(ej).find("step 0 (" + checkpoint(dir, 0) + "): none of the 30 sources has S_rel"), std::string::npos)
      << ej;
  const std::vector<std::string> text = lines(csv);
  ASSERT_EQ(text.size(), 3u);
  EXPECT_EQ(fields(text[1])[2], "");
  EXPECT_NE(fields(text[2])[2], "");
  const std::string rcsv = temp_path("zero_r.csv");
  const CliResult r = run({"response", "--checkpoints", dir, "--inputs", p.x, "--targets", y_zero, "--out-csv", rcsv,
                           "--threads", "1", "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const json rj = r.json();
  EXPECT_TRUE(rj.at("rows")[0].at("mean_diagonal").is_null());
  EXPECT_TRUE(rj.at("rows")[1].at("mean_diagonal").is_number());
  EXPECT_NE(warnings_of(rj).find("step 0 (" + checkpoint(dir, 0) + "): none of the 30 samples has a response"),
            std::string::npos) << rj;
  EXPECT_EQ(lines(rcsv).size(), 3u);
}

TEST(CliResponse, KernelGapIsTheStepAgainstItsLimit) {
  // kernel_gap = |step mean diagonal - its eta -> 0 limit| / |limit|, the limit measured here by
  // the ntk form (a separate run), not by the per-layer sums the tool uses.
  const Problem p = regression();
  const std::vector<std::string> base{"response", "--model", p.net, "--inputs", p.x, "--targets", p.y, "--threads", "1",
                                      "--quiet"};
  const CliResult ntk = run(base + std::vector<std::string>{"--form", "ntk"});
  ASSERT_EQ(ntk.exit_code, 0) << ntk;
  const double limit = ntk.json().at("mean_diagonal").get<double>();
  EXPECT_TRUE(ntk.json().at("kernel_gap").is_null()) << "no gap in the ntk form";
  for (const std::string eta : {"0.001", "5"}) {
    const CliResult r = run(base + std::vector<std::string>{"--eta", eta});
    ASSERT_EQ(r.exit_code, 0) << r;
    const json j = r.json();
    const double gap = std::abs(j.at("mean_diagonal").get<double>() - limit) / std::abs(limit);
    // The tool's limit is the sum of the per-layer kernels: equal to the ntk form's to rounding.
    ASSERT_TRUE(j.at("kernel_gap").is_number()) << j;
    EXPECT_NEAR(j.at("kernel_gap").get<double>(), gap, 1e-9) << "kernel_gap at eta " << eta;
    const std::string w = warnings_of(j);
    if (gap > 0.05) {
      EXPECT_NE(w.find("the one step differs from its eta -> 0 limit by"), std::string::npos) << w;
      EXPECT_NE(w.find("eta too large for a linear step, or too small for the precision"), std::string::npos) << w;
    } else {
      EXPECT_EQ(w.find("eta -> 0 limit"), std::string::npos) << w;
    }
    if (eta == "5") EXPECT_GT(gap, 0.05) << "the large step is meant to trip the warning";
    else EXPECT_LT(gap, 0.05);
  }
}

TEST(CliElasticity, HelpStatesTheDefaultSampleCaps) {
  const CliResult e = run({"elasticity", "--help"});
  EXPECT_EQ(e.exit_code, 0) << e;
  EXPECT_NE(e.out.find("default 512"), std::string::npos) << e.out;
  const CliResult r = run({"response", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_NE(r.out.find("default 128"), std::string::npos) << r.out;
  for (const CliResult* h : {&e, &r}) {
    // --samples alone keeps a run's data; float64 is the default precision here.
    EXPECT_NE(h->out.find("--samples N alone keeps the run's data"), std::string::npos) << h->out;
    EXPECT_NE(h->out.find("default here: float64"), std::string::npos) << h->out;
  }
  // response's --out-csv lists its columns; --fit-window takes integer steps.
  for (const char* column : {"mean_diagonal", "layer<l>_off_diagonal", "effective_rank<l>", "input_grad_norm"})
    EXPECT_NE(r.out.find(column), std::string::npos) << column << "\n" << r.out;
  EXPECT_NE(r.out.find("integer steps"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace dynascope::test
