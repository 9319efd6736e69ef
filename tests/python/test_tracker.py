"""dynascope.Tracker: the run folder it writes, checked against independent readers and computations.

Checkpoints are read back with the `safetensors` package (not dynascope's reader) and compared
with the model's parameters at that step; losses are recomputed in float64 by torch from those
parameters; the NTK measure is checked against a kernel contracted from torch autograd Jacobians;
and the command-line tool (DYNASCOPE_CLI) must measure the folder with `--checkpoints`, its LLC
init loss at each checkpoint equal to torch's full-batch loss there.
Run: python -m pytest tests/python/test_tracker.py
"""
import csv
import dataclasses
import json
import os
import subprocess

import numpy as np
import pytest

import dynascope

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
safetensors_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402

CLI = os.environ.get("DYNASCOPE_CLI")


def make_model(seed=0, outputs=3, act=None):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), act or nn.Tanh(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, outputs)).double()


def make_data(n=24, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, dtype=torch.float64, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def train(model, x, y, tracker, steps, lr=0.2, loss_fn=F.cross_entropy):
    """Full-batch SGD; returns {step: parameter vector after `step` updates} and the batch losses."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    params = {0: nn.utils.parameters_to_vector(model.parameters()).detach().clone()}
    losses = []
    tracker.step(0)
    for t in range(1, steps + 1):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        tracker.step(t, loss=loss)
        params[t] = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    return params, losses


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def torch_from_checkpoint(path, template):
    """A copy of `template` with the weights of a checkpoint, read by the safetensors package."""
    tensors = safetensors_numpy.load_file(path)
    model = make_model()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(tensors[f"layers.{i}.weight"]))
            lin.bias.copy_(torch.from_numpy(tensors[f"layers.{i}.bias"]))
    return model


def ntk_reference(model, x):
    """Theta[n, m] = sum_a <d f_a(x_n)/dw, d f_a(x_m)/dw> from autograd Jacobians, float64."""
    params = list(model.parameters())
    rows = []
    for n in range(x.shape[0]):
        f = model(x[n:n + 1])[0]
        grads = [torch.autograd.grad(f[a], params, retain_graph=True) for a in range(f.shape[0])]
        rows.append(torch.stack([torch.cat([g.reshape(-1) for g in per_output]) for per_output in grads]))
    j = torch.stack(rows)
    return torch.einsum("nap,map->nm", j, j).detach().numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tracked run shared by the tests that only read it: 12 full-batch SGD steps, every 5."""
    out = tmp_path_factory.mktemp("run") / "folder"
    x, y = make_data()
    model = make_model()
    with dynascope.Tracker(model, (x, y), every=5, measures=[("ntk", {"samples": 10, "k": 4})], out_dir=str(out),
                           seed=3, threads=1, config={"optimizer": {"kind": "sgd", "lr": 0.2}}) as tracker:
        params, losses = train(model, x, y, tracker, 12)
    return {"dir": str(out), "x": x, "y": y, "params": params, "losses": losses, "model": model, "tracker": tracker}


def test_run_folder_files_and_checkpoints(run):
    d = run["dir"]
    steps = [0, 5, 10, 12]   # every 5, and the last step at close()
    names = sorted(f for f in os.listdir(d) if f.startswith("step_"))
    assert names == [f"step_{s:07d}.safetensors" for s in steps]
    for s in steps:
        path = os.path.join(d, f"step_{s:07d}.safetensors")
        tensors = safetensors_numpy.load_file(path)
        flat = np.concatenate([tensors[f"layers.{i}.{k}"].reshape(-1) for i in range(3) for k in ("weight", "bias")])
        assert tensors["layers.0.weight"].dtype == np.float64
        np.testing.assert_array_equal(flat, run["params"][s].numpy())
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata()
        assert meta["step"] == str(s)
        assert meta["activation"] == "tanh,relu"
        assert meta["parameterization"] == "standard"
    assert not [f for f in os.listdir(d) if f.startswith(".")], "temporary files left behind"


def test_train_csv_is_the_loss_of_each_steps_network(run):
    rows = read_csv(os.path.join(run["dir"], "train.csv"))
    assert list(rows[0].keys()) == ["step", "loss", "accuracy"]
    assert [int(r["step"]) for r in rows] == list(range(12))
    for r, loss in zip(rows, run["losses"]):
        # The CLI trainer's format: 9 significant digits (C's %.9g).
        assert r["loss"] == "%.9g" % loss
        assert float(r["loss"]) == pytest.approx(loss, rel=1e-8)
        assert r["accuracy"] == ""
    # Row t is the loss of the network after t updates (what step_t holds), recomputed here.
    for t in (0, 5, 10):
        model = torch_from_checkpoint(os.path.join(run["dir"], f"step_{t:07d}.safetensors"), run["model"])
        ref = float(F.cross_entropy(model(run["x"]), run["y"]))
        assert float(rows[t]["loss"]) == pytest.approx(ref, rel=1e-8)


def test_report_records_the_data_and_config(run):
    d = run["dir"]
    with open(os.path.join(d, "report.json")) as f:
        report = json.load(f)
    cfg = report["config"]
    # Relative to the folder, so that a moved folder keeps its data.
    assert cfg["data"]["inputs"] == "inputs.npy"
    assert cfg["data"]["targets"] == "targets.npy"
    np.testing.assert_array_equal(np.load(os.path.join(d, cfg["data"]["inputs"])), run["x"].numpy())
    labels = np.load(os.path.join(d, cfg["data"]["targets"]))
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, run["y"].numpy())
    assert cfg["seed"] == 3 and cfg["loss"] == "xent" and cfg["dtype"] == "float64"
    assert cfg["data"]["train_samples"] == 24 and cfg["data"]["test_fraction"] == 0.0
    assert cfg["optimizer"] == {"kind": "sgd", "lr": 0.2}
    assert cfg["network"]["arch"] == "2-8-6-3"
    assert report["finished"] is True and report["steps"] == 12 and report["diverged"] is False
    assert [r["step"] for r in report["checkpoints"]] == [0, 5, 10, 12]
    assert report["checkpoints"][1]["checkpoint"] == os.path.join(d, "step_0000005.safetensors")
    # The batch loss of each checkpoint's network (the last one has no later update).
    assert report["checkpoints"][1]["batch_loss"] == pytest.approx(run["losses"][5], rel=1e-15)
    assert "batch_loss" not in report["checkpoints"][3]


def test_ntk_measure_against_autograd_kernel(run):
    # ntk.csv: the demo's report names, numbers as the CLI's CSVs (10 significant digits); the
    # full-precision values are report.json's rows.
    csv_rows = read_csv(os.path.join(run["dir"], "ntk.csv"))
    assert list(csv_rows[0].keys()) == ["step", "samples", "trace", "frobenius", "eigenvalues1", "eigenvalues2",
                                        "eigenvalues3", "eigenvalues4", "kta", "kta_centered", "distance_to_init"]
    with open(os.path.join(run["dir"], "report.json")) as f:
        rows = json.load(f)["ntk"]["rows"]
    for c, r in zip(csv_rows, rows):
        assert c["trace"] == "%.10g" % r["trace"] and c["eigenvalues4"] == "%.10g" % r["eigenvalues"][3]
        assert c["kta_centered"] == "%.10g" % r["kta_centered"]
        r.update({f"eigenvalues{i + 1}": v for i, v in enumerate(r["eigenvalues"])})
    assert [int(r["step"]) for r in rows] == [0, 5, 10, 12]
    x10 = run["x"][:10]
    y10 = run["y"][:10].numpy()
    first = None
    for r in rows:
        s = int(r["step"])
        model = torch_from_checkpoint(os.path.join(run["dir"], f"step_{s:07d}.safetensors"), run["model"])
        K = ntk_reference(model, x10)
        first = K if first is None else first
        assert int(r["samples"]) == 10
        assert float(r["trace"]) == pytest.approx(np.trace(K), rel=1e-10)
        assert float(r["frobenius"]) == pytest.approx(np.linalg.norm(K), rel=1e-10)
        ev = np.linalg.eigvalsh(K)[::-1][:4]
        np.testing.assert_allclose([float(r[f"eigenvalues{i}"]) for i in range(1, 5)], ev, rtol=1e-9)
        assert "eigenvalues5" not in r
        Y = np.eye(3)[y10]
        kta = np.sum(K * (Y @ Y.T)) / (np.linalg.norm(K) * np.linalg.norm(Y @ Y.T))
        H = np.eye(10) - 1 / 10
        Kc, Yc = H @ K @ H, H @ Y
        ktac = np.sum(Kc * (Yc @ Yc.T)) / (np.linalg.norm(Kc) * np.linalg.norm(Yc @ Yc.T))
        assert float(r["kta"]) == pytest.approx(kta, rel=1e-9)
        assert float(r["kta_centered"]) == pytest.approx(ktac, rel=1e-8)
        dist = 1 - np.sum(first * K) / (np.linalg.norm(first) * np.linalg.norm(K))
        assert float(r["distance_to_init"]) == pytest.approx(dist, rel=1e-6, abs=1e-12)
    assert float(rows[-1]["distance_to_init"]) > 1e-6   # the kernel moved


def cli(*args):
    p = subprocess.run([CLI, *map(str, args), "--quiet", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.skipif(not CLI, reason="DYNASCOPE_CLI (the CLI binary) is not set")
def test_cli_llc_reads_the_folder_and_its_data(run, tmp_path):
    """`llc --checkpoints` takes the data and loss from report.json: its init loss (L_n at the
    checkpoint) is torch's full-batch cross-entropy of that checkpoint."""
    r = cli("llc", "--checkpoints", run["dir"], "--out-csv", tmp_path / "llc.csv", "--chains", 2, "--draws", 5,
            "--burnin", 2)
    assert [row["step"] for row in r["rows"]] == [0, 5, 10, 12]
    assert r["loss"] == "xent"
    for row in r["rows"]:
        model = torch_from_checkpoint(row["checkpoint"], run["model"])
        ref = float(F.cross_entropy(model(run["x"]), run["y"]))
        assert row["init_loss"] == pytest.approx(ref, rel=1e-12)
    assert len(read_csv(tmp_path / "llc.csv")) == 4


@pytest.mark.skipif(not CLI, reason="DYNASCOPE_CLI (the CLI binary) is not set")
def test_cli_elasticity_response_lc_ntk_read_the_folder(run, tmp_path):
    d = run["dir"]
    el = cli("elasticity", "--checkpoints", d, "--out-csv", tmp_path / "el.csv")
    assert [row["step"] for row in el["rows"]] == [0, 5, 10, 12] and el["sources"] == 24
    re = cli("response", "--checkpoints", d, "--out-csv", tmp_path / "re.csv")
    assert [row["step"] for row in re["rows"]] == [0, 5, 10, 12] and re["rows"][0]["samples"] == 24
    # lc takes the run's data from report.json too; ntk takes data flags.
    lc = cli("lc", "--checkpoints", d, "--radius", 0.05, "--dims", 2, "--out-csv", tmp_path / "lc.csv")
    assert sorted({row["step"] for row in lc["rows"]}) == [0, 5, 10, 12]
    assert lc["data"]["inputs"] == os.path.join(d, "inputs.npy") and lc["rows"][0]["samples"] == 24
    k = cli("ntk", "--model", os.path.join(d, "step_0000005.safetensors"), "--inputs", os.path.join(d, "inputs.npy"),
            "--targets", os.path.join(d, "targets.npy"), "--samples", 10, "--k", 4)
    with open(os.path.join(d, "report.json")) as f:
        row = json.load(f)["ntk"]["rows"][1]
    assert k["trace"] == pytest.approx(float(row["trace"]), rel=1e-12)
    assert k["kta_centered"] == pytest.approx(float(row["kta_centered"]), rel=1e-9)


@pytest.mark.skipif(not CLI, reason="DYNASCOPE_CLI (the CLI binary) is not set")
def test_regression_run_float32_and_cli_mse(tmp_path):
    """Float targets [N, O], a float32 model, every=0 (the first and last step only)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 2))
    x = torch.randn(16, 3)
    y = torch.randn(16, 2)
    with dynascope.Tracker(model, (x, y), every=0, out_dir=str(tmp_path / "reg")) as tracker:
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        tracker.step(0)
        for t in range(1, 8):
            loss = F.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tracker.step(t, loss=loss)
    d = str(tmp_path / "reg")
    assert sorted(f for f in os.listdir(d) if f.startswith("step_")) == ["step_0000000.safetensors",
                                                                            "step_0000007.safetensors"]
    assert list(read_csv(os.path.join(d, "train.csv"))[0].keys()) == ["step", "loss"]
    assert np.load(os.path.join(d, "targets.npy")).dtype == np.float32
    r = cli("llc", "--checkpoints", d, "--out-csv", tmp_path / "llc.csv", "--chains", 2, "--draws", 3, "--burnin", 1)
    assert r["loss"] == "mse"
    tensors = safetensors_numpy.load_file(os.path.join(d, "step_0000007.safetensors"))
    assert tensors["layers.0.weight"].dtype == np.float32
    xd, yd = x.double(), y.double()
    w = {k: torch.from_numpy(v).double() for k, v in tensors.items()}
    f = F.gelu(xd @ w["layers.0.weight"].T + w["layers.0.bias"]) @ w["layers.1.weight"].T + w["layers.1.bias"]
    assert r["rows"][-1]["init_loss"] == pytest.approx(float(F.mse_loss(f, yd)), rel=1e-5)


@pytest.mark.skipif(not CLI or not all(n in dynascope.__all__ for n in ("elasticity", "response")),
                    reason="DYNASCOPE_CLI or the elasticity/response functions are not there")
def test_moved_folder_keeps_its_data_and_float32_runs_measure_in_float64(tmp_path):
    """report.json names the data relative to the folder, so a moved folder is still read with no
    data flags; a float32 network's elasticity and response are computed in float64 by default, as
    the CLI's are, so the rows equal the CLI's on the moved folder (the checkpoint column names
    the folder each was written in)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = make_data(n=12, seed=2)
    x = x.float()
    d = tmp_path / "f32"
    with dynascope.Tracker(model, (x, y), every=2, measures=["elasticity", "response"], out_dir=str(d),
                           threads=1) as tracker:
        train(model, x, y, tracker, 3, lr=0.1)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    os.rename(d, moved)
    for m in ("elasticity", "response"):
        r = cli(m, "--checkpoints", moved, "--out-csv", tmp_path / f"{m}.csv")
        assert r["data"]["inputs"] == str(moved / "inputs.npy") and r["data"]["targets"] == str(moved / "targets.npy")
        assert r["dtype"] == "float64"
        mine, theirs = read_csv(moved / f"{m}.csv"), read_csv(tmp_path / f"{m}.csv")
        assert [r["checkpoint"] for r in mine] == [os.path.join(str(d), f"step_{s:07d}.safetensors") for s in (0, 2, 3)]
        assert [r["checkpoint"] for r in theirs] == [str(moved / f"step_{s:07d}.safetensors") for s in (0, 2, 3)]
        for a, b in zip(mine, theirs):
            a.pop("checkpoint"), b.pop("checkpoint")
            assert a == b
    lc = cli("lc", "--checkpoints", moved, "--radius", 0.1, "--dims", 2, "--out-csv", tmp_path / "lc.csv")
    assert lc["data"]["inputs"] == str(moved / "inputs.npy") and lc["rows"][0]["samples"] == 12


def test_measure_dispatch_to_package_functions(tmp_path, monkeypatch):
    """A built-in measure calls the package function by its public name with the model, the first
    `samples` inputs (and targets), the options, and the tracker's seed, threads, progress and loss;
    a dataclass result becomes a CSV row. (A stand-in function: the real one is tested in its own file.)"""
    calls = []

    @dataclasses.dataclass
    class Result:
        total_mean: float
        all_layers_mean: float
        per_layer_mean: np.ndarray
        samples: int
        counts: np.ndarray

    def local_complexity(model, x, radius, dims=25, seed=0, threads=None, progress=None):
        calls.append((model, x, radius, dims, seed, threads, progress))
        return Result(float(x.shape[0]), 1 / 3, np.array([1.5, 2.5, 0.0]), x.shape[0],
                      np.zeros((x.shape[0], 3), np.int32))

    monkeypatch.setattr(dynascope, "local_complexity", local_complexity, raising=False)
    monkeypatch.setattr(dynascope, "__all__", list(dynascope.__all__) + ["local_complexity"])
    x, y = make_data(n=12)
    model = make_model()
    with dynascope.Tracker(model, (x, y), every=2, measures={"lc": {"samples": 5, "dims": 2}}, seed=7, threads=1,
                           out_dir=str(tmp_path / "lc")) as tracker:
        tracker.step(0)
        tracker.step(1)
        tracker.step(2)
    assert len(calls) == 2
    mlp, xs, radius, dims, seed, threads, progress = calls[0]
    assert isinstance(mlp, dynascope.Mlp) and mlp.arch == "2-8-6-3"
    assert torch.equal(xs, x[:5])
    diag = float(np.linalg.norm(x.numpy().max(0) - x.numpy().min(0)))
    assert radius == pytest.approx(0.01 * diag, rel=1e-12)
    assert (dims, seed, threads, progress) == (2, 7, 1, False)
    # The CLI's lc.csv columns and number format (the training points' rows).
    assert (tmp_path / "lc" / "lc.csv").read_text() == (
        "step,points,samples,total_mean,all_layers_mean,layer1,layer2,layer3\n"
        "0,train,5,5,0.3333333333,1.5,2.5,0\n"
        "2,train,5,5,0.3333333333,1.5,2.5,0\n")
    report = json.load(open(tmp_path / "lc" / "report.json"))
    assert report["lc"]["options"] == {"samples": 5, "dims": 2}
    assert report["lc"]["rows"][0]["counts"] == [[0, 0, 0]] * 5


def test_callable_measures_and_a_cnn_without_checkpoints(tmp_path):
    """Callable measures get the model as given; a module with checkpoints=False writes none; an
    object that is neither an MLP nor a torch module takes callables only."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)).double()
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0])

    def weight_norm(model, step):
        return {"norm": float(torch.cat([p.reshape(-1) for p in model.parameters()]).norm()), "tag": "a,b"}

    def opaque():
        return "a network of another framework"

    with pytest.raises(dynascope.InvalidArgument, match="the callable returned str.*checkpoints=False"):
        dynascope.Tracker(opaque, (x, y), out_dir=str(tmp_path / "no"))
    with pytest.raises(dynascope.InvalidArgument, match="'ntk' needs an MLP or a torch.nn.Module model"):
        dynascope.Tracker(opaque, (x, y), measures=["ntk"], checkpoints=False, out_dir=str(tmp_path / "no"))
    assert not os.path.exists(tmp_path / "no")
    with dynascope.Tracker(cnn, (x, y), every=1, checkpoints=False, out_dir=str(tmp_path / "cnn"),
                           measures=[weight_norm, ("double", lambda m, s: 2 * s)]) as tracker:
        norms = []
        for t in range(3):
            tracker.step(t)
            norms.append(float(torch.cat([p.reshape(-1) for p in cnn.parameters()]).norm()))
            with torch.no_grad():
                cnn[3].weight.mul_(2)
    d = tmp_path / "cnn"
    assert not [f for f in os.listdir(d) if f.startswith("step_")]
    rows = read_csv(d / "weight_norm.csv")
    np.testing.assert_allclose([float(r["norm"]) for r in rows], norms, rtol=1e-15)
    assert rows[0]["tag"] == "a,b"
    assert [float(r["value"]) for r in read_csv(d / "double.csv")] == [0.0, 2.0, 4.0]
    assert np.load(d / "inputs.npy").shape == (6, 1, 4, 4)   # a torch module's inputs keep their shape
    report = json.load(open(d / "report.json"))
    assert report["network"]["kind"] == "torch_module"
    assert report["network"]["class"] == "torch.nn.modules.container.Sequential"
    assert "Conv2d" in report["network"]["not_mlp"]


def test_mlp_numpy_params_and_jax_callable(tmp_path):
    rng = np.random.default_rng(0)
    mlp = dynascope.Mlp("3-4-2", rng.standard_normal(26), activation="relu")
    x = rng.standard_normal((8, 3))
    y = rng.standard_normal(8 * 2).reshape(8, 2)
    with dynascope.Tracker(mlp, (x, y), every=1, out_dir=str(tmp_path / "np")) as tracker:
        tracker.step(0)
        mlp.params *= 0.5   # the loop updates the parameters in place
        tracker.step(1, loss=1.25)
    w1 = safetensors_numpy.load_file(str(tmp_path / "np" / "step_0000001.safetensors"))
    np.testing.assert_array_equal(w1["layers.1.bias"], mlp.params[24:])
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    pairs = [(jnp.ones((4, 3), jnp.float32), jnp.zeros(4, jnp.float32)), (jnp.ones((2, 4), jnp.float32), None)]
    tr = dynascope.Tracker(lambda: dynascope.Mlp.from_pairs(pairs, activation="tanh"), jnp.ones((5, 3), jnp.float32),
                           out_dir=str(tmp_path / "jax"), every=0)
    tr.step(0)
    pairs[0] = (2 * pairs[0][0], pairs[0][1])
    tr.step(4)
    tr.close()
    back = dynascope.load_checkpoint(str(tmp_path / "jax" / "step_0000004.safetensors"))
    assert back.arch == "3-4-2" and back.bias == [True, False] and back.activations == ["tanh"]
    assert back.dtype == "float32"
    np.testing.assert_array_equal(back.params[:12], np.full(12, 2.0, np.float32))


def test_save_and_load_checkpoint_round_trip(tmp_path):
    model = make_model(act=nn.LeakyReLU(0.1))
    mlp = dynascope.Mlp.from_torch(model)
    path = str(tmp_path / "m.safetensors")
    dynascope.save_checkpoint(path, mlp, {"note": "hello"})
    with safe_open(path, framework="numpy") as f:
        assert f.metadata()["note"] == "hello"
        assert f.metadata()["activation"] == "leaky_relu:0.1,relu"
    back = dynascope.load_checkpoint(path)
    assert back.dtype == "float64" and back.activations == mlp.activations
    np.testing.assert_array_equal(back.params, mlp.params.numpy())
    assert dynascope.load_checkpoint(path, dtype="float32").params.dtype == np.float32
    # A PyTorch state dict saved with safetensors and the activation in its metadata.
    from safetensors.torch import save_file
    save_file(model.state_dict(), str(tmp_path / "sd.safetensors"), metadata={"activation": "leaky_relu:0.1,relu"})
    np.testing.assert_array_equal(dynascope.load_checkpoint(str(tmp_path / "sd.safetensors")).params,
                                  mlp.params.numpy())
    with pytest.raises(dynascope.Error, match="activation"):
        save_file(model.state_dict(), str(tmp_path / "bare.safetensors"))
        dynascope.load_checkpoint(str(tmp_path / "bare.safetensors"))
    with pytest.raises(dynascope.InvalidArgument, match="dtype"):
        dynascope.load_checkpoint(path, dtype="float16")
    with pytest.raises(dynascope.Error, match="nothing.safetensors"):
        dynascope.load_checkpoint(str(tmp_path / "nothing.safetensors"))


def test_out_dir_refuses_an_earlier_run_unless_overwrite(tmp_path):
    x, y = make_data(n=6)
    d = tmp_path / "run"
    t = dynascope.Tracker(make_model(), (x, y), out_dir=str(d), measures=[("mine", lambda m, s: 1.0)])
    t.step(0)
    t.close()
    assert (d / "mine.csv").exists()
    (d / "notes.txt").write_text("mine")
    (d / "report").mkdir()                 # the figures of dynascope.report(d): replaced with the run
    (d / "report" / "index.html").write_text("<html></html>")
    with pytest.raises(dynascope.InvalidArgument, match="holds an earlier run .*overwrite=True"):
        dynascope.Tracker(make_model(), (x, y), out_dir=str(d))
    assert (d / "report" / "index.html").exists()
    dynascope.Tracker(make_model(), (x, y), out_dir=str(d), overwrite=True)
    assert sorted(os.listdir(d)) == ["inputs.npy", "notes.txt", "report.json", "targets.npy", "train.csv"]
    # A user's own inputs.npy is neither removed nor replaced.
    (tmp_path / "mine").mkdir()
    np.save(tmp_path / "mine" / "inputs.npy", np.zeros(3))
    with pytest.raises(dynascope.InvalidArgument, match="holds inputs.npy, which no earlier run there wrote"):
        dynascope.Tracker(make_model(), (x, y), out_dir=str(tmp_path / "mine"), overwrite=True)
    np.testing.assert_array_equal(np.load(tmp_path / "mine" / "inputs.npy"), np.zeros(3))
    (tmp_path / "file").write_text("")
    with pytest.raises(dynascope.InvalidArgument, match="not a folder"):
        dynascope.Tracker(make_model(), (x, y), out_dir=str(tmp_path / "file"))


def test_lightning_style_callback(tmp_path):
    x, y = make_data(n=8)
    model = make_model()
    tracker = dynascope.Tracker(model, (x, y), every=2, out_dir=str(tmp_path / "pl"))
    cb = tracker.lightning_callback()

    class Trainer:
        global_step = 0

    trainer = Trainer()
    cb.setup(trainer, model, stage="fit")   # hooks it does not use are no-ops
    cb.on_fit_start(trainer, model)
    cb.on_train_start(trainer, model)
    for i in range(3):
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, model, {"loss": torch.tensor(0.5 + i), "accuracy": 0.25}, None, i)
    cb.on_train_end(trainer, model)
    assert sorted(f for f in os.listdir(tmp_path / "pl") if f.startswith("step_")) == [
        "step_0000000.safetensors", "step_0000002.safetensors", "step_0000003.safetensors"]
    rows = read_csv(tmp_path / "pl" / "train.csv")
    assert [(r["step"], r["loss"], r["accuracy"]) for r in rows] == [("0", "0.5", "0.25"), ("1", "1.5", "0.25"),
                                                                     ("2", "2.5", "0.25")]
    assert cb.state_dict() == {}
    with pytest.raises(AttributeError):
        cb.no_such_attribute


def test_interrupted_loop_keeps_what_was_measured(tmp_path):
    x, y = make_data(n=6)
    d = tmp_path / "stop"
    with pytest.raises(RuntimeError, match="boom"):
        with dynascope.Tracker(make_model(), (x, y), every=2, out_dir=str(d)) as tracker:
            tracker.step(0)
            tracker.step(1, loss=0.3)
            raise RuntimeError("boom")
    report = json.load(open(d / "report.json"))
    assert report["interrupted"] == "RuntimeError: boom" and report["finished"] is False
    assert [r["step"] for r in report["checkpoints"]] == [0]   # no checkpoint of the unfinished step 1
    assert os.listdir(d).count("step_0000001.safetensors") == 0


def test_nan_loss_marks_the_run_diverged(tmp_path):
    x, y = make_data(n=6)
    with dynascope.Tracker(make_model(), (x, y), every=0, out_dir=str(tmp_path / "nan")) as tracker:
        tracker.step(0)
        tracker.step(1, loss=0.5)
        tracker.step(2, loss=float("nan"))
    report = json.load(open(tmp_path / "nan" / "report.json"))
    assert report["diverged"] is True and report["diverged_at_step"] == 1
    # As the CLI's trainer writes the loss that diverged.
    assert read_csv(tmp_path / "nan" / "train.csv")[1]["loss"] == "nan"


def test_bad_input(tmp_path, monkeypatch):
    x, y = make_data(n=6)
    model = make_model()
    out = str(tmp_path / "bad")
    Err = dynascope.InvalidArgument

    def bad(exc, match, *args, **kwargs):
        kwargs.setdefault("out_dir", out)
        with pytest.raises(exc, match=match):
            dynascope.Tracker(*args, **kwargs)

    bad(dynascope.ShapeMismatch, "takes 2 inputs per sample", model, (torch.randn(6, 3, dtype=torch.float64), y))
    bad(Err, r"label 7 at row 0 is outside \[0, 3\)", model, (x, torch.full((6,), 7)))
    bad(dynascope.ShapeMismatch, "one target per input", model, (x, y[:4]))
    bad(dynascope.ShapeMismatch, r"must be \[N, 3\], one value per output", model,
        (x, torch.randn(6, 2, dtype=torch.float64)))
    # Float labels with xent: the labels' type is the problem, not their shape.
    bad(Err, r"'xent' needs integer class labels as targets, got float targets \(float64, shape \(6,\)\); pass the "
        r"labels as integers", model, (x, y.double()), loss="xent")
    bad(dynascope.ShapeMismatch, r"\[N\] only for a network with one output\), got shape \(6,\); class labels must "
        r"be integers", model, (x, y.double()))
    xn = x.clone()
    xn[2, 1] = float("nan")
    bad(Err, "data inputs: contains NaN", model, (xn, y))
    bad(Err, "'xent' needs integer class labels", model, (x, torch.randn(6, 3, dtype=torch.float64)), loss="xent")
    bad(Err, "loss: expected", model, (x, y), loss="hinge")
    bad(Err, "every: expected an integer >= 0", model, (x, y), every=-1)
    bad(Err, "expected a numpy.ndarray", model, ([[1.0, 2.0]], y))
    bad(Err, "unknown measure 'spectrum'", model, (x, y), measures=["spectrum"])
    bad(Err, "given twice", model, (x, y), measures=["ntk", "ntk"])
    bad(Err, "measures\\[0\\]: expected a measure name", model, (x, y), measures=[42])
    bad(Err, "'ntk': dtype: expected 'float32' or 'float64', got 'float16'", model, (x, y),
        measures=[("ntk", {"dtype": "float16"})])
    monkeypatch.setattr(dynascope, "llc", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(dynascope, "__all__", list(dynascope.__all__) + ["llc"])
    bad(Err, "'llc' needs targets: pass data=\\(inputs, targets\\)", model, x, measures=["ntk", "llc"])
    # A built-in measure whose package function is missing: a clear error, before anything is written.
    monkeypatch.setattr(dynascope, "__all__", [n for n in dynascope.__all__ if n != "elasticity"])
    bad(Err, "'elasticity' calls dynascope.elasticity, which this version of the package does not have",
        model, (x, y), measures=["elasticity"], out_dir=str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")

    t = dynascope.Tracker(model, (x, y), out_dir=out)
    t.step(3)
    with pytest.raises(Err, match="not after the last step recorded"):
        t.step(3)
    with pytest.raises(Err, match="step: expected an integer >= 0"):
        t.step(-1)
    with pytest.raises(Err, match="loss: expected a number"):
        t.step(4, loss="low")
    with pytest.raises(Err, match="step 0 is the network before training"):
        dynascope.Tracker(model, (x, y), out_dir=out, overwrite=True).step(0, loss=1.0)
    # The network changed shape mid-run.
    other = make_model()
    t2 = dynascope.Tracker(other, (x, y), every=1, out_dir=str(tmp_path / "arch"))
    t2.step(0)
    other[2] = nn.Linear(8, 5).double()
    other[4] = nn.Linear(5, 3).double()
    with pytest.raises(Err, match="a run's checkpoints share one architecture"):
        t2.step(1)
    t.close()
    with pytest.raises(Err, match="the tracker is closed"):
        t.step(9)


def _have(*names):
    return all(n in dynascope.__all__ for n in names)


@pytest.mark.skipif(not _have("llc", "elasticity", "response", "local_complexity", "eigsh", "curvature_operator"),
                    reason="the package functions of the built-in measures are not all there")
def test_builtin_measures_match_the_cli_and_autograd(tmp_path):
    """The built-in measures at each checkpoint are what the CLI computes from the folder (same
    seed and options), and the Hessian's top eigenvalues are those of torch's dense Hessian."""
    x, y = make_data(n=16, seed=4)
    model = make_model(seed=2)
    d = tmp_path / "all"
    measures = [("llc", {"chains": 2, "draws": 5, "burnin": 2}), "elasticity", "response",
                ("lc", {"radius": 0.05, "dims": 2}), ("hessian", {"k": 3})]
    with dynascope.Tracker(model, (x, y), every=3, measures=measures, out_dir=str(d), seed=4, threads=1) as tracker:
        train(model, x, y, tracker, 4)
    steps = [0, 3, 4]
    rows = {m: read_csv(d / f"{m}.csv") for m in ("llc", "elasticity", "response", "lc", "hessian")}
    assert all([int(r["step"]) for r in v] == steps for v in rows.values())
    # Hessian of the mean cross-entropy in the parameters, dense, float64.
    for r in rows["hessian"]:
        m = torch_from_checkpoint(str(d / f"step_{int(r['step']):07d}.safetensors"), model)
        p0 = nn.utils.parameters_to_vector(m.parameters()).detach()
        shapes = [p.shape for p in m.parameters()]

        def loss_of(flat):
            ws, i = [], 0
            for s in shapes:
                ws.append(flat[i:i + s.numel()].reshape(s))
                i += s.numel()
            h = torch.tanh(x @ ws[0].T + ws[1])
            h = torch.relu(h @ ws[2].T + ws[3])
            return F.cross_entropy(h @ ws[4].T + ws[5], y)

        H = torch.autograd.functional.hessian(loss_of, p0).numpy()
        top = np.linalg.eigvalsh(H)[::-1][:3]
        np.testing.assert_allclose([float(r[f"top_eigenvalues{i}"]) for i in (1, 2, 3)], top, rtol=1e-8, atol=1e-12)
    assert list(rows["hessian"][0].keys()) == ["step", "top_eigenvalues1", "top_eigenvalues2", "top_eigenvalues3",
                                               "matvecs", "converged"]
    assert rows["hessian"][0]["converged"] == "true"
    # Rows are plain Python values: lists of floats, as the ntk row's eigenvalues.
    assert type(tracker.rows["hessian"][0]["top_eigenvalues"]) is list
    assert type(tracker.rows["response"][0]["features"][0]) is dict
    if not CLI:
        pytest.skip("DYNASCOPE_CLI (the CLI binary) is not set")
    # The CLI on the folder (its data from report.json) writes the same files byte for byte: same
    # columns, order, number format, checkpoint names and values.
    text = {m: (d / f"{m}.csv").read_text() for m in ("llc", "elasticity", "response", "lc")}
    llc = cli("llc", "--checkpoints", d, "--out-csv", tmp_path / "l.csv", "--chains", 2, "--draws", 5, "--burnin", 2,
              "--seed", 4)
    assert (tmp_path / "l.csv").read_text() == text["llc"]
    for mine, theirs in zip(rows["llc"], llc["rows"]):
        assert float(mine["init_loss"]) == pytest.approx(theirs["init_loss"], rel=1e-9)
    cli("elasticity", "--checkpoints", d, "--out-csv", tmp_path / "e.csv", "--seed", 4)
    assert (tmp_path / "e.csv").read_text() == text["elasticity"]
    assert rows["elasticity"][0]["checkpoint"] == str(d / "step_0000000.safetensors")
    cli("response", "--checkpoints", d, "--out-csv", tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text() == text["response"]
    # lc: the CLI adds random points (and test points when the run has a test split) to the
    # training points' rows, which are the Tracker's.
    cli("lc", "--checkpoints", d, "--out-csv", tmp_path / "c.csv", "--radius", 0.05, "--dims", 2, "--seed", 4)
    theirs = (tmp_path / "c.csv").read_text().splitlines(keepends=True)
    assert [ln.split(",")[1] for ln in theirs[1:]] == ["train", "random"] * 3
    assert theirs[0] + "".join(ln for ln in theirs[1:] if ln.split(",")[1] == "train") == text["lc"]
    for mine in rows["lc"]:
        lc = cli("lc", "--model", d / f"step_{int(mine['step']):07d}.safetensors", "--inputs", d / "inputs.npy",
                 "--radius", 0.05, "--dims", 2, "--seed", 4)
        assert mine["total_mean"] == "%.10g" % lc["total_mean"]
        assert [mine["layer1"], mine["layer3"]] == ["%.10g" % lc["per_layer_mean"][0], "%.10g" % lc["per_layer_mean"][2]]


class SmallCnn(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU -> AvgPool2d -> Linear, with a bool buffer (stored widened)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(12, 3)
        self.register_buffer("mask", torch.tensor([True, False, True]))

    def forward(self, x):
        return self.fc(self.pool(self.act(self.bn(self.conv(x)))).flatten(1))


@pytest.mark.skipif(not _have("torch_ntk", "kernel_summary", "kernel_distance", "torch_curvature_operator", "eigsh",
                              "local_complexity", "torch_loss_grad", "llc", "torch_elasticity", "torch_response"),
                    reason="the generic torch functions are not all there")
def test_cnn_builtin_measures_through_the_generic_paths(tmp_path):
    """A CNN (not an MLP) tracked with every built-in measure: its checkpoints are state_dicts that
    load back into the module, each row is what a direct call of the generic function gives on
    the checkpoint's module (in eval mode), the NTK is torch autograd's, and report.json says which
    path each measure took and that the network is a torch module the CLI cannot read."""
    torch.manual_seed(3)
    cnn = SmallCnn().double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(12, 1, 6, 6, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (12,), generator=g)
    d = tmp_path / "cnn"
    measures = ["ntk", ("hessian", {"k": 2}), ("lc", {"dims": 4, "layers": ["bn", "fc"]}),
                ("llc", {"chains": 2, "draws": 4, "burnin": 2}), "elasticity", ("response", {"samples": 8})]
    opt = torch.optim.SGD(cnn.parameters(), lr=0.1)
    states = {}
    with dynascope.Tracker(cnn, (x, y), every=2, measures=measures, out_dir=str(d), seed=5, threads=1) as tracker:
        for t in range(4):
            if t:
                loss = F.cross_entropy(cnn(x), y)   # train mode: batch statistics, running stats move
                opt.zero_grad()
                loss.backward()
                opt.step()
            before = {k: v.clone() for k, v in cnn.state_dict().items()}
            tracker.step(t, loss=loss if t else None)
            # Measuring changed nothing: the module is back in train mode, its buffers untouched.
            assert cnn.training and cnn.bn.training
            assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
            states[t] = before
    steps = [0, 2, 3]
    assert sorted(f for f in os.listdir(d) if f.startswith("step_")) == [f"step_{s:07d}.safetensors" for s in steps]
    report = json.load(open(d / "report.json"))
    net = report["network"]
    assert net["kind"] == "torch_module" and net["class"].endswith("SmallCnn")
    assert net["parameters"] == sum(p.numel() for p in cnn.parameters())
    assert report["ntk"]["path"] == "torch_module"
    assert report["ntk"]["calls"] == ["dynascope.torch_ntk", "dynascope.kernel_summary", "dynascope.kernel_distance"]
    assert report["llc"]["calls"] == ["dynascope.torch_loss_grad", "dynascope.llc"]
    assert report["hessian"]["calls"][0] == "dynascope.torch_curvature_operator"
    assert report["elasticity"]["calls"] == ["dynascope.torch_elasticity"]
    assert report["response"]["calls"] == ["dynascope.torch_response"]
    rows = tracker.rows
    # Plain Python values, the same for every measure.
    assert type(rows["ntk"][0]["eigenvalues"]) is list and type(rows["hessian"][0]["top_eigenvalues"]) is list
    assert all(type(v) is float for v in rows["ntk"][0]["eigenvalues"] + rows["hessian"][0]["top_eigenvalues"])
    assert type(rows["response"][0]["features"][0]) is dict and type(rows["elasticity"][0]["mean"]) is float
    diag = float(np.linalg.norm(x.reshape(12, -1).numpy().max(0) - x.reshape(12, -1).numpy().min(0)))
    first_kernel = None
    for i, s in enumerate(steps):
        path = str(d / f"step_{s:07d}.safetensors")
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata()
        assert meta["network"] == "torch_module" and meta["class"] == net["class"] and meta["step"] == str(s)
        # The checkpoint round trip: the state_dict (buffers, int64 counter and bool mask included).
        m = dynascope.load_state_dict(path, SmallCnn().double())
        for k, v in m.state_dict().items():
            assert v.dtype == states[s][k].dtype and torch.equal(v, states[s][k]), k
        with pytest.raises(dynascope.InvalidArgument, match="state_dict of a torch module .*SmallCnn.*load_state_dict"):
            dynascope.load_checkpoint(path)
        m.eval()
        # ntk: torch_ntk of the first 64 (all 12) samples, summarised by kernel_summary.
        K = dynascope.torch_ntk(m, x, threads=1)
        first_kernel = K if first_kernel is None else first_kernel
        ks = dynascope.kernel_summary(K, y, k=5, seed=5, threads=1)
        r = rows["ntk"][i]
        assert r["step"] == s and r["samples"] == 12
        assert r["trace"] == pytest.approx(ks.trace, rel=1e-13) and r["kta_centered"] == pytest.approx(ks.kta_centered,
                                                                                                      rel=1e-12)
        np.testing.assert_allclose(r["eigenvalues"], ks.eigenvalues.numpy(), rtol=1e-12)
        assert r["distance_to_init"] == pytest.approx(dynascope.kernel_distance(first_kernel, K), rel=1e-9, abs=1e-13)
        # ... and the kernel's trace against torch autograd Jacobians directly.
        assert r["trace"] == pytest.approx(np.trace(ntk_reference(m, x)), rel=1e-10)
        # hessian: eigsh of torch_curvature_operator with cross-entropy.
        e = dynascope.eigsh(dynascope.torch_curvature_operator(m, F.cross_entropy, x, y), k=2, seed=5, threads=1,
                            progress=False)
        np.testing.assert_allclose(rows["hessian"][i]["top_eigenvalues"], e.eigenvalues.numpy(), rtol=1e-10)
        # lc: local_complexity with the forward hooks on the given layers, radius 1% of the diagonal.
        lc = dynascope.local_complexity(m, x, radius=0.01 * diag, dims=4, layers=["bn", "fc"], seed=5, threads=1,
                                        progress=False)
        assert rows["lc"][i]["counts"] == lc.counts.tolist() and rows["lc"][i]["layers"] == ["bn", "fc"]
        assert rows["lc"][i]["total_mean"] == lc.total_mean
        # llc: the chains of torch_loss_grad's callback with the run's seed.
        ll = dynascope.llc(dynascope.torch_loss_grad(m, "xent", x, y), chains=2, draws=4, burnin=2, seed=5, threads=1,
                           progress=False)
        assert rows["llc"][i]["init_loss"] == pytest.approx(float(F.cross_entropy(m(x), y)), rel=1e-12)
        np.testing.assert_allclose(rows["llc"][i]["loss_trace"], ll.loss_trace.numpy(), rtol=1e-12)
        assert rows["llc"][i]["llc_mean"] == pytest.approx(ll.llc_mean, rel=1e-9)
        # elasticity (float64, all 12 <= 512 samples) and response (the first 8).
        el = dynascope.torch_elasticity(m, x, y, progress=False)
        np.testing.assert_allclose(rows["elasticity"][i]["s_rel"], el.s_rel.numpy(), rtol=1e-12)
        assert rows["elasticity"][i]["ratio"] == pytest.approx(el.ratio, rel=1e-12)
        re = dynascope.torch_response(m, x[:8], y[:8], threads=1, progress=False)
        assert rows["response"][i]["mean_diagonal"] == pytest.approx(re.mean_diagonal, rel=1e-12)
        np.testing.assert_allclose(rows["response"][i]["layer_diagonal"], re.layer_diagonal.numpy(), rtol=1e-12)
        assert rows["response"][i]["features"][0]["effective_rank"] == pytest.approx(re.features[0].effective_rank,
                                                                                     rel=1e-12)
    # The CSVs: lc's columns count the captured layers, response's the parameter groups (conv, bn,
    # fc) and the feature spaces (the ReLU).
    assert read_csv(d / "lc.csv")[0].keys() >= {"layer1", "layer2"} and "layer3" not in read_csv(d / "lc.csv")[0]
    head = list(read_csv(d / "response.csv")[0].keys())
    assert head[4:10] == ["layer1_diagonal", "layer1_off_diagonal", "layer2_diagonal", "layer2_off_diagonal",
                          "layer3_diagonal", "layer3_off_diagonal"]
    assert head[10:] == ["effective_rank1", "participation_ratio1", "dead1", "duplicated1", "input_grad_norm"]
    assert [int(r["step"]) for r in read_csv(d / "ntk.csv")] == steps
    if CLI:
        # The command line reads MLP checkpoints only, and says so.
        p = subprocess.run([CLI, "llc", "--checkpoints", str(d), "--out-csv", str(tmp_path / "l.csv"), "--quiet"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "is the state_dict of a torch module" in p.stderr and "load_state_dict" in p.stderr


def test_state_dict_checkpoint_dtypes(tmp_path):
    """save_state_dict keeps float32/float64/int64/uint8 entries as they are (read by the safetensors
    package) and widens bool, int8, float16 and bfloat16 exactly, which load_state_dict restores."""
    m = nn.Linear(3, 2)
    m.register_buffer("flags", torch.tensor([True, False]))
    m.register_buffer("small", torch.tensor([-3, 7], dtype=torch.int8))
    m.register_buffer("h16", torch.tensor([0.1, -2.5], dtype=torch.float16))
    m.register_buffer("bf", torch.tensor([1.1, 3.0], dtype=torch.bfloat16))
    m.register_buffer("count", torch.tensor(5, dtype=torch.int64))
    path = str(tmp_path / "m.safetensors")
    dynascope.save_state_dict(path, m, {"note": "x"})
    raw = safetensors_numpy.load_file(path)
    assert raw["weight"].dtype == np.float32 and raw["count"].dtype == np.int64 and raw["flags"].dtype == np.uint8
    np.testing.assert_array_equal(raw["weight"], m.weight.detach().numpy())
    with safe_open(path, framework="numpy") as f:
        assert f.metadata()["note"] == "x" and f.metadata()["format"] == "pt"
    back = dynascope.load_state_dict(path)
    for k, v in m.state_dict().items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    fresh = nn.Linear(3, 2)
    for k in ("flags", "small", "h16", "bf", "count"):
        fresh.register_buffer(k, torch.zeros_like(getattr(m, k)))
    assert dynascope.load_state_dict(path, fresh) is fresh and torch.equal(fresh.weight, m.weight)
    m.register_buffer("z", torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(dynascope.InvalidArgument, match="'z' is complex64, which the checkpoints cannot hold"):
        dynascope.save_state_dict(path, m)
    with pytest.raises(dynascope.InvalidArgument, match="'z' is complex64.*checkpoints=False"):
        dynascope.Tracker(m, torch.randn(4, 3), out_dir=str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")


def test_core_file_bindings_against_numpy_and_safetensors(tmp_path):
    """The compiled writers and readers the Tracker uses, against NumPy's and the safetensors
    package's own readers and writers."""
    from dynascope import _core
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    labels = np.array([2, 0, 1], dtype=np.int64)
    _core.write_safetensors(str(tmp_path / "t.safetensors"), [("a", a), ("labels", labels)], {"k": "v"})
    back = safetensors_numpy.load_file(str(tmp_path / "t.safetensors"))
    np.testing.assert_array_equal(back["a"], a)
    np.testing.assert_array_equal(back["labels"], labels)
    safetensors_numpy.save_file({"b": np.eye(2), "c": np.ones(3, np.uint8)}, str(tmp_path / "s.safetensors"),
                                metadata={"x": "y"})
    meta, tensors = _core.read_safetensors(str(tmp_path / "s.safetensors"))
    assert meta == {"x": "y"}
    got = dict(tensors)
    np.testing.assert_array_equal(got["b"], np.eye(2))
    assert got["c"].dtype == np.uint8
    for arr in (a, labels, np.linspace(0, 1, 5)):
        _core.write_npy(str(tmp_path / "x.npy"), arr)
        np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), arr)
        np.testing.assert_array_equal(_core.read_npy(str(tmp_path / "x.npy")), arr)
    with pytest.raises(dynascope.InvalidArgument, match="float32, float64, int32, int64 or uint8"):
        _core.write_npy(str(tmp_path / "h.npy"), np.zeros(2, np.float16))
    _core.write_text_atomic(str(tmp_path / "t.txt"), "hello\n")
    assert (tmp_path / "t.txt").read_text() == "hello\n"
    with pytest.raises(dynascope.Error, match="no_such_folder"):
        _core.write_text_atomic(str(tmp_path / "no_such_folder" / "t.txt"), "x")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
