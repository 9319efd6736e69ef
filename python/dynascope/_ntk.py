"""dynascope.ntk: the empirical neural tangent kernel of an Mlp."""

from __future__ import annotations

from typing import Any, Optional

from . import _core
from ._arrays import check_array, empty, host_view, to_framework
from ._core import InvalidArgument, ShapeMismatch
from ._mlp import Mlp
from ._runtime import ProgressArg, progress_callback
from ._runtime import threads as _threads

__all__ = ["ntk"]


def ntk(model: Mlp, x1: Any, x2: Any = None, outputs: str = "trace", method: str = "auto",
        per_layer: bool = False, threads: Optional[int] = None, progress: ProgressArg = None) -> Any:
    """The empirical neural tangent kernel of ``model`` between the rows of ``x1`` and ``x2``.

    * ``x1`` [N1, D], ``x2`` [N2, D] (None: ``x2 = x1``, computed on the symmetric path): NumPy
      arrays or torch CPU tensors with the model's dtype (float32 or float64), C-contiguous. They
      are read in place, never copied.
    * ``outputs``: "full" [N1, O, N2, O], "diagonal" [N1, N2, O], "trace" [N1, N2] (the sum over
      outputs) or "sum" [N1, N2] (the kernel of the summed output).
    * ``method``: "auto", "structured", "jvp" or "jacobian" (all give the same numbers).
    * ``per_layer``: also return one kernel per layer (they sum to the kernel).
    * ``threads``: host threads; None uses ``os.cpu_count()`` (explicitly, because importing
      torch lowers OpenMP's default thread count).
    * ``progress``: None (the default: a tqdm bar when tqdm is installed, see
      :func:`dynascope.set_progress`), True, False, or a callable ``(task, done, total)``.

    Returns the kernel in ``x1``'s framework (NumPy in, NumPy out; torch in, torch out), or
    ``(kernel, [kernel_layer_1, ..., kernel_layer_L])`` when ``per_layer`` is true.
    """
    if not isinstance(model, Mlp):
        raise InvalidArgument(f"model: expected a dynascope.Mlp, got {type(model).__name__}")
    fw, dtype = check_array(x1, "x1", 2, model.dtype)
    if x2 is not None:
        check_array(x2, "x2", 2, model.dtype)
    d = model.widths[0]
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and x.shape[1] != d:
            raise ShapeMismatch(f"{name}: the network {model.arch} takes {d} inputs per sample, "
                                f"got shape {tuple(x.shape)}")
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    shape = _core.kernel_shape(outputs, x1.shape[0], n2, model.widths[-1])
    out = empty(fw, shape, dtype)
    layers = [empty(fw, shape, dtype) for _ in range(len(model.widths) - 1)] if per_layer else []
    with progress_callback(progress) as report:
        _core.ntk_into(model._spec, model.params_view, host_view(x1, "x1"),
                       None if x2 is None else host_view(x2, "x2"), outputs, method, _threads(threads), report,
                       out, layers)
    if per_layer:
        return to_framework(fw, out), [to_framework(fw, l) for l in layers]
    return to_framework(fw, out)
