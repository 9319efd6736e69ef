"""dynascope.train: the library's trainer (PyTorch's losses and optimizers) on the caller's arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _core
from ._arrays import empty, framework, from_numpy, host_view, to_framework
from ._core import InvalidArgument
from ._elasticity import _check_inputs, _check_model, _loss, _targets
from ._mlp import Mlp
from ._runtime import ProgressArg, progress_callback
from ._runtime import threads as _threads

__all__ = ["train", "TrainResult", "Checkpoint"]


@dataclass
class Checkpoint:
    """The network at one checkpoint of :func:`train`."""

    step: int
    """Updates done before it (0 = the initial network)."""
    model: Mlp
    """The network then (its own parameter vector, in the framework of the model's parameters)."""
    train_loss: float
    """The loss on the whole training set then."""
    train_accuracy: Optional[float]
    """The accuracy on the whole training set then (class labels); None for float targets."""


@dataclass
class TrainResult:
    """What :func:`train` returns (the command-line tool's ``train`` JSON keys and ``train.csv``)."""

    model: Mlp
    """The trained network (a new parameter vector in the framework of the model's parameters;
    the model passed in is not changed)."""
    loss: str
    """The loss trained with: "mse" or "xent"."""
    optimizer: Dict[str, Any]
    """The optimizer with its defaults filled in: kind, lr, momentum, betas, eps, weight_decay."""
    steps_done: int
    """Updates done (fewer than ``steps`` when training diverged)."""
    final_loss: float
    """The loss on the whole training set after the last update."""
    final_accuracy: Optional[float]
    """The accuracy then (class labels); None for float targets."""
    diverged: bool
    """True when a non-finite loss stopped training."""
    diverged_at_step: Optional[int]
    """The step whose loss was not finite; None when training did not diverge."""
    history_step: Any
    """(In the framework of ``x``.) int64 [S]: the step of each record (0, 1, ...): ``train.csv``'s ``step``."""
    history_loss: Any
    """float64 [S]: the minibatch loss before that step's update: ``train.csv``'s ``loss``."""
    history_accuracy: Any
    """float64 [S]: the minibatch accuracy (class labels; None for float targets)."""
    checkpoints: List[Checkpoint]
    """The network at step 0, every ``save_every`` steps, at the ``save_log`` steps and at the end
    (step 0 and the end only when both are 0)."""


def _optional_number(value: Any, name: str, low: float = 0.0, below: Optional[float] = None) -> float:
    if value is None:
        return math.nan   # the optimizer's default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low or \
            (below is not None and value >= below):
        rng = f"in [{low:g}, {below:g})" if below is not None else f">= {low:g}"
        raise InvalidArgument(f"{name}: expected a finite number {rng}, got {value!r}")
    return float(value)


def _count(value: Any, name: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgument(f"{name}: expected an integer >= 0 ({what}), got {value!r}")
    return int(value)


def train(model: Mlp, x: Any, targets: Any, loss: Optional[str] = None, optimizer: str = "sgd",
          lr: Optional[float] = None, momentum: Optional[float] = None, betas: Tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8, weight_decay: Optional[float] = None, steps: int = 1000, batch: int = 0, seed: int = 0,
          save_every: int = 0, save_log: int = 0, threads: Optional[int] = None,
          progress: ProgressArg = None) -> TrainResult:
    """Trains a copy of ``model`` on ``(x, targets)`` with the library's trainer (the command-line
    tool's ``train``: PyTorch's losses and update rules).

    * ``model``: a :class:`dynascope.Mlp`; it is not changed: the trained parameters are a new
      vector in the framework of ``model.params``.
    * ``x`` [N, D]: the training inputs in the model's dtype, C-contiguous (NumPy, torch CPU or
      JAX CPU); copied once into the trainer's dataset.
    * ``targets``: integer class labels [N] (any integer dtype, 0..O-1) or float values [N, O] in
      the model's dtype ([N] for one output).
    * ``loss``: "mse" (``torch.nn.MSELoss()``; one-hot targets for labels) or "xent"
      (``torch.nn.CrossEntropyLoss()``); default xent for labels, mse for float targets.
    * ``optimizer``: "sgd", "momentum", "adam" or "adamw" (``torch.optim.SGD``, ``SGD(momentum=)``,
      ``Adam``, ``AdamW``).
    * ``lr``: >= 0; default 1e-2 for sgd/momentum, 1e-3 for adam/adamw.
    * ``momentum``: of the momentum optimizer, >= 0 (default 0.9).
    * ``betas``: Adam's (B1, B2), each in [0, 1) (default (0.9, 0.999)); ``eps``: Adam's epsilon,
      >= 0 (default 1e-8).
    * ``weight_decay``: >= 0; default 0, and 1e-2 (decoupled) for adamw.
    * ``steps``: optimizer updates, >= 0 (default 1000).
    * ``batch``: minibatch size, 0 (default) for full batch, at most N. Each epoch takes a fresh
      seeded permutation of the samples in consecutive slices.
    * ``seed``: the minibatch order.
    * ``save_every``: keep a checkpoint every K steps (0, the default: only the first and the last).
    * ``save_log``: further checkpoints at K steps spaced evenly in log(step),
      ``round(steps ** (i / K))`` for i = 1..K, repeats dropped (the CLI's ``--save-log``; 0, the
      default: none), so the early phase of training is sampled as densely as the late one.
    * ``threads``: host threads (None: ``os.cpu_count()``).
    * ``progress``: None (a tqdm bar when tqdm is installed), True, False, or a callable
      ``(task, done, total)`` called after every update; an exception it raises stops training and
      is re-raised, as Ctrl-C is (the model passed in stays unchanged).

    Returns a :class:`TrainResult`. A non-finite loss stops training and is reported in
    ``diverged``, not raised.
    """
    _check_model(model)
    fw = _check_inputs(model, x, "x")
    n = x.shape[0]
    values, labels = _targets(model, targets, n)
    loss = _loss(loss, labels)
    if not isinstance(optimizer, str):
        raise InvalidArgument(f"optimizer: expected 'sgd', 'momentum', 'adam' or 'adamw', got {optimizer!r}")
    lr_v = _optional_number(lr, "lr")
    momentum_v = _optional_number(momentum, "momentum")
    weight_decay_v = _optional_number(weight_decay, "weight_decay")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise InvalidArgument(f"betas: expected two numbers (B1, B2) such as (0.9, 0.999), got {betas!r}")
    beta1 = _optional_number(betas[0], "betas[0]", 0.0, 1.0)
    beta2 = _optional_number(betas[1], "betas[1]", 0.0, 1.0)
    if betas[0] is None or betas[1] is None:
        raise InvalidArgument(f"betas: expected two numbers (B1, B2) such as (0.9, 0.999), got {betas!r}")
    eps_v = _optional_number(eps, "eps")
    if eps is None:
        raise InvalidArgument("eps: expected a finite number >= 0, got None")
    steps = _count(steps, "steps", "optimizer updates")
    batch = _count(batch, "batch", "0 = full batch")
    if batch > n:
        raise InvalidArgument(f"batch: {batch} is larger than the {n} training samples")
    save_every = _count(save_every, "save_every", "0 = only the first and the last step")
    save_log = _count(save_log, "save_log", "0 = no log-spaced checkpoints")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 64:
        raise InvalidArgument(f"seed: expected an integer in [0, 2**64), got {seed!r}")

    pfw = framework(model.params, "model.params")
    out = empty(pfw, (model.num_params,), model.dtype)
    with progress_callback(progress) as report:
        r = _core.train(model._spec, model.params_view, host_view(x, "x"), values, labels, loss, optimizer, lr_v,
                        momentum_v, beta1, beta2, eps_v, weight_decay_v, steps, batch, int(seed), save_every,
                        save_log, _threads(threads), report, out)
    trained = Mlp._from_spec(model._spec, to_framework(pfw, out))
    saved = from_numpy(pfw, r["checkpoint_params"])
    checkpoints = []
    for k, step in enumerate(r["checkpoint_step"].tolist()):
        accuracy = None if r["checkpoint_accuracy"] is None else float(r["checkpoint_accuracy"][k])
        checkpoints.append(Checkpoint(step=int(step), model=Mlp._from_spec(model._spec, saved[k]),
                                      train_loss=float(r["checkpoint_loss"][k]), train_accuracy=accuracy))
    return TrainResult(
        model=trained, loss=loss, optimizer=r["optimizer"], steps_done=int(r["steps_done"]),
        final_loss=float(r["final_loss"]),
        final_accuracy=None if r["final_accuracy"] is None else float(r["final_accuracy"]),
        diverged=bool(r["diverged"]),
        diverged_at_step=None if r["diverged_at_step"] is None else int(r["diverged_at_step"]),
        history_step=from_numpy(fw, r["step"]), history_loss=from_numpy(fw, r["loss"]),
        history_accuracy=None if r["accuracy"] is None else from_numpy(fw, r["accuracy"]), checkpoints=checkpoints)
