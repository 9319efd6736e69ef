// IDX (the MNIST format): http://yann.lecun.com/exdb/mnist/
//
// Layout: 0x00 0x00, a type byte, the number of dimensions, each dimension as a big-endian u32,
// then the data in row-major order, big-endian. Files ending in .gz are the same, gzip-compressed.
#include <algorithm>
#include <limits>

#include <zlib.h>

#include "io/io_detail.hpp"

namespace dynascope::io {
namespace detail {

namespace {

// Deflate cannot expand data by more than 1032:1, so a gzip file of M bytes holds at most about
// 1032 * M bytes; a header claiming more is lying and is rejected before any work.
constexpr std::uint64_t kMaxDeflateRatio = 1032;
constexpr std::size_t kChunk = std::size_t{1} << 20;

struct IdxType {
  unsigned char code;
  const char* name;
  std::size_t item_size;  // in the file
  DType dtype;            // in memory
};
constexpr IdxType kIdxTypes[] = {
    {0x08, "u8", 1, DType::u8},   {0x09, "i8", 1, DType::i32},  {0x0B, "i16", 2, DType::i32},
    {0x0C, "i32", 4, DType::i32}, {0x0D, "f32", 4, DType::f32}, {0x0E, "f64", 8, DType::f64},
};

// The decompressed bytes of a gzip source, produced as they are asked for. Several gzip members
// in a row read as one stream, as gzip(1) does; anything else after the last one is an error.
class GzipStream {
 public:
  explicit GzipStream(const ByteSource& src) : src_(src), in_(std::min<std::uint64_t>(src.size(), kChunk)) {
    if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) throw OutOfMemory("zlib: inflateInit2 failed");
  }
  ~GzipStream() { inflateEnd(&z_); }
  GzipStream(const GzipStream&) = delete;
  GzipStream& operator=(const GzipStream&) = delete;

  // Fills up to n bytes; returns fewer only at the end of the (valid) stream.
  std::size_t read(void* dst, std::size_t n) {
    z_.next_out = static_cast<Bytef*>(dst);
    std::size_t produced = 0;
    while (produced < n && !finished_) {
      const std::size_t want = std::min<std::size_t>(n - produced, std::numeric_limits<uInt>::max());
      z_.avail_out = static_cast<uInt>(want);
      if (z_.avail_in == 0) refill();
      if (z_.avail_in == 0 && member_done_) {
        finished_ = true;
        break;
      }
      if (member_done_) {
        // Another gzip member, or garbage after the stream.
        if (*z_.next_in != 0x1f)
          src_.fail("trailing bytes after the gzip stream (at byte " +
                    std::to_string(consumed_ - z_.avail_in) + ")");
        inflateReset(&z_);
        member_done_ = false;
      }
      const int rc = inflate(&z_, Z_NO_FLUSH);
      produced += want - z_.avail_out;
      if (rc == Z_STREAM_END) {
        member_done_ = true;
      } else if (rc == Z_BUF_ERROR) {
        if (z_.avail_in == 0 && consumed_ == src_.size())
          src_.fail("truncated gzip stream: the file ends in the middle of the compressed data");
      } else if (rc == Z_MEM_ERROR) {
        throw OutOfMemory("zlib: out of memory while decompressing");
      } else if (rc != Z_OK) {
        src_.fail(std::string("corrupt gzip data: ") + (z_.msg ? z_.msg : "inflate failed"));
      }
    }
    return produced;
  }

 private:
  void refill() {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(in_.size(), src_.size() - consumed_));
    if (n == 0) return;
    src_.read(consumed_, in_.data(), n, "the gzip stream");
    consumed_ += n;
    z_.next_in = reinterpret_cast<Bytef*>(in_.data());
    z_.avail_in = static_cast<uInt>(n);
  }

  const ByteSource& src_;
  std::vector<std::byte> in_;
  z_stream z_{};
  std::uint64_t consumed_ = 0;
  bool member_done_ = false;
  bool finished_ = false;
};

struct IdxHeader {
  const IdxType* type;
  Shape shape;
  std::uint64_t payload_bytes;  // as stored in the file
  std::uint64_t header_bytes;
};

std::uint32_t big_endian_u32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Parses the header through `read_exact(dst, n, what)`, which reads the next n bytes.
template <class ReadExact>
IdxHeader parse_header(const ByteSource& src, ReadExact&& read_exact) {
  unsigned char magic[4];
  read_exact(magic, 4, "the IDX magic");
  if (magic[0] != 0 || magic[1] != 0) src.fail("not an IDX file (the first two bytes are not zero)");
  const auto type = std::find_if(std::begin(kIdxTypes), std::end(kIdxTypes),
                                 [&](const IdxType& t) { return t.code == magic[2]; });
  if (type == std::end(kIdxTypes)) {
    static constexpr char kHex[] = "0123456789abcdef";
    src.fail(std::string("unsupported IDX data type 0x") + kHex[magic[2] >> 4] + kHex[magic[2] & 0xf] +
             " (supported: 0x08 u8, 0x09 i8, 0x0b i16, 0x0c i32, 0x0d f32, 0x0e f64)");
  }
  const int ndim = magic[3];
  std::vector<unsigned char> dims(4 * static_cast<std::size_t>(ndim));
  read_exact(dims.data(), dims.size(), "the IDX dimensions");
  IdxHeader h{type, {}, 0, 4 + dims.size()};
  for (int i = 0; i < ndim; ++i) h.shape.push_back(big_endian_u32(dims.data() + 4 * i));
  const auto numel = checked_numel(h.shape);
  if (!numel || static_cast<std::uint64_t>(*numel) > std::numeric_limits<std::uint64_t>::max() / 8)
    src.fail("IDX dimensions " + shape_text(h.shape) + " have too many elements");
  h.payload_bytes = static_cast<std::uint64_t>(*numel) * type->item_size;
  return h;
}

// Converts big-endian IDX items to the in-memory little-endian dtype.
Tensor to_tensor(const IdxHeader& h, std::vector<std::byte> payload) {
  Tensor t;
  t.dtype = h.type->dtype;
  t.shape = h.shape;
  const std::size_t n = payload.size() / h.type->item_size;
  const auto* in = reinterpret_cast<const unsigned char*>(payload.data());
  switch (h.type->code) {
    case 0x08: t.bytes = std::move(payload); break;
    case 0x09:
    case 0x0B: {
      t.bytes.resize(4 * n);
      for (std::size_t i = 0; i < n; ++i) {
        const std::int32_t v = h.type->code == 0x09
                                   ? static_cast<std::int8_t>(in[i])
                                   : static_cast<std::int16_t>((in[2 * i] << 8) | in[2 * i + 1]);
        std::memcpy(t.bytes.data() + 4 * i, &v, 4);
      }
      break;
    }
    default: {
      const std::size_t item = h.type->item_size;
      for (std::size_t i = 0; i < n; ++i) {
        std::byte* p = payload.data() + i * item;
        std::reverse(p, p + item);
      }
      t.bytes = std::move(payload);
    }
  }
  return t;
}

Tensor parse_plain(const ByteSource& src) {
  std::uint64_t pos = 0;
  const IdxHeader h = parse_header(src, [&](void* dst, std::size_t n, const char* what) {
    src.read(pos, dst, n, what);
    pos += n;
  });
  const std::uint64_t available = src.size() - h.header_bytes;
  const std::string what = "IDX dimensions " + shape_text(h.shape) + " of " + h.type->name;
  if (available < h.payload_bytes)
    src.fail("truncated: " + what + " need " + std::to_string(h.payload_bytes) +
             " data bytes but the file has " + std::to_string(available));
  if (available > h.payload_bytes)
    src.fail("trailing bytes: " + std::to_string(available - h.payload_bytes) +
             " bytes after the IDX data (" + what + ")");
  return to_tensor(h, src.read_bytes(h.header_bytes, static_cast<std::size_t>(h.payload_bytes), "the IDX data"));
}

Tensor parse_gzip(const ByteSource& src) {
  GzipStream gz(src);
  std::uint64_t pos = 0;
  const IdxHeader h = parse_header(src, [&](void* dst, std::size_t n, const char* what) {
    if (gz.read(dst, n) != n)
      src.fail(std::string("truncated: the decompressed data ends at byte ") + std::to_string(pos) +
               " in " + what);
    pos += n;
  });
  const std::string what = "IDX dimensions " + shape_text(h.shape) + " of " + h.type->name;
  const std::uint64_t capacity = src.size() > std::numeric_limits<std::uint64_t>::max() / (2 * kMaxDeflateRatio)
                                     ? std::numeric_limits<std::uint64_t>::max()
                                     : kMaxDeflateRatio * src.size() + 4096;
  if (h.payload_bytes > capacity)
    src.fail("truncated: " + what + " need " + std::to_string(h.payload_bytes) +
             " data bytes, more than a gzip file of " + std::to_string(src.size()) + " bytes can hold");

  // The buffer grows with the data that actually arrives, never ahead of it by more than a chunk.
  std::vector<std::byte> payload;
  while (payload.size() < h.payload_bytes) {
    const std::size_t old = payload.size();
    const std::size_t step = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, h.payload_bytes - old));
    payload.resize(old + step);
    const std::size_t got = gz.read(payload.data() + old, step);
    if (got < step)
      src.fail("truncated: " + what + " need " + std::to_string(h.payload_bytes) +
               " data bytes but the decompressed file has " + std::to_string(old + got));
  }
  // Reading past the data also reaches the end of the stream, where zlib checks the CRC.
  std::byte extra[1];
  if (gz.read(extra, 1) != 0)
    src.fail("trailing bytes: the decompressed file continues after the " +
             std::to_string(h.payload_bytes) + " bytes of IDX data (" + what + ")");
  return to_tensor(h, std::move(payload));
}

}  // namespace

Tensor parse_idx(const ByteSource& src) {
  if (src.size() < 4) src.fail("truncated: too short for an IDX file (" + std::to_string(src.size()) + " bytes)");
  unsigned char head[2];
  src.read(0, head, 2, "the magic bytes");
  if (head[0] == 0x1f && head[1] == 0x8b) return parse_gzip(src);
  return parse_plain(src);
}

}  // namespace detail

Tensor read_idx(const std::string& path) {
  detail::FileSource src(path);
  return detail::parse_idx(src);
}

}  // namespace dynascope::io
