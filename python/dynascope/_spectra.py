"""Spectra of symmetric operators: top-k eigenpairs (Lanczos), the spectral density (SLQ) and the
trace (Hutchinson, Hutch++), for the NTK, Gauss-Newton and Hessian operators of an Mlp, a dense
matrix, a Python matvec, a ``scipy.sparse.linalg.LinearOperator`` and any torch model's loss
curvature (:func:`torch_curvature_operator`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import threading
import weakref

import numpy as np

from . import _core
from ._arrays import check_array, check_finite, empty, framework, from_numpy, host_view, is_torch, to_framework
from ._core import InvalidArgument, ShapeMismatch
from ._mlp import Mlp
from ._runtime import ProgressArg, progress_callback
from ._runtime import threads as _threads

__all__ = ["EigenResult", "SpectralDensity", "TraceEstimate", "Operator", "CallbackOperator", "CurvatureOperator",
           "PreparedOperator", "TorchCurvatureOperator", "ntk_operator", "curvature_operator",
           "torch_curvature_operator", "eigsh", "spectrum", "slq_density", "trace"]


# ---------------------------------------------------------------- results

@dataclass
class EigenResult:
    """Top-k eigenpairs of a symmetric operator (the command line's ``eigen``/``spectrum`` JSON)."""

    eigenvalues: Any
    """[k] float64, in the order of ``which`` (largest: descending)."""
    vectors: Any
    """[k, n] in the operator's dtype; row i is the unit eigenvector of ``eigenvalues[i]``."""
    residuals: Any
    """[k] float64: the true residual norms ||A u_i - lambda_i u_i||."""
    converged: Any
    """[k] bool: met the stopping test (possibly only at the precision floor, see ``status``)."""
    status: List[str]
    """Per eigenvalue: "converged", "precision_limited" or "not_converged"."""
    all_converged: bool
    """Every status is "converged"."""
    multiplicity_checked: bool
    """The set is known to hold the k wanted eigenvalues with their multiplicities (dense path
    always; Lanczos when the missed-eigenvalue check ended with a pass that found nothing new)."""
    missed_recovered: int
    """Pairs found by the missed-eigenvalue check that the first Lanczos pass had missed."""
    iterations: int
    """Lanczos restarts over all passes (1 on the dense path)."""
    matvecs: int
    """Operator applications (vectors)."""
    method: str
    """The path taken: "lanczos" or "dense"."""
    eigen_warnings: List[str] = field(default_factory=list)
    """Advice, e.g. for precision-limited eigenvalues."""


@dataclass
class SpectralDensity:
    """The spectral density by stochastic Lanczos quadrature (``spectrum --density``)."""

    nodes: List[Any]
    """Per probe: the Ritz values theta_j (1-D float64 arrays)."""
    weights: List[Any]
    """Per probe: the quadrature weights tau_j (sum to 1 per probe)."""
    grid: Any
    """[grid] float64: where the density is evaluated."""
    density: Any
    """[grid] float64: the Gaussian-smoothed density on ``grid`` (integrates to 1)."""
    sigma2: float
    """The smoothing variance used."""
    trace_estimate: float
    """n * mean over probes of sum_j tau_j theta_j."""
    trace_stderr: float
    """Standard error of ``trace_estimate``."""
    matvecs: int
    """Operator applications (vectors)."""


@dataclass
class TraceEstimate:
    """A stochastic trace estimate (``spectrum --trace``)."""

    trace_estimate: float
    """The estimate of tr(A)."""
    trace_stderr: float
    """Its standard error (NaN with a single Hutchinson probe; 0 when Hutch++'s sketch spans the
    whole space, where the trace is exact)."""
    trace_method: str
    """"hutchinson" or "hutchpp"."""
    probes: int
    """Random vectors used."""
    matvecs: int
    """Operator applications (vectors)."""


# ---------------------------------------------------------------- operators

class Operator:
    """A symmetric operator for :func:`eigsh`, :func:`slq_density` and :func:`trace`.

    Attributes: ``size`` (n), ``dtype`` ("float32"/"float64") and ``framework`` (the framework
    of the arrays results come back in). Built by :func:`ntk_operator`,
    :func:`curvature_operator`, :func:`torch_curvature_operator` or :class:`CallbackOperator`;
    the spectral functions also accept a dense matrix or a ``scipy.sparse.linalg.LinearOperator``
    directly. ``op.matmat(X)`` applies the operator to the columns of ``X`` [n, b] (``op @ v``
    for a vector [n] or a block [n, b]) through the library, e.g. to check it.
    """

    def __init__(self, core: "_core.Operator", fw: str, keep: Any = None) -> None:
        self._core = core
        self.framework = fw
        self._keep = keep   # the arrays the core operator reads

    @property
    def size(self) -> int:
        return self._core.size

    @property
    def dtype(self) -> str:
        return self._core.dtype

    @property
    def shape(self):
        return (self.size, self.size)

    def matmat(self, x: Any, threads: Optional[int] = None) -> Any:
        """A X for X [n] or [n, b] (NumPy, torch or JAX on the CPU, the operator's dtype); the
        result in X's framework.

        The NTK and curvature operators are built for each call from their arrays as they are now
        (forward pass, and gradient for curvature): pass many vectors as the columns of one X, use
        :meth:`prepared` for many calls, or the solvers, which build the operator once."""
        nthreads = _threads(threads)
        return _apply_columns(x, self.size, self.dtype,
                              lambda rows, out: _core.operator_apply(self._core, rows, out, nthreads))

    def __matmul__(self, x: Any) -> Any:
        return self.matmat(x)

    def prepared(self, threads: Optional[int] = None) -> "PreparedOperator":
        """The operator built once, for many products: ``p = op.prepared(); p @ v1; p @ v2 ...``.

        The NTK and curvature operators compute their forward pass, the loss gradient and their
        workspaces here, once, instead of in every ``op @ X``. Their products combine that state
        with the model and data they still read: after changing either, prepare again (the old
        prepared operator would mix the two). ``threads``: host threads of the products (None:
        ``os.cpu_count()``)."""
        return PreparedOperator(self, _threads(threads))

    def __repr__(self) -> str:
        return f"dynascope.{type(self).__name__}(kind={self._core.kind!r}, size={self.size}, dtype={self.dtype})"


def _apply_columns(x: Any, size: int, dtype: str, apply: Callable[[np.ndarray, np.ndarray], None]) -> Any:
    """A X for X [n] or [n, b] through `apply(rows, out)` on rows [k, n] (the library's layout)."""
    fw, _ = check_array(x, "x", None, dtype)
    if x.ndim not in (1, 2) or x.shape[0] != size:
        raise ShapeMismatch(f"x: expected [{size}] or [{size}, b], got shape {tuple(x.shape)}")
    v = _to_numpy(host_view(x, "x"))
    # rows [k, n]: a vector is read in place; a block's columns are copied once into rows
    rows = np.ascontiguousarray(v, dtype=dtype).reshape(1, -1) if v.ndim == 1 else np.array(v.T, dtype=dtype,
                                                                                              order="C")
    out = np.empty_like(rows)
    apply(rows, out)
    res = out.reshape(-1) if v.ndim == 1 else np.ascontiguousarray(out.T)
    return from_numpy(fw, res)


class PreparedOperator:
    """An operator built once for many products (see :meth:`Operator.prepared`).

    ``p @ X`` and ``p.matmat(X)`` as for the operator; ``size``, ``dtype``, ``shape``,
    ``framework``; for curvature ``loss_value``. The solvers accept it too (they build their own
    operator from the same arrays, once). Calls from several threads are taken one at a time."""

    def __init__(self, op: Operator, threads: int) -> None:
        self.operator = op            # keeps the arrays the prepared products read alive
        self.framework = op.framework
        self._lock = threading.Lock()
        self._core = _core.prepare_operator(op._core, threads)

    size = property(lambda self: self._core.size)
    dtype = property(lambda self: self._core.dtype)
    shape = property(lambda self: (self._core.size, self._core.size))

    @property
    def loss_value(self) -> float:
        """L(w) at the parameters it was prepared at (curvature operators only)."""
        return _core.prepared_loss_value(self._core)

    def matmat(self, x: Any) -> Any:
        """A X for X [n] or [n, b]; the result in X's framework."""
        def apply(rows: np.ndarray, out: np.ndarray) -> None:
            with self._lock:
                _core.prepared_apply(self._core, rows, out)
        return _apply_columns(x, self.size, self.dtype, apply)

    def __matmul__(self, x: Any) -> Any:
        return self.matmat(x)

    def __repr__(self) -> str:
        return f"dynascope.PreparedOperator(kind={self._core.kind!r}, size={self.size}, dtype={self.dtype})"


class CurvatureOperator(Operator):
    """The Gauss-Newton matrix or the loss Hessian of an Mlp on data (see :func:`curvature_operator`)."""

    def __init__(self, core: "_core.Operator", fw: str, keep: Any, loss: str) -> None:
        super().__init__(core, fw, keep)
        self.loss = loss
        self._loss_value: Optional[float] = None

    @property
    def loss_value(self) -> float:
        """L(w): the loss at the parameters (one forward pass, computed once)."""
        if self._loss_value is None:
            self._loss_value = _core.operator_loss_value(self._core, _threads(None))
        return self._loss_value


class CallbackOperator(Operator):
    """A symmetric operator whose products are computed by Python code.

    ``CallbackOperator(size, matvec=None, matmat=None, dtype="float64", framework="numpy", max_block=0)``

    * ``matvec(v)``: A v for one vector v [size]; returns an array [size].
    * ``matmat(V)``: A V for a block V [size, b] (columns are vectors, scipy's convention); returns
      [size, b]. When given it is used for every product (the solvers apply blocks: SLQ all its
      probes at once, Lanczos ``block`` vectors), else ``matvec`` is called once per vector. At
      least one of the two is required.
    * ``dtype``: "float32" or "float64": the precision the solvers compute in and the dtype of the
      vectors handed to the callables. Results are converted to it.
    * ``framework``: "numpy" (the vectors are read-only NumPy arrays) or "torch" (CPU tensors
      sharing memory with the solver's buffers, no copy). They are valid only during the call:
      do not keep them. The returned arrays may be of any framework that ``numpy.asarray`` or
      ``torch.as_tensor`` reads.
    * ``max_block``: the largest block the solvers hand over at once (0: any).

    The callables run while the solver waits, with the GIL held; an exception raised in them
    (and Ctrl-C) stops the computation and reaches the caller unchanged. A result that is not
    finite, or of the wrong shape, raises :class:`dynascope.InvalidArgument` /
    :class:`dynascope.ShapeMismatch`.
    """

    def __init__(self, size: int, matvec: Optional[Callable[[Any], Any]] = None,
                 matmat: Optional[Callable[[Any], Any]] = None, dtype: str = "float64", framework: str = "numpy",
                 max_block: int = 0) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise InvalidArgument(f"size: expected an integer >= 1, got {size!r}")
        if matvec is None and matmat is None:
            raise InvalidArgument("matvec, matmat: give at least one of the two callables")
        for name, f in (("matvec", matvec), ("matmat", matmat)):
            if f is not None and not callable(f):
                raise InvalidArgument(f"{name}: expected a callable, got {type(f).__name__}")
        if dtype not in ("float32", "float64"):
            raise InvalidArgument(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        if framework not in ("numpy", "torch"):
            raise InvalidArgument(f"framework: expected 'numpy' or 'torch', got {framework!r}")
        self._matvec = matvec
        self._matmat = matmat
        self._n = int(size)
        self._fw = framework
        # The core holds a weak reference to this object: a strong one would be a cycle through C++
        # that the garbage collector cannot see (and a torch operator's graph would never be freed).
        apply = weakref.WeakMethod(self._apply)
        core = _core.callback_operator(int(size), dtype, lambda x, y: apply()(x, y), int(max_block))
        super().__init__(core, framework)

    def _apply(self, x: np.ndarray, y: np.ndarray) -> None:
        """y = A x for x, y [k, n] (rows are vectors): the core's buffers, valid during the call."""
        n = self._n
        k = x.shape[0]
        if self._fw == "torch":
            import torch
            xt = torch.from_numpy(x)
            yt = torch.from_numpy(y)
            with torch.no_grad():
                if self._matmat is not None:
                    r = torch.as_tensor(self._matmat(xt.T))
                    _check_result(r, (n, k), "matmat")
                    yt.copy_(r.T)
                else:
                    for i in range(k):
                        r = torch.as_tensor(self._matvec(xt[i]))
                        _check_result(r, (n,), "matvec")
                        yt[i].copy_(r)
            if not bool(torch.isfinite(yt).all()):
                raise InvalidArgument(f"{'matmat' if self._matmat is not None else 'matvec'}: returned NaN or "
                                      f"infinite values")
            return
        x.setflags(write=False)
        if self._matmat is not None:
            r = np.asarray(_to_numpy(self._matmat(x.T)))
            _check_result(r, (n, k), "matmat")
            y[...] = r.T
        else:
            for i in range(k):
                r = np.asarray(_to_numpy(self._matvec(x[i])))
                _check_result(r, (n,), "matvec")
                y[i] = r
        if not np.isfinite(y).all():
            raise InvalidArgument(f"{'matmat' if self._matmat is not None else 'matvec'}: returned NaN or "
                                  f"infinite values")


def _to_numpy(a: Any) -> Any:
    if is_torch(a):
        return a.detach().cpu().numpy()
    return a


def _check_result(r: Any, shape: tuple, name: str) -> None:
    if tuple(r.shape) != shape:
        raise ShapeMismatch(f"{name}: returned shape {tuple(r.shape)}, expected {shape}")


def ntk_operator(model: Mlp, inputs: Any) -> Operator:
    """The NTK J J^T of ``model`` on ``inputs`` [N, D] as a matrix-free operator of size N*O
    (``spectrum --operator ntk``); vector index n*O + o is sample n, output o. ``inputs`` has
    the model's dtype, C-contiguous; it is kept by reference, not copied."""
    _check_model(model)
    fw, _ = check_array(inputs, "inputs", 2, model.dtype)
    _check_inputs(model, inputs)
    check_finite(inputs, "inputs")
    xv = host_view(inputs, "inputs")
    core = _core.ntk_operator(model._spec, model.params_view, xv)
    return Operator(core, fw, (model, inputs, xv))


def curvature_operator(model: Mlp, inputs: Any, targets: Any, curvature: str = "hessian",
                       loss: Optional[str] = None) -> CurvatureOperator:
    """The loss curvature of ``model`` in parameter space (size P; ``spectrum --operator ggn|hessian``).

    * ``inputs`` [N, D] in the model's dtype.
    * ``targets``: integer class labels [N] (int64 read in place; other integer dtypes, such as JAX's
      int32, converted once) or float targets [N, O] in the model's dtype.
    * ``curvature``: "hessian" (the exact loss Hessian, forward-over-reverse) or "ggn" (the
      Gauss-Newton matrix J^T H_loss J; alias "gauss_newton").
    * ``loss``: "mse" (``torch.nn.MSELoss()``; labels become one-hot targets) or "xent"
      (``torch.nn.CrossEntropyLoss()``, needs labels). Default: xent for labels, mse for float
      targets (the command line's default).

    The arrays are kept by reference, not copied. ``op.loss_value`` is L(w).
    """
    _check_model(model)
    fw, _ = check_array(inputs, "inputs", 2, model.dtype)
    _check_inputs(model, inputs)
    check_finite(inputs, "inputs")
    values, labels = _targets(targets, inputs.shape[0], model)
    if loss is None:
        loss = "xent" if labels is not None else "mse"
    if not isinstance(loss, str):
        raise InvalidArgument(f"loss: expected 'mse' or 'xent', got {loss!r}")
    if not isinstance(curvature, str):
        raise InvalidArgument(f"curvature: expected 'hessian' or 'ggn', got {curvature!r}")
    if loss in ("xent", "cross_entropy") and labels is None:
        raise InvalidArgument("loss xent needs integer class labels, but targets holds float values: pass int64 "
                              "labels (e.g. y.argmax(1) for one-hot rows), or use loss='mse' to regress on the floats")
    xv = host_view(inputs, "inputs")
    core = _core.curvature_operator(model._spec, model.params_view, xv, values, labels, curvature, loss)
    return CurvatureOperator(core, fw, (model, inputs, xv, values, labels, targets), loss)


def _check_model(model: Any) -> None:
    if not isinstance(model, Mlp):
        raise InvalidArgument(f"model: expected a dynascope.Mlp, got {type(model).__name__} (for any torch module "
                              f"use dynascope.torch_curvature_operator)")


def _check_inputs(model: Mlp, x: Any) -> None:
    d = model.widths[0]
    if x.shape[1] != d:
        raise ShapeMismatch(f"inputs: the network {model.arch} takes {d} inputs per sample, got shape "
                            f"{tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ShapeMismatch("inputs: no samples (shape [0, D])")


def _targets(targets: Any, n: int, model: Mlp):
    """(values, labels) views for the core: one of the two is None."""
    fw = framework(targets, "targets")
    v = host_view(targets, "targets")
    if is_torch(v):
        import torch
        integer = not v.dtype.is_floating_point and v.dtype != torch.bool and not v.dtype.is_complex
        int64 = v.dtype == torch.int64
    else:
        integer = np.issubdtype(v.dtype, np.integer)
        int64 = v.dtype == np.int64
    o = model.widths[-1]
    if integer:
        if not int64:   # e.g. JAX's int32 without x64: one copy of the labels as int64
            v = v.long() if fw == "torch" else np.ascontiguousarray(v, dtype=np.int64)
        if v.ndim != 1 or v.shape[0] != n:
            raise ShapeMismatch(f"targets: expected labels [N] = [{n}], got shape {tuple(v.shape)}")
        contiguous = v.is_contiguous() if fw == "torch" else v.flags.c_contiguous
        if not contiguous:
            raise InvalidArgument("targets: the array is not C-contiguous; pass a contiguous copy")
        lo, hi = (int(v.min()), int(v.max())) if n > 0 else (0, 0)
        if lo < 0 or hi >= o:
            raise InvalidArgument(f"targets: labels must be in [0, {o}) for the network's {o} outputs, got values "
                                  f"in [{lo}, {hi}]")
        return None, v
    check_array(targets, "targets", 2, model.dtype)
    if tuple(v.shape) != (n, o):
        raise ShapeMismatch(f"targets: expected float targets [N, O] = [{n}, {o}], got shape {tuple(v.shape)}")
    check_finite(targets, "targets")
    return v, None


def _as_operator(operator: Any) -> Operator:
    """Whatever the spectral functions accept, as an Operator."""
    if isinstance(operator, Operator):
        return operator
    if isinstance(operator, PreparedOperator):
        return operator.operator
    if isinstance(operator, np.ndarray) or is_torch(operator) or type(operator).__module__.split(".")[0] in (
            "jax", "jaxlib"):
        fw, _ = check_array(operator, "operator", 2)
        check_finite(operator, "operator")
        v = host_view(operator, "operator")
        return Operator(_core.dense_operator(v), fw, (operator, v))
    if hasattr(operator, "shape") and hasattr(operator, "matvec"):   # scipy.sparse.linalg.LinearOperator
        shape = tuple(operator.shape)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ShapeMismatch(f"operator: expected a square operator, got shape {shape}")
        dt = np.dtype(getattr(operator, "dtype", None) or np.float64)
        if dt not in (np.float32, np.float64):
            raise InvalidArgument(f"operator: dtype {dt} is not supported; the solvers compute in float32 or float64 "
                                  f"(give the LinearOperator dtype=numpy.float64)")
        matmat = getattr(operator, "matmat", None)
        return CallbackOperator(shape[0], matvec=operator.matvec, matmat=matmat, dtype=str(dt))
    if callable(operator):
        raise InvalidArgument("operator: a bare callable has no size; wrap it as "
                              "dynascope.CallbackOperator(size, matvec=f, dtype=...)")
    raise InvalidArgument(f"operator: expected a dynascope operator, a dense symmetric matrix (NumPy, torch, JAX) or a "
                          f"scipy.sparse.linalg.LinearOperator, got {type(operator).__module__}."
                          f"{type(operator).__name__}")


def _int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InvalidArgument(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
        raise InvalidArgument(f"seed: expected an integer in [0, 2**64), got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------- solvers

def eigsh(operator: Any, k: int = 6, which: str = "largest", tol: float = 1e-8, method: str = "auto",
          block: int = 1, subspace: int = 0, max_restarts: int = 500, seed: int = 0, start: Any = None,
          threads: Optional[int] = None, progress: ProgressArg = None) -> EigenResult:
    """Top-k eigenpairs of a symmetric operator by thick-restart block Lanczos (or the dense
    solver for small operators), as the command line's ``eigen`` and ``spectrum``.

    * ``operator``: a dense symmetric matrix [n, n] (NumPy, torch or JAX; checked square, finite
      and symmetric to 1e-10 (float64) / 1e-5 (float32) of its largest entry, read in place), an
      operator from :func:`ntk_operator`, :func:`curvature_operator`,
      :func:`torch_curvature_operator` or :class:`CallbackOperator`, or a
      ``scipy.sparse.linalg.LinearOperator`` (its ``matmat`` is used for blocks).
    * ``k``: eigenpairs wanted (1..n). ``which``: "largest", "smallest" or "magnitude".
    * ``tol``: relative residual tolerance: converged when ||A u - l u|| <= tol max(eps^(2/3), |l|),
      never below the working precision 16 eps ||A||.
    * ``method``: "auto" (the dense solver for n <= 400, else Lanczos), "lanczos" or "dense".
    * ``block``: vectors per operator application; ``subspace``: basis size before a restart
      (0: max(2k+1, 20) times the block); ``max_restarts``: restarts before giving up (then
      ``converged`` is false, nothing is raised).
    * ``seed``: the random start block. ``start``: rows [m, n] that warm-start the search (e.g.
      the previous checkpoint's ``vectors``), in the operator's dtype.
    * ``threads``, ``progress``: as in :func:`dynascope.ntk` (progress per Lanczos restart).

    Returns an :class:`EigenResult`; ``vectors`` [k, n] in the operator's framework and dtype,
    the other arrays in that framework as float64 (bool for ``converged``).
    """
    op = _as_operator(operator)
    k = _int(k, "k", 1)
    if k > op.size:
        raise InvalidArgument(f"k: {k} exceeds the operator's size {op.size}")
    _check_choice(which, "which", ("largest", "smallest", "magnitude"))
    _check_choice(method, "method", ("auto", "automatic", "lanczos", "dense"))
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not np.isfinite(tol) or tol <= 0:
        raise InvalidArgument(f"tol: expected a finite number > 0, got {tol!r}")
    block = _int(block, "block", 1)
    subspace = _int(subspace, "subspace", 0)
    max_restarts = _int(max_restarts, "max_restarts", 0)
    seed = _seed(seed)
    start_view = None
    if start is not None:
        check_array(start, "start", 2, op.dtype)
        if start.shape[1] != op.size:
            raise ShapeMismatch(f"start: expected rows of the operator's size {op.size}, got shape "
                                f"{tuple(start.shape)}")
        check_finite(start, "start")
        start_view = host_view(start, "start")
    fw = op.framework
    vectors = empty(fw, (k, op.size), op.dtype)
    with progress_callback(progress) as report:
        r = _core.eigsh(op._core, k, which, float(tol), method, block, subspace, max_restarts, seed, start_view,
                        vectors, _threads(threads), report)
    return EigenResult(
        eigenvalues=from_numpy(fw, np.asarray(r["eigenvalues"], dtype=np.float64)),
        vectors=to_framework(fw, vectors),
        residuals=from_numpy(fw, np.asarray(r["residuals"], dtype=np.float64)),
        converged=from_numpy(fw, np.asarray(r["converged"], dtype=bool)),
        status=list(r["status"]), all_converged=bool(r["all_converged"]),
        multiplicity_checked=bool(r["multiplicity_checked"]), missed_recovered=int(r["missed_recovered"]),
        iterations=int(r["iterations"]), matvecs=int(r["matvecs"]), method=str(r["method"]),
        eigen_warnings=list(r["eigen_warnings"]))


def slq_density(operator: Any, steps: int = 90, probes: int = 10, grid: int = 1000, sigma2: Optional[float] = None,
                seed: int = 0, threads: Optional[int] = None, progress: ProgressArg = None) -> SpectralDensity:
    """The spectral density of a symmetric operator by stochastic Lanczos quadrature
    (Ghorbani et al., PyHessian's conventions; ``spectrum --density``).

    * ``operator``: as in :func:`eigsh`.
    * ``steps``: Lanczos steps per probe (>= 1); ``probes``: Rademacher probe vectors (>= 1), run
      as one block; ``grid``: density grid points (>= 2).
    * ``sigma2``: the Gaussian smoothing variance; None: 1e-5 * max(1, spectrum range).
    * ``seed``, ``threads``, ``progress``: as in :func:`eigsh`.

    Returns a :class:`SpectralDensity` (arrays in the operator's framework, float64).
    """
    op = _as_operator(operator)
    steps = _int(steps, "steps", 1)
    probes = _int(probes, "probes", 1)
    grid = _int(grid, "grid", 2)
    if sigma2 is None:
        s2 = -1.0
    elif isinstance(sigma2, bool) or not isinstance(sigma2, (int, float)) or not np.isfinite(sigma2) or sigma2 <= 0:
        raise InvalidArgument(f"sigma2: expected None or a finite number > 0, got {sigma2!r}")
    else:
        s2 = float(sigma2)
    fw = op.framework
    with progress_callback(progress) as report:
        r = _core.slq(op._core, steps, probes, _seed(seed), grid, s2, _threads(threads), report)
    f64 = lambda a: from_numpy(fw, np.asarray(a, dtype=np.float64))  # noqa: E731
    return SpectralDensity(nodes=[f64(a) for a in r["nodes"]], weights=[f64(a) for a in r["weights"]],
                           grid=f64(r["grid"]), density=f64(r["density"]), sigma2=float(r["sigma2"]),
                           trace_estimate=float(r["trace_estimate"]), trace_stderr=float(r["trace_stderr"]),
                           matvecs=int(r["matvecs"]))


def trace(operator: Any, method: str = "hutchinson", probes: int = 10, seed: int = 0, threads: Optional[int] = None,
          progress: ProgressArg = None) -> TraceEstimate:
    """A stochastic estimate of tr(A) (``spectrum --trace``).

    * ``operator``: as in :func:`eigsh`.
    * ``method``: "hutchinson" (the mean of z^T A z over ``probes`` Rademacher z; ``probes``
      products) or "hutchpp" (Hutch++: ceil(probes/2) sketch vectors computed exactly, floor(probes/2)
      Rademacher probes for the rest; needs probes >= 2 and costs 2 ceil(probes/2) + floor(probes/2)
      products).
    * ``probes``: random vectors (>= 1). ``seed``, ``threads``, ``progress``: as in :func:`eigsh`.

    Returns a :class:`TraceEstimate`.
    """
    op = _as_operator(operator)
    _check_choice(method, "method", ("hutchinson", "hutchpp"))
    probes = _int(probes, "probes", 1)
    if method == "hutchpp" and probes < 2:
        raise InvalidArgument(f"probes: hutchpp needs probes >= 2 (half sketch, half residual probes), got {probes}")
    with progress_callback(progress) as report:
        r = _core.trace(op._core, method, probes, _seed(seed), _threads(threads), report)
    return TraceEstimate(trace_estimate=float(r["trace_estimate"]), trace_stderr=float(r["trace_stderr"]),
                         trace_method=method, probes=probes, matvecs=int(r["matvecs"]))


_trace = trace   # spectrum's keyword `trace` hides the function


def spectrum(model: Mlp, inputs: Any, targets: Any = None, operator: str = "hessian", loss: Optional[str] = None,
             k: Optional[int] = None, which: Optional[str] = None, tol: Optional[float] = None,
             method: Optional[str] = None, block: Optional[int] = None, subspace: Optional[int] = None,
             max_restarts: Optional[int] = None, start: Any = None, density: bool = False,
             steps: Optional[int] = None, probes: Optional[int] = None, grid: Optional[int] = None,
             trace: Optional[str] = None, seed: int = 0, threads: Optional[int] = None,
             progress: ProgressArg = None) -> Any:
    """Matrix-free spectra of an Mlp on data, as the command line's ``spectrum``.

    * ``operator``: "ntk" (J J^T, size N*O; takes no targets nor loss), "ggn" (Gauss-Newton) or
      "hessian" (the exact loss Hessian; both size P, need ``targets``: see
      :func:`curvature_operator` for ``targets`` and ``loss``).
    * Top-k (the default): ``k`` (6), ``which`` ("largest"), ``tol`` (1e-8), ``method`` ("auto"),
      ``block`` (1), ``subspace`` (0), ``max_restarts`` (500), ``start``: as in :func:`eigsh`;
      returns an :class:`EigenResult`.
    * ``density=True``: the spectral density by SLQ with ``steps`` (90), ``probes`` (10), ``grid``
      (1000); returns a :class:`SpectralDensity`.
    * ``trace="hutchinson"|"hutchpp"``: a trace estimate with ``probes`` (10); returns a
      :class:`TraceEstimate`.

    As on the command line, ``density``, ``trace`` and the top-k keywords exclude each other, and
    a keyword of a mode not chosen is an error (None means "not given").
    """
    given = {name: value for name, value in (("k", k), ("which", which), ("tol", tol), ("method", method),
                                             ("block", block), ("subspace", subspace),
                                             ("max_restarts", max_restarts), ("start", start)) if value is not None}
    if density and trace is not None:
        raise InvalidArgument("density, trace: choose the spectral density (SLQ) or a trace estimate")
    for name in given:
        if density:
            raise InvalidArgument(f"{name}: a top-k eigenpair option; density=True estimates the whole spectrum")
        if trace is not None:
            raise InvalidArgument(f"{name}: a top-k eigenpair option; trace= estimates the trace")
    if not density:
        if steps is not None:
            raise InvalidArgument("steps: sets the Lanczos steps of density=True")
        if grid is not None:
            raise InvalidArgument("grid: sets the density grid of density=True")
        if trace is None and probes is not None:
            raise InvalidArgument("probes: sets the probes of density=True or trace=")
    if not isinstance(operator, str) or operator not in ("ntk", "ggn", "gauss_newton", "hessian"):
        raise InvalidArgument(f"operator: expected 'ntk', 'ggn' or 'hessian', got {operator!r}")
    if operator == "ntk":
        if loss is not None:
            raise InvalidArgument("loss: the NTK operator J J^T does not involve a loss (loss is for ggn and hessian)")
        if targets is not None:
            raise InvalidArgument("targets: the NTK operator J J^T does not use targets (they are for ggn and hessian)")
        op: Operator = ntk_operator(model, inputs)
    else:
        if targets is None:
            raise InvalidArgument(f"targets: operator {operator!r} needs targets (int64 labels [N] or floats [N, O])")
        op = curvature_operator(model, inputs, targets, curvature=operator, loss=loss)
    if density:
        return slq_density(op, steps=90 if steps is None else steps, probes=10 if probes is None else probes,
                           grid=1000 if grid is None else grid, seed=seed, threads=threads, progress=progress)
    if trace is not None:
        return _trace(op, method=trace, probes=10 if probes is None else probes, seed=seed,
                                  threads=threads, progress=progress)
    defaults = dict(k=6, which="largest", tol=1e-8, method="auto", block=1, subspace=0, max_restarts=500, start=None)
    defaults.update(given)
    return eigsh(op, seed=seed, threads=threads, progress=progress, **defaults)


def _check_choice(value: Any, name: str, choices: tuple) -> None:
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgument(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")


# ---------------------------------------------------------------- any torch model

class TorchCurvatureOperator(CallbackOperator):
    """The loss Hessian or Gauss-Newton matrix of a torch module (see :func:`torch_curvature_operator`)."""

    loss_value: float
    """L(w) at the parameters."""


def torch_curvature_operator(model: Any, loss_fn: Callable[[Any, Any], Any], inputs: Any, targets: Any,
                             curvature: str = "hessian", params: Optional[List[Any]] = None) -> TorchCurvatureOperator:
    """The curvature of ``L(w) = loss_fn(model(inputs), targets)`` for any ``torch.nn.Module``, as
    an operator for :func:`eigsh`, :func:`slq_density` and :func:`trace` (size P, the number of
    parameters in ``params``; vectors in ``parameters_to_vector`` order).

    * ``curvature``: "hessian": Hessian-vector products by double backward (Pearlmutter's trick,
      as PyHessian); "ggn" (alias "gauss_newton"): the generalised Gauss-Newton matrix
      J^T H_loss J, where J v comes from a double-vjp (reverse-over-reverse), H_loss is the
      Hessian of ``loss_fn`` in the outputs, and J^T from one more backward pass.
    * ``params``: the tensors to differentiate (default: the parameters with ``requires_grad``, in
      ``model.parameters()`` order).
    * The operator's dtype is the parameters' dtype (float32 or float64; all the same); the
      vectors are torch tensors sharing memory with the solver's buffers.

    The forward pass and the first backward pass run once, here, and their graph is kept for
    every product (memory: one training step's activations plus their gradients). Any module
    whose operations support double backward works (``Linear``, ``Conv*``, pooling, ``ReLU``,
    ``Tanh``, ``GELU``, normalisation layers, ...): put the model in the mode you want
    (``model.eval()`` for BatchNorm statistics and Dropout) before calling.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise InvalidArgument(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise InvalidArgument(f"loss_fn: expected a callable loss_fn(outputs, targets), got {type(loss_fn).__name__}")
    if curvature not in ("hessian", "ggn", "gauss_newton"):
        raise InvalidArgument(f"curvature: expected 'hessian' or 'ggn', got {curvature!r}")
    ps = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    if not ps:
        raise InvalidArgument("params: the model has no parameter that requires grad")
    dtypes = {p.dtype for p in ps}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
        raise InvalidArgument(f"model: parameters must all be float32 or all float64, got {sorted(map(str, dtypes))} "
                              f"(convert with model.double() or model.float())")
    if any(p.device.type != "cpu" for p in ps):
        raise InvalidArgument("model: this version of the package computes on the host only; move the model to the "
                              "CPU (model.cpu())")
    dtype = str(next(iter(dtypes))).replace("torch.", "")
    shapes = [p.shape for p in ps]
    sizes = [p.numel() for p in ps]
    n = sum(sizes)

    with torch.enable_grad():
        out = model(inputs)
        loss = loss_fn(out, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise InvalidArgument("loss_fn: expected a scalar tensor")
        if not bool(torch.isfinite(loss)):
            raise InvalidArgument(f"loss_fn: the loss is not finite ({float(loss)})")
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise InvalidArgument("model: its output does not depend on the parameters (or gradients are off)")
        if curvature == "hessian":
            first = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
        else:
            g_out = torch.autograd.grad(loss, out, create_graph=True)[0]
            u = torch.zeros_like(out, requires_grad=True)
            first = torch.autograd.grad(out, ps, grad_outputs=u, create_graph=True, allow_unused=True)  # J^T u
    # Parameters the first derivative does not depend on (unused, or entering linearly where the
    # second derivative vanishes) get zero rows and columns.
    live = [i for i, g in enumerate(first) if g is not None and g.requires_grad]
    tdtype = ps[0].dtype

    def flat(ts: Any, idx: List[int]) -> Any:
        parts = [torch.zeros(s, dtype=tdtype) for s in sizes]
        for i, t in zip(idx, ts):
            if t is not None:
                parts[i] = t.reshape(-1)
        return torch.cat(parts)

    def matvec(v: Any) -> Any:
        vs = [t.view(s) for t, s in zip(torch.split(v, sizes), shapes)]
        with torch.enable_grad():
            if curvature == "hessian":
                if not live:
                    return torch.zeros(n, dtype=tdtype)
                hv = torch.autograd.grad([first[i] for i in live], ps, grad_outputs=[vs[i] for i in live],
                                         retain_graph=True, allow_unused=True)
                return flat(hv, list(range(len(ps))))
            if not live:
                return torch.zeros(n, dtype=tdtype)
            jv = torch.autograd.grad([first[i] for i in live], u, grad_outputs=[vs[i] for i in live],
                                     retain_graph=True)[0]
            if not g_out.requires_grad:   # a loss linear in the outputs: H_loss = 0
                return torch.zeros(n, dtype=tdtype)
            hjv = torch.autograd.grad(g_out, out, grad_outputs=jv, retain_graph=True)[0]
            gv = torch.autograd.grad(out, ps, grad_outputs=hjv, retain_graph=True, allow_unused=True)
            return flat(gv, list(range(len(ps))))

    op = TorchCurvatureOperator(n, matvec=matvec, dtype=dtype, framework="torch")
    op.loss_value = float(loss.detach())
    op.curvature = "ggn" if curvature == "gauss_newton" else curvature
    op._graph = (out, loss)   # keeps the graph (and the parameters' views) for the products
    return op
