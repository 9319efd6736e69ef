// safetensors: https://github.com/huggingface/safetensors
//
// Layout: N as a little-endian u64, N bytes of JSON (padded with spaces), then the byte buffer.
// The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, offsets
// relative to the buffer; "__metadata__" optionally maps strings to strings. As in the reference
// implementation, the tensors must tile the buffer exactly: no overlaps, no holes, no slack.
#include <algorithm>
#include <limits>
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

struct StDType {
  const char* name;
  DType dtype;
};
constexpr StDType kStDTypes[] = {
    {"F32", DType::f32}, {"F64", DType::f64}, {"I32", DType::i32}, {"I64", DType::i64}, {"U8", DType::u8},
};

const char* name_of(DType dtype) {
  for (const auto& d : kStDTypes)
    if (d.dtype == dtype) return d.name;
  throw InvalidArgument("write_safetensors: invalid dtype");
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
  DType dtype;
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
  Entry e{name, DType::f32, {}, 0, 0};

  const json& dtype = field("dtype");
  if (!dtype.is_string()) src.fail(quoted + ": \"dtype\" is not a string");
  const auto& dtype_name = dtype.get_ref<const std::string&>();
  const auto known = std::find_if(std::begin(kStDTypes), std::end(kStDTypes),
                                  [&](const StDType& d) { return dtype_name == d.name; });
  if (known == std::end(kStDTypes))
    src.fail(quoted + " has unsupported dtype '" + printable(dtype_name) +
             "' (supported: F32, F64, I32, I64, U8)");
  e.dtype = known->dtype;

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

  const auto nbytes = checked_nbytes(e.shape, e.dtype);
  if (!nbytes) src.fail(quoted + ": shape " + shape_text(e.shape) + " has too many elements");
  if (*nbytes != e.end - e.begin)
    src.fail(quoted + ": data_offsets " + range + " span " + std::to_string(e.end - e.begin) +
             " bytes but shape " + shape_text(e.shape) + " of " + dtype_name + " needs " +
             std::to_string(*nbytes));
  return e;
}

}  // namespace

Safetensors parse_safetensors(const ByteSource& src) {
  unsigned char len_bytes[8];
  src.read(0, len_bytes, 8, "the 8-byte header length");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderLen)
    src.fail("header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  if (header_len > src.size() - 8)
    src.fail("header length " + std::to_string(header_len) + " exceeds the file size (" +
             std::to_string(src.size()) + " bytes)");
  const std::vector<std::byte> raw = src.read_bytes(8, header_len, "the JSON header");
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
    NamedTensor nt{std::move(e.name), Tensor{e.dtype, std::move(e.shape), {}}};
    nt.tensor.bytes = src.read_bytes(buffer_start + e.begin, static_cast<std::size_t>(e.end - e.begin),
                                     "the data of tensor '" + printable(nt.name) + "'");
    out.tensors.push_back(std::move(nt));
  }
  return out;
}

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
