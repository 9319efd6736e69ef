// Files: safetensors checkpoints and .npy arrays through the library's readers and writers.
#include "common.hpp"

namespace dynascope::python {

void register_io(nb::module_& m) { (void)m; }

}  // namespace dynascope::python
