// dynascope._core: the nanobind extension behind the `dynascope` Python package. This layer is
// deliberately thin: the Python side (python/dynascope/) checks the caller's arrays and allocates
// results in the caller's framework; the bindings (one translation unit per family) wrap them as
// views and call the library with the GIL released (common.hpp).
#include "common.hpp"

NB_MODULE(_core, m) {
  using namespace dynascope::python;
  m.doc() = "dynascope's compiled core (use the `dynascope` package, not this module)";
  register_errors(m);
  register_models(m);
  register_ntk(m);
  register_spectra(m);
  register_regions(m);
  register_llc(m);
  register_elasticity(m);
  register_train(m);
  register_generic(m);
  register_io(m);
}
