// Datasets: sample counts (exact, or a cap), label checks that name the file, row and value, and
// the source rows that subsets and splits keep so that later messages can point into the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "dynascope/datasets.hpp"
#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using test::expect_error;

template <class T>
std::string npy(const std::string& name, std::vector<T> values, Shape shape) {
  const std::string path = test::temp_path(name);
  io::write_npy(path, io::Tensor::from(values.data(), std::move(shape)));
  return path;
}

TEST(Datasets, NegativeLabelsNameTheFileRowAndValue) {
  const std::string x = npy("x.npy", std::vector<double>(8, 0.5), {4, 2});
  const std::string y = npy("y.npy", std::vector<std::int64_t>{0, 1, -3, 1}, {4});
  expect_error<InvalidArgument>([&] { data::dataset_from_files(x, y); }, {y, "class label -3 at row 2 is negative"});
  const std::string y2 = npy("y2.npy", std::vector<std::int32_t>{0, 1, 1, 0, 1, 0, 1, 0}, {4, 2});
  expect_error<ShapeMismatch>([&] { data::dataset_from_files(x, y2); }, {y2, "must have shape [N]", "int32 [4, 2]"});
}

TEST(Datasets, FilesAndSourceRowsSurviveSubsetsAndSplits) {
  std::vector<double> xs(20);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = double(i);
  const std::string x = npy("x.npy", xs, {10, 2});
  const std::string y = npy("y.npy", std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, {10});
  const data::Dataset d = data::dataset_from_files(x, y);
  EXPECT_EQ(d.inputs_file, x);
  EXPECT_EQ(d.targets_file, y);
  EXPECT_EQ(d.targets_stored, "int64 [10]");
  EXPECT_EQ(d.source_row(7), 7);
  const data::Dataset s = d.subset({9, 3, 5});
  EXPECT_EQ(s.source_rows, (std::vector<index_t>{9, 3, 5}));
  EXPECT_EQ(s.targets_file, y);
  const data::Dataset ss = s.subset({2, 0});
  EXPECT_EQ(ss.source_rows, (std::vector<index_t>{5, 9}));
  // In a split, every sample's source row still holds its label (labels here equal rows).
  const data::Split split = data::train_test_split(d, 0.3, 4);
  EXPECT_EQ(split.train.n + split.test.n, 10);
  for (const data::Dataset* part : {&split.train, &split.test})
    for (index_t i = 0; i < part->n; ++i) {
      EXPECT_EQ(part->labels[std::size_t(i)], part->source_row(i));
      EXPECT_EQ(part->x[std::size_t(2 * i)], double(2 * part->source_row(i)));
    }
}

TEST(Datasets, SampleCountsAreExactUnlessACap) {
  // Generators make any count.
  data::DatasetOptions o;
  o.samples = 3000;
  EXPECT_EQ(data::load_dataset("spirals", o).n, 3000);
  o.samples = 0;
  EXPECT_EQ(data::load_dataset("spirals", o).n, 512);  // its default size
  // modadd is all p^2 pairs: another count is refused naming both, a cap takes all.
  o.samples = 600;
  expect_error<InvalidArgument>([&] { data::load_dataset("modadd", o); }, {"exactly p^2 = 529", "600 were asked for"});
  o.samples = 100;
  expect_error<InvalidArgument>([&] { data::load_dataset("modadd", o); }, {"529", "100 were asked for"});
  o.samples_at_most = true;
  EXPECT_EQ(data::load_dataset("modadd", o).n, 529);
}

TEST(Datasets, RealDataRefusesMoreSamplesThanItHolds) {
  if (!std::filesystem::exists("/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"))
    GTEST_SKIP() << "scikit-learn's digits are not installed (python3-sklearn)";
  data::DatasetOptions o;
  EXPECT_EQ(data::load_dataset("digits", o).n, 1797);
  o.samples = 100;
  EXPECT_EQ(data::load_dataset("digits", o).n, 100);
  o.samples = 5000;
  // Before: silently 1797.
  expect_error<InvalidArgument>([&] { data::load_dataset("digits", o); },
                                {"dataset 'digits' holds 1797 samples, 5000 were asked for", "0 takes all"});
  o.samples_at_most = true;
  EXPECT_EQ(data::load_dataset("digits", o).n, 1797);
}

}  // namespace
}  // namespace dynascope
