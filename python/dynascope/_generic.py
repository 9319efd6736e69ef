"""Generic paths for any model: the empirical NTK of any PyTorch module from per-sample Jacobians
computed by torch.func (functorch on torch 1.13), and the Gram kernel of Jacobians the caller
already holds, both contracted by the library's tiled Gram kernels."""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import _core
from ._arrays import check_array, check_finite, empty, framework, host_view, to_framework
from ._core import InvalidArgument, ShapeMismatch
from ._runtime import ProgressArg, progress_callback
from ._runtime import threads as _threads
from ._torchfunc import check_batch, func_api
__all__ = ["torch_ntk", "gram"]

# Per-sample Jacobians are computed in chunks of samples whose Jacobian stays under this size
# (when chunk_size is not given), so torch's temporaries stay bounded whatever the tile size.
_CHUNK_BYTES = 1 << 27

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable; 0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _max_memory(value: Union[None, int, str]) -> int:
    """Bytes of the workspace budget (the CLI's --max-memory): None (the library's default, 1 GiB),
    an integer, or a string with a suffix K, M, G (powers of 1024), e.g. "512M"."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise InvalidArgument(f"max_memory: expected None, a number of bytes or a string such as '512M', got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidArgument(f"max_memory: expected a positive number of bytes, got {value}")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", value, flags=re.IGNORECASE)
        if m:
            b = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
            if b > 0:
                return b
    raise InvalidArgument(f"max_memory: expected None, a positive number of bytes or a string such as '512M' "
                          f"(suffixes K, M, G), got {value!r}")


def gram(j1: Any, j2: Any = None, outputs: str = "trace", max_memory: Union[None, int, str] = None,
         threads: Optional[int] = None, progress: ProgressArg = None) -> Any:
    """The kernel K = J1 J2ᵀ of per-sample Jacobians the caller already holds.

    * ``j1`` [N1, O, P]: row (n, a) is d f_a(x_n) / dw (or [N1, P]: per-sample gradients, O = 1);
      ``j2`` [N2, O, P] likewise (None: ``j2 = j1``, computed on the exactly symmetric path).
      NumPy arrays, torch CPU tensors or JAX CPU arrays, float32 or float64 (both the same),
      C-contiguous, finite; read in place, never copied as a whole.
    * ``outputs``: "full" [N1, O, N2, O], "diagonal" [N1, N2, O], "trace" [N1, N2] (the sum over
      outputs, default) or "sum" [N1, N2] (the kernel of the summed output), as :func:`dynascope.ntk`.
    * ``max_memory``: the workspace budget for the tiles (the CLI's ``--max-memory``): None (the
      library's default, 1 GiB), bytes, or a string such as "512M". Larger problems are tiled.
    * ``threads``, ``progress``: as :func:`dynascope.ntk` (progress reports the tiles).

    Returns the kernel in ``j1``'s framework and dtype.
    """
    fw, dtype = check_array(j1, "j1", None)
    if j1.ndim not in (2, 3):
        raise ShapeMismatch(f"j1: expected [N, O, P] Jacobians or [N, P] per-sample gradients, got shape "
                            f"{tuple(j1.shape)}")
    if j2 is not None:
        _, dtype2 = check_array(j2, "j2", j1.ndim)
        if dtype2 != dtype:
            raise InvalidArgument(f"j2: dtype {dtype2} differs from j1's ({dtype}); convert one of them")
        if tuple(j2.shape[1:]) != tuple(j1.shape[1:]):
            raise ShapeMismatch(f"j2: expected shape [N2, {', '.join(str(s) for s in j1.shape[1:])}] as j1's "
                                f"{tuple(j1.shape)}, got {tuple(j2.shape)}")
    budget = _max_memory(max_memory)
    nthreads = _threads(threads)
    check_finite(j1, "j1")
    if j2 is not None:
        check_finite(j2, "j2")
    o = j1.shape[1] if j1.ndim == 3 else 1
    n2 = j1.shape[0] if j2 is None else j2.shape[0]
    out = empty(fw, _core.kernel_shape(outputs, j1.shape[0], n2, o), dtype)
    with progress_callback(progress) as report:
        _core.gram_into(host_view(j1, "j1"), None if j2 is None else host_view(j2, "j2"), outputs, nthreads, report,
                        budget, out)
    return to_framework(fw, out)


def _as_torch(x: Any, name: str) -> Tuple[str, Any]:
    """The caller's samples as a torch tensor sharing their memory, and their framework."""
    import torch
    fw = framework(x, name)
    if fw == "torch":
        if x.device.type != "cpu":
            raise InvalidArgument(f"{name}: this version of the package computes on the host only; the tensor is on "
                                  f"{x.device}: pass {name}.cpu()")
        return fw, x.detach()
    if fw == "numpy":
        return fw, torch.from_numpy(x)
    host_view(x, name)  # refuses JAX arrays off the CPU with the fix
    return fw, torch.utils.dlpack.from_dlpack(x)


def _check_mode(model: Any) -> None:
    """Per-sample Jacobians need a model whose output for one sample depends on that sample only."""
    import torch.nn as nn
    for name, m in model.named_modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise InvalidArgument(f"model: {name or 'the model'} ({type(m).__name__}) is in training mode, where it "
                                  f"normalises over the batch, so per-sample Jacobians are not defined: call "
                                  f"model.eval() first")
        if isinstance(m, nn.modules.dropout._DropoutNd):
            raise InvalidArgument(f"model: {name or 'the model'} ({type(m).__name__}) is in training mode, where it is "
                                  f"random: call model.eval() first")


def torch_ntk(model: Any, x1: Any, x2: Any = None, outputs: str = "trace", chunk_size: Optional[int] = None,
              max_memory: Union[None, int, str] = None, threads: Optional[int] = None,
              progress: ProgressArg = None) -> Any:
    """The empirical NTK of any PyTorch module between the samples of ``x1`` and ``x2``.

    Θ(x, x')_ab = Σ_p ∂f_a(x)/∂w_p ∂f_b(x')/∂w_p over the model's trainable parameters (those with
    ``requires_grad``, in ``parameters_to_vector`` order), unnormalised, as :func:`dynascope.ntk`.
    Per-sample Jacobians come from ``vmap(jacrev(...))`` of torch.func (functorch on torch 1.13)
    through ``functional_call``, a chunk of samples at a time; the library contracts them in
    tiles that fit ``max_memory``, so the full [N, O, P] Jacobian is never held when it would not
    fit (a tile's Jacobians are then recomputed for each tile they meet).

    * ``model``: a ``torch.nn.Module`` on the CPU whose parameters are float32 or float64 (one
      dtype), mapping a batch [B, ...] to outputs [B, ...] (O = the number of outputs per sample).
      Any layer torch.func can differentiate per sample works (Linear, Conv, pooling, norms in eval
      mode, attention, ...); BatchNorm and Dropout must be in eval mode (``model.eval()``).
    * ``x1`` [N1, ...], ``x2`` [N2, ...] (None: ``x2 = x1``, the exactly symmetric kernel): torch
      CPU tensors, NumPy arrays or JAX CPU arrays with the parameters' dtype, finite.
    * ``outputs``: "full" [N1, O, N2, O], "diagonal" [N1, N2, O], "trace" [N1, N2] (the sum over
      outputs, default) or "sum" [N1, N2] (the kernel of Σ_a f_a: one Jacobian row per sample).
    * ``chunk_size``: samples per ``vmap(jacrev)`` call; None picks the most whose Jacobian stays
      under 128 MiB (at least 1).
    * ``max_memory``: the workspace budget for the library's tiles (the CLI's ``--max-memory``):
      None (1 GiB), bytes or a string such as "512M".
    * ``threads``: host threads of the contraction (torch uses its own for the Jacobians);
      ``progress``: as :func:`dynascope.ntk` (reports the tiles when there is more than one).

    Returns the kernel in ``x1``'s framework, in the parameters' dtype. The model is not modified.
    """
    import torch
    import torch.nn as nn
    if not isinstance(model, nn.Module):
        raise InvalidArgument(f"model: expected a torch.nn.Module, got {type(model).__module__}.{type(model).__name__}")
    trainable = {k: v for k, v in model.named_parameters() if v.requires_grad}
    if not trainable:
        raise InvalidArgument("model: it has no parameters with requires_grad=True, so its NTK is zero-dimensional")
    dtypes = {v.dtype for v in trainable.values()}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
        raise InvalidArgument(f"model: expected float32 or float64 parameters of one dtype, got "
                              f"{sorted(str(d) for d in dtypes)}; convert with model.double() or model.float()")
    pdtype = next(iter(dtypes))
    devices = {v.device.type for v in trainable.values()}
    if devices != {"cpu"}:
        raise InvalidArgument(f"model: this version of the package computes on the host only; the parameters are on "
                              f"{sorted(devices)}: pass model.cpu()")
    _check_mode(model)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvalidArgument(f"chunk_size: expected None or an integer >= 1, got {chunk_size!r}")
    budget = _max_memory(max_memory)
    nthreads = _threads(threads)
    mode = str(outputs)
    _core.kernel_shape(mode, 1, 1, 1)  # refuses an unknown mode before any work

    fw, t1 = _as_torch(x1, "x1")
    t2 = None
    if x2 is not None:
        _, t2 = _as_torch(x2, "x2")
    for name, t in (("x1", t1), ("x2", t2)):
        if t is None:
            continue
        check_batch(t, name, pdtype, "samples")
    if t2 is not None and tuple(t2.shape[1:]) != tuple(t1.shape[1:]):
        raise ShapeMismatch(f"x2: expected samples of shape {tuple(t1.shape[1:])} as x1's, got {tuple(t2.shape[1:])}")

    api = func_api("torch_ntk needs torch.func (torch >= 2) or functorch (torch 1.13): pip install functorch")
    vmap, jacrev, functional_call = api.vmap, api.jacrev, api.functional_call
    params = {k: v.detach() for k, v in trainable.items()}
    constants = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    constants.update({k: v.detach() for k, v in model.named_buffers()})
    with torch.no_grad():
        y = model(t1[:1])
    if not isinstance(y, torch.Tensor) or y.ndim < 1 or y.shape[0] != 1:
        raise ShapeMismatch(f"model: expected it to map a batch [B, ...] to one tensor of outputs [B, ...]; for a "
                            f"batch of 1 it returned {type(y).__name__} {tuple(getattr(y, 'shape', ()))}")
    o = int(y[0].numel())
    # "sum" is the kernel of the scalar Σ_a f_a: its Jacobian has one row per sample (O times
    # cheaper), and the kernel of a one-output model is the same in every mode.
    summed = mode == "sum"
    o_eff = 1 if summed else o
    core_mode = "trace" if summed else mode
    layout: List[Tuple[str, int, int]] = []
    p = 0
    for k, v in params.items():
        layout.append((k, p, v.numel()))
        p += v.numel()
    itemsize = 8 if pdtype == torch.float64 else 4
    chunk = chunk_size or max(1, _CHUNK_BYTES // max(1, o_eff * p * itemsize))
    if budget == 0:
        # Tiles recompute a block's Jacobians for every tile that needs them (about T/2 times for
        # T tiles), which made this path 6x slower than contracting the full Jacobian at once
        # (784-512-512-10, N = 256: 54 s against torch's 8.8 s with the 1 GiB default). So when
        # the Jacobians of every sample fit in half the memory available now, take a budget that
        # holds them in one tile: each Jacobian is then computed once.
        n_all = t1.shape[0] + (0 if t2 is None else t2.shape[0])
        need = 2 * n_all * o_eff * p * itemsize + (64 << 20)
        budget = max(1 << 30, min(need, _available_memory() // 2))

    def f(w: Dict[str, Any], xi: Any) -> Any:
        out = functional_call(model, {**w, **constants}, (xi.unsqueeze(0),))
        return out.sum() if summed else out.reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))

    def make_fill(t: Any) -> Callable[[int, int, Any], None]:
        def fill(row0: int, rows: int, out: Any) -> None:
            dst = None
            try:
                # out: a NumPy view [rows * O, P] of the library's tile, valid during this call only.
                dst = torch.from_numpy(out).view(rows, o_eff, p)
                for s in range(0, rows, chunk):
                    e = min(rows, s + chunk)
                    with torch.no_grad():
                        j = jac(params, t[row0 + s:row0 + e])
                    for name, off, numel in layout:
                        dst[s:e, :, off:off + numel].copy_(j[name].reshape(e - s, o_eff, numel))
                    del j
            finally:
                dst = out = None  # no reference to the tile may outlive the call (e.g. in a traceback)
        return fill

    n1 = t1.shape[0]
    n2 = n1 if t2 is None else t2.shape[0]
    kernel = empty(fw, _core.kernel_shape(mode, n1, n2, o), str(pdtype).replace("torch.", ""))
    with progress_callback(progress) as report:
        _core.gram_callback_into(make_fill(t1), n1, None if t2 is None else make_fill(t2), n2, o_eff, p, core_mode,
                                 nthreads, report, budget, kernel)
    return to_framework(fw, kernel)
