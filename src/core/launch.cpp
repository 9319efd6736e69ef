#include <string>

#include "kernels/launch.cuh"

namespace dynascope::kern {
void throw_not_compiled_for_cuda(const char* where) {
  throw NotBuiltWithCuda(std::string(where) +
                         ": this kernel was compiled without nvcc and cannot run on a cuda context");
}
}  // namespace dynascope::kern
