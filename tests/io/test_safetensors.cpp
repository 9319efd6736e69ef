#include "io/io_test_util.hpp"

#include <bit>
#include <cmath>
#include <limits>

namespace dynascope::test {
namespace {

using io::NamedTensor;
using io::read_safetensors;
using io::Safetensors;
using io::Tensor;
using io::write_safetensors;

const auto read = [](const std::string& path) { read_safetensors(path); };

// A safetensors file with the given JSON header and byte buffer.
Bytes st_file(const std::string& json, const Bytes& buffer) { return le_u64(json.size()) + json + buffer; }

Safetensors sample_model() {
  Safetensors f;
  f.metadata = {{"activation", "relu"}, {"parameterization", "ntk"}};
  f.tensors.push_back({"0.weight", tensor_of(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3})});
  f.tensors.push_back({"0.bias", tensor_of(std::vector<float>{-1, 1}, {2})});
  f.tensors.push_back({"layers.1.weight", tensor_of(std::vector<double>{0.5, -0.25}, {1, 2})});
  f.tensors.push_back({"layers.1.bias", tensor_of(std::vector<double>{3.0}, {1})});
  f.tensors.push_back({"step", tensor_of(std::vector<std::int64_t>{123456789012}, {})});
  f.tensors.push_back({"counts", tensor_of(std::vector<std::int32_t>{-7, 8}, {2})});
  f.tensors.push_back({"mask", tensor_of(std::vector<std::uint8_t>{1, 0, 1}, {3})});
  f.tensors.push_back({"empty", tensor_of(std::vector<float>{}, {0, 4})});
  return f;
}

TEST(SafetensorsIo, RoundTripKeepsNamesDtypesShapesValuesAndMetadata) {
  const Safetensors f = sample_model();
  const std::string path = temp_path("model.safetensors");
  write_safetensors(path, f);
  const Safetensors back = read_safetensors(path);
  EXPECT_EQ(back.metadata, f.metadata);
  ASSERT_EQ(back.tensors.size(), f.tensors.size());
  // Written in the given order, so read back (by offset) in the same order.
  for (std::size_t i = 0; i < f.tensors.size(); ++i) {
    EXPECT_EQ(back.tensors[i].name, f.tensors[i].name);
    EXPECT_EQ(back.tensors[i].tensor.dtype, f.tensors[i].tensor.dtype) << f.tensors[i].name;
    EXPECT_EQ(back.tensors[i].tensor.shape, f.tensors[i].tensor.shape) << f.tensors[i].name;
    EXPECT_EQ(back.tensors[i].tensor.bytes, f.tensors[i].tensor.bytes) << f.tensors[i].name;
  }
  EXPECT_EQ(back.find("layers.1.weight")->to_vector<double>(), (std::vector<double>{0.5, -0.25}));
  EXPECT_EQ(back.find("step")->to_vector<std::int64_t>(), (std::vector<std::int64_t>{123456789012}));
}

TEST(SafetensorsIo, FindReturnsTheNamedTensorOrNull) {
  const Safetensors f = sample_model();
  ASSERT_NE(f.find("0.bias"), nullptr);
  EXPECT_EQ(f.find("0.bias")->to_vector<float>(), (std::vector<float>{-1, 1}));
  EXPECT_EQ(f.find("missing"), nullptr);
}

TEST(SafetensorsIo, HeaderIsPaddedWithSpacesToAMultipleOf8) {
  const std::string path = temp_path("padded.safetensors");
  write_safetensors(path, sample_model());
  const Bytes b = read_bytes(path);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(b[static_cast<std::size_t>(i)]);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = b.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header[header.find_last_not_of(' ')], '}');
  EXPECT_NE(header.find("\"__metadata__\":{\"activation\":\"relu\""), std::string::npos) << header;
  EXPECT_NE(header.find("\"0.weight\":{\"data_offsets\":[0,24],\"dtype\":\"F32\",\"shape\":[2,3]}"),
            std::string::npos)
      << header;
}

TEST(SafetensorsIo, EmptyMetadataIsNotWritten) {
  Safetensors f;
  f.tensors.push_back({"w", tensor_of(std::vector<float>{1}, {1})});
  const std::string path = temp_path("nometa.safetensors");
  write_safetensors(path, f);
  EXPECT_EQ(read_bytes(path).find("__metadata__"), std::string::npos);
  EXPECT_TRUE(read_safetensors(path).metadata.empty());
}

TEST(SafetensorsIo, TensorsComeOutOrderedByDataOffset) {
  // Names in the JSON sort opposite to the offsets.
  const std::string json =
      R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},)"
      R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("__metadata__":{"k":"v"}})";
  const Safetensors f = read_safetensors(temp_file("order.safetensors", st_file(json, "\x01\x02\x03")));
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].name, "b");
  EXPECT_EQ(f.tensors[1].name, "a");
  EXPECT_EQ(f.tensors[1].tensor.to_vector<std::uint8_t>(), std::vector<std::uint8_t>{3});
  EXPECT_EQ(f.metadata.at("k"), "v");
}

TEST(SafetensorsIo, EmptyFileWithNoTensorsIsValid) {
  const Safetensors f = read_safetensors(temp_file("empty.safetensors", st_file("{}      ", "")));
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_TRUE(f.metadata.empty());
}

TEST(SafetensorsIo, WriterRejectsDuplicateAndReservedNames) {
  Safetensors f;
  f.tensors.push_back({"w", tensor_of(std::vector<float>{1}, {1})});
  f.tensors.push_back({"w", tensor_of(std::vector<float>{2}, {1})});
  const std::string path = temp_path("dup_write.safetensors");
  EXPECT_THROW(write_safetensors(path, f), InvalidArgument);
  f.tensors[1].name = "__metadata__";
  EXPECT_THROW(write_safetensors(path, f), InvalidArgument);
  f.tensors[1].name = "v";
  f.tensors[1].tensor.shape = {2};
  EXPECT_THROW(write_safetensors(path, f), InvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(path));
}

// ---- malformed files ----

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

void expect_rejected(const std::string& json, const Bytes& buffer, const std::string& phrase) {
  expect_format_error(read, temp_file("bad.safetensors", st_file(json, buffer)), phrase);
}

const Bytes k8 = Bytes(8, '\x01');

TEST(SafetensorsIo, FileShorterThanTheLengthPrefixIsRejected) {
  expect_format_error(read, temp_file("tiny.safetensors", Bytes("\x02\x00\x00", 3)),
                      "truncated: the 8-byte header length needs bytes [0, 8) but the file has 3 bytes");
}

TEST(SafetensorsIo, HeaderLengthBeyondTheFileIsRejected) {
  expect_format_error(read, temp_file("len.safetensors", le_u64(1000) + "{}"),
                      "header length 1000 exceeds the file size (10 bytes)");
}

TEST(SafetensorsIo, AbsurdHeaderLengthIsRejected) {
  expect_format_error(read, temp_file("absurd.safetensors", le_u64(std::uint64_t{1} << 62) + "{}"),
                      "header length 4611686018427387904 exceeds the 100 MB limit");
}

TEST(SafetensorsIo, InvalidJsonIsRejected) {
  expect_rejected("{\"a\": ", "", "malformed header: invalid JSON");
  expect_rejected(" {}", "", "does not start with '{'");
  expect_rejected("{\"a\":\"\xff\"}", "", "invalid JSON");  // not UTF-8
}

TEST(SafetensorsIo, DuplicateTensorNamesAreRejected) {
  expect_rejected("{" + entry("w", "U8", "[4]", "[0,4]") + "," + entry("w", "U8", "[4]", "[4,8]") + "}", k8,
                  "duplicate tensor name 'w'");
}

TEST(SafetensorsIo, OverlappingTensorsAreRejected) {
  expect_rejected("{" + entry("a", "U8", "[6]", "[0,6]") + "," + entry("b", "U8", "[4]", "[4,8]") + "}", k8,
                  "tensors 'a' and 'b' overlap in the byte buffer");
}

TEST(SafetensorsIo, HoleInTheBufferIsRejected) {
  expect_rejected("{" + entry("a", "U8", "[2]", "[0,2]") + "," + entry("b", "U8", "[4]", "[4,8]") + "}", k8,
                  "hole in the byte buffer: bytes [2, 4) belong to no tensor");
}

TEST(SafetensorsIo, UnclaimedBytesAtTheEndAreRejected) {
  expect_rejected("{" + entry("a", "U8", "[4]", "[0,4]") + "}", k8,
                  "trailing bytes: bytes [4, 8) at the end of the byte buffer belong to no tensor");
}

TEST(SafetensorsIo, OutOfRangeOffsetsAreRejected) {
  expect_rejected("{" + entry("a", "F32", "[4]", "[0,16]") + "}", k8,
                  "tensor 'a': data_offsets [0, 16) are out of range: the byte buffer has 8 bytes");
}

TEST(SafetensorsIo, ReversedOffsetsAreRejected) {
  expect_rejected("{" + entry("a", "U8", "[0]", "[8,4]") + "}", k8, "data_offsets [8, 4) end before they begin");
}

TEST(SafetensorsIo, OffsetsThatDisagreeWithTheShapeAreRejected) {
  expect_rejected("{" + entry("a", "F32", "[3]", "[0,8]") + "}", k8,
                  "tensor 'a': data_offsets [0, 8) span 8 bytes but shape [3] of F32 needs 12");
}

TEST(SafetensorsIo, NegativeAndNonIntegerShapesAreRejected) {
  expect_rejected("{" + entry("a", "U8", "[-8]", "[0,8]") + "}", k8, "tensor 'a': shape extent is negative (-8)");
  expect_rejected("{" + entry("a", "U8", "[8.0]", "[0,8]") + "}", k8,
                  "tensor 'a': shape extent is not a non-negative integer (8.0)");
  expect_rejected("{" + entry("a", "U8", "[\"8\"]", "[0,8]") + "}", k8, "is not a non-negative integer");
  expect_rejected("{" + entry("a", "U8", "8", "[0,8]") + "}", k8, "tensor 'a': \"shape\" is not an array");
}

TEST(SafetensorsIo, NegativeOrOverflowingOffsetsAreRejected) {
  expect_rejected("{" + entry("a", "U8", "[8]", "[-1,8]") + "}", k8, "data_offsets begin is negative (-1)");
  expect_rejected("{" + entry("a", "U8", "[8]", "[0,18446744073709551616]") + "}", k8,
                  "data_offsets end is not a non-negative integer");
  expect_rejected("{" + entry("a", "U8", "[8]", "[0]") + "}", k8, "\"data_offsets\" is not an array [begin, end]");
}

TEST(SafetensorsIo, OverflowingShapesAreRejected) {
  expect_rejected("{" + entry("a", "U8", "[9223372036854775808]", "[0,8]") + "}", k8,
                  "tensor 'a': shape extent is too large (9223372036854775808)");
  expect_rejected("{" + entry("a", "F64", "[4294967296,4294967296]", "[0,8]") + "}", k8,
                  "tensor 'a': shape [4294967296, 4294967296] has too many elements");
}

TEST(SafetensorsIo, UnsupportedDtypeIsRejectedByName) {
  expect_rejected("{" + entry("a", "I16", "[4]", "[0,8]") + "}", k8, "tensor 'a' has unsupported dtype 'I16'");
  // The list in the message is the true one.
  expect_rejected("{" + entry("a", "F8_E4M3", "[8]", "[0,8]") + "}", k8,
                  "unsupported dtype 'F8_E4M3' (supported: F32, F64, F16, BF16 (both read as F32), I32, I64, U8)");
}

// ---- F16 and BF16: widened to F32 exactly ----

// The float a bit pattern denotes, from the format's definition: (-1)^s * 2^(e - bias) * (1 + m / 2^mbits),
// subnormals 2^(1 - bias) * m / 2^mbits.
double half_value(std::uint16_t h, int mbits, int ebits) {
  const int bias = (1 << (ebits - 1)) - 1;
  const unsigned m = h & ((1u << mbits) - 1), e = (h >> mbits) & ((1u << ebits) - 1);
  const double sign = (h >> (mbits + ebits)) ? -1.0 : 1.0;
  if (e == (1u << ebits) - 1) return m ? std::numeric_limits<double>::quiet_NaN() : sign * HUGE_VAL;
  if (e == 0) return sign * std::ldexp(double(m), 1 - bias - mbits);
  return sign * std::ldexp(double(m + (1u << mbits)), int(e) - bias - mbits);
}

Bytes u16_bytes(const std::vector<std::uint16_t>& v) {
  Bytes b;
  for (std::uint16_t x : v) b += le_u16(x);
  return b;
}

// The float the reader makes of one stored value.
float widened(const std::string& dtype, std::uint16_t bits) {
  const std::string json = "{" + entry("w", dtype, "[1]", "[0,2]") + "}";
  return read_safetensors(temp_file("one.safetensors", st_file(json, le_u16(bits)))).tensors.at(0).tensor.to_vector<float>().at(0);
}

void expect_widened(const std::string& dtype, const std::vector<std::uint16_t>& bits, int mbits, int ebits) {
  const std::string n = std::to_string(bits.size());
  const std::string json = "{" + entry("w", dtype, "[" + n + "]", "[0," + std::to_string(2 * bits.size()) + "]") + "}";
  const Safetensors f = read_safetensors(temp_file("half.safetensors", st_file(json, u16_bytes(bits))));
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].stored_dtype, dtype);
  EXPECT_EQ(f.tensors[0].tensor.dtype, DType::f32);
  EXPECT_EQ(f.tensors[0].tensor.shape, Shape{index_t(bits.size())});
  const std::vector<float> v = f.tensors[0].tensor.to_vector<float>();
  for (std::size_t i = 0; i < bits.size(); ++i) {
    const double want = half_value(bits[i], mbits, ebits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(v[i])) << dtype << " 0x" << std::hex << bits[i];
    } else {
      EXPECT_EQ(double(v[i]), want) << dtype << " 0x" << std::hex << bits[i];
      EXPECT_EQ(std::signbit(v[i]), std::signbit(want)) << dtype << " 0x" << std::hex << bits[i];
    }
  }
}

TEST(SafetensorsIo, HalfValuesWidenExactly) {
  // +-0, 1, -2, 1/3 rounded, the largest half, the smallest normal, every subnormal boundary,
  // infinities and NaNs (quiet and signalling).
  expect_widened("F16",
                 {0x0000, 0x8000, 0x3C00, 0xC000, 0x3555, 0x7BFF, 0xFBFF, 0x0400, 0x03FF, 0x0200, 0x0001, 0x8001,
                  0x0155, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE00},
                 10, 5);
  // Every half bit pattern against the definition.
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  expect_widened("F16", all, 10, 5);
  // Values named in the literature, independently of the definition above.
  EXPECT_EQ(widened("F16", 0x7BFF), 65504.0f);
  EXPECT_EQ(widened("F16", 0x0001), 5.9604644775390625e-08f);  // 2^-24
  EXPECT_EQ(widened("F16", 0x3555), 0.333251953125f);
}

TEST(SafetensorsIo, Bfloat16ValuesWidenExactly) {
  expect_widened("BF16",
                 {0x0000, 0x8000, 0x3F80, 0xC040, 0x4049, 0x7F7F, 0x0080, 0x007F, 0x0001, 0x8001, 0x7F80, 0xFF80,
                  0x7FC0, 0x7F81},
                 7, 8);
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  expect_widened("BF16", all, 7, 8);
  EXPECT_EQ(widened("BF16", 0x4049), 3.140625f);
  EXPECT_EQ(widened("BF16", 0x7F7F), 3.3895313892515355e38f);
}

TEST(SafetensorsIo, NanPayloadsSurviveWidening) {
  // Quiet bit to quiet bit, payload in the high mantissa bits: what a hardware conversion does.
  const auto bits = [](float f) { return std::bit_cast<std::uint32_t>(f); };
  EXPECT_EQ(bits(widened("F16", 0x7E00)), 0x7FC00000u);
  EXPECT_EQ(bits(widened("F16", 0x7C01)), 0x7F802000u);
  EXPECT_EQ(bits(widened("F16", 0xFE00)), 0xFFC00000u);
  EXPECT_EQ(bits(widened("BF16", 0x7FC1)), 0x7FC10000u);
}

TEST(SafetensorsIo, HalfTensorsAreSizedByTheirStoredDtype) {
  // 3 halves need 6 bytes, not 12.
  expect_rejected("{" + entry("a", "F16", "[3]", "[0,8]") + "}", k8,
                  "tensor 'a': data_offsets [0, 8) span 8 bytes but shape [3] of F16 needs 6");
  // Mixed dtypes tile the buffer by their stored sizes: 2 BF16 + 1 F32.
  const Bytes buf = u16_bytes({0x3F80, 0xC000}) + Bytes("\x00\x00\x80\x3f", 4);
  const Safetensors f = read_safetensors(temp_file(
      "mixed.safetensors", st_file("{" + entry("h", "BF16", "[2]", "[0,4]") + "," + entry("f", "F32", "[1]", "[4,8]") + "}", buf)));
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].tensor.to_vector<float>(), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(f.tensors[1].stored_dtype, "F32");
  EXPECT_EQ(f.tensors[1].tensor.to_vector<float>(), std::vector<float>{1.0f});
}

// ---- files that are something else ----

TEST(SafetensorsIo, TorchSaveZipArchivesAreNamed) {
  // A zip local file header whose first member is archive/data.pkl, as torch.save writes.
  const std::string name = "archive/data.pkl";
  const Bytes zip = Bytes("PK\x03\x04", 4) + Bytes(22, '\0') + le_u16(std::uint16_t(name.size())) + le_u16(0) + name +
                    Bytes("\x80\x02}q\x00.", 6) + Bytes(40, '\0');
  expect_format_error(read, temp_file("model.pt", zip),
                      "not a safetensors file but a PyTorch checkpoint written by torch.save (a zip archive holding "
                      "data.pkl). dynascope reads safetensors; save the weights as one in Python: from "
                      "safetensors.torch import save_file; save_file(model.state_dict(), \"model.safetensors\", "
                      "metadata={\"activation\": \"tanh\"})");
  const std::string npz_member = "arr_0.npy";
  const Bytes npz = Bytes("PK\x03\x04", 4) + Bytes(22, '\0') + le_u16(std::uint16_t(npz_member.size())) + le_u16(0) +
                    npz_member + Bytes(40, '\0');
  expect_format_error(read, temp_file("arrays.npz", npz), "a numpy .npz archive (first member 'arr_0.npy')");
  expect_format_error(read, temp_file("other.zip", Bytes("PK\x03\x04", 4) + Bytes(40, '\0')),
                      "a zip archive (torch.save writes these)");
}

TEST(SafetensorsIo, PicklesAndNpyFilesAreNamed) {
  const Bytes legacy = Bytes("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15) + Bytes(30, '\0');
  expect_format_error(read, temp_file("legacy.pt", legacy),
                      "a PyTorch checkpoint written by torch.save in its legacy pickle format. dynascope reads safetensors");
  const Bytes pickle4 = Bytes("\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", 14) + Bytes(30, '\0');
  expect_format_error(read, temp_file("state.pkl", pickle4), "a Python pickle (torch.save with _use_new_zipfile_serialization");
  expect_format_error(read, temp_file("x.npy", Bytes("\x93NUMPY\x01\x00\x76\x00", 10) + Bytes(118, ' ')),
                      "not a safetensors file but a .npy array");
}

TEST(SafetensorsIo, ValidFilesThatStartLikeAPickleAreStillRead) {
  // A header of 640 bytes has the length prefix 80 02 00 ..., a pickle's first two bytes.
  std::string json = "{" + entry("a", "U8", "[8]", "[0,8]") + "}";
  json.append(640 - json.size(), ' ');
  const Bytes file = st_file(json, k8);
  ASSERT_EQ(static_cast<unsigned char>(file[0]), 0x80);
  ASSERT_EQ(static_cast<unsigned char>(file[1]), 0x02);
  const Safetensors f = read_safetensors(temp_file("pickle_like.safetensors", file));
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].tensor.to_vector<std::uint8_t>(), std::vector<std::uint8_t>(8, 1));
}

TEST(SafetensorsIo, MissingFieldsAndNonObjectEntriesAreRejected) {
  expect_rejected(R"({"a":{"dtype":"U8","data_offsets":[0,8]}})", k8, "tensor 'a': missing \"shape\"");
  expect_rejected(R"({"a":[1,2]})", k8, "tensor 'a': the entry is not a JSON object");
  expect_rejected(R"({"a":{"dtype":8,"shape":[8],"data_offsets":[0,8]}})", k8, "\"dtype\" is not a string");
}

TEST(SafetensorsIo, MetadataMustMapStringsToStrings) {
  expect_rejected(R"({"__metadata__":{"lr":0.1}})", "", "\"__metadata__\" value of 'lr' is not a string");
  expect_rejected(R"({"__metadata__":"x"})", "", "\"__metadata__\" is not a JSON object");
}

TEST(SafetensorsIo, DeeplyNestedJsonIsRejected) {
  expect_rejected("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", "",
                  "JSON nested deeper than");
}

TEST(SafetensorsIo, TruncatedByteBufferIsRejected) {
  const Bytes whole = [] {
    const std::string path = temp_path("whole.safetensors");
    write_safetensors(path, sample_model());
    return read_bytes(path);
  }();
  expect_format_error(read, temp_file("cut.safetensors", whole.substr(0, whole.size() - 1)), "are out of range");
}

}  // namespace
}  // namespace dynascope::test
