// generic paths for any model: Gram kernels of per-sample Jacobians, sign patterns of captured pre-activations.
#include "common.hpp"

namespace dynascope::python {

void register_generic(nb::module_& m) { (void)m; }

}  // namespace dynascope::python
