"""dynascope.llc: the local learning coefficient by batched SGLD chains, for an Mlp on data or for
any model through a batched loss-and-gradient callback (e.g. ``torch.func.vmap(torch.func.grad(...))``
over the chains' parameters), and the step-size x inverse-temperature calibration sweep."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from ._arrays import check_array, check_finite, framework, from_numpy, host_view, is_jax, is_torch
from ._core import InvalidArgument, ShapeMismatch
from ._mlp import Mlp
from ._runtime import ProgressArg, progress_callback
from ._runtime import threads as _threads
from ._torchfunc import func_api

__all__ = ["llc", "llc_calibrate", "LlcResult", "LlcCalibration", "TorchLossGrad", "torch_loss_grad"]

# The CLI's default calibration grid: factors around the chosen epsilon and nbeta.
_EPSILON_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
_NBETA_FACTORS = (0.3, 1.0, 3.0)


@dataclass
class LlcResult:
    """One LLC estimate (the keys of ``dynascope llc``'s JSON).

    Arrays (``llc_per_chain``, ``loss_trace``, ``distance_trace``) are float64 in the framework of
    the call's inputs (NumPy, torch or JAX); scalars are Python floats and ints.
    """

    llc_mean: float
    """λ̂: the mean of ``llc_per_chain`` over the chains that did not diverge (NaN if none)."""
    llc_std: float
    """Their standard deviation (n − 1; NaN with fewer than 2 healthy chains)."""
    llc_stderr: float
    """``llc_std / sqrt(healthy chains)``: the chains are independent."""
    llc_per_chain: Any
    """[C]: nβ (mean of the chain's loss trace − ``init_loss``); NaN for a diverged chain."""
    init_loss: float
    """L_n(w*): the loss at w* on the whole dataset (or the mean minibatch loss with
    ``init_loss="minibatch"``)."""
    nbeta: float
    """The inverse temperature nβ used."""
    n: int
    """The dataset size."""
    chains: int
    """C, the number of chains."""
    draws: int
    """D, the recorded draws per chain."""
    r_hat: float
    """Split rank-normalized R-hat of the loss trace (NaN with fewer than 4 draws or a constant trace)."""
    ess: float
    """Bulk effective sample size of the loss trace."""
    mala_acceptance: float
    """Mean Metropolis-adjusted acceptance probability of the SGLD steps (NaN with ``mala=False``)."""
    loss_trace: Any
    """[C, D]: the minibatch loss L_B(w) at each draw (before the step)."""
    distance_trace: Any
    """[C, D]: ‖w − w*‖ at each draw."""
    diverged: Dict[int, int]
    """{chain: first draw whose loss or distance is not finite}; the other chains go on."""
    warnings: List[str]
    """An unhealthy trace, in words (the CLI prints the same)."""
    gradient_evaluations: float
    """Full-dataset gradient equivalents spent: chains × steps × m / n."""
    sampling_seconds: float
    """Wall time of the sampling."""
    options: Dict[str, Any] = field(default_factory=dict)
    """Every sampler setting used (as the CLI's JSON ``options``)."""


@dataclass
class LlcCalibration:
    """The ε × nβ sweep of :func:`llc_calibrate`: one estimate per pair.

    Grids are NumPy float64 arrays; the [B, E] tables (nβ rows, ε columns) are NumPy arrays too.
    Pick a pair where λ̂ has stopped moving with ε, the acceptance is high and there are no warnings.
    """

    epsilons: np.ndarray
    """[E]: the step sizes of the sweep."""
    nbetas: np.ndarray
    """[B]: the inverse temperatures of the sweep."""
    llc_mean: np.ndarray
    """[B, E]: λ̂ per pair."""
    llc_stderr: np.ndarray
    """[B, E]: its standard error."""
    r_hat: np.ndarray
    """[B, E]: R-hat of the loss trace."""
    mala_acceptance: np.ndarray
    """[B, E]: mean MALA acceptance (NaN with ``mala=False``)."""
    diverged_chains: np.ndarray
    """[B, E] int64: chains that diverged."""
    results: List[List[LlcResult]]
    """``results[b][e]``: the full result of the pair (``nbetas[b]``, ``epsilons[e]``)."""

    def table(self) -> str:
        """The CLI's calibration table as text: ε, nβ, λ̂, SE, R-hat, acceptance, diverged, warnings."""
        lines = [f"{'epsilon':>10}  {'nbeta':>10}  {'llc':>10}  {'SE':>9}  {'r_hat':>6}  {'accept':>6}  "
                 f"{'diverged':>8}  warnings"]
        for b, row in enumerate(self.results):
            for e, r in enumerate(row):
                w = "; ".join(r.warnings) or "-"
                lines.append(f"{self.epsilons[e]:10.3g}  {self.nbetas[b]:10.4g}  {r.llc_mean:10.4g}  "
                             f"{r.llc_stderr:9.2g}  {r.r_hat:6.3f}  {r.mala_acceptance:6.3f}  "
                             f"{len(r.diverged):>4}/{r.chains:<3}  {w}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Argument checks (the CLI's flag validators, with the keyword's name in the message).

def _int_arg(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise InvalidArgument(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_arg(value: Any, name: str, minimum: float, open_: bool) -> float:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    if not ok or not math.isfinite(v) or v < minimum or (open_ and v == minimum):
        rel = ">" if open_ else ">="
        raise InvalidArgument(f"{name}: expected a finite number {rel} {minimum:g}, got {value!r}")
    return v


def _options(n: int, P: int, chains: Any, draws: Any, burnin: Any, thin: Any, epsilon: Any, gamma: Any,
             nbeta: Any, batch: Any, sampler: str, rmsprop_alpha: Any, rmsprop_eps: Any, bounding_box: Any,
             init_loss: str, mala: bool, mask: Any, seed: Any) -> "_core.LlcOptions":
    o = _core.LlcOptions()
    o.chains = _int_arg(chains, "chains", 1)
    o.draws = _int_arg(draws, "draws", 1)
    o.burnin = _int_arg(burnin, "burnin", 0)
    o.thin = _int_arg(thin, "thin", 1)
    o.epsilon = _float_arg(epsilon, "epsilon", 0.0, True)
    o.gamma = _float_arg(gamma, "gamma", 0.0, False)
    if isinstance(nbeta, str):
        if nbeta not in ("auto", "dataset", "batch"):
            raise InvalidArgument(f"nbeta: expected 'auto' (n / ln n), 'batch' (m / ln m) or a number > 0, "
                                  f"got {nbeta!r}")
        o.nbeta_rule = nbeta
    else:
        o.nbeta_rule = "value"
        o.nbeta = _float_arg(nbeta, "nbeta", 0.0, True)
    o.batch = _int_arg(batch, "batch", 0)
    if o.batch > n:
        raise InvalidArgument(f"batch: {o.batch} is larger than the {n} training samples (0 = full batch)")
    if sampler not in ("sgld", "rmsprop-sgld", "rmsprop_sgld"):
        raise InvalidArgument(f"sampler: expected 'sgld' or 'rmsprop-sgld', got {sampler!r}")
    o.sampler = sampler
    rmsprop = o.sampler == "rmsprop-sgld"
    for name, value in (("rmsprop_alpha", rmsprop_alpha), ("rmsprop_eps", rmsprop_eps)):
        if value is not None and not rmsprop:
            raise InvalidArgument(f"{name}: it is a constant of sampler='rmsprop-sgld' (the sampler is {sampler!r})")
    if rmsprop_alpha is not None:
        a = _float_arg(rmsprop_alpha, "rmsprop_alpha", 0.0, False)
        if a >= 1:
            raise InvalidArgument(f"rmsprop_alpha: expected a number in [0, 1), got {rmsprop_alpha!r}")
        o.rmsprop_alpha = a
    if rmsprop_eps is not None:
        o.rmsprop_eps = _float_arg(rmsprop_eps, "rmsprop_eps", 0.0, True)
    if bounding_box is not None:
        o.bounding_box = _float_arg(bounding_box, "bounding_box", 0.0, True)
    if init_loss not in ("full", "minibatch"):
        raise InvalidArgument(f"init_loss: expected 'full' or 'minibatch', got {init_loss!r}")
    if init_loss == "minibatch" and o.batch == 0:
        raise InvalidArgument("init_loss: 'minibatch' needs minibatches (batch > 0): with full batches it is the "
                              "full loss")
    o.init_loss = init_loss
    if not isinstance(mala, (bool, np.bool_)):
        raise InvalidArgument(f"mala: expected True or False, got {mala!r}")
    o.mala = bool(mala)
    if mask is not None:
        o.mask = _mask(mask, P)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise InvalidArgument(f"seed: expected an integer in [0, 2^64), got {seed!r}")
    o.seed = int(seed)
    return o


def _mask(mask: Any, P: int) -> List[int]:
    fw = framework(mask, "mask")
    if fw == "torch":
        v = mask.detach().cpu().numpy()
    else:
        v = np.asarray(host_view(mask, "mask"))
    if v.ndim != 1 or v.shape[0] != P:
        raise ShapeMismatch(f"mask: expected [{P}] (one 0 or 1 per parameter, in the flat parameter order), "
                            f"got shape {tuple(v.shape)}")
    bad = np.flatnonzero((v != 0) & (v != 1))
    if bad.size:
        raise InvalidArgument(f"mask: holds {v[bad[0]]!r} at index {int(bad[0])}; expected 0 (fixed) or 1 (sampled)")
    if not np.any(v):
        raise InvalidArgument("mask: fixes every parameter; at least one must be 1")
    return [int(b) for b in (v != 0)]


def _options_dict(o: "_core.LlcOptions") -> Dict[str, Any]:
    d: Dict[str, Any] = {"chains": o.chains, "draws": o.draws, "burnin": o.burnin, "thin": o.thin,
                         "epsilon": o.epsilon, "gamma": o.gamma, "nbeta_rule": o.nbeta_rule}
    if o.nbeta_rule == "value":
        d["nbeta"] = o.nbeta
    d.update({"batch": o.batch, "sampler": o.sampler})
    if o.sampler == "rmsprop-sgld":
        d.update({"rmsprop_alpha": o.rmsprop_alpha, "rmsprop_eps": o.rmsprop_eps})
    d.update({"bounding_box": o.bounding_box, "init_loss": o.init_loss, "mala": o.mala, "seed": o.seed})
    if len(o.mask):
        d["free_parameters"] = int(sum(o.mask))
    return d


def _result(fw: str, d: Dict[str, Any], options: Dict[str, Any]) -> LlcResult:
    return LlcResult(
        llc_mean=d["llc_mean"], llc_std=d["llc_std"], llc_stderr=d["llc_stderr"],
        llc_per_chain=from_numpy(fw, d["llc_per_chain"]), init_loss=d["init_loss"], nbeta=d["nbeta"], n=d["n"],
        chains=d["chains"], draws=d["draws"], r_hat=d["r_hat"], ess=d["ess"], mala_acceptance=d["mala_acceptance"],
        loss_trace=from_numpy(fw, d["loss_trace"]), distance_trace=from_numpy(fw, d["distance_trace"]),
        diverged={int(k): int(v) for k, v in d["diverged"].items()}, warnings=list(d["warnings"]),
        gradient_evaluations=d["gradient_evaluations"], sampling_seconds=d["sampling_seconds"], options=options)


# ---------------------------------------------------------------------------------------------
# The two sources of losses and gradients: an Mlp on data, or a batched callback.

class _MlpJob:
    def __init__(self, model: Mlp, inputs: Any, targets: Any, loss: Optional[str]) -> None:
        fw, dtype = check_array(inputs, "inputs", 2, model.dtype)
        d = model.widths[0]
        if inputs.shape[1] != d:
            raise ShapeMismatch(f"inputs: the network {model.arch} takes {d} inputs per sample, "
                                f"got shape {tuple(inputs.shape)}")
        n = int(inputs.shape[0])
        if n == 0:
            raise InvalidArgument("inputs: the dataset is empty (0 samples)")
        check_finite(inputs, "inputs")
        if targets is None:
            raise InvalidArgument("targets: the LLC needs targets: integer labels [N] (int64) or float targets "
                                  "[N, O] in the model's dtype")
        tfw = framework(targets, "targets")
        tv = host_view(targets, "targets")
        labels = values = None
        integer = str(tv.dtype).replace("torch.", "") in ("int64", "int32", "int16", "int8", "uint8")
        if integer:
            if str(tv.dtype).replace("torch.", "") != "int64":   # e.g. JAX's int32 without x64: one copy
                tv = tv.long() if tfw == "torch" else np.ascontiguousarray(tv, dtype=np.int64)
            if tv.ndim != 1 or tv.shape[0] != n:
                raise ShapeMismatch(f"targets: expected {n} labels [N] (one per row of inputs), got shape "
                                    f"{tuple(tv.shape)}")
            contiguous = tv.is_contiguous() if tfw == "torch" else tv.flags.c_contiguous
            if not contiguous:
                raise InvalidArgument("targets: the array is not C-contiguous; pass a contiguous copy")
            if tfw == "torch" and tv.device.type != "cpu":
                raise InvalidArgument(f"targets: the tensor is on {tv.device}: pass targets.cpu()")
            o = model.widths[-1]
            lo, hi = (int(tv.min()), int(tv.max()))
            if lo < 0 or hi >= o:
                raise InvalidArgument(f"targets: labels must be in [0, {o}) for the network's {o} outputs, "
                                      f"found {lo if lo < 0 else hi}")
            labels = tv
        else:
            check_array(targets, "targets", 2, model.dtype)
            o = model.widths[-1]
            if tuple(targets.shape) != (n, o):
                raise ShapeMismatch(f"targets: expected float targets [{n}, {o}] (samples x outputs), got shape "
                                    f"{tuple(targets.shape)}")
            check_finite(targets, "targets")
            values = tv
        if loss is None:
            loss = "xent" if labels is not None else "mse"
        if loss not in ("mse", "xent", "cross_entropy"):
            raise InvalidArgument(f"loss: expected 'mse' or 'xent', got {loss!r}")
        if loss != "mse" and labels is None:
            raise InvalidArgument("loss: 'xent' needs integer labels [N] as targets, not float targets")
        self.fw, self.n, self.P = fw, n, model.num_params
        self.model, self.inputs, self.loss = model, host_view(inputs, "inputs"), loss
        self.labels, self.values = labels, values

    def run(self, o: "_core.LlcOptions", threads: int, report: Any) -> Dict[str, Any]:
        m = self.model
        return _core.llc_mlp(m._spec, m.params_view, self.inputs, self.labels, self.values, self.loss, o, threads,
                             report)

    def calibrate(self, o: "_core.LlcOptions", eps: List[float], nbs: List[float], threads: int,
                  report: Any) -> List[Dict[str, Any]]:
        m = self.model
        return _core.llc_calibrate_mlp(m._spec, m.params_view, self.inputs, self.labels, self.values, self.loss, o,
                                       eps, nbs, threads, report)


class _CallbackJob:
    def __init__(self, fn: Callable, w_star: Any, n: Any) -> None:
        if w_star is None:
            w_star = getattr(fn, "w_star", None)
        if n is None:
            n = getattr(fn, "n", None)
        if w_star is None:
            raise InvalidArgument("w_star: a loss-and-gradient callback needs the parameters w* [P] to localize at "
                                  "(w_star=...)")
        if n is None:
            raise InvalidArgument("n: a loss-and-gradient callback needs the dataset size n (n=...), from which "
                                  "minibatch indices are drawn and nβ = n / ln n is set")
        fw, dtype = check_array(w_star, "w_star", 1)
        if w_star.shape[0] == 0:
            raise InvalidArgument("w_star: expected at least one parameter, got an empty vector")
        check_finite(w_star, "w_star")
        self.n = _int_arg(n, "n", 1)
        self.fw, self.dtype, self.P = fw, dtype, int(w_star.shape[0])
        self.w_star = host_view(w_star, "w_star")
        self.call = _Adapter(fn, fw, self.P)

    def run(self, o: "_core.LlcOptions", threads: int, report: Any) -> Dict[str, Any]:
        return _core.llc_callback(self.call, self.w_star, self.n, o, threads, report)

    def calibrate(self, o: "_core.LlcOptions", eps: List[float], nbs: List[float], threads: int,
                  report: Any) -> List[Dict[str, Any]]:
        return _core.llc_calibrate_callback(self.call, self.w_star, self.n, o, eps, nbs, threads, report)


class _Adapter:
    """Called by the core (GIL held) with NumPy views of its buffers: hands the user's function the
    parameters [C, P] and minibatch indices [C, m] (or None) in the caller's framework, checks what
    it returns and copies it into the core's loss [C] and gradient [C, P] buffers."""

    def __init__(self, fn: Callable, fw: str, P: int) -> None:
        self.fn, self.fw, self.P = fn, fw, P

    def __call__(self, params: np.ndarray, batch: Optional[np.ndarray], step: int, losses_out: np.ndarray,
                 grads_out: np.ndarray) -> None:
        C = params.shape[0]
        if self.fw == "torch":
            import torch
            # Shares the core's buffer (valid during this call only; never modify it).
            p = torch.from_numpy(params)
            b = None if batch is None else torch.from_numpy(batch)
        elif self.fw == "jax":
            import jax.numpy as jnp
            # JAX copies a large array on a worker thread after asarray returns; wait for the copy,
            # since the core rewrites these buffers once the callback returns.
            p = jnp.asarray(params).block_until_ready()
            b = None if batch is None else jnp.asarray(batch).block_until_ready()
        else:
            params.flags.writeable = False
            p = params
            if batch is not None:
                batch.flags.writeable = False
            b = batch
        out = self.fn(p, b)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise InvalidArgument(f"fn: expected the callback to return (losses [C], grads [C, P]), got "
                                  f"{type(out).__name__}")
        losses, grads = out
        _copy_into(losses_out, losses, (C,), "losses [C]")
        _copy_into(grads_out, grads, (C, self.P), "grads [C, P]")


def _copy_into(dst: np.ndarray, src: Any, shape: Tuple[int, ...], what: str) -> None:
    if is_torch(src):
        if tuple(src.shape) != shape:
            raise ShapeMismatch(f"fn: returned {what} of shape {tuple(src.shape)}, expected {shape}")
        if not src.is_floating_point():
            raise InvalidArgument(f"fn: returned {what} of dtype {src.dtype}, expected a floating-point tensor")
        import torch
        torch.from_numpy(dst).copy_(src.detach())
        return
    a = np.asarray(src)
    if a.shape != shape:
        raise ShapeMismatch(f"fn: returned {what} of shape {a.shape}, expected {shape}")
    if a.dtype.kind != "f":
        raise InvalidArgument(f"fn: returned {what} of dtype {a.dtype}, expected a floating-point array")
    np.copyto(dst, a, casting="same_kind")


def _job(model: Any, inputs: Any, targets: Any, loss: Optional[str], w_star: Any, n: Any) -> Any:
    if isinstance(model, Mlp):
        if w_star is not None or n is not None:
            raise InvalidArgument("w_star, n: only for a loss-and-gradient callback; an Mlp localizes at its own "
                                  "parameters and n is the number of rows of inputs")
        if inputs is None:
            raise InvalidArgument("inputs: an Mlp needs the data: inputs [N, D] and targets")
        return _MlpJob(model, inputs, targets, loss)
    if callable(model):
        for name, value in (("inputs", inputs), ("targets", targets), ("loss", loss)):
            if value is not None:
                raise InvalidArgument(f"{name}: a loss-and-gradient callback computes the loss itself; pass "
                                      f"{name} to the callback (e.g. dynascope.torch_loss_grad) instead")
        return _CallbackJob(model, w_star, n)
    raise InvalidArgument(f"model: expected a dynascope.Mlp or a callable fn(params [C, P], batch [C, m] or None) "
                          f"-> (losses [C], grads [C, P]), got {type(model).__name__}")


def llc(model: Any, inputs: Any = None, targets: Any = None, *, loss: Optional[str] = None, w_star: Any = None,
        n: Optional[int] = None, chains: int = 8, draws: int = 200, burnin: int = 100, thin: int = 1,
        epsilon: float = 1e-4, gamma: float = 100.0, nbeta: Union[str, float] = "auto", batch: int = 0,
        sampler: str = "sgld", rmsprop_alpha: Optional[float] = None, rmsprop_eps: Optional[float] = None,
        bounding_box: Optional[float] = None, init_loss: str = "full", mala: bool = True, mask: Any = None,
        seed: int = 0, threads: Optional[int] = None, progress: ProgressArg = None) -> LlcResult:
    """The local learning coefficient λ̂ (Lau, Furman, Wang, Murfet, Wei) at w* by C SGLD chains
    that run together, sampling exp(−nβ L_n(w) − (γ/2) ‖w − w*‖²); as ``dynascope llc`` computes it.

    Two sources of the loss and its gradient:

    * ``model`` a :class:`dynascope.Mlp`: w* is its parameters; ``inputs`` [N, D] and ``targets``
      — integer labels [N] (int64) or float targets [N, O] — in the model's dtype; ``loss`` "mse" or
      "xent" (default: xent for labels, mse for float targets). The library's batched engine runs
      every chain in one pass.
    * ``model`` a callable ``fn(params, batch) -> (losses, grads)``: ``params`` [C, P] holds every
      chain's parameters, ``batch`` [C, m] int64 each chain's minibatch indices into [0, n) (drawn
      with replacement) or None for the full dataset; it returns each chain's mean loss [C] and its
      gradient [C, P] (any floating dtype; they are copied into the sampler's buffers). ``params``
      and ``batch`` come in ``w_star``'s framework (torch tensors sharing the sampler's memory, valid
      during the call only and never to be modified; read-only NumPy views; JAX copies). Give
      ``w_star`` [P] (float32/float64, the dtype the chains run in) and ``n`` (the dataset size),
      or pass a :class:`TorchLossGrad` (:func:`torch_loss_grad`), which carries both. The callback
      is also called once with C = 1 at w* for L_n(w*).

    Sampler keywords (the CLI's flags; defaults as the CLI's):

    * ``chains`` (8), ``draws`` (200, recorded per chain), ``burnin`` (100 steps before the first
      draw), ``thin`` (1: steps per draw).
    * ``epsilon`` (1e-4): step size ε > 0; ``gamma`` (100): localization γ ≥ 0.
    * ``nbeta``: "auto" (n / ln n), "batch" (m / ln m with m = ``batch``, devinterp's default), or
      a number > 0.
    * ``batch`` (0 = full batch): minibatch size m per chain and step, 0..n.
    * ``sampler``: "sgld" or "rmsprop-sgld"; ``rmsprop_alpha`` (0.99, in [0, 1)) and
      ``rmsprop_eps`` (0.1, > 0) are its constants (an error with "sgld").
    * ``bounding_box``: None, or B > 0: every parameter is clamped to w*ᵢ ± B after each step.
    * ``init_loss``: "full" (L_n(w*) on the whole dataset) or "minibatch" (the mean minibatch loss
      at w* of the first step; needs ``batch`` > 0).
    * ``mala`` (True): estimate the Metropolis-adjusted acceptance (one more [C, P] buffer).
    * ``mask``: restricted LLC, [P] zeros and ones (any array); only the ones move.
    * ``seed`` (0): the chains' noise and minibatches; chain c's trajectory does not depend on C.
    * ``threads``: host threads (None: ``os.cpu_count()``); ``progress``: None (a tqdm bar when
      tqdm is installed, with the running estimate), True, False, or a callable
      ``(task, done, total)`` — an exception it raises stops the chains and is re-raised here, as
      is one raised by ``fn``; Ctrl-C stops them with ``KeyboardInterrupt``.

    Returns an :class:`LlcResult` whose arrays are in the framework of ``inputs`` (Mlp) or
    ``w_star`` (callback).
    """
    job = _job(model, inputs, targets, loss, w_star, n)
    o = _options(job.n, job.P, chains, draws, burnin, thin, epsilon, gamma, nbeta, batch, sampler, rmsprop_alpha,
                 rmsprop_eps, bounding_box, init_loss, mala, mask, seed)
    with progress_callback(progress) as report:
        d = job.run(o, _threads(threads), report)
    return _result(job.fw, d, _options_dict(o))


def _grid_around(centre: float, factors: Sequence[float]) -> List[float]:
    # As the CLI: factor x centre at 12 significant digits, so 0.1 x 1e-4 is 1e-5.
    return [float(f"{f * centre:.12g}") for f in factors]


def _positive_list(values: Any, name: str) -> List[float]:
    try:
        out = [float(v) for v in values]
    except TypeError:
        raise InvalidArgument(f"{name}: expected a list of numbers > 0, got {values!r}") from None
    if not out:
        raise InvalidArgument(f"{name}: expected at least one value")
    for v in out:
        if not (math.isfinite(v) and v > 0):
            raise InvalidArgument(f"{name}: every value must be a finite number > 0, got {v!r}")
    return out


def llc_calibrate(model: Any, inputs: Any = None, targets: Any = None, *, epsilons: Optional[Sequence[float]] = None,
                  nbetas: Optional[Sequence[float]] = None, epsilon: Optional[float] = None,
                  nbeta: Union[None, str, float] = None, loss: Optional[str] = None, w_star: Any = None,
                  n: Optional[int] = None, chains: int = 8, draws: int = 200, burnin: int = 100, thin: int = 1,
                  gamma: float = 100.0, batch: int = 0, sampler: str = "sgld", rmsprop_alpha: Optional[float] = None,
                  rmsprop_eps: Optional[float] = None, bounding_box: Optional[float] = None, init_loss: str = "full",
                  mala: bool = True, mask: Any = None, seed: int = 0, threads: Optional[int] = None,
                  progress: ProgressArg = None) -> LlcCalibration:
    """The ε × nβ calibration sweep (``dynascope llc --calibrate``): one :func:`llc` estimate per
    pair, with every other keyword as in :func:`llc` (same ``model`` sources).

    * ``epsilons``: the step sizes (default: ``epsilon`` × 0.1, 0.3, 1, 3, 10, with ``epsilon``
      1e-4 unless given; giving both is an error, as in the CLI).
    * ``nbetas``: the inverse temperatures (default: nβ × 0.3, 1, 3 around ``nbeta``'s value:
      "auto" n / ln n unless given; giving both is an error).

    Returns an :class:`LlcCalibration` (tables [len(nbetas), len(epsilons)] and every result).
    """
    if epsilons is not None and epsilon is not None:
        raise InvalidArgument("epsilon: it is the centre of the default sweep, which epsilons replaces; give one")
    if nbetas is not None and nbeta is not None:
        raise InvalidArgument("nbeta: it is the centre of the default sweep, which nbetas replaces; give one")
    job = _job(model, inputs, targets, loss, w_star, n)
    o = _options(job.n, job.P, chains, draws, burnin, thin, 1e-4 if epsilon is None else epsilon, gamma,
                 "auto" if nbeta is None else nbeta, batch, sampler, rmsprop_alpha, rmsprop_eps, bounding_box,
                 init_loss, mala, mask, seed)
    eps = _positive_list(epsilons, "epsilons") if epsilons is not None else _grid_around(o.epsilon, _EPSILON_FACTORS)
    if nbetas is not None:
        nbs = _positive_list(nbetas, "nbetas")
    else:
        if o.nbeta_rule == "value":
            centre = o.nbeta
        else:
            m = o.batch if (o.nbeta_rule == "batch" and o.batch > 0) else job.n
            if m < 2:
                raise InvalidArgument(f"nbeta: n / ln n is not a positive number for {m} samples; give nbeta=VALUE "
                                      f"or nbetas")
            centre = m / math.log(m)
        nbs = _grid_around(centre, _NBETA_FACTORS)
    with progress_callback(progress) as report:
        rows = job.calibrate(o, eps, nbs, _threads(threads), report)
    base = _options_dict(o)
    for k in ("epsilon", "nbeta", "nbeta_rule"):
        base.pop(k, None)
    results: List[List[LlcResult]] = []
    for b, nb in enumerate(nbs):
        row = []
        for e, ep in enumerate(eps):
            opts = dict(base, epsilon=ep, nbeta_rule="value", nbeta=nb)
            row.append(_result(job.fw, rows[b * len(eps) + e], opts))
        results.append(row)

    def table(get: Callable[[LlcResult], float], dtype: Any = np.float64) -> np.ndarray:
        return np.array([[get(r) for r in row] for row in results], dtype=dtype)

    return LlcCalibration(epsilons=np.array(eps), nbetas=np.array(nbs), llc_mean=table(lambda r: r.llc_mean),
                          llc_stderr=table(lambda r: r.llc_stderr), r_hat=table(lambda r: r.r_hat),
                          mala_acceptance=table(lambda r: r.mala_acceptance),
                          diverged_chains=table(lambda r: len(r.diverged), np.int64), results=results)


# ---------------------------------------------------------------------------------------------
# Any torch module: a batched loss and gradient by vmap(grad) over the chains.

class TorchLossGrad:
    """A batched loss and gradient for any ``torch.nn.Module``, the callback :func:`llc` takes.

    Built by :func:`torch_loss_grad`. Calling it with ``params`` [C, P] (CPU tensors in the flat
    ``parameters_to_vector`` order) and ``batch`` [C, m] int64 (or None) returns ``(losses [C],
    grads [C, P])`` on the CPU: each chain's parameters are loaded into the module functionally
    (``functional_call``; the module itself is never modified) and ``vmap(grad_and_value(loss))``
    runs all chains (``chunk_size`` of them at a time) on the module's device.

    The chains move the parameters with ``requires_grad=True`` (``parameters_to_vector`` order);
    frozen parameters and buffers are constants.

    Attributes: ``w_star`` (the trainable parameters as one detached CPU vector, copied once),
    ``n`` (rows of the data), ``model``, ``loss_fn``.
    """

    def __init__(self, model: Any, loss_fn: Union[str, Callable], inputs: Any, targets: Any,
                 chunk_size: Optional[int] = None) -> None:
        import torch
        from torch import nn

        if not isinstance(model, nn.Module):
            raise InvalidArgument(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if not is_torch(inputs) or not is_torch(targets):
            bad = "inputs" if not is_torch(inputs) else "targets"
            raise InvalidArgument(f"{bad}: expected a torch.Tensor (the module's data), got "
                                  f"{type(inputs if bad == 'inputs' else targets).__name__}")
        # The chains move the trainable parameters; frozen ones (requires_grad=False) are constants,
        # like the buffers.
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise InvalidArgument("model: the module has no trainable parameters (requires_grad=True)")
        frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
        dtypes = {p.dtype for _, p in named}
        if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
            raise InvalidArgument(f"model: parameters must all be float32 or all float64, got "
                                  f"{sorted(map(str, dtypes))} (convert with model.double() or model.float())")
        if inputs.shape[0] != targets.shape[0]:
            raise ShapeMismatch(f"targets: {targets.shape[0]} rows for {inputs.shape[0]} rows of inputs")
        if inputs.shape[0] == 0:
            raise InvalidArgument("inputs: the dataset is empty (0 samples)")
        if chunk_size is not None:
            chunk_size = _int_arg(chunk_size, "chunk_size", 1)
        self.model = model
        self.device = named[0][1].device
        self.dtype = named[0][1].dtype
        self._names = [k for k, _ in named]
        self._shapes = [p.shape for _, p in named]
        self._sizes = [p.numel() for _, p in named]
        self._buffers = dict(model.named_buffers())
        self._buffers.update(frozen)
        self.inputs = inputs.to(self.device)
        self.targets = targets.to(self.device)
        self.n = int(inputs.shape[0])
        self.chunk_size = chunk_size
        with torch.no_grad():
            self.w_star = torch.nn.utils.parameters_to_vector([p for _, p in named]).detach().cpu().clone()
        self.loss_fn = _torch_loss(loss_fn, targets)
        api = func_api("torch_loss_grad needs torch.func (torch >= 2) or functorch (torch 1.13): pip install functorch")
        vmap, grad_and_value, functional_call = api.vmap, api.grad_and_value, api.functional_call

        def loss_at(flat: Any, x: Any, y: Any) -> Any:
            tensors = [t.view(s) for t, s in zip(torch.split(flat, self._sizes), self._shapes)]
            state = dict(zip(self._names, tensors))
            state.update(self._buffers)
            return self.loss_fn(functional_call(model, state, (x,)), y)

        step = grad_and_value(loss_at)
        self._full = vmap(step, in_dims=(0, None, None))
        self._mini = vmap(step, in_dims=(0, 0, 0))

    def __call__(self, params: Any, batch: Any = None) -> Tuple[Any, Any]:
        import torch

        C = int(params.shape[0])
        chunk = self.chunk_size or C
        losses = torch.empty(C, dtype=params.dtype)
        grads = torch.empty(C, params.shape[1], dtype=params.dtype)
        for c0 in range(0, C, chunk):
            p = params[c0:c0 + chunk].to(self.device, self.dtype)
            if batch is None:
                g, v = self._full(p, self.inputs, self.targets)
            else:
                idx = batch[c0:c0 + chunk].to(self.device)
                g, v = self._mini(p, self.inputs[idx], self.targets[idx])
            losses[c0:c0 + chunk] = v.detach()
            grads[c0:c0 + chunk] = g.detach()
        return losses, grads


def _torch_loss(loss_fn: Union[str, Callable], targets: Any) -> Callable:
    import torch.nn.functional as F

    if callable(loss_fn):
        return loss_fn
    if loss_fn in ("xent", "cross_entropy"):
        return F.cross_entropy
    if loss_fn == "mse":
        if not targets.is_floating_point():
            # As the library: mse against integer labels uses one-hot targets.
            def mse_labels(out: Any, y: Any) -> Any:
                return F.mse_loss(out, F.one_hot(y, out.shape[-1]).to(out.dtype))
            return mse_labels
        return F.mse_loss
    raise InvalidArgument(f"loss_fn: expected 'mse', 'xent' or a callable (outputs, targets) -> mean loss, "
                          f"got {loss_fn!r}")


def torch_loss_grad(model: Any, loss_fn: Union[str, Callable], inputs: Any, targets: Any,
                    chunk_size: Optional[int] = None) -> TorchLossGrad:
    """The batched loss-and-gradient callback of any ``torch.nn.Module`` for :func:`llc`.

    * ``model``: any module whose parameters are all float32 or all float64 (Linear, Conv, pooling,
      normalisation in eval mode, attention, ...: anything ``torch.func.functional_call`` and
      ``vmap`` support; put BatchNorm/Dropout in eval mode with ``model.eval()`` first). Its
      buffers are used as they are. It is never modified.
    * ``loss_fn``: "mse" (``F.mse_loss``; one-hot targets for integer labels), "xent"
      (``F.cross_entropy``) or a callable ``(outputs, targets) -> mean loss`` over a batch.
    * ``inputs`` [N, ...], ``targets`` [N, ...]: torch tensors, moved once to the module's device.
    * ``chunk_size``: chains per ``vmap`` call (None: all at once); lower it to bound memory.

    Returns a :class:`TorchLossGrad`; ``dynascope.llc(torch_loss_grad(net, "xent", x, y))`` then
    samples around the module's current parameters (``w_star``) with n = N.
    """
    return TorchLossGrad(model, loss_fn, inputs, targets, chunk_size)
