#pragma once
// Internals shared by the file-format readers and writers. Every parser reads through a
// ByteSource, so the same code parses a file (without reading it twice into memory) and a memory
// buffer (the fuzzers, and the writers' round-trip checks).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dynascope/io.hpp"

namespace dynascope::io::detail {

// Bytes addressed by offset, with a name for messages (the file's path).
class ByteSource {
 public:
  explicit ByteSource(std::string name) : name_(std::move(name)) {}
  virtual ~ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  const std::string& name() const noexcept { return name_; }
  virtual std::uint64_t size() const noexcept = 0;

  // Reads exactly `n` bytes at `offset`; FileFormatError ("truncated") when the source ends
  // first, `what` saying which part of the file was being read.
  void read(std::uint64_t offset, void* dst, std::size_t n, std::string_view what) const;
  // Like read, but returns the bytes.
  std::vector<std::byte> read_bytes(std::uint64_t offset, std::size_t n, std::string_view what) const;

  // Throws FileFormatError(name(), problem).
  [[noreturn]] void fail(const std::string& problem) const;

 protected:
  // Reads up to n bytes at offset (offset + n <= size()); returns how many were read, 0 at the
  // end. Throws IoError when the operating system refuses.
  virtual std::size_t read_some(std::uint64_t offset, void* dst, std::size_t n) const = 0;

 private:
  std::string name_;
};

// A caller-owned memory buffer (must outlive the source).
class MemorySource final : public ByteSource {
 public:
  MemorySource(std::span<const std::byte> bytes, std::string name)
      : ByteSource(std::move(name)), bytes_(bytes) {}
  std::uint64_t size() const noexcept override { return bytes_.size(); }

 protected:
  std::size_t read_some(std::uint64_t offset, void* dst, std::size_t n) const override;

 private:
  std::span<const std::byte> bytes_;
};

// A regular file opened for reading; IoError naming the path when it cannot be opened.
class FileSource final : public ByteSource {
 public:
  explicit FileSource(const std::string& path);
  ~FileSource() override;
  std::uint64_t size() const noexcept override { return size_; }

 protected:
  std::size_t read_some(std::uint64_t offset, void* dst, std::size_t n) const override;

 private:
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// ---- parsers over a source (the public readers open a FileSource and call these) ----
Tensor parse_npy(const ByteSource& src);
Safetensors parse_safetensors(const ByteSource& src);
Tensor parse_idx(const ByteSource& src);  // plain or gzip-compressed
Tensor parse_array(const ByteSource& src);

// Exact widening of IEEE half (binary16) and bfloat16 bit patterns to float: every value,
// subnormals, signed zeros, infinities and NaN (payload kept) included.
float f16_to_f32(std::uint16_t bits) noexcept;
float bf16_to_f32(std::uint16_t bits) noexcept;

// ---- encoders used by the writers (and by the fuzzers' round trips) ----
// The complete .npy header (magic, version, length, dict, padding); the data follows it.
std::string npy_header(const Tensor& tensor);
// The same header from the dtype and shape alone (memory-mapped output).
std::string npy_header_for(DType dtype, const Shape& shape);
// The complete safetensors prefix (8-byte length + padded JSON); the tensors' bytes follow it
// in the order of file.tensors.
std::string safetensors_header(const Safetensors& file);

// ---- checked arithmetic and validation ----
// Product of the extents, or nullopt when an extent is negative or the product overflows.
std::optional<index_t> checked_numel(const Shape& shape);
// numel * size_of(dtype) in bytes, or nullopt on a negative extent or overflow.
std::optional<std::uint64_t> checked_nbytes(const Shape& shape, DType dtype);
// Throws InvalidArgument (naming `what`) unless the tensor's shape, dtype and byte count agree.
void validate_tensor(const Tensor& tensor, const std::string& what);

// "[3, 4]", as shape_string writes it (kept here so the parsers need no other part of the library).
std::string shape_text(const Shape& shape);
// Text from a file made safe for a message: non-printable bytes as \xNN, long text shortened.
std::string printable(std::string_view text, std::size_t max_chars = 64);

// Writes the pieces, in order, to a temporary file next to `path` and renames it into place.
void write_pieces_atomic(const std::string& path, std::span<const std::span<const std::byte>> pieces);
std::string reserve_temp_next_to(const std::string& path);
void forget_temp(const std::string& temp_path) noexcept;
void check_writable(const std::string& path);

inline std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace dynascope::io::detail
