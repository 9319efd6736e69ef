// elasticity and response.
#include "common.hpp"

namespace dynascope::python {

void register_elasticity(nb::module_& m) { (void)m; }

}  // namespace dynascope::python
