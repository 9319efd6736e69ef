#pragma once
// Helpers for the file-format tests: raw files built byte by byte, and a check that reading one
// fails with a FileFormatError naming the file and the problem.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "support/test_support.hpp"

namespace dynascope::test {

using Bytes = std::string;  // raw file contents

inline Bytes le_u16(std::uint16_t v) { return {char(v & 0xff), char(v >> 8)}; }
inline Bytes le_u32(std::uint32_t v) {
  Bytes b;
  for (int i = 0; i < 4; ++i) b += char((v >> (8 * i)) & 0xff);
  return b;
}
inline Bytes le_u64(std::uint64_t v) {
  Bytes b;
  for (int i = 0; i < 8; ++i) b += char((v >> (8 * i)) & 0xff);
  return b;
}
inline Bytes be_u32(std::uint32_t v) {
  Bytes b;
  for (int i = 3; i >= 0; --i) b += char((v >> (8 * i)) & 0xff);
  return b;
}

inline void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << path;
}

inline Bytes read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Writes `bytes` to a fresh temporary file and returns its path.
inline std::string temp_file(const std::string& name, const Bytes& bytes) {
  const std::string path = temp_path(name);
  write_bytes(path, bytes);
  return path;
}

// Expects `read(path)` to throw a FileFormatError whose message names the file and contains
// `phrase`.
inline void expect_format_error(const std::function<void(const std::string&)>& read,
                                const std::string& path, const std::string& phrase) {
  try {
    read(path);
    ADD_FAILURE() << "reading " << path << " succeeded; expected an error containing '" << phrase << "'";
  } catch (const FileFormatError& e) {
    const std::string message = e.what();
    EXPECT_EQ(e.path(), path);
    EXPECT_NE(message.find(path), std::string::npos) << "message does not name the file: " << message;
    EXPECT_NE(message.find(phrase), std::string::npos)
        << "message lacks '" << phrase << "': " << message;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected FileFormatError containing '" << phrase << "', got: " << e.what();
  }
}

template <class T>
io::Tensor tensor_of(std::vector<T> values, Shape shape) {
  return io::Tensor::from(values.data(), std::move(shape));
}

}  // namespace dynascope::test
