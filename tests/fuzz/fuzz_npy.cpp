// Fuzzes the .npy reader; an accepted array must survive a write/read round trip unchanged.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dynascope;
  io::Tensor t;
  try {
    t = io::detail::parse_npy(io::detail::MemorySource(fuzz::as_span(data, size), "fuzz.npy"));
  } catch (const FileFormatError&) {
    return 0;
  }
  fuzz::check_tensor(t);
  const std::vector<std::byte> image = fuzz::concat(io::detail::npy_header(t), {&t});
  const io::Tensor back = io::detail::parse_npy(io::detail::MemorySource(image, "roundtrip.npy"));
  fuzz::require(fuzz::same(t, back), "npy round trip changed the array");
  return 0;
}
