"""Readers of a run folder for the report (``python -m dynascope report``).

A run folder is what ``dynascope demo``, ``dynascope train`` and the Python ``Tracker`` write. Every
file is optional (a run holds the diagnostics it measured), but a file that is present must be whole:
a CSV whose lines do not all have the header's fields, a number that does not parse, a ``report.json``
that is not JSON, an ``.npy`` of the wrong shape all raise :class:`InvalidArgument` naming the file
and what is wrong, so that a report never silently draws a truncated run.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._core import InvalidArgument

# The files the report reads (each optional).
RUN_FILES = ("report.json", "train.csv", "lc.csv", "llc.csv", "elasticity.csv", "elasticity_first.npy",
             "elasticity_last.npy", "response.csv", "ntk.csv", "hessian.csv", "hessian_density.csv",
             "llc_trace_last.npy", "region_map_first.png", "region_map_last.png")


class _Csv:
    """A CSV file read whole: the header and the columns as strings, with typed accessors that name
    the file, the line and the column of a value that does not parse."""

    def __init__(self, path: str, required: Sequence[str]):
        self.path = path
        self.name = os.path.basename(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"{path}: not a UTF-8 text CSV file ({e})") from None
        except OSError as e:
            raise InvalidArgument(f"{path}: cannot be read ({e.strerror})") from None
        if not text.strip():
            raise InvalidArgument(f"{path}: the file is empty (expected a CSV header line first)")
        if not text.endswith("\n"):
            raise InvalidArgument(f"{path}: the last line ends without a line break: the file is truncated "
                                  "(dynascope and the Tracker write whole lines)")
        try:
            rows = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as e:
            raise InvalidArgument(f"{path}: not a valid CSV file ({e})") from None
        self.header = rows[0]
        missing = [c for c in required if c not in self.header]
        if missing:
            raise InvalidArgument(f"{path}: the header has no column{'s' if len(missing) > 1 else ''} "
                                  f"{', '.join(missing)} (header: {','.join(self.header)})")
        self.rows = []
        for i, r in enumerate(rows[1:], start=2):
            if not r:
                continue
            if len(r) != len(self.header):
                raise InvalidArgument(f"{path}: line {i} has {len(r)} fields, the header {len(self.header)}: "
                                      "the file is truncated or malformed")
            self.rows.append((i, r))
        self._index = {c: j for j, c in enumerate(self.header)}

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, column: str) -> bool:
        return column in self._index

    def strings(self, column: str) -> List[str]:
        j = self._index[column]
        return [r[j] for _, r in self.rows]

    def numbers(self, column: str, rows: Optional[List[int]] = None) -> np.ndarray:
        """The column as float64 (an empty cell, a value that is not finite, is NaN)."""
        j = self._index[column]
        sel = self.rows if rows is None else [self.rows[k] for k in rows]
        out = np.empty(len(sel))
        for k, (line, r) in enumerate(sel):
            s = r[j].strip()
            if s == "":
                out[k] = math.nan
                continue
            try:
                out[k] = float(s)
            except ValueError:
                raise InvalidArgument(f"{self.path}: line {line}, column {column}: {r[j]!r} is not a number") from None
        return out

    def steps(self, rows: Optional[List[int]] = None) -> np.ndarray:
        s = self.numbers("step", rows)
        bad = ~np.isfinite(s) | (s < 0) | (s != np.round(s))
        if bad.any():
            k = int(np.argmax(bad))
            line = (self.rows if rows is None else [self.rows[i] for i in rows])[k][0]
            raise InvalidArgument(f"{self.path}: line {line}: step {s[k]} is not a non-negative integer")
        return s.astype(np.int64)

    def numbered(self, prefix: str, suffix: str = "") -> List[str]:
        """The columns ``prefix1..prefixK`` (``suffix`` after the number), in order."""
        out = []
        while self.has(f"{prefix}{len(out) + 1}{suffix}"):
            out.append(f"{prefix}{len(out) + 1}{suffix}")
        return out


def _floats(v: Any, where: str, file: str) -> np.ndarray:
    """A JSON number or list of numbers (null: NaN) as float64."""
    def bad() -> InvalidArgument:
        return InvalidArgument(f"{file}: {where} is {json.dumps(v)[:80]}, expected a number or a list of numbers")
    if v is None:
        return np.array(math.nan)
    if isinstance(v, bool):
        raise bad()
    if isinstance(v, (int, float)):
        return np.array(float(v))
    if isinstance(v, list):
        if any(isinstance(x, (bool, dict, str)) for x in v):
            raise bad()
        try:
            return np.array([math.nan if x is None else x for x in v], dtype=np.float64)
        except (TypeError, ValueError):
            raise bad() from None
    raise bad()


def _obj(v: Any, where: str, file: str) -> Dict[str, Any]:
    if not isinstance(v, dict):
        raise InvalidArgument(f"{file}: {where} is {type(v).__name__}, expected an object")
    return v


def _rows(v: Any, where: str, file: str) -> List[Dict[str, Any]]:
    if not isinstance(v, list) or not all(isinstance(r, dict) for r in v):
        raise InvalidArgument(f"{file}: {where} is not a list of objects")
    return v


def _load_npy(path: str, ndim: int, what: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InvalidArgument(f"{path}: not a readable .npy file ({e}); expected {what}") from None
    if not isinstance(a, np.ndarray) or a.ndim != ndim or a.dtype.kind not in "fiu" or a.size == 0:
        raise InvalidArgument(f"{path}: holds an array of shape {list(np.shape(a))} and dtype {a.dtype}, "
                              f"expected {what}")
    return a.astype(np.float64)


@dataclasses.dataclass
class Series:
    """Values at a run's checkpoints: ``steps`` [n] and named columns [n] or [n, K]."""
    steps: np.ndarray
    cols: Dict[str, np.ndarray]
    source: str  # the file the values come from (for captions and errors)

    def __contains__(self, name: str) -> bool:
        return name in self.cols


@dataclasses.dataclass
class Run:
    name: str
    path: str
    meta: Dict[str, Any]                    # report.json ({} when absent)
    train: Optional[Series] = None          # train.csv: loss, accuracy per step
    evals: Optional[Series] = None          # report.json checkpoints: train/test loss and accuracy
    ntk: Optional[Series] = None            # eigenvalues [n,K], kta, kta_centered, distance_to_init, distance_to_previous
    energy: Optional[Tuple[np.ndarray, Dict[int, np.ndarray]]] = None   # steps, {k: E_k(y)}
    hessian: Optional[Series] = None        # top_eigenvalues [n,K], trace
    density: Optional[List[Tuple[int, np.ndarray, np.ndarray]]] = None  # (step, lambda, density)
    lc: Optional[Dict[str, Series]] = None  # points -> total_mean, layers [n,L]
    llc: Optional[Series] = None            # llc_mean, llc_stderr, init_loss, r_hat
    llc_trace: Optional[Tuple[int, np.ndarray, float, str]] = None  # step, [C,D], init loss, file
    elasticity: Optional[Series] = None     # mean, within_class, across_class, ratio
    elasticity_matrices: Optional[List[Tuple[str, int, np.ndarray]]] = None  # (first|last, step, [C,C])
    response: Optional[Series] = None       # mean_diagonal, mean_off_diagonal, layer_diagonal [n,L], effective_rank [n,H], participation_ratio [n,H]
    response_fit: Optional[Dict[str, Any]] = None
    region_maps: Optional[List[Tuple[str, int, str, Dict[str, Any]]]] = None  # (first|last, step, png, info)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)


def _present(run_dir: str, name: str) -> Optional[str]:
    p = os.path.join(run_dir, name)
    return p if os.path.isfile(p) else None


def read_run(run_dir: str, name: Optional[str] = None) -> Run:
    """Reads every file of a run folder the report draws (absent files: that diagnostic is absent)."""
    if not os.path.isdir(run_dir):
        raise InvalidArgument(f"{run_dir}: not a folder (expected a run folder written by dynascope demo, "
                              "dynascope train or the Python Tracker)")
    if not any(os.path.isfile(os.path.join(run_dir, f)) for f in RUN_FILES):
        raise InvalidArgument(f"{run_dir}: holds no run (none of {', '.join(RUN_FILES)})")
    meta: Dict[str, Any] = {}
    p = _present(run_dir, "report.json")
    if p:
        try:
            with open(p, "rb") as f:
                meta = json.loads(f.read().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"{p}: not UTF-8 text ({e})") from None
        except json.JSONDecodeError as e:
            raise InvalidArgument(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}): "
                                  "the file is truncated or malformed") from None
        _obj(meta, "the top level", p)
    run = Run(name=name or os.path.basename(os.path.abspath(run_dir)), path=run_dir, meta=meta)
    _read_train(run)
    _read_checkpoint_rows(run)
    _read_density(run)
    _read_lc(run)
    _read_llc(run)
    _read_elasticity(run)
    _read_response(run)
    _read_region_maps(run)
    return run


def _read_train(run: Run) -> None:
    p = _present(run.path, "train.csv")
    if not p:
        return
    c = _Csv(p, ["step", "loss"])
    if not len(c):
        return
    cols = {"loss": c.numbers("loss")}
    if c.has("accuracy"):
        cols["accuracy"] = c.numbers("accuracy")
    run.train = Series(c.steps(), cols, c.name)


def _measure_rows(run: Run, key: str) -> Optional[List[Dict[str, Any]]]:
    """A measure's rows from report.json: the demo's (in ``checkpoints[i][key]``) or the Tracker's
    (``key.rows``); None when report.json holds none."""
    file = run.file("report.json")
    cps = run.meta.get("checkpoints")
    if cps is not None:
        cps = _rows(cps, "checkpoints", file)
        rows = []
        for i, cp in enumerate(cps):
            if isinstance(cp.get(key), dict):
                r = dict(cp[key])
                if "step" not in r:
                    r["step"] = cp.get("step")
                r["_where"] = f"checkpoints[{i}].{key}"
                rows.append(r)
        if rows:
            return rows
    m = run.meta.get(key)
    if isinstance(m, dict) and "rows" in m:
        rows = _rows(m["rows"], f"{key}.rows", file)
        return [dict(r, _where=f"{key}.rows[{i}]") for i, r in enumerate(rows)] or None
    return None


def _row_step(r: Dict[str, Any], file: str) -> int:
    s = r.get("step")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0 or s != int(s):
        raise InvalidArgument(f"{file}: {r.get('_where', 'a row')}.step is {json.dumps(s)}, expected a "
                              "non-negative integer")
    return int(s)


def _stack(rows: List[Dict[str, Any]], key: str, file: str) -> Optional[np.ndarray]:
    """rows[i][key] as [n] or [n, K] (a row without it: NaN); None when no row has it."""
    if not any(key in r and r[key] is not None for r in rows):
        return None
    vals = [_floats(r.get(key), f"{r['_where']}.{key}", file) for r in rows]
    k = max(v.size for v in vals)
    if all(v.ndim == 0 for v in vals):
        return np.array([float(v) for v in vals])
    out = np.full((len(vals), k), math.nan)
    for i, v in enumerate(vals):
        v = np.atleast_1d(v)
        out[i, :v.size] = v
    return out


def _read_checkpoint_rows(run: Run) -> None:
    file = run.file("report.json")
    # Evaluations at the checkpoints (the demo's train/test loss and accuracy; the Tracker's batch ones).
    cps = run.meta.get("checkpoints")
    if cps is not None:
        cps = _rows(cps, "checkpoints", file)
        rows = [dict(cp, _where=f"checkpoints[{i}]") for i, cp in enumerate(cps)]
        cols = {}
        for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            v = _stack(rows, key, file)
            if v is not None and v.ndim == 1 and np.isfinite(v).any():
                cols[key] = v
        if cols:
            run.evals = Series(np.array([_row_step(r, file) for r in rows]), cols, "report.json")
    # NTK: report.json rows (the demo's, with energy) else the Tracker's ntk.csv.
    rows = _measure_rows(run, "ntk")
    if rows:
        cols = {}
        for key in ("eigenvalues", "kta", "kta_centered", "distance_to_init", "distance_to_previous", "samples"):
            v = _stack(rows, key, file)
            if v is not None:
                cols[key] = v if key != "eigenvalues" else np.atleast_2d(v.T).T
        steps = np.array([_row_step(r, file) for r in rows])
        run.ntk = Series(steps, cols, "report.json")
        energies: Dict[int, List[float]] = {}
        if any(isinstance(r.get("energy"), dict) for r in rows):
            ks = sorted({int(k) for r in rows if isinstance(r.get("energy"), dict) for k in r["energy"]
                         if str(k).isdigit()})
            for k in ks:
                energies[k] = [float(_floats(r["energy"].get(str(k)) if isinstance(r.get("energy"), dict) else None,
                                             f"{r['_where']}.energy.{k}", file)) for r in rows]
            run.energy = (steps, {k: np.array(v) for k, v in energies.items()})
    else:
        p = _present(run.path, "ntk.csv")
        if p:
            c = _Csv(p, ["step"])
            if len(c):
                cols = {}
                eig = c.numbered("eigenvalues")
                if eig:
                    cols["eigenvalues"] = np.stack([c.numbers(e) for e in eig], axis=1)
                for key in ("kta", "kta_centered", "distance_to_init", "distance_to_previous", "samples"):
                    if c.has(key):
                        cols[key] = c.numbers(key)
                run.ntk = Series(c.steps(), cols, c.name)
    # Hessian: report.json rows (top eigenvalues, Hutch++ trace) else the Tracker's hessian.csv.
    rows = _measure_rows(run, "hessian")
    if rows:
        cols = {}
        v = _stack(rows, "top_eigenvalues", file)
        if v is not None:
            cols["top_eigenvalues"] = np.atleast_2d(v.T).T
        v = _stack(rows, "trace_hutchpp", file)
        if v is None:
            v = _stack(rows, "trace", file)
        if v is not None:
            cols["trace"] = v
        if cols:
            run.hessian = Series(np.array([_row_step(r, file) for r in rows]), cols, "report.json")
    else:
        p = _present(run.path, "hessian.csv")
        if p:
            c = _Csv(p, ["step"])
            top = c.numbered("top_eigenvalues")
            if len(c) and top:
                cols = {"top_eigenvalues": np.stack([c.numbers(e) for e in top], axis=1)}
                for key in ("trace_hutchpp", "trace"):
                    if c.has(key):
                        cols["trace"] = c.numbers(key)
                        break
                run.hessian = Series(c.steps(), cols, c.name)


def _read_density(run: Run) -> None:
    p = _present(run.path, "hessian_density.csv")
    if not p:
        return
    c = _Csv(p, ["step", "lambda", "density"])
    if not len(c):
        return
    steps, lam, dens = c.steps(), c.numbers("lambda"), c.numbers("density")
    lines = [line for line, _ in c.rows]
    for arr, col in ((lam, "lambda"), (dens, "density")):
        bad = ~np.isfinite(arr) | ((arr < 0) if col == "density" else False)
        if bad.any():
            k = int(np.argmax(bad))
            raise InvalidArgument(f"{p}: line {lines[k]}, column {col}: {arr[k]} is not "
                                  f"{'a finite non-negative density' if col == 'density' else 'finite'}")
    out = []
    for s in sorted(set(steps.tolist())):
        sel = steps == s
        l, d = lam[sel], dens[sel]
        if np.any(np.diff(l) <= 0):
            raise InvalidArgument(f"{p}: at step {s} the lambda grid is not increasing")
        out.append((int(s), l, d))
    run.density = out


def _read_lc(run: Run) -> None:
    p = _present(run.path, "lc.csv")
    if not p:
        return
    c = _Csv(p, ["step", "total_mean"])
    if not len(c):
        return
    points = c.strings("points") if c.has("points") else ["train"] * len(c)
    layers = c.numbered("layer")
    out: Dict[str, Series] = {}
    for pt in dict.fromkeys(points):
        idx = [i for i, q in enumerate(points) if q == pt]
        cols = {"total_mean": c.numbers("total_mean", idx)}
        if layers:
            cols["layers"] = np.stack([c.numbers(l, idx) for l in layers], axis=1)
        out[pt] = Series(c.steps(idx), cols, c.name)
    run.lc = out


def _read_llc(run: Run) -> None:
    p = _present(run.path, "llc.csv")
    if p:
        c = _Csv(p, ["step", "llc_mean"])
        if len(c):
            cols = {"llc_mean": c.numbers("llc_mean")}
            for key in ("llc_stderr", "init_loss", "r_hat", "chains"):
                if c.has(key):
                    cols[key] = c.numbers(key)
            run.llc = Series(c.steps(), cols, c.name)
    file = run.file("report.json")
    llc_meta = run.meta.get("llc") if isinstance(run.meta.get("llc"), dict) else {}
    p = _present(run.path, "llc_trace_last.npy")
    if p:
        trace = _load_npy(p, 2, "the chains' loss traces, a float array [chains, draws]")
        step = llc_meta.get("trace_step")
        if step is None and run.llc is not None:
            step = int(run.llc.steps[-1])
        if step is not None:
            step = _row_step({"step": step, "_where": "llc.trace_step"}, file)
        init = math.nan
        if run.llc is not None and "init_loss" in run.llc and step is not None:
            hit = np.nonzero(run.llc.steps == step)[0]
            if hit.size:
                init = float(run.llc.cols["init_loss"][hit[-1]])
        run.llc_trace = (step, trace, init, os.path.basename(p))
    elif isinstance(llc_meta.get("rows"), list) and llc_meta["rows"]:
        # The Tracker keeps each row's loss_trace in report.json (when small enough).
        rows = _rows(llc_meta["rows"], "llc.rows", file)
        last = rows[-1]
        tr = last.get("loss_trace")
        if isinstance(tr, list) and tr and all(isinstance(t, list) for t in tr):
            try:
                trace = np.array(tr, dtype=np.float64)
            except (TypeError, ValueError):
                raise InvalidArgument(f"{file}: llc.rows[{len(rows) - 1}].loss_trace is not a [chains, draws] "
                                      "list of numbers") from None
            if trace.ndim == 2:
                init = last.get("init_loss")
                run.llc_trace = (_row_step(dict(last, _where=f"llc.rows[{len(rows) - 1}]"), file), trace,
                                 float(init) if isinstance(init, (int, float)) else math.nan, "report.json")


def _read_elasticity(run: Run) -> None:
    p = _present(run.path, "elasticity.csv")
    if p:
        c = _Csv(p, ["step", "within_class", "across_class", "ratio"])
        if len(c):
            cols = {k: c.numbers(k) for k in ("within_class", "across_class", "ratio")}
            if c.has("mean"):
                cols["mean"] = c.numbers("mean")
            run.elasticity = Series(c.steps(), cols, c.name)
    meta = run.meta.get("elasticity") if isinstance(run.meta.get("elasticity"), dict) else {}
    mats = []
    for which in ("first", "last"):
        p = _present(run.path, f"elasticity_{which}.npy")
        if not p:
            continue
        m = _load_npy(p, 2, "a square class-pair matrix [classes, classes]")
        if m.shape[0] != m.shape[1]:
            raise InvalidArgument(f"{p}: holds an array of shape {list(m.shape)}, expected a square class-pair "
                                  "matrix [classes, classes]")
        info = meta.get(which) if isinstance(meta.get(which), dict) else {}
        step = info.get("step")
        if step is None and run.elasticity is not None:
            step = int(run.elasticity.steps[0 if which == "first" else -1])
        mats.append((which, None if step is None else _row_step({"step": step, "_where": f"elasticity.{which}"},
                                                                  run.file("report.json")), m))
    run.elasticity_matrices = mats or None


def _read_response(run: Run) -> None:
    p = _present(run.path, "response.csv")
    if p:
        c = _Csv(p, ["step", "mean_diagonal"])
        if len(c):
            cols = {"mean_diagonal": c.numbers("mean_diagonal")}
            if c.has("mean_off_diagonal"):
                cols["mean_off_diagonal"] = c.numbers("mean_off_diagonal")
            for key, prefix, suffix in (("layer_diagonal", "layer", "_diagonal"),
                                        ("effective_rank", "effective_rank", ""),
                                        ("participation_ratio", "participation_ratio", "")):
                names = c.numbered(prefix, suffix)
                if names:
                    cols[key] = np.stack([c.numbers(n) for n in names], axis=1)
            run.response = Series(c.steps(), cols, c.name)
    meta = run.meta.get("response")
    if isinstance(meta, dict) and "beta" in meta:
        file = run.file("report.json")
        fit = {"beta": float(_floats(meta.get("beta"), "response.beta", file))}
        for key in ("amplitude", "r_squared", "beta_stderr", "confidence", "points"):
            if key in meta:
                fit[key] = float(_floats(meta.get(key), f"response.{key}", file))
        for key in ("beta_ci", "fit_window"):
            if key in meta:
                fit[key] = _floats(meta.get(key), f"response.{key}", file)
        fit["fit_to"] = meta.get("fit_to", "mean_diagonal")
        layers = []
        for i, l in enumerate(meta.get("layers") or []):
            l = _obj(l, f"response.layers[{i}]", file)
            layers.append({k: float(_floats(l.get(k), f"response.layers[{i}].{k}", file))
                           for k in ("layer", "beta", "amplitude") if k in l})
        fit["layers"] = layers
        fit["source"] = "report.json"
        run.response_fit = fit


def _read_region_maps(run: Run) -> None:
    meta = run.meta.get("region_maps") if isinstance(run.meta.get("region_maps"), dict) else {}
    out = []
    for which in ("first", "last"):
        p = _present(run.path, f"region_map_{which}.png")
        if not p:
            continue
        with open(p, "rb") as f:
            head = f.read(8)
        if head != b"\x89PNG\r\n\x1a\n":
            raise InvalidArgument(f"{p}: not a PNG image (expected the demo's region map)")
        info = meta.get(which) if isinstance(meta.get(which), dict) else {}
        step = info.get("step")
        if step is not None:
            step = _row_step({"step": step, "_where": f"region_maps.{which}"}, run.file("report.json"))
        out.append((which, step, p, info))
    run.region_maps = out or None


def fit_power_law(t: np.ndarray, r: np.ndarray) -> Optional[Dict[str, Any]]:
    """Least squares of ln R on ln t over t > 0 and R > 0: R ~ A t^-beta (the CLI's fit, for runs
    whose report.json holds none)."""
    ok = (t > 0) & (r > 0) & np.isfinite(r)
    if ok.sum() < 2:
        return None
    x, y = np.log(t[ok]), np.log(r[ok])
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else math.nan
    return {"beta": float(-slope), "amplitude": float(math.exp(intercept)), "r_squared": r2,
            "points": int(ok.sum()), "fit_window": np.array([t[ok].min(), t[ok].max()], dtype=float),
            "fit_to": "mean_diagonal", "layers": [], "source": "fitted by the report"}
