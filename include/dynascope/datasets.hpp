#pragma once
// Datasets for examples, tests and the demo: built-in generators (teacher-student regression,
// Gaussian mixture, 2-D spirals, modular addition) and loaders for real data (Fashion-MNIST from
// Debian's dataset-fashion-mnist, scikit-learn's 8x8 digits, .npy / IDX files). Everything is
// host float64 in memory; models convert to their compute precision. Every random choice is a
// function of the seed.
#include <cstdint>
#include <string>
#include <vector>

#include "dynascope/enum_names.hpp"
#include "dynascope/export.h"
#include "dynascope/types.hpp"

namespace dynascope::data {

enum class Task { regression, classification };
inline constexpr auto task_names =
    enum_names<Task>("task", {{Task::regression, "regression"}, {Task::classification, "classification"}});
static_assert(well_formed(task_names));

struct Dataset {
  std::string name;
  Task task = Task::regression;
  index_t n = 0;        // samples
  index_t d = 0;        // input dimension
  index_t outputs = 0;  // regression: target dimension; classification: number of classes
  std::vector<double> x;             // [n, d]
  std::vector<double> y;             // regression targets [n, outputs]
  std::vector<std::int64_t> labels;  // classification labels [n], in [0, outputs)

  // Where the samples came from, for messages that point at a file and row: the files (empty for
  // generated data), the targets as stored (e.g. "float32 [100, 3]"), and the row in the source of
  // each sample (empty: sample i is row i; subsets and splits keep track).
  std::string inputs_file, targets_file, targets_stored;
  std::vector<index_t> source_rows;

  bool targets_present() const { return !labels.empty() || !y.empty(); }
  index_t source_row(index_t i) const { return source_rows.empty() ? i : source_rows[std::size_t(i)]; }
  // The samples at `rows`, in that order.
  DYNASCOPE_API Dataset subset(const std::vector<index_t>& rows) const;
};

struct DatasetOptions {
  // 0: the dataset's default size (generators) or all of it (real data; modadd is always all p^2
  // pairs). More than real data holds, or another count than modadd's p^2, is an InvalidArgument
  // naming both counts, unless samples_at_most: then samples is a cap (a caller's default size).
  index_t samples = 0;
  bool samples_at_most = false;
  std::uint64_t seed = 0;
  double noise = -1;        // < 0: the dataset's default
  index_t dim = 0;          // input dimension of generators (0: default)
  index_t classes = 0;      // classes of the Gaussian mixture / arms of the spirals (0: default)
  index_t modulus = 0;      // p of modular addition (0: default 23)
  bool test_split = false;  // real data: load the test file instead of the training file
};

struct DatasetInfo {
  std::string name;
  std::string description;
  Task task = Task::regression;
  index_t n = 0, d = 0, outputs = 0;  // with default options
  bool available = true;
  std::string note;  // why it is unavailable, or where it comes from
};

DYNASCOPE_API std::vector<DatasetInfo> list_datasets();
// Throws InvalidArgument for an unknown name or bad options, IoError naming the Debian package
// when real data is not installed.
DYNASCOPE_API Dataset load_dataset(const std::string& name, const DatasetOptions& options = {});

// A dataset from files: inputs [N, D...] (.npy or IDX; trailing dimensions are flattened, u8
// images scaled to [0, 1] when `scale_u8`), targets [N] integer labels (classification; outputs =
// largest label + 1; a negative label is an InvalidArgument naming the file, row and value) or
// [N] / [N, O] floats (regression).
DYNASCOPE_API Dataset dataset_from_files(const std::string& inputs, const std::string& targets,
                                         bool scale_u8 = true);
// Inputs only (targets empty), e.g. for kernels on unlabelled points.
DYNASCOPE_API Dataset inputs_from_file(const std::string& inputs, bool scale_u8 = true);

struct Split {
  Dataset train, test;
};
// A seeded random split; test gets round(test_fraction * n) samples.
DYNASCOPE_API Split train_test_split(const Dataset& data, double test_fraction, std::uint64_t seed);

DYNASCOPE_API const char* to_string(Task task) noexcept;

}  // namespace dynascope::data
