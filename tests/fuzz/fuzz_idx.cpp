// Fuzzes the IDX reader (plain and gzip) and the magic-byte dispatch of read_array.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dynascope;
  const io::detail::MemorySource src(fuzz::as_span(data, size), "fuzz.idx");
  io::Tensor t;
  try {
    t = io::detail::parse_idx(src);
  } catch (const FileFormatError&) {
    return 0;
  }
  fuzz::check_tensor(t);
  fuzz::require(fuzz::same(io::detail::parse_array(src), t), "read_array disagrees with read_idx");
  return 0;
}
