#include <string>

// Only defines the out-of-line error helper; it launches nothing.
#define DYNASCOPE_HOST_LAUNCH_ONLY
#include "kernels/launch.cuh"

namespace dynascope::kern {
void throw_not_compiled_for_cuda(const char* where) {
  throw NotBuiltWithCuda(std::string(where) +
                         ": this kernel was compiled without nvcc and cannot run on a cuda context");
}
}  // namespace dynascope::kern
