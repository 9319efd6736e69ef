"""dynascope.Tracker: diagnostics inside a training loop, written as the command-line tool's run folder.

The folder is what ``dynascope train --out-dir DIR`` writes (``step_XXXXXXX.safetensors``,
``train.csv``) plus a ``report.json`` recording the run's data (``inputs.npy`` and ``targets.npy``
in the folder, named relative to it), seed and loss, so that ``dynascope lc|llc|elasticity|response
--checkpoints DIR`` measure a run trained in PyTorch, JAX or NumPy without data flags. The CSVs that
share a name with the demo's (train.csv, lc.csv, llc.csv, elasticity.csv, response.csv) have its
columns and number formats, so one reader reads both.

Any other ``torch.nn.Module`` (a CNN) is tracked too: its checkpoints are its ``state_dict`` as
safetensors, and the built-in measures go through the package's generic torch paths
(torch_ntk, torch_curvature_operator, local_complexity with hooks, torch_loss_grad,
torch_elasticity, torch_response). The command line cannot run such checkpoints; report.json
says which kind of network a run holds (``network.kind``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import json
import math
import os
import shutil
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from . import _core
from ._arrays import framework, host_view, is_torch
from ._core import InvalidArgument, ShapeMismatch
from ._mlp import Mlp

__all__ = ["Tracker", "load_checkpoint", "save_checkpoint", "save_state_dict", "load_state_dict"]

# The files of a run: the CLI's (training_run.cpp, prepare_out_dir; "report" is the folder of
# figures dynascope.report writes) and the Tracker's data files.
_RUN_FILES = ("train.csv", "report.json", "hessian_density.csv", "lc.csv", "llc.csv", "llc_trace_last.npy",
              "elasticity.csv", "elasticity_first.npy", "elasticity_last.npy", "response.csv",
              "region_map_first.png", "region_map_last.png", "report")
# Where the Tracker writes the run's data: run files only when an earlier Tracker's report.json
# names them (a user's own inputs.npy in the folder is never removed nor replaced).
_DATA_FILES = ("inputs.npy", "targets.npy")

# The kinds of network a run holds (report.json's network.kind): an MLP the command line can run,
# or any other torch module, measured through the package's generic torch paths.
_MLP, _MODULE = "mlp", "torch_module"

# Built-in measures: whether each needs targets, and the default number of samples it measures
# (the first N of the data; None: all), as the CLI's defaults. elasticity and response compute in
# float64 unless their `dtype` option says otherwise, as the CLI.
_BUILTIN = {
    "ntk": (False, 64),
    "lc": (False, None),
    "llc": (True, None),
    "elasticity": (True, 512),
    "response": (True, 128),
    "hessian": (True, None),
}
# The package functions each built-in measure calls, per kind of network (report.json records them
# as the measure's `calls`).
_CALLS = {
    "ntk": {_MLP: ("ntk", "kernel_summary", "kernel_distance"),
            _MODULE: ("torch_ntk", "kernel_summary", "kernel_distance")},
    "lc": {_MLP: ("local_complexity",), _MODULE: ("local_complexity",)},
    "llc": {_MLP: ("llc",), _MODULE: ("torch_loss_grad", "llc")},
    "elasticity": {_MLP: ("elasticity",), _MODULE: ("torch_elasticity",)},
    "response": {_MLP: ("response",), _MODULE: ("torch_response",)},
    "hessian": {_MLP: ("eigsh", "curvature_operator"), _MODULE: ("torch_curvature_operator", "eigsh")},
}
_FLOAT64_BY_DEFAULT = ("elasticity", "response")
# Index lists written to a callable measure's CSV as their length, as the CLI's columns count them.
_COUNTED = ("undefined_sources", "unresolved_sources")
# Per-sample and per-draw arrays: in report.json (when small), not in the CSVs.
_CSV_SKIPPED = ("self_change", "source_rows", "target_rows", "class_pairs", "loss_trace", "distance_trace")
# Per-measure keys of report.json's rows that no CSV has (the CLI's files have no timing column).
_NOT_IN_CSV = ("seconds", "checkpoint")

# state_dict entries of these torch dtypes are stored widened (exactly) to a dtype safetensors
# files here hold, and the metadata "torch_dtypes" records the original for load_state_dict.
_WIDENED = {"bool": "uint8", "int8": "int32", "int16": "int32", "float16": "float32", "bfloat16": "float32"}
_STORED = ("float32", "float64", "int32", "int64", "uint8")

# Arrays with more elements than this are left out of report.json (the rows stay readable).
_JSON_ARRAY_LIMIT = 4096


def save_checkpoint(path: str, model: Mlp, metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes ``model`` as the command-line tool's checkpoints are written: safetensors with
    ``layers.{i}.weight`` [out, in] / ``layers.{i}.bias`` in the parameters' dtype, the activations
    and parameterization in the metadata (so ``dynascope ... --model PATH`` needs no flags), plus
    the string pairs of ``metadata``. Atomic: a temporary file renamed into place."""
    if not isinstance(model, Mlp):
        raise InvalidArgument(f"model: expected a dynascope.Mlp, got {type(model).__name__}")
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    _core.save_mlp(os.fspath(path), model._spec, model.cpu().params_view, meta)


def load_checkpoint(path: str, dtype: Optional[str] = None, activation: str = "",
                    parameterization: str = "") -> Mlp:
    """Reads a network from a safetensors file as ``dynascope ... --model PATH`` does (our
    checkpoints, or a PyTorch ``nn.Sequential`` state dict saved with ``safetensors``).

    * ``dtype``: "float32", "float64", or None for the file's (float64 when its weights are F64).
    * ``activation``, ``parameterization``: override the file's metadata ("" keeps it; a file
      with hidden layers and no activation metadata needs ``activation``).

    Returns a :class:`dynascope.Mlp` whose parameters are a NumPy array. A checkpoint of another
    torch module (a Tracker run of a CNN) is refused: read it with :func:`load_state_dict`.
    """
    if dtype not in (None, "float32", "float64"):
        raise InvalidArgument(f"dtype: expected None, 'float32' or 'float64', got {dtype!r}")
    meta = _file_metadata(os.fspath(path))
    if meta.get("network") == _MODULE:
        raise InvalidArgument(
            f"path: '{os.fspath(path)}' is the state_dict of a torch module ({meta.get('class', 'unknown class')}), "
            f"not an MLP: load_checkpoint (and the command line's --model / --checkpoints) read MLPs only; load it "
            f"into your module with dynascope.load_state_dict(path, module)")
    spec, params = _core.load_mlp(os.fspath(path), dtype or "", activation, parameterization)
    return Mlp._from_spec(spec, params)


def save_state_dict(path: str, module: Any, metadata: Optional[Dict[str, str]] = None) -> None:
    """Writes a ``torch.nn.Module``'s ``state_dict()`` (parameters and buffers, by their names) as
    a safetensors file, atomically, as the Tracker writes the checkpoints of a module that is not an
    MLP. The metadata holds ``format`` "pt", ``network`` "torch_module", ``class`` (the module's
    qualified class name) and the string pairs of ``metadata``. Tensors keep their dtype, except
    bool (stored as uint8), int8/int16 (int32) and float16/bfloat16 (float32), widened exactly and
    recorded in the metadata ``torch_dtypes`` so that :func:`load_state_dict` restores them; other
    dtypes (complex, quantized) are refused. The file is also readable by
    ``safetensors.torch.load_file``."""
    tensors, meta = _state_dict_tensors(module, "module")
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    _core.write_safetensors(os.fspath(path), tensors, meta)


def load_state_dict(path: str, module: Any = None, strict: bool = True) -> Any:
    """Reads a safetensors file (a Tracker checkpoint of a torch module, or any safetensors file)
    as torch CPU tensors, in the dtypes :func:`save_state_dict` recorded.

    * ``module``: None returns the ``{name: tensor}`` dict; a ``torch.nn.Module`` gets it through
      ``module.load_state_dict(state, strict=strict)`` (tensors are copied into the module's, on its
      device) and is returned.
    """
    import torch
    meta, tensors = _core.read_safetensors(os.fspath(path))
    dtypes = json.loads(meta.get("torch_dtypes", "{}"))
    state = {}
    for name, a in tensors:
        t = torch.from_numpy(a)
        if name in dtypes:
            t = t.to(getattr(torch, dtypes[name]))
        state[name] = t
    if module is None:
        return state
    if not _is_torch_module(module):
        raise InvalidArgument(f"module: expected a torch.nn.Module (or None for the dict), got {type(module).__name__}")
    module.load_state_dict(state, strict=strict)
    return module


def _state_dict_tensors(module: Any, name: str) -> Tuple[List[Tuple[str, np.ndarray]], Dict[str, str]]:
    """The module's state_dict as (name, NumPy array) pairs in the dtypes safetensors files here
    hold, and the checkpoint metadata."""
    import torch
    tensors: List[Tuple[str, np.ndarray]] = []
    widened: Dict[str, str] = {}
    for key, t in module.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise InvalidArgument(f"{name}: state_dict entry '{key}' is a {type(t).__name__}, not a tensor; the "
                                  f"checkpoints hold tensors only (pass checkpoints=False)")
        dt = str(t.dtype).replace("torch.", "")
        if dt in _WIDENED:
            widened[key] = dt
            t = t.to(getattr(torch, _WIDENED[dt]))
        elif dt not in _STORED:
            raise InvalidArgument(f"{name}: state_dict entry '{key}' is {dt}, which the checkpoints cannot hold "
                                  f"(float32, float64, int32, int64, uint8, and bool, int8, int16, float16, bfloat16 "
                                  f"widened); pass checkpoints=False")
        # torch's contiguous(), not numpy.ascontiguousarray, which makes a 0-d entry 1-d.
        tensors.append((key, t.detach().cpu().contiguous().numpy()))
    meta = {"format": "pt", "network": _MODULE, "class": _class_name(module)}
    if widened:
        meta["torch_dtypes"] = json.dumps(widened, sort_keys=True)
    return tensors, meta


def _class_name(obj: Any) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def _file_metadata(path: str) -> Dict[str, str]:
    """A safetensors file's metadata, from its JSON header alone ({} when unreadable: the reader
    that follows says why)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100_000_000:
                return {}
            meta = json.loads(f.read(n)).get("__metadata__")
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


class Tracker:
    """Measures diagnostics at checkpoints of a training loop and writes the run folder the
    command-line tool writes.

    ``Tracker(model, data, every=100, measures=(), out_dir="dynascope-run", ...)``

    * ``model``: what is trained. An MLP: a ``torch.nn.Sequential`` of ``Linear`` layers and
      supported activations (read at every checkpoint through :meth:`dynascope.Mlp.from_torch`), a
      :class:`dynascope.Mlp` whose ``params`` the loop updates in place, or a callable with no
      arguments returning the current :class:`dynascope.Mlp` (JAX/Flax: ``lambda:
      dynascope.Mlp.from_pairs(...)``). Or any other ``torch.nn.Module`` (a CNN): its checkpoints
      are its ``state_dict`` (:func:`save_state_dict`), which the command line cannot run, and the
      built-in measures use the package's generic torch functions, with the module in eval mode
      during the measure (its modes are restored after). Any other object is tracked with
      ``checkpoints=False`` and callable measures only.
    * ``data``: ``(inputs, targets)`` or ``inputs`` alone: NumPy, torch or JAX arrays. Inputs
      [N, D...] (for an MLP trailing dimensions flattened, as the CLI does; a torch module gets
      them in their shape); targets [N] integer class labels in [0, outputs) or [N, O] floats ([N]
      for one output). Copied once, in the model's dtype, and written to ``out_dir/inputs.npy`` and
      ``out_dir/targets.npy``, which ``report.json`` names as the run's data.
    * ``every``: checkpoint when ``step % every == 0``; 0: the first step seen and the last only
      (as the CLI's ``--save-every``).
    * ``measures``: what to measure at each checkpoint. Each item is a built-in measure's name, a
      ``(name, options)`` pair, a callable ``fn(model, step)`` returning a number, a dict or a
      dataclass, or a ``(name, callable)`` pair; a dict ``{name: options}`` works too. Built-in:
      ``"ntk"`` (:func:`dynascope.ntk`'s, or :func:`dynascope.torch_ntk`'s, trace kernel through
      :func:`dynascope.kernel_summary`: trace, frobenius, top-``k`` eigenvalues, kta,
      kta_centered, and :func:`dynascope.kernel_distance` to the first checkpoint's kernel),
      ``"lc"`` (:func:`dynascope.local_complexity`), ``"llc"`` (:func:`dynascope.llc`, of
      :func:`dynascope.torch_loss_grad` for a module), ``"elasticity"``, ``"response"``
      (:func:`dynascope.elasticity` / :func:`dynascope.response`, or ``torch_elasticity`` /
      ``torch_response``) and ``"hessian"`` (:func:`dynascope.eigsh` of
      :func:`dynascope.curvature_operator`, or of :func:`dynascope.torch_curvature_operator`).
      Options are the function's keyword arguments (named as the CLI's flags) plus ``samples``:
      the first N samples (defaults: ntk 64, elasticity 512, response 128, the others all), and
      ``dtype`` ("float32" or "float64": a copy of the network and data in that precision; default
      the model's, float64 for elasticity and response as the CLI). The CSVs of lc, llc,
      elasticity and response have the CLI's columns and number format (lc: the training points'
      rows). Rows hold plain Python values (see :attr:`rows`).
    * ``out_dir``: the run folder (created when missing). One that already holds a run is refused
      unless ``overwrite=True``, which removes exactly the run's files first (as ``--overwrite``).
    * ``loss``: "mse" or "xent" (None: xent for class labels, mse for float targets), recorded as
      the run's loss and passed to the measures that take one.
    * ``seed``: recorded as the run's seed and passed to the measures that take one.
    * ``checkpoints``: write ``step_XXXXXXX.safetensors`` at each checkpoint (an MLP, or a torch
      module's state_dict).
    * ``config``: extra JSON-serialisable entries for ``report.json``'s ``config`` (the optimizer,
      learning rate, ...).
    * ``threads``, ``progress``: passed to every measure (``progress=False`` by default: no bars
      inside the training loop).

    Call :meth:`step` once per optimizer step and :meth:`close` at the end (or use ``with``);
    :meth:`lightning_callback` gives a PyTorch Lightning-style callback.
    """

    def __init__(self, model: Any, data: Any, every: int = 100, measures: Any = (), out_dir: str = "dynascope-run",
                 overwrite: bool = False, loss: Optional[str] = None, seed: int = 0, checkpoints: bool = True,
                 config: Optional[Dict[str, Any]] = None, threads: Optional[int] = None, progress: Any = False) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise InvalidArgument(f"every: expected an integer >= 0 (0: the first and last step only), got {every!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgument(f"seed: expected an integer >= 0, got {seed!r}")
        if loss not in (None, "mse", "xent"):
            raise InvalidArgument(f"loss: expected None, 'mse' or 'xent', got {loss!r}")
        if config is not None and not isinstance(config, dict):
            raise InvalidArgument(f"config: expected a dict of extra report entries, got {type(config).__name__}")
        self.model = model
        self.every = every
        self.seed = seed
        self.threads = threads
        self.progress = progress
        self.checkpoints = bool(checkpoints)
        # Files are written under the absolute path; the records name them as out_dir was given, as
        # the demo names its checkpoints by its --out-dir (so a CLI reading the folder by the same
        # path writes the same checkpoint column).
        self._out_dir_given = os.fspath(out_dir)
        self.out_dir = os.path.abspath(self._out_dir_given)
        self._extra_config = dict(config or {})
        self._start = time.time()

        mlp, why = None, f"got {type(model).__name__}"
        if self._is_mlp_model():
            try:
                mlp = self._current_mlp()
            except (InvalidArgument, ShapeMismatch) as e:
                why = str(e)   # e.g. a Sequential CNN: a torch module, tracked through the generic paths
        # What the run holds: an MLP (the command line runs its checkpoints), any other torch module
        # (state_dict checkpoints, generic measures), or None (callable measures only).
        self.kind: Optional[str] = _MLP if mlp is not None else (_MODULE if _is_torch_module(model) else None)
        self._not_mlp = None if mlp is not None else why
        if self.checkpoints and self.kind is None:
            raise InvalidArgument(
                f"model: the run folder's checkpoints need an MLP (a torch.nn.Sequential of Linear layers and "
                f"supported activations, a dynascope.Mlp, or a callable returning one) or a torch.nn.Module; {why}; "
                f"pass checkpoints=False to track another model with callable measures only")
        if self.checkpoints and self.kind == _MODULE:
            _state_dict_tensors(model, "model")   # refuses what the checkpoints cannot hold, before any file
        self._first_spec = mlp._spec if mlp is not None else None
        self.dtype = mlp.dtype if mlp is not None else _model_dtype(model)
        self._fw = "torch" if self.kind == _MODULE or (mlp is not None and is_torch(mlp.params)) else "numpy"
        self._x, self._y, self.task = _prepare_data(data, self.dtype, mlp, loss, flatten=self.kind != _MODULE)
        self.loss = loss or ("xent" if self.task == "classification" else "mse")
        self._measures = _parse_measures(measures)
        for m in self._measures:
            m.check(self)
        self._prepare_out_dir(overwrite)

        # Training rows (train.csv), checkpoint rows (report.json), per-measure rows (their CSVs).
        self._train_rows: Dict[int, Tuple[Optional[float], Optional[float]]] = {}
        self._checkpoint_rows: List[Dict[str, Any]] = []
        self._measure_rows: Dict[str, List[Dict[str, Any]]] = {m.name: [] for m in self._measures}
        self._taken: set = set()
        self._last_step: Optional[int] = None
        self._diverged_at: Optional[int] = None
        self._closed = False
        self._state: Dict[str, Any] = {}   # per-measure memory (the first NTK, for distance_to_init)

        _core.write_npy(os.path.join(self.out_dir, "inputs.npy"), self._x)
        if self._y is not None:
            _core.write_npy(os.path.join(self.out_dir, "targets.npy"), self._y)
        self._write_report()

    # ---- the loop -------------------------------------------------------------------------------

    def step(self, step: int, loss: Any = None, accuracy: Any = None, checkpoint: Optional[bool] = None) -> bool:
        """Records one optimizer update; call it after the update.

        * ``step``: the updates done so far (1 after the first; call ``step(0)`` before training for
          the initial network). Steps must increase.
        * ``loss``, ``accuracy``: of the batch this update was computed from, i.e. of the network
          before it (numbers or 0-d tensors; None: not recorded). ``train.csv`` records them at
          ``step - 1``, as the CLI does: its row t is the batch loss of the network after t updates,
          the one ``step_t`` holds.
        * ``checkpoint``: None takes one when ``step % every == 0`` (with ``every=0``: at the first
          step seen); True forces one, False skips it.

        Returns whether a checkpoint was taken (the network saved and the measures run).
        """
        self._check_open()
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise InvalidArgument(f"step: expected an integer >= 0, got {step!r}")
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise InvalidArgument(f"step: {step} is not after the last step recorded ({self._last_step}); steps "
                                  f"must increase")
        loss_v = _number(loss, "loss")
        acc_v = _number(accuracy, "accuracy")
        if loss_v is not None or acc_v is not None:
            if step == 0:
                raise InvalidArgument("loss: step 0 is the network before training, which no update has come from; "
                                      "call step(0) without loss or accuracy, and step(t, loss=...) after update t")
            self._train_rows[step - 1] = (loss_v, acc_v)
            if loss_v is not None and not math.isfinite(loss_v) and self._diverged_at is None:
                self._diverged_at = step - 1
        first = self._last_step is None
        self._last_step = step
        due = (step % self.every == 0) if self.every > 0 else first
        if checkpoint is not None:
            due = bool(checkpoint)
        if due and step not in self._taken:
            self._checkpoint(step)
            return True
        return False

    def close(self) -> None:
        """Ends the run: a checkpoint of the last step seen (when it has none yet), then
        ``train.csv`` and ``report.json``. Calling it again does nothing."""
        if self._closed:
            return
        if self._last_step is not None and self._last_step not in self._taken:
            self._checkpoint(self._last_step)
        self._closed = True
        self._write_report()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # The loop failed: keep what was measured, without a checkpoint of a half-done step.
        self._closed = True
        self._interrupted = f"{exc_type.__name__}: {exc}"
        self._write_report()

    def lightning_callback(self) -> "TrackerCallback":
        """A PyTorch Lightning-style callback (duck-typed; Lightning is not imported): step 0 at
        ``on_train_start``, ``trainer.global_step`` and the step's loss at ``on_train_batch_end``,
        :meth:`close` at ``on_train_end``."""
        return TrackerCallback(self)

    @property
    def rows(self) -> Dict[str, List[Dict[str, Any]]]:
        """The measured rows so far: ``{"checkpoints": [...], measure name: [...]}``.

        Every value is a plain Python value, as ``report.json`` holds it: numbers as ``float`` /
        ``int`` / ``bool`` (NaN stays ``float("nan")``), arrays and tensors as (nested) lists,
        dataclasses as dicts, and arrays of more than 4096 elements as ``{"omitted": "array of
        shape [...]"}`` (measure those with a callable of your own to keep them)."""
        out = {"checkpoints": list(self._checkpoint_rows)}
        out.update({k: list(v) for k, v in self._measure_rows.items()})
        return out

    # ---- internals ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgument("step: the tracker is closed")

    def _is_mlp_model(self) -> bool:
        m = self.model
        if isinstance(m, Mlp):
            return True
        if _is_torch_module(m):
            from torch import nn
            return isinstance(m, nn.Sequential)
        return callable(m)

    def _current_mlp(self) -> Mlp:
        m = self.model
        # On the host: the measures and checkpoints run there (one copy of a GPU model's parameters).
        if isinstance(m, Mlp):
            return Mlp._from_spec(m._spec, m.params).cpu()   # the params as they are now (even if reassigned)
        if _is_torch_module(m):
            return Mlp.from_torch(m).cpu()
        got = m()
        if not isinstance(got, Mlp):
            raise InvalidArgument(f"model: the callable returned {type(got).__name__}, expected a dynascope.Mlp")
        return got.cpu()

    def _prepare_out_dir(self, overwrite: bool) -> None:
        d = self.out_dir
        if os.path.exists(d) and not os.path.isdir(d):
            raise InvalidArgument(f"out_dir: '{d}' exists and is not a folder")
        own = set(_RUN_FILES) | {f"{m.name}.csv" for m in self._measures} | _earlier_tracker_files(d)
        earlier = []
        for name in _DATA_FILES:
            if name not in own and os.path.exists(os.path.join(d, name)):
                raise InvalidArgument(f"out_dir: '{d}' holds {name}, which no earlier run there wrote; the Tracker "
                                      f"writes the run's data to {name}: choose another folder")
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                if (name.startswith("step_") and name.endswith(".safetensors")) or name in own:
                    earlier.append(name)
        if earlier and not overwrite:
            shown = ", ".join(earlier[:6]) + (", ..." if len(earlier) > 6 else "")
            raise InvalidArgument(f"out_dir: '{d}' holds an earlier run ({shown}); choose another folder, or pass "
                                  f"overwrite=True to remove those files first")
        for name in earlier:
            path = os.path.join(d, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)   # report/: the figures of the earlier run
            else:
                os.remove(path)
        os.makedirs(d, exist_ok=True)
        _core.check_writable(os.path.join(d, "train.csv"))

    def _checkpoint(self, step: int) -> None:
        self._taken.add(step)
        row: Dict[str, Any] = {"step": step}
        mlp = self._current_mlp() if self._first_spec is not None else None
        if mlp is not None:
            _check_same_architecture(self._first_spec, mlp._spec)
        name = f"step_{step:07d}.safetensors"
        if self.checkpoints:
            if mlp is not None:
                save_checkpoint(os.path.join(self.out_dir, name), mlp, {"step": str(step)})
            else:
                save_state_dict(os.path.join(self.out_dir, name), self.model, {"step": str(step)})
            row["checkpoint"] = os.path.join(self._out_dir_given, name)
        for m in self._measures:
            t0 = time.perf_counter()
            values = _plain_row(m.measure(self, mlp, step))
            values["seconds"] = time.perf_counter() - t0
            row[m.name] = values
            self._measure_rows[m.name].append(dict({"step": step, "checkpoint": row.get("checkpoint")}, **values))
        self._checkpoint_rows.append(row)
        self._write_report()

    def _write_report(self) -> None:
        classify = self.task == "classification"
        lines = ["step,loss,accuracy" if classify else "step,loss"]
        for step, (loss, acc) in sorted(self._train_rows.items()):
            lines.append(f"{step},{_train_value(loss)}" + (f",{_train_value(acc)}" if classify else ""))
        _core.write_text_atomic(os.path.join(self.out_dir, "train.csv"), "\n".join(lines) + "\n")
        for m in self._measures:
            rows = self._measure_rows[m.name]
            if rows:
                text = _builtin_csv(m.name, rows, self._first_spec) if m.fn is None else _rows_csv(rows)
                _core.write_text_atomic(os.path.join(self.out_dir, f"{m.name}.csv"), text)
        _core.write_text_atomic(os.path.join(self.out_dir, "report.json"),
                                json.dumps(_jsonable(self._report()), indent=2, allow_nan=False) + "\n")

    def _report(self) -> Dict[str, Any]:
        from . import __version__
        n = int(self._x.shape[0])
        # Relative to the folder (the CLI's --checkpoints DIR resolves them there): a moved or copied
        # folder keeps its data.
        data = {"inputs": "inputs.npy", "name": "inputs.npy", "samples_flag": 0, "test_fraction": 0.0,
                "train_samples": n, "test_samples": 0}
        if self._y is not None:
            data["targets"] = "targets.npy"
        network: Dict[str, Any] = {"from": f"python: {type(self.model).__module__}.{type(self.model).__name__}"}
        if self._first_spec is not None:
            s = self._first_spec
            network.update({"kind": _MLP, "arch": s.arch, "activations": list(s.activations),
                            "parameterization": s.parameterization, "parameters": s.num_params, "bias": list(s.bias)})
        elif self.kind == _MODULE:
            # The command line's --model and --checkpoints read MLPs only: this says why not this one.
            network.update({"kind": _MODULE, "class": _class_name(self.model),
                            "parameters": sum(int(p.numel()) for p in self.model.parameters() if p.requires_grad),
                            "not_mlp": self._not_mlp,
                            "command_line": "the command line cannot read these checkpoints (state_dicts of a torch "
                                            "module, not MLPs); load them with dynascope.load_state_dict"})
        config = {"command": "python", "command_line": " ".join(sys.argv), "version": __version__, "backend": "host",
                  "dtype": self.dtype, "seed": self.seed, "network": network, "data": data, "loss": self.loss,
                  "schedule": {"every": self.every}, "out_dir": self._out_dir_given,
                  "measures": {m.name: m.options_json() for m in self._measures}}
        config.update(self._extra_config)
        report: Dict[str, Any] = {
            "config": config, "network": network, "dataset": data["name"], "train_samples": n, "test_samples": 0,
            "loss": self.loss, "steps": self._last_step, "diverged": self._diverged_at is not None,
            "checkpoints": [self._with_batch_loss(r) for r in self._checkpoint_rows],
            "finished": self._closed and not hasattr(self, "_interrupted"), "seconds": time.time() - self._start}
        if self._diverged_at is not None:
            report["diverged_at_step"] = self._diverged_at
        if hasattr(self, "_interrupted"):
            report["interrupted"] = self._interrupted
        for m in self._measures:
            entry: Dict[str, Any] = {"options": m.options_json()}
            if m.fn is None:
                entry.update({"path": self.kind, "calls": [f"dynascope.{f}" for f in _CALLS[m.name][self.kind]]})
            entry["rows"] = self._measure_rows[m.name]
            report[m.name] = entry
        return report


    def _with_batch_loss(self, row: Dict[str, Any]) -> Dict[str, Any]:
        # The batch loss and accuracy of the checkpoint's network (train.csv's row of its step),
        # once the next update has reported them.
        loss, acc = self._train_rows.get(row["step"], (None, None))
        extra = {}
        if loss is not None:
            extra["batch_loss"] = loss
        if acc is not None:
            extra["batch_accuracy"] = acc
        out = {k: v for k, v in row.items() if k in ("step", "checkpoint")}
        out.update(extra)
        out.update({k: v for k, v in row.items() if k not in ("step", "checkpoint")})
        return out


class TrackerCallback:
    """A PyTorch Lightning-style callback around a :class:`Tracker` (duck-typed: it defines the
    hooks it uses and accepts every other hook as a no-op, without importing Lightning).

    * ``on_train_start(trainer, module)``: step 0 (a checkpoint of the initial network).
    * ``on_train_batch_end(trainer, module, outputs, batch, batch_idx)``: ``trainer.global_step``
      with the loss from ``outputs`` (a tensor, or a dict with ``"loss"``) and ``accuracy`` when
      ``outputs`` has it.
    * ``on_train_end(trainer, module)``: :meth:`Tracker.close`.
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.tracker.step(int(getattr(trainer, "global_step", 0)))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                           *args: Any) -> None:
        loss = accuracy = None
        if isinstance(outputs, dict):
            loss, accuracy = outputs.get("loss"), outputs.get("accuracy", outputs.get("acc"))
        elif outputs is not None:
            loss = outputs
        self.tracker.step(int(trainer.global_step), loss=loss, accuracy=accuracy)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.tracker.close()

    def __getattr__(self, name: str) -> Any:
        # Lightning calls many hooks (setup, on_fit_start, state_dict, ...): the others do nothing.
        if name.startswith("on_") or name in ("setup", "teardown"):
            return lambda *args, **kwargs: None
        if name == "state_dict":
            return lambda: {}
        if name == "load_state_dict":
            return lambda state: None
        if name == "state_key":
            return type(self).__qualname__
        raise AttributeError(name)


# ---- measures ---------------------------------------------------------------------------------------


class _Measure:
    def __init__(self, name: str, fn: Optional[Callable] = None, options: Optional[Dict[str, Any]] = None) -> None:
        self.name = name
        self.fn = fn                         # a user's callable, or None for a built-in
        self.options = dict(options or {})

    def options_json(self) -> Dict[str, Any]:
        if self.fn is not None:
            return {"callable": getattr(self.fn, "__qualname__", repr(self.fn))}
        return {k: v for k, v in self.options.items()}

    def check(self, tracker: Tracker) -> None:
        if self.fn is not None:
            return
        if self.name not in _BUILTIN:
            raise InvalidArgument(f"measures: unknown measure {self.name!r}; the built-in ones are "
                                  f"{', '.join(sorted(_BUILTIN))}, or pass a callable fn(model, step)")
        needs_targets, _ = _BUILTIN[self.name]
        import dynascope
        kinds = (tracker.kind,) if tracker.kind is not None else (_MLP,)
        for name in _CALLS[self.name][kinds[0]]:
            if name not in getattr(dynascope, "__all__", ()) or not hasattr(dynascope, name):
                raise InvalidArgument(f"measures: {self.name!r} calls dynascope.{name}, which this version of the "
                                      f"package does not have; leave it out, or measure it with a callable "
                                      f"fn(model, step)")
        if tracker.kind is None:
            raise InvalidArgument(f"measures: {self.name!r} needs an MLP or a torch.nn.Module model (see Tracker's "
                                  f"model); with another model use a callable fn(model, step)")
        if needs_targets and tracker._y is None:
            raise InvalidArgument(f"measures: {self.name!r} needs targets: pass data=(inputs, targets)")
        if self.options.get("dtype", "float64") not in ("float32", "float64"):
            raise InvalidArgument(f"measures: {self.name!r}: dtype: expected 'float32' or 'float64', got "
                                  f"{self.options['dtype']!r}")
        samples = self.options.get("samples")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 0):
            raise InvalidArgument(f"measures: {self.name!r}: samples: expected an integer >= 0 (0: all), "
                                  f"got {samples!r}")
        allowed = _allowed_options(self.name, tracker.kind)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise InvalidArgument(f"measures: {self.name!r}: unknown option{'s' if len(unknown) > 1 else ''} "
                                  f"{', '.join(map(repr, unknown))} for a{'n' if tracker.kind == _MLP else ''} "
                                  f"{tracker.kind}; its options are {', '.join(sorted(allowed))}")

    def measure(self, tracker: Tracker, mlp: Optional[Mlp], step: int) -> Dict[str, Any]:
        if self.fn is not None:
            return _as_row(self.fn(tracker.model, step), self.name)
        opts = dict(self.options)
        _, default_samples = _BUILTIN[self.name]
        samples = opts.pop("samples", default_samples)
        x, y = tracker._x, tracker._y
        if samples:
            x = x[:samples]
            y = None if y is None else y[:samples]
        dtype = opts.pop("dtype", "float64" if self.name in _FLOAT64_BY_DEFAULT else None)   # checked by check()
        if tracker.kind == _MODULE:
            return _module_measure(self.name, tracker, x, y, dtype, opts)
        if dtype is not None and dtype != mlp.dtype:
            # As the CLI's elasticity and response: float64 by default, whatever the network's dtype
            # (a step's change is a difference of two forwards, which float32 rounds away).
            mlp = Mlp._from_spec(mlp._spec, np.ascontiguousarray(_to_numpy(mlp.params, "params"), dtype=dtype))
            x = np.ascontiguousarray(x, dtype=dtype)
            if y is not None and np.issubdtype(y.dtype, np.floating):
                y = np.ascontiguousarray(y, dtype=dtype)
        else:
            x, y = _in_framework(tracker._fw, x), _in_framework(tracker._fw, y)
        import dynascope
        if self.name == "ntk":
            k = opts.pop("k", 5)
            kernel = dynascope.ntk(mlp, x, outputs="trace", threads=tracker.threads, progress=tracker.progress, **opts)
            return _kernel_row(tracker, kernel, k)
        if self.name == "hessian":
            return _hessian_row(tracker, opts, lambda curvature: dynascope.curvature_operator(
                mlp, x, y, curvature=curvature, loss=tracker.loss))
        fn = getattr(dynascope, _CALLS[self.name][_MLP][0])
        if self.name == "lc":
            _default_radius(tracker, fn, opts)
        args = (mlp, x) if not _BUILTIN[self.name][0] else (mlp, x, y)
        return _as_row(_call(fn, args, opts, tracker, ("threads", "progress", "seed", "loss")), self.name)


def _allowed_options(name: str, kind: str) -> set:
    """The options a built-in measure takes: ``samples``, ``dtype`` and the keyword arguments of
    the functions it calls (those the Tracker passes positionally, or builds itself, excluded)."""
    import dynascope

    def kw(fn_name: str, *skip: str) -> set:
        fn = getattr(dynascope, fn_name)
        return {p.name for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - set(skip)

    out = {"samples", "dtype"}
    if name == "ntk":
        out |= {"k"} | ({"method"} if kind == _MLP else {"chunk_size", "max_memory"})
    elif name == "hessian":
        out |= {"curvature"} | kw("eigsh", "operator")
    elif name == "llc":
        out |= kw("llc", "model", "inputs", "targets") if kind == _MLP else (
            kw("llc", "model", "inputs", "targets", "w_star", "n", "loss") | {"chunk_size"})
    else:
        out |= kw(_CALLS[name][kind][0], "model", "x", "targets")
    return out


def _call(fn: Callable, args: Tuple[Any, ...], opts: Dict[str, Any], tracker: Tracker, keys: Tuple[str, ...]) -> Any:
    """``fn(*args, **opts)`` with the Tracker's threads, progress, seed and loss where ``fn`` takes
    them and the options do not set them."""
    params = inspect.signature(fn).parameters
    for key in keys:
        if key in params and key not in opts:
            opts[key] = {"threads": tracker.threads, "progress": tracker.progress, "seed": tracker.seed,
                         "loss": tracker.loss}[key]
    return fn(*args, **opts)


def _default_radius(tracker: Tracker, fn: Callable, opts: Dict[str, Any]) -> None:
    if "radius" in inspect.signature(fn).parameters and "radius" not in opts:
        # As the demo: 1% of the diagonal of the training inputs' bounding box.
        xs = tracker._x.reshape(tracker._x.shape[0], -1)
        opts["radius"] = 0.01 * float(np.linalg.norm(xs.max(axis=0) - xs.min(axis=0))) or 1e-3


def _module_measure(name: str, tracker: Tracker, x: np.ndarray, y: Optional[np.ndarray], dtype: Optional[str],
                    opts: Dict[str, Any]) -> Dict[str, Any]:
    """A built-in measure of any torch module, through the package's generic torch functions, with
    the module in eval mode (BatchNorm's running statistics, no dropout; the generic functions
    refuse modules that mix the samples of a batch) and its modes restored after."""
    import torch
    import dynascope
    module = tracker.model
    if dtype is not None and dtype != tracker.dtype:
        # A copy in that precision (the module the loop trains is never changed).
        module = copy.deepcopy(module).to(getattr(torch, dtype))
        x = np.ascontiguousarray(x, dtype=dtype)
        if y is not None and np.issubdtype(y.dtype, np.floating):
            y = np.ascontiguousarray(y, dtype=dtype)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = None if y is None else torch.from_numpy(np.ascontiguousarray(y))
    with _eval_mode(module):
        if name == "ntk":
            k = opts.pop("k", 5)
            kernel = dynascope.torch_ntk(module, xt, outputs="trace", threads=tracker.threads,
                                         progress=tracker.progress, **opts)
            return _kernel_row(tracker, kernel, k)
        if name == "hessian":
            loss_fn = _torch_loss_fn(tracker.loss)
            return _hessian_row(tracker, opts, lambda curvature: dynascope.torch_curvature_operator(
                module, loss_fn, xt, yt, curvature=curvature))
        if name == "llc":
            fn = dynascope.torch_loss_grad(module, tracker.loss, xt, yt, chunk_size=opts.pop("chunk_size", None))
            return _as_row(_call(dynascope.llc, (fn,), opts, tracker, ("threads", "progress", "seed")), name)
        fn = getattr(dynascope, _CALLS[name][_MODULE][0])
        if name == "lc":
            _default_radius(tracker, fn, opts)
        args = (module, xt) if not _BUILTIN[name][0] else (module, xt, yt)
        return _as_row(_call(fn, args, opts, tracker, ("threads", "progress", "seed", "loss")), name)


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _torch_loss_fn(loss: str) -> Callable:
    """The run's loss as the MLP paths define it: "xent" is F.cross_entropy, "mse" F.mse_loss (mean
    over all elements) against the targets, one-hot for class labels."""
    import torch.nn.functional as F
    if loss == "xent":
        return F.cross_entropy

    def mse(out: Any, y: Any) -> Any:
        if not y.is_floating_point():
            y = F.one_hot(y, out.shape[-1]).to(out.dtype)
        return F.mse_loss(out, y.reshape(out.shape))
    return mse


def _hessian_row(tracker: Tracker, opts: Dict[str, Any], operator: Callable[[str], Any]) -> Dict[str, Any]:
    """The top eigenvalues of the loss curvature on the data (``dynascope spectrum --operator
    hessian|ggn``): ``curvature`` ("hessian" or "ggn"), ``k`` (default 3) and eigsh's options."""
    import dynascope
    curvature = opts.pop("curvature", "hessian")
    opts.setdefault("k", 3)
    for key, value in (("threads", tracker.threads), ("progress", tracker.progress), ("seed", tracker.seed)):
        opts.setdefault(key, value)
    r = dynascope.eigsh(operator(curvature), **opts)
    # Named as the demo's report.json names its Hessian rows (top_eigenvalues, matvecs, converged);
    # the eigenvectors ([k, P]) are not a diagnostic.
    return {"top_eigenvalues": r.eigenvalues, "matvecs": r.matvecs, "converged": bool(r.all_converged),
            "residuals": r.residuals, "status": r.status, "method": r.method, "iterations": r.iterations}


def _kernel_row(tracker: Tracker, kernel: Any, k: Any) -> Dict[str, Any]:
    """The demo's NTK summary of a trace kernel, by the package's kernel functions: trace, Frobenius
    norm, the top-k eigenvalues (k = 5), the alignment with the targets (kta, kta_centered) and the
    distance to the first checkpoint's kernel."""
    import dynascope
    m = int(kernel.shape[0])
    y = None if tracker._y is None else tracker._y[:m]
    s = dynascope.kernel_summary(kernel, y, k=min(k, m) if isinstance(k, int) else k, seed=tracker.seed,
                                 threads=tracker.threads, progress=tracker.progress)
    out: Dict[str, Any] = {"samples": m, "trace": s.trace, "frobenius": s.frobenius,
                           "eigenvalues": [] if s.eigenvalues is None else s.eigenvalues}
    if y is not None:
        out["kta"], out["kta_centered"] = s.kta, s.kta_centered
    K = np.array(_to_numpy(kernel, "kernel"), dtype=np.float64)
    first = tracker._state.setdefault("ntk_first", K)
    out["distance_to_init"] = dynascope.kernel_distance(first, K)
    return out


def _parse_measures(measures: Any) -> List[_Measure]:
    if measures is None:
        return []
    if isinstance(measures, (str, dict)) or callable(measures):
        measures = [measures] if not isinstance(measures, dict) else list(measures.items())
    out: List[_Measure] = []
    for i, item in enumerate(measures):
        where = f"measures[{i}]"
        if isinstance(item, str):
            out.append(_Measure(item))
        elif callable(item):
            out.append(_Measure(getattr(item, "__name__", f"measure{i}"), fn=item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, what = item
            if callable(what):
                out.append(_Measure(name, fn=what))
            elif what is None or isinstance(what, dict):
                out.append(_Measure(name, options=what))
            else:
                raise InvalidArgument(f"{where}: expected (name, options dict) or (name, callable), got "
                                      f"({name!r}, {type(what).__name__})")
        else:
            raise InvalidArgument(f"{where}: expected a measure name, a (name, options) pair or a callable "
                                  f"fn(model, step), got {type(item).__name__}")
    names = [m.name for m in out]
    for m in out:
        if names.count(m.name) > 1:
            raise InvalidArgument(f"measures: {m.name!r} given twice; name one of them with a (name, ...) pair")
        if not m.name or any(c in m.name for c in "/\\") or m.name in ("checkpoints", "config", "train", "report"):
            raise InvalidArgument(f"measures: {m.name!r} cannot name a measure (it names its CSV file and report key)")
    return out


# ---- data -------------------------------------------------------------------------------------------


def _prepare_data(data: Any, dtype: str, mlp: Optional[Mlp], loss: Optional[str] = None,
                  flatten: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray], str]:
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise InvalidArgument(f"data: expected (inputs, targets) or inputs, got a sequence of {len(data)} items")
        inputs, targets = data
    else:
        inputs, targets = data, None
    x = _to_numpy(inputs, "data inputs")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ShapeMismatch(f"data inputs: expected [N, D...] with N >= 1, got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise InvalidArgument(f"data inputs: expected numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x.reshape(x.shape[0], -1) if flatten else x, dtype=dtype)
    if not np.isfinite(x).all():
        raise InvalidArgument("data inputs: contains NaN or infinite values")
    if mlp is not None and x.shape[1] != mlp.widths[0]:
        raise ShapeMismatch(f"data inputs: the network {mlp.arch} takes {mlp.widths[0]} inputs per sample, got "
                            f"{x.shape[1]} (shape {tuple(x.shape)})")
    if targets is None:
        return x, None, "regression"
    y = _to_numpy(targets, "data targets")
    if y.shape[:1] != x.shape[:1]:
        raise ShapeMismatch(f"data targets: expected one target per input ({x.shape[0]}), got shape {tuple(y.shape)}")
    outputs = mlp.widths[-1] if mlp is not None else None
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        if y.ndim != 1:
            raise ShapeMismatch(f"data targets: integer class labels must be [N], got shape {tuple(y.shape)}")
        y = np.ascontiguousarray(y, dtype=np.int64)
        bad = (y < 0) | (y >= outputs) if outputs is not None else (y < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidArgument(f"data targets: label {int(y[i])} at row {i} is outside [0, {outputs}) (the "
                                  f"network's outputs)")
        return x, y, "classification"
    if not np.issubdtype(y.dtype, np.floating):
        raise InvalidArgument(f"data targets: expected integer class labels or floats, got dtype {y.dtype}")
    if loss == "xent":
        # Before the shape: float labels [N] are the usual slip here, and their shape is not the problem.
        raise InvalidArgument(f"loss: 'xent' needs integer class labels as targets, got float targets ({y.dtype}, "
                              f"shape {tuple(y.shape)}); pass the labels as integers (y.long(), y.astype(int)), or "
                              f"use loss='mse' for regression targets")
    if y.ndim not in (1, 2) or (outputs is not None and (y.shape[1] if y.ndim == 2 else 1) != outputs):
        want = "[N] or [N, 1]" if outputs == 1 else (f"[N, {outputs}], one value per output ([N] only for a network "
                                                     f"with one output)" if outputs else "[N] or [N, O]")
        raise ShapeMismatch(f"data targets: float targets are regression values and must be {want}, got shape "
                            f"{tuple(y.shape)}; class labels must be integers (y.long(), y.astype(int))")
    y = np.ascontiguousarray(y, dtype=dtype)
    if not np.isfinite(y).all():
        raise InvalidArgument("data targets: contains NaN or infinite values")
    return x, y, "regression"


def _to_numpy(a: Any, name: str) -> np.ndarray:
    fw = framework(a, name)
    if fw == "torch":
        return a.detach().cpu().numpy()
    return np.asarray(host_view(a, name))


def _in_framework(fw: str, a: Optional[np.ndarray]) -> Any:
    if a is None or fw != "torch":
        return a
    import torch
    return torch.from_numpy(a)   # shares the memory


def _earlier_tracker_files(d: str) -> set:
    """The data files and measure CSVs an earlier Tracker run in `d` wrote, as its report.json
    names them."""
    try:
        with open(os.path.join(d, "report.json")) as f:
            config = json.load(f)["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    files = set()
    measures = config.get("measures") if isinstance(config, dict) else None
    if isinstance(measures, dict):
        files |= {f"{n}.csv" for n in measures if isinstance(n, str) and "/" not in n and "\\" not in n}
    data = config.get("data") if isinstance(config, dict) else None
    if isinstance(data, dict):
        for key, name in (("inputs", "inputs.npy"), ("targets", "targets.npy")):
            # Relative names (and the absolute ones of earlier versions).
            if data.get(key) in (name, os.path.join(d, name)):
                files.add(name)
    return files


def _model_dtype(model: Any) -> str:
    if _is_torch_module(model):
        for p in model.parameters():
            return str(p.dtype).replace("torch.", "")
    return "float32"


def _is_torch_module(m: Any) -> bool:
    # A user's subclass lives in the user's module: test the class, when torch is loaded at all.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(m, torch.nn.Module)


def _check_same_architecture(first: Any, now: Any) -> None:
    same = (list(first.widths) == list(now.widths) and list(first.bias) == list(now.bias)
            and list(first.activations) == list(now.activations) and first.parameterization == now.parameterization)
    if not same:
        raise InvalidArgument(f"model: the network is now {now.arch} {list(now.activations)}, not the first "
                              f"checkpoint's {first.arch} {list(first.activations)}; a run's checkpoints share one "
                              f"architecture")


# ---- rows, CSV and JSON -------------------------------------------------------------------------------


def _number(v: Any, name: str) -> Optional[float]:
    if v is None:
        return None
    try:
        if hasattr(v, "detach"):
            v = v.detach()
        if hasattr(v, "item"):
            v = v.item()
        return float(v)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{name}: expected a number or a 0-d tensor, got {type(v).__name__}") from None


def _as_row(result: Any, name: str) -> Dict[str, Any]:
    """A measure's result as a flat-ish dict: a dataclass's fields, a dict, or a number."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    if isinstance(result, (int, float, np.number)) or (hasattr(result, "ndim") and result.ndim == 0):
        return {"value": float(result.item() if hasattr(result, "item") else result)}
    raise InvalidArgument(f"measures: {name!r} returned {type(result).__name__}; expected a number, a dict or a "
                          f"dataclass")


def _plain(v: Any) -> Any:
    """Arrays and tensors as lists (large ones left out), NumPy scalars as numbers."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    elif type(v).__module__.split(".")[0] in ("jax", "jaxlib"):
        v = np.asarray(v)
    if isinstance(v, np.ndarray):
        if v.size > _JSON_ARRAY_LIMIT:
            return {"omitted": f"array of shape {list(v.shape)}"}
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _plain_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """A measure's row in plain Python values (what ``Tracker.rows`` holds): see _plain_deep."""
    return {k: _plain_deep(v) for k, v in row.items()}


def _plain_deep(v: Any) -> Any:
    """Tensors and arrays as (nested) lists (more than _JSON_ARRAY_LIMIT elements: their shape),
    NumPy scalars as numbers, dataclasses as dicts, tuples as lists; the rest as it is."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain_deep(getattr(v, f.name)) for f in dataclasses.fields(v)}
    v = _plain(v)
    if isinstance(v, dict):
        return {_plain(k): _plain_deep(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain_deep(x) for x in v]
    return v


def _jsonable(v: Any) -> Any:
    v = _plain(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        v = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None   # as the CLI writes a value that is not finite
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _g10(v: Any) -> str:
    """A floating-point value as the CLI writes it to its CSVs (csv_value: 10 significant digits,
    C's %.10g; empty when missing or not finite)."""
    if v is None:
        return ""
    f = float(_plain(v))
    return "%.10g" % f if math.isfinite(f) else ""


def _train_value(v: Optional[float]) -> str:
    """train.csv's loss and accuracy as the CLI's trainer writes them (9 significant digits, %.9g;
    "nan" for a diverged loss); empty when not recorded."""
    return "" if v is None else "%.9g" % v


def _csv(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        # A callable measure's own numbers: every digit (its file has no CLI counterpart).
        return "" if not math.isfinite(float(v)) else repr(float(v))
    s = str(v)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def _csv_cells(name: str, v: Any) -> List[Tuple[str, str]]:
    """One value as CSV columns: a scalar as one column, a short numeric list as name1..nameK,
    a list of strings joined by "; "; anything else (matrices, nested records) stays in report.json."""
    v = _plain(v)
    if v is None or isinstance(v, (bool, int, float, str, np.generic)):
        return [(name, _csv(v))]
    if name in _CSV_SKIPPED:
        return []
    if name in _COUNTED and isinstance(v, (list, tuple)):
        return [(name, str(len(v)))]
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, str) for x in v):
            return [(name, _csv("; ".join(v)))]
        if len(v) <= 64 and all(x is None or isinstance(x, (int, float)) for x in v):
            return [(f"{name}{i + 1}", _csv(x)) for i, x in enumerate(v)]
    return []


def _rows_csv(rows: List[Dict[str, Any]]) -> str:
    cells = [[c for k, v in row.items() if k not in _NOT_IN_CSV for c in _csv_cells(k, v)] for row in rows]
    header: List[str] = []
    for row in cells:
        for k, _ in row:
            if k not in header:
                header.append(k)
    lines = [",".join(header)]
    for row in cells:
        d = dict(row)
        lines.append(",".join(d.get(k, "") for k in header))
    return "\n".join(lines) + "\n"


def _values(v: Any) -> List[Any]:
    v = _plain(v)
    return [] if v is None else list(v)


def _builtin_csv(name: str, rows: List[Dict[str, Any]], spec: Any) -> str:
    """A built-in measure's CSV. lc, llc, elasticity and response: the columns, order and number
    formats of the files the CLI writes (training_run.cpp's lc_csv_*, llc_csv_*, elasticity_csv_*,
    response_csv_*), so one reader reads a demo's folder and a Tracker's. ntk and hessian, which have
    no CLI file: the demo's report.json names, numbers as the CLI's csv_value."""
    # A torch module's layers are those its rows name: lc's captured layers, response's parameter
    # groups and feature spaces (an MLP's: its linear layers and hidden layers, as the CLI's).
    if spec is not None:
        layers = len(spec.widths) - 1
        lc_layers, groups, hidden = layers, layers, layers - 1
    else:
        lc_layers = max(len(_values(r.get("per_layer_mean"))) for r in rows)
        groups = max(len(_values(r.get("layer_diagonal"))) for r in rows)
        hidden = max(len(r.get("features") or []) for r in rows)
    out: List[str] = []
    if name == "lc":
        # The training points' rows of `dynascope lc --checkpoints` (which adds test and random points).
        out.append("step,points,samples,total_mean,all_layers_mean" +
                   "".join(f",layer{l + 1}" for l in range(lc_layers)))
        for r in rows:
            cells = [str(r["step"]), "train", str(int(r["samples"])), "%.10g" % float(r["total_mean"]),
                     "%.10g" % float(r["all_layers_mean"])] + ["%.10g" % float(v) for v in _values(r["per_layer_mean"])]
            out.append(",".join(cells))
    elif name == "llc":
        out.append("step,llc_mean,llc_stderr,r_hat,llc_std,ess,mala_acceptance,init_loss,nbeta,chains,diverged_chains,"
                   "warnings")
        for r in rows:
            warnings = "; ".join(r.get("warnings") or [])
            quoted = '"' + warnings.replace('"', '""').replace("\n", " ") + '"' if warnings else ""
            cells = [str(r["step"])] + [_g10(r[k]) for k in ("llc_mean", "llc_stderr", "r_hat", "llc_std", "ess",
                                                              "mala_acceptance", "init_loss", "nbeta")]
            cells += [str(int(r["chains"])), str(len(r.get("diverged") or {})), quoted]
            out.append(",".join(cells))
    elif name == "elasticity":
        out.append("step,checkpoint,mean,within_class,across_class,ratio,undefined_sources")
        for r in rows:
            cells = [str(r["step"]), r.get("checkpoint") or ""] + [_g10(r.get(k)) for k in ("mean", "within_class",
                                                                                         "across_class", "ratio")]
            out.append(",".join(cells + [str(len(_values(r.get("undefined_sources"))))]))
    elif name == "response":
        head = "step,checkpoint,mean_diagonal,mean_off_diagonal"
        head += "".join(f",layer{l}_diagonal,layer{l}_off_diagonal" for l in range(1, groups + 1))
        head += "".join(f",effective_rank{l},participation_ratio{l},dead{l},duplicated{l}"
                        for l in range(1, hidden + 1))
        out.append(head + ",input_grad_norm")
        for r in rows:
            diag, off = _values(r.get("layer_diagonal")), _values(r.get("layer_off_diagonal"))
            features = list(r.get("features") or [])
            cells = [str(r["step"]), r.get("checkpoint") or "", _g10(r["mean_diagonal"]), _g10(r["mean_off_diagonal"])]
            for l in range(groups):
                cells += [_g10(diag[l]) if l < len(diag) else "", _g10(off[l]) if l < len(off) else ""]
            for l in range(hidden):
                if l < len(features):
                    h = features[l]
                    get = (lambda k: h[k]) if isinstance(h, dict) else (lambda k: getattr(h, k))
                    dup = get("duplicated")   # None for a torch module's feature space no layer feeds directly
                    cells += [_g10(get("effective_rank")), _g10(get("participation_ratio")), str(int(get("dead"))),
                              "" if dup is None else str(int(dup))]
                else:
                    cells += ["", "", "", ""]
            out.append(",".join(cells + [_g10(r["input_grad_norm"])]))
    elif name == "ntk":
        k = max(len(_values(r.get("eigenvalues"))) for r in rows)
        out.append("step,samples,trace,frobenius" + "".join(f",eigenvalues{i + 1}" for i in range(k)) +
                   ",kta,kta_centered,distance_to_init")
        for r in rows:
            ev = _values(r.get("eigenvalues"))
            cells = [str(r["step"]), str(int(r["samples"])), _g10(r["trace"]), _g10(r["frobenius"])]
            cells += [_g10(ev[i]) if i < len(ev) else "" for i in range(k)]
            out.append(",".join(cells + [_g10(r.get(key)) for key in ("kta", "kta_centered", "distance_to_init")]))
    elif name == "hessian":
        k = max(len(_values(r.get("top_eigenvalues"))) for r in rows)
        out.append("step" + "".join(f",top_eigenvalues{i + 1}" for i in range(k)) + ",matvecs,converged")
        for r in rows:
            ev = _values(r.get("top_eigenvalues"))
            cells = [str(r["step"])] + [_g10(ev[i]) if i < len(ev) else "" for i in range(k)]
            out.append(",".join(cells + [str(int(r["matvecs"])), "true" if r["converged"] else "false"]))
    else:
        return _rows_csv(rows)
    return "\n".join(out) + "\n"
