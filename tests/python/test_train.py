"""dynascope.train against torch.optim on the same network and data, in float64.

The reference trains a copy of the nn.Sequential with torch.nn.MSELoss / CrossEntropyLoss and
torch.optim.SGD / Adam / AdamW; minibatches are checked by brute force: every step must be a torch
step on one of the samples not yet used in its epoch.
"""
import _thread
import copy

import numpy as np
import pytest

import dynascope
import helpers
from helpers import flat, make_model

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


def criterion(loss, out, y):
    if loss == "xent":
        return F.cross_entropy(out, y)
    target = F.one_hot(y, out.shape[1]).to(out.dtype) if y.dtype == torch.int64 else y
    return F.mse_loss(out, target)


def torch_optimizer(name, params, **kw):
    if name == "sgd":
        return torch.optim.SGD(params, lr=kw.get("lr", 1e-2), weight_decay=kw.get("weight_decay", 0.0))
    if name == "momentum":
        return torch.optim.SGD(params, lr=kw.get("lr", 1e-2), momentum=kw.get("momentum", 0.9),
                               weight_decay=kw.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(params, lr=kw.get("lr", 1e-3), betas=kw.get("betas", (0.9, 0.999)),
                                eps=kw.get("eps", 1e-8), weight_decay=kw.get("weight_decay", 0.0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=kw.get("lr", 1e-3), betas=kw.get("betas", (0.9, 0.999)),
                                 eps=kw.get("eps", 1e-8), weight_decay=kw.get("weight_decay", 1e-2))
    raise ValueError(name)


def torch_train(model, x, y, loss, optimizer, steps, **kw):
    """Full-batch training: (minibatch losses, accuracies, parameters after each step (step 0 first))."""
    m = copy.deepcopy(model)
    opt = torch_optimizer(optimizer, m.parameters(), **kw)
    losses, accuracies, params = [], [], [flat(m)]
    for _ in range(steps):
        opt.zero_grad()
        out = m(x)
        value = criterion(loss, out, y)
        losses.append(value.item())
        if y.dtype == torch.int64:
            accuracies.append((out.argmax(1) == y).double().mean().item())
        value.backward()
        opt.step()
        params.append(flat(m))
    return losses, accuracies, params


def full_loss(model, w, x, y, loss):
    m = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(w, m.parameters())
    with torch.no_grad():
        out = m(x)
        return criterion(loss, out, y).item(), (out.argmax(1) == y).double().mean().item() if y.dtype == torch.int64 \
            else None


def data(n, d, seed, labels=None, outputs=2):
    return helpers.data(n, d, seed, labels, outputs)


@pytest.mark.parametrize("optimizer,kw", [
    ("sgd", {}), ("sgd", {"lr": 0.1, "weight_decay": 0.01}), ("momentum", {"lr": 0.05, "momentum": 0.8}),
    ("adam", {}), ("adam", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01})])
@pytest.mark.parametrize("task", ["regression", "xent", "mse-labels"])
def test_full_batch_matches_torch_optim(optimizer, kw, task):
    model = make_model((3, 8, 6, 3), seed=1)
    x, y = data(10, 3, 2, labels=None if task == "regression" else 3, outputs=3)
    loss = "mse" if task != "xent" else "xent"
    steps = 12
    losses, accuracies, params = torch_train(model, x, y, loss, optimizer, steps, **kw)
    mlp = dynascope.Mlp.from_torch(model)
    p0 = mlp.params.clone()
    r = dynascope.train(mlp, x, y, loss=loss if task == "mse-labels" else None, optimizer=optimizer, steps=steps,
                        save_every=5, save_log=3, threads=1, progress=False, **kw)
    assert r.loss == loss and r.steps_done == steps and not r.diverged and r.diverged_at_step is None
    assert torch.equal(mlp.params, p0)                     # the model passed in is not changed
    assert isinstance(r.model.params, torch.Tensor) and r.model.arch == mlp.arch
    np.testing.assert_array_equal(r.history_step.numpy(), np.arange(steps))
    np.testing.assert_allclose(r.history_loss.numpy(), losses, rtol=1e-12, atol=0)
    if task == "regression":
        assert r.history_accuracy is None and r.final_accuracy is None
    else:
        np.testing.assert_array_equal(r.history_accuracy.numpy(), accuracies)
    np.testing.assert_allclose(r.model.params.numpy(), params[-1].numpy(), rtol=0, atol=1e-12)
    # Checkpoints at 0, every 5 steps, at round(12 ** (i / 3)) = 2, 5, 12, and the end, with the
    # loss over the whole set.
    assert [c.step for c in r.checkpoints] == [0, 2, 5, 10, 12]
    for c in r.checkpoints:
        np.testing.assert_allclose(c.model.params.numpy(), params[c.step].numpy(), rtol=0, atol=1e-12)
        value, accuracy = full_loss(model, params[c.step], x, y, loss)
        assert c.train_loss == pytest.approx(value, rel=1e-12)
        assert c.train_accuracy == accuracy
    value, accuracy = full_loss(model, params[-1], x, y, loss)
    assert r.final_loss == pytest.approx(value, rel=1e-12) and r.final_accuracy == accuracy
    expected_lr = kw.get("lr", 1e-2 if optimizer in ("sgd", "momentum") else 1e-3)
    assert r.optimizer["kind"] == optimizer and r.optimizer["lr"] == expected_lr


@pytest.mark.parametrize("batch", [1, 2])
def test_minibatches_are_torch_steps_over_a_permutation(batch):
    model = make_model((2, 5, 1), seed=3)
    n = 4
    x, y = data(n, 2, 4, outputs=1)
    steps = 2 * n // batch                    # two epochs
    mlp = dynascope.Mlp.from_torch(model)
    lr = 0.1
    r = dynascope.train(mlp, x, y, optimizer="sgd", lr=lr, steps=steps, batch=batch, seed=7, save_every=1, threads=1,
                        progress=False)
    assert [c.step for c in r.checkpoints] == list(range(steps + 1))
    params = [c.model.params for c in r.checkpoints]
    from itertools import combinations
    for epoch in range(2):
        left = set(range(n))
        for k in range(n // batch):
            s = epoch * (n // batch) + k
            matches = []
            for rows in combinations(sorted(left), batch):
                m = copy.deepcopy(model)
                torch.nn.utils.vector_to_parameters(params[s].clone(), m.parameters())
                opt = torch.optim.SGD(m.parameters(), lr=lr)
                idx = list(rows)
                value = F.mse_loss(m(x[idx]), y[idx])
                value.backward()
                opt.step()
                if torch.allclose(flat(m), params[s + 1], rtol=0, atol=1e-13):
                    matches.append((rows, value.item()))
            assert len(matches) == 1, f"step {s}: {len(matches)} minibatches of the unused samples match"
            rows, value = matches[0]
            assert r.history_loss[s].item() == pytest.approx(value, rel=1e-12)
            left -= set(rows)
        assert not left                        # each epoch visits every sample once
    # The order is a function of the seed.
    again = dynascope.train(mlp, x, y, optimizer="sgd", lr=lr, steps=steps, batch=batch, seed=7, threads=1,
                            progress=False)
    assert torch.equal(again.model.params, r.model.params)
    if batch == 1:
        other = [dynascope.train(mlp, x, y, optimizer="sgd", lr=lr, steps=steps, batch=batch, seed=s, threads=1,
                                 progress=False).history_loss for s in (8, 9, 10)]
        assert any(not torch.equal(o, r.history_loss) for o in other)


def test_frameworks_numpy_float32_and_jax():
    model = make_model((3, 6, 2), seed=5)
    x, y = data(8, 3, 6, labels=2)
    mlp = dynascope.Mlp.from_torch(model)
    ref = dynascope.train(mlp, x, y, steps=5, threads=1, progress=False)
    mn = dynascope.Mlp(mlp.arch, mlp.params.numpy().copy(), activation="tanh")
    rn = dynascope.train(mn, x.numpy(), y.numpy().astype(np.int32), steps=5, threads=1, progress=False)
    assert isinstance(rn.model.params, np.ndarray) and isinstance(rn.history_loss, np.ndarray)
    np.testing.assert_array_equal(rn.model.params, ref.model.params.numpy())
    # float32 against torch in float32.
    m32 = copy.deepcopy(model).float()
    losses, _, params = torch_train(m32, x.float(), y, "xent", "adam", 5)
    r32 = dynascope.train(dynascope.Mlp.from_torch(m32), x.float(), y, optimizer="adam", steps=5, threads=1,
                          progress=False)
    assert r32.model.params.dtype == torch.float32
    np.testing.assert_allclose(r32.history_loss.numpy(), losses, rtol=1e-5)
    np.testing.assert_allclose(r32.model.params.numpy(), params[-1].numpy(), rtol=0, atol=1e-5)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    mj = dynascope.Mlp(mlp.arch, jnp.asarray(mlp.params.numpy()), activation="tanh")
    rj = dynascope.train(mj, jnp.asarray(x.numpy()), jnp.asarray(y.numpy()), steps=5, threads=1, progress=False)
    assert isinstance(rj.model.params, jax.Array) and isinstance(rj.history_loss, jax.Array)
    np.testing.assert_array_equal(np.asarray(rj.model.params), ref.model.params.numpy())


def test_divergence_is_reported_not_raised():
    model = make_model((3, 6, 2), act=nn.ReLU, seed=7)
    x, y = data(6, 3, 8)
    r = dynascope.train(dynascope.Mlp.from_torch(model), x, y * 1e3, lr=1e6, steps=50, threads=1, progress=False)
    assert r.diverged and 0 < r.diverged_at_step < 50 and r.steps_done == r.diverged_at_step
    assert not np.isfinite(r.history_loss[-1].item()) and len(r.history_loss) == r.diverged_at_step + 1


def test_progress_each_step_and_stopping():
    model = make_model((3, 8, 2), seed=9)
    x, y = data(6, 3, 10)
    mlp = dynascope.Mlp.from_torch(model)
    p0 = mlp.params.clone()
    calls = []
    dynascope.train(mlp, x, y, steps=7, threads=1, progress=lambda *a: calls.append(a))
    assert [c for c in calls if c[0] == "train"] == [("train", k, 7) for k in range(1, 8)]

    class Stop(Exception):
        pass

    def stop_at_3(task, done, total):
        if done == 3:
            raise Stop("enough")
    with pytest.raises(Stop, match="enough"):
        dynascope.train(mlp, x, y, steps=100, threads=1, progress=stop_at_3)

    # Ctrl-C: a SIGINT during training stops it with KeyboardInterrupt.
    def interrupt_at_2(task, done, total):
        if done == 2:
            _thread.interrupt_main()
    seen = []
    with pytest.raises(KeyboardInterrupt):
        dynascope.train(mlp, x, y, steps=1000, threads=1,
                        progress=lambda t, d, n: (seen.append(d), interrupt_at_2(t, d, n)))
    assert max(seen) < 10
    assert torch.equal(mlp.params, p0)


def test_bad_input_gives_clear_errors():
    model = make_model((3, 8, 2), seed=11)
    mlp = dynascope.Mlp.from_torch(model)
    x, y = data(6, 3, 12)
    xl, yl = data(6, 3, 12, labels=2)
    T = dynascope.train
    with pytest.raises(dynascope.InvalidArgument, match="batch: 7 is larger than the 6 training samples"):
        T(mlp, x, y, batch=7)
    with pytest.raises(dynascope.InvalidArgument, match="lr: expected a finite number >= 0"):
        T(mlp, x, y, lr=-1.0)
    with pytest.raises(dynascope.InvalidArgument, match=r"betas\[1\]"):
        T(mlp, x, y, optimizer="adam", betas=(0.9, 1.0))
    with pytest.raises(dynascope.InvalidArgument, match="betas: expected two numbers"):
        T(mlp, x, y, betas=0.9)
    with pytest.raises(dynascope.InvalidArgument, match="optimizer"):
        T(mlp, x, y, optimizer="rmsprop")
    with pytest.raises(dynascope.InvalidArgument, match="steps: expected an integer >= 0"):
        T(mlp, x, y, steps=-1)
    with pytest.raises(dynascope.InvalidArgument, match="save_every"):
        T(mlp, x, y, save_every=1.5)
    with pytest.raises(dynascope.InvalidArgument, match="save_log"):
        T(mlp, x, y, save_log=-1)
    with pytest.raises(dynascope.InvalidArgument, match="class label 2 at row"):
        T(mlp, xl, yl * 2)
    with pytest.raises(dynascope.ShapeMismatch, match=r"targets: expected float targets of shape \[6, 2\]"):
        T(mlp, x, y[:4])
    with pytest.raises(dynascope.ShapeMismatch, match="targets: expected 6 labels"):
        T(mlp, xl, yl[:4])
    with pytest.raises(dynascope.InvalidArgument, match="loss: xent needs integer class labels"):
        T(mlp, x, y, loss="xent")
    with pytest.raises(dynascope.InvalidArgument, match="x: dtype float32 differs"):
        T(mlp, x.float(), y)
    bad = y.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(dynascope.InvalidArgument, match="targets: contains NaN or infinite"):
        T(mlp, x, bad)
    with pytest.raises(dynascope.InvalidArgument, match="model: expected a dynascope.Mlp"):
        T(model, x, y)
    with pytest.raises(dynascope.InvalidArgument, match="x: the array is not C-contiguous"):
        T(mlp, torch.randn(3, 6, dtype=torch.float64).T, y)


def test_train_equals_the_command_line(tmp_path):
    import csv
    import json
    import os
    import subprocess
    cli = os.environ.get("DYNASCOPE_CLI")
    if not cli:
        pytest.skip("DYNASCOPE_CLI is not set (ctest sets it to the command-line tool of the build)")
    st = pytest.importorskip("safetensors.numpy")
    model = make_model((3, 6, 3), seed=13)
    x, y = data(9, 3, 14, labels=3)
    st.save_file({k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"),
                 metadata={"activation": "tanh"})
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    subprocess.run([cli, "train", "--model", str(tmp_path / "m.safetensors"), "--inputs", str(tmp_path / "x.npy"),
                    "--targets", str(tmp_path / "y.npy"), "--optimizer", "momentum", "--lr", "0.05", "--steps", "20",
                    "--batch", "4", "--seed", "5", "--save-every", "10", "--dtype", "float64", "--threads", "1",
                    "--quiet", "--out-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out.json")], check=True)
    r = dynascope.train(dynascope.Mlp.from_torch(model), x, y, optimizer="momentum", lr=0.05, steps=20, batch=4,
                        seed=5, save_every=10, threads=1, progress=False)
    j = json.loads((tmp_path / "out.json").read_text())
    assert r.final_loss == j["final_loss"] and r.final_accuracy == j["final_accuracy"]
    assert [c.step for c in r.checkpoints] == [c["step"] for c in j["checkpoints"]]
    assert [c.train_loss for c in r.checkpoints] == [c["train_loss"] for c in j["checkpoints"]]
    saved = st.load_file(str(tmp_path / "run" / "step_0000020.safetensors"))
    flat_saved = np.concatenate([saved[k].reshape(-1) for k in
                                 ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias")])
    np.testing.assert_array_equal(r.model.params.numpy(), flat_saved)
    with open(tmp_path / "run" / "train.csv") as f:
        rows = list(csv.DictReader(f))
    np.testing.assert_allclose(r.history_loss.numpy(), [float(row["loss"]) for row in rows], rtol=1e-8)
