#pragma once
// Shared by the libFuzzer targets. A FileFormatError is the expected way to reject an input;
// anything else (a crash, a sanitizer report, another exception, a broken invariant) is a finding.
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "io/io_detail.hpp"

namespace dynascope::fuzz {

inline std::span<const std::byte> as_span(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const std::byte*>(data), size};
}

// Reports a broken invariant as a crash, which libFuzzer records with the input.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
    std::abort();
  }
}

// An accepted tensor is consistent and converts to every element type.
inline void check_tensor(const io::Tensor& t) {
  io::detail::validate_tensor(t, "fuzz: accepted tensor");
  const std::size_t n = t.bytes.size() / size_of(t.dtype);
  require(t.to_vector<float>().size() == n, "to_vector<float> size");
  require(t.to_vector<double>().size() == n, "to_vector<double> size");
  require(t.to_vector<std::int32_t>().size() == n, "to_vector<int32_t> size");
  require(t.to_vector<std::int64_t>().size() == n, "to_vector<int64_t> size");
  require(t.to_vector<std::uint8_t>().size() == n, "to_vector<uint8_t> size");
}

inline bool same(const io::Tensor& a, const io::Tensor& b) {
  return a.dtype == b.dtype && a.shape == b.shape && a.bytes == b.bytes;
}

// The bytes of a header followed by data pieces.
inline std::vector<std::byte> concat(const std::string& header, const std::vector<const io::Tensor*>& tensors) {
  std::vector<std::byte> out(reinterpret_cast<const std::byte*>(header.data()),
                             reinterpret_cast<const std::byte*>(header.data()) + header.size());
  for (const io::Tensor* t : tensors) out.insert(out.end(), t->bytes.begin(), t->bytes.end());
  return out;
}

}  // namespace dynascope::fuzz
