#include <zlib.h>

#include <algorithm>
#include <cmath>

#include "io/io_test_util.hpp"

namespace dynascope::test {
namespace {

using io::read_array;
using io::read_idx;
using io::Tensor;

const auto read = [](const std::string& path) { read_idx(path); };

Bytes idx_header(unsigned char type, const std::vector<std::uint32_t>& dims) {
  Bytes b{'\0', '\0', char(type), char(dims.size())};
  for (auto d : dims) b += be_u32(d);
  return b;
}

// One gzip member holding `data`.
Bytes gzip(const Bytes& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// u8 [2, 3, 4] with values 0..23.
Bytes u8_idx() {
  Bytes b = idx_header(0x08, {2, 3, 4});
  for (int i = 0; i < 24; ++i) b += char(i);
  return b;
}

TEST(IdxIo, U8FileReadsAsU8InRowMajorOrder) {
  const Tensor t = read_idx(temp_file("u8.idx", u8_idx()));
  EXPECT_EQ(t.dtype, DType::u8);
  EXPECT_EQ(t.shape, (Shape{2, 3, 4}));
  const auto v = t.to_vector<std::uint8_t>();
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], i);
}

TEST(IdxIo, BigEndianItemsConvertToHostValues) {
  {
    const Tensor t = read_idx(temp_file("i8.idx", idx_header(0x09, {3}) + "\xff\x7f\x80"));
    EXPECT_EQ(t.dtype, DType::i32);  // widened
    EXPECT_EQ(t.to_vector<std::int32_t>(), (std::vector<std::int32_t>{-1, 127, -128}));
  }
  {
    const Tensor t = read_idx(temp_file("i16.idx", idx_header(0x0B, {2}) + Bytes("\xff\xfe\x01\x02", 4)));
    EXPECT_EQ(t.dtype, DType::i32);
    EXPECT_EQ(t.to_vector<std::int32_t>(), (std::vector<std::int32_t>{-2, 258}));
  }
  {
    const Tensor t = read_idx(temp_file("i32.idx", idx_header(0x0C, {2}) + be_u32(0xfffffffdu) + be_u32(70000)));
    EXPECT_EQ(t.dtype, DType::i32);
    EXPECT_EQ(t.to_vector<std::int32_t>(), (std::vector<std::int32_t>{-3, 70000}));
  }
  {
    // 1.5f = 0x3fc00000, -2.0f = 0xc0000000
    const Tensor t = read_idx(temp_file("f32.idx", idx_header(0x0D, {1, 2}) + be_u32(0x3fc00000) + be_u32(0xc0000000)));
    EXPECT_EQ(t.dtype, DType::f32);
    EXPECT_EQ(t.shape, (Shape{1, 2}));
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1.5f, -2.0f}));
  }
  {
    // 0.1 = 0x3fb999999999999a
    const Tensor t = read_idx(temp_file("f64.idx", idx_header(0x0E, {1}) + be_u32(0x3fb99999) + be_u32(0x9999999a)));
    EXPECT_EQ(t.dtype, DType::f64);
    EXPECT_EQ(t.to_vector<double>(), (std::vector<double>{0.1}));
  }
}

TEST(IdxIo, GzipFileReadsLikeThePlainFile) {
  const std::string path = temp_file("u8.idx.gz", gzip(u8_idx()));
  const Tensor plain = read_idx(temp_file("u8.idx", u8_idx()));
  const Tensor t = read_idx(path);
  EXPECT_EQ(t.dtype, plain.dtype);
  EXPECT_EQ(t.shape, plain.shape);
  EXPECT_EQ(t.bytes, plain.bytes);
}

TEST(IdxIo, GzipFileWrittenByGzwriteReads) {
  const std::string path = temp_path("gzwrite-idx1-ubyte.gz");
  const Bytes data = idx_header(0x08, {5}) + "\x01\x02\x03\x04\x05";
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, data.data(), static_cast<unsigned>(data.size())), static_cast<int>(data.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
  EXPECT_EQ(read_idx(path).to_vector<std::uint8_t>(), (std::vector<std::uint8_t>{1, 2, 3, 4, 5}));
}

TEST(IdxIo, ConcatenatedGzipMembersReadAsOneStream) {
  const Bytes whole = u8_idx();
  const Tensor t = read_idx(temp_file("members.gz", gzip(whole.substr(0, 10)) + gzip(whole.substr(10))));
  EXPECT_EQ(t.shape, (Shape{2, 3, 4}));
  EXPECT_EQ(t.to_vector<std::uint8_t>()[23], 23);
}

TEST(IdxIo, LargeGzipPayloadIsReadInFull) {
  // Several decompression chunks of highly compressible data.
  Bytes b = idx_header(0x08, {3000, 1000});
  for (int i = 0; i < 3000 * 1000; ++i) b += char(i / 1000 % 251);
  const Tensor t = read_idx(temp_file("large.gz", gzip(b)));
  const auto v = t.to_vector<std::uint8_t>();
  ASSERT_EQ(v.size(), 3000000u);
  EXPECT_EQ(v[2999999], 2999 % 251);
}

TEST(IdxIo, FashionMnistFilesHaveTheirDocumentedShapes) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  if (!std::filesystem::exists(dir + "train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)";
  const Tensor images = read_idx(dir + "train-images-idx3-ubyte.gz");
  EXPECT_EQ(images.dtype, DType::u8);
  EXPECT_EQ(images.shape, (Shape{60000, 28, 28}));
  const Tensor labels = read_array(dir + "train-labels-idx1-ubyte.gz");
  EXPECT_EQ(labels.dtype, DType::u8);
  EXPECT_EQ(labels.shape, (Shape{60000}));
  const auto l = labels.to_vector<std::uint8_t>();
  EXPECT_EQ(*std::max_element(l.begin(), l.end()), 9);
  // Fashion-MNIST is balanced: 6000 of each class.
  EXPECT_EQ(std::count(l.begin(), l.end(), 3), 6000);
  const Tensor test_images = read_idx(dir + "t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(test_images.shape, (Shape{10000, 28, 28}));
}

// ---- malformed files ----

TEST(IdxIo, TruncatedPayloadIsRejected) {
  const Bytes b = u8_idx();
  expect_format_error(read, temp_file("short.idx", b.substr(0, b.size() - 1)),
                      "truncated: IDX dimensions [2, 3, 4] of u8 need 24 data bytes but the file has 23");
  expect_format_error(read, temp_file("short.gz", gzip(b.substr(0, b.size() - 1))),
                      "truncated: IDX dimensions [2, 3, 4] of u8 need 24 data bytes but the decompressed file has 23");
}

TEST(IdxIo, TruncatedDimensionsAreRejected) {
  const Bytes b = idx_header(0x08, {2, 3, 4}).substr(0, 10);
  expect_format_error(read, temp_file("dims.idx", b), "truncated: the IDX dimensions");
  expect_format_error(read, temp_file("dims.gz", gzip(b)), "truncated: the decompressed data ends at byte 4 in the IDX dimensions");
  expect_format_error(read, temp_file("tiny.idx", Bytes("\0\0", 2)), "truncated: too short for an IDX file");
}

TEST(IdxIo, TrailingBytesAfterThePayloadAreRejected) {
  expect_format_error(read, temp_file("long.idx", u8_idx() + "x"), "trailing bytes: 1 bytes after the IDX data");
  expect_format_error(read, temp_file("long.gz", gzip(u8_idx() + "x")),
                      "trailing bytes: the decompressed file continues after the 24 bytes of IDX data");
}

TEST(IdxIo, GarbageAfterTheGzipStreamIsRejected) {
  expect_format_error(read, temp_file("garbage.gz", gzip(u8_idx()) + "junk"), "trailing bytes after the gzip stream");
}

TEST(IdxIo, TruncatedGzipStreamIsRejected) {
  const Bytes z = gzip(u8_idx());
  expect_format_error(read, temp_file("cut.gz", z.substr(0, z.size() - 6)), "truncated gzip stream");
}

TEST(IdxIo, CorruptGzipDataIsRejected) {
  Bytes z = gzip(u8_idx());
  z[z.size() - 6] = char(z[z.size() - 6] ^ 0x55);  // CRC
  expect_format_error(read, temp_file("crc.gz", z), "corrupt gzip data: incorrect data check");
  Bytes header = gzip(u8_idx());
  header[2] = 9;  // compression method
  expect_format_error(read, temp_file("method.gz", header), "corrupt gzip data");
}

TEST(IdxIo, UnsupportedTypeIsRejectedByCode) {
  expect_format_error(read, temp_file("type.idx", idx_header(0x0A, {1}) + "x"), "unsupported IDX data type 0x0a");
}

TEST(IdxIo, NonZeroMagicIsRejected) {
  expect_format_error(read, temp_file("magic.idx", Bytes("\x01\x00\x08\x01").append(be_u32(0))), "not an IDX file");
}

TEST(IdxIo, DimensionProductOverflowIsRejected) {
  const Bytes b = idx_header(0x0E, {0xffffffffu, 0xffffffffu, 0xffffffffu});
  expect_format_error(read, temp_file("overflow.idx", b),
                      "IDX dimensions [4294967295, 4294967295, 4294967295] have too many elements");
  expect_format_error(read, temp_file("overflow.gz", gzip(b)), "have too many elements");
}

TEST(IdxIo, DimensionsLargerThanTheFileAreRejectedBeforeAllocating) {
  const Bytes b = idx_header(0x0E, {1u << 30, 1u << 30});  // 8 EiB of doubles
  expect_format_error(read, temp_file("huge.idx", b), "truncated: IDX dimensions [1073741824, 1073741824] of f64 need");
  expect_format_error(read, temp_file("huge.gz", gzip(b)), "more than a gzip file of");
}

}  // namespace
}  // namespace dynascope::test
