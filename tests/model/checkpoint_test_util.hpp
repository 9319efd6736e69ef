#pragma once
// Checkpoint files as PyTorch writes them, built byte by byte (no Python needed): safetensors with
// any dtype name (F16, BF16, ...) and no metadata, the way safetensors.torch.save_file writes a
// state dict; and the first bytes of torch.save's zip and pickle formats.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "dynascope/types.hpp"
#include "support/test_support.hpp"

namespace dynascope::test {

// One tensor of a raw safetensors file: its dtype as the file names it and its stored bytes.
struct RawTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", "I64", ...
  Shape shape;
  std::string bytes;  // little-endian, as stored
};

inline std::string le_bytes_u16(const std::vector<std::uint16_t>& v) {
  std::string b;
  for (std::uint16_t x : v) {
    b += static_cast<char>(x & 0xff);
    b += static_cast<char>(x >> 8);
  }
  return b;
}

template <class T>
std::string le_bytes(const std::vector<T>& v) {
  std::string b(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());  // the test machines are little-endian
  return b;
}

// The bytes of a safetensors file holding `tensors` (in this order in the buffer) and `metadata`.
inline std::string raw_safetensors(const std::vector<RawTensor>& tensors,
                                   const std::map<std::string, std::string>& metadata = {}) {
  // Built with += of one piece at a time (GCC 12 warns, falsely, about long chains of string +).
  std::string json = "{";
  const auto quoted = [&](const std::string& text) {
    json += '"';
    json += text;
    json += '"';
  };
  if (!metadata.empty()) {
    json += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (json.back() != '{') json += ',';
      quoted(k);
      json += ':';
      quoted(v);
    }
    json += '}';
  }
  std::string buffer;
  for (const RawTensor& t : tensors) {
    if (json.back() != '{') json += ',';
    quoted(t.name);
    json += ":{\"dtype\":";
    quoted(t.dtype);
    json += ",\"shape\":[";
    for (std::size_t i = 0; i < t.shape.size(); ++i) {
      if (i) json += ',';
      json += std::to_string(t.shape[i]);
    }
    json += "],\"data_offsets\":[";
    json += std::to_string(buffer.size());
    json += ',';
    json += std::to_string(buffer.size() + t.bytes.size());
    json += "]}";
    buffer += t.bytes;
  }
  json += '}';
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out;
  for (int i = 0; i < 8; ++i) out += static_cast<char>((static_cast<std::uint64_t>(json.size()) >> (8 * i)) & 0xff);
  out += json;
  out += buffer;
  return out;
}

// An F32 tensor from float64 values (rounded to float, as a float32 PyTorch model stores them).
inline RawTensor f32_tensor(const std::string& name, Shape shape, const std::vector<double>& values) {
  std::vector<float> f(values.begin(), values.end());
  return {name, "F32", std::move(shape), le_bytes(f)};
}

inline std::string write_raw(const std::string& name, const std::string& bytes) {
  const std::string path = temp_path(name);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// The start of a torch.save file (PyTorch >= 1.6): a zip archive whose first member is
// ARCHIVE/data.pkl, stored uncompressed. Only the first bytes matter to a reader that refuses it.
inline std::string torch_zip_bytes() {
  const std::string name = "model/data.pkl";
  std::string b = "PK\x03\x04";
  b += std::string("\x00\x00\x08\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 14);  // version, flags, method, time, crc
  b += std::string(8, '\0');                                                           // sizes
  b += static_cast<char>(name.size());
  b += '\0';
  b += std::string("\x00\x00", 2);  // extra field length
  b += name;
  b += "\x80\x02}q\x00.";  // a pickled empty dict
  b += std::string(64, '\0');
  return b;
}

// The start of torch.save(..., _use_new_zipfile_serialization=False): protocol-2 pickle of the
// magic number 0x1950a86a20f9469cfc6c.
inline std::string torch_legacy_bytes() {
  return std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e\x80\x02\x4d\xe9\x03\x2e", 21) +
         std::string(32, '\0');
}

}  // namespace dynascope::test
