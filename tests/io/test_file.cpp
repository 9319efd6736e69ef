#include <cmath>
#include <limits>

#include "io/io_test_util.hpp"

namespace dynascope::test {
namespace {

namespace fs = std::filesystem;
using io::Tensor;

// A fresh empty directory.
std::string temp_dir(const std::string& name) {
  const std::string dir = temp_path(name);
  fs::create_directories(dir);
  return dir;
}

std::size_t entries_in(const std::string& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

void expect_io_error_naming(const std::function<void()>& f, const std::string& path) {
  try {
    f();
    ADD_FAILURE() << "expected IoError naming " << path;
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected IoError, got: " << e.what();
  }
}

TEST(AtomicWriteIo, WritesAndReplacesTheWholeFile) {
  const std::string dir = temp_dir("atomic");
  const std::string path = dir + "/out.json";
  io::write_text_atomic(path, "first, longer contents");
  EXPECT_EQ(read_bytes(path), "first, longer contents");
  const char bytes[] = {'\0', '\x01', '\xff'};
  io::write_file_atomic(path, bytes, sizeof bytes);
  EXPECT_EQ(read_bytes(path), Bytes(bytes, 3));
  io::write_text_atomic(path, "");
  EXPECT_EQ(read_bytes(path), "");
  EXPECT_EQ(entries_in(dir), 1u) << "a temporary file was left behind";
}

TEST(AtomicWriteIo, WritingIntoAMissingDirectoryThrowsIoErrorNamingThePath) {
  const std::string path = temp_path("no_such_dir") + "/out.npy";
  expect_io_error_naming([&] { io::write_text_atomic(path, "x"); }, path);
  expect_io_error_naming([&] { io::write_npy(path, tensor_of(std::vector<float>{1}, {1})); }, path);
  EXPECT_FALSE(fs::exists(path));
}

TEST(AtomicWriteIo, FailedRenameLeavesNoTemporaryFile) {
  // The target is a non-empty directory, so the final rename fails after the data was written.
  const std::string dir = temp_dir("rename_fails");
  const std::string target = dir + "/occupied";
  fs::create_directories(target + "/child");
  expect_io_error_naming([&] { io::write_text_atomic(target, "data"); }, target);
  EXPECT_EQ(entries_in(dir), 1u) << "a temporary file was left behind";
  EXPECT_TRUE(fs::is_directory(target + "/child"));
}

TEST(AtomicWriteIo, FailedWriteKeepsThePreviousContents) {
  const std::string dir = temp_dir("keep");
  const std::string path = dir + "/weights.npy";
  io::write_npy(path, tensor_of(std::vector<float>{1, 2}, {2}));
  const Bytes before = read_bytes(path);
  Tensor bad = tensor_of(std::vector<float>{1, 2}, {2});
  bad.bytes.pop_back();
  EXPECT_THROW(io::write_npy(path, bad), InvalidArgument);
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(entries_in(dir), 1u);
}

TEST(FileReadIo, MissingFileThrowsIoErrorNamingThePath) {
  const std::string path = temp_path("does_not_exist.npy");
  expect_io_error_naming([&] { io::read_npy(path); }, path);
  expect_io_error_naming([&] { io::read_safetensors(path); }, path);
  expect_io_error_naming([&] { io::read_idx(path); }, path);
  expect_io_error_naming([&] { io::read_array(path); }, path);
}

TEST(FileReadIo, ReadingADirectoryThrowsIoError) {
  const std::string dir = temp_dir("a_directory");
  expect_io_error_naming([&] { io::read_npy(dir); }, dir);
}

TEST(ReadArrayIo, DispatchesOnMagicBytes) {
  const std::string npy = temp_path("x.npy");
  io::write_npy(npy, tensor_of(std::vector<double>{1, 2, 3}, {3}));
  EXPECT_EQ(io::read_array(npy).to_vector<double>(), (std::vector<double>{1, 2, 3}));

  const Bytes idx = Bytes("\0\0\x08\x01", 4) + be_u32(2) + "\x07\x09";
  EXPECT_EQ(io::read_array(temp_file("x-idx1-ubyte", idx)).to_vector<std::uint8_t>(),
            (std::vector<std::uint8_t>{7, 9}));
}

TEST(ReadArrayIo, UnknownFormatsAreRejectedWithTheirLeadingBytes) {
  expect_format_error([](const std::string& p) { io::read_array(p); }, temp_file("x.zip", "PK\x03\x04rest"),
                      "unrecognised array format: the file starts with bytes 50 4b 03 04 72 65");
  expect_format_error([](const std::string& p) { io::read_array(p); }, temp_file("empty.npy", ""), "empty file");
  // A safetensors file is not an array file.
  expect_format_error([](const std::string& p) { io::read_array(p); },
                      temp_file("w.safetensors", le_u64(2) + "{}"), "unrecognised array format");
}

TEST(TensorIo, ToVectorConvertsLikeStaticCast) {
  const Tensor f = tensor_of(std::vector<float>{-1.75f, 0.5f, 3.99f, 255.0f}, {4});
  EXPECT_EQ(f.to_vector<std::int32_t>(), (std::vector<std::int32_t>{-1, 0, 3, 255}));
  EXPECT_EQ(f.to_vector<double>(), (std::vector<double>{-1.75, 0.5, 3.99f, 255.0}));
  EXPECT_EQ(f.to_vector<std::uint8_t>(), (std::vector<std::uint8_t>{0, 0, 3, 255}));
  const Tensor i = tensor_of(std::vector<std::int64_t>{-5, (std::int64_t{1} << 53) + 1}, {2});
  EXPECT_EQ(i.to_vector<double>(), (std::vector<double>{-5.0, 9007199254740992.0}));
  EXPECT_EQ(i.to_vector<std::int32_t>(), (std::vector<std::int32_t>{-5, 1}));  // modular, as static_cast
  const Tensor u = tensor_of(std::vector<std::uint8_t>{0, 200}, {1, 2});
  EXPECT_EQ(u.to_vector<float>(), (std::vector<float>{0.0f, 200.0f}));
  EXPECT_EQ(u.to_vector<std::int64_t>(), (std::vector<std::int64_t>{0, 200}));
}

TEST(TensorIo, ToVectorSaturatesFloatsOutsideTheIntegerRange) {
  // static_cast is undefined here; the conversion saturates and maps NaN to 0 instead.
  const Tensor d = tensor_of(std::vector<double>{1e300, -1e300, std::nan(""), 3e9}, {4});
  const auto v = d.to_vector<std::int32_t>();
  EXPECT_EQ(v, (std::vector<std::int32_t>{std::numeric_limits<std::int32_t>::max(),
                                          std::numeric_limits<std::int32_t>::min(), 0,
                                          std::numeric_limits<std::int32_t>::max()}));
  EXPECT_EQ(d.to_vector<std::uint8_t>(), (std::vector<std::uint8_t>{255, 0, 0, 255}));
  EXPECT_EQ(d.to_vector<std::int64_t>()[0], std::numeric_limits<std::int64_t>::max());
}

TEST(TensorIo, ToVectorRejectsInconsistentTensors) {
  Tensor t = tensor_of(std::vector<float>{1, 2, 3}, {3});
  t.shape = {2, 2};
  EXPECT_THROW(t.to_vector<float>(), InvalidArgument);
}

TEST(TensorIo, ToArrayMakesAHostArray) {
  const Tensor t = tensor_of(std::vector<std::int32_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Array<double> a = t.to_array<double>(Context::host());
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_EQ(a.data()[5], 6.0);
}

}  // namespace
}  // namespace dynascope::test

namespace dynascope::io {
namespace {

TEST(MappedNpyIo, CommittedMappingReadsBackAsNpy) {
  const std::string path = test::temp_path("mapped.npy");
  {
    MappedNpy m(path, DType::f64, {3, 5});
    double* d = m.data_as<double>();
    for (int i = 0; i < 15; ++i) d[i] = 0.5 * i;
    EXPECT_FALSE(std::filesystem::exists(path));  // nothing under the name before commit
    EXPECT_THROW(m.data_as<float>(), InvalidArgument);
    m.commit();
  }
  const Tensor t = read_npy(path);
  EXPECT_EQ(t.shape, (Shape{3, 5}));
  const auto v = t.to_vector<double>();
  for (int i = 0; i < 15; ++i) EXPECT_EQ(v[std::size_t(i)], 0.5 * i);
}

TEST(MappedNpyIo, AbandonedMappingLeavesNoFile) {
  const std::string path = test::temp_path("abandoned.npy");
  const auto dir = std::filesystem::path(path).parent_path();
  const auto count = [&] { return std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()); };
  const auto before = count();
  {
    MappedNpy m(path, DType::f32, {100, 100});
    m.data_as<float>()[0] = 1.0f;
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(count(), before);
  EXPECT_THROW(MappedNpy("/nonexistent-dir/x.npy", DType::f32, {2}), IoError);
}

}  // namespace
}  // namespace dynascope::io
