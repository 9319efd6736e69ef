#include <numeric>

#include "io/io_test_util.hpp"

namespace dynascope::test {
namespace {

using io::read_npy;
using io::Tensor;
using io::write_npy;

const auto read = [](const std::string& path) { read_npy(path); };

// A .npy file with the given header dict (padded like numpy) and raw data.
Bytes npy_file(const std::string& dict, const Bytes& data, int major = 1) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64) header += ' ';
  header += '\n';
  Bytes b = std::string("\x93NUMPY", 6) + char(major) + '\0';
  b += major == 1 ? le_u16(static_cast<std::uint16_t>(header.size()))
                  : le_u32(static_cast<std::uint32_t>(header.size()));
  return b + header + data;
}

Bytes f32_data(std::initializer_list<float> values) {
  Bytes b;
  for (float v : values) b.append(reinterpret_cast<const char*>(&v), 4);
  return b;
}

template <class T>
void expect_round_trip(const std::vector<T>& values, const Shape& shape) {
  const Tensor t = tensor_of(values, shape);
  const std::string path = temp_path("round_trip.npy");
  write_npy(path, t);
  const Tensor back = read_npy(path);
  EXPECT_EQ(back.dtype, dtype_v<T>);
  EXPECT_EQ(back.shape, shape);
  EXPECT_EQ(back.bytes, t.bytes);
  EXPECT_EQ(back.to_vector<T>(), values);
}

template <class T>
std::vector<T> iota_values(std::size_t n, T start) {
  std::vector<T> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(NpyIo, EveryDtypeRoundTripsIn3d) {
  const Shape shape{2, 3, 4};
  expect_round_trip(iota_values<float>(24, -3.5f), shape);
  expect_round_trip(iota_values<double>(24, -1e300), shape);
  expect_round_trip(iota_values<std::int32_t>(24, -2147483647), shape);
  expect_round_trip(iota_values<std::int64_t>(24, std::int64_t{1} << 62), shape);
  expect_round_trip(iota_values<std::uint8_t>(24, 200), shape);
}

TEST(NpyIo, ZeroDimensionalArrayRoundTrips) {
  expect_round_trip(std::vector<double>{42.5}, Shape{});
}

TEST(NpyIo, OneDimensionalArrayRoundTrips) {
  expect_round_trip(iota_values<std::int64_t>(7, -3), Shape{7});
}

TEST(NpyIo, EmptyArrayRoundTrips) {
  expect_round_trip(std::vector<float>{}, Shape{0, 5});
  expect_round_trip(std::vector<std::uint8_t>{}, Shape{0});
}

TEST(NpyIo, WrittenHeaderMatchesNumpy) {
  const std::string path = temp_path("header.npy");
  write_npy(path, tensor_of(std::vector<float>{1, 2, 3}, {3}));
  const Bytes b = read_bytes(path);
  ASSERT_EQ(b.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const std::size_t header_len = static_cast<unsigned char>(b[8]) | static_cast<unsigned char>(b[9]) << 8;
  EXPECT_EQ((10 + header_len) % 64, 0u) << "data is not 64-byte aligned";
  EXPECT_EQ(b.substr(10, 60), "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }   ");
  EXPECT_EQ(b[10 + header_len - 1], '\n');
  EXPECT_EQ(b.size(), 10 + header_len + 12);
}

TEST(NpyIo, ScalarHeaderHasEmptyShapeTuple) {
  const std::string path = temp_path("scalar.npy");
  write_npy(path, tensor_of(std::vector<std::int32_t>{7}, {}));
  EXPECT_NE(read_bytes(path).find("'shape': (), }"), std::string::npos);
}

TEST(NpyIo, HeaderTooLongForVersion1UsesVersion2) {
  const Shape shape(25000, 1);  // "1, " per extent: over 65535 header bytes
  const std::string path = temp_path("many_dims.npy");
  write_npy(path, tensor_of(std::vector<std::uint8_t>{9}, shape));
  const Bytes b = read_bytes(path);
  EXPECT_EQ(b[6], '\x02');
  const Tensor back = read_npy(path);
  EXPECT_EQ(back.shape, shape);
  EXPECT_EQ(back.to_vector<std::uint8_t>(), std::vector<std::uint8_t>{9});
}

TEST(NpyIo, HeaderSpellingVariantsAreAccepted) {
  const Bytes data = f32_data({1, 2, 3, 4, 5, 6});
  const std::string dicts[] = {
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
      "{'descr':'<f4','fortran_order':False,'shape':(2,3)}",
      "{ \"shape\" : ( 2 , 3 , ) ,\n \"descr\" : \"<f4\" , \"fortran_order\" : False }",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",  // Python 2
  };
  for (const auto& dict : dicts) {
    const Tensor t = read_npy(temp_file("variant.npy", npy_file(dict, data)));
    EXPECT_EQ(t.shape, (Shape{2, 3})) << dict;
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 2, 3, 4, 5, 6})) << dict;
  }
}

TEST(NpyIo, Versions2And3AreRead) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  for (int major : {2, 3}) {
    const Tensor t = read_npy(temp_file("v.npy", npy_file(dict, f32_data({1.5f, -2}), major)));
    EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1.5f, -2})) << "version " << major;
  }
}

TEST(NpyIo, LittleEndianU1AliasReadsAsUint8) {
  const Tensor t = read_npy(temp_file(
      "u1.npy", npy_file("{'descr': '<u1', 'fortran_order': False, 'shape': (3,), }", "\x01\x02\xff")));
  EXPECT_EQ(t.dtype, DType::u8);
  EXPECT_EQ(t.to_vector<std::uint8_t>(), (std::vector<std::uint8_t>{1, 2, 255}));
}

// ---- malformed files ----

const std::string kDict23 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

TEST(NpyIo, TruncatedDataIsRejected) {
  const auto path = temp_file("short.npy", npy_file(kDict23, f32_data({1, 2, 3, 4, 5})));
  expect_format_error(read, path, "truncated: shape [2, 3] of <f4 needs 24 data bytes but the file has 20");
}

TEST(NpyIo, TrailingBytesAfterDataAreRejected) {
  const auto path = temp_file("long.npy", npy_file(kDict23, f32_data({1, 2, 3, 4, 5, 6, 7})));
  expect_format_error(read, path, "trailing bytes: 4 bytes after the 24 bytes of array data");
}

TEST(NpyIo, TruncatedHeaderIsRejected) {
  const Bytes whole = npy_file(kDict23, f32_data({1, 2, 3, 4, 5, 6}));
  expect_format_error(read, temp_file("cut.npy", whole.substr(0, 40)), "truncated: the .npy header needs");
  expect_format_error(read, temp_file("cut.npy", whole.substr(0, 9)), "truncated: the .npy header length");
  expect_format_error(read, temp_file("cut.npy", whole.substr(0, 3)), "truncated: the .npy magic");
}

TEST(NpyIo, HeaderLongerThanOneMebibyteIsRejected) {
  const Bytes b = std::string("\x93NUMPY\x02\x00", 8) + le_u32(0x7fffffff) + "{";
  expect_format_error(read, temp_file("huge_header.npy", b), "header length 2147483647 exceeds the 1 MiB limit");
}

TEST(NpyIo, BadMagicIsRejected) {
  Bytes b = npy_file(kDict23, f32_data({1, 2, 3, 4, 5, 6}));
  b[1] = 'M';
  expect_format_error(read, temp_file("magic.npy", b), "not a .npy file");
}

TEST(NpyIo, UnsupportedVersionIsRejected) {
  Bytes b = npy_file(kDict23, f32_data({1, 2, 3, 4, 5, 6}));
  b[6] = '\x04';
  expect_format_error(read, temp_file("v4.npy", b), "unsupported .npy version 4.0");
}

TEST(NpyIo, FortranOrderIsRejected) {
  const auto path = temp_file(
      "fortran.npy",
      npy_file("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", f32_data({1, 2, 3, 4, 5, 6})));
  expect_format_error(read, path, "fortran_order is True");
}

TEST(NpyIo, BigEndianDtypeIsRejectedByName) {
  const auto path = temp_file(
      "big.npy", npy_file("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", f32_data({1, 2})));
  expect_format_error(read, path, "unsupported dtype '>f4': big-endian");
}

TEST(NpyIo, UnsupportedDtypeIsRejectedByName) {
  for (const char* descr : {"<f2", "|b1", "<c8", "<U3", "|i1", "<u4"}) {
    const auto path = temp_file(
        "dtype.npy",
        npy_file(std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (0,), }", ""));
    expect_format_error(read, path, std::string("unsupported dtype '") + descr + "'");
  }
}

TEST(NpyIo, StructuredDtypeIsRejected) {
  const auto path = temp_file(
      "structured.npy",
      npy_file("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (0,), }", ""));
  expect_format_error(read, path, "structured dtypes are not supported");
}

TEST(NpyIo, NegativeExtentIsRejected) {
  const auto path = temp_file(
      "negative.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }", ""));
  expect_format_error(read, path, "negative extent in 'shape'");
}

TEST(NpyIo, NonIntegerExtentIsRejected) {
  const auto path = temp_file(
      "float_extent.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,), }", ""));
  expect_format_error(read, path, "expected ',' or ')' in 'shape'");
  const auto path2 = temp_file(
      "name_extent.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (n,), }", ""));
  expect_format_error(read, path2, "'shape' must hold non-negative integers");
}

TEST(NpyIo, OverflowingExtentIsRejected) {
  const auto path = temp_file(
      "big_extent.npy",
      npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", ""));
  expect_format_error(read, path, "extent too large in 'shape'");
}

TEST(NpyIo, ShapeProductOverflowIsRejected) {
  const auto path = temp_file(
      "product.npy",
      npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", ""));
  expect_format_error(read, path, "shape [4294967296, 4294967296] has too many elements");
}

TEST(NpyIo, HugeShapeInSmallFileIsRejectedAsTruncated) {
  const auto path = temp_file(
      "huge.npy", npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", ""));
  expect_format_error(read, path, "truncated: shape [1000000000000] of <f8 needs 8000000000000 data bytes");
}

TEST(NpyIo, ParenthesisedIntegerIsNotAShapeTuple) {
  const auto path = temp_file(
      "int_shape.npy", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", f32_data({1, 2})));
  expect_format_error(read, path, "'shape' must be a tuple");
}

TEST(NpyIo, MissingUnknownAndDuplicateKeysAreRejected) {
  expect_format_error(read, temp_file("missing.npy", npy_file("{'descr': '<f4', 'shape': (0,), }", "")),
                      "the header has no 'fortran_order' key");
  expect_format_error(
      read,
      temp_file("unknown.npy",
                npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (0,), 'x': 1}", "")),
      "unexpected key 'x'");
  expect_format_error(
      read,
      temp_file("duplicate.npy",
                npy_file("{'descr': '<f4', 'descr': '<f8', 'fortran_order': False, 'shape': (0,)}", "")),
      "duplicate key 'descr'");
}

TEST(NpyIo, MalformedDictSyntaxIsRejected) {
  const std::pair<const char*, const char*> cases[] = {
      {"'descr': '<f4'", "expected '{' at the start of the header dict"},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (0,)}", "expected ':' after key 'descr'"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (0,)}", "expected ',' or '}' after the value of 'descr'"},
      {"{'descr': '<f4', 'fortran_order': false, 'shape': (0,)}", "'fortran_order' must be True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': [0]}", "'shape' must be a tuple"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0,)} x", "unexpected text after the header dict"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0,) 'x'}", "expected ',' or '}'"},
      {"{'descr': '<f4", "unterminated string"},
      {"{descr: '<f4'}", "expected a quoted key"},
  };
  for (const auto& [dict, phrase] : cases)
    expect_format_error(read, temp_file("syntax.npy", npy_file(dict, "")), std::string("malformed .npy header: ") + phrase);
}

TEST(NpyIo, WritingAnInconsistentTensorFailsWithoutCreatingAFile) {
  Tensor t = tensor_of(std::vector<float>{1, 2, 3}, {3});
  t.shape = {4};
  const std::string path = temp_path("inconsistent.npy");
  EXPECT_THROW(write_npy(path, t), InvalidArgument);
  t.shape = {-3};
  EXPECT_THROW(write_npy(path, t), InvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace dynascope::test
