"""The caller's arrays: which framework they come from, checks with fix-it messages, and outputs
allocated in that framework. Nothing here copies an input."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ._core import InvalidArgument, ShapeMismatch

_NUMPY_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def module_of(a: Any) -> str:
    return type(a).__module__.split(".")[0]


def is_torch(a: Any) -> bool:
    # Checked by module name so that NumPy-only users never import torch (nor JAX).
    return module_of(a) == "torch"


def is_jax(a: Any) -> bool:
    return module_of(a) in ("jax", "jaxlib")


def framework(a: Any, name: str) -> str:
    """"numpy", "torch" or "jax"; anything else is refused with a message naming the argument."""
    if isinstance(a, np.ndarray):
        return "numpy"
    if is_torch(a):
        return "torch"
    if is_jax(a):
        if "Tracer" in type(a).__name__:
            raise InvalidArgument(f"{name}: a JAX tracer (inside jax.jit, vmap or grad): dynascope computes eagerly on "
                                  f"concrete arrays; call it outside the transformed function (or through "
                                  f"jax.pure_callback)")
        return "jax"
    raise InvalidArgument(
        f"{name}: expected a numpy.ndarray, a torch.Tensor or a jax.Array, got "
        f"{type(a).__module__}.{type(a).__name__} (convert it with numpy.asarray({name}))")


def host_view(a: Any, name: str) -> Any:
    """What the compiled core reads: the array itself (NumPy, torch), or for JAX a read-only NumPy
    view of the same memory through DLPack (JAX arrays on the CPU only)."""
    if is_jax(a):
        devices = {d.platform for d in a.devices()} if hasattr(a, "devices") else {"cpu"}
        if devices != {"cpu"}:
            raise InvalidArgument(f"{name}: dynascope reads JAX arrays on the CPU only (on a GPU, dynascope.ntk "
                                  f"takes torch CUDA tensors); the JAX array is on {sorted(devices)}: pass "
                                  f"jax.device_get({name})")
        return np.from_dlpack(a)
    return a


def device_of(a: Any) -> str:
    """Where an array's memory is, as torch names devices: "cpu" or "cuda:N" (torch tensors on a
    CUDA device). NumPy and JAX CPU arrays are "cpu"."""
    if is_torch(a) and a.device.type == "cuda":
        return f"cuda:{a.device.index if a.device.index is not None else 0}"
    return "cpu"


def check_array(a: Any, name: str, ndim: Optional[int], dtype: Optional[str] = None,
                what: str = "the model's parameters", allow_cuda: bool = False) -> Tuple[str, str]:
    """Checks one input array; returns (framework, dtype name: "float32" or "float64").

    ``ndim`` None accepts any rank. ``dtype`` (when given) is the dtype the call needs, that of
    ``what`` (named in the message). ``allow_cuda``: the call computes where the data lives, so
    torch CUDA tensors are accepted (see :func:`device_of`); else they are refused with the fix.
    Never copies: a wrong dtype or a non-contiguous array gets an error that says how to fix it.
    """
    fw = framework(a, name)
    if fw == "torch":
        import torch
        dt = {torch.float32: "float32", torch.float64: "float64"}.get(a.dtype)
        contiguous = a.is_contiguous()
        fix = f"{name}.contiguous()"
        cast = f"{name}.double()"
        if a.device.type != "cpu" and not (allow_cuda and a.device.type == "cuda"):
            where = ("this function computes on the host only (dynascope.ntk also takes CUDA tensors)"
                     if a.device.type == "cuda" else "dynascope computes on the host or on CUDA devices")
            raise InvalidArgument(f"{name}: {where}; the tensor is on {a.device}: pass {name}.cpu()")
    else:
        view = host_view(a, name) if fw == "jax" else a
        dt = _NUMPY_DTYPES.get(view.dtype)
        contiguous = view.flags.c_contiguous
        fix = f"numpy.ascontiguousarray({name})" if fw == "numpy" else f"jax.numpy.asarray({name}, order='C')"
        cast = f"{name}.astype(numpy.float64)" if fw == "numpy" else f"{name}.astype(jax.numpy.float64)"
    if dt is None:
        raise InvalidArgument(f"{name}: expected float32 or float64, got {a.dtype} (convert it, e.g. {cast})")
    if ndim is not None and a.ndim != ndim:
        what = {1: "[P] (a flat vector)", 2: "[N, D] (one sample per row)"}.get(ndim, "")
        raise ShapeMismatch(f"{name}: expected a {ndim}-D array {what}, got shape {tuple(a.shape)}")
    if not contiguous:
        raise InvalidArgument(f"{name}: the array is not C-contiguous (row-major); pass {fix} (one copy)")
    if dtype is not None and dt != dtype:
        raise InvalidArgument(f"{name}: dtype {dt} differs from {what} ({dtype}); convert one of them")
    return fw, dt


def check_finite(a: Any, name: str) -> None:
    """Refuses NaN and infinite values (one pass over the array)."""
    v = host_view(a, name)
    if is_torch(v) and v.device.type == "cpu" and str(v.dtype) in ("torch.float32", "torch.float64"):
        # NumPy on the same memory: ~20x faster than torch.isfinite(v).all() (0.04 vs 0.7 ms at
        # 512 x 784 float32), which would cost a few % of a call on the README's example.
        ok = bool(np.isfinite(v.detach().numpy()).all())
    elif is_torch(v):
        import torch
        # A NaN or an infinity makes the sum NaN or infinite, so a finite sum proves the array
        # finite, and a sum is much faster than isfinite().all(). A non-finite sum may also be an
        # overflow of finite values: then look element-wise.
        with torch.no_grad():
            ok = bool(torch.isfinite(v.sum())) or bool(torch.isfinite(v).all())
    else:
        ok = bool(np.isfinite(v).all())
    if not ok:
        raise InvalidArgument(f"{name}: contains NaN or infinite values")


def empty(fw: str, shape: Sequence[int], dtype: str, device: str = "cpu") -> Any:
    """An uninitialised output in a framework the core can write into: torch for torch callers
    (on ``device``, "cpu" or "cuda:N": allocated by torch's own allocator there), NumPy for NumPy
    and JAX callers (JAX arrays are immutable: see `to_framework`)."""
    if fw == "torch":
        import torch
        return torch.empty(tuple(shape), dtype=getattr(torch, dtype), device=device)
    if device != "cpu":
        raise InvalidArgument(f"an output on {device} needs a torch caller")
    if fw == "jax":
        return aligned_empty(shape, dtype)
    return np.empty(tuple(shape), dtype=dtype)


# JAX adopts a NumPy buffer through DLPack without a copy only when it starts on a 64-byte boundary
# (XLA's CPU alignment); NumPy's allocator gives 16.
_JAX_ALIGN = 64


def aligned_empty(shape: Sequence[int], dtype: str) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array whose data starts on a 64-byte boundary, so that
    `to_framework` hands it to JAX without a copy."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    raw = np.empty(n + _JAX_ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % _JAX_ALIGN
    return raw[off:off + n].view(dt).reshape(tuple(shape))


def to_framework(fw: str, out: Any) -> Any:
    """An output written by the core, handed to the caller's framework: NumPy and torch arrays are
    returned as they are. JAX adopts an output from `empty` (64-byte aligned) through DLPack, with no
    copy; any other NumPy array it gets as a copy by ``jax.numpy.asarray``.

    Never a DLPack import that JAX must copy: jaxlib (0.4) copies a large unaligned buffer on a
    worker thread and then releases the NumPy array there, under the GIL; when that comes while the
    interpreter shuts down (the import was among a script's last lines), Python ends the worker and
    JAX waits for it forever at exit, so the script hangs after it has finished. ``asarray`` hands
    the release to the thread that holds the GIL instead."""
    if fw != "jax" or out is None:
        return out
    import jax.numpy as jnp
    a = np.asarray(out)
    if (hasattr(jnp, "from_dlpack") and a.size > 0 and a.dtype != np.bool_ and a.flags.c_contiguous
            and a.ctypes.data % _JAX_ALIGN == 0):
        refs = sys.getrefcount(a)
        x = jnp.from_dlpack(a)
        pointer = getattr(x, "unsafe_buffer_pointer", None)
        if pointer is not None and pointer() == a.ctypes.data:
            return x   # adopted: JAX releases `a` when x dies, on the thread that deletes x
        # JAX copied after all: wait (GIL released) until its worker has let go of `a`.
        deadline = time.monotonic() + 2.0
        while sys.getrefcount(a) > refs and time.monotonic() < deadline:
            time.sleep(1e-4)
        return x
    return jnp.asarray(a)


def from_numpy(fw: str, a: np.ndarray) -> Any:
    """A small result computed in NumPy (statistics, curves), in the caller's framework."""
    if fw == "torch":
        import torch
        return torch.from_numpy(np.ascontiguousarray(a))
    return to_framework(fw, a)   # (bool arrays reach JAX through asarray: NumPy 1.24 cannot export bool by DLPack)
