// Byte sources, checked arithmetic, atomic writes, Tensor conversions and format dispatch.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>
#include <type_traits>

#include "io/io_detail.hpp"

// Tensor bytes are little-endian by contract and are reinterpreted in place below.
static_assert(std::endian::native == std::endian::little, "dynascope::io assumes a little-endian host");

namespace dynascope::io {
namespace detail {

namespace {

std::string os_error(int err) { return std::system_category().message(err); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Byte sources
// ---------------------------------------------------------------------------------------------

void ByteSource::fail(const std::string& problem) const { throw FileFormatError(name_, problem); }

void ByteSource::read(std::uint64_t offset, void* dst, std::size_t n, std::string_view what) const {
  const std::uint64_t total = size();
  if (offset > total || n > total - offset)
    fail("truncated: " + std::string(what) + " needs bytes [" + std::to_string(offset) + ", " +
         std::to_string(offset + n) + ") but the file has " + std::to_string(total) + " bytes");
  auto* out = static_cast<std::byte*>(dst);
  std::size_t done = 0;
  while (done < n) {
    const std::size_t got = read_some(offset + done, out + done, n - done);
    // The file shrank after it was measured.
    if (got == 0)
      fail("truncated: the file ended at byte " + std::to_string(offset + done) + " while reading " +
           std::string(what));
    done += got;
  }
}

std::vector<std::byte> ByteSource::read_bytes(std::uint64_t offset, std::size_t n,
                                              std::string_view what) const {
  // Checked before allocating, so a lying size never turns into a large allocation.
  if (offset > size() || n > size() - offset) read(offset, nullptr, n, what);
  std::vector<std::byte> bytes(n);
  read(offset, bytes.data(), n, what);
  return bytes;
}

std::size_t MemorySource::read_some(std::uint64_t offset, void* dst, std::size_t n) const {
  if (offset >= bytes_.size()) return 0;
  const std::size_t count = std::min<std::size_t>(n, bytes_.size() - static_cast<std::size_t>(offset));
  if (count) std::memcpy(dst, bytes_.data() + offset, count);
  return count;
}

FileSource::FileSource(const std::string& path) : ByteSource(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw IoError("cannot open '" + path + "' for reading: " + os_error(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw IoError("cannot read '" + path + "': " + os_error(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw IoError("cannot read '" + path + "': " +
                  (S_ISDIR(st.st_mode) ? "it is a directory" : "not a regular file"));
  }
  size_ = static_cast<std::uint64_t>(st.st_size);
}

FileSource::~FileSource() {
  if (fd_ >= 0) ::close(fd_);
}

std::size_t FileSource::read_some(std::uint64_t offset, void* dst, std::size_t n) const {
  for (;;) {
    const ssize_t got = ::pread(fd_, dst, n, static_cast<off_t>(offset));
    if (got >= 0) return static_cast<std::size_t>(got);
    if (errno != EINTR) throw IoError("cannot read '" + name() + "': " + os_error(errno));
  }
}

// ---------------------------------------------------------------------------------------------
// Checked arithmetic, validation, messages
// ---------------------------------------------------------------------------------------------

std::optional<index_t> checked_numel(const Shape& shape) {
  index_t n = 1;
  for (index_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > std::numeric_limits<index_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

std::optional<std::uint64_t> checked_nbytes(const Shape& shape, DType dtype) {
  const auto numel = checked_numel(shape);
  const std::uint64_t item = size_of(dtype);
  if (!numel || item == 0) return std::nullopt;
  const auto n = static_cast<std::uint64_t>(*numel);
  if (n > std::numeric_limits<std::uint64_t>::max() / item) return std::nullopt;
  return n * item;
}

void validate_tensor(const Tensor& tensor, const std::string& what) {
  if (size_of(tensor.dtype) == 0) throw InvalidArgument(what + ": invalid dtype");
  const auto nbytes = checked_nbytes(tensor.shape, tensor.dtype);
  if (!nbytes)
    throw InvalidArgument(what + ": shape " + shape_text(tensor.shape) +
                          " has a negative extent or too many elements");
  if (*nbytes != tensor.bytes.size())
    throw InvalidArgument(what + ": shape " + shape_text(tensor.shape) + " of " +
                          to_string(tensor.dtype) + " needs " + std::to_string(*nbytes) +
                          " bytes, the tensor holds " + std::to_string(tensor.bytes.size()));
}

std::string shape_text(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string printable(std::string_view text, std::size_t max_chars) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Atomic writes
// ---------------------------------------------------------------------------------------------

namespace {

// Temporary files that exist right now, so that a signal handler can remove them. Fixed slots and
// no allocation: remove_temporary_files() only reads atomics and calls unlink(), both
// async-signal-safe. A path too long for a slot is simply not tracked (it is still removed on
// every ordinary exit path).
constexpr int kTempSlots = 64;
constexpr std::size_t kTempPathMax = 4096;
struct TempSlot {
  std::atomic<int> state{0};  // 0 free, 1 being filled, 2 live
  char path[kTempPathMax];
};
std::array<TempSlot, kTempSlots> g_temp_slots;

void track_temp(const std::string& path) noexcept {
  if (path.size() >= kTempPathMax) return;
  for (TempSlot& s : g_temp_slots) {
    int expected = 0;
    if (!s.state.compare_exchange_strong(expected, 1)) continue;
    std::memcpy(s.path, path.c_str(), path.size() + 1);
    s.state.store(2);
    return;
  }
}

void untrack_temp(const std::string& path) noexcept {
  for (TempSlot& s : g_temp_slots) {
    if (s.state.load() != 2 || std::strcmp(s.path, path.c_str()) != 0) continue;
    int expected = 2;
    if (s.state.compare_exchange_strong(expected, 1)) {
      s.path[0] = '\0';
      s.state.store(0);
    }
    return;
  }
}

// Removes the temporary file unless released (after a successful rename).
class TempFile {
 public:
  TempFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) { track_temp(path_); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!released_) {
      ::unlink(path_.c_str());
      untrack_temp(path_);
    }
  }
  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }
  // Closes the descriptor; returns 0 or an errno value.
  int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? 0 : errno;
  }
  // The file is no longer ours to remove (renamed into place, or handed on with keep_tracked).
  void release(bool keep_tracked = false) noexcept {
    released_ = true;
    if (!keep_tracked) untrack_temp(path_);
  }

 private:
  std::string path_;
  int fd_;
  bool released_ = false;
};

TempFile create_temp_next_to(const std::string& path) {
  namespace fs = std::filesystem;
  static std::atomic<unsigned> counter{0};
  const fs::path target(path);
  // A short hidden name keeps clear of NAME_MAX whatever the target's name is.
  const std::string stem = target.filename().string().substr(0, 64);
  for (int attempt = 0;; ++attempt) {
    const fs::path tmp = target.parent_path() /
                         ("." + stem + ".tmp" + std::to_string(::getpid()) + "_" +
                          std::to_string(counter.fetch_add(1)));
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return TempFile(tmp.string(), fd);
    if (errno != EEXIST || attempt >= 100)
      throw IoError("cannot write '" + path + "': cannot create a temporary file in its directory: " +
                    os_error(errno));
  }
}

void write_all(int fd, const std::byte* data, std::size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t put = ::write(fd, data, std::min<std::size_t>(n, std::size_t{1} << 30));
    if (put < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot write '" + path + "': " + os_error(errno));
    }
    data += put;
    n -= static_cast<std::size_t>(put);
  }
}

}  // namespace

void refuse_read_only_target(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return;  // does not exist yet
  if (S_ISDIR(st.st_mode)) throw IoError("cannot write '" + path + "': it is a directory");
  // Checked by mode bits, not access(): root may write anything, but a file its owner made
  // read-only is one the user meant to keep.
  if ((st.st_mode & (S_IWUSR | S_IWGRP | S_IWOTH)) == 0)
    throw IoError("cannot write '" + path + "': the file exists and is read-only (it is not replaced; remove it or "
                  "choose another name)");
}

void write_pieces_atomic(const std::string& path, std::span<const std::span<const std::byte>> pieces) {
  if (path.empty()) throw InvalidArgument("write_file_atomic: empty path");
  refuse_read_only_target(path);
  TempFile tmp = create_temp_next_to(path);
  for (const auto& piece : pieces) write_all(tmp.fd(), piece.data(), piece.size(), path);
  // Data reaches the disk before the rename makes it visible, so a crash never exposes a
  // partial file under the target's name.
  if (::fsync(tmp.fd()) != 0) throw IoError("cannot write '" + path + "': " + os_error(errno));
  if (const int err = tmp.close()) throw IoError("cannot write '" + path + "': " + os_error(err));
  if (::rename(tmp.path().c_str(), path.c_str()) != 0)
    throw IoError("cannot write '" + path + "': cannot rename the temporary file into place: " +
                  os_error(errno));
  tmp.release();
}

// Reserves a temporary name next to `path` (the file is created by create_temp_next_to and kept).
// It stays tracked for remove_temporary_files() until the caller calls forget_temp().
std::string reserve_temp_next_to(const std::string& path) {
  refuse_read_only_target(path);
  TempFile tmp = create_temp_next_to(path);
  if (tmp.close() != 0) throw IoError("cannot write '" + path + "': " + os_error(errno));
  tmp.release(/*keep_tracked=*/true);
  return tmp.path();
}

void forget_temp(const std::string& temp_path) noexcept { untrack_temp(temp_path); }

void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty()) throw IoError("empty output path");
  refuse_read_only_target(path);
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    const auto st = fs::status(parent, ec);
    if (!fs::exists(st))
      throw IoError("cannot write '" + path + "': the folder '" + parent.string() + "' does not exist");
    if (!fs::is_directory(st))
      throw IoError("cannot write '" + path + "': '" + parent.string() + "' is not a folder");
  }
  // The temporary file a write would create proves the folder takes new files.
  TempFile probe = create_temp_next_to(path);
}

// ---------------------------------------------------------------------------------------------
// Dispatch by magic bytes
// ---------------------------------------------------------------------------------------------

Tensor parse_array(const ByteSource& src) {
  if (src.size() == 0) src.fail("empty file (expected a .npy or IDX array)");
  unsigned char head[6] = {};
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(src.size(), sizeof head));
  src.read(0, head, n, "the magic bytes");
  if (n == 6 && std::memcmp(head, "\x93NUMPY", 6) == 0) return parse_npy(src);
  if (n >= 2 && ((head[0] == 0x1f && head[1] == 0x8b) || (head[0] == 0 && head[1] == 0)))
    return parse_idx(src);
  std::string hex;
  for (std::size_t i = 0; i < n; ++i) {
    static constexpr char kHex[] = "0123456789abcdef";
    if (i) hex += ' ';
    hex += kHex[head[i] >> 4];
    hex += kHex[head[i] & 0xf];
  }
  src.fail("unrecognised array format: the file starts with bytes " + hex +
           " (expected .npy '\\x93NUMPY', IDX '00 00' or gzip '1f 8b')");
}

}  // namespace detail

MappedNpy::MappedNpy(const std::string& path, DType dtype, Shape shape) : path_(path), dtype_(dtype) {
  if (path.empty()) throw InvalidArgument("MappedNpy: empty path");
  const auto nbytes = detail::checked_nbytes(shape, dtype);
  if (!nbytes) throw InvalidArgument("MappedNpy: invalid shape " + detail::shape_text(shape));
  const std::string header = detail::npy_header_for(dtype, shape);
  tmp_ = detail::reserve_temp_next_to(path);
  const int fd = ::open(tmp_.c_str(), O_RDWR);
  auto fail = [&](const std::string& what) {
    const std::string msg = "cannot write '" + path + "': " + what + ": " + detail::os_error(errno);
    if (fd >= 0) ::close(fd);
    ::unlink(tmp_.c_str());
    detail::forget_temp(tmp_);
    throw IoError(msg);
  };
  if (fd < 0) fail("cannot open the temporary file");
  map_bytes_ = header.size() + static_cast<std::size_t>(*nbytes);
  if (::ftruncate(fd, static_cast<off_t>(map_bytes_)) != 0) fail("cannot size the file");
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail("cannot map the file");
  }
  ::close(fd);
  std::memcpy(map_, header.data(), header.size());
  data_ = static_cast<char*>(map_) + header.size();
}

MappedNpy::~MappedNpy() {
  if (map_) ::munmap(map_, map_bytes_);
  if (!committed_) {
    ::unlink(tmp_.c_str());
    detail::forget_temp(tmp_);
  }
}

void MappedNpy::commit() {
  if (committed_) return;
  if (::msync(map_, map_bytes_, MS_SYNC) != 0) throw IoError("cannot write '" + path_ + "': msync: " + detail::os_error(errno));
  ::munmap(map_, map_bytes_);
  map_ = nullptr;
  data_ = nullptr;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw IoError("cannot write '" + path_ + "': cannot rename the temporary file into place: " + detail::os_error(errno));
  detail::forget_temp(tmp_);
  committed_ = true;
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

Tensor read_array(const std::string& path) {
  detail::FileSource src(path);
  return detail::parse_array(src);
}

void write_file_atomic(const std::string& path, const void* data, std::size_t bytes) {
  if (data == nullptr && bytes != 0) throw InvalidArgument("write_file_atomic: null data");
  const std::span<const std::byte> piece(static_cast<const std::byte*>(data), bytes);
  detail::write_pieces_atomic(path, {&piece, 1});
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::span<const std::byte> piece = detail::as_bytes(text);
  detail::write_pieces_atomic(path, {&piece, 1});
}

void check_writable(const std::string& path) { detail::check_writable(path); }

void remove_temporary_files() noexcept {
  for (auto& s : detail::g_temp_slots)
    if (s.state.load() == 2) ::unlink(s.path);
}

// ---------------------------------------------------------------------------------------------
// Tensor conversions
// ---------------------------------------------------------------------------------------------

namespace {

// static_cast where it is defined; a floating value outside an integer type's range (where
// static_cast is undefined) saturates, and NaN becomes 0.
template <class To, class From>
To convert_value(From v) {
  if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    if (std::isnan(v)) return To{0};
    // Both bounds are powers of two, exact in float and double.
    constexpr From lo = static_cast<From>(std::numeric_limits<To>::min());
    constexpr From hi = static_cast<From>(std::numeric_limits<To>::max() / 2 + 1) * From{2};
    if (v <= lo) return std::numeric_limits<To>::min();
    if (v >= hi) return std::numeric_limits<To>::max();
    return static_cast<To>(v);
  } else {
    return static_cast<To>(v);
  }
}

template <class To, class From>
void convert_all(const std::vector<std::byte>& bytes, std::vector<To>& out) {
  const std::size_t n = bytes.size() / sizeof(From);
  out.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    From v;
    std::memcpy(&v, bytes.data() + i * sizeof(From), sizeof(From));
    out[i] = convert_value<To>(v);
  }
}

}  // namespace

template <class T>
std::vector<T> Tensor::to_vector() const {
  detail::validate_tensor(*this, "io::Tensor::to_vector");
  std::vector<T> out;
  switch (dtype) {
    case DType::f32: convert_all<T, float>(bytes, out); break;
    case DType::f64: convert_all<T, double>(bytes, out); break;
    case DType::i32: convert_all<T, std::int32_t>(bytes, out); break;
    case DType::i64: convert_all<T, std::int64_t>(bytes, out); break;
    case DType::u8: convert_all<T, std::uint8_t>(bytes, out); break;
  }
  return out;
}

template DYNASCOPE_API std::vector<float> Tensor::to_vector<float>() const;
template DYNASCOPE_API std::vector<double> Tensor::to_vector<double>() const;
template DYNASCOPE_API std::vector<std::int32_t> Tensor::to_vector<std::int32_t>() const;
template DYNASCOPE_API std::vector<std::int64_t> Tensor::to_vector<std::int64_t>() const;
template DYNASCOPE_API std::vector<std::uint8_t> Tensor::to_vector<std::uint8_t>() const;

}  // namespace dynascope::io
