// eigsh, spectrum, slq_density, trace: Lanczos/SLQ/Hutchinson on built-in and Python operators.
#include "common.hpp"

namespace dynascope::python {

void register_spectra(nb::module_& m) { (void)m; }

}  // namespace dynascope::python
