"""The report's figures: one function per figure, each drawing every run that holds its data on a
matplotlib ``Figure`` (no pyplot: the caller's backend is never touched) and returning the figure with
the numbers it plotted, so that tests compare them with the run's files.

Colours are per run (the same run has the same colour in every figure); within a run, series differ by
line style and marker. Every plotted line carries a ``gid`` ``"<run>|<series>"`` so that the data can
be read back from the figure's artists.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._report_data import Run, fit_power_law

# Okabe-Ito-like palette (colour-blind safe), one colour per run.
RUN_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]

STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.5,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "image.cmap": "viridis",
}


@dataclasses.dataclass
class FigureResult:
    key: str          # file stem and identifier: "loss", "ntk_eigenvalues", ...
    title: str
    caption: str      # HTML (escaped) caption
    figure: Any       # matplotlib.figure.Figure
    data: Dict[str, Any]  # what was plotted, {"<run>|<series>": {"x": [...], "y": [...], ...}}


def _new_figure(ncols: int = 1, nrows: int = 1, width: Optional[float] = None, height: float = 3.4, **kw):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width or (4.6 * ncols + 0.6), height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _colour(i: int) -> str:
    return RUN_COLOURS[i % len(RUN_COLOURS)]


def _plot(ax, data: Dict[str, Any], run: str, series: str, x, y, **kw):
    """ax.plot with the gid and the data record the tests read back."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    (line,) = ax.plot(x, y, **kw)
    line.set_gid(f"{run}|{series}")
    data[f"{run}|{series}"] = {"x": x, "y": y}
    return line


def _errorbar(ax, data, run, series, x, y, err, **kw):
    x, y, err = (np.asarray(v, dtype=float) for v in (x, y, err))
    cont = ax.errorbar(x, y, yerr=err, capsize=3, **kw)
    cont.lines[0].set_gid(f"{run}|{series}")
    data[f"{run}|{series}"] = {"x": x, "y": y, "err": err}
    return cont


def _log_if_decades(ax, values: Sequence[np.ndarray], axis: str = "y", decades: float = 1.5) -> bool:
    """A log axis when every value is positive and they span more than ``decades`` decades (call it
    after plotting: the tick labels follow the data's range)."""
    v = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in values]) if values else np.array([])
    v = v[np.isfinite(v)]
    if v.size and (v > 0).all() and math.log10(v.max() / v.min()) > decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        _readable_log_ticks(ax, axis)
        return True
    return False


# Checkpoints whose positive steps span this factor or more get a log step axis unless the figure
# says otherwise: log-spaced checkpoints (the CLI's --save-log) would crowd into the left edge of a
# linear axis; evenly spaced ones (--save-every K of S steps, S/K < LOG_STEPS_RATIO) stay linear.
LOG_STEPS_RATIO = 100.0


def _step_axis(ax, steps: Sequence[np.ndarray], log: Optional[bool] = None, label: str = "training step") -> None:
    """Steps on x: linear, or symmetric-log (step 0 kept, linear up to the first positive step).
    ``log=None``: log when the positive steps span LOG_STEPS_RATIO or more."""
    ax.set_xlabel(label)
    s = np.concatenate([np.ravel(a) for a in steps]) if steps else np.array([])
    pos = s[s > 0]
    if log is None:
        log = bool(pos.size) and pos.max() / pos.min() >= LOG_STEPS_RATIO
    if log and pos.size and pos.max() / pos.min() >= 10:
        from matplotlib.ticker import LogLocator, NullFormatter
        from matplotlib.ticker import FixedLocator
        ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=0.4)
        # Major ticks at 0 (when shown) and the powers of ten from the first positive step on: the
        # default symlog ticks put 10^0 next to 0 inside the linear part.
        decades = range(math.ceil(math.log10(pos.min())), math.floor(math.log10(pos.max())) + 1)
        ax.xaxis.set_major_locator(FixedLocator(([0.0] if s.min() <= 0 else []) + [10.0 ** k for k in decades]))
        ax.xaxis.set_minor_locator(LogLocator(subs=np.arange(2, 10) * 0.1, numticks=20))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0 if s.min() <= 0 else pos.min() / 1.3, pos.max() * 1.15)
        ax.set_xlabel(label + (" (log scale, 0 at the left)" if s.min() <= 0 else " (log scale)"))
        return
    if s.size:
        lo, hi = float(s.min()), float(s.max())
        if hi > lo:
            pad = 0.02 * (hi - lo)
            ax.set_xlim(lo - pad, hi + pad)


def _plain_log_ticks(ax, axis: str = "x") -> None:
    """Plain numbers (200, 300, ...) on a log axis spanning less than about a decade and a half, where
    matplotlib would write 2x10^2."""
    from matplotlib.ticker import FuncFormatter
    lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    if lo > 0 and hi / lo < 30:
        a = ax.xaxis if axis == "x" else ax.yaxis
        fmt = FuncFormatter(lambda v, _: f"{v:g}")
        a.set_major_formatter(fmt)
        a.set_minor_formatter(fmt)


def _readable_log_ticks(ax, axis: str = "y") -> None:
    """Labelled ticks at 1, 2, 5 x 10^k (every integer multiple under half a decade) on a log axis
    spanning less than three decades, where matplotlib would label one power of ten or none."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    a = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = (ax.get_xlim() if axis == "x" else ax.get_ylim())
    if a.get_scale() != "log" or not 0 < lo < hi or hi / lo >= 1e3:
        return
    subs = np.arange(1.0, 10.0) if hi / lo < 3 else (1.0, 2.0, 5.0)
    a.set_major_locator(LogLocator(base=10, subs=subs, numticks=30))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if 1e-4 <= abs(v) < 1e6 else f"{v:.0e}"))
    a.set_minor_locator(LogLocator(base=10, subs=np.arange(1.0, 10.0), numticks=30))
    a.set_minor_formatter(NullFormatter())


def _legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(**kw)


def _run_legend(fig, runs: Sequence[Run]) -> None:
    """One legend of the runs' colours above the figure (several runs only)."""
    if len(runs) < 2:
        return
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=_colour(i), lw=2.5) for i in range(len(runs))]
    # Above the axes (matplotlib 3.6's constrained layout leaves figure legends out: the figures are
    # saved with bbox_inches="tight", which takes it in).
    fig.legend(handles, [r.name for r in runs], loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=min(len(runs), 4), frameon=False, fontsize=9.5)


def _series_legend(ax, entries: Sequence[Tuple[str, Dict[str, Any]]], coloured: bool = False, **kw) -> None:
    """A legend of the series styles: dark grey, one per style, when the colour means the run;
    ``coloured``: the entries carry their own colours (one run, a colour per series)."""
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], **({"color": "0.25"} | style)) if coloured else
               Line2D([], [], **(style | {"color": "0.25"})) for _, style in entries]
    ax.legend(handles, [label for label, _ in entries], **kw)


def _sequential_colours(n: int) -> List[str]:
    """n colours in order along viridis (dark to light, the light end left out: it fades on white)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex
    cmap = colormaps["viridis"]
    return [to_hex(cmap(0.85 * j / max(n - 1, 1))) for j in range(n)]


def _multi(runs) -> bool:
    return len(runs) > 1


# -- the figures --------------------------------------------------------------------------------


def fig_loss(runs: Sequence[Tuple[int, Run]]) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """Loss (log y) and accuracy over steps: train.csv's per-step loss, the checkpoints' train and
    test evaluations from report.json."""
    runs = [(i, r) for i, r in runs if r.train is not None or r.evals is not None]
    if not runs:
        return None
    has_acc = any((r.train is not None and "accuracy" in r.train and np.isfinite(r.train.cols["accuracy"]).any())
                  or (r.evals is not None and any(k in r.evals for k in ("train_accuracy", "test_accuracy")))
                  for _, r in runs)
    fig, axes = _new_figure(2 if has_acc else 1)
    data: Dict[str, Any] = {}
    axl = axes[0, 0]
    steps, losses = [], []
    styles = []
    for i, r in runs:
        c = _colour(i)
        if r.train is not None:
            _plot(axl, data, r.name, "train.csv loss", r.train.steps, r.train.cols["loss"], color=c, lw=1.1,
                  alpha=0.85)
            steps.append(r.train.steps)
            losses.append(r.train.cols["loss"])
            styles.append(("loss per step (train.csv)", {"ls": "-", "lw": 1.1}))
        if r.evals is not None:
            for key, ls, mk in (("train_loss", "none", "o"), ("test_loss", "--", "s")):
                if key in r.evals:
                    _plot(axl, data, r.name, key, r.evals.steps, r.evals.cols[key], color=c, ls=ls, marker=mk,
                          mfc="white" if key == "test_loss" else c)
                    steps.append(r.evals.steps)
                    losses.append(r.evals.cols[key])
                    styles.append((key.replace("_", " ") + " (checkpoints)",
                                   {"ls": ls, "marker": mk, "mfc": "white" if key == "test_loss" else "0.25"}))
    axl.set_ylabel("loss")
    axl.set_title("Loss")
    _log_if_decades(axl, losses)
    _step_axis(axl, steps, log=True)
    if has_acc:
        axa = axes[0, 1]
        for i, r in runs:
            c = _colour(i)
            if r.train is not None and "accuracy" in r.train and np.isfinite(r.train.cols["accuracy"]).any():
                _plot(axa, data, r.name, "train.csv accuracy", r.train.steps, r.train.cols["accuracy"], color=c,
                      lw=1.1, alpha=0.85)
            if r.evals is not None:
                for key, ls, mk in (("train_accuracy", "none", "o"), ("test_accuracy", "--", "s")):
                    if key in r.evals:
                        _plot(axa, data, r.name, key, r.evals.steps, r.evals.cols[key], color=c, ls=ls, marker=mk,
                              mfc="white" if key == "test_accuracy" else c)
        axa.set_ylabel("accuracy")
        axa.set_title("Accuracy")
        axa.set_ylim(-0.02, 1.02)
        _step_axis(axa, steps, log=True)
    seen = dict(styles)
    _series_legend(axl, list(seen.items()), loc="best")
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def _ntk_runs(runs, key):
    return [(i, r) for i, r in runs if r.ntk is not None and key in r.ntk]


def fig_ntk_eigenvalues(runs):
    runs = _ntk_runs(runs, "eigenvalues")
    if not runs:
        return None
    fig, axes = _new_figure(1, width=5.8)
    ax = axes[0, 0]
    data: Dict[str, Any] = {}
    vals, steps = [], []
    kmax = 0
    for i, r in runs:
        eig = r.ntk.cols["eigenvalues"]
        kmax = max(kmax, eig.shape[1])
        for j in range(eig.shape[1]):
            _plot(ax, data, r.name, f"lambda{j + 1}", r.ntk.steps, eig[:, j], color=_colour(i),
                  ls=LINESTYLES[min(j, len(LINESTYLES) - 1)], marker=MARKERS[j % len(MARKERS)],
                  alpha=1.0 - 0.12 * min(j, 5), lw=2.0 if j == 0 else 1.3)
            vals.append(eig[:, j])
        steps.append(r.ntk.steps)
    _log_if_decades(ax, vals, decades=1.0)
    ax.set_ylabel("NTK eigenvalue")
    ax.set_title("NTK top eigenvalues")
    _step_axis(ax, steps)
    _series_legend(ax, [(f"$\\lambda_{{{j + 1}}}$", {"ls": LINESTYLES[min(j, len(LINESTYLES) - 1)],
                                                     "marker": MARKERS[j % len(MARKERS)]}) for j in range(kmax)],
                   loc="center left", bbox_to_anchor=(1.0, 0.5))
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_ntk_energy(runs):
    """E_k(y) over steps for every recorded k. One run: a colour per k (E_k grows with k, so the lines
    never cross and the colour order is the k order); several runs: a colour per run, a line style and
    marker per k."""
    runs = [(i, r) for i, r in runs if r.energy is not None and r.energy[1]]
    if not runs:
        return None
    fig, axes = _new_figure(1, width=5.8)
    ax = axes[0, 0]
    data: Dict[str, Any] = {}
    steps = []
    ks = sorted({k for _, r in runs for k in r.energy[1]})
    one = len(runs) == 1
    k_colours = _sequential_colours(len(ks))

    def style(j: int) -> Dict[str, Any]:
        return ({"color": k_colours[j], "ls": "-"} if one else {"ls": LINESTYLES[j % len(LINESTYLES)]}) | {
            "marker": MARKERS[j % len(MARKERS)]}

    top = 0.0
    for i, r in runs:
        st, en = r.energy
        for j, k in enumerate(ks):
            if k in en:
                _plot(ax, data, r.name, f"E_{k}", st, en[k], **({"color": _colour(i)} | style(j)))
                top = max(top, float(np.nanmax(en[k])) if len(en[k]) else 0.0)
        steps.append(st)
    ax.set_ylabel("$E_k(y)$: share of the target energy")
    # E_k lies in [0, 1]; the axis ends a little above the largest value, not at 1, so that small
    # shares (many classes, few k) stay apart.
    ax.set_ylim(0.0, min(1.0, top * 1.15) + 0.02 if top > 0 else 1.02)
    ax.set_title("Target energy in the top-$k$ NTK eigenvectors")
    _step_axis(ax, steps)
    _series_legend(ax, [(f"$k={k}$", style(j)) for j, k in enumerate(ks)], coloured=one, loc="center left",
                   bbox_to_anchor=(1.0, 0.5))
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_ntk_alignment(runs):
    runs = [(i, r) for i, r in runs if r.ntk is not None and ("kta" in r.ntk or "kta_centered" in r.ntk)]
    if not runs:
        return None
    keys = [k for k in ("kta_centered", "kta") if any(k in r.ntk for _, r in runs)]
    fig, axes = _new_figure(len(keys))
    data: Dict[str, Any] = {}
    titles = {"kta_centered": "Centred kernel-target alignment", "kta": "Uncentred kernel-target alignment"}
    for a, key in enumerate(keys):
        ax = axes[0, a]
        steps = []
        for i, r in runs:
            if key in r.ntk:
                _plot(ax, data, r.name, key, r.ntk.steps, r.ntk.cols[key], color=_colour(i), marker="o")
                steps.append(r.ntk.steps)
        ax.set_ylabel("alignment " + ("(centred)" if key == "kta_centered" else "(uncentred)"))
        ax.set_title(titles[key])
        _step_axis(ax, steps)
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_ntk_distance(runs):
    runs = [(i, r) for i, r in runs if r.ntk is not None and
            ("distance_to_init" in r.ntk or "distance_to_previous" in r.ntk)]
    if not runs:
        return None
    keys = [k for k in ("distance_to_init", "distance_to_previous")
            if any(k in r.ntk and np.isfinite(r.ntk.cols[k]).any() for _, r in runs)]
    if not keys:
        return None
    fig, axes = _new_figure(len(keys))
    data: Dict[str, Any] = {}
    for a, key in enumerate(keys):
        ax = axes[0, a]
        steps = []
        for i, r in runs:
            if key in r.ntk:
                y = r.ntk.cols[key]
                ok = np.isfinite(y)  # distance_to_previous is null at the first checkpoint
                _plot(ax, data, r.name, key, r.ntk.steps[ok], y[ok], color=_colour(i), marker="o")
                steps.append(r.ntk.steps)
        if key == "distance_to_init":
            ax.set_ylabel(r"$1 - \langle K_0, K_t\rangle / (\|K_0\|\,\|K_t\|)$")
            ax.set_title("Kernel distance to initialization")
        else:
            ax.set_ylabel(r"$1 - \langle K_{t'}, K_t\rangle / (\|K_{t'}\|\,\|K_t\|)$")
            ax.set_title("Kernel velocity (distance to the previous checkpoint)")
        _step_axis(ax, steps)
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_hessian(runs):
    runs = [(i, r) for i, r in runs if r.hessian is not None]
    if not runs:
        return None
    keys = [k for k in ("top_eigenvalues", "trace") if any(k in r.hessian for _, r in runs)]
    fig, axes = _new_figure(len(keys))
    data: Dict[str, Any] = {}
    for a, key in enumerate(keys):
        ax = axes[0, a]
        steps, vals = [], []
        for i, r in runs:
            if key not in r.hessian:
                continue
            y = r.hessian.cols[key][:, 0] if key == "top_eigenvalues" else r.hessian.cols[key]
            _plot(ax, data, r.name, "lambda_max" if key == "top_eigenvalues" else "trace", r.hessian.steps, y,
                  color=_colour(i), marker="o")
            steps.append(r.hessian.steps)
            vals.append(y)
        _log_if_decades(ax, vals, decades=1.0)
        if key == "top_eigenvalues":
            ax.set_ylabel(r"$\lambda_{\max}$ of the loss Hessian")
            ax.set_title("Top Hessian eigenvalue (sharpness)")
        else:
            ax.set_ylabel(r"$\mathrm{tr}\,H$")
            ax.set_title("Hessian trace (Hutch++)")
        _step_axis(ax, steps)
    _run_legend(fig, [r for _, r in runs])
    return fig, data


DENSITY_BINS = 150          # the heat map's shared lambda bins
DENSITY_FLOOR_DECADES = 4   # its colour scale spans this many decades below the largest binned density


def _binned_density(lam: np.ndarray, d: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The mass of the piecewise-linear density (lam, d) in each bin [edges[k], edges[k+1]], divided by
    the bin's width: a density again, on the shared grid. The mass is the exact integral of the linear
    interpolant (the trapezoid rule on the checkpoint's own grid, split at the bin edges), zero outside
    the checkpoint's grid, so that the bins' masses add up to the trapezoid integral of the whole density."""
    lam = np.asarray(lam, dtype=float)
    d = np.asarray(d, dtype=float)
    if lam.size < 2:
        return np.zeros(edges.size - 1)
    h = np.diff(lam)
    cum = np.concatenate([[0.0], np.cumsum(h * (d[1:] + d[:-1]) / 2)])  # the integral from lam[0] to lam[k]
    x = np.clip(edges, lam[0], lam[-1])
    k = np.clip(np.searchsorted(lam, x, side="right") - 1, 0, lam.size - 2)
    t = x - lam[k]
    F = cum[k] + d[k] * t + (d[k + 1] - d[k]) * t * t / (2 * h[k])  # the integral from lam[0] to x
    return np.diff(F) / np.diff(edges)


def _column_edges(steps: np.ndarray) -> np.ndarray:
    """[n, 2]: each checkpoint's column, reaching halfway to its neighbours (the first and last reach as
    far out as in), so the columns tile the axis without gaps however unevenly the checkpoints are
    spaced. The caller passes the steps in the step axis' coordinates (log ones for a log axis) and
    maps the edges back."""
    if steps.size < 2:
        w = max(abs(float(steps[0])) * 0.1, 1.0) if steps.size else 0.0
        return np.stack([steps - w / 2, steps + w / 2], axis=1)
    mid = (steps[1:] + steps[:-1]) / 2
    lo = np.concatenate([[steps[0] - (mid[0] - steps[0])], mid])
    hi = np.concatenate([mid, [steps[-1] + (steps[-1] - mid[-1])]])
    return np.stack([lo, hi], axis=1)


def fig_hessian_density(runs):
    """Per run: the SLQ density as a heat map (checkpoints on x, lambda on y, log colour), and the
    density of the first and last checkpoints as curves.

    Each checkpoint's density lives on its own lambda grid and is a sum of narrow Gaussians, so the heat
    map shows instead its mass binned onto one lambda grid shared by all the run's checkpoints
    (DENSITY_BINS bins over the union of their ranges), divided by the bin width."""
    from matplotlib.colors import LogNorm
    runs = [(i, r) for i, r in runs if r.density]
    if not runs:
        return None
    fig, axes = _new_figure(2, nrows=len(runs), width=10.0, height=3.6,
                            gridspec_kw={"width_ratios": [1.25, 1]})
    data: Dict[str, Any] = {}
    for row, (i, r) in enumerate(runs):
        ax, axc = axes[row, 0], axes[row, 1]
        steps = np.array([s for s, _, _ in r.density], dtype=float)
        _step_axis(ax, [steps])
        # Columns in the axis' coordinates: a log axis gets them as even as the checkpoints look there.
        to_axis = ax.xaxis.get_transform()
        cols = to_axis.inverted().transform(_column_edges(to_axis.transform(steps)).reshape(-1)).reshape(-1, 2)
        lo = min(float(lam[0]) for _, lam, _ in r.density)
        hi = max(float(lam[-1]) for _, lam, _ in r.density)
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, DENSITY_BINS + 1)
        binned = np.stack([_binned_density(lam, d, edges) for _, lam, d in r.density], axis=1)  # [bins, checkpoints]
        bmax = float(binned.max()) if (binned > 0).any() else 1.0
        floor = bmax * 10.0 ** -DENSITY_FLOOR_DECADES
        norm = LogNorm(vmin=floor, vmax=bmax)
        shown = np.maximum(binned, floor)
        mesh = None
        ax.grid(False)
        for j, (s, _, _) in enumerate(r.density):
            mesh = ax.pcolormesh(cols[j], edges, shown[:, j:j + 1], norm=norm, cmap="magma_r", shading="flat",
                                 rasterized=True)
            mesh.set_gid(f"{r.name}|density@{s}")
        data[f"{r.name}|density"] = {"steps": steps, "column_edges": cols, "lambda_edges": edges,
                                     "density": binned, "floor": floor}
        ax.set_xlim(cols[0, 0], cols[-1, 1])
        ax.set_ylim(edges[0], edges[-1])
        ax.set_ylabel(r"Hessian eigenvalue $\lambda$")
        ax.set_title(("Hessian spectral density (SLQ)" if len(runs) == 1 else f"{r.name}: SLQ density"))
        cb = fig.colorbar(mesh, ax=ax, pad=0.01)
        cb.set_label(f"density, {DENSITY_BINS} bins (log; floor $10^{{-{DENSITY_FLOOR_DECADES}}}$ of max)")
        positive = np.concatenate([d[d > 0] for _, _, d in r.density])
        dmax = float(positive.max()) if positive.size else 1.0
        picks = [0, len(r.density) - 1] if len(r.density) > 1 else [0]
        for n, j in enumerate(picks):
            s, lam, d = r.density[j]
            ok = d > 0
            _plot(axc, data, r.name, f"density_curve@{s}", lam[ok], d[ok], color=_colour(i),
                  ls="--" if n == 0 and len(picks) > 1 else "-", lw=1.4, label=f"step {s}")
        axc.set_yscale("log")
        axc.set_ylim(dmax * 1e-6, dmax * 2)  # the curves' far tails carry no visible mass
        axc.set_xlabel(r"Hessian eigenvalue $\lambda$")
        axc.set_ylabel("density")
        axc.set_title("First and last checkpoint")
        _legend(axc, loc="best")
    return fig, data


def fig_lc(runs):
    runs = [(i, r) for i, r in runs if r.lc]
    if not runs:
        return None
    has_layers = any("layers" in s for _, r in runs for s in r.lc.values())
    fig, axes = _new_figure(2 if has_layers else 1)
    data: Dict[str, Any] = {}
    ax = axes[0, 0]
    order = ["train", "test", "random"]
    point_sets = sorted({p for _, r in runs for p in r.lc}, key=lambda p: (order.index(p) if p in order else 9, p))
    styles = {p: (LINESTYLES[k % len(LINESTYLES)], MARKERS[k % len(MARKERS)]) for k, p in enumerate(point_sets)}
    steps = []
    for i, r in runs:
        for p, s in r.lc.items():
            ls, mk = styles[p]
            _plot(ax, data, r.name, f"{p}:total_mean", s.steps, s.cols["total_mean"], color=_colour(i), ls=ls,
                  marker=mk, mfc="white" if p != "train" else _colour(i))
            steps.append(s.steps)
    ax.set_ylabel("local complexity (neurons whose\nsign changes near a point)")
    ax.set_title("Local complexity (hidden layers)")
    _step_axis(ax, steps, log=True)
    _series_legend(ax, [(f"{p} points", {"ls": styles[p][0], "marker": styles[p][1],
                                         "mfc": "white" if p != "train" else "0.25"}) for p in point_sets],
                   loc="best")
    if has_layers:
        axl = axes[0, 1]
        nl = 0
        for i, r in runs:
            s = r.lc.get("train") or next(iter(r.lc.values()))
            if "layers" not in s:
                continue
            lay = s.cols["layers"]
            nl = max(nl, lay.shape[1])
            for j in range(lay.shape[1]):
                _plot(axl, data, r.name, f"layer{j + 1}", s.steps, lay[:, j], color=_colour(i),
                      ls=LINESTYLES[j % len(LINESTYLES)], marker=MARKERS[j % len(MARKERS)])
        pts = "train" if all("train" in r.lc for _, r in runs) else "first"
        axl.set_ylabel("local complexity per layer")
        axl.set_title(f"Per layer ({pts} points)")
        _step_axis(axl, steps, log=True)
        _series_legend(axl, [(f"layer {j + 1}", {"ls": LINESTYLES[j % len(LINESTYLES)],
                                                  "marker": MARKERS[j % len(MARKERS)]}) for j in range(nl)],
                       loc="best")
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_region_maps(runs):
    import matplotlib.image as mpimg
    runs = [(i, r) for i, r in runs if r.region_maps]
    if not runs:
        return None
    ncols = max(len(r.region_maps) for _, r in runs)
    fig, axes = _new_figure(ncols, nrows=len(runs), width=4.2 * ncols, height=4.35)
    data: Dict[str, Any] = {}
    for row, (i, r) in enumerate(runs):
        for col, (which, step, path, info) in enumerate(r.region_maps):
            ax = axes[row, col]
            img = mpimg.imread(path)
            im = ax.imshow(img, interpolation="nearest")
            im.set_gid(f"{r.name}|region_map_{which}")
            data[f"{r.name}|region_map_{which}"] = {"file": path, "shape": img.shape}
            title = f"{'initial' if which == 'first' else 'final'} network"
            if step is not None:
                title += f", step {step}"
            if isinstance(info.get("regions"), int):
                title += f"\n{info['regions']} linear regions"
                if info.get("exact") is False:
                    title += " (at least)"
            if len(runs) > 1:
                title = f"{r.name}: " + title
            ax.set_title(title, color=_colour(i) if len(runs) > 1 else "black")
            ax.set_axis_off()
        for col in range(len(r.region_maps), ncols):
            axes[row, col].set_axis_off()
    return fig, data


def fig_llc(runs):
    runs = [(i, r) for i, r in runs if r.llc is not None]
    if not runs:
        return None
    fig, axes = _new_figure(1, width=5.6)
    ax = axes[0, 0]
    data: Dict[str, Any] = {}
    steps = []
    n = len(runs)
    span = max((float(r.llc.steps.max() - r.llc.steps.min()) for _, r in runs), default=0.0)
    for k, (i, r) in enumerate(runs):
        # Several runs: offset the markers a little so that the error bars do not hide each other.
        dx = (k - (n - 1) / 2) * 0.012 * span if n > 1 and span > 0 else 0.0
        err = r.llc.cols.get("llc_stderr", np.full(r.llc.steps.shape, math.nan))
        _errorbar(ax, data, r.name, "llc_mean", r.llc.steps + dx, r.llc.cols["llc_mean"], err, color=_colour(i),
                  marker="o", lw=1.4)
        data[f"{r.name}|llc_mean"]["step"] = r.llc.steps.astype(float)
        steps.append(r.llc.steps)
    ax.axhline(0, color="0.6", lw=0.8, zorder=0)
    ax.set_ylabel(r"local learning coefficient $\hat\lambda$")
    ax.set_title("LLC over checkpoints (± standard error over chains)")
    _step_axis(ax, steps)
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_llc_traces(runs):
    runs = [(i, r) for i, r in runs if r.llc_trace is not None]
    if not runs:
        return None
    fig, axes = _new_figure(len(runs), width=max(5.8, 4.6 * len(runs)))
    data: Dict[str, Any] = {}
    for k, (i, r) in enumerate(runs):
        ax = axes[0, k]
        step, trace, init, _ = r.llc_trace
        draws = np.arange(1, trace.shape[1] + 1)
        for c in range(trace.shape[0]):
            _plot(ax, data, r.name, f"chain{c + 1}", draws, trace[c], color=_colour(i), lw=0.9,
                  alpha=0.35 + 0.65 / trace.shape[0], ls=LINESTYLES[c % 4])
        if np.isfinite(init):
            ax.axhline(init, color="black", ls="--", lw=1.2, label=r"$L_n(w^*)$ at the checkpoint",
                       gid=f"{r.name}|init_loss")
            data[f"{r.name}|init_loss"] = {"y": float(init)}
        ax.plot([], [], color=_colour(i), lw=0.9, label=f"{trace.shape[0]} chains")
        ax.set_xlabel("draw")
        ax.set_ylabel(r"loss $L_B(w)$ along the chain")
        t = "Chains' loss traces" + (f", step {step}" if step is not None else "")
        ax.set_title(t if len(runs) == 1 else f"{r.name}: " + t)
        _legend(ax, loc="best")
    return fig, data


def fig_elasticity_matrices(runs):
    from matplotlib.colors import LogNorm, Normalize
    runs = [(i, r) for i, r in runs if r.elasticity_matrices]
    if not runs:
        return None
    ncols = max(len(r.elasticity_matrices) for _, r in runs)
    fig, axes = _new_figure(ncols, nrows=len(runs), width=4.3 * ncols, height=3.7)
    data: Dict[str, Any] = {}
    for row, (i, r) in enumerate(runs):
        for col, (which, step, m) in enumerate(r.elasticity_matrices):
            ax = axes[row, col]
            finite = m[np.isfinite(m)]
            use_log = finite.size and (finite > 0).all() and finite.max() / finite.min() > 30
            norm = LogNorm(finite.min(), finite.max()) if use_log else Normalize(
                finite.min() if finite.size else 0, finite.max() if finite.size else 1)
            im = ax.imshow(m, cmap="viridis", norm=norm, interpolation="nearest")
            im.set_gid(f"{r.name}|elasticity_{which}")
            data[f"{r.name}|elasticity_{which}"] = {"matrix": m}
            cls = m.shape[0]
            if cls <= 12:
                for a in range(cls):
                    for b in range(cls):
                        v = m[a, b]
                        rgba = im.cmap(norm(v)) if np.isfinite(v) else (1, 1, 1, 1)
                        lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
                        ax.text(b, a, f"{v:.3g}", ha="center", va="center", fontsize=max(6, 10 - cls // 2),
                                color="black" if lum > 0.5 else "white")
            ticks = np.arange(cls) if cls <= 20 else np.arange(0, cls, max(1, cls // 10))
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.set_xlabel("class of the moved sample $x_j$")
            ax.set_ylabel("class of the stepped sample $x_i$")
            ax.grid(False)
            title = f"{'first' if which == 'first' else 'last'} checkpoint" + (f", step {step}" if step is not None else "")
            ax.set_title(title if len(runs) == 1 else f"{r.name}: {title}")
            cb = fig.colorbar(im, ax=ax, pad=0.02)
            cb.set_label("mean relative elasticity" + (" (log)" if use_log else ""))
        for col in range(len(r.elasticity_matrices), ncols):
            axes[row, col].set_axis_off()
    return fig, data


def fig_elasticity_ratio(runs):
    runs = [(i, r) for i, r in runs if r.elasticity is not None]
    if not runs:
        return None
    fig, axes = _new_figure(2)
    data: Dict[str, Any] = {}
    ax, axr = axes[0, 0], axes[0, 1]
    steps, vals = [], []
    for i, r in runs:
        e = r.elasticity
        _plot(ax, data, r.name, "within_class", e.steps, e.cols["within_class"], color=_colour(i), marker="o")
        _plot(ax, data, r.name, "across_class", e.steps, e.cols["across_class"], color=_colour(i), marker="s",
              ls="--", mfc="white")
        _plot(axr, data, r.name, "ratio", e.steps, e.cols["ratio"], color=_colour(i), marker="o")
        steps.append(e.steps)
        vals += [e.cols["within_class"], e.cols["across_class"]]
    _log_if_decades(ax, vals)
    ax.set_ylabel("mean relative elasticity")
    ax.set_title("Within and across classes")
    _series_legend(ax, [("within class", {"ls": "-", "marker": "o"}),
                        ("across classes", {"ls": "--", "marker": "s", "mfc": "white"})], loc="best")
    axr.axhline(1.0, color="0.5", lw=0.9, ls=":", zorder=0)
    axr.set_ylabel("within / across")
    axr.set_title("Elasticity ratio (above 1: a step moves its own class more)")
    axr.title.set_fontsize(10)
    for a in (ax, axr):
        _step_axis(a, steps)
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_response(runs):
    """Log-log mean diagonal response over steps with the fitted power law R = A t^-beta."""
    runs = [(i, r) for i, r in runs if r.response is not None and (r.response.steps > 0).any()]
    if not runs:
        return None
    has_layers = any("layer_diagonal" in r.response for _, r in runs)
    fig, axes = _new_figure(2 if has_layers else 1)
    data: Dict[str, Any] = {}
    ax = axes[0, 0]
    for i, r in runs:
        s = r.response
        t = s.steps.astype(float)
        ok = t > 0
        _plot(ax, data, r.name, "mean_diagonal", t[ok], s.cols["mean_diagonal"][ok], color=_colour(i), marker="o",
              ls="none")
        if "mean_off_diagonal" in s:
            _plot(ax, data, r.name, "mean_off_diagonal", t[ok], s.cols["mean_off_diagonal"][ok], color=_colour(i),
                  marker="s", ls="none", mfc="white")
        fit = r.response_fit or fit_power_law(t, s.cols["mean_diagonal"])
        if fit and np.isfinite(fit.get("amplitude", math.nan)):
            lo, hi = (fit["fit_window"] if "fit_window" in fit else (t[ok].min(), t[ok].max()))
            tt = np.geomspace(max(lo, t[ok].min()), hi, 100) if hi > lo else np.array([lo, hi])
            label = rf"$A\,t^{{-\beta}}$, $\beta = {fit['beta']:.3g}$"
            if "beta_ci" in fit and np.size(fit["beta_ci"]) == 2:
                label += rf" [{fit['beta_ci'][0]:.2g}, {fit['beta_ci'][1]:.2g}]"
            if _multi(runs):
                label = f"{r.name}: " + label
            _plot(ax, data, r.name, "fit", tt, fit["amplitude"] * tt ** (-fit["beta"]), color=_colour(i), lw=1.3,
                  ls="-", alpha=0.8, label=label)
            data[f"{r.name}|fit"].update(beta=fit["beta"], amplitude=fit["amplitude"], source=fit.get("source"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax, "x")
    _readable_log_ticks(ax, "y")
    ax.set_xlabel("training step $t$ (log)")
    ax.set_ylabel("mean response $R$ (log)")
    ax.set_title("Training response")
    from matplotlib.lines import Line2D
    handles, labels = ax.get_legend_handles_labels()
    handles = [Line2D([], [], color="0.25", marker="o", ls="none"),
               Line2D([], [], color="0.25", marker="s", ls="none", mfc="white")] + handles
    labels = ["diagonal $R(x, x)$", r"off-diagonal $R(x', x)$"] + labels
    ax.legend(handles, labels, loc="best")
    if has_layers:
        axl = axes[0, 1]
        nl = 0
        for i, r in runs:
            s = r.response
            if "layer_diagonal" not in s:
                continue
            t = s.steps.astype(float)
            ok = t > 0
            lay = s.cols["layer_diagonal"]
            nl = max(nl, lay.shape[1])
            for j in range(lay.shape[1]):
                _plot(axl, data, r.name, f"layer{j + 1}_diagonal", t[ok], lay[ok, j], color=_colour(i),
                      marker=MARKERS[j % len(MARKERS)], ls=LINESTYLES[j % len(LINESTYLES)], lw=1.1)
        axl.set_xscale("log")
        _log_if_decades(axl, [r.response.cols["layer_diagonal"][r.response.steps > 0] for _, r in runs
                              if "layer_diagonal" in r.response], decades=0.0)
        _plain_log_ticks(axl, "x")
        _readable_log_ticks(axl, "y")
        axl.set_xlabel("training step $t$ (log)")
        axl.set_ylabel("diagonal response per layer")
        axl.set_title("Per-layer NTK share of the response")
        betas = {}
        for _, r in runs:
            for l in (r.response_fit or {}).get("layers", []):
                betas.setdefault(int(l.get("layer", 0)), l.get("beta"))
        _series_legend(axl, [(f"layer {j + 1}" + (rf" ($\beta = {betas[j + 1]:.3g}$)" if not _multi(runs) and
                                                   betas.get(j + 1) is not None else ""),
                              {"ls": LINESTYLES[j % len(LINESTYLES)], "marker": MARKERS[j % len(MARKERS)]})
                             for j in range(nl)], loc="best")
    _run_legend(fig, [r for _, r in runs])
    return fig, data


def fig_effective_rank(runs):
    runs = [(i, r) for i, r in runs if r.response is not None and "effective_rank" in r.response]
    if not runs:
        return None
    has_pr = any("participation_ratio" in r.response for _, r in runs)
    fig, axes = _new_figure(2 if has_pr else 1)
    data: Dict[str, Any] = {}
    nl = 0
    steps = []
    for a, key in enumerate(["effective_rank"] + (["participation_ratio"] if has_pr else [])):
        ax = axes[0, a]
        for i, r in runs:
            if key not in r.response:
                continue
            v = r.response.cols[key]
            nl = max(nl, v.shape[1])
            for j in range(v.shape[1]):
                _plot(ax, data, r.name, f"{key}{j + 1}", r.response.steps, v[:, j], color=_colour(i),
                      ls=LINESTYLES[j % len(LINESTYLES)], marker=MARKERS[j % len(MARKERS)])
            steps.append(r.response.steps)
        ax.set_ylabel("effective rank $\\exp(-\\sum p \\ln p)$" if key == "effective_rank"
                      else r"participation ratio $(\sum s^2)^2 / \sum s^4$")
        ax.set_title("Effective rank of the features" if key == "effective_rank" else "Participation ratio")
        _step_axis(ax, steps)
    _series_legend(axes[0, 0], [(f"hidden layer {j + 1}", {"ls": LINESTYLES[j % len(LINESTYLES)],
                                                           "marker": MARKERS[j % len(MARKERS)]}) for j in range(nl)],
                   loc="best")
    _run_legend(fig, [r for _, r in runs])
    return fig, data


# The figures in page order: (key, title, function).
FIGURES: List[Tuple[str, str, Callable]] = [
    ("loss", "Loss and accuracy", fig_loss),
    ("ntk_eigenvalues", "NTK top eigenvalues", fig_ntk_eigenvalues),
    ("ntk_energy", "NTK: target energy in the top eigenvectors", fig_ntk_energy),
    ("ntk_alignment", "NTK: kernel-target alignment", fig_ntk_alignment),
    ("ntk_distance", "NTK: kernel distance to initialization and kernel velocity", fig_ntk_distance),
    ("hessian", "Curvature: top Hessian eigenvalue and trace", fig_hessian),
    ("hessian_density", "Curvature: Hessian spectral density (SLQ)", fig_hessian_density),
    ("lc", "Linear regions: local complexity", fig_lc),
    ("region_maps", "Linear regions: region maps", fig_region_maps),
    ("llc", "Local learning coefficient", fig_llc),
    ("llc_traces", "LLC: the chains' loss traces", fig_llc_traces),
    ("elasticity_matrices", "Elasticity: class-pair matrices", fig_elasticity_matrices),
    ("elasticity_ratio", "Elasticity: within and across classes", fig_elasticity_ratio),
    ("response", "Training response", fig_response),
    ("effective_rank", "Feature effective rank", fig_effective_rank),
]
