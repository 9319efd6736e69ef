"""dynascope: training-dynamics diagnostics for deep networks, from Python.

Arrays are NumPy arrays, PyTorch CPU tensors or JAX CPU arrays, float32 or float64, C-contiguous;
results come back in the caller's framework, and inputs are never copied. Every function releases
the GIL while it computes, shows a tqdm progress bar on long computations when tqdm is installed
(``progress=False`` or :func:`set_progress` silences it) and stops cleanly on Ctrl-C.

Errors raise :class:`Error` subclasses: :class:`InvalidArgument` and :class:`ShapeMismatch` (both
also ``ValueError``) and :class:`OutOfMemory` (also ``MemoryError``), with the same messages as the
command-line tool.
"""

from __future__ import annotations

from ._core import Error, InvalidArgument, OutOfMemory, ShapeMismatch
from ._mlp import Mlp
from ._ntk import *  # noqa: F401,F403
from ._ntk import __all__ as _ntk_all
from ._runtime import set_progress
from ._report import report
from ._spectra import *  # noqa: F401,F403
from ._spectra import __all__ as _spectra_all
from ._regions import *  # noqa: F401,F403
from ._regions import __all__ as _regions_all
from ._llc import *  # noqa: F401,F403
from ._llc import __all__ as _llc_all
from ._elasticity import *  # noqa: F401,F403
from ._elasticity import __all__ as _elasticity_all
from ._train import *  # noqa: F401,F403
from ._train import __all__ as _train_all
from ._generic import *  # noqa: F401,F403
from ._generic import __all__ as _generic_all
from ._tracker import *  # noqa: F401,F403
from ._tracker import __all__ as _tracker_all

__version__ = "0.1.0"
__all__ = (["Mlp", "set_progress", "report", "Error", "InvalidArgument", "ShapeMismatch", "OutOfMemory",
            "__version__"] + _ntk_all + _spectra_all + _regions_all + _llc_all + _elasticity_all + _train_all + _generic_all
           + _tracker_all)
