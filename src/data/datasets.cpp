#include "dynascope/datasets.hpp"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <string>

#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "dynascope/random.hpp"

namespace dynascope::data {
namespace {

constexpr const char* kFashionDir = "/usr/share/datasets/fashion-mnist";
constexpr const char* kDigitsCsv = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";
constexpr double kPi = 3.141592653589793;

// Independent Philox streams per purpose, so that changing one option never shifts another draw.
enum StreamId : std::uint32_t { kInputs = 1, kNoise = 2, kTeacher = 3, kCenters = 4, kLabels = 5, kSplit = 6 };

std::vector<double> normals(std::uint64_t seed, std::uint32_t stream, index_t n, double stddev = 1.0) {
  std::vector<double> v(static_cast<std::size_t>(n));
  random::fill_normal<double>(Context::host(), {seed, stream, 0}, vector_view(v.data(), n), 0.0, stddev);
  return v;
}
std::vector<double> uniforms(std::uint64_t seed, std::uint32_t stream, index_t n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  random::fill_uniform<double>(Context::host(), {seed, stream, 0}, vector_view(v.data(), n));
  return v;
}

index_t pick(index_t value, index_t fallback) { return value > 0 ? value : fallback; }
double pick(double value, double fallback) { return value >= 0 ? value : fallback; }

void check_samples(const DatasetOptions& o) {
  if (o.samples < 0) throw InvalidArgument("dataset: samples must be >= 0");
  if (o.dim < 0 || o.classes < 0 || o.modulus < 0) throw InvalidArgument("dataset: dim, classes and modulus must be >= 0");
}

// y = tanh-MLP teacher (d -> 32 -> 1 by default), weights N(0, 1/fan_in), plus Gaussian noise.
Dataset teacher_student(const DatasetOptions& o) {
  Dataset ds;
  ds.name = "teacher";
  ds.task = Task::regression;
  ds.n = pick(o.samples, index_t{512});
  ds.d = pick(o.dim, index_t{16});
  ds.outputs = 1;
  const index_t hidden = 32;
  const double noise = pick(o.noise, 0.05);
  ds.x = normals(o.seed, kInputs, ds.n * ds.d);
  const std::vector<double> w1 = normals(o.seed, kTeacher, hidden * ds.d, 1.0 / std::sqrt(double(ds.d)));
  const std::vector<double> w2 = normals(o.seed + 1, kTeacher, hidden, 1.0 / std::sqrt(double(hidden)));
  const std::vector<double> eps = normals(o.seed, kNoise, ds.n, noise);
  ds.y.resize(static_cast<std::size_t>(ds.n));
  for (index_t i = 0; i < ds.n; ++i) {
    double out = 0;
    for (index_t h = 0; h < hidden; ++h) {
      double z = 0;
      for (index_t j = 0; j < ds.d; ++j) z += w1[std::size_t(h * ds.d + j)] * ds.x[std::size_t(i * ds.d + j)];
      out += w2[std::size_t(h)] * std::tanh(z);
    }
    ds.y[std::size_t(i)] = out + eps[std::size_t(i)];
  }
  return ds;
}

// K isotropic Gaussians with unit variance around centres drawn from N(0, sep^2 I), sep = 2.
Dataset gaussian_mixture(const DatasetOptions& o) {
  Dataset ds;
  ds.name = "gaussians";
  ds.task = Task::classification;
  ds.n = pick(o.samples, index_t{1024});
  ds.d = pick(o.dim, index_t{8});
  ds.outputs = pick(o.classes, index_t{4});
  const double spread = pick(o.noise, 1.0);
  const std::vector<double> centres = normals(o.seed, kCenters, ds.outputs * ds.d, 2.0);
  ds.x = normals(o.seed, kInputs, ds.n * ds.d, spread);
  ds.labels.resize(static_cast<std::size_t>(ds.n));
  for (index_t i = 0; i < ds.n; ++i) {
    const index_t k = i % ds.outputs;  // balanced classes
    ds.labels[std::size_t(i)] = k;
    for (index_t j = 0; j < ds.d; ++j) ds.x[std::size_t(i * ds.d + j)] += centres[std::size_t(k * ds.d + j)];
  }
  return ds;
}

// K interleaved spiral arms in the plane, 1.5 turns each, Gaussian noise 0.05 by default.
Dataset spirals(const DatasetOptions& o) {
  Dataset ds;
  ds.name = "spirals";
  ds.task = Task::classification;
  ds.n = pick(o.samples, index_t{512});
  ds.d = 2;
  if (o.dim > 0 && o.dim != 2) throw InvalidArgument("dataset spirals: inputs are 2-D (dim must be 2)");
  ds.outputs = pick(o.classes, index_t{2});
  const double noise = pick(o.noise, 0.05);
  const std::vector<double> t = uniforms(o.seed, kInputs, ds.n);
  const std::vector<double> eps = normals(o.seed, kNoise, 2 * ds.n, noise);
  ds.x.resize(static_cast<std::size_t>(2 * ds.n));
  ds.labels.resize(static_cast<std::size_t>(ds.n));
  for (index_t i = 0; i < ds.n; ++i) {
    const index_t k = i % ds.outputs;
    const double r = 0.1 + 0.9 * t[std::size_t(i)];
    const double angle = 3.0 * kPi * t[std::size_t(i)] + 2.0 * kPi * double(k) / double(ds.outputs);
    ds.x[std::size_t(2 * i)] = r * std::cos(angle) + eps[std::size_t(2 * i)];
    ds.x[std::size_t(2 * i + 1)] = r * std::sin(angle) + eps[std::size_t(2 * i + 1)];
    ds.labels[std::size_t(i)] = k;
  }
  return ds;
}

// All p^2 pairs (a, b) as concatenated one-hot vectors [2p], label (a + b) mod p.
Dataset modular_addition(const DatasetOptions& o) {
  Dataset ds;
  ds.name = "modadd";
  ds.task = Task::classification;
  const index_t p = pick(o.modulus, index_t{23});
  if (p < 2 || p > 1000) throw InvalidArgument("dataset modadd: modulus must be in [2, 1000]");
  if (o.samples > 0 && o.samples != p * p && !o.samples_at_most)
    throw InvalidArgument("dataset 'modadd' has exactly p^2 = " + std::to_string(p * p) + " samples (all pairs mod " +
                          std::to_string(p) + "), " + std::to_string(o.samples) +
                          " were asked for; hold some out with the test split instead");
  ds.n = p * p;
  ds.d = 2 * p;
  ds.outputs = p;
  ds.x.assign(static_cast<std::size_t>(ds.n * ds.d), 0.0);
  ds.labels.resize(static_cast<std::size_t>(ds.n));
  for (index_t a = 0; a < p; ++a)
    for (index_t b = 0; b < p; ++b) {
      const index_t i = a * p + b;
      ds.x[std::size_t(i * ds.d + a)] = 1.0;
      ds.x[std::size_t(i * ds.d + p + b)] = 1.0;
      ds.labels[std::size_t(i)] = (a + b) % p;
    }
  return ds;
}

// The first `samples` rows of real data; asking for more than it holds is an error unless the
// count is only a cap.
Dataset first_samples(Dataset ds, const DatasetOptions& o) {
  const index_t samples = o.samples;
  if (samples > ds.n && !o.samples_at_most)
    throw InvalidArgument("dataset '" + ds.name + "' holds " + std::to_string(ds.n) + " samples, " +
                          std::to_string(samples) + " were asked for (0 takes all of them)");
  if (samples <= 0 || samples >= ds.n) return ds;
  std::vector<index_t> rows(static_cast<std::size_t>(samples));
  std::iota(rows.begin(), rows.end(), index_t{0});
  return ds.subset(rows);
}

Dataset fashion_mnist(const DatasetOptions& o) {
  const std::string prefix = std::string(kFashionDir) + (o.test_split ? "/t10k" : "/train");
  const std::string images = prefix + "-images-idx3-ubyte.gz", labels = prefix + "-labels-idx1-ubyte.gz";
  if (!std::filesystem::exists(images))
    throw IoError(images + " not found: install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist)");
  Dataset ds = dataset_from_files(images, labels, true);
  ds.name = "fashion-mnist";
  return first_samples(std::move(ds), o);
}

Dataset digits(const DatasetOptions& o) {
  if (!std::filesystem::exists(kDigitsCsv))
    throw IoError(std::string(kDigitsCsv) + " not found: install Debian's python3-sklearn package");
  gzFile f = gzopen(kDigitsCsv, "rb");
  if (!f) throw IoError(std::string(kDigitsCsv) + ": cannot open");
  std::string text;
  char buf[1 << 16];
  int got;
  while ((got = gzread(f, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(got));
  gzclose(f);
  if (got < 0) throw FileFormatError(kDigitsCsv, "corrupt gzip stream");
  Dataset ds;
  ds.name = "digits";
  ds.task = Task::classification;
  ds.d = 64;
  ds.outputs = 10;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    std::vector<double> row;
    std::size_t p = 0;
    while (p <= line.size()) {
      std::size_t q = line.find(',', p);
      if (q == std::string::npos) q = line.size();
      try {
        row.push_back(std::stod(line.substr(p, q - p)));
      } catch (const std::exception&) {
        throw FileFormatError(kDigitsCsv, "line " + std::to_string(ds.n + 1) + " has a non-numeric field");
      }
      p = q + 1;
    }
    if (row.size() != 65) throw FileFormatError(kDigitsCsv, "line " + std::to_string(ds.n + 1) + " has " + std::to_string(row.size()) + " fields, expected 65");
    for (int j = 0; j < 64; ++j) ds.x.push_back(row[std::size_t(j)] / 16.0);
    ds.labels.push_back(static_cast<std::int64_t>(row[64]));
    ++ds.n;
  }
  return first_samples(std::move(ds), o);
}

}  // namespace

const char* to_string(Task task) noexcept { return name_of(task_names, task); }

Dataset Dataset::subset(const std::vector<index_t>& rows) const {
  Dataset s;
  s.name = name;
  s.task = task;
  s.d = d;
  s.outputs = outputs;
  s.inputs_file = inputs_file;
  s.targets_file = targets_file;
  s.targets_stored = targets_stored;
  s.n = static_cast<index_t>(rows.size());
  s.x.reserve(static_cast<std::size_t>(s.n * d));
  s.source_rows.reserve(rows.size());
  for (index_t r : rows) {
    if (r < 0 || r >= n) throw InvalidArgument("Dataset::subset: row " + std::to_string(r) + " out of range");
    s.source_rows.push_back(source_row(r));
    s.x.insert(s.x.end(), x.begin() + r * d, x.begin() + (r + 1) * d);
    if (!labels.empty()) s.labels.push_back(labels[std::size_t(r)]);
    if (!y.empty()) s.y.insert(s.y.end(), y.begin() + r * outputs, y.begin() + (r + 1) * outputs);
  }
  return s;
}

std::vector<DatasetInfo> list_datasets() {
  std::vector<DatasetInfo> out;
  auto add = [&](const std::string& name, const std::string& description, Task task, index_t n, index_t d,
                 index_t outputs, bool available, const std::string& note) {
    out.push_back({name, description, task, n, d, outputs, available, note});
  };
  add("teacher", "teacher-student regression: y = random tanh MLP (16-32-1) of Gaussian x, plus noise 0.05",
      Task::regression, 512, 16, 1, true, "built in");
  add("gaussians", "Gaussian mixture: 4 unit-variance classes around N(0, 4I) centres in 8-D", Task::classification,
      1024, 8, 4, true, "built in");
  add("spirals", "two interleaved 2-D spirals (1.5 turns), noise 0.05", Task::classification, 512, 2, 2, true,
      "built in");
  add("modadd", "modular addition (a + b) mod 23 on one-hot pairs, the grokking task", Task::classification, 529, 46,
      23, true, "built in");
  const bool fashion = std::filesystem::exists(std::string(kFashionDir) + "/train-images-idx3-ubyte.gz");
  add("fashion-mnist", "Fashion-MNIST 28x28 grey images, 10 classes (train 60000 / test 10000)", Task::classification,
      60000, 784, 10, fashion, fashion ? kFashionDir : "apt-get install dataset-fashion-mnist");
  const bool dig = std::filesystem::exists(kDigitsCsv);
  add("digits", "scikit-learn 8x8 handwritten digits, 10 classes", Task::classification, 1797, 64, 10, dig,
      dig ? kDigitsCsv : "apt-get install python3-sklearn");
  return out;
}

Dataset load_dataset(const std::string& name, const DatasetOptions& options) {
  check_samples(options);
  if (name == "teacher") return teacher_student(options);
  if (name == "gaussians") return gaussian_mixture(options);
  if (name == "spirals") return spirals(options);
  if (name == "modadd") return modular_addition(options);
  if (name == "fashion-mnist") return fashion_mnist(options);
  if (name == "digits") return digits(options);
  std::string names;
  for (const auto& info : list_datasets()) names += (names.empty() ? "" : ", ") + info.name;
  throw InvalidArgument("unknown dataset '" + name + "' (known: " + names + ")");
}

namespace {
std::vector<double> to_doubles(const io::Tensor& t, bool scale_u8) {
  std::vector<double> v = t.to_vector<double>();
  if (scale_u8 && t.dtype == DType::u8)
    for (double& x : v) x /= 255.0;
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) throw InvalidArgument("non-finite value at element " + std::to_string(i));
  return v;
}
}  // namespace

Dataset inputs_from_file(const std::string& inputs, bool scale_u8) {
  const io::Tensor t = io::read_array(inputs);
  if (t.shape.size() < 2) throw ShapeMismatch(inputs + ": inputs must have shape [N, D...], got " + shape_string(t.shape));
  Dataset ds;
  ds.name = inputs;
  ds.inputs_file = inputs;
  ds.n = t.shape[0];
  ds.d = ds.n > 0 ? t.numel() / ds.n : 0;
  if (ds.n == 0 || ds.d == 0) throw ShapeMismatch(inputs + ": inputs are empty " + shape_string(t.shape));
  try {
    ds.x = to_doubles(t, scale_u8);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(inputs + ": " + e.what());
  }
  return ds;
}

Dataset dataset_from_files(const std::string& inputs, const std::string& targets, bool scale_u8) {
  Dataset ds = inputs_from_file(inputs, scale_u8);
  const io::Tensor t = io::read_array(targets);
  if (t.shape.empty() || t.shape[0] != ds.n)
    throw ShapeMismatch(targets + ": targets must have " + std::to_string(ds.n) + " rows like " + inputs + ", got shape " +
                        shape_string(t.shape));
  ds.targets_file = targets;
  ds.targets_stored = std::string(to_string(t.dtype)) + " " + shape_string(t.shape);
  const bool integer = t.dtype == DType::i32 || t.dtype == DType::i64 || t.dtype == DType::u8;
  if (integer) {
    if (t.shape.size() != 1)
      throw ShapeMismatch(targets + ": integer class labels must have shape [N] (one label per row), got " +
                          ds.targets_stored + (t.shape.size() == 2 ? "; for float targets [N, O] save floats" : ""));
    ds.task = Task::classification;
    ds.labels = t.to_vector<std::int64_t>();
    std::int64_t mx = 0;
    for (std::size_t i = 0; i < ds.labels.size(); ++i) {
      if (ds.labels[i] < 0)
        throw InvalidArgument(targets + ": class label " + std::to_string(ds.labels[i]) + " at row " + std::to_string(i) +
                              " is negative (labels are 0, 1, ..., classes - 1)");
      mx = std::max(mx, ds.labels[i]);
    }
    ds.outputs = mx + 1;
  } else {
    if (t.shape.size() > 2) throw ShapeMismatch(targets + ": regression targets must have shape [N] or [N, O], got " + shape_string(t.shape));
    ds.task = Task::regression;
    ds.outputs = t.shape.size() == 2 ? t.shape[1] : 1;
    try {
      ds.y = to_doubles(t, false);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(targets + ": " + e.what());
    }
  }
  return ds;
}

Split train_test_split(const Dataset& data, double test_fraction, std::uint64_t seed) {
  if (!(test_fraction >= 0.0 && test_fraction < 1.0))
    throw InvalidArgument("train_test_split: test fraction must be in [0, 1), got " + std::to_string(test_fraction));
  const std::vector<double> keys = uniforms(seed, kSplit, data.n);
  std::vector<index_t> order(static_cast<std::size_t>(data.n));
  std::iota(order.begin(), order.end(), index_t{0});
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return keys[std::size_t(a)] < keys[std::size_t(b)]; });
  const index_t n_test = static_cast<index_t>(std::llround(test_fraction * double(data.n)));
  std::vector<index_t> test(order.begin(), order.begin() + n_test), train(order.begin() + n_test, order.end());
  std::sort(test.begin(), test.end());
  std::sort(train.begin(), train.end());
  return {data.subset(train), data.subset(test)};
}

}  // namespace dynascope::data
