// train: the library's trainer.
#include "common.hpp"

namespace dynascope::python {

void register_train(nb::module_& m) { (void)m; }

}  // namespace dynascope::python
