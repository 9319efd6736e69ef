// safetensors: https://github.com/huggingface/safetensors
//
// Layout: N as a little-endian u64, N bytes of JSON (padded with spaces), then the byte buffer.
// The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, offsets
// relative to the buffer; "__metadata__" optionally maps strings to strings. As in the reference
// implementation, the tensors must tile the buffer exactly: no overlaps, no holes, no slack.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "io/io_detail.hpp"

namespace dynascope::io {
namespace detail {

namespace {

using json = nlohmann::json;

constexpr std::uint64_t kMaxHeaderLen = 100'000'000;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 8;                      // a valid header nests 3 deep
constexpr const char* kMetadataKey = "__metadata__";

// A dtype as the file names and stores it, and the dtype it has in memory: F16 and BF16 (the
// half-precision weights of many PyTorch checkpoints) are widened to f32 on reading.
struct StDType {
  const char* name;
  DType dtype;               // in memory
  std::size_t stored_bytes;  // per element, in the file
};
constexpr StDType kStDTypes[] = {
    {"F32", DType::f32, 4}, {"F64", DType::f64, 8}, {"F16", DType::f32, 2}, {"BF16", DType::f32, 2},
    {"I32", DType::i32, 4}, {"I64", DType::i64, 8}, {"U8", DType::u8, 1},
};
constexpr const char* kSupported = "F32, F64, F16, BF16 (both read as F32), I32, I64, U8";

const char* name_of(DType dtype) {
  for (const auto& d : kStDTypes)
    if (d.dtype == dtype && d.stored_bytes == size_of(dtype)) return d.name;
  throw InvalidArgument("write_safetensors: invalid dtype");
}

// How to get safetensors out of PyTorch, for the messages about files that are something else.
constexpr const char* kSaveHint =
    "dynascope reads safetensors; save the weights as one in Python: from safetensors.torch import save_file; "
    "save_file(model.state_dict(), \"model.safetensors\", metadata={\"activation\": \"tanh\"}) (the metadata "
    "names the hidden activation, which a state dict does not record)";

// What a file is when its first bytes show it is one of the formats people mistake for
// safetensors: PyTorch's torch.save (a zip archive since PyTorch 1.6, a pickle before), numpy's
// .npz (a zip of .npy files) and .npy. Called only once the bytes cannot be safetensors.
std::optional<std::string> foreign_format(const ByteSource& src) {
  unsigned char head[16] = {};
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(src.size(), sizeof head));
  src.read(0, head, n, "the first bytes");
  if (n >= 4 && std::memcmp(head, "PK\x03\x04", 4) == 0) {
    // A zip local file header: the first member's name (length at byte 26) starts at byte 30.
    std::string first;
    if (src.size() >= 30) {
      unsigned char len[2];
      src.read(26, len, 2, "the zip member name length");
      const std::size_t name_len = std::min<std::size_t>(std::size_t(len[0]) | std::size_t(len[1]) << 8, 256);
      if (src.size() >= 30 + name_len) {
        first.resize(name_len);
        src.read(30, first.data(), name_len, "the zip member name");
      }
    }
    const auto ends_with = [&](std::string_view tail) {
      return first.size() >= tail.size() && first.compare(first.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (ends_with(".npy"))
      return "not a safetensors file but a numpy .npz archive (first member '" + printable(first) +
             "'); weights must be safetensors, and arrays (--inputs, --targets) single .npy files";
    const std::string what = ends_with("data.pkl") || ends_with("/version") || first.find("/data/") != std::string::npos
                                 ? "a PyTorch checkpoint written by torch.save (a zip archive holding data.pkl)"
                                 : "a zip archive (torch.save writes these)";
    return "not a safetensors file but " + what + ". " + kSaveHint;
  }
  if (n >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) {
    // torch.save's legacy format pickles its magic number 0x1950a86a20f9469cfc6c first.
    static constexpr unsigned char kTorchMagic[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    const bool torch = n >= 14 && std::memcmp(head + 2, kTorchMagic, sizeof kTorchMagic) == 0;
    return std::string("not a safetensors file but ") +
           (torch ? "a PyTorch checkpoint written by torch.save in its legacy pickle format"
                  : "a Python pickle (torch.save with _use_new_zipfile_serialization=False, or pickle.dump)") +
           ". " + kSaveHint;
  }
  if (n >= 6 && std::memcmp(head, "\x93NUMPY", 6) == 0)
    return "not a safetensors file but a .npy array; weights must be safetensors (.npy files are for --inputs and "
           "--targets)";
  return std::nullopt;
}

// Fails with `problem`, or with what the file really is when its first bytes tell.
[[noreturn]] void fail_not_safetensors(const ByteSource& src, const std::string& problem) {
  if (const auto foreign = foreign_format(src)) src.fail(*foreign);
  src.fail(problem);
}

// Parses the header JSON, rejecting duplicate keys (which nlohmann would silently merge) and
// nesting deeper than any valid header needs.
json parse_header_json(const ByteSource& src, std::string_view text) {
  if (text.empty() || text.front() != '{') src.fail("malformed header: the JSON does not start with '{'");
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth)
          src.fail("malformed header: JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!keys.empty() && !keys.back().insert(key).second)
          src.fail(depth == 1 ? "duplicate tensor name '" + printable(key) + "'"
                              : "malformed header: duplicate key '" + printable(key) + "'");
        break;
      }
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const json::exception& e) {
    src.fail(std::string("malformed header: invalid JSON: ") + e.what());
  }
}

// A JSON integer in [0, max], or a FileFormatError naming `what`.
std::uint64_t get_count(const ByteSource& src, const json& v, const std::string& what, std::uint64_t max) {
  if (v.is_number_unsigned()) {
    const auto n = v.get<std::uint64_t>();
    if (n > max) src.fail(what + " is too large (" + std::to_string(n) + ")");
    return n;
  }
  if (v.is_number_integer()) src.fail(what + " is negative (" + std::to_string(v.get<std::int64_t>()) + ")");
  src.fail(what + " is not a non-negative integer (" + printable(v.dump()) + ")");
}

struct Entry {
  std::string name;
  const StDType* type;
  Shape shape;
  std::uint64_t begin, end;
};

Entry parse_entry(const ByteSource& src, const std::string& name, const json& info,
                  std::uint64_t buffer_len) {
  const std::string quoted = "tensor '" + printable(name) + "'";
  if (!info.is_object()) src.fail(quoted + ": the entry is not a JSON object");
  const auto field = [&](const char* key) -> const json& {
    const auto it = info.find(key);
    if (it == info.end()) src.fail(quoted + ": missing \"" + key + "\"");
    return *it;
  };
  Entry e{name, nullptr, {}, 0, 0};

  const json& dtype = field("dtype");
  if (!dtype.is_string()) src.fail(quoted + ": \"dtype\" is not a string");
  const auto& dtype_name = dtype.get_ref<const std::string&>();
  const auto known = std::find_if(std::begin(kStDTypes), std::end(kStDTypes),
                                  [&](const StDType& d) { return dtype_name == d.name; });
  if (known == std::end(kStDTypes))
    src.fail(quoted + " has unsupported dtype '" + printable(dtype_name) + "' (supported: " + kSupported + ")");
  e.type = known;

  const json& shape = field("shape");
  if (!shape.is_array()) src.fail(quoted + ": \"shape\" is not an array");
  for (const json& d : shape)
    e.shape.push_back(static_cast<index_t>(
        get_count(src, d, quoted + ": shape extent", std::numeric_limits<index_t>::max())));

  const json& offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2)
    src.fail(quoted + ": \"data_offsets\" is not an array [begin, end]");
  const auto max_offset = std::numeric_limits<std::uint64_t>::max();
  e.begin = get_count(src, offsets[0], quoted + ": data_offsets begin", max_offset);
  e.end = get_count(src, offsets[1], quoted + ": data_offsets end", max_offset);
  const std::string range =
      std::string("[").append(std::to_string(e.begin)).append(", ").append(std::to_string(e.end)).append(")");
  if (e.end < e.begin) src.fail(quoted + ": data_offsets " + range + " end before they begin");
  if (e.end > buffer_len)
    src.fail(quoted + ": data_offsets " + range + " are out of range: the byte buffer has " +
             std::to_string(buffer_len) + " bytes");

  // Bytes in the file (F16 and BF16: 2 per element), and in memory once widened: both must fit.
  const auto numel = checked_numel(e.shape);
  const auto in_memory = checked_nbytes(e.shape, e.type->dtype);
  if (!numel || !in_memory) src.fail(quoted + ": shape " + shape_text(e.shape) + " has too many elements");
  const std::uint64_t nbytes = static_cast<std::uint64_t>(*numel) * e.type->stored_bytes;  // <= *in_memory
  if (nbytes != e.end - e.begin)
    src.fail(quoted + ": data_offsets " + range + " span " + std::to_string(e.end - e.begin) +
             " bytes but shape " + shape_text(e.shape) + " of " + dtype_name + " needs " +
             std::to_string(nbytes));
  return e;
}

}  // namespace

Safetensors parse_safetensors(const ByteSource& src) {
  unsigned char len_bytes[8];
  src.read(0, len_bytes, 8, "the 8-byte header length");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderLen)
    fail_not_safetensors(src, "header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  if (header_len > src.size() - 8)
    fail_not_safetensors(src, "header length " + std::to_string(header_len) + " exceeds the file size (" +
                                  std::to_string(src.size()) + " bytes)");
  const std::vector<std::byte> raw = src.read_bytes(8, header_len, "the JSON header");
  if (raw.empty() || raw.front() != std::byte{'{'})
    fail_not_safetensors(src, "malformed header: the JSON does not start with '{'");
  const json header =
      parse_header_json(src, std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()));

  const std::uint64_t buffer_start = 8 + header_len;
  const std::uint64_t buffer_len = src.size() - buffer_start;
  Safetensors out;
  std::vector<Entry> entries;
  for (const auto& [name, info] : header.items()) {
    if (name == kMetadataKey) {
      if (!info.is_object()) src.fail("malformed header: \"__metadata__\" is not a JSON object");
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string())
          src.fail("malformed header: \"__metadata__\" value of '" + printable(key) + "' is not a string");
        out.metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    entries.push_back(parse_entry(src, name, info, buffer_len));
  }

  // Ties (empty tensors at one offset) keep the header's name order.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.begin < covered)
      src.fail("tensors '" + printable(entries[i - 1].name) + "' and '" + printable(e.name) +
               "' overlap in the byte buffer (one ends at " + std::to_string(covered) +
               ", the other begins at " + std::to_string(e.begin) + ")");
    if (e.begin > covered)
      src.fail("hole in the byte buffer: bytes [" + std::to_string(covered) + ", " +
               std::to_string(e.begin) + ") belong to no tensor");
    covered = e.end;
  }
  if (covered != buffer_len)
    src.fail("trailing bytes: bytes [" + std::to_string(covered) + ", " + std::to_string(buffer_len) +
             ") at the end of the byte buffer belong to no tensor");

  out.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    NamedTensor nt{std::move(e.name), Tensor{e.type->dtype, std::move(e.shape), {}}, e.type->name};
    std::vector<std::byte> stored = src.read_bytes(buffer_start + e.begin, static_cast<std::size_t>(e.end - e.begin),
                                                   "the data of tensor '" + printable(nt.name) + "'");
    if (e.type->stored_bytes == size_of(e.type->dtype)) {
      nt.tensor.bytes = std::move(stored);
    } else {
      // F16 / BF16 -> f32 (little-endian in the file, as every safetensors dtype).
      const bool half = std::strcmp(e.type->name, "F16") == 0;
      const std::size_t count = stored.size() / 2;
      nt.tensor.bytes.resize(count * sizeof(float));
      for (std::size_t i = 0; i < count; ++i) {
        const auto bits = static_cast<std::uint16_t>(std::to_integer<unsigned>(stored[2 * i]) |
                                                     std::to_integer<unsigned>(stored[2 * i + 1]) << 8);
        const float v = half ? f16_to_f32(bits) : bf16_to_f32(bits);
        std::memcpy(nt.tensor.bytes.data() + i * sizeof(float), &v, sizeof v);
      }
    }
    out.tensors.push_back(std::move(nt));
  }
  return out;
}

float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits = sign;
  if (exp == 0x1f) {
    bits |= 0x7f800000u | (mant << 13);  // infinity, or NaN with its payload (quiet bit to quiet bit)
  } else if (exp != 0) {
    bits |= ((exp + 127 - 15) << 23) | (mant << 13);  // normal: rebias the exponent
  } else if (mant != 0) {
    // Subnormal mant * 2^-24: shift the leading one into the implicit bit's place.
    std::uint32_t e = 127 - 14;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    bits |= (e << 23) | ((mant & 0x3ffu) << 13);
  }  // else a signed zero
  return std::bit_cast<float>(bits);
}

float bf16_to_f32(std::uint16_t b) noexcept { return std::bit_cast<float>(std::uint32_t(b) << 16); }

std::string safetensors_header(const Safetensors& file) {
  json header = json::object();
  if (!file.metadata.empty()) header[kMetadataKey] = file.metadata;
  std::uint64_t offset = 0;
  for (const NamedTensor& nt : file.tensors) {
    if (nt.name == kMetadataKey)
      throw InvalidArgument("write_safetensors: a tensor cannot be named \"__metadata__\"");
    if (header.contains(nt.name))
      throw InvalidArgument("write_safetensors: duplicate tensor name '" + nt.name + "'");
    validate_tensor(nt.tensor, "write_safetensors: tensor '" + nt.name + "'");
    const std::uint64_t end = offset + nt.tensor.bytes.size();
    header[nt.name] = {{"dtype", name_of(nt.tensor.dtype)},
                       {"shape", nt.tensor.shape},
                       {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception&) {
    throw InvalidArgument("write_safetensors: a tensor name or metadata string is not valid UTF-8");
  }
  // The reference implementation pads the header with spaces so the buffer starts 8-aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (std::size_t i = 0; i < 8; ++i)
    out[i] = static_cast<char>((static_cast<std::uint64_t>(text.size()) >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace detail

DYNASCOPE_API const Tensor* Safetensors::find(const std::string& name) const {
  for (const NamedTensor& nt : tensors)
    if (nt.name == name) return &nt.tensor;
  return nullptr;
}

Safetensors read_safetensors(const std::string& path) {
  detail::FileSource src(path);
  return detail::parse_safetensors(src);
}

void write_safetensors(const std::string& path, const Safetensors& file) {
  const std::string header = detail::safetensors_header(file);
  std::vector<std::span<const std::byte>> pieces{detail::as_bytes(header)};
  for (const NamedTensor& nt : file.tensors) pieces.emplace_back(nt.tensor.bytes);
  detail::write_pieces_atomic(path, pieces);
}

}  // namespace dynascope::io
