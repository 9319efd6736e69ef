// llc: SGLD chains on an Mlp or a Python batched loss-and-gradient callback.
#include "common.hpp"

namespace dynascope::python {

void register_llc(nb::module_& m) { (void)m; }

}  // namespace dynascope::python
