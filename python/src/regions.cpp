// local_complexity, count_patterns, regions.
#include "common.hpp"

namespace dynascope::python {

void register_regions(nb::module_& m) { (void)m; }

}  // namespace dynascope::python
