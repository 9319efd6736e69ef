"""Threads and progress for every call into the compiled core."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Union

from . import _core
from ._core import InvalidArgument

ProgressArg = Union[None, bool, Callable[[str, int, int], Any]]

_default_progress = True


def set_progress(enabled: bool) -> None:
    """Turns the progress bars of long computations on (the default, when tqdm is installed) or
    off for every later call that does not pass ``progress=`` itself."""
    global _default_progress
    if not isinstance(enabled, bool):
        raise InvalidArgument(f"enabled: expected True or False, got {enabled!r}")
    _default_progress = enabled


def cuda_status() -> Dict[str, Any]:
    """What the library knows about CUDA: ``{"built": bool, "device_count": int, "reason": str}``.

    ``built``: this dynascope was compiled with the CUDA backend (``pip install .`` does so when
    nvcc is found). ``device_count``: the devices it can use (0 without a GPU or driver), and
    ``reason`` says why none when there is none. Never touches a device when none is usable, and
    does not need PyTorch.
    """
    return dict(_core.cuda_status())


def cuda_available() -> bool:
    """True when the library has the CUDA backend and at least one usable device; then
    :func:`dynascope.ntk` computes on CUDA tensors where they are."""
    return bool(_core.cuda_available())


def check_cuda(device: str, name: str) -> None:
    """Refuses, with the fix, a CUDA array ``name`` on ``device`` when this build has no CUDA
    backend or no usable device (before anything is allocated there)."""
    st = _core.cuda_status()
    if not st["built"]:
        raise InvalidArgument(f"{name}: the tensor is on {device}, but this dynascope was built without the CUDA "
                              f"backend: pass {name}.cpu() (and model.cpu()), or reinstall it where nvcc is on the "
                              f"PATH (pip install .)")
    if st["device_count"] == 0:
        reason = st["reason"].split("; use --backend host")[0]   # the command line's advice, not Python's
        raise InvalidArgument(f"{name}: the tensor is on {device}, but the library sees no usable CUDA device "
                              f"({reason}): pass {name}.cpu()")


def cuda_stream(device: str) -> int:
    """The caller's current CUDA stream on ``device`` (torch's ``current_stream``), as the integer
    handle the core queues its work on; 0 is the default stream."""
    import torch
    return int(torch.cuda.current_stream(torch.device(device)).cuda_stream)


def threads(value: Optional[int]) -> int:
    """Host threads: None means all cores (``os.cpu_count()``, passed explicitly because importing
    torch lowers OpenMP's default to one thread); 0 means OpenMP's own default (``OMP_NUM_THREADS``
    when set)."""
    if value is None:
        return os.cpu_count() or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"threads: expected None or an integer >= 0, got {value!r}")
    return value


class _Bars:
    """tqdm bars, one per task: the library reports (task, done, total) from its calling thread."""

    def __init__(self, tqdm: Any) -> None:
        self._tqdm = tqdm
        self._bar = None
        self._task: Optional[str] = None

    def __call__(self, task: str, done: int, total: int) -> None:
        key = task.split(":", 1)[0]   # "lanczos: restart 3, ..." is one bar with a changing description
        if self._bar is None or key != self._task or self._bar.total != total:
            self.close()
            # delay: a computation shorter than half a second never draws a bar.
            self._bar = self._tqdm(total=total, desc=key, leave=False, dynamic_ncols=True, delay=0.5)
            self._task = key
        if key != task:
            self._bar.set_postfix_str(task[len(key) + 1:].strip(), refresh=False)
        self._bar.update(max(0, done - self._bar.n))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


_warned_no_tqdm = False


def _warn_no_tqdm() -> None:
    global _warned_no_tqdm
    if not _warned_no_tqdm:
        _warned_no_tqdm = True
        import warnings
        warnings.warn("progress=True shows bars through tqdm, which is not installed (pip install tqdm); "
                      "pass a callable (task, done, total) to receive the progress reports instead", RuntimeWarning,
                      stacklevel=4)


@contextmanager
def progress_callback(progress: ProgressArg) -> Iterator[Optional[Callable[[str, int, int], Any]]]:
    """The callable handed to the core for one call: ``progress`` itself when it is callable,
    tqdm bars when it is True (or None and the default is on) and tqdm is installed, else None.
    Ctrl-C is honoured either way (the core checks for signals at every progress point)."""
    if callable(progress):
        yield progress
        return
    if progress is not None and not isinstance(progress, bool):
        raise InvalidArgument(f"progress: expected None, True, False or a callable (task, done, total), "
                              f"got {type(progress).__name__}")
    enabled = _default_progress if progress is None else progress
    if not enabled:
        yield None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if progress is True:
            _warn_no_tqdm()
        yield None
        return
    bars = _Bars(tqdm)
    try:
        yield bars
    finally:
        bars.close()
