"""Linear regions: local complexity, activation patterns and exact regions (the command line's `lc`
and `regions`), for a dynascope.Mlp and, through pre-activations captured from the caller's own
network, for any PyTorch model or any callable."""

from __future__ import annotations

import math
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._arrays import check_array, check_finite, empty, framework, from_numpy, host_view, to_framework
from ._core import InvalidArgument, ShapeMismatch
from ._mlp import Mlp
from ._runtime import ProgressArg, progress_callback
from ._runtime import threads as _threads

__all__ = ["LocalComplexity", "Patterns", "SegmentRegions", "PlanePolygon", "PlaneRegions", "local_complexity",
           "count_patterns", "exact_regions", "random_frame"]

_LC_TILE_ROWS = 8192          # vertex rows per forward pass of the generic path (the library's host tile)
_PATTERN_TILE_ROWS = 4096     # samples per forward pass of the generic path


@dataclass
class LocalComplexity:
    """The result of :func:`local_complexity` (the keys of ``dynascope lc``'s JSON)."""

    counts: Any
    """[N, L] int32 in ``x``'s framework: for every sample, the neurons of each layer whose
    pre-activation sign is not the same at all 2P vertices (layers in forward order; for an Mlp
    every linear layer, the output layer last)."""
    per_layer_mean: Any
    """[L] float64 (``x``'s framework): the mean over samples of each column of ``counts``."""
    total_mean: float
    """Mean over samples of the sum over the hidden layers (every layer but the output layer)."""
    all_layers_mean: float
    """Mean over samples of the sum over all layers, the output layer included."""
    dims: int
    """P, the number of directions used."""
    radius: float
    """r, the cross-polytope's radius."""
    samples: int
    """N."""
    layers: List[str]
    """The layers' names: "layer1".."layerL" for an Mlp, module names (``named_modules``) for a
    torch model, "0".."L-1" (or the dict's keys) for a callable."""
    output_layer: Optional[int]
    """Index of the output layer in ``layers`` (left out of ``total_mean``), or None when no
    counted layer is the output."""


@dataclass
class Patterns:
    """The result of :func:`count_patterns` (the keys of ``dynascope regions``'s JSON)."""

    samples: int
    """M, the number of points."""
    distinct: int
    """Distinct activation patterns of all hidden layers together (exact)."""
    distinct_per_layer: List[int]
    """Distinct patterns of each hidden layer alone."""
    ids: Any
    """[M] int64 region id of every point (``ids=True``; else None), numbered in order of first
    appearance (point 0 is in region 0), in the points' framework."""
    layers: List[str]
    """The hidden layers' names, as in :class:`LocalComplexity`."""


@dataclass
class SegmentRegions:
    """Exact regions along a segment (``dynascope regions --segment S.npy --exact``)."""

    regions: int
    """Intervals of the segment, one per activation region crossed."""
    breakpoints: np.ndarray
    """[regions - 1] float64: interior interval ends as fractions t in (0, 1) of
    x0 + t (x1 - x0), ascending."""


@dataclass
class PlanePolygon:
    """One linear region of the plane: a convex polygon in the plane's (s, t) coordinates."""

    vertices: np.ndarray
    """[V, 2] float64 (s, t), counter-clockwise."""
    boundary: bool
    """Whether the decision boundary crosses it."""
    label: int
    """The predicted class (argmax of the outputs) at its centroid (0 for one output)."""


@dataclass
class PlaneRegions:
    """The exact partition of a plane (``dynascope regions --plane P.npy --exact-2d``)."""

    regions: int
    """Number of polygons (linear regions of the hidden layers)."""
    boundary_regions: int
    """Polygons the decision boundary crosses."""
    polygons: List[PlanePolygon]
    """Every region, on {A + s(B - A) + t(C - A) : s, t in [0, 1]}."""
    boundary_segments: np.ndarray
    """[S, 4] float64 pieces of the decision boundary, rows (s0, t0, s1, t1)."""


# ---- local complexity ---------------------------------------------------------------------------

def local_complexity(model: Any, x: Any, radius: float, dims: Optional[int] = None, frame: Any = None,
                     frame_per_sample: bool = False, seed: int = 0, layers: Optional[Sequence[Any]] = None,
                     batch_size: Optional[int] = None, threads: Optional[int] = None,
                     progress: ProgressArg = None) -> LocalComplexity:
    """Local complexity (Humayun, Balestriero & Baraniuk) of ``model`` around every sample of ``x``:
    how many neurons change their pre-activation sign inside the cross-polytope x ± r v_p spanned
    by P orthonormal directions v_1..v_P (``dynascope lc``).

    * ``model``: a :class:`dynascope.Mlp` (the library's network), a ``torch.nn.Module`` (its
      pre-activations are captured by forward hooks: see ``layers``), or any callable taking a
      batch of vertices and returning the pre-activations of the layers to count (a list of arrays,
      or a dict name -> array, each with one row per vertex).
    * ``x``: the samples, float32 or float64, C-contiguous. For an Mlp ``[N, D]`` with the model's
      dtype; for a torch model or a callable ``[N, *input_shape]`` (each sample is flattened to D
      values for the directions; the vertices are given to the model in ``x``'s shape). NumPy,
      torch CPU or JAX CPU arrays; read in place.
    * ``radius``: r > 0, in input units (required: it depends on the data's scale).
    * ``dims``: P, 1 <= P <= D; None (the default) takes min(25, D). ``dynascope lc``'s default
      is 25.
    * ``frame``: a ``[P, D]`` array of orthonormal rows used for every sample instead of a random
      frame (refused together with ``dims`` and ``frame_per_sample``).
    * ``frame_per_sample``: draw an independent random frame for every sample (the default is one
      shared frame, the reference code's choice). Random frames are a function of ``seed`` and the
      sample's index only: see :func:`random_frame`.
    * ``seed``: the random frames (0 .. 2**64 - 1), as ``--seed``.
    * ``layers`` (torch models only): the modules whose outputs are the pre-activations, as modules
      or names from ``model.named_modules()``. The default is every ``Linear`` and ``Conv1d/2d/3d``
      (their outputs, before the activation that follows). When a convolution is followed by a
      normalization (``BatchNorm2d``) before its ReLU, pass the normalization modules instead.
      Each chosen module must run exactly once per forward pass; its output must be one
      floating-point tensor of the input's dtype. A chosen module whose output is the model's
      return value is the output layer.
    * ``batch_size`` (torch models and callables): samples per forward pass; the model sees
      ``batch_size * 2P`` vertices at a time. Default: 8192 // (2P), at least 1.
    * ``threads``: host threads (None: all cores). ``progress``: None, True, False or a callable
      ``(task, done, total)``.

    For an Mlp and for a torch ``nn.Sequential`` of ``Linear`` and activations (all layers hooked)
    the numbers are the same, bit for bit. The torch path calls the model under ``torch.no_grad()``
    and does not change its mode: call ``model.eval()`` first if it has batch normalization or
    dropout (in training mode they mix the vertices of a batch). Returns :class:`LocalComplexity`.
    """
    radius = _positive(radius, "radius")
    seed = _seed(seed)
    if frame is not None and frame_per_sample:
        raise InvalidArgument("frame: refused together with frame_per_sample=True: the frame is either the given one "
                              "or drawn per sample")
    if frame is not None and dims is not None:
        raise InvalidArgument("frame: refused together with dims: the frame's rows are the directions")
    if getattr(x, "ndim", 0) >= 1 and x.shape[0] == 0:
        raise ShapeMismatch(f"x: no samples (shape {tuple(x.shape)}); local complexity needs at least one point")
    if isinstance(model, Mlp):
        return _lc_mlp(model, x, radius, dims, frame, frame_per_sample, seed, threads, progress)
    if not callable(model):
        raise InvalidArgument(f"model: expected a dynascope.Mlp, a torch.nn.Module or a callable, "
                              f"got {type(model).__name__}")
    return _lc_generic(model, x, radius, dims, frame, frame_per_sample, seed, layers, batch_size, threads, progress)


def random_frame(inputs: int, dims: int, seed: int = 0, per_sample: bool = False, sample: int = 0,
                 dtype: str = "float64") -> np.ndarray:
    """The random orthonormal frame [dims, inputs] (NumPy) that :func:`local_complexity` uses for
    all samples, or with ``per_sample=True`` for sample number ``sample``, given ``seed``.

    ``inputs`` is the input width D (an integer, ``x.shape[1]``), not the data; ``dims`` the
    number of directions P."""
    if dtype not in ("float32", "float64"):
        raise InvalidArgument(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    inputs, dims, sample = _count(inputs, "inputs"), _count(dims, "dims"), _index(sample, "sample")
    out = np.empty((dims, inputs), dtype=dtype)
    _core.random_frame_into(inputs, dims, _seed(seed), bool(per_sample), sample, out)
    return out


def _lc_mlp(model: Mlp, x: Any, radius: float, dims: Optional[int], frame: Any, frame_per_sample: bool, seed: int,
            threads: Optional[int], progress: ProgressArg) -> LocalComplexity:
    fw, dtype = check_array(x, "x", 2, model.dtype)
    d = model.widths[0]
    if x.shape[1] != d:
        raise ShapeMismatch(f"x: the network {model.arch} takes {d} inputs per sample, got shape {tuple(x.shape)}")
    kind, p, fview = _frame_args(frame, frame_per_sample, dims, d, model.dtype)
    n, layers = int(x.shape[0]), len(model.widths) - 1
    counts = empty(fw, (n, layers), "int32")
    with progress_callback(progress) as report:
        per_layer, total, all_layers, p_used = _core.lc_into(
            model._spec, model.params_view, host_view(x, "x"), radius, p, kind, fview, seed, _threads(threads),
            report, counts)
    return LocalComplexity(to_framework(fw, counts), from_numpy(fw, np.asarray(per_layer, dtype=np.float64)),
                           float(total), float(all_layers), int(p_used), radius, n,
                           [f"layer{l + 1}" for l in range(layers)], layers - 1)


def _frame_args(frame: Any, frame_per_sample: bool, dims: Optional[int], d: int,
                dtype: str) -> Tuple[str, int, Any]:
    """(frame kind for the core, P, the frame's host view or None)."""
    if frame is not None:
        check_array(frame, "frame", None, dtype)
        fv = host_view(frame, "frame")
        if fv.ndim < 2 or math.prod(fv.shape[1:]) != d:
            raise ShapeMismatch(f"frame: expected [P, {d}] (one direction per row, each of the {d} input values), "
                                f"got shape {tuple(frame.shape)}")
        fv = fv.reshape(fv.shape[0], d)
        check_finite(fv, "frame")
        return "given", int(fv.shape[0]), fv
    p = min(25, d) if dims is None else _count(dims, "dims")
    if p > d:
        raise InvalidArgument(f"dims: {p} exceeds the input width {d} (the directions must be orthonormal)")
    return ("per_sample" if frame_per_sample else "shared"), p, None


# ---- the generic path: vertices through the caller's network, pre-activations back ----------------

class _Forward:
    """Runs the caller's network on a batch and hands each layer's pre-activations, flattened to
    [rows, width] and C-contiguous on the host, to ``sink(key, z)`` in forward order. Returns the
    keys of the layers whose output is the network's output."""

    def __init__(self, model: Any, layers: Optional[Sequence[Any]], fw: str, dtype: str) -> None:
        self.model = model
        self.fw = fw
        self.dtype = dtype
        self.torch = _is_torch_module(model)
        if self.torch:
            self.modules = _torch_layers(model, layers)
            _check_torch_model(model, dtype)
        elif layers is not None:
            raise InvalidArgument("layers: only for torch models; a callable returns the layers it wants counted")

    def __call__(self, inputs: Any, sink: Callable[[str, Any], None]) -> List[str]:
        if self.torch:
            return self._torch(inputs, sink)
        out = self.model(inputs)
        if isinstance(out, dict):
            items = [(str(k), v) for k, v in out.items()]
        elif isinstance(out, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(out)]
        else:
            raise InvalidArgument(f"model: the callable must return a list (or dict) of pre-activation arrays, got "
                                  f"{type(out).__name__}")
        if not items:
            raise InvalidArgument("model: the callable returned no pre-activations")
        for key, z in items:
            sink(key, _as_host_2d(z, f"model(...)[{key!r}]", inputs.shape[0], self.dtype))
        return []

    def _torch(self, inputs: Any, sink: Callable[[str, Any], None]) -> List[str]:
        import torch

        refs: Dict[str, Any] = {}
        calls: List[str] = []

        def make(name: str) -> Callable[..., None]:
            def hook(module: Any, args: Any, out: Any) -> None:
                if name in refs:
                    raise InvalidArgument(f"layers: module {name!r} ran twice in one forward pass (shared modules "
                                          f"are not supported: hook distinct modules)")
                calls.append(name)
                if not isinstance(out, torch.Tensor):
                    raise InvalidArgument(f"layers: module {name!r} returned {type(out).__name__}, not one tensor")
                refs[name] = weakref.ref(out)
                sink(name, _as_host_2d(out, f"the output of module {name!r}", inputs.shape[0], self.dtype))
            return hook

        handles = [m.register_forward_hook(make(name)) for name, m in self.modules]
        try:
            with torch.no_grad():
                result = self.model(inputs)
        finally:
            for h in handles:
                h.remove()
        missing = [name for name, _ in self.modules if name not in refs]
        if missing:
            raise InvalidArgument(f"layers: module(s) {missing} did not run in the forward pass")
        return [name for name in calls if refs[name]() is result]


def _lc_generic(model: Any, x: Any, radius: float, dims: Optional[int], frame: Any, frame_per_sample: bool,
                seed: int, layers: Optional[Sequence[Any]], batch_size: Optional[int], threads: Optional[int],
                progress: ProgressArg) -> LocalComplexity:
    fw, dtype = check_array(x, "x", None, None)
    if x.ndim < 2:
        raise ShapeMismatch(f"x: expected [N, *input_shape] (one sample per row), got shape {tuple(x.shape)}")
    n, shape = int(x.shape[0]), tuple(int(s) for s in x.shape[1:])
    d = math.prod(shape)
    if d < 1:
        raise ShapeMismatch(f"x: samples of shape {shape} have no values")
    kind, p, fview = _frame_args(frame, frame_per_sample, dims, d, dtype)
    forward = _Forward(model, layers, fw, dtype)
    nthreads = _threads(threads)
    vertices = 2 * p
    tile = _batch(batch_size, max(1, _LC_TILE_ROWS // vertices))
    xv = host_view(x, "x").reshape(n, d)
    vfw = "torch" if forward.torch else fw       # a torch model gets torch vertices
    buf = empty(vfw, (min(tile, max(n, 1)) * vertices, d), dtype)
    columns: Dict[str, int] = {}
    counts_host = np.zeros((n, 0), dtype=np.int32)
    outputs: List[str] = []
    state = {"first": 0}

    def sink(key: str, z: Any) -> None:
        nonlocal counts_host
        if key not in columns:
            if state["first"] > 0:
                raise InvalidArgument(f"model: layer {key!r} appeared after the first batch")
            columns[key] = len(columns)
            counts_host = np.concatenate([counts_host, np.zeros((n, 1), dtype=np.int32)], axis=1)
        _core.sign_change_counts_into(z, vertices, state["first"], columns[key], nthreads, counts_host)

    with progress_callback(progress) as report:
        for s0 in range(0, n, tile):
            m = min(tile, n - s0)
            v = buf[:m * vertices]
            _core.vertices_into(xv[s0:s0 + m], radius, p, kind, fview, seed, s0, nthreads, v)
            state["first"] = s0
            seen = len(columns)
            outs = forward(_vertex_input(v, vfw, m * vertices, shape), sink)
            if s0 == 0:
                outputs = outs
                if not columns:
                    raise InvalidArgument("model: no pre-activations were captured")
            elif len(columns) != seen:
                raise InvalidArgument("model: the layers differ between batches")
            if report is not None:
                report("local complexity", s0 + m, n)
    names = list(columns)
    counts_host = np.ascontiguousarray(counts_host)
    out_idx = columns[outputs[-1]] if outputs else None
    hidden = [c for c in range(len(names)) if c != out_idx]
    per_layer = counts_host.mean(axis=0, dtype=np.float64) if n else np.zeros(len(names))
    total = float(counts_host[:, hidden].sum(axis=1, dtype=np.float64).mean()) if n and hidden else 0.0
    all_layers = float(counts_host.sum(axis=1, dtype=np.float64).mean()) if n else 0.0
    return LocalComplexity(from_numpy(fw, counts_host), from_numpy(fw, per_layer), total, all_layers, p, radius, n,
                           names, out_idx)


def _vertex_input(v: Any, fw: str, rows: int, shape: Tuple[int, ...]) -> Any:
    """The vertex buffer in the shape and framework the caller's network takes (a view)."""
    v = v.reshape((rows,) + shape)
    return to_framework(fw, v) if fw == "jax" else v


def _as_host_2d(z: Any, name: str, rows: int, dtype: str) -> Any:
    """One layer's pre-activations as a C-contiguous host [rows, width] array of the input's dtype
    (a non-contiguous output, e.g. channels_last, is copied once)."""
    zfw = framework(z, name)
    if zfw == "torch":
        z = z.detach()
        if z.device.type != "cpu":
            raise InvalidArgument(f"{name}: is on {z.device}; this version computes on the host only")
    else:
        z = host_view(z, name)
    if z.ndim < 1 or int(z.shape[0]) != rows:
        raise ShapeMismatch(f"{name}: expected {rows} rows (one per vertex or point), got shape {tuple(z.shape)}")
    dt = str(z.dtype).replace("torch.", "")
    if dt != dtype:
        raise InvalidArgument(f"{name}: dtype {dt} differs from the input's {dtype} (run the model in the inputs' "
                              f"dtype)")
    z = z.reshape(rows, -1)
    if zfw == "torch":
        return z.contiguous()
    return np.ascontiguousarray(z)


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")   # a torch module implies torch is imported; never import it here
    return torch is not None and isinstance(model, torch.nn.Module)


def _torch_layers(model: Any, layers: Optional[Sequence[Any]]) -> List[Tuple[str, Any]]:
    from torch import nn

    named = list(model.named_modules())
    if layers is None:
        kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
        chosen = [(name or "model", m) for name, m in named if isinstance(m, kinds)]
        if not chosen:
            raise InvalidArgument("layers: the model has no Linear or Conv1d/2d/3d module; pass layers=[...] "
                                  "(modules or names from model.named_modules())")
        return chosen
    if isinstance(layers, (str, nn.Module)) or len(layers) == 0:
        raise InvalidArgument("layers: expected a non-empty list of modules or module names")
    by_name = {name: m for name, m in named}
    chosen = []
    for i, item in enumerate(layers):
        if isinstance(item, str):
            if item not in by_name:
                raise InvalidArgument(f"layers[{i}]: the model has no module named {item!r}")
            chosen.append((item, by_name[item]))
        elif isinstance(item, nn.Module):
            names = [name for name, m in named if m is item]
            if not names:
                raise InvalidArgument(f"layers[{i}]: {type(item).__name__} is not a submodule of the model")
            chosen.append((names[0] or "model", item))
        else:
            raise InvalidArgument(f"layers[{i}]: expected a module or a module name, got {type(item).__name__}")
    if len({id(m) for _, m in chosen}) != len(chosen):
        raise InvalidArgument("layers: a module is listed twice")
    return chosen


def _check_torch_model(model: Any, dtype: str) -> None:
    for name, p in model.named_parameters():
        if p.device.type != "cpu":
            raise InvalidArgument(f"model: parameter {name!r} is on {p.device}; this version computes on the host "
                                  f"only: pass model.cpu()")
        if p.is_floating_point() and str(p.dtype).replace("torch.", "") != dtype:
            raise InvalidArgument(f"model: parameter {name!r} is {p.dtype} but the inputs are {dtype}; convert one "
                                  f"(model.double() or x.float())")


# ---- activation patterns ------------------------------------------------------------------------

def count_patterns(model: Any, samples: Any = None, *, around: Any = None, radius: Optional[float] = None,
                   count: Optional[int] = None, shape: str = "ball", dims: Optional[int] = None, segment: Any = None,
                   plane: Any = None, resolution: int = 512, seed: int = 0, ids: bool = False,
                   layers: Optional[Sequence[Any]] = None, batch_size: Optional[int] = None,
                   threads: Optional[int] = None, progress: ProgressArg = None) -> Patterns:
    """Distinct activation patterns (signs z > 0 of every hidden neuron) among points: the linear
    regions they hit, counted exactly (``dynascope regions``).

    Exactly one source of points:

    * ``samples``: ``[M, D]`` (Mlp) or ``[M, *input_shape]`` (torch model, callable);
    * ``around`` anchors ``[A, ...]`` with ``radius`` and ``count`` (points per anchor): uniform in
      the Euclidean ball (``shape="ball"``, the default) or, with ``shape="cross-polytope"``, in the
      L1 ball spanned by :func:`local_complexity`'s shared random frame of ``dims`` directions
      (default min(25, D)) and ``seed``: the neighbourhood whose vertices it tests;
    * ``segment`` ``[2, ...]`` end points: ``count`` evenly spaced points (default 10 000);
    * ``plane`` ``[3, ...]`` points A, B, C: a ``resolution`` x ``resolution`` grid of cell
      centres of {A + s(B - A) + t(C - A) : s, t in [0, 1]} (row i * resolution + j at
      s = (j + 1/2) / resolution, t = (i + 1/2) / resolution).

    ``model`` is an Mlp, a torch module or a callable as for :func:`local_complexity` (``layers``,
    ``batch_size``: samples per forward pass, default 4096). The hidden layers are every captured
    layer but the output layer (for an Mlp and a hooked ``nn.Sequential``: all linear layers but the
    last). ``ids=True`` also returns every point's region id. Points, and the result's ids, are in
    the source array's framework with its dtype (an Mlp's dtype for an Mlp). Returns
    :class:`Patterns`.
    """
    sources = [name for name, v in (("samples", samples), ("around", around), ("segment", segment),
                                     ("plane", plane)) if v is not None]
    if len(sources) != 1:
        raise InvalidArgument(f"count_patterns needs exactly one of samples, around, segment, plane (got "
                              f"{len(sources)}: {sources})")
    if around is None:
        for name, v in (("radius", radius), ("dims", dims)):
            if v is not None:
                raise InvalidArgument(f"{name}: only with around= (the neighbourhoods of the anchors)")
        if shape != "ball":
            raise InvalidArgument("shape: only with around= (the neighbourhood of the anchors)")
    if count is not None and around is None and segment is None:
        raise InvalidArgument("count: only with around= or segment= (points per anchor, or along the segment)")
    if plane is None and resolution != 512:
        raise InvalidArgument("resolution: only with plane= (the grid of the plane)")
    mlp = isinstance(model, Mlp)
    if not mlp and not callable(model):
        raise InvalidArgument(f"model: expected a dynascope.Mlp, a torch.nn.Module or a callable, "
                              f"got {type(model).__name__}")
    pts, fw, dtype, in_shape = _points(model if mlp else None, samples, around, radius, count, shape, dims, segment,
                                       plane, resolution, _seed(seed), threads)
    if mlp:
        if layers is not None:
            raise InvalidArgument("layers: only for torch models")
        m = int(pts.shape[0])
        ids_out = empty(fw if fw != "jax" else "numpy", (m,), "int64") if ids else None
        with progress_callback(progress) as report:
            samples_n, distinct, per_layer = _core.patterns_into(
                model._spec, model.params_view, host_view(pts, "samples"), _threads(threads), report, ids_out)
        return Patterns(int(samples_n), int(distinct), [int(c) for c in per_layer],
                        to_framework(fw, ids_out) if ids else None,
                        [f"layer{l + 1}" for l in range(len(model.widths) - 2)])
    return _patterns_generic(model, pts, fw, dtype, in_shape, ids, layers, batch_size, threads, progress)


def _points(mlp: Optional[Mlp], samples: Any, around: Any, radius: Optional[float], count: Optional[int],
            shape: str, dims: Optional[int], segment: Any, plane: Any, resolution: int, seed: int,
            threads: Optional[int]) -> Tuple[Any, str, str, Tuple[int, ...]]:
    """(points [M, D] or [M, *input_shape], framework, dtype, input_shape)."""
    want = mlp.dtype if mlp is not None else None
    if samples is not None:
        fw, dtype = check_array(samples, "samples", 2 if mlp is not None else None, want)
        if samples.ndim < 2:
            raise ShapeMismatch(f"samples: expected [M, *input_shape], got shape {tuple(samples.shape)}")
        in_shape = tuple(int(s) for s in samples.shape[1:])
        _check_width(mlp, in_shape, "samples", samples.shape)
        return samples, fw, dtype, in_shape
    name, src = ("around", around) if around is not None else ("segment", segment) if segment is not None \
        else ("plane", plane)
    fw, dtype = check_array(src, name, None, want)
    v = host_view(src, name)
    if v.ndim < 2:
        raise ShapeMismatch(f"{name}: expected [K, *input_shape] points, got shape {tuple(src.shape)}")
    in_shape = tuple(int(s) for s in v.shape[1:])
    _check_width(mlp, in_shape, name, src.shape)
    d = math.prod(in_shape)
    check_finite(v, name)
    flat = v.reshape(v.shape[0], d)
    out_fw = fw if fw != "jax" else "numpy"
    nthreads = _threads(threads)
    if around is not None:
        if radius is None:
            raise InvalidArgument("around: needs radius= (> 0)")
        r = _positive(radius, "radius")
        if count is None:
            raise InvalidArgument("around: needs count= (points per anchor, >= 1)")
        c = _count(count, "count")
        out = empty(out_fw, (flat.shape[0] * c, d), dtype)
        if shape == "ball":
            if dims is not None:
                raise InvalidArgument("dims: only with shape='cross-polytope'")
            _core.ball_points_into(flat, r, c, seed, nthreads, out)
        elif shape == "cross-polytope":
            p = min(25, d) if dims is None else _count(dims, "dims")
            if p > d:
                raise InvalidArgument(f"dims: {p} exceeds the input width {d}")
            _core.cross_polytope_points_into(flat, r, p, c, seed, nthreads, out)
        else:
            raise InvalidArgument(f"shape: expected 'ball' or 'cross-polytope', got {shape!r}")
    elif segment is not None:
        if int(v.shape[0]) != 2:
            raise ShapeMismatch(f"segment: expected 2 end points [2, ...], got shape {tuple(src.shape)}")
        c = 10000 if count is None else _count(count, "count")
        out = empty(out_fw, (c, d), dtype)
        _core.segment_points_into(np.asarray(flat, dtype=np.float64), c, out)
    else:
        if int(v.shape[0]) != 3:
            raise ShapeMismatch(f"plane: expected 3 points A, B, C [3, ...], got shape {tuple(src.shape)}")
        res = _count(resolution, "resolution")
        out = empty(out_fw, (res * res, d), dtype)
        _core.plane_grid_into(np.asarray(flat, dtype=np.float64), res, out)
    out = out.reshape((out.shape[0],) + in_shape)
    return out, fw, dtype, in_shape


def _check_width(mlp: Optional[Mlp], in_shape: Tuple[int, ...], name: str, shape: Any) -> None:
    if mlp is not None and (len(in_shape) != 1 or in_shape[0] != mlp.widths[0]):
        raise ShapeMismatch(f"{name}: the network {mlp.arch} takes {mlp.widths[0]} inputs per sample, got shape "
                            f"{tuple(shape)}")


def _patterns_generic(model: Any, pts: Any, fw: str, dtype: str, in_shape: Tuple[int, ...], ids: bool,
                      layers: Optional[Sequence[Any]], batch_size: Optional[int], threads: Optional[int],
                      progress: ProgressArg) -> Patterns:
    forward = _Forward(model, layers, fw, dtype)
    nthreads = _threads(threads)
    m = int(pts.shape[0])
    tile = _batch(batch_size, _PATTERN_TILE_ROWS)
    pv = host_view(pts, "samples")
    if forward.torch and framework(pv, "samples") != "torch":
        import torch
        pv = torch.from_numpy(pv)   # shares memory
    in_fw = "torch" if forward.torch else fw
    packed: Dict[str, np.ndarray] = {}
    order: List[str] = []
    state = {"first": 0}

    def sink(key: str, z: Any) -> None:
        if key not in packed:
            if state["first"] > 0:
                raise InvalidArgument(f"model: layer {key!r} appeared after the first batch")
            packed[key] = np.zeros((m, _core.pattern_words(int(z.shape[1]))), dtype=np.uint64)
            order.append(key)
        _core.pack_signs_into(z, state["first"], 0, nthreads, packed[key])

    outputs: List[str] = []
    with progress_callback(progress) as report:
        for s0 in range(0, m, tile):
            n = min(tile, m - s0)
            state["first"] = s0
            batch = pv[s0:s0 + n]
            outs = forward(to_framework(in_fw, batch) if in_fw == "jax" else batch, sink)
            if s0 == 0:
                outputs = outs
            if report is not None:
                report("activation patterns", s0 + n, m)
    hidden = [k for k in order if k not in outputs]
    if m == 0:
        return Patterns(0, 0, [0] * len(hidden), to_framework(fw, empty("numpy", (0,), "int64")) if ids else None,
                        hidden)
    if not hidden:
        raise InvalidArgument("model: no hidden layer was captured (only the output layer)")
    offsets = [0]
    for k in hidden:
        offsets.append(offsets[-1] + packed[k].shape[1])
    allp = np.concatenate([packed[k] for k in hidden], axis=1) if len(hidden) > 1 else packed[hidden[0]]
    allp = np.ascontiguousarray(allp)
    ids_out = np.empty((m,), dtype=np.int64) if ids else None
    samples_n, distinct, per_layer = _core.count_packed_patterns(allp, offsets, nthreads, ids_out)
    return Patterns(int(samples_n), int(distinct), [int(c) for c in per_layer],
                    from_numpy(fw, ids_out) if ids else None, hidden)


# ---- exact regions ------------------------------------------------------------------------------

def exact_regions(model: Mlp, segment: Any = None, plane: Any = None, max_regions: int = 200000) -> Any:
    """The exact linear regions of an Mlp's hidden layers along a segment or on a plane (float64;
    relu, leaky_relu, abs and identity activations only), as ``dynascope regions --segment S.npy
    --exact`` and ``--plane P.npy --exact-2d``.

    * ``segment``: ``[2, D]`` end points x0, x1 -> :class:`SegmentRegions` (the intervals of
      x0 + t (x1 - x0), t in [0, 1]).
    * ``plane``: ``[3, D]`` points A, B, C -> :class:`PlaneRegions` (the polygons of
      {A + s(B - A) + t(C - A) : s, t in [0, 1]}, the regions the decision boundary crosses).
    * ``max_regions``: stop with an error past this many regions (default 200 000).

    The points may be any float array (NumPy, torch, JAX); they are read as float64.
    """
    if not isinstance(model, Mlp):
        raise InvalidArgument(f"model: exact regions need a dynascope.Mlp (piecewise-linear), got "
                              f"{type(model).__name__}")
    if (segment is None) == (plane is None):
        raise InvalidArgument("exact_regions needs exactly one of segment=[2, D] or plane=[3, D]")
    cap = _count(max_regions, "max_regions")
    name, src, rows = ("segment", segment, 2) if segment is not None else ("plane", plane, 3)
    framework(src, name)
    pts = np.asarray(host_view(src, name).detach().cpu().numpy() if hasattr(src, "detach") else host_view(src, name),
                     dtype=np.float64)
    d = model.widths[0]
    if pts.shape != (rows, d):
        raise ShapeMismatch(f"{name}: expected [{rows}, {d}] points for the network {model.arch}, got shape "
                            f"{tuple(pts.shape)}")
    if not np.isfinite(pts).all():
        raise InvalidArgument(f"{name}: contains NaN or infinite values")
    pts = np.ascontiguousarray(pts)
    if segment is not None:
        regions, breakpoints = _core.segment_regions(model._spec, model.params_view, pts, cap)
        return SegmentRegions(int(regions), np.asarray(breakpoints, dtype=np.float64))
    polys, boundary_regions, segs = _core.plane_regions(model._spec, model.params_view, pts, cap)
    polygons = [PlanePolygon(np.asarray(v, dtype=np.float64).reshape(-1, 2), bool(b), int(l)) for v, b, l in polys]
    return PlaneRegions(len(polygons), int(boundary_regions), polygons,
                        np.asarray(segs, dtype=np.float64).reshape(-1, 4))


# ---- argument checks ----------------------------------------------------------------------------

def _positive(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise InvalidArgument(f"{name}: expected a positive number, got {type(v).__name__}")
    f = float(v)
    if not (f > 0 and math.isfinite(f)):
        raise InvalidArgument(f"{name}: expected a positive finite number, got {v!r}")
    return f


def _count(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        what = f"{type(v).__name__} of shape {tuple(v.shape)}" if hasattr(v, "shape") else repr(v)
        raise InvalidArgument(f"{name}: expected an integer >= 1, got {what}")
    return int(v)


def _index(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise InvalidArgument(f"{name}: expected an integer >= 0, got {v!r}")
    return int(v)


def _seed(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 2 ** 64:
        raise InvalidArgument(f"seed: expected an integer in 0 .. 2**64 - 1, got {v!r}")
    return int(v)


def _batch(v: Any, default: int) -> int:
    return default if v is None else _count(v, "batch_size")
