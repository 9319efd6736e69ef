"""``dynascope.report``: figures of every diagnostic a run folder holds, on one HTML page.

``python -m dynascope report DIR [DIR2 ...] [--out OUT] [--format png,svg,pdf] [--overwrite]`` and
``dynascope.report(dirs, out=None, formats=("png",))`` read run folders written by ``dynascope demo``,
``dynascope train`` and the Python ``Tracker`` and write ``OUT/index.html`` (default ``DIR/report``, DIR
the first folder) with one PNG per figure next to it. Several folders overlay on the same axes, one
colour per run. The folder is written whole or not at all: everything goes to a temporary folder
beside OUT that is renamed into place at the end and removed on any error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import math
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from ._core import InvalidArgument
from ._report_data import RUN_FILES, Run, fit_power_law, read_run

__all__ = ["report"]

FORMATS = ("png", "svg", "pdf")
_GENERATOR = "dynascope report"


def _import_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise InvalidArgument("the report needs matplotlib, which is not installed: on Debian/Ubuntu "
                              "`apt-get install python3-matplotlib`, otherwise `pip install matplotlib`") from None


def _names(dirs: Sequence[str]) -> List[str]:
    """Run names: the folder names, with the parent folder where two are the same."""
    paths = [os.path.abspath(d) for d in dirs]
    names = [os.path.basename(p) or p for p in paths]
    dup = [names.count(n) > 1 for n in names]
    for i, n in enumerate(names):
        if dup[i]:
            names[i] = os.path.join(os.path.basename(os.path.dirname(paths[i])), n)
    seen: Dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n} ({seen[n]})"
    return names


def _is_our_report(path: str) -> bool:
    if not os.path.isdir(path):
        return False
    entries = os.listdir(path)
    if not entries:
        return True
    index = os.path.join(path, "index.html")
    if not os.path.isfile(index):
        return False
    with open(index, "rb") as f:
        head = f.read(4096).decode("utf-8", "replace")
    return f'name="generator" content="{_GENERATOR}' in head


def _parse_formats(formats: Union[str, Iterable[str]]) -> List[str]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",")]
    out = []
    for f in formats:
        f = str(f).strip().lower()
        if f not in FORMATS:
            raise InvalidArgument(f"formats: {f!r} is not a figure format (expected a list of {', '.join(FORMATS)})")
        if f not in out:
            out.append(f)
    if not out:
        raise InvalidArgument(f"formats: empty (expected a list of {', '.join(FORMATS)})")
    if "png" not in out:
        out.insert(0, "png")  # the page shows the PNGs
    return out


def build_figures(runs: Sequence[Run]):
    """Every figure the runs hold data for, in page order: a list of FigureResult."""
    _import_matplotlib()
    import matplotlib
    from ._report_figures import FIGURES, STYLE, FigureResult
    indexed = list(enumerate(runs))
    out = []
    with matplotlib.rc_context(STYLE):
        for key, title, fn in FIGURES:
            res = fn(indexed)
            if res is None:
                continue
            fig, data = res
            out.append(FigureResult(key, title, caption(key, runs), fig, data))
    return out


def report(dirs: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]], out: Optional[Union[str, os.PathLike]] = None,
           formats: Union[str, Sequence[str]] = ("png",), overwrite: bool = False) -> str:
    """Writes the report of one or several run folders and returns the path of its index.html.

    ``dirs``: a run folder or a list of them (overlaid, one colour per run, named by their folders).
    ``out``: the report folder (default ``<first dir>/report``). ``formats``: ``png`` always (the page
    shows it), plus ``svg`` and/or ``pdf`` copies of every figure. An existing ``out`` is refused unless
    ``overwrite`` (and then only when it is an earlier report or empty).
    """
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    dirs = [os.fspath(d) for d in dirs]
    if not dirs:
        raise InvalidArgument("dirs: no run folder given")
    fmts = _parse_formats(formats)
    out = os.path.abspath(os.fspath(out) if out is not None else os.path.join(dirs[0], "report"))
    if os.path.lexists(out):
        if not overwrite:
            raise InvalidArgument(f"{out}: already exists (an earlier report?): pass --overwrite (overwrite=True) "
                                  "to replace it")
        if not _is_our_report(out):
            raise InvalidArgument(f"{out}: exists and is not a report this command wrote (no index.html of "
                                  "its own): refusing to replace it")
    runs = [read_run(d, n) for d, n in zip(dirs, _names(dirs))]   # every file read before anything is written
    _import_matplotlib()
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".report-tmp-", dir=parent)
    old = None
    try:
        figures = build_figures(runs)
        for f in figures:
            for fmt in fmts:
                f.figure.savefig(os.path.join(tmp, f"{f.key}.{fmt}"), format=fmt, bbox_inches="tight", pad_inches=0.08,
                                 metadata=None if fmt == "png" else {"Creator": _GENERATOR})
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as fh:
            fh.write(page(runs, figures, fmts))
        os.chmod(tmp, 0o755)
        if os.path.lexists(out):
            old = tempfile.mkdtemp(prefix=".report-old-", dir=parent)
            os.rmdir(old)
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                old = None
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(out, "index.html")


# -- captions -----------------------------------------------------------------------------------


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _g(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _per_run(runs: Sequence[Run], fn) -> str:
    """fn(run) -> text or None for each run; prefixed by the run's name when there are several."""
    parts = []
    for r in runs:
        t = fn(r)
        if t:
            parts.append((f"<b>{_e(r.name)}</b>: " if len(runs) > 1 else "") + t)
    return " ".join(parts)


def _training(r: Run) -> Optional[str]:
    c = r.meta.get("config") if isinstance(r.meta.get("config"), dict) else {}
    bits = []
    opt = c.get("optimizer")
    if isinstance(opt, dict) and opt.get("kind"):
        bits.append(f"{_e(opt['kind'])} (lr {_e(_g(opt.get('lr')))})")
    sched = c.get("schedule") if isinstance(c.get("schedule"), dict) else {}
    if sched.get("steps") is not None:
        bits.append(f"{_e(sched['steps'])} steps")
    if sched.get("batch") is not None:
        bits.append("full batch" if sched["batch"] == 0 else f"batch {_e(sched['batch'])}")
    if r.meta.get("train_samples"):
        bits.append(f"{_e(r.meta['train_samples'])} training samples")
    if r.meta.get("test_samples"):
        bits.append(f"{_e(r.meta['test_samples'])} test samples")
    if c.get("seed") is not None:
        bits.append(f"seed {_e(c['seed'])}")
    return ", ".join(bits) + "." if bits else None


def _ntk_detail(r: Run) -> Optional[str]:
    m = r.meta.get("ntk") if isinstance(r.meta.get("ntk"), dict) else {}
    n = m.get("samples")
    if n is None and r.ntk is not None and "samples" in r.ntk:
        n = int(np.nanmax(r.ntk.cols["samples"]))
    bits = []
    if n:
        bits.append(f"kernel on the first {_e(n)} training samples")
    outs = m.get("outputs") or _dig(m, "options", "outputs")
    bits.append(f"outputs {_e(outs)}" if outs else "trace over the outputs")
    meth = None
    cps = r.meta.get("checkpoints")
    if isinstance(cps, list) and cps and isinstance(_dig(cps[-1], "ntk", "eigen"), dict):
        meth = cps[-1]["ntk"]["eigen"].get("method")
    if meth:
        bits.append(f"eigenvalues by the {_e(meth)} method")
    return ", ".join(bits) + "."


def _hessian_detail(r: Run) -> Optional[str]:
    m = r.meta.get("hessian") if isinstance(r.meta.get("hessian"), dict) else {}
    if isinstance(m.get("note"), str):
        return _e(m["note"][0].upper() + m["note"][1:]) + "."
    opts = m.get("options") if isinstance(m.get("options"), dict) else {}
    bits = [f"{_e(opts.get('curvature', 'hessian'))} operator on "
            f"{_e(m.get('samples') or r.meta.get('train_samples') or 'all')} training samples",
            f"top-{_e(opts.get('k', 3))} eigenvalues"]
    return ", ".join(bits) + " (the Tracker's hessian measure)."


def _density_detail(r: Run) -> Optional[str]:
    d = _dig(r.meta, "hessian", "density")
    bits = []
    if isinstance(d, dict):
        if d.get("steps") is not None:
            bits.append(f"{_e(d['steps'])} Lanczos steps")
        if d.get("probes") is not None:
            bits.append(f"{_e(d['probes'])} random probe vectors")
        if d.get("grid") is not None:
            bits.append(f"{_e(d['grid'])} grid points")
        if d.get("sigma") is not None:
            bits.append(f"Gaussian broadening &sigma; = {_e(_g(d['sigma']))}")
        if d.get("seed") is not None:
            bits.append(f"seed {_e(d['seed'])}")
    if r.density:
        bits.append(f"{len(r.density)} checkpoints")
    if isinstance(d, dict) and isinstance(d.get("note"), str):
        bits.append(_e(d["note"]))
    return ("Stochastic Lanczos quadrature: " + ", ".join(bits) + ".") if bits else None


def _lc_detail(r: Run) -> Optional[str]:
    m = r.meta.get("local_complexity") if isinstance(r.meta.get("local_complexity"), dict) else {}
    if not m:
        m = r.meta.get("lc") if isinstance(r.meta.get("lc"), dict) else {}
    opts = m.get("options") if isinstance(m.get("options"), dict) else m
    bits = []
    if opts.get("radius") is not None:
        bits.append(f"radius {_e(_g(float(opts['radius'])))}")
        if m.get("radius_source"):
            bits[-1] += f" ({_e(m['radius_source'])})"
    if opts.get("dims") is not None:
        bits.append(f"{_e(opts['dims'])} directions")
    if isinstance(m.get("samples"), dict):
        bits.append(", ".join(f"{_e(v)} {_e(k)} points" for k, v in m["samples"].items()))
    if m.get("seed") is not None:
        bits.append(f"seed {_e(m['seed'])}")
    return ", ".join(bits) + "." if bits else None


def _llc_detail(r: Run) -> Optional[str]:
    m = r.meta.get("llc") if isinstance(r.meta.get("llc"), dict) else {}
    o = m.get("options") if isinstance(m.get("options"), dict) else {}
    bits = []
    if o.get("chains") is not None:
        bits.append(f"{_e(o['chains'])} chains")
    elif r.llc is not None and "chains" in r.llc:
        bits.append(f"{int(np.nanmax(r.llc.cols['chains']))} chains")
    if o.get("draws") is not None:
        bits.append(f"{_e(o['draws'])} draws after {_e(o.get('burnin', '?'))} burn-in steps")
    for k, label in (("sampler", "sampler"), ("epsilon", "&epsilon;"), ("gamma", "&gamma;"), ("seed", "seed")):
        if o.get(k) is not None:
            bits.append(f"{label} {_e(_g(o[k]))}")
    if r.llc is not None and "llc_stderr" in r.llc:
        bits.append("error bars: standard error over the chains (std / &radic;chains)")
    if r.llc is not None and "r_hat" in r.llc:
        rh = r.llc.cols["r_hat"]
        bad = [int(s) for s, v in zip(r.llc.steps, rh) if np.isfinite(v) and v > 1.1]
        if bad:
            bits.append(f"<b>R-hat &gt; 1.1 (chains not mixed) at step{'s' if len(bad) > 1 else ''} "
                        f"{', '.join(map(str, bad))}</b>")
    return (", ".join(bits) + ".") if bits else None


def _elasticity_detail(r: Run) -> Optional[str]:
    m = r.meta.get("elasticity") if isinstance(r.meta.get("elasticity"), dict) else {}
    o = m.get("options") if isinstance(m.get("options"), dict) else m
    bits = []
    for k, label in (("metric", "metric"), ("eta", "&eta;"), ("pairs_per_class", "samples per class"),
                     ("samples", "samples"), ("dtype", "precision"), ("seed", "seed")):
        if o.get(k) is not None and not isinstance(o.get(k), (dict, list)):
            bits.append(f"{label} {_e(_g(o[k]))}")
    text = ", ".join(bits) + "." if bits else ""
    # KL elasticities of confident sources run into the millions (their own change, the denominator,
    # scales with the probability left to the other classes): say so where the matrices show it.
    largest = max((float(np.nanmax(mat)) for _, _, mat in (r.elasticity_matrices or [])
                   if np.isfinite(mat).any()), default=0.0)
    if o.get("metric") == "kl" and largest > 100:
        text += (f" Entries reach {_e(_g(largest))}: with the KL metric a source the network already fits with "
                 "confidence changes its own prediction very little, so the ratio of a target's change to it is "
                 "large; the within/across ratio is the number to compare.")
    return text.strip() or None


def _response_detail(r: Run) -> Optional[str]:
    m = r.meta.get("response") if isinstance(r.meta.get("response"), dict) else {}
    bits = []
    o = m.get("options") if isinstance(m.get("options"), dict) else m
    for k, label in (("samples", "samples"), ("eta", "&eta;"), ("dtype", "precision")):
        if o.get(k) is not None and not isinstance(o.get(k), (dict, list)):
            bits.append(f"{label} {_e(_g(o[k]))}")
    fit = r.response_fit
    if fit is None and r.response is not None:
        fit = fit_power_law(r.response.steps.astype(float), r.response.cols["mean_diagonal"])
    if fit:
        t = f"&beta; = {_e(_g(fit['beta']))}"
        if "beta_ci" in fit and np.size(fit["beta_ci"]) == 2:
            conf = fit.get("confidence", 0.95)
            t += f" ({_e(_g(100 * conf, 3))}% interval {_e(_g(fit['beta_ci'][0]))} .. {_e(_g(fit['beta_ci'][1]))})"
        if fit.get("r_squared") is not None and math.isfinite(fit["r_squared"]):
            t += f", R&sup2; = {_e(_g(fit['r_squared']))}"
        if fit.get("points") is not None:
            t += f", {int(fit['points'])} checkpoints"
        t += " (" + ("fit recorded in report.json" if fit.get("source") == "report.json"
                     else "least squares fitted by the report: report.json holds no fit") + ")"
        bits.append(t)
    return ", ".join(bits) + "." if bits else None


_CAPTIONS = {
    "loss": ("Loss (log scale when it spans decades) and accuracy along training, steps on a log axis (linear "
             "between 0 and the first step). Line: "
             "<code>train.csv</code>, the loss of the batch each update was computed from (with a full batch, "
             "the training loss) at every step. Markers: at each checkpoint, report.json's evaluation on the "
             "training set (filled) and on the held-out test set (open).", _training),
    "ntk_eigenvalues": ("Top eigenvalues &lambda;<sub>1</sub> &ge; &lambda;<sub>2</sub> &ge; &hellip; of the "
                        "empirical neural tangent kernel at each checkpoint (log scale when they span decades).",
                        _ntk_detail),
    "ntk_energy": ("E<sub>k</sub>(y): the share of the centred targets' energy (one-hot for classes) in the top-k "
                   "eigenvectors of the NTK, for several k. Rising E<sub>k</sub> means the kernel's leading "
                   "directions align with the task.", _ntk_detail),
    "ntk_alignment": ("Kernel-target alignment &lang;K, yy<sup>T</sup>&rang; / (&Vert;K&Vert; "
                      "&Vert;yy<sup>T</sup>&Vert;), with the kernel and targets centred (left) and uncentred "
                      "(right).", _ntk_detail),
    "ntk_distance": ("Kernel distance S(K, K') = 1 &minus; &lang;K, K'&rang; / (&Vert;K&Vert; &Vert;K'&Vert;): to "
                     "the first checkpoint's kernel (left), and between consecutive checkpoints' kernels, the "
                     "kernel velocity (right; none at the first checkpoint).", _ntk_detail),
    "hessian": ("Sharpness: the largest eigenvalue of the training loss Hessian (left) and its trace (right) at "
                "each checkpoint (log scale when they span decades).", _hessian_detail),
    "hessian_density": ("Spectral density of the training loss Hessian at each checkpoint: a heat map over "
                        "checkpoints (columns) and eigenvalues &lambda; (rows) of each checkpoint's mass in 150 "
                        "&lambda; bins shared by all checkpoints (the integral of its density over the bin, "
                        "divided by the bin width), log colour scale floored at 10<sup>&minus;4</sup> of the "
                        "maximum (left); the densities of the first and last checkpoints on a log axis (right).",
                        _density_detail),
    "lc": ("Local complexity (Humayun, Balestriero &amp; Baraniuk): at each point, the number of neurons whose "
           "pre-activation sign changes within a small cross-polytope around it, averaged over the training, test "
           "and random points (left, hidden layers summed) and per linear layer on the training points (right); "
           "steps on a log axis when the checkpoints span a decade or more, so that the early and late phases "
           "both show.", _lc_detail),
    "region_maps": ("The network's linear regions on a 2-D slice of input space at the first and last checkpoint "
                    "(drawn by the demo, <code>region_map_first.png</code> / <code>region_map_last.png</code>): "
                    "regions shaded by their predicted class, their edges, the decision boundary in black and "
                    "the training points coloured by class.", None),
    "llc": ("Local learning coefficient (Lau, Furman, Wang, Murfet, Wei) at each checkpoint: &lambda;&#770; = "
            "n&beta; (E[L<sub>B</sub>(w)] &minus; L<sub>n</sub>(w*)) over SGLD chains localized at the checkpoint's "
            "weights w*.", _llc_detail),
    "llc_traces": ("The loss L<sub>B</sub>(w) of each SGLD chain at every draw, at the last LLC checkpoint, with "
                   "the loss at the checkpoint's weights w* (dashed). Chains that settle above the dashed line are "
                   "well calibrated; chains below it mean w* is not a local minimum or the localization &gamma; is "
                   "too weak; chains that drift or diverge mean the step size &epsilon; is too large.", _llc_detail),
    "elasticity_matrices": ("Local elasticity (He &amp; Su) between classes at the first and last checkpoint: entry "
                            "(a, b) is the mean relative change at samples of class b of one SGD step on a sample "
                            "of class a (log colour scale when it spans decades).", _elasticity_detail),
    "elasticity_ratio": ("Mean relative elasticity within a class (diagonal of the class-pair matrix) and across "
                         "classes (off-diagonal) at each checkpoint (left), and their ratio (right; above 1, a step "
                         "moves its own class more).", _elasticity_detail),
    "response": ("Training response (Nakazato) R(x', x): how much one SGD step on x moves the output at x', "
                 "normalised by the step; diagonal and off-diagonal means on log-log axes with the fitted power law "
                 "R = A t<sup>&minus;&beta;</sup> (&beta; &gt; 0: aging, the response slows; &beta; &lt; 0: it "
                 "grows), and the diagonal response of each layer's share of the NTK (right).", _response_detail),
    "effective_rank": ("Effective rank exp(&minus;&Sigma; p ln p) of each hidden layer's features over the sampled "
                       "training points (p: the normalised singular values) and their participation ratio "
                       "(&Sigma; s<sup>2</sup>)<sup>2</sup> / &Sigma; s<sup>4</sup>, at each checkpoint.",
                       _response_detail),
}


def caption(key: str, runs: Sequence[Run]) -> str:
    text, detail = _CAPTIONS[key]
    if detail is not None:
        d = _per_run(runs, detail)
        if d:
            text += " " + d
    if len(runs) > 1:
        text += " One colour per run."
    return text


# -- the page -----------------------------------------------------------------------------------


def _flatten(d: Any, prefix: str = "") -> Dict[str, str]:
    out: Dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and all(isinstance(x, (int, float, str, bool)) or x is None for x in d):
        out[prefix] = ", ".join(_g(x, 6) if isinstance(x, float) else str(x) for x in d)
    elif isinstance(d, list):
        out[prefix] = json.dumps(d)[:200]
    else:
        out[prefix] = _g(d, 6) if isinstance(d, float) else ("" if d is None else str(d))
    return out


def _config_rows(r: Run) -> Dict[str, str]:
    c = r.meta.get("config")
    rows = _flatten(c) if isinstance(c, dict) else {}
    for k in ("dataset", "train_samples", "test_samples", "steps", "diverged", "diverged_at_step", "finished",
              "seconds"):
        if k in r.meta and not isinstance(r.meta[k], (dict, list)):
            rows[f"run.{k}"] = _g(r.meta[k], 4) if isinstance(r.meta[k], float) else str(r.meta[k])
    if not rows:
        rows["files"] = ", ".join(f for f in RUN_FILES if os.path.isfile(r.file(f)))
    return rows


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.2em 1.5em 3em; color: #222; line-height: 1.45; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #555; margin-top: 0; }
nav ol { columns: 2; font-size: 0.95em; }
figure { margin: 0.6em 0 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.92em; color: #333; margin-top: 0.4em; }
.downloads { font-size: 0.85em; color: #666; }
table { border-collapse: collapse; font-size: 0.88em; margin-top: 0.5em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.key { font-family: monospace; white-space: nowrap; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; margin-right: 0.35em;
          vertical-align: -0.1em; }
footer { margin-top: 3em; font-size: 0.8em; color: #777; }
"""

# Records on the page whether every image loaded (read by the browser test: body[data-images]).
_SCRIPT = """
window.addEventListener("load", function () {
  var bad = 0;
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (!(img.complete && img.naturalWidth > 0)) bad++;
  }
  document.body.dataset.images = bad ? "failed:" + bad : "ok";
});
"""


def page(runs: Sequence[Run], figures, formats: Sequence[str]) -> str:
    from ._report_figures import RUN_COLOURS
    try:
        from . import __version__ as version
    except ImportError:  # pragma: no cover
        version = "?"
    title = "dynascope report: " + ", ".join(r.name for r in runs)
    h = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
         f'<meta name="generator" content="{_GENERATOR} {_e(version)}">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", f"<script>{_SCRIPT}</script>", "</head>",
         "<body>", f"<h1>{_e(title)}</h1>"]
    # One line per run: colour, folder, network, data.
    lines = []
    for i, r in enumerate(runs):
        net = r.meta.get("network") if isinstance(r.meta.get("network"), dict) else {}
        bits = []
        if net.get("arch"):
            bits.append(f"MLP {_e(net['arch'])}")
            if net.get("activations"):
                bits[-1] += f" ({_e(', '.join(map(str, net['activations'])))})"
        elif net.get("class"):
            bits.append(_e(net["class"]))
        if net.get("parameters"):
            bits.append(f"{_e(net['parameters'])} parameters")
        if r.meta.get("dataset"):
            bits.append(f"data {_e(r.meta['dataset'])}")
        if r.meta.get("steps") is not None:
            bits.append(f"{_e(r.meta['steps'])} steps")
        if r.meta.get("diverged"):
            bits.append("<b>diverged</b>" + (f" at step {_e(r.meta.get('diverged_at_step'))}"
                                             if r.meta.get("diverged_at_step") is not None else ""))
        swatch = (f'<span class="swatch" style="background:{RUN_COLOURS[i % len(RUN_COLOURS)]}"></span>'
                  if len(runs) > 1 else "")
        lines.append(f"<li>{swatch}<b>{_e(r.name)}</b> <span class=\"sub\">({_e(os.path.abspath(r.path))})</span>"
                     + (": " + ", ".join(bits) if bits else "") + "</li>")
    h.append('<ul class="runs">' + "".join(lines) + "</ul>")
    if not figures:
        h.append("<p>The run folder holds no diagnostic this report draws (train.csv, report.json, lc.csv, "
                 "llc.csv, elasticity.csv, response.csv, ntk.csv, hessian.csv, ...).</p>")
    else:
        h.append("<nav><ol>" + "".join(f'<li><a href="#{f.key}">{_e(f.title)}</a></li>' for f in figures)
                 + '<li><a href="#configuration">Configuration</a></li></ol></nav>')
    for f in figures:
        other = [fmt for fmt in formats if fmt != "png"]
        links = ""
        if other:
            links = ('<div class="downloads">also as ' + ", ".join(
                f'<a href="{_e(f.key)}.{fmt}">{fmt.upper()}</a>' for fmt in other) + "</div>")
        h.append(f'<section id="{_e(f.key)}"><h2>{_e(f.title)}</h2><figure>'
                 f'<img src="{_e(f.key)}.png" alt="{_e(f.title)}">'
                 f"<figcaption>{f.caption}</figcaption></figure>{links}</section>")
    # Configuration: one column per run.
    rows = [_config_rows(r) for r in runs]
    keys: List[str] = []
    for rr in rows:
        keys += [k for k in rr if k not in keys]
    h.append('<section id="configuration"><h2>Configuration</h2>')
    h.append("<table><tr><th>setting</th>" + "".join(f"<th>{_e(r.name)}</th>" for r in runs) + "</tr>")
    for k in keys:
        h.append(f'<tr><td class="key">{_e(k)}</td>' + "".join(f"<td>{_e(rr.get(k, ''))}</td>" for rr in rows)
                 + "</tr>")
    h.append("</table></section>")
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    h.append(f"<footer>Written by <code>python -m dynascope report</code> (dynascope {_e(version)}) on {_e(now)} "
             f"from {', '.join('<code>' + _e(os.path.abspath(r.path)) + '</code>' for r in runs)}.</footer>")
    h.append("</body></html>")
    return "\n".join(h) + "\n"


# -- command line -------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m dynascope report") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Figures of every diagnostic a run folder holds, on one "
                                "HTML page: DIR/report/index.html (the first DIR when several; they overlay, "
                                "one colour per run).")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders (dynascope demo/train, the Python Tracker)")
    p.add_argument("--out", metavar="OUT", help="the report folder (default DIR/report)")
    p.add_argument("--format", default="png", metavar="FMT[,FMT]",
                   help="figure formats besides the page's PNGs: png, svg, pdf (comma-separated; default png)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report in OUT")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = p.parse_args(argv)

    def _terminate(signum: int, frame: Any) -> None:   # SIGTERM cleans up as Ctrl-C does
        raise KeyboardInterrupt

    import signal
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        index = report(args.dirs, out=args.out, formats=args.format, overwrite=args.overwrite)
    except InvalidArgument as e:
        # Bad input (a folder, a file, a flag): exit 2, as every command of the command line.
        msg = str(e).replace("formats:", "--format:", 1) if str(e).startswith("formats:") else str(e)
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (no report written)", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not args.quiet:
        print(index)
    return 0
