// Output files: writability checked before work, read-only targets kept, and the temporary files
// of writes in progress removable from a signal handler.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "dynascope/error.hpp"
#include "dynascope/io.hpp"

namespace dynascope {
namespace {

namespace fs = std::filesystem;

class OutputFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dynascope_output_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(dir_, ec)) fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  std::size_t entries() const {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++n;
    return n;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(OutputFiles, CheckWritableAcceptsNewAndWritableFilesAndLeavesNothing) {
  EXPECT_NO_THROW(io::check_writable(path("new.json")));
  io::write_text_atomic(path("old.json"), "{}");
  EXPECT_NO_THROW(io::check_writable(path("old.json")));
  EXPECT_EQ(entries(), 1u);  // the probe file is gone
}

TEST_F(OutputFiles, CheckWritableNamesAMissingFolder) {
  try {
    io::check_writable(path("missing/out.json"));
    FAIL() << "expected IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

TEST_F(OutputFiles, CheckWritableRefusesAFolderAndAFileAsFolder) {
  fs::create_directories(dir_ / "sub");
  EXPECT_THROW(io::check_writable(path("sub")), IoError);
  io::write_text_atomic(path("plain"), "x");
  EXPECT_THROW(io::check_writable(path("plain/out.json")), IoError);
}

TEST_F(OutputFiles, ReadOnlyTargetIsNeverReplaced) {
  io::write_text_atomic(path("keep.json"), "original");
  fs::permissions(path("keep.json"), fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  EXPECT_THROW(io::check_writable(path("keep.json")), IoError);
  EXPECT_THROW(io::write_text_atomic(path("keep.json"), "replaced"), IoError);
  EXPECT_THROW(io::MappedNpy(path("keep.json"), DType::f32, {2, 2}), IoError);
  std::ifstream f(path("keep.json"));
  std::string text;
  std::getline(f, text);
  EXPECT_EQ(text, "original");
  EXPECT_EQ(entries(), 1u);
}

TEST_F(OutputFiles, RemoveTemporaryFilesDeletesAnUncommittedMap) {
  auto mapped = std::make_unique<io::MappedNpy>(path("K.npy"), DType::f64, Shape{64, 64});
  EXPECT_EQ(entries(), 1u);  // the hidden temporary file
  io::remove_temporary_files();
  EXPECT_EQ(entries(), 0u);
  mapped.reset();  // unlinking again is harmless
  EXPECT_EQ(entries(), 0u);
}

TEST_F(OutputFiles, CommittedFilesAreNoLongerTracked) {
  {
    io::MappedNpy mapped(path("K.npy"), DType::f32, Shape{3, 3});
    mapped.data_as<float>()[0] = 1.0f;
    mapped.commit();
  }
  io::write_text_atomic(path("a.json"), "{}");
  io::remove_temporary_files();
  EXPECT_TRUE(fs::exists(path("K.npy")));
  EXPECT_TRUE(fs::exists(path("a.json")));
  EXPECT_EQ(io::read_npy(path("K.npy")).to_vector<float>()[0], 1.0f);
}

}  // namespace
}  // namespace dynascope
