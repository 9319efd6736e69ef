// Fuzzes the safetensors reader; an accepted file must survive a write/read round trip unchanged
// (names, order, dtypes, shapes, bytes and metadata).
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dynascope;
  io::Safetensors f;
  try {
    f = io::detail::parse_safetensors(io::detail::MemorySource(fuzz::as_span(data, size), "fuzz.safetensors"));
  } catch (const FileFormatError&) {
    return 0;
  }
  std::vector<const io::Tensor*> tensors;
  for (const auto& nt : f.tensors) {
    fuzz::check_tensor(nt.tensor);
    fuzz::require(f.find(nt.name) == &nt.tensor, "find returns the named tensor");
    tensors.push_back(&nt.tensor);
  }
  const std::vector<std::byte> image = fuzz::concat(io::detail::safetensors_header(f), tensors);
  const io::Safetensors back =
      io::detail::parse_safetensors(io::detail::MemorySource(image, "roundtrip.safetensors"));
  fuzz::require(back.metadata == f.metadata, "safetensors round trip changed the metadata");
  fuzz::require(back.tensors.size() == f.tensors.size(), "safetensors round trip changed the tensor count");
  for (std::size_t i = 0; i < f.tensors.size(); ++i) {
    fuzz::require(back.tensors[i].name == f.tensors[i].name, "safetensors round trip changed a name or the order");
    fuzz::require(fuzz::same(back.tensors[i].tensor, f.tensors[i].tensor), "safetensors round trip changed a tensor");
  }
  return 0;
}
