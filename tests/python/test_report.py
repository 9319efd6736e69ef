"""The report (python -m dynascope report / dynascope._report.report): the figure set follows the files a
run folder holds, the plotted numbers are the files' numbers (read back from the figures' artists), bad
files give errors naming them and leave no report behind, several runs overlay, and the demo's real
folder and a Tracker's folder give a report."""

import csv
import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import dynascope  # noqa: E402
from dynascope import _report, _report_data  # noqa: E402
from dynascope._report_figures import FIGURES, RUN_COLOURS  # noqa: E402

ALL = [k for k, _, _ in FIGURES]
STEPS = [0, 10, 100, 1000]


def _g10(v):
    return "" if v is None or not np.isfinite(v) else "%.10g" % v


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(_g10(v) if not isinstance(v, str) else v for v in r) + "\n")


def _png(path, seed):
    """A small real PNG (written by matplotlib's imsave, independent of the report's figures)."""
    import matplotlib.image as mpimg
    rng = np.random.default_rng(seed)
    mpimg.imsave(path, rng.random((24, 32, 3)))


def make_run(d, parts=("train", "evals", "ntk", "hessian", "density", "lc", "llc", "llc_trace", "elasticity",
                       "elasticity_npy", "response", "response_fit", "region_maps"), seed=0):
    """A run folder holding the given parts, with values from a seeded generator (the demo's layout)."""
    rng = np.random.default_rng(seed)
    d = pathlib.Path(d)
    d.mkdir(parents=True, exist_ok=True)
    meta = {"config": {"command": "demo", "seed": seed, "optimizer": {"kind": "adam", "lr": 0.01},
                       "schedule": {"steps": STEPS[-1], "batch": 0, "save_every": 10}},
            "network": {"arch": "2-8-8-3", "activations": ["relu", "relu"], "parameters": 123},
            "dataset": "synthetic", "train_samples": 64, "test_samples": 16, "steps": STEPS[-1]}
    cps = [{"step": s, "checkpoint": str(d / f"step_{s:07d}.safetensors")} for s in STEPS]
    if "train" in parts:
        steps = np.arange(STEPS[-1] + 1)
        loss = 1.1 * np.exp(-steps / 200.0) + 1e-3 * rng.random(steps.size)
        acc = np.clip(0.3 + steps / 1200.0, 0, 1)
        with open(d / "train.csv", "w") as f:
            f.write("step,loss,accuracy\n")
            for s, l, a in zip(steps, loss, acc):
                f.write(f"{s},{l:.9g},{a:.9g}\n")
    if "evals" in parts:
        for cp in cps:
            cp.update(train_loss=float(rng.random()), test_loss=float(rng.random()),
                      train_accuracy=float(rng.random()), test_accuracy=float(rng.random()))
    if "ntk" in parts:
        meta["ntk"] = {"samples": 32, "outputs": "trace", "k": 5, "energy_ks": [1, 2, 5]}
        for i, cp in enumerate(cps):
            cp["ntk"] = {"eigenvalues": sorted((10 ** rng.uniform(0, 4, 5)).tolist(), reverse=True),
                         "energy": {"1": float(rng.random()), "2": float(rng.random()), "5": float(rng.random())},
                         "kta": float(rng.random()), "kta_centered": float(rng.random()),
                         "distance_to_init": 0.0 if i == 0 else float(rng.random()),
                         "distance_to_previous": None if i == 0 else float(rng.random()),
                         "eigen": {"method": "dense"}}
    if "hessian" in parts:
        meta["hessian"] = {"samples": 64, "note": "exact loss Hessian on the training set"}
        for cp in cps:
            cp["hessian"] = {"top_eigenvalues": sorted(rng.uniform(0.1, 50, 3).tolist(), reverse=True),
                             "trace_hutchpp": float(rng.uniform(1, 100)), "matvecs": 10, "converged": True}
    if "density" in parts:
        meta.setdefault("hessian", {})["density"] = {"steps": 20, "probes": 4, "grid": 50,
                                                     "file": "hessian_density.csv"}
        rows = []
        for s in STEPS:
            lam = np.linspace(-1, 5 + s / 100, 50)
            dens = np.exp(-lam ** 2 * 20) * 5 + 0.01 * np.exp(-(lam - 3) ** 2)
            dens /= np.sum(np.diff(lam) * (dens[1:] + dens[:-1]) / 2)  # unit mass, as SLQ's
            rows += [(s, l, v) for l, v in zip(lam, dens)]
        _write_csv(d / "hessian_density.csv", ["step", "lambda", "density"], rows)
    if "lc" in parts:
        rows = []
        for s in STEPS:
            for p in ("train", "test", "random"):
                lay = rng.uniform(0, 3, 3)
                rows.append([str(s), p, "64", _g10(lay[:2].sum()), _g10(lay.sum())] + [_g10(v) for v in lay])
        with open(d / "lc.csv", "w") as f:
            f.write("step,points,samples,total_mean,all_layers_mean,layer1,layer2,layer3\n")
            f.writelines(",".join(r) + "\n" for r in rows)
    if "llc" in parts:
        meta["llc"] = {"options": {"chains": 4, "draws": 30, "burnin": 30, "epsilon": 1e-4, "gamma": 100.0,
                                   "seed": 0, "sampler": "sgld"}}
        with open(d / "llc.csv", "w") as f:
            f.write("step,llc_mean,llc_stderr,r_hat,llc_std,ess,mala_acceptance,init_loss,nbeta,chains,"
                    "diverged_chains,warnings\n")
            for s in STEPS[::2] + [STEPS[-1]]:
                f.write(f"{s},{_g10(rng.normal(3, 1))},{_g10(rng.uniform(0.1, 0.5))},{_g10(rng.uniform(1, 1.3))},"
                        f"0.5,20,0.9,{_g10(rng.uniform(0.1, 1))},10,4,0,\"a warning, with a comma\"\n")
    if "llc_trace" in parts:
        np.save(d / "llc_trace_last.npy", rng.normal(0.5, 0.01, (4, 30)))
        meta.setdefault("llc", {}).update(trace_file="llc_trace_last.npy", trace_step=STEPS[-1])
    if "elasticity" in parts:
        _write_csv(d / "elasticity.csv", ["step", "checkpoint", "mean", "within_class", "across_class", "ratio",
                                          "undefined_sources"],
                   [(s, "ck", *(10 ** rng.uniform(-1, 6, 4)), 0) for s in STEPS])
    if "elasticity_npy" in parts:
        np.save(d / "elasticity_first.npy", rng.uniform(0.5, 1, (3, 3)))
        np.save(d / "elasticity_last.npy", 10 ** rng.uniform(1, 6, (3, 3)))
        meta.setdefault("elasticity", {}).update(first={"step": STEPS[0]}, last={"step": STEPS[-1]})
    if "response" in parts:
        hdr = ["step", "checkpoint", "mean_diagonal", "mean_off_diagonal", "layer1_diagonal", "layer1_off_diagonal",
               "layer2_diagonal", "layer2_off_diagonal", "effective_rank1", "participation_ratio1", "dead1",
               "duplicated1", "input_grad_norm"]
        _write_csv(d / "response.csv", hdr, [(s, "ck", *rng.uniform(1, 100, 6), *rng.uniform(1, 8, 2), 0, 0, 1.0)
                                             for s in STEPS])
    if "response_fit" in parts:
        meta["response"] = {"fit_to": "mean_diagonal", "beta": 0.4, "beta_ci": [0.3, 0.5], "amplitude": 50.0,
                            "r_squared": 0.9, "fit_window": [10.0, 1000.0], "points": 3, "confidence": 0.95,
                            "layers": [{"layer": 1, "beta": 0.3, "amplitude": 20.0},
                                       {"layer": 2, "beta": 0.5, "amplitude": 30.0}]}
    if "region_maps" in parts:
        _png(d / "region_map_first.png", seed)
        _png(d / "region_map_last.png", seed + 1)
        meta["region_maps"] = {"first": {"step": 0, "regions": 120, "exact": True},
                               "last": {"step": STEPS[-1], "regions": 340, "exact": True}}
    if any(isinstance(v, dict) for cp in cps for v in cp.values()) or "evals" in parts:
        meta["checkpoints"] = cps
    with open(d / "report.json", "w") as f:
        json.dump(meta, f)
    return d


def _csv_cols(path):
    """An independent reader: csv.DictReader, floats ('' is NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    def col(name, where=None):
        return np.array([float(r[name]) if r[name] != "" else np.nan for r in rows if where is None or where(r)])
    return col


def _lines(fig):
    """{gid: (x, y)} of every line of the figure, read back from the artists."""
    out = {}
    for ax in fig.axes:
        for line in ax.lines:
            if line.get_gid():
                out[line.get_gid()] = (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
    return out


def _figures(dirs):
    runs = [_report_data.read_run(str(d), n) for d, n in zip(dirs, _report._names([str(d) for d in dirs]))]
    return {f.key: f for f in _report.build_figures(runs)}


def _assert_no_leftovers(parent):
    assert not [p for p in os.listdir(parent) if p.startswith(".report-")], os.listdir(parent)


# -- figure sets --------------------------------------------------------------------------------


def test_full_run_has_every_figure_and_page(tmp_path):
    run = make_run(tmp_path / "run")
    index = _report.report(str(run))
    assert index == str(run / "report" / "index.html")
    files = sorted(os.listdir(run / "report"))
    assert files == sorted(["index.html"] + [f"{k}.png" for k in ALL])
    page = (run / "report" / "index.html").read_text()
    for k in ALL:
        assert f'<img src="{k}.png"' in page and f'<section id="{k}">' in page
    assert page.count("<img ") == len(ALL)
    assert "document.body.dataset.images" in page
    # The configuration table and the captions' details from report.json.
    assert "optimizer.kind" in page and "adam" in page
    assert "4 chains" in page and "30 draws after 30 burn-in steps" in page
    assert "20 Lanczos steps" in page and "4 random probe vectors" in page
    assert "&beta; = 0.4 (95% interval 0.3 .. 0.5)" in page
    for name in ALL:
        with open(run / "report" / f"{name}.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    _assert_no_leftovers(run)


PARTIAL = [
    (("train",), {"loss"}),
    (("evals",), {"loss"}),
    (("ntk",), {"ntk_eigenvalues", "ntk_energy", "ntk_alignment", "ntk_distance"}),
    (("hessian",), {"hessian"}),
    (("density",), {"hessian_density"}),
    (("lc",), {"lc"}),
    (("llc",), {"llc"}),
    (("llc", "llc_trace"), {"llc", "llc_traces"}),
    (("elasticity",), {"elasticity_ratio"}),
    (("elasticity_npy",), {"elasticity_matrices"}),
    (("response",), {"response", "effective_rank"}),
    (("region_maps",), {"region_maps"}),
    (("train", "lc", "llc"), {"loss", "lc", "llc"}),
]


@pytest.mark.parametrize("parts,expected", PARTIAL, ids=["+".join(p) for p, _ in PARTIAL])
def test_partial_run_gives_only_its_figures(tmp_path, parts, expected):
    run = make_run(tmp_path / "run", parts)
    assert set(_figures([run])) == expected


def test_partial_run_page_lists_only_its_figures(tmp_path):
    run = make_run(tmp_path / "run", ("train", "llc"))
    _report.report(str(run))
    assert sorted(os.listdir(run / "report")) == ["index.html", "llc.png", "loss.png"]
    page = (run / "report" / "index.html").read_text()
    assert page.count("<img ") == 2


def test_tracker_style_csvs(tmp_path):
    """ntk.csv and hessian.csv (the Tracker's files, no report.json rows) give the NTK and Hessian figures."""
    d = tmp_path / "t"
    d.mkdir()
    _write_csv(d / "ntk.csv", ["step", "samples", "trace", "frobenius", "eigenvalues1", "eigenvalues2", "kta",
                               "kta_centered", "distance_to_init"],
               [(0, 64, 10, 5, 4.0, 2.0, 0.5, 0.1, 0.0), (50, 64, 11, 6, 5.0, 2.5, 0.6, 0.2, 0.01)])
    _write_csv(d / "hessian.csv", ["step", "top_eigenvalues1", "top_eigenvalues2", "matvecs", "converged"],
               [(0, 3.0, 1.0, 10, 1), (50, 4.0, 1.5, 10, 1)])
    figs = _figures([d])
    assert set(figs) == {"ntk_eigenvalues", "ntk_alignment", "ntk_distance", "hessian"}
    lines = _lines(figs["ntk_eigenvalues"].figure)
    np.testing.assert_array_equal(lines["t|lambda2"][1], [2.0, 2.5])
    np.testing.assert_array_equal(_lines(figs["hessian"].figure)["t|lambda_max"][1], [3.0, 4.0])
    assert "t|trace" not in _lines(figs["hessian"].figure)


def test_empty_folder_and_missing_folder_are_errors(tmp_path):
    with pytest.raises(dynascope.InvalidArgument, match="holds no run"):
        _report.report(str(tmp_path))
    with pytest.raises(dynascope.InvalidArgument, match="not a folder"):
        _report.report(str(tmp_path / "nope"))
    assert not (tmp_path / "report").exists()


# -- the plotted numbers are the files' numbers ------------------------------------------------


def test_step_axes_go_log_for_checkpoints_spanning_decades_and_ek_colours_follow_k(tmp_path):
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    def energy_axes(runs):
        fig = _figures(runs)["ntk_energy"].figure
        ax = fig.axes[0]
        return ax, {line.get_gid(): to_hex(line.get_color()) for line in ax.lines if line.get_gid()}

    log_run = make_run(tmp_path / "log", parts=("ntk",))          # steps 0, 10, 100, 1000
    even_run = make_run(tmp_path / "even", parts=("ntk",), seed=1)
    meta = json.loads((even_run / "report.json").read_text())
    for c, s in zip(meta["checkpoints"], [0, 100, 200, 300]):   # evenly spaced: a linear axis
        c["step"] = s
    (even_run / "report.json").write_text(json.dumps(meta))
    ax, colours = energy_axes([log_run])
    assert ax.get_xscale() == "symlog"
    # One run: a colour per k along viridis, in k order.
    viridis = colormaps["viridis"]
    assert colours == {f"log|E_{k}": to_hex(viridis(0.85 * j / 2)) for j, k in enumerate([1, 2, 5])}
    ax, colours = energy_axes([even_run])
    assert ax.get_xscale() == "linear"
    # Several runs: a colour per run (the first run's colour in every figure), a style per k.
    ax, colours = energy_axes([log_run, even_run])
    assert ax.get_xscale() == "symlog"
    assert set(colours.values()) == {to_hex(c) for c in RUN_COLOURS[:2]}
    assert all(colours[f"log|E_{k}"] == to_hex(RUN_COLOURS[0]) for k in (1, 2, 5))


def test_kl_elasticity_captions_explain_huge_entries(tmp_path):
    # KL elasticities of confident sources reach millions: the caption says why, with the largest
    # entry; small entries or another metric get no such sentence.
    def captions(name, metric, scale):
        run = make_run(tmp_path / name, parts=("train", "elasticity", "elasticity_npy"))
        np.save(run / "elasticity_last.npy", np.array([[1.0, 2.0], [np.nan, scale]]))
        meta = json.loads((run / "report.json").read_text())
        meta["elasticity"]["metric"] = metric
        (run / "report.json").write_text(json.dumps(meta))
        figs = _figures([run])
        return figs["elasticity_matrices"].caption, figs["elasticity_ratio"].caption

    for caption in captions("big", "kl", 2.5e6):
        assert "Entries reach 2.5e+06: with the KL metric" in caption
    for name, metric, scale in (("small", "kl", 50.0), ("abs", "abs", 2.5e6)):
        for caption in captions(name, metric, scale):
            assert "Entries reach" not in caption and "KL metric" not in caption


def test_plotted_data_equals_files(tmp_path):
    run = make_run(tmp_path / "run")
    figs = _figures([run])
    meta = json.loads((run / "report.json").read_text())
    cps = meta["checkpoints"]
    steps = np.array([c["step"] for c in cps], float)
    n = "run"

    train = _csv_cols(run / "train.csv")
    L = _lines(figs["loss"].figure)
    np.testing.assert_array_equal(L[f"{n}|train.csv loss"][0], train("step"))
    np.testing.assert_array_equal(L[f"{n}|train.csv loss"][1], train("loss"))
    np.testing.assert_array_equal(L[f"{n}|train.csv accuracy"][1], train("accuracy"))
    for key in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        np.testing.assert_array_equal(L[f"{n}|{key}"][0], steps)
        np.testing.assert_array_equal(L[f"{n}|{key}"][1], [c[key] for c in cps])

    E = _lines(figs["ntk_eigenvalues"].figure)
    for j in range(5):
        np.testing.assert_array_equal(E[f"{n}|lambda{j + 1}"][1], [c["ntk"]["eigenvalues"][j] for c in cps])
    E = _lines(figs["ntk_energy"].figure)
    for k in (1, 2, 5):
        np.testing.assert_array_equal(E[f"{n}|E_{k}"][1], [c["ntk"]["energy"][str(k)] for c in cps])
    E = _lines(figs["ntk_alignment"].figure)
    for key in ("kta", "kta_centered"):
        np.testing.assert_array_equal(E[f"{n}|{key}"][1], [c["ntk"][key] for c in cps])
    E = _lines(figs["ntk_distance"].figure)
    np.testing.assert_array_equal(E[f"{n}|distance_to_init"][1], [c["ntk"]["distance_to_init"] for c in cps])
    # distance_to_previous is null at the first checkpoint: plotted from the second on.
    np.testing.assert_array_equal(E[f"{n}|distance_to_previous"][0], steps[1:])
    np.testing.assert_array_equal(E[f"{n}|distance_to_previous"][1], [c["ntk"]["distance_to_previous"] for c in cps[1:]])

    H = _lines(figs["hessian"].figure)
    np.testing.assert_array_equal(H[f"{n}|lambda_max"][1], [c["hessian"]["top_eigenvalues"][0] for c in cps])
    np.testing.assert_array_equal(H[f"{n}|trace"][1], [c["hessian"]["trace_hutchpp"] for c in cps])

    # The density: the heat map's cells are each checkpoint's mass binned onto one lambda grid (150 bins
    # over the union of the checkpoints' ranges) divided by the bin width, recomputed here bin by bin: the
    # trapezoid rule over the CSV's grid points inside the bin plus the bin's ends (linear interpolation).
    dens = _csv_cols(run / "hessian_density.csv")
    fig = figs["hessian_density"].figure
    meshes = {m.get_gid(): m for ax in fig.axes for m in ax.collections if m.get_gid()}
    assert set(meshes) == {f"{n}|density@{s}" for s in STEPS}
    plotted = figs["hessian_density"].data[f"{n}|density"]
    edges = np.linspace(dens("lambda").min(), dens("lambda").max(), 151)
    np.testing.assert_array_equal(plotted["lambda_edges"], edges)
    want = np.zeros((150, len(STEPS)))
    for j, s in enumerate(STEPS):
        sel = lambda r, s=s: int(r["step"]) == s  # noqa: E731
        lam, d = dens("lambda", sel), dens("density", sel)
        for k in range(150):
            a, b = max(edges[k], lam[0]), min(edges[k + 1], lam[-1])
            if b <= a:
                continue
            x = np.concatenate([[a], lam[(lam > a) & (lam < b)], [b]])
            y = np.interp(x, lam, d)
            want[k, j] = np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (edges[k + 1] - edges[k])
        # Each column holds the checkpoint's whole mass: the integral of its density, 1 up to the CSV's rounding.
        total = np.sum(np.diff(lam) * (d[1:] + d[:-1]) / 2)
        np.testing.assert_allclose(np.sum(want[:, j] * np.diff(edges)), total, rtol=1e-12)
        np.testing.assert_allclose(np.sum(plotted["density"][:, j] * np.diff(edges)), total, rtol=1e-12)
        assert abs(total - 1) < 1e-8
    assert want[:, -1].max() > 0 and (want[:, 0] == 0).sum() > 10  # the last grid reaches past the first's
    np.testing.assert_allclose(plotted["density"], want, rtol=1e-11, atol=1e-13 * want.max())
    floor = want.max() * 1e-4
    assert plotted["floor"] == pytest.approx(floor, rel=1e-12)
    # STEPS = 0, 10, 100, 1000 span two decades: a symmetric-log step axis, linear below 10. The
    # columns reach halfway to their neighbours in the axis' coordinates: 5 between 0 and 10 (the
    # linear part), the geometric means 10^1.5 and 10^2.5 above, as far out at the ends as in.
    assert STEPS == [0, 10, 100, 1000] and meshes[f"{n}|density@0"].axes.get_xscale() == "symlog"
    r = math.sqrt(10)
    columns = [[-5, 5], [5, 10 * r], [10 * r, 100 * r], [100 * r, 1000 * r]]
    for j, s in enumerate(STEPS):
        m = meshes[f"{n}|density@{s}"]
        got = np.asarray(m.get_array(), float).ravel()
        np.testing.assert_allclose(got, np.maximum(want[:, j], plotted["floor"]), rtol=1e-11, atol=1e-13 * want.max())
        xy = m.get_coordinates()  # [lambda edges, step edges, (x, y)]
        np.testing.assert_array_equal(xy[:, 0, 1], edges)
        np.testing.assert_allclose(xy[0, :, 0], columns[j], rtol=1e-12, atol=1e-12)
    assert "floor $10^{-4}$ of max" in fig.axes[-1].get_ylabel() or any(
        "floor $10^{-4}$ of max" in ax.get_ylabel() for ax in fig.axes)
    C = _lines(fig)
    np.testing.assert_array_equal(C[f"{n}|density_curve@{STEPS[-1]}"][1], dens("density", lambda r: int(r["step"]) == STEPS[-1]))

    lc = _csv_cols(run / "lc.csv")
    E = _lines(figs["lc"].figure)
    for p in ("train", "test", "random"):
        np.testing.assert_array_equal(E[f"{n}|{p}:total_mean"][0], lc("step", lambda r, p=p: r["points"] == p))
        np.testing.assert_array_equal(E[f"{n}|{p}:total_mean"][1], lc("total_mean", lambda r, p=p: r["points"] == p))
    for j in range(3):
        np.testing.assert_array_equal(E[f"{n}|layer{j + 1}"][1], lc(f"layer{j + 1}", lambda r: r["points"] == "train"))

    llc = _csv_cols(run / "llc.csv")
    E = _lines(figs["llc"].figure)
    np.testing.assert_array_equal(E[f"{n}|llc_mean"][0], llc("step"))
    np.testing.assert_array_equal(E[f"{n}|llc_mean"][1], llc("llc_mean"))
    # The error bars: the vertical segments span llc_mean +- llc_stderr.
    ax = figs["llc"].figure.axes[0]
    bars = [c for c in ax.collections if hasattr(c, "get_segments")][0].get_segments()
    np.testing.assert_allclose([b[0][1] for b in bars], llc("llc_mean") - llc("llc_stderr"), rtol=1e-12)
    np.testing.assert_allclose([b[1][1] for b in bars], llc("llc_mean") + llc("llc_stderr"), rtol=1e-12)

    trace = np.load(run / "llc_trace_last.npy")
    E = _lines(figs["llc_traces"].figure)
    for c in range(4):
        np.testing.assert_array_equal(E[f"{n}|chain{c + 1}"][1], trace[c])
        np.testing.assert_array_equal(E[f"{n}|chain{c + 1}"][0], np.arange(1, 31))
    assert np.all(E[f"{n}|init_loss"][1] == llc("init_loss")[-1])  # the loss at w* of the last row

    el = _csv_cols(run / "elasticity.csv")
    E = _lines(figs["elasticity_ratio"].figure)
    for key in ("within_class", "across_class", "ratio"):
        np.testing.assert_array_equal(E[f"{n}|{key}"][1], el(key))
    imgs = {im.get_gid(): im for ax in figs["elasticity_matrices"].figure.axes for im in ax.images}
    np.testing.assert_array_equal(imgs[f"{n}|elasticity_first"].get_array(), np.load(run / "elasticity_first.npy"))
    np.testing.assert_array_equal(imgs[f"{n}|elasticity_last"].get_array(), np.load(run / "elasticity_last.npy"))

    rs = _csv_cols(run / "response.csv")
    E = _lines(figs["response"].figure)
    pos = rs("step") > 0
    np.testing.assert_array_equal(E[f"{n}|mean_diagonal"][0], rs("step")[pos])
    np.testing.assert_array_equal(E[f"{n}|mean_diagonal"][1], rs("mean_diagonal")[pos])
    np.testing.assert_array_equal(E[f"{n}|mean_off_diagonal"][1], rs("mean_off_diagonal")[pos])
    np.testing.assert_array_equal(E[f"{n}|layer2_diagonal"][1], rs("layer2_diagonal")[pos])
    x, y = E[f"{n}|fit"]
    np.testing.assert_allclose(y, 50.0 * x ** -0.4, rtol=1e-14)  # report.json's A t^-beta
    assert x.min() == 10.0 and x.max() == 1000.0                 # over its fit window
    E = _lines(figs["effective_rank"].figure)
    np.testing.assert_array_equal(E[f"{n}|effective_rank1"][1], rs("effective_rank1"))
    np.testing.assert_array_equal(E[f"{n}|participation_ratio1"][1], rs("participation_ratio1"))

    import matplotlib.image as mpimg
    imgs = {im.get_gid(): im for ax in figs["region_maps"].figure.axes for im in ax.images}
    np.testing.assert_array_equal(imgs[f"{n}|region_map_first"].get_array(), mpimg.imread(run / "region_map_first.png"))
    np.testing.assert_array_equal(imgs[f"{n}|region_map_last"].get_array(), mpimg.imread(run / "region_map_last.png"))


def test_response_fit_when_report_json_has_none(tmp_path):
    """Without report.json's fit the report fits ln R on ln t itself: exact on an exact power law."""
    d = tmp_path / "r"
    d.mkdir()
    t = np.array([0, 10, 100, 1000, 10000], float)
    r = 7.5 * np.where(t > 0, t, 1) ** -0.35
    _write_csv(d / "response.csv", ["step", "checkpoint", "mean_diagonal"], [(s, "c", v) for s, v in zip(t, r)])
    fit = _report_data.fit_power_law(t, _csv_cols(d / "response.csv")("mean_diagonal"))
    assert abs(fit["beta"] - 0.35) < 1e-9 and abs(fit["amplitude"] - 7.5) < 1e-8 and fit["points"] == 4
    x, y = _lines(_figures([d])["response"].figure)["r|fit"]
    np.testing.assert_allclose(y, 7.5 * x ** -0.35, rtol=1e-8)


def test_response_log_axes_have_readable_tick_labels(tmp_path):
    """A log y axis spanning about a decade (the demo's response: 450 .. 6500) gets several labelled ticks
    whose text is the tick's value, not a single 10^3."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    d = tmp_path / "r"
    d.mkdir()
    t = np.array([100, 200, 300, 400, 500, 600], float)
    r = 1500 * (t / 100) ** 0.65
    _write_csv(d / "response.csv", ["step", "checkpoint", "mean_diagonal", "mean_off_diagonal", "layer1_diagonal",
                                    "layer2_diagonal"],
               [(s, "c", v, v / 4, v / 2, v / 20) for s, v in zip(t, r)])
    fig = _figures([d])["response"].figure
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes[:2]:
        assert ax.get_yscale() == "log"
        lo, hi = ax.get_ylim()
        shown = [(tick.get_loc(), tick.label1.get_text()) for tick in ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
                 if lo <= tick.get_loc() <= hi and tick.label1.get_visible() and tick.label1.get_text()]
        assert len(shown) >= 3, shown
        for loc, text in shown:
            assert float(text) == pytest.approx(loc, rel=1e-9), (loc, text)


# -- several runs -------------------------------------------------------------------------------


def test_two_runs_overlay(tmp_path):
    a = make_run(tmp_path / "alpha", seed=1)
    b = make_run(tmp_path / "beta", ("train", "evals", "ntk", "llc", "response"), seed=2)
    figs = _figures([a, b])
    assert set(figs) == set(ALL)  # the union of the runs' figures
    for key in ("loss", "ntk_eigenvalues", "ntk_alignment", "llc", "response"):
        fig = figs[key].figure
        for ax in fig.axes:
            runs = {ln.get_gid().split("|")[0] for ln in ax.lines if ln.get_gid()}
            if runs:
                assert runs == {"alpha", "beta"}, (key, runs)
                colours = {ln.get_gid().split("|")[0]: ln.get_color() for ln in ax.lines if ln.get_gid()}
                assert colours == {"alpha": RUN_COLOURS[0], "beta": RUN_COLOURS[1]}
        legend_texts = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
        assert legend_texts == ["alpha", "beta"], (key, legend_texts)
    # Both runs' values are the files' values.
    L = _lines(figs["ntk_alignment"].figure)
    for run in (a, b):
        meta = json.loads((run / "report.json").read_text())
        np.testing.assert_array_equal(L[f"{run.name}|kta"][1], [c["ntk"]["kta"] for c in meta["checkpoints"]])
    # A figure only the first run holds shows that run alone.
    assert {ln.get_gid().split("|")[0] for ax in figs["hessian"].figure.axes for ln in ax.lines
            if ln.get_gid()} == {"alpha"}
    # The page of two (smaller) runs: its figures, one configuration column per run.
    a = make_run(tmp_path / "a2" / "alpha", ("train", "llc"), seed=1)
    b = make_run(tmp_path / "b2" / "beta", ("llc",), seed=2)
    index = _report.report([str(a), str(b)])
    assert index == str(a / "report" / "index.html")
    assert sorted(os.listdir(a / "report")) == ["index.html", "llc.png", "loss.png"]
    page = (a / "report" / "index.html").read_text()
    assert "<th>alpha</th><th>beta</th>" in page


def test_same_folder_names_get_parent_names(tmp_path):
    a = make_run(tmp_path / "x" / "run", ("train",), seed=1)
    b = make_run(tmp_path / "y" / "run", ("train",), seed=2)
    fig = _figures([a, b])["loss"].figure
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [os.path.join("x", "run"), os.path.join("y", "run")]


# -- formats, overwrite, atomicity --------------------------------------------------------------


def test_formats_svg_pdf(tmp_path):
    run = make_run(tmp_path / "run", ("train", "llc"))
    out = tmp_path / "out"
    index = _report.report(str(run), out=str(out), formats="svg,pdf")
    assert index == str(out / "index.html")
    assert sorted(os.listdir(out)) == sorted(["index.html"] + [f"{k}.{e}" for k in ("loss", "llc")
                                                                for e in ("png", "svg", "pdf")])
    assert (out / "llc.svg").read_text().lstrip().startswith("<?xml")
    assert (out / "llc.pdf").read_bytes().startswith(b"%PDF")
    page = (out / "index.html").read_text()
    assert 'href="llc.svg"' in page and 'href="llc.pdf"' in page
    with pytest.raises(dynascope.InvalidArgument, match="'jpg' is not a figure format"):
        _report.report(str(run), out=str(tmp_path / "o2"), formats=("png", "jpg"))
    assert not (tmp_path / "o2").exists()


def test_overwrite(tmp_path):
    run = make_run(tmp_path / "run", ("train",))
    _report.report(str(run))
    with pytest.raises(dynascope.InvalidArgument, match="already exists.*--overwrite"):
        _report.report(str(run))
    make_run(tmp_path / "run", ("train", "llc"))
    _report.report(str(run), overwrite=True)
    assert sorted(os.listdir(run / "report")) == ["index.html", "llc.png", "loss.png"]
    _assert_no_leftovers(run)
    # A folder the report did not write is never replaced.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(dynascope.InvalidArgument, match="not a report this command wrote"):
        _report.report(str(run), out=str(other), overwrite=True)
    assert (other / "notes.txt").read_text() == "keep"


def test_interrupted_report_leaves_nothing(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", ("train", "llc"))
    from matplotlib.figure import Figure
    calls = []

    def boom(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return orig(self, *a, **k)
    orig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(KeyboardInterrupt):
        _report.report(str(run))
    assert not (run / "report").exists()
    _assert_no_leftovers(run)


# -- malformed files ----------------------------------------------------------------------------


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


MALFORMED = [
    ("train.csv", lambda p: _truncate(p, lambda n: n - 7), "train.csv: the last line ends without a line break"),
    ("lc.csv", lambda p: p.write_text("step,points,samples,total_mean\n0,train,64,1.5\n10,train\n"),
     r"lc.csv: line 3 has 2 fields, the header 4"),
    ("llc.csv", lambda p: p.write_text("step,llc_mean,llc_stderr\n0,1.5,0.1\n10,abc,0.1\n"),
     r"llc.csv: line 3, column llc_mean: 'abc' is not a number"),
    ("elasticity.csv", lambda p: p.write_text("step,mean,within_class\n0,1,2\n"),
     r"elasticity.csv: the header has no columns across_class, ratio"),
    ("response.csv", lambda p: p.write_text(""), r"response.csv: the file is empty"),
    ("report.json", lambda p: _truncate(p, lambda n: n // 2), r"report.json: not valid JSON \(line 1, column"),
    ("report.json", lambda p: p.write_text('{"checkpoints": [{"step": 0, "ntk": {"kta": "high"}}]}'),
     r"report.json: checkpoints\[0\].ntk.kta is \"high\", expected a number"),
    ("report.json", lambda p: p.write_text('{"checkpoints": [{"step": -3, "ntk": {"kta": 1}}]}'),
     r"report.json: checkpoints\[0\].ntk.step is -3, expected a non-negative integer"),
    ("elasticity_first.npy", lambda p: _truncate(p, lambda n: n - 20), r"elasticity_first.npy: not a readable .npy"),
    ("elasticity_last.npy", lambda p: np.save(p, np.ones((2, 3))), r"elasticity_last.npy: holds an array of shape \[2, 3\]"),
    ("llc_trace_last.npy", lambda p: np.save(p, np.ones(5)), r"llc_trace_last.npy: holds an array of shape \[5\]"),
    ("hessian_density.csv", lambda p: p.write_text("step,lambda,density\n0,0.1,1\n0,0.2,-1\n"),
     r"hessian_density.csv: line 3, column density: -1.0 is not a finite non-negative density"),
    ("hessian_density.csv", lambda p: p.write_text("step,lambda,density\n0,0.2,1\n0,0.1,1\n"),
     r"hessian_density.csv: at step 0 the lambda grid is not increasing"),
    ("region_map_first.png", lambda p: p.write_bytes(b"GIF89a...."), r"region_map_first.png: not a PNG image"),
    ("ntk.csv", lambda p: p.write_text("step,eigenvalues1\n0.5,1\n"), r"ntk.csv: line 2: step 0.5 is not"),
]


@pytest.mark.parametrize("name,damage,message", MALFORMED, ids=[f"{m[0]}-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_file_is_an_error_naming_it(tmp_path, name, damage, message):
    run = make_run(tmp_path / "run")
    if name == "ntk.csv":  # the Tracker's file is read when report.json holds no NTK rows
        (run / "report.json").write_text("{}")
    damage(run / name)
    with pytest.raises(dynascope.InvalidArgument, match=message):
        _report.report(str(run))
    assert not (run / "report").exists()
    _assert_no_leftovers(run)


def test_command_line(tmp_path):
    run = make_run(tmp_path / "run", ("train", "llc"))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(dynascope.__file__))))
    r = subprocess.run([sys.executable, "-m", "dynascope", "report", str(run), "--format", "png,svg"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(run / "report" / "index.html")
    assert (run / "report" / "llc.svg").is_file()
    r = subprocess.run([sys.executable, "-m", "dynascope", "report", str(run)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2 and "already exists" in r.stderr and "--overwrite" in r.stderr
    (run / "llc.csv").write_text("step,llc_mean\n0,x\n")
    r = subprocess.run([sys.executable, "-m", "dynascope", "report", str(run), "--overwrite", "--format", "gif"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--format: 'gif' is not a figure format" in r.stderr
    r = subprocess.run([sys.executable, "-m", "dynascope", "report", str(run), "--overwrite"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "llc.csv: line 2, column llc_mean: 'x' is not a number" in r.stderr
    assert (run / "report" / "llc.svg").is_file()  # the earlier report is kept
    r = subprocess.run([sys.executable, "-m", "dynascope"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "report DIR" in r.stdout


# -- real run folders ---------------------------------------------------------------------------


def _cli():
    cli = os.environ.get("DYNASCOPE_CLI")
    if cli and os.path.isfile(cli):
        return cli
    here = pathlib.Path(dynascope.__file__).resolve()
    for cand in (pathlib.Path(os.path.dirname(os.path.abspath(dynascope.__file__))).parent.parent / "src" / "cli"
                 / "dynascope",):
        if cand.is_file():
            return str(cand)
    return None


def test_demo_folder(tmp_path):
    cli = _cli()
    if cli is None:
        pytest.skip("the dynascope command-line tool is not built (DYNASCOPE_CLI unset)")
    out = tmp_path / "demo"
    r = subprocess.run([cli, "demo", "--out-dir", str(out), "--quiet", "--no-report"], capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"))
    if r.returncode != 0 and "--no-report" in r.stderr:  # a demo from before the report
        r = subprocess.run([cli, "demo", "--out-dir", str(out), "--quiet"], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert r.returncode == 0, r.stderr
    index = _report.report(str(out), overwrite=True)
    got = {p[:-4] for p in os.listdir(os.path.dirname(index)) if p.endswith(".png")}
    expected = set(ALL)
    if not (out / "hessian_density.csv").exists():
        expected.discard("hessian_density")
    if not (out / "llc_trace_last.npy").exists():
        expected.discard("llc_traces")
    assert got == expected
    figs = _figures([out])
    llc = _csv_cols(out / "llc.csv")
    np.testing.assert_array_equal(_lines(figs["llc"].figure)["demo|llc_mean"][1], llc("llc_mean"))
    meta = json.loads((out / "report.json").read_text())
    x, y = _lines(figs["response"].figure)["demo|fit"]
    np.testing.assert_allclose(y, meta["response"]["amplitude"] * x ** -meta["response"]["beta"], rtol=1e-14)


def test_tracker_folder(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    x = torch.randn(32, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    measures = ["ntk", ("hessian", {"k": 2}), ("llc", {"chains": 2, "draws": 10, "burnin": 10}), ("lc", {"dims": 2}),
                ("elasticity", {"samples": 8}), ("response", {"samples": 8})]
    d = tmp_path / "tracked"
    with dynascope.Tracker(model, (x, y), every=10, measures=measures, out_dir=str(d)) as tracker:
        tracker.step(0)
        for t in range(1, 21):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tracker.step(t, loss=loss)
    figs = _figures([d])
    assert set(figs) == {"loss", "ntk_eigenvalues", "ntk_alignment", "ntk_distance", "hessian", "lc", "llc",
                         "llc_traces", "elasticity_ratio", "response", "effective_rank"}
    rows = tracker.rows
    E = _lines(figs["llc_traces"].figure)
    np.testing.assert_array_equal(E["tracked|chain2"][1], rows["llc"][-1]["loss_trace"][1])
    E = _lines(figs["hessian"].figure)
    np.testing.assert_array_equal(E["tracked|lambda_max"][1], [r["top_eigenvalues"][0] for r in rows["hessian"]])
    E = _lines(figs["response"].figure)
    assert "fitted by the report" in figs["response"].caption
    index = _report.report(str(d))
    assert os.path.isfile(index)
