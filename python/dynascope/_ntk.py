"""dynascope.ntk: the empirical neural tangent kernel of an Mlp, and what the CLI's `ntk` reports
about a kernel matrix: kernel-target alignment, top eigenvalues, cumulative energies E_k, distance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._arrays import check_array, check_finite, device_of, empty, framework, from_numpy, host_view, to_framework
from ._core import InvalidArgument, ShapeMismatch
from ._mlp import Mlp
from ._runtime import ProgressArg, check_cuda, cuda_available, cuda_status, cuda_stream, progress_callback
from ._runtime import threads as _threads

# cuda_available and cuda_status live in _runtime; they are exported here, with the first
# function that computes on CUDA.
__all__ = ["ntk", "KernelSummary", "kernel_summary", "kernel_target_alignment", "kernel_eigenvalues",
           "cumulative_energy", "kernel_distance", "energy_ks", "cuda_available", "cuda_status"]


def ntk(model: Mlp, x1: Any, x2: Any = None, outputs: str = "trace", method: str = "auto",
        per_layer: bool = False, threads: Optional[int] = None, progress: ProgressArg = None) -> Any:
    """The empirical neural tangent kernel of ``model`` between the rows of ``x1`` and ``x2``.

    * ``x1`` [N1, D], ``x2`` [N2, D] (None: ``x2 = x1``, computed on the symmetric path): NumPy
      arrays, torch tensors (CPU or CUDA) or JAX CPU arrays with the model's dtype (float32 or
      float64), C-contiguous. They are read in place, never copied.
    * CUDA: when ``x1`` is a torch tensor on a CUDA device, the kernel is computed there, on the
      caller's current stream (``torch.cuda.current_stream(x1.device)``); ``x2`` and the model's
      parameters must be on the same device (``Mlp.from_torch`` of a CUDA model keeps them
      there), the result is a torch tensor on that device allocated by torch, and the call waits
      for the stream before it returns. Needs a dynascope built with CUDA (see
      :func:`cuda_status`).
    * ``outputs``: "full" [N1, O, N2, O], "diagonal" [N1, N2, O], "trace" [N1, N2] (the sum over
      outputs) or "sum" [N1, N2] (the kernel of the summed output).
    * ``method``: "auto", "structured", "jvp" or "jacobian" (all give the same numbers).
    * ``per_layer``: also return one kernel per layer (they sum to the kernel).
    * ``threads``: host threads; None uses ``os.cpu_count()`` (explicitly, because importing
      torch lowers OpenMP's default thread count).
    * ``progress``: None (the default: a tqdm bar when tqdm is installed, see
      :func:`dynascope.set_progress`), True, False, or a callable ``(task, done, total)``.

    Returns the kernel in ``x1``'s framework and on its device (NumPy in, NumPy out; torch in,
    torch out), or ``(kernel, [kernel_layer_1, ..., kernel_layer_L])`` when ``per_layer`` is true.
    """
    if not isinstance(model, Mlp):
        raise InvalidArgument(f"model: expected a dynascope.Mlp, got {type(model).__name__}")
    fw, dtype = check_array(x1, "x1", 2, model.dtype, allow_cuda=True)
    device = device_of(x1)
    if device != "cpu":
        check_cuda(device, "x1")   # first: on a host-only build, the fix is x1.cpu()
    if x2 is not None:
        check_array(x2, "x2", 2, model.dtype, allow_cuda=True)
        if device_of(x2) != device:
            raise InvalidArgument(f"x2: on {device_of(x2)}, but x1 is on {device}; pass both on one device "
                                  f"(x2.to(x1.device))")
    if model.device != device:
        raise InvalidArgument(f"model: the Mlp's parameters are on {model.device}, but x1 is on {device}; "
                              f"pass model.to(x1.device) (or model.cpu()), or move x1")
    stream = cuda_stream(device) if device != "cpu" else 0
    d = model.widths[0]
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and x.shape[1] != d:
            raise ShapeMismatch(f"{name}: the network {model.arch} takes {d} inputs per sample, "
                                f"got shape {tuple(x.shape)}")
        if x is not None and x.shape[0] == 0:
            raise ShapeMismatch(f"{name}: no samples (shape {tuple(x.shape)}); the kernel needs at least one row")
        if x is not None:
            check_finite(x, name)   # one pass; a NaN input would give a silently NaN kernel
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    shape = _core.kernel_shape(outputs, x1.shape[0], n2, model.widths[-1])
    out = empty(fw, shape, dtype, device)
    layers = [empty(fw, shape, dtype, device) for _ in range(len(model.widths) - 1)] if per_layer else []
    with progress_callback(progress) as report:
        _core.ntk_into(model._spec, model.device_params_view, host_view(x1, "x1"),
                       None if x2 is None else host_view(x2, "x2"), outputs, method, _threads(threads), report,
                       out, layers, stream)
    if per_layer:
        return to_framework(fw, out), [to_framework(fw, l) for l in layers]
    return to_framework(fw, out)


# ---- What the CLI's `ntk` reports about a kernel matrix ----------------------------------------

def _kernel_matrix(kernel: Any, name: str = "kernel") -> Tuple[str, str, Any, Optional[Tuple[int, int]]]:
    """(framework, dtype, the square matrix view [M, M] the core reads, (N, O) for a full kernel)."""
    fw, dtype = check_array(kernel, name, None)
    shape = tuple(kernel.shape)
    view = host_view(kernel, name)
    full = None
    if len(shape) == 3:
        raise ShapeMismatch(f"{name}: the diagonal kernel [N1, N2, O] is a stack of per-output kernels, not one matrix "
                            f"(alignment, eigenvalues and energies are defined for the trace, sum and full kernels)")
    if len(shape) == 4:
        if shape[0] != shape[2] or shape[1] != shape[3]:
            raise ShapeMismatch(f"{name}: expected a full kernel [N, O, N, O] of one input set, got shape {shape}")
        full = (shape[0], shape[1])
        view = view.reshape(shape[0] * shape[1], shape[0] * shape[1])   # a view: the array is C-contiguous
    elif len(shape) != 2 or shape[0] != shape[1]:
        raise ShapeMismatch(f"{name}: expected a square kernel [M, M] (the trace or sum kernel of one input set) or a "
                            f"full kernel [N, O, N, O], got shape {shape}")
    if view.shape[0] == 0:
        raise ShapeMismatch(f"{name}: the kernel is empty")
    return fw, dtype, view, full


def _to_numpy(a: Any, name: str) -> np.ndarray:
    fw = framework(a, name)
    if fw == "torch":
        return a.detach().cpu().numpy()
    return np.asarray(host_view(a, name))


def _targets(targets: Any, m: int, full: Optional[Tuple[int, int]], name: str = "targets") -> np.ndarray:
    """The targets laid out for the kernel's rows as float64 [M, C] (a small copy): integer labels
    [N] become one-hot rows, float targets are used as given; for a full kernel [N, O, N, O] the
    single column vec(Y) of length N*O (labels one-hot over the O outputs, or float targets [N, O])."""
    y = _to_numpy(targets, name)
    if y.dtype.kind in "iub":
        if y.ndim != 1:
            raise ShapeMismatch(f"{name}: integer targets are class labels [N], got shape {y.shape}")
        if y.size and y.min() < 0:
            raise InvalidArgument(f"{name}: class labels must be >= 0, got {int(y.min())}")
        classes = full[1] if full else (int(y.max()) + 1 if y.size else 1)
        if full and y.size and y.max() >= classes:
            raise InvalidArgument(f"{name}: the full kernel needs one target per network output ({classes}); label "
                                  f"{int(y.max())} is out of range")
        onehot = np.zeros((y.shape[0], classes))
        onehot[np.arange(y.shape[0]), y.astype(np.int64)] = 1.0
        y = onehot
    elif y.dtype.kind == "f":
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():
            raise InvalidArgument(f"{name}: contains NaN or infinite values")
        if y.ndim == 1:
            y = y.reshape(-1, 1)
    else:
        raise InvalidArgument(f"{name}: expected integer class labels [N] or float targets [N, C], got dtype {y.dtype}")
    if y.ndim != 2:
        raise ShapeMismatch(f"{name}: expected labels [N] or targets [N, C], got shape {y.shape}")
    if full and y.shape[0] == full[0] and y.shape[0] != m:
        if y.shape[1] != full[1]:
            raise ShapeMismatch(f"{name}: the full kernel needs one target per network output ({full[1]}), got "
                                f"{y.shape[1]}")
        y = y.reshape(m, 1)   # row-major [N, O] is vec(Y) in the kernel's (n, a) order
    if y.shape[0] != m:
        raise ShapeMismatch(f"{name}: the targets have {y.shape[0]} rows but the kernel {m}")
    return np.ascontiguousarray(y, dtype=np.float64)


def _center(y: np.ndarray) -> np.ndarray:
    return y - y.mean(axis=0, keepdims=True)


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def _check_ks(ks: Sequence[int], m: int, name: str) -> List[int]:
    out = []
    for q in ks:
        if not _is_int(q) or not 1 <= int(q) <= m:
            raise InvalidArgument(f"{name}: k must be an integer in [1, {m}] (the kernel's size), got {q!r}")
        out.append(int(q))
    return out


def _eigen(view: Any, want: int, dtype: str, seed: int, threads: Optional[int],
           progress: ProgressArg) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    m = view.shape[0]
    if not _is_int(want) or not 1 <= want <= m:
        raise InvalidArgument(f"k: expected an integer in [1, {m}] (the kernel's size), got {want!r}")
    if not _is_int(seed) or seed < 0:
        raise InvalidArgument(f"seed: expected an integer >= 0, got {seed!r}")
    values = np.empty(int(want))
    vectors = np.empty((int(want), m), dtype=dtype)
    nthreads = _threads(threads)
    with progress_callback(progress) as report:
        info = _core.kernel_eigen_into(view, int(seed), nthreads, report, values, vectors)
    return values, vectors, info


@dataclass
class KernelSummary:
    """What the CLI's ``dynascope ntk`` reports about a square kernel (the same JSON keys).

    Fields are None when not asked for (or, for the alignments, without targets).
    """
    trace: float
    """The matrix trace of the kernel (for a full kernel Σ_i Σ_a Θ(x_i, x_i)_aa)."""
    frobenius: float
    """The kernel's Frobenius norm."""
    kta: Optional[float] = None
    """Uncentred kernel-target alignment ⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F) (with targets)."""
    kta_centered: Optional[float] = None
    """Centred alignment: K → HKH, Y → HY with H = I − 11ᵀ/M (with targets)."""
    eigenvalues: Optional[np.ndarray] = None
    """The k largest eigenvalues, descending, float64 [k] in the kernel's framework (when ``k`` > 0)."""
    energy: Optional[Dict[int, float]] = None
    """{k: E_k}, the share of the targets' energy in the top-k eigenvectors (``energy`` given)."""
    energy_targets: Optional[str] = None
    """"centered" or "raw": which targets E_k measures (``energy`` given)."""
    eigen: Optional[Dict[str, Any]] = None
    """The eigensolver's report (method, status, all_converged, multiplicity_checked, k, tol,
    max_residual, matvecs, warnings), when eigenvalues or energies were computed."""


def kernel_summary(kernel: Any, targets: Any = None, k: int = 0, energy: Optional[Sequence[int]] = None,
                   energy_targets: str = "centered", seed: int = 0, threads: Optional[int] = None,
                   progress: ProgressArg = None) -> KernelSummary:
    """Everything the CLI's ``dynascope ntk`` reports about a kernel, with the same code and keys.

    * ``kernel``: a square kernel of one input set: [M, M] (``outputs="trace"`` or ``"sum"``) or a
      full kernel [N, O, N, O] (viewed as [N*O, N*O]); float32 or float64, C-contiguous, NumPy,
      torch or JAX, finite; symmetric (to 1e-5 relative in float32, 1e-10 in float64) where
      eigenvalues, energies or the centred alignment are computed.
    * ``targets``: None, integer class labels [N] (one-hot rows) or float targets [N, C] / [N];
      for a full kernel vec(Y): labels one-hot over the O outputs, or float targets [N, O].
    * ``k``: the number of largest eigenvalues to report (the CLI's ``--k``; 0: none).
    * ``energy``: the k values of E_k (the CLI's ``--energy K1,K2,...``; needs targets).
    * ``energy_targets``: "centered" (column means removed, the default) or "raw".
    * ``seed``: the eigensolver's random start (Lanczos, used for kernels above 400 rows when at
      most a quarter of the eigenvectors are wanted; the dense solver otherwise).
    * ``threads``, ``progress``: as :func:`dynascope.ntk`.

    Returns a :class:`KernelSummary`.
    """
    fw, dtype, view, full = _kernel_matrix(kernel)
    m = view.shape[0]
    if energy_targets not in ("centered", "raw"):
        raise InvalidArgument(f"energy_targets: expected 'centered' or 'raw', got {energy_targets!r}")
    if not _is_int(k) or not 0 <= k <= m:
        raise InvalidArgument(f"k: expected an integer in [0, {m}] (the kernel's size), got {k!r}")
    ks = _check_ks(energy, m, "energy") if energy is not None else []
    if ks and targets is None:
        raise InvalidArgument("energy: E_k needs targets (targets=labels or values)")
    y = _targets(targets, m, full) if targets is not None else None
    check_finite(view, "kernel")
    kv = _to_numpy(view, "kernel")
    r = KernelSummary(trace=float(np.trace(kv, dtype=np.float64)),
                      frobenius=float(np.sqrt(np.einsum("ij,ij->", kv, kv, dtype=np.float64))))
    if y is not None:
        r.kta = float(_core.kernel_target_alignment(view, y, False))
        r.kta_centered = float(_core.kernel_target_alignment(view, y, True))
    want = max([int(k)] + ks)
    if want == 0:
        return r
    values, vectors, info = _eigen(view, want, dtype, seed, threads, progress)
    if k > 0:
        r.eigenvalues = from_numpy(fw, values[:k].copy())
    if ks:
        target = _center(y) if energy_targets == "centered" else y
        e = _core.cumulative_energy(vectors, np.ascontiguousarray(target), ks)
        r.energy = {q: float(v) for q, v in zip(ks, e)}
        r.energy_targets = energy_targets
    r.eigen = dict(info)
    return r


def kernel_target_alignment(kernel: Any, targets: Any, centered: bool = True) -> float:
    """Kernel-target alignment ⟨K, YYᵀ⟩_F / (‖K‖_F ‖YYᵀ‖_F) (Cristianini et al.; for one column
    yᵀKy / (‖K‖_F ‖y‖²)); ``centered`` (the default): with K → HKH and Y → HY, H = I − 11ᵀ/M
    (Cortes, Mohri and Rostamizadeh), which removes the constant mode (the CLI's ``kta_centered``;
    ``centered=False`` gives ``kta``).

    ``kernel`` and ``targets`` as :func:`kernel_summary`; float64 sums, one pass over the kernel,
    no copy of it. Returns a float (0 when K or Y is zero).
    """
    _, _, view, full = _kernel_matrix(kernel)
    y = _targets(targets, view.shape[0], full)
    check_finite(view, "kernel")
    return float(_core.kernel_target_alignment(view, y, bool(centered)))


def kernel_eigenvalues(kernel: Any, k: int = 5, seed: int = 0, threads: Optional[int] = None,
                       progress: ProgressArg = None) -> Any:
    """The ``k`` largest eigenvalues of a symmetric kernel (the CLI's ``ntk --k``), descending, as a
    float64 [k] array in the kernel's framework. ``kernel`` as :func:`kernel_summary`; the dense
    solver for kernels up to 400 rows or when more than a quarter of the eigenvalues are wanted,
    else Lanczos on the kernel in place (``seed``: its random start)."""
    fw, dtype, view, _ = _kernel_matrix(kernel)
    values, _, _ = _eigen(view, k, dtype, seed, threads, progress)
    return from_numpy(fw, values)


def cumulative_energy(kernel: Any, targets: Any, ks: Optional[Sequence[int]] = None,
                      energy_targets: str = "centered", seed: int = 0, threads: Optional[int] = None,
                      progress: ProgressArg = None) -> Dict[int, float]:
    """E_k(Y) = Σ_{i≤k} ‖u_iᵀY‖² / ‖Y‖²_F, the share of the targets' energy in the eigenvectors u_i of
    the k largest eigenvalues of the kernel (Kopitkov and Indelman), for each k in ``ks`` (the CLI's
    ``--energy``; None: 1, 2, 5, 10, 20, 50, ... up to M, and M: see :func:`energy_ks`).

    ``energy_targets``: "centered" (Y with its column means removed, the default: the constant mode
    says nothing about what is learned) or "raw". ``kernel``, ``targets``, ``seed``, ``threads``
    and ``progress`` as :func:`kernel_summary`. Returns {k: E_k}.
    """
    fw, dtype, view, full = _kernel_matrix(kernel)
    m = view.shape[0]
    if energy_targets not in ("centered", "raw"):
        raise InvalidArgument(f"energy_targets: expected 'centered' or 'raw', got {energy_targets!r}")
    ks = _check_ks(list(_core.energy_ks(m)) if ks is None else ks, m, "ks")
    if not ks:
        raise InvalidArgument("ks: expected at least one k")
    y = _targets(targets, m, full)
    _, vectors, _ = _eigen(view, max(ks), dtype, seed, threads, progress)
    target = _center(y) if energy_targets == "centered" else y
    return {q: float(v) for q, v in zip(ks, _core.cumulative_energy(vectors, np.ascontiguousarray(target), ks))}


def kernel_distance(k1: Any, k2: Any) -> float:
    """S(K1, K2) = 1 − ⟨K1, K2⟩_F / (‖K1‖_F ‖K2‖_F), e.g. the distance of a kernel from the initial
    one (the demo's ``distance_to_init``). Any two arrays of the same shape (NumPy, torch, JAX;
    float32 or float64; float32 ones are converted to float64 first, one copy); neither may be zero."""
    a = _to_numpy(k1, "k1")
    b = _to_numpy(k2, "k2")
    for name, v in (("k1", a), ("k2", b)):
        if v.dtype not in (np.float32, np.float64):
            raise InvalidArgument(f"{name}: expected float32 or float64, got {v.dtype}")
        if not np.isfinite(v).all():
            raise InvalidArgument(f"{name}: contains NaN or infinite values")
    if a.shape != b.shape:
        raise ShapeMismatch(f"k2: expected the shape of k1 {a.shape}, got {b.shape}")
    if a.ndim == 0 or a.size == 0:
        raise ShapeMismatch(f"k1: expected a non-empty kernel, got shape {a.shape}")
    a2 = np.ascontiguousarray(a, dtype=np.float64).reshape(a.shape[0], -1)
    b2 = np.ascontiguousarray(b, dtype=np.float64).reshape(b.shape[0], -1)
    return float(_core.kernel_distance(a2, b2))


def energy_ks(m: int) -> List[int]:
    """The k values the CLI reports energies at: 1, 2, 5, 10, 20, 50, 100, ... up to ``m`` (and ``m``)."""
    if not _is_int(m) or m < 1:
        raise InvalidArgument(f"m: expected an integer >= 1, got {m!r}")
    return [int(q) for q in _core.energy_ks(int(m))]
