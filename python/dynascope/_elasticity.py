"""dynascope.elasticity and dynascope.response: how one training step on a sample moves the
network's outputs elsewhere (the command-line tool's ``elasticity`` and ``response``)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._arrays import check_array, check_finite, framework, from_numpy, host_view
from ._core import InvalidArgument, ShapeMismatch
from ._mlp import Mlp
from ._runtime import ProgressArg, progress_callback
from ._runtime import threads as _threads
from ._torchfunc import check_batch, func_api

__all__ = ["elasticity", "torch_elasticity", "Elasticity", "response", "torch_response", "Response", "LayerFeatures",
           "aging_fit", "AgingFit"]


# ---- shared with dynascope.train ----

def _check_model(model: Any) -> None:
    if not isinstance(model, Mlp):
        raise InvalidArgument(f"model: expected a dynascope.Mlp (e.g. dynascope.Mlp.from_torch(net)), got "
                              f"{type(model).__name__}")


def _check_inputs(model: Mlp, x: Any, name: str) -> str:
    """Checks x [N, D] against the model; returns its framework."""
    fw, _ = check_array(x, name, 2, model.dtype)
    d = model.widths[0]
    if x.shape[1] != d:
        raise ShapeMismatch(f"{name}: the network {model.arch} takes {d} inputs per sample, got shape "
                            f"{tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidArgument(f"{name}: no samples (shape {tuple(x.shape)})")
    check_finite(x, name)
    return fw


def _is_integer(a: Any) -> bool:
    dt = getattr(a, "dtype", None)
    if dt is None:
        return False
    if "torch" in str(type(dt)):
        return (not dt.is_floating_point) and (not dt.is_complex) and str(dt) != "torch.bool"
    try:
        return np.issubdtype(np.dtype(dt), np.integer)
    except TypeError:
        return False


def _labels_array(a: Any, name: str) -> np.ndarray:
    """Integer labels as a contiguous int64 NumPy array (the same memory when they already are)."""
    framework(a, name)
    if _arrays_is_torch(a):
        if a.device.type != "cpu":
            raise InvalidArgument(f"{name}: the labels are on {a.device}: pass {name}.cpu()")
        a = a.detach().numpy()
    else:
        a = np.asarray(host_view(a, name))
    if a.ndim != 1:
        raise ShapeMismatch(f"{name}: expected integer class labels of shape [N], got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _arrays_is_torch(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


def _targets(model: Mlp, targets: Any, n: int, name: str = "targets") -> Tuple[Any, Optional[np.ndarray]]:
    """(float values [N, O] as the core reads them, or None; int64 labels [N], or None).

    Integer arrays are class labels (in [0, outputs)); float arrays are values [N, O] in the
    model's dtype ([N] when the network has one output)."""
    o = model.widths[-1]
    if targets is None:
        raise InvalidArgument(f"{name}: the step is taken on the samples' loss and needs their targets: float "
                              f"values [N, {o}] or integer class labels [N]")
    if _is_integer(targets):
        labels = _labels_array(targets, name)
        if labels.shape[0] != n:
            raise ShapeMismatch(f"{name}: expected {n} labels (one per sample), got {labels.shape[0]}")
        if labels.size and (labels.min() < 0 or labels.max() >= o):
            bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
            row = int(np.flatnonzero(labels == bad)[0])
            raise InvalidArgument(f"{name}: class label {bad} at row {row} is out of range for the network's {o} "
                                  f"outputs (labels are 0..{o - 1})")
        return None, labels
    check_array(targets, name, None, model.dtype)
    values = host_view(targets, name)
    if values.ndim == 1 and o == 1:
        values = values.reshape(-1, 1)   # a view: [N] targets of a one-output network
    if values.ndim != 2 or values.shape[1] != o or values.shape[0] != n:
        raise ShapeMismatch(f"{name}: expected float targets of shape [{n}, {o}] (one row per sample, one value per "
                            f"output{'; or [N]' if o == 1 else ''}) or integer class labels [{n}], got shape "
                            f"{tuple(targets.shape)}")
    check_finite(values, name)
    return values, None


def _loss(loss: Optional[str], labels: Optional[np.ndarray]) -> str:
    """The loss of the step: xent for labels, mse for float targets unless given."""
    if loss is None:
        return "xent" if labels is not None else "mse"
    if not isinstance(loss, str):
        raise InvalidArgument(f"loss: expected 'mse', 'xent' or None, got {loss!r}")
    if loss in ("xent", "cross_entropy") and labels is None:
        raise InvalidArgument("loss: xent needs integer class labels, but the targets are floats: pass the labels "
                              "as integers (e.g. y.long(), or y.argmax(1) for one-hot rows), or use loss='mse'")
    return loss


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidArgument(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def _rows(a: Any, idx: np.ndarray) -> Any:
    """The rows `idx` of a host array (NumPy or torch), as a new contiguous array."""
    if _arrays_is_torch(a):
        import torch
        return a[torch.from_numpy(idx)].contiguous()
    return np.ascontiguousarray(a[idx])


def _warn(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


# ---- elasticity ----

@dataclass
class Elasticity:
    """The local elasticity of one network (the command-line tool's ``elasticity`` JSON keys).

    Arrays are in the framework of ``x`` (NumPy, torch or JAX), float64 unless said otherwise."""

    metric: str
    """The metric used (``"auto"`` resolved): "abs", "l2", "kl" or "kl-compat"."""
    form: str
    """"step" or "ntk"."""
    update: str
    """"sgd" or "adam"."""
    eta: float
    """The step size."""
    loss: str
    """The loss of the step: "mse" or "xent"."""
    s_rel: Any
    """[N1, N2] S_rel(x_i, x'_j) = m(x'_j; i) / m(x_i; i): row = source, column = target of the move.
    A source without S_rel has a NaN row."""
    s_ker: Any
    """[N1, N2] the kernel form Delta_i(x'_j) / (-eta dl_i/df) (-> Theta(x'_j, x_i)), for metric abs
    with one output; None otherwise."""
    self_change: Any
    """[N1] m(x_i; i), each source's change of its own output (the denominators)."""
    mean: float
    """Mean S_rel over the defined pairs, leaving out a sample's pair with itself when the targets are
    the sources (S_rel = 1 there by definition); NaN when no pair is defined."""
    pairs: int
    """How many pairs ``mean`` averages."""
    sources: int
    """N1, the sources measured (K per class with ``pairs_per_class``)."""
    targets: int
    """N2, the targets of the move."""
    same_set: bool
    """True when the targets of the move are the sources (no ``x2``)."""
    classes: Optional[int]
    """C, the number of classes (largest label + 1) for class labels; None for float targets."""
    class_matrix: Any
    """[C, C] entry (a, b): mean S_rel over sources of class a and targets of class b (NaN when
    empty); None for float targets, or with ``x2`` but no ``targets2``."""
    class_pairs: Any
    """[C, C] int64: the pairs averaged in each entry of ``class_matrix``; None with it."""
    within_class: Optional[float]
    """Mean of the diagonal entries of ``class_matrix``."""
    across_class: Optional[float]
    """Mean of the off-diagonal entries of ``class_matrix``."""
    ratio: Optional[float]
    """within_class / across_class: above 1 the step stays local to its class."""
    empty_cells: Optional[int]
    """Entries of ``class_matrix`` with no pair (left out of within/across)."""
    undefined_sources: Any
    """int64 [k]: the sources without S_rel (their rows of ``x``), ascending: a zero loss gradient
    (the step does not move their own output) or unresolved (below)."""
    unresolved_sources: Any
    """int64 [k]: of those, the step form's sources whose loss gradient is not zero but whose own
    change is below the precision of the dtype (use float64 or ``form="ntk"``)."""
    source_rows: Any
    """int64 [N1] with ``pairs_per_class``: the rows of ``x`` drawn as sources (the rows of
    ``s_rel``); None otherwise."""
    target_rows: Any
    """int64 [N2] with ``pairs_per_class``: the rows of ``x2`` (or ``x``) drawn as targets (the
    columns of ``s_rel``); None otherwise."""
    flops: float
    """Floating-point operations of the model's products."""


def _pair_mean(s: np.ndarray, same_set: bool) -> Tuple[float, int]:
    ok = np.isfinite(s)
    if same_set:
        np.fill_diagonal(ok, False)
    count = int(ok.sum())
    return (float(s[ok].sum() / count) if count else float("nan")), count


def _undefined_message(undefined: int, unresolved: int, total: int, dtype: str, hint: str, what: str) -> str:
    parts = []
    zero = undefined - unresolved
    if zero:
        parts.append(f"{zero} have a zero loss gradient (the network fits them exactly, so the step does not move "
                     f"it)")
    if unresolved:
        parts.append(f"{unresolved} are unresolved at {dtype} (their own change is below its precision, though "
                     f"their loss gradient is not zero): {hint}")
    return f"{undefined} of the {total} {what} have no {'S_rel' if what == 'sources' else 'response'}: " + \
        "; ".join(parts) + "; they are left out of the means"


def _step_options(labels: Optional[np.ndarray], eta: Any, update: Any, adam_eps: Any, form: Any, metric: Any,
                  loss: Any) -> Tuple[float, float, str]:
    """Checks the options of the one step against the targets; returns (eta, adam_eps, loss)."""
    eta = _positive(eta, "eta")
    if update not in ("sgd", "adam"):
        raise InvalidArgument(f"update: expected 'sgd' or 'adam', got {update!r}")
    if adam_eps is not None and update != "adam":
        raise InvalidArgument(f"adam_eps: it is the constant of update='adam' (the update is {update!r})")
    adam_eps = 1e-8 if adam_eps is None else _positive(adam_eps, "adam_eps")
    if form not in ("step", "ntk"):
        raise InvalidArgument(f"form: expected 'step' or 'ntk', got {form!r}")
    if not isinstance(metric, str):
        raise InvalidArgument(f"metric: expected 'auto', 'abs', 'l2', 'kl' or 'kl-compat', got {metric!r}")
    if metric == "abs" and labels is not None:
        raise InvalidArgument("metric: 'abs' measures float outputs against value targets, but the targets are class "
                              "labels: use metric='kl', 'l2' or 'kl-compat' (or 'auto')")
    if metric in ("kl", "l2", "kl-compat", "kl_compat") and labels is None:
        raise InvalidArgument(f"metric: {metric!r} compares class probabilities and needs class labels, but the "
                              f"targets are floats: use metric='abs' (or 'auto')")
    return eta, adam_eps, _loss(loss, labels)


def _finish(r: dict, fw: str, dtype: str, form: str, update: str, eta: float, loss: str, same_set: bool,
            labels: Optional[np.ndarray], class_labels2: Optional[np.ndarray], classes: Optional[int],
            source_rows: Optional[np.ndarray], target_rows: Optional[np.ndarray]) -> Elasticity:
    """The mean, the class-pair matrix and the warnings of a pair result; the dataclass."""
    s_rel = r["s_rel"]
    mean, pairs = _pair_mean(s_rel, same_set)
    cm = None
    if labels is not None and class_labels2 is not None:
        cm = _core.elasticity_class_matrix(s_rel, labels, class_labels2, classes, same_set)
    # Indices into the caller's rows of x.
    undefined, unresolved = r["undefined_sources"], r["unresolved_sources"]
    if source_rows is not None:
        undefined, unresolved = source_rows[undefined], source_rows[unresolved]
    if undefined.size:
        hint = ("use float64 or form='ntk'" if dtype == "float32"
                else "use form='ntk' or a larger eta" if form == "step" and update == "sgd" else "use a larger eta")
        _warn(_undefined_message(undefined.size, unresolved.size, s_rel.shape[0], dtype, hint, "sources"), 4)

    def opt(key: str) -> Any:
        return None if cm is None else cm[key]

    return Elasticity(
        metric=r["metric"], form=form, update=update, eta=eta, loss=loss,
        s_rel=from_numpy(fw, s_rel), s_ker=None if r["s_ker"] is None else from_numpy(fw, r["s_ker"]),
        self_change=from_numpy(fw, r["self_change"]), mean=mean, pairs=pairs, sources=int(s_rel.shape[0]),
        targets=int(s_rel.shape[1]), same_set=same_set, classes=classes,
        class_matrix=None if cm is None else from_numpy(fw, cm["class_matrix"]),
        class_pairs=None if cm is None else from_numpy(fw, cm["class_pairs"]),
        within_class=opt("within_class"), across_class=opt("across_class"), ratio=opt("ratio"),
        empty_cells=opt("empty_cells"), undefined_sources=from_numpy(fw, undefined),
        unresolved_sources=from_numpy(fw, unresolved),
        source_rows=None if source_rows is None else from_numpy(fw, source_rows),
        target_rows=None if target_rows is None else from_numpy(fw, target_rows), flops=r["flops"])



def elasticity(model: Mlp, x: Any, targets: Any, x2: Any = None, targets2: Any = None, eta: float = 1e-3,
               update: str = "sgd", adam_eps: Optional[float] = None, form: str = "step", metric: str = "auto",
               loss: Optional[str] = None, pairs_per_class: int = 0, seed: int = 0, threads: Optional[int] = None,
               progress: ProgressArg = None) -> Elasticity:
    """Local elasticity: how one training step on each source x_i moves the outputs at the targets
    of the move x'_j, relative to its own output, S_rel(x_i, x'_j) = m(x'_j; i) / m(x_i; i).

    * ``model``: a :class:`dynascope.Mlp`.
    * ``x`` [N1, D]: the sources, in the model's dtype (float32 or float64), C-contiguous (NumPy,
      torch CPU or JAX CPU). Read in place. Compute in float64 for small steps: in float32 a step
      of 1e-3 leaves a confident source's own change below rounding (it is then *unresolved*).
    * ``targets``: the sources' targets (the step is taken on their loss): integer class labels
      [N1] (any integer dtype) or float values [N1, O] in the model's dtype ([N1] for one output).
    * ``x2`` [N2, D]: the targets of the move (default: the sources themselves).
    * ``targets2`` [N2]: integer class labels of ``x2``, for the class-pair matrix (class-labelled
      sources only).
    * ``eta``: step size, > 0 (default 1e-3).
    * ``update``: "sgd" (w - eta g) or "adam" (the first step of a fresh Adam,
      w - eta g / (|g| + adam_eps), ~ -eta sign g).
    * ``adam_eps``: Adam's constant (default 1e-8; only with ``update="adam"``).
    * ``form``: "step" (take the step) or "ntk" (its eta -> 0 limit from the empirical NTK; sgd only).
    * ``metric``: "auto" (abs for float targets, kl for labels), "abs" (||Delta f||_2; float
      targets), "kl" (KL(p_w || p_w+) of the softmax), "l2" (||Delta softmax f||_2) or
      "kl-compat" (the reference notebooks' formula; step form); the last three need labels.
    * ``loss``: the loss of the step, "mse" (mean over the outputs of (f - y)^2) or "xent";
      default xent for labels, mse for float targets.
    * ``pairs_per_class``: K > 0 draws K sources and K targets of every class (seeded by ``seed``;
      one draw when the targets are the sources); 0 (default) measures every pair.
    * ``seed``: the draw of ``pairs_per_class``.
    * ``threads``, ``progress``: as for :func:`dynascope.ntk`.

    Returns an :class:`Elasticity`. Sources without S_rel (a zero loss gradient, or unresolved
    at the dtype's precision) have NaN rows, are listed in ``undefined_sources`` and left out of
    every mean; a ``RuntimeWarning`` says how many and what to change. When no source has S_rel
    the result is returned all the same (``mean`` NaN), where the command-line tool exits with an
    error.
    """
    _check_model(model)
    fw = _check_inputs(model, x, "x")
    n1 = x.shape[0]
    values, labels = _targets(model, targets, n1)
    eta, adam_eps, loss = _step_options(labels, eta, update, adam_eps, form, metric, loss)
    if isinstance(pairs_per_class, bool) or not isinstance(pairs_per_class, int) or pairs_per_class < 0:
        raise InvalidArgument(f"pairs_per_class: expected an integer >= 0 (0 = every pair), got {pairs_per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 64:
        raise InvalidArgument(f"seed: expected an integer in [0, 2**64), got {seed!r}")

    if x2 is not None:
        _check_inputs(model, x2, "x2")
    labels2 = _labels2(labels, x2, targets2)
    same_set = x2 is None
    class_labels2 = labels if same_set else labels2
    classes = _classes(labels, labels2)
    if pairs_per_class > 0 and (labels is None or class_labels2 is None):
        raise InvalidArgument("pairs_per_class: " + ("the targets are floats, which have no classes" if labels is None
                                                     else "pairs per class need the classes of the targets of the "
                                                          "move: give targets2 with x2"))

    xs = host_view(x, "x")
    xt = None if x2 is None else host_view(x2, "x2")
    source_rows = target_rows = None
    if pairs_per_class > 0:
        def draw(lab: np.ndarray, which: str) -> np.ndarray:
            counts = np.bincount(lab, minlength=classes)
            for c in range(classes):
                if counts[c] < pairs_per_class:
                    raise InvalidArgument(f"pairs_per_class {pairs_per_class}: class {c} of {which} has {counts[c]} "
                                          f"samples, fewer than {pairs_per_class}")
            return _core.elasticity_sample_per_class(lab, classes, pairs_per_class, seed)
        source_rows = draw(labels, "the sources")
        xs = _rows(xs, source_rows)
        labels = np.ascontiguousarray(labels[source_rows])
        if same_set:
            target_rows = source_rows
            class_labels2 = labels
        else:
            target_rows = draw(labels2, "the targets of the move (x2)")
            xt = _rows(xt, target_rows)
            class_labels2 = np.ascontiguousarray(labels2[target_rows])

    with progress_callback(progress) as report:
        r = _core.elasticity_pairs(model._spec, model.params_view, xs, values, labels, xt, eta, update, adam_eps,
                                   form, metric, loss, _threads(threads), report)
    return _finish(r, fw, model.dtype, form, update, eta, loss, same_set, labels, class_labels2, classes,
                   source_rows, target_rows)


def _labels2(labels: Optional[np.ndarray], x2: Any, targets2: Any) -> Optional[np.ndarray]:
    """The class labels of the targets of the move, checked."""
    if targets2 is None:
        return None
    if x2 is None:
        raise InvalidArgument("targets2: it labels the targets of the move x2; give x2 too")
    if labels is None:
        raise InvalidArgument("targets2: the targets of the move only need labels for the class-pair matrix, and "
                              "the sources hold float targets (no classes); leave targets2 out")
    if not _is_integer(targets2):
        raise InvalidArgument(f"targets2: expected integer class labels [N2], got dtype {targets2.dtype}")
    labels2 = _labels_array(targets2, "targets2")
    if labels2.shape[0] != x2.shape[0]:
        raise ShapeMismatch(f"targets2: expected {x2.shape[0]} labels (one per row of x2), got {labels2.shape[0]}")
    if labels2.size and labels2.min() < 0:
        raise InvalidArgument(f"targets2: negative class label {int(labels2.min())}")
    return labels2


def _classes(labels: Optional[np.ndarray], labels2: Optional[np.ndarray]) -> Optional[int]:
    if labels is None:
        return None
    classes = int(labels.max()) + 1
    if labels2 is not None and labels2.size:
        classes = max(classes, int(labels2.max()) + 1)
    return classes


# ---- any torch model: the shared machinery ----

def _as_torch(a: Any, name: str, dtype: Any) -> Any:
    import torch
    fw = framework(a, name)
    t = a if fw == "torch" else torch.from_numpy(np.asarray(host_view(a, name)))
    if t.device.type != "cpu":
        raise InvalidArgument(f"{name}: this version of the package computes on the host only; pass {name}.cpu()")
    check_batch(t, name, dtype, "a batch")
    return t


class _TorchModel:
    """A torch module as a function of its trainable parameters: the checks, the parameters the step
    moves (those with requires_grad), the constants (frozen parameters and buffers) and the
    functional forward f(w, x) -> [B, O] (one sample's outputs flattened)."""

    def __init__(self, model: Any) -> None:
        import torch
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgument(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if model.training and any(isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,
                                                 torch.nn.modules.dropout._DropoutNd)) for m in model.modules()):
            raise InvalidArgument("model: has BatchNorm or Dropout layers in training mode; call model.eval() first")
        self.params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        if not self.params:
            raise InvalidArgument("model: no parameter has requires_grad=True, so the step moves nothing")
        dtypes = {p.dtype for p in self.params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
            raise InvalidArgument(f"model: expected float32 or float64 parameters of one dtype, got "
                                  f"{sorted(str(d) for d in dtypes)}")
        devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
        if devices != {"cpu"}:
            raise InvalidArgument(f"model: has parameters or buffers on {sorted(devices - {'cpu'})}; this version of "
                                  f"the package computes on the host only: pass model.cpu()")
        self.module = model
        self.dtype = next(iter(dtypes))
        self.dtype_name = str(self.dtype).replace("torch.", "")
        self.constants = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
        self.constants.update(dict(model.named_buffers()))
        self.api = func_api("the torch_* functions need torch.func (torch >= 2) or functorch (torch 1.13)")
        self.size = sum(p.numel() for p in self.params.values())

    def f(self, w: Any, xb: Any) -> Any:
        import torch
        out = self.api.functional_call(self.module, {**w, **self.constants}, (xb,))
        if not isinstance(out, torch.Tensor):
            raise InvalidArgument(f"model: returns {type(out).__name__}; expected one tensor of outputs [B, ...]")
        if out.ndim == 0 or out.shape[0] != xb.shape[0]:
            raise ShapeMismatch(f"model: maps a batch of {xb.shape[0]} samples to outputs of shape "
                                f"{tuple(out.shape)}; expected [{xb.shape[0]}, ...] (one row per sample)")
        return out.reshape(xb.shape[0], -1)

    def f1(self, w: Any, xi: Any) -> Any:
        """One sample's outputs [O]."""
        return self.f(w, xi.unsqueeze(0))[0]

    def targets(self, targets: Any, n: int, o: int) -> Tuple[Any, Optional[np.ndarray]]:
        """The targets checked against the outputs, as _targets returns them."""
        shape = SimpleNamespace(widths=[0, o], dtype=self.dtype_name)
        return _targets(shape, targets, n)   # type: ignore[arg-type]

    def loss_grads(self, x: Any, base: Any, values: Any, labels: Optional[np.ndarray], loss: str) -> Tuple[Any, Any]:
        """Per-sample parameter gradients {name: [N, ...]} of the loss (= J_i^T dl_i/df) and dl_i/df [N, O],
        the latter in closed form (the library's per-sample losses)."""
        import torch
        n, o = base.shape
        y = torch.from_numpy(labels) if labels is not None else torch.as_tensor(values).reshape(n, o)
        # Labels as one-hot rows (indexing by a batched label is not vmap-able).
        target = torch.nn.functional.one_hot(y, o).to(self.dtype) if labels is not None else y

        def sample_loss(w: Any, xi: Any, ti: Any) -> Any:
            fo = self.f1(w, xi)
            if loss == "xent":
                return -(torch.log_softmax(fo, 0) * ti).sum()
            return ((fo - ti) ** 2).mean()

        g = self.api.vmap(self.api.grad(sample_loss), in_dims=(None, 0, 0))(self.params, x, target)
        dldf = torch.softmax(base, 1) - target if loss == "xent" else 2.0 * (base - target) / o
        return g, dldf

    def step_changes(self, step: Any, eta: float, x1: Any, x2: Optional[Any], base1: Any, base2: Any,
                     chunk_size: int, report: Any, task: str) -> Tuple[Any, Any]:
        """The step w - eta step_i of every source, taken: Delta [N1, N2, O] at the targets of the move
        (x2, or x1 itself) and each source's own change [N1, O], float64. Each chunk of sources goes
        through one vmap(functional_call) over the targets."""
        import torch
        n1, o = base1.shape
        n2 = base2.shape[0]
        xt = x1 if x2 is None else x2
        delta = torch.empty(n1, n2, o, dtype=torch.float64)
        own = torch.empty(n1, o, dtype=torch.float64)
        with torch.no_grad():
            for a in range(0, n1, chunk_size):
                b = min(n1, a + chunk_size)
                w = {n: self.params[n].unsqueeze(0) - eta * step[n][a:b] for n in self.params}
                d = self.api.vmap(self.f, in_dims=(0, None))(w, xt) - base2.unsqueeze(0)
                delta[a:b] = d.double()
                if x2 is None:
                    own[a:b] = torch.stack([d[i - a, i] for i in range(a, b)]).double()   # S_rel(x_i, x_i) = 1 exactly
                else:
                    own[a:b] = (self.api.vmap(self.f1)(w, x1[a:b]) - base1[a:b]).double()
                if report is not None:
                    report(task, b * n2, n1 * n2)
        return delta, own

    def unresolved(self, g: Any, dldf: Any, base1: Any, own: Any) -> List[int]:
        """The step form's sources whose gradient is not zero but whose own change is at the rounding
        level of the dtype (the library's criterion: 32 epsilon, relative to the outputs)."""
        import torch
        n1 = base1.shape[0]
        resolution = 32 * float(torch.finfo(self.dtype).eps)
        b1 = base1.double()
        moved = (dldf != 0).any(1) & torch.stack([(t.reshape(n1, -1) != 0).any(1) for t in g.values()]).any(0)
        level = resolution * torch.maximum(torch.ones(n1, dtype=torch.float64),
                                           torch.maximum(b1.abs().amax(1), (b1 + own).abs().amax(1)))
        return torch.nonzero(moved & (own.abs().amax(1) <= level)).reshape(-1).tolist()


def _chunk(chunk_size: Any, per_item: int) -> int:
    """Items per chunk: as given, or as many as keep ~per_item elements each under ~256 MiB."""
    if chunk_size is None:
        return max(1, (1 << 25) // max(1, per_item))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidArgument(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
    return chunk_size


# ---- elasticity of any torch model ----

def torch_elasticity(model: Any, x: Any, targets: Any, x2: Any = None, targets2: Any = None, eta: float = 1e-3,
                     update: str = "sgd", adam_eps: Optional[float] = None, metric: str = "auto",
                     loss: Optional[str] = None, chunk_size: Optional[int] = None,
                     progress: ProgressArg = None) -> Elasticity:
    """:func:`elasticity` (step form) of any PyTorch module: the one step on each source is taken
    with torch.func (functorch on torch 1.13) and the changes are measured by the library.

    * ``model``: a ``torch.nn.Module`` on the CPU in eval mode, parameters float32 or float64 (one
      dtype), mapping a batch ``[B, ...]`` to outputs ``[B, ...]`` (O = the outputs of one sample,
      flattened). The step moves the parameters with ``requires_grad=True``; buffers and frozen
      parameters are constants. The model is not modified.
    * ``x`` ``[N1, ...]``, ``x2`` ``[N2, ...]``: torch CPU tensors, NumPy or JAX CPU arrays in the
      parameters' dtype; ``targets``, ``targets2``, ``eta``, ``update``, ``adam_eps``, ``metric``
      and ``loss`` as for :func:`elasticity`.
    * ``chunk_size``: sources stepped at once (each holds a copy of the parameters and a forward
      over the N2 targets); default: as many as keep that under ~256 MiB.
    * ``progress``: as for :func:`elasticity` (one report per chunk of sources).

    How: per-sample loss gradients by ``vmap(grad(loss))``; each chunk's stepped parameters
    w - eta step(g_i) go through one ``vmap(functional_call)`` over the targets; the metric, S_rel,
    S_ker and the undefined sources are the library's (``elasticity::metrics``), the class matrix
    as in :func:`elasticity`. Supported layers: whatever torch.func can differentiate per sample
    and run under ``vmap`` with batched parameters (Linear, Conv, pooling, activations, Flatten,
    LayerNorm, BatchNorm in eval mode); BatchNorm in training mode and dropout are refused
    (``model.eval()``).
    """
    import torch
    tm = _TorchModel(model)
    fw = framework(x, "x")
    x1t = _as_torch(x, "x", tm.dtype)
    x2t = None if x2 is None else _as_torch(x2, "x2", tm.dtype)
    if x2t is not None and x2t.shape[1:] != x1t.shape[1:]:
        raise ShapeMismatch(f"x2: expected samples of shape {tuple(x1t.shape[1:])} like x's, got "
                            f"{tuple(x2t.shape[1:])}")
    with torch.no_grad():
        base1 = tm.f(tm.params, x1t)
        base2 = base1 if x2t is None else tm.f(tm.params, x2t)
    n1, o = base1.shape
    n2 = base2.shape[0]
    values, labels = tm.targets(targets, n1, o)
    eta, adam_eps, loss = _step_options(labels, eta, update, adam_eps, "step", metric, loss)
    if metric == "auto":
        metric = "kl" if labels is not None else "abs"
    labels2 = _labels2(labels, x2, targets2)
    classes = _classes(labels, labels2)
    chunk_size = _chunk(chunk_size, tm.size + 16 * n2 * o)

    g, dldf = tm.loss_grads(x1t, base1, values, labels, loss)
    step = g if update == "sgd" else {n: t / (t.abs() + adam_eps) for n, t in g.items()}
    with progress_callback(progress) as report:
        delta, own = tm.step_changes(step, eta, x1t, x2t, base1, base2, chunk_size, report, "elasticity")
    unresolved = tm.unresolved(g, dldf, base1, own)
    r = _core.elasticity_metrics(base1.double().contiguous().numpy(), base2.double().contiguous().numpy(),
                                 dldf.double().contiguous().numpy(), own.contiguous().numpy(),
                                 delta.reshape(n1, n2 * o).numpy(), eta, unresolved, metric, "step")
    same_set = x2 is None
    return _finish(r, fw, tm.dtype_name, "step", update, eta, loss, same_set, labels,
                   labels if same_set else labels2, classes, None, None)


# ---- response ----

@dataclass
class LayerFeatures:
    """The feature space of one hidden layer (its activations H [N, width] over the samples)."""

    layer: int
    """The hidden layer, 1..L-1 (:func:`torch_response`: the captured module's place, 1..k, in the
    order of ``model.named_modules()``)."""
    width: int
    """Its units (:func:`torch_response`: one sample's captured output, flattened)."""
    effective_rank: float
    """exp of the entropy of the normalised singular values of H (Roy & Vetterli)."""
    participation_ratio: float
    """(sum s^2)^2 / sum s^4 over the singular values s of H."""
    dead: int
    """Units whose activation is exactly zero on every sample."""
    duplicated: Optional[int]
    """Units whose normalised (weights, bias) lie within ``duplicate_tolerance`` of an earlier unit's
    (:func:`torch_response`: the rows of the Linear, or output channels of the Conv, that produces
    the captured output; None when no such layer produces it directly)."""
    name: Optional[str] = None
    """:func:`torch_response`: the captured module's qualified name; None for a :class:`Mlp`."""


@dataclass
class Response:
    """The training response of one network (the command-line tool's ``response`` JSON keys).

    Arrays are in the framework of ``x``, float64 unless said otherwise."""

    samples: int
    """N, the samples measured."""
    eta: float
    """The step size of the one SGD step."""
    form: str
    """"step" or "ntk"."""
    loss: str
    """The loss of the step: "mse" or "xent"."""
    matrix: Any
    """[N, N] R(x_j, x_i): row i = the source of the step, column j = where it is measured. NaN rows
    for the undefined sources."""
    mean_diagonal: float
    """Mean R(x_i, x_i) over the defined sources."""
    mean_off_diagonal: float
    """Mean R(x_j, x_i) over the pairs i != j of defined sources."""
    layer_diagonal: Any
    """[L] the mean diagonal response of each layer's kernel Theta_l (they sum to the ntk-form
    total); empty with ``per_layer=False``."""
    layer_off_diagonal: Any
    """[L] the same for the off-diagonal mean."""
    undefined_sources: Any
    """int64 [k]: samples without a response (dl/df = 0, or unresolved), left out of the means."""
    unresolved_sources: Any
    """int64 [k]: of those, the step form's samples whose own change is below the dtype's precision."""
    kernel_gap: float
    """Step form with per_layer: |mean_diagonal - sum(layer_diagonal)| / |sum(layer_diagonal)|, how far
    the one step is from its eta -> 0 limit; NaN otherwise."""
    features: List[LayerFeatures]
    """One per hidden layer."""
    input_grad_norm: float
    """Mean over the samples of ||df/dx||_F (the fragility)."""
    duplicate_tolerance: float
    """The tolerance ``duplicated`` was counted with."""
    flops: float
    """Floating-point operations of the model's products (0 for :func:`torch_response`: torch does them)."""
    layer_names: Optional[List[str]] = None
    """:func:`torch_response`: the parameter groups behind ``layer_diagonal`` (the qualified names of
    the modules that own trainable parameters directly, "" for the model itself); None for a
    :class:`Mlp`, whose layers are 1..L."""


def _check_tolerance(duplicate_tolerance: Any) -> None:
    if (isinstance(duplicate_tolerance, bool) or not isinstance(duplicate_tolerance, (int, float))
            or not math.isfinite(duplicate_tolerance) or duplicate_tolerance < 0):
        raise InvalidArgument(f"duplicate_tolerance: expected a finite number >= 0, got {duplicate_tolerance!r}")


def _response_warnings(undefined: int, unresolved: int, n: int, dtype: str, form: str, kernel_gap: float) -> None:
    """The RuntimeWarnings of a response: samples without one, and a step far from its limit."""
    if undefined:
        hint = ("use float64 or form='ntk'" if dtype == "float32"
                else "use form='ntk' or a larger eta" if form == "step" else "use a larger eta")
        _warn(_undefined_message(undefined, unresolved, n, dtype, hint, "samples"), 4)
    if math.isfinite(kernel_gap) and kernel_gap > 0.05:
        _warn(f"the one step differs from its eta -> 0 limit by {100 * kernel_gap:.3g}% (kernel_gap): eta too "
              f"large for a linear step, or too small for the precision ({dtype})", 4)


def response(model: Mlp, x: Any, targets: Any, eta: float = 1e-3, form: str = "step", loss: Optional[str] = None,
             duplicate_tolerance: float = 1e-3, per_layer: bool = True, threads: Optional[int] = None,
             progress: ProgressArg = None) -> Response:
    """The training response (Nakazato) over all pairs of the samples, with the hidden layers'
    feature space.

    R(x', x) = Delta f(x') / (-eta dl/df(x)) for one SGD step of size ``eta`` on x; with several
    outputs along the loss gradient g = dl/df(x): R = -<g, Delta f(x')> / (eta ||g||^2)
    (-> g^T Theta(x', x) g / ||g||^2 as eta -> 0).

    * ``model``: a :class:`dynascope.Mlp`; ``x`` [N, D] (N >= 2) in its dtype (float64 advised,
      see :func:`elasticity`); ``targets``: integer labels [N] or float values [N, O].
    * ``eta``: step size, > 0 (default 1e-3).
    * ``form``: "step" (take the step) or "ntk" (its eta -> 0 limit).
    * ``loss``: "mse" or "xent"; default xent for labels, mse for float targets.
    * ``duplicate_tolerance``: two hidden units are duplicates when their normalised
      (weights, bias) lie within it, >= 0 (default 1e-3).
    * ``per_layer``: the per-layer responses from the per-layer NTK (default True, as the
      command-line tool; in the step form they cost a second pass).
    * ``threads``, ``progress``: as for :func:`dynascope.ntk`.

    Returns a :class:`Response`. Samples without a response have NaN rows; a ``RuntimeWarning``
    says how many and why, and another when ``kernel_gap`` exceeds 5 %.
    """
    _check_model(model)
    fw = _check_inputs(model, x, "x")
    n = x.shape[0]
    if n < 2:
        raise InvalidArgument(f"x: the response needs at least 2 samples (the off-diagonal response is between two), "
                              f"got {n}")
    values, labels = _targets(model, targets, n)
    eta = _positive(eta, "eta")
    if form not in ("step", "ntk"):
        raise InvalidArgument(f"form: expected 'step' or 'ntk', got {form!r}")
    loss = _loss(loss, labels)
    _check_tolerance(duplicate_tolerance)
    with progress_callback(progress) as report:
        r = _core.training_response(model._spec, model.params_view, host_view(x, "x"), values, labels, eta, form, loss,
                                    bool(per_layer), float(duplicate_tolerance), _threads(threads), report)
    undefined, unresolved = r["undefined_sources"], r["unresolved_sources"]
    _response_warnings(undefined.size, unresolved.size, n, model.dtype, form, r["kernel_gap"])
    return Response(
        samples=int(r["samples"]), eta=eta, form=form, loss=loss, matrix=from_numpy(fw, r["matrix"]),
        mean_diagonal=r["mean_diagonal"], mean_off_diagonal=r["mean_off_diagonal"],
        layer_diagonal=from_numpy(fw, r["layer_diagonal"]), layer_off_diagonal=from_numpy(fw, r["layer_off_diagonal"]),
        undefined_sources=from_numpy(fw, undefined), unresolved_sources=from_numpy(fw, unresolved),
        kernel_gap=r["kernel_gap"], features=[LayerFeatures(**f) for f in r["features"]],
        input_grad_norm=r["input_grad_norm"], duplicate_tolerance=float(duplicate_tolerance), flops=r["flops"])


# ---- the training response of any torch model ----

# Modules of torch.nn.modules.activation that are not a layer's elementwise activation.
_NOT_FEATURES = ("Softmax", "Softmin", "LogSoftmax", "Softmax2d", "MultiheadAttention")


def _activation_types() -> Tuple[Any, ...]:
    import torch
    mod = torch.nn.modules.activation
    return tuple(c for c in vars(mod).values() if isinstance(c, type) and issubclass(c, torch.nn.Module)
                 and c.__module__ == mod.__name__ and c.__name__ not in _NOT_FEATURES)


def _feature_modules(model: Any, layers: Any) -> Tuple[List[Tuple[str, Any]], bool]:
    """The modules whose outputs are the feature spaces, and whether the caller named them."""
    if layers is None:
        kinds = _activation_types()
        return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)], False
    if isinstance(layers, str) or not isinstance(layers, (list, tuple)):
        raise InvalidArgument(f"layers: expected a list of module names as model.named_modules() gives them (e.g. "
                              f"['net.1']), or None for every activation module, got {layers!r}")
    named = dict(model.named_modules())
    out: List[Tuple[str, Any]] = []
    for name in layers:
        if not isinstance(name, str):
            raise InvalidArgument(f"layers: expected module names (str), got {name!r}")
        if name not in named:
            known = [repr(k) for k in named if k]
            more = f", ... ({len(known)} in all)" if len(known) > 12 else ""
            raise InvalidArgument(f"layers: the model has no module named {name!r}; its modules are "
                                  f"{', '.join(known[:12])}{more}")
        if any(name == k for k, _ in out):
            raise InvalidArgument(f"layers: {name!r} is named twice")
        out.append((name, named[name]))
    return out, True


def _parameter_groups(tm: _TorchModel) -> List[Tuple[str, List[str]]]:
    """(module name, its trainable parameters' names) for every module that owns trainable parameters
    directly, in the order of named_modules(); a parameter shared by modules goes to the first."""
    name_of = {id(p): n for n, p in tm.module.named_parameters()}
    taken = set()
    groups = []
    for mname, m in tm.module.named_modules():
        names = []
        for _, p in m.named_parameters(recurse=False):
            n = name_of.get(id(p))
            if n is None or n not in tm.params or id(p) in taken:
                continue
            taken.add(id(p))
            names.append(n)
        if names:
            groups.append((mname, names))
    return groups


def _group_responses(tm: _TorchModel, x: Any, g: Dict[str, Any], dldf: Any, groups: List[Tuple[str, List[str]]],
                     chunk: int, report: Any) -> List[Any]:
    """The eta -> 0 response of every parameter group G, R_G(x_j, x_i) = <g_i, J_G(x_j) v_i> / ||g_i||^2
    [N, N] float64, with g_i = dl_i/df and v_i = J_G(x_i)^T g_i the group's part of the per-sample
    gradient (so sum_G R_G = g_i^T Theta(x_j, x_i) g_i / ||g_i||^2). The per-sample Jacobians
    J(x_j) [O, P] come from vmap(jacrev) over chunks of samples, never all N at once."""
    import torch
    n, o = dldf.shape
    gd = dldf.double()
    g2 = (gd ** 2).sum(1)
    v = [torch.cat([g[name].reshape(n, -1) for name in names], 1) for _, names in groups]
    out = [torch.empty(n, n, dtype=torch.float64) for _ in groups]
    jac = tm.api.vmap(tm.api.jacrev(tm.f1), in_dims=(None, 0))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        j = jac(tm.params, x[a:b])   # {name: [c, O, ...]}
        for k, (_, names) in enumerate(groups):
            jg = torch.cat([j[name].reshape((b - a) * o, -1) for name in names], 1)   # [c O, P_G]
            change = (v[k] @ jg.T).reshape(n, b - a, o)                              # [i, j, a] = (J_G(x_j) v_i)_a
            out[k][:, a:b] = torch.einsum("ia,ija->ij", gd, change.double())
        if report is not None:
            report("response kernel", b, n)
    return [r / g2[:, None] for r in out]


def _response_means(r: Any, defined: np.ndarray) -> Tuple[float, float]:
    """Mean R(x_i, x_i) and mean R(x_j, x_i) over i != j, over the defined sources i (NaN for none)."""
    rows = np.flatnonzero(defined)
    if rows.size == 0:
        return float("nan"), float("nan")
    n = r.shape[0]
    diag = float(r[rows, rows].sum())
    off = float(r[rows].sum()) - diag
    return diag / rows.size, off / (rows.size * (n - 1))


def _torch_features(tm: _TorchModel, x: Any, modules: List[Tuple[str, Any]], named: bool, tolerance: float,
                    threads: int, chunk: int, report: Any) -> Tuple[List[LayerFeatures], float]:
    """The feature space of the chosen modules' outputs (captured by forward hooks, in the order the
    modules run) and the mean input-Jacobian norm, measured by the library's functions."""
    import torch
    from torch import nn
    producers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    n = x.shape[0]
    produced: List[Tuple[Any, Any, int]] = []   # (output, module, version) of this forward's Linear / Conv layers
    feeding: Dict[int, Any] = {}                # module -> the Linear / Conv whose unchanged output it takes
    calls = [0] * len(modules)
    order: List[Tuple[int, int]] = []      # (module, call) in the order the first forward ran them
    captured: Dict[Tuple[int, int], List[Any]] = {}
    producer: Dict[Tuple[int, int], Any] = {}

    def on_produce(mod: Any, inputs: Any, output: Any) -> None:
        produced.append((output, mod, output._version))

    def before(k: int) -> Any:
        def hook(mod: Any, inputs: Any) -> None:
            # The input as it arrives: an output modified in place since (ReLU(inplace=True) before a
            # pooling layer) has a new version and no longer counts as the layer's units.
            t = inputs[0] if len(inputs) > 0 else None
            feeding[k] = next((m for o, m, v in produced if t is o and t._version == v), None)
        return hook

    def capture(k: int) -> Any:
        name = modules[k][0]

        def hook(mod: Any, inputs: Any, output: Any) -> None:
            key = (k, calls[k])
            calls[k] += 1
            if not isinstance(output, torch.Tensor) or not output.is_floating_point():
                raise InvalidArgument(f"layers: module {name!r} returns {type(output).__name__}"
                                      f"{'' if not isinstance(output, torch.Tensor) else ' of ' + str(output.dtype)}; "
                                      f"its features must be one float tensor [B, ...]")
            if output.ndim == 0 or output.shape[0] != len_chunk[0]:
                raise ShapeMismatch(f"layers: module {name!r} returns shape {tuple(output.shape)} for a batch of "
                                    f"{len_chunk[0]} samples; expected [{len_chunk[0]}, ...]")
            prod = mod if isinstance(mod, producers) else feeding.pop(k, None)
            if key not in captured:
                if not first[0]:
                    raise InvalidArgument(f"layers: module {name!r} ran more often on samples {len_chunk[1]}.. than "
                                          f"on the first ones (data-dependent control flow is not supported)")
                order.append(key)
                captured[key] = []
                producer[key] = prod
            elif producer[key] is not prod:
                producer[key] = None
            # A copy: a later in-place operation (ReLU(inplace=True)) must not change what was captured.
            captured[key].append(output.detach().reshape(output.shape[0], -1).clone())
        return hook

    handles = [m.register_forward_hook(on_produce) for m in tm.module.modules() if isinstance(m, producers)]
    handles += [m.register_forward_pre_hook(before(k)) for k, (_, m) in enumerate(modules)]
    handles += [m.register_forward_hook(capture(k)) for k, (_, m) in enumerate(modules)]
    first = [True]
    len_chunk = [0, 0]
    norm_sum = 0.0
    try:
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            len_chunk[:] = [b - a, a]
            produced.clear()
            calls[:] = [0] * len(modules)
            xc = x[a:b].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = tm.module(xc).reshape(b - a, -1)
                o = out.shape[1]
                sq = torch.zeros(b - a, dtype=torch.float64)
                if out.requires_grad:
                    # Samples are independent (eval mode), so the gradient of output k summed over the
                    # batch is row k of every sample's input Jacobian.
                    for k in range(o):
                        (gk,) = torch.autograd.grad(out[:, k].sum(), xc, retain_graph=k + 1 < o, allow_unused=True)
                        if gk is not None:
                            sq += gk.reshape(b - a, -1).double().pow(2).sum(1)
            produced.clear()
            norm_sum += float(sq.sqrt().sum())
            if first[0]:
                runs = {k: calls[k] for k in range(len(modules))}
            elif any(calls[k] != runs[k] for k in range(len(modules))):
                bad = next(k for k in range(len(modules)) if calls[k] != runs[k])
                raise InvalidArgument(f"layers: module {modules[bad][0]!r} ran {runs[bad]} times on the first samples "
                                      f"and {calls[bad]} times on samples {a}.. (data-dependent control flow is not "
                                      f"supported)")
            first[0] = False
            if report is not None:
                report("feature space", b, n)
    finally:
        for h in handles:
            h.remove()
    if named:
        silent = [modules[k][0] for k in range(len(modules)) if runs[k] == 0]
        if silent:
            raise InvalidArgument(f"layers: module {silent[0]!r} does not run in the model's forward, so it has no "
                                  f"features")

    features = []
    for place, key in enumerate(order, start=1):
        k, call = key
        name = modules[k][0] if runs[k] == 1 else f"{modules[k][0]} (call {call + 1})"
        h = torch.cat(captured.pop(key))
        if h.dtype not in (torch.float32, torch.float64):
            h = h.double()
        bad = torch.nonzero(~torch.isfinite(h))
        if bad.numel():
            raise InvalidArgument(f"the features of module {name!r} hold a non-finite value (sample "
                                  f"{int(bad[0, 0])}, unit {int(bad[0, 1])})")
        hn = h.contiguous().numpy()
        s = _core.response_singular_values(hn, threads)
        duplicated = None
        prod = producer[key]
        if prod is not None:
            w = prod.weight.detach().reshape(prod.weight.shape[0], -1).double().contiguous().numpy()
            bias = None if prod.bias is None else prod.bias.detach().double().contiguous().numpy()
            duplicated = int(_core.response_count_duplicated(w, bias, tolerance, threads))
        features.append(LayerFeatures(layer=place, width=int(hn.shape[1]),
                                      effective_rank=_core.response_effective_rank(s),
                                      participation_ratio=_core.response_participation_ratio(s),
                                      dead=int(_core.response_count_dead(hn, threads)), duplicated=duplicated,
                                      name=name))
    return features, norm_sum / n


def torch_response(model: Any, x: Any, targets: Any, eta: float = 1e-3, form: str = "step",
                   loss: Optional[str] = None, duplicate_tolerance: float = 1e-3, per_layer: bool = True,
                   layers: Optional[Sequence[str]] = None, chunk_size: Optional[int] = None,
                   threads: Optional[int] = None, progress: ProgressArg = None) -> Response:
    """:func:`response` of any PyTorch module: the training response over all pairs of the samples,
    its parts per parameter group, and the feature space of chosen modules' outputs.

    R(x', x) = -<g, Delta f(x')> / (eta ||g||^2) for one SGD step of size ``eta`` on x, g = dl/df(x)
    (one output: Delta f(x') / (-eta dl/df(x))); the ntk form's limit g^T Theta(x', x) g / ||g||^2.

    * ``model``, ``x`` [N, ...] (N >= 2), ``targets``, ``eta``, ``loss``: as for
      :func:`torch_elasticity` (the model is not modified).
    * ``form``: "step" (take the step, as :func:`torch_elasticity`) or "ntk" (its eta -> 0 limit,
      from per-sample Jacobians).
    * ``per_layer``: the response of each parameter group's kernel Theta_G (default True): one group
      per module that owns trainable parameters directly (a Linear's weight and bias, a Conv's),
      named in :attr:`Response.layer_names`; they sum to the ntk-form total. In the step form they
      cost a Jacobian pass and give ``kernel_gap``.
    * ``layers``: the modules whose outputs are the feature spaces, by qualified name
      (``model.named_modules()``); default: every activation module (ReLU, Tanh, GELU, ... of
      ``torch.nn``; activations called as functions in ``forward`` are not modules: name the
      module before them). ``[]`` measures none.
    * ``duplicate_tolerance``: as for :func:`response`, applied to the Linear / Conv layer that
      produces a captured output (>= 0, default 1e-3).
    * ``chunk_size``: samples per batched pass (sources stepped at once; samples per Jacobian and
      feature pass); default: as many as keep each under ~256 MiB.
    * ``threads``: host threads of the library's reductions (torch keeps its own setting).
    * ``progress``: as for :func:`response` (one report per chunk).

    Returns a :class:`Response` (``flops`` 0, ``layer_names`` set, ``features`` named by module).
    The means, undefined samples, kernel_gap and warnings follow :func:`response`.
    """
    import torch
    tm = _TorchModel(model)
    fw = framework(x, "x")
    xt = _as_torch(x, "x", tm.dtype)
    n = xt.shape[0]
    if n < 2:
        raise InvalidArgument(f"x: the response needs at least 2 samples (the off-diagonal response is between two), "
                              f"got {n}")
    eta = _positive(eta, "eta")
    if form not in ("step", "ntk"):
        raise InvalidArgument(f"form: expected 'step' or 'ntk', got {form!r}")
    _check_tolerance(duplicate_tolerance)
    nthreads = _threads(threads)
    modules, named = _feature_modules(model, layers)
    with torch.no_grad():
        base = tm.f(tm.params, xt)
    o = base.shape[1]
    values, labels = tm.targets(targets, n, o)
    loss = _loss(loss, labels)
    groups = _parameter_groups(tm) if per_layer else [("", list(tm.params))]
    sample = xt[0].numel()

    g, dldf = tm.loss_grads(xt, base, values, labels, loss)
    gd = dldf.double()
    g2 = (gd ** 2).sum(1)
    unresolved: List[int] = []
    with progress_callback(progress) as report:
        if form == "step":
            delta, own = tm.step_changes(g, eta, xt, None, base, base, _chunk(chunk_size, tm.size + 16 * n * o),
                                         report, "response")
            unresolved = tm.unresolved(g, dldf, base, own)
            matrix = -torch.einsum("ia,ija->ij", gd, delta) / (eta * g2[:, None])
        parts: List[Any] = []
        if per_layer or form == "ntk":
            parts = _group_responses(tm, xt, g, dldf, groups, _chunk(chunk_size, o * tm.size + n * o), report)
        if form == "ntk":
            matrix = parts[0].clone()
            for p in parts[1:]:
                matrix += p
        features, input_grad_norm = _torch_features(tm, xt, modules, named, float(duplicate_tolerance), nthreads,
                                                    _chunk(chunk_size, 256 * sample + 16 * o), report)
    defined = (g2 != 0).numpy()
    defined[unresolved] = False
    matrix = matrix.numpy()
    matrix[~defined] = float("nan")
    mean_diagonal, mean_off_diagonal = _response_means(matrix, defined)
    layer_diagonal, layer_off_diagonal = [], []
    if per_layer:
        for p in parts:
            d, od = _response_means(p.numpy(), defined)
            layer_diagonal.append(d)
            layer_off_diagonal.append(od)
    kernel_gap = float("nan")
    if form == "step" and per_layer:
        limit = sum(layer_diagonal)
        kernel_gap = (abs(mean_diagonal - limit) / abs(limit) if limit != 0
                      else float("nan") if mean_diagonal == 0 else float("inf"))   # as the library: x / 0
    undefined = np.flatnonzero(~defined).astype(np.int64)
    unresolved_arr = np.asarray(sorted(unresolved), dtype=np.int64)
    _response_warnings(undefined.size, unresolved_arr.size, n, tm.dtype_name, form, kernel_gap)
    return Response(
        samples=n, eta=eta, form=form, loss=loss, matrix=from_numpy(fw, np.ascontiguousarray(matrix)),
        mean_diagonal=mean_diagonal, mean_off_diagonal=mean_off_diagonal,
        layer_diagonal=from_numpy(fw, np.asarray(layer_diagonal, dtype=np.float64)),
        layer_off_diagonal=from_numpy(fw, np.asarray(layer_off_diagonal, dtype=np.float64)),
        undefined_sources=from_numpy(fw, undefined), unresolved_sources=from_numpy(fw, unresolved_arr),
        kernel_gap=kernel_gap, features=features, input_grad_norm=input_grad_norm,
        duplicate_tolerance=float(duplicate_tolerance), flops=0.0,
        layer_names=[name for name, _ in groups] if per_layer else [])


# ---- aging fit ----

@dataclass
class AgingFit:
    """R_t ~ amplitude * t^(-beta), fitted by least squares of ln R on ln t."""

    beta: float
    """The exponent: > 0 the response decays as the network ages; 0 a constant response."""
    beta_ci: Tuple[float, float]
    """A two-sided ``confidence`` interval for beta (Student's t, points - 2 degrees of freedom)."""
    beta_stderr: float
    """The standard error of beta."""
    amplitude: float
    """A."""
    r_squared: float
    """The fit's R^2 in log-log (1 for an exactly constant ln R)."""
    confidence: float
    """The interval's confidence."""
    fit_window: Tuple[float, float]
    """[t_min, t_max] as used."""
    points: int
    """The points fitted."""
    skipped: int
    """Points in the window left out (t <= 0, or R not finite and > 0)."""


def aging_fit(steps: Sequence[float], responses: Sequence[float], fit_window: Optional[Tuple[float, float]] = None,
              confidence: float = 0.95) -> AgingFit:
    """The aging fit of the command-line tool's ``response --checkpoints``: R_t ~ A t^(-beta) over
    the points with t_min <= t <= t_max (t > 0 and finite R > 0).

    * ``steps``, ``responses``: 1-D sequences of equal length (e.g. the steps of the checkpoints and
      each one's :attr:`Response.mean_diagonal`); copied to float64.
    * ``fit_window``: (t_min, t_max); default (1, max(last step, 1)), every step > 0.
    * ``confidence``: of the interval for beta, in (0, 1) (default 0.95).

    Raises :class:`InvalidArgument` when fewer than 3 points remain in the window.
    """
    t = np.ascontiguousarray(np.asarray(steps, dtype=np.float64).reshape(-1))
    r = np.ascontiguousarray(np.asarray(responses, dtype=np.float64).reshape(-1))
    if t.shape != r.shape:
        raise ShapeMismatch(f"steps and responses: expected one response per step, got {t.size} steps and "
                            f"{r.size} responses")
    if fit_window is None:
        fit_window = (1.0, max(float(t.max()) if t.size else 1.0, 1.0))
    if len(fit_window) != 2:
        raise InvalidArgument(f"fit_window: expected (t_min, t_max), got {fit_window!r}")
    a, b = float(fit_window[0]), float(fit_window[1])
    fit = _core.fit_power_law(t, r, a, b, float(confidence))
    return AgingFit(beta=fit["beta"], beta_ci=(fit["beta_low"], fit["beta_high"]), beta_stderr=fit["beta_stderr"],
                    amplitude=fit["amplitude"], r_squared=fit["r_squared"], confidence=fit["confidence"],
                    fit_window=(a, b), points=int(fit["points"]), skipped=int(fit["skipped"]))
