"""dynascope.llc: SGLD chains on an Mlp and on Python batched loss-and-gradient callbacks.

References, none of them dynascope's Python layer:
  * the quadratic loss L(w) = 1/2 sum_i h_i (w_i - w*_i)^2 through a NumPy callback: full-batch,
    stationary SGLD has E[lambda-hat] = 1/2 sum_i [nb h_i / a_i] / (1 - eps a_i / 4) and
    E|w - w*|^2 = sum_i 1 / (a_i (1 - eps a_i / 4)), a_i = nb h_i + gamma (each coordinate is an
    AR(1) chain), written out below in NumPy;
  * the command-line tool (DYNASCOPE_CLI) on the same network, data and seed: identical numbers;
  * the Mlp's chains against the same chains driven by torch autograd gradients (the same noise and
    minibatches for the same seed, so the traces agree to rounding);
  * torch_loss_grad's vmap'd losses and gradients against a plain per-chain torch.autograd loop;
  * the estimate's fields against NumPy recomputations from the returned traces.
"""
import _thread
import json
import math
import os
import subprocess
import threading
import time

import numpy as np
import pytest

import dynascope
from helpers import PoolCnn

torch = pytest.importorskip("torch")
nn = torch.nn


# ---------------------------------------------------------------------------------------------
# The quadratic case.

H = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 5.0])
NBETA, GAMMA, EPS = 10.0, 1.0, 0.02


def quad_llc(h, nbeta, gamma, eps):
    a = nbeta * h + gamma
    return 0.5 * np.sum((nbeta * h / a) / (1 - eps * a / 4))


def quad_dist2(h, nbeta, gamma, eps):
    a = nbeta * h + gamma
    return np.sum(1 / (a * (1 - eps * a / 4)))


def numpy_quadratic(h, w_star, calls=None):
    def fn(params, batch):
        assert batch is None
        assert isinstance(params, np.ndarray) and not params.flags.writeable
        if calls is not None:
            calls.append(params.shape[0])
        d = params - w_star
        return 0.5 * (d * d * h).sum(axis=1), d * h
    return fn


def check_fields(r, chains, draws):
    """The summary statistics against NumPy recomputations from the traces."""
    lt = np.asarray(r.loss_trace)
    assert lt.shape == (chains, draws) and np.asarray(r.distance_trace).shape == (chains, draws)
    per_chain = r.nbeta * (lt.mean(axis=1) - r.init_loss)
    np.testing.assert_allclose(np.asarray(r.llc_per_chain), per_chain, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.llc_mean, per_chain.mean(), rtol=1e-12)
    np.testing.assert_allclose(r.llc_std, per_chain.std(ddof=1), rtol=1e-10)
    np.testing.assert_allclose(r.llc_stderr, per_chain.std(ddof=1) / math.sqrt(chains), rtol=1e-10)
    assert r.chains == chains and r.draws == draws and r.diverged == {}


def test_quadratic_closed_form_through_numpy_callback():
    rng = np.random.default_rng(1)
    w_star = rng.normal(size=H.size)
    calls = []
    C, D = 16, 4000
    r = dynascope.llc(numpy_quadratic(H, w_star, calls), w_star=w_star, n=100, chains=C, draws=D, burnin=500,
                      epsilon=EPS, gamma=GAMMA, nbeta=NBETA, seed=7, threads=1, progress=False)
    assert calls[0] == 1 and set(calls[1:]) == {C}   # L_n(w*) once, then every chain per step
    assert len(calls) == 1 + 500 + D
    assert r.init_loss == 0.0 and r.nbeta == NBETA and r.n == 100
    check_fields(r, C, D)
    expected = quad_llc(H, NBETA, GAMMA, EPS)
    assert r.llc_stderr < 0.03 * expected            # the comparison below is a sharp one
    assert abs(r.llc_mean - expected) < 4 * r.llc_stderr, (r.llc_mean, expected, r.llc_stderr)
    # The distance trace: E|w - w*|^2 over all chains and draws (the zero-curvature coordinate included).
    d2 = (np.asarray(r.distance_trace) ** 2).mean(axis=1)
    assert abs(d2.mean() - quad_dist2(H, NBETA, GAMMA, EPS)) < 4 * d2.std(ddof=1) / math.sqrt(C)
    assert 0.5 < r.mala_acceptance <= 1 and 0.95 < r.r_hat < 1.05 and r.ess > 100
    assert isinstance(r.loss_trace, np.ndarray) and r.loss_trace.dtype == np.float64


def test_quadratic_mask_and_bounding_box():
    w_star = np.linspace(-1, 1, H.size)
    mask = np.array([0, 1, 0, 1, 1, 0], dtype=np.int32)
    C, D = 12, 3000
    r = dynascope.llc(numpy_quadratic(H, w_star), w_star=w_star, n=50, chains=C, draws=D, burnin=500, epsilon=EPS,
                      gamma=GAMMA, nbeta=NBETA, mask=mask, seed=2, threads=1, progress=False)
    hm = H[mask == 1]
    expected = quad_llc(hm, NBETA, GAMMA, EPS)
    assert r.options["free_parameters"] == 3
    assert abs(r.llc_mean - expected) < 4 * r.llc_stderr and r.llc_stderr < 0.05 * expected
    d2 = (np.asarray(r.distance_trace) ** 2).mean(axis=1)
    assert abs(d2.mean() - quad_dist2(hm, NBETA, GAMMA, EPS)) < 4 * d2.std(ddof=1) / math.sqrt(C)
    # A box of half-width B keeps every coordinate within B of w*.
    B = 0.05
    r = dynascope.llc(numpy_quadratic(H, w_star), w_star=w_star, n=50, chains=4, draws=200, burnin=50, epsilon=EPS,
                      gamma=GAMMA, nbeta=NBETA, bounding_box=B, seed=2, threads=1, progress=False)
    assert np.asarray(r.distance_trace).max() <= B * math.sqrt(H.size) * (1 + 1e-12)
    assert r.options["bounding_box"] == B


def test_quadratic_torch_callback_float32():
    """torch in, torch out; float32 chains (the callback gets float32 parameters) still follow the
    closed form."""
    w_star = torch.linspace(-1, 1, H.size, dtype=torch.float32)
    h = torch.tensor(H, dtype=torch.float32)
    seen = {}

    def fn(params, batch):
        seen["type"], seen["dtype"] = type(params), params.dtype
        d = params - w_star
        return 0.5 * (d * d * h).sum(1).double(), (d * h).double()   # float64 results are cast

    r = dynascope.llc(fn, w_star=w_star, n=100, chains=16, draws=3000, burnin=500, epsilon=EPS, gamma=GAMMA,
                      nbeta=NBETA, seed=5, threads=1, progress=False)
    assert seen == {"type": torch.Tensor, "dtype": torch.float32}
    assert isinstance(r.loss_trace, torch.Tensor) and isinstance(r.llc_per_chain, torch.Tensor)
    check_fields(r, 16, 3000)
    expected = quad_llc(H, NBETA, GAMMA, EPS)
    assert abs(r.llc_mean - expected) < 4 * r.llc_stderr and r.llc_stderr < 0.04 * expected


def test_quadratic_jax_callback():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    w_star = jnp.asarray(np.linspace(-1, 1, H.size))
    h = jnp.asarray(H)

    @jax.jit
    def fn(params, batch):
        d = params - w_star
        return 0.5 * (d * d * h).sum(1), d * h

    r = dynascope.llc(fn, w_star=w_star, n=100, chains=8, draws=1500, burnin=500, epsilon=EPS, gamma=GAMMA,
                      nbeta=NBETA, seed=3, threads=1, progress=False)
    assert isinstance(r.loss_trace, jax.Array)
    check_fields(r, 8, 1500)
    expected = quad_llc(H, NBETA, GAMMA, EPS)
    assert abs(r.llc_mean - expected) < 4 * r.llc_stderr and r.llc_stderr < 0.06 * expected
    # The same chains from a NumPy callback: the same noise, so the same traces up to rounding.
    r2 = dynascope.llc(numpy_quadratic(H, np.asarray(w_star)), w_star=np.asarray(w_star), n=100, chains=8, draws=1500,
                       burnin=500, epsilon=EPS, gamma=GAMMA, nbeta=NBETA, seed=3, threads=1, progress=False)
    np.testing.assert_allclose(np.asarray(r.loss_trace), r2.loss_trace, rtol=1e-9, atol=1e-12)


def test_calibrate_quadratic_against_closed_form():
    w_star = np.zeros(H.size)
    cal = dynascope.llc_calibrate(numpy_quadratic(H, w_star), w_star=w_star, n=100, epsilons=[0.005, 0.02],
                                  nbetas=[3.0, 10.0], chains=8, draws=2000, burnin=800, gamma=GAMMA, seed=1,
                                  threads=1, progress=False)
    assert cal.llc_mean.shape == (2, 2) and list(cal.nbetas) == [3.0, 10.0] and list(cal.epsilons) == [0.005, 0.02]
    for b, nb in enumerate(cal.nbetas):
        for e, eps in enumerate(cal.epsilons):
            r = cal.results[b][e]
            assert r.nbeta == nb and r.options["epsilon"] == eps and r.options["nbeta"] == nb
            expected = quad_llc(H, nb, GAMMA, eps)
            assert abs(cal.llc_mean[b, e] - expected) < 4.5 * cal.llc_stderr[b, e], (nb, eps, cal.llc_mean[b, e],
                                                                                      expected)
    assert (cal.diverged_chains == 0).all()
    assert "epsilon" in cal.table().splitlines()[0]


# ---------------------------------------------------------------------------------------------
# An Mlp on data.

def make_net(seed=0, act=nn.Tanh):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), act(), nn.Linear(8, 2)).double()


def make_data(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return x, y


def test_mlp_equals_torch_autograd_chains():
    """The library's batched engine and torch autograd drive the same chains (same seed: the same
    noise and minibatches), so their traces agree to rounding — for labels with xent and
    minibatches, and for float targets with mse and full batches."""
    net = make_net()
    x, y = make_data()
    m = dynascope.Mlp.from_torch(net)
    kw = dict(chains=4, draws=60, burnin=20, epsilon=1e-3, seed=11, threads=1, progress=False)
    a = dynascope.llc(m, x, y, batch=10, **kw)
    b = dynascope.llc(dynascope.torch_loss_grad(net, "xent", x, y), batch=10, **kw)
    np.testing.assert_allclose(a.loss_trace.numpy(), b.loss_trace.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a.distance_trace.numpy(), b.distance_trace.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a.llc_mean, b.llc_mean, rtol=1e-8)
    # L_n(w*) against torch directly.
    np.testing.assert_allclose(a.init_loss, nn.functional.cross_entropy(net(x), y).item(), rtol=1e-13)
    assert a.nbeta == pytest.approx(50 / math.log(50), rel=1e-15)
    check_fields(a, 4, 60)
    yf = torch.randn(50, 2, dtype=torch.float64)
    c = dynascope.llc(m, x, yf, **kw)
    d = dynascope.llc(dynascope.torch_loss_grad(net, "mse", x, yf), **kw)
    np.testing.assert_allclose(c.loss_trace.numpy(), d.loss_trace.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(c.init_loss, nn.functional.mse_loss(net(x), yf).item(), rtol=1e-13)
    assert c.options["batch"] == 0 and c.gradient_evaluations == 4 * (20 + 60)


def test_mlp_and_callback_agree_statistically_across_seeds():
    """Different seeds: independent chains of the two paths estimate the same lambda."""
    net = make_net(1)
    x, y = make_data(80, 1)
    kw = dict(chains=8, draws=400, burnin=300, epsilon=3e-3, gamma=100.0, nbeta=20.0, threads=1, progress=False)
    a = dynascope.llc(dynascope.Mlp.from_torch(net), x, y, seed=1, **kw)
    b = dynascope.llc(dynascope.torch_loss_grad(net, "xent", x, y), seed=2, **kw)
    assert abs(a.llc_mean - b.llc_mean) < 4.5 * math.hypot(a.llc_stderr, b.llc_stderr)
    assert a.llc_stderr < 0.2 * abs(a.llc_mean)


def cli():
    path = os.environ.get("DYNASCOPE_CLI")
    if not path or not os.path.exists(path):
        pytest.skip("DYNASCOPE_CLI is not set (ctest sets it to the built dynascope binary)")
    return path


@pytest.mark.parametrize("targets,extra", [("labels", {"batch": 10, "sampler": "rmsprop-sgld"}),
                                           ("values", {"thin": 2, "init_loss": "full", "gamma": 30.0})])
def test_mlp_equals_command_line(tmp_path, targets, extra):
    exe = cli()
    safetensors = pytest.importorskip("safetensors.torch")
    net = make_net(2, nn.ReLU)
    x, y = make_data(40, 2)
    if targets == "values":
        y = torch.randn(40, 2, dtype=torch.float64)
    safetensors.save_file(net.state_dict(), str(tmp_path / "m.safetensors"), metadata={"activation": "relu"})
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    kw = dict(chains=3, draws=40, burnin=10, epsilon=3e-4, seed=9, **extra)
    args = [exe, "llc", "--model", str(tmp_path / "m.safetensors"), "--inputs", str(tmp_path / "x.npy"),
            "--targets", str(tmp_path / "y.npy"), "--threads", "1", "--quiet", "--out", str(tmp_path / "o.json"),
            "--out-trace", str(tmp_path / "t.npy"), "--out-distance-trace", str(tmp_path / "d.npy")]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    ref = json.loads((tmp_path / "o.json").read_text())
    r = dynascope.llc(dynascope.Mlp.from_torch(net), x.numpy(), y.numpy(), threads=1, progress=False, **kw)
    np.testing.assert_array_equal(r.loss_trace, np.load(tmp_path / "t.npy"))
    np.testing.assert_array_equal(r.distance_trace, np.load(tmp_path / "d.npy"))
    for key in ("llc_mean", "llc_std", "llc_stderr", "init_loss", "nbeta", "n", "chains", "draws", "r_hat", "ess",
                "mala_acceptance", "warnings", "gradient_evaluations"):
        assert getattr(r, key) == ref[key], key
    assert list(r.llc_per_chain) == ref["llc_per_chain"]
    assert ref["loss"] == ("xent" if targets == "labels" else "mse")
    opts = dict(r.options)
    assert opts == ref["options"]


def test_mlp_calibrate_grid_and_points():
    net = make_net(3)
    x, y = make_data(30, 3)
    m = dynascope.Mlp.from_torch(net)
    kw = dict(chains=2, draws=20, burnin=5, seed=4, threads=1, progress=False)
    cal = dynascope.llc_calibrate(m, x, y, epsilon=2e-4, **kw)
    # The CLI's default grid: epsilon x 0.1, 0.3, 1, 3, 10 and n / ln n x 0.3, 1, 3.
    np.testing.assert_allclose(cal.epsilons, [2e-5, 6e-5, 2e-4, 6e-4, 2e-3], rtol=1e-15)
    np.testing.assert_allclose(cal.nbetas, np.array([0.3, 1, 3]) * 30 / math.log(30), rtol=1e-11)
    assert cal.llc_mean.shape == (3, 5)
    r = dynascope.llc(m, x, y, epsilon=float(cal.epsilons[3]), nbeta=float(cal.nbetas[2]), **kw)
    np.testing.assert_array_equal(cal.results[2][3].loss_trace.numpy(), r.loss_trace.numpy())
    assert cal.llc_mean[2, 3] == r.llc_mean


# ---------------------------------------------------------------------------------------------
# Any torch module.

def SmallCnn():
    return PoolCnn(torch.relu)


def test_torch_loss_grad_of_a_cnn_against_autograd_loop():
    torch.manual_seed(0)
    cnn = SmallCnn().double()
    x = torch.randn(12, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    fn = dynascope.torch_loss_grad(cnn, "xent", x, y, chunk_size=2)
    P = sum(p.numel() for p in cnn.parameters())
    assert fn.n == 12 and fn.w_star.shape == (P,)
    np.testing.assert_array_equal(fn.w_star.numpy(), torch.nn.utils.parameters_to_vector(cnn.parameters()).detach())
    params = fn.w_star + 0.05 * torch.randn(5, P, dtype=torch.float64)
    batch = torch.randint(0, 12, (5, 7))

    def reference(p, idx):
        ref = SmallCnn().double()
        torch.nn.utils.vector_to_parameters(p.clone(), ref.parameters())
        xs, ys = (x, y) if idx is None else (x[idx], y[idx])
        loss = nn.functional.cross_entropy(ref(xs), ys)
        g = torch.autograd.grad(loss, list(ref.parameters()))
        return loss.item(), torch.cat([t.reshape(-1) for t in g])

    for b in (None, batch):
        losses, grads = fn(params, b)
        assert losses.shape == (5,) and grads.shape == (5, P)
        for c in range(5):
            l, g = reference(params[c], None if b is None else b[c])
            np.testing.assert_allclose(losses[c].item(), l, rtol=1e-13)
            np.testing.assert_allclose(grads[c].numpy(), g.numpy(), rtol=1e-11, atol=1e-14)
    # The module is untouched, and an LLC run through the helper equals one through a plain
    # per-chain autograd loop (the same seed: the same noise and minibatches).
    kw = dict(chains=3, draws=15, burnin=5, epsilon=1e-3, batch=6, seed=1, threads=1, progress=False)
    r = dynascope.llc(fn, **kw)

    def loop(p, b):
        out = [reference(p[c], None if b is None else b[c]) for c in range(p.shape[0])]
        return torch.tensor([o[0] for o in out], dtype=torch.float64), torch.stack([o[1] for o in out])

    r2 = dynascope.llc(loop, w_star=fn.w_star, n=12, **kw)
    np.testing.assert_allclose(r.loss_trace.numpy(), r2.loss_trace.numpy(), rtol=1e-10)
    np.testing.assert_array_equal(fn.w_star.numpy(), torch.nn.utils.parameters_to_vector(cnn.parameters()).detach())


def test_torch_loss_grad_frozen_parameters_are_constants():
    net = make_net(4)
    x, y = make_data(20, 4)
    net[0].weight.requires_grad_(False)
    fn = dynascope.torch_loss_grad(net, "xent", x, y)
    trainable = [p for p in net.parameters() if p.requires_grad]
    np.testing.assert_array_equal(fn.w_star.numpy(), torch.nn.utils.parameters_to_vector(trainable).detach())
    params = fn.w_star + 0.1 * torch.randn(2, fn.w_star.shape[0], dtype=torch.float64)
    losses, grads = fn(params, None)
    for c in range(2):
        ref = make_net(4)
        torch.nn.utils.vector_to_parameters(params[c].clone(), [p for p in ref.parameters()][1:])
        loss = nn.functional.cross_entropy(ref(x), y)
        g = torch.autograd.grad(loss, [p for p in ref.parameters()][1:])
        np.testing.assert_allclose(losses[c].item(), loss.item(), rtol=1e-13)
        np.testing.assert_allclose(grads[c].numpy(), torch.cat([t.reshape(-1) for t in g]).numpy(), rtol=1e-11,
                                   atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Progress, cancellation, errors.

def test_progress_is_reported_and_an_exception_in_it_stops_the_chains():
    w_star = np.zeros(H.size)
    seen = []
    dynascope.llc(numpy_quadratic(H, w_star), w_star=w_star, n=10, chains=2, draws=100, burnin=50, nbeta=NBETA,
                  epsilon=EPS, gamma=GAMMA, threads=1,
                  progress=lambda task, done, total: seen.append((task, done, total)))
    assert seen and all(t.startswith("llc") for t, _, _ in seen) and all(total == 150 for _, _, total in seen)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen) and seen[-1][1] == 150
    assert any("llc " in t.split(":", 1)[-1] for t, _, _ in seen if ":" in t)   # the running estimate

    class Stop(Exception):
        pass

    calls = []

    def stop(task, done, total):
        if done >= 30:
            raise Stop("enough")

    fn = numpy_quadratic(H, w_star, calls)
    with pytest.raises(Stop, match="enough"):
        dynascope.llc(fn, w_star=w_star, n=10, chains=2, draws=10_000, burnin=0, threads=1, progress=stop)
    assert len(calls) < 200    # stopped at the first progress point after step 30


def test_an_exception_in_the_callback_stops_the_chains():
    w_star = np.zeros(4)
    calls = []

    def fn(params, batch):
        calls.append(1)
        if len(calls) == 7:
            raise ZeroDivisionError("boom in the loss")
        return np.zeros(params.shape[0]), np.zeros(params.shape)

    with pytest.raises(ZeroDivisionError, match="boom in the loss"):
        dynascope.llc(fn, w_star=w_star, n=10, chains=2, draws=1000, threads=1, progress=False)
    assert len(calls) == 7
    with pytest.raises(ZeroDivisionError):   # also in the sweep
        calls.clear()
        dynascope.llc_calibrate(fn, w_star=w_star, n=10, epsilons=[1e-4], nbetas=[1.0], chains=2, draws=1000,
                                threads=1, progress=False)


@pytest.mark.parametrize("path", ["callback", "mlp"])
def test_ctrl_c_stops_the_chains(path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread")
    if path == "callback":
        w_star = np.zeros(H.size)
        run = lambda: dynascope.llc(numpy_quadratic(H, w_star), w_star=w_star, n=10, chains=2, draws=10**7,
                                    threads=1, progress=False)
    else:
        net = make_net()
        x, y = make_data()
        # Signals are checked at the progress points (every 1% of the steps): 2000 steps apart here,
        # while the whole run would take seconds.
        run = lambda: dynascope.llc(dynascope.Mlp.from_torch(net), x, y, chains=2, draws=2 * 10**5, burnin=0,
                                    threads=1, progress=False)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    start = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 2


def test_callback_results_are_checked():
    w_star = np.zeros(3)
    cases = [
        (lambda p, b: (np.zeros(p.shape[0]), np.zeros((p.shape[0], 4))), dynascope.ShapeMismatch, r"grads \[C, P\]"),
        (lambda p, b: (np.zeros((p.shape[0], 1)), np.zeros(p.shape)), dynascope.ShapeMismatch, r"losses \[C\]"),
        (lambda p, b: np.zeros(p.shape), dynascope.InvalidArgument, r"return \(losses \[C\], grads \[C, P\]\)"),
        (lambda p, b: (np.zeros(p.shape[0], dtype=np.int64), np.zeros(p.shape)), dynascope.InvalidArgument,
         "floating-point"),
        (lambda p, b: (torch.zeros(p.shape[0]), torch.zeros(p.shape[0], 2)), dynascope.ShapeMismatch, "grads"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            dynascope.llc(fn, w_star=w_star, n=10, chains=2, draws=5, threads=1, progress=False)


def test_inputs_are_not_copied_or_modified():
    net = make_net()
    x, y = make_data()
    m = dynascope.Mlp.from_torch(net)
    x0, p0 = x.clone(), m.params.clone()
    dynascope.llc(m, x, y, chains=2, draws=5, burnin=2, threads=1, progress=False)
    assert torch.equal(x, x0) and torch.equal(m.params, p0)
    w = np.linspace(0, 1, 4)
    w0 = w.copy()
    seen = []

    def fn(p, b):
        seen.append(p.ctypes.data)
        return np.zeros(p.shape[0]), np.zeros(p.shape)

    dynascope.llc(fn, w_star=w, n=10, chains=2, draws=5, burnin=2, threads=1, progress=False)
    assert seen[0] == w.ctypes.data    # L_n(w*) is evaluated on w_star itself (read-only view)
    assert np.array_equal(w, w0)


def test_bad_arguments():
    net = make_net()
    x, y = make_data()
    m = dynascope.Mlp.from_torch(net)
    w = np.zeros(3)
    zero = lambda p, b: (np.zeros(p.shape[0]), np.zeros(p.shape))
    IA, SM = dynascope.InvalidArgument, dynascope.ShapeMismatch
    cases = [
        (lambda: dynascope.llc(m, x.float(), y), IA, "inputs: dtype float32 differs"),
        (lambda: dynascope.llc(m, x.T.contiguous().T, y), IA, r"inputs: the array is not C-contiguous.*contiguous\(\)"),
        (lambda: dynascope.llc(m, x[:, :2].contiguous(), y), SM, "takes 3 inputs"),
        (lambda: dynascope.llc(m, x, y[:10]), SM, "expected 50 labels"),
        (lambda: dynascope.llc(m, x, y + 5), IA, r"labels must be in \[0, 2\)"),
        (lambda: dynascope.llc(m, x, torch.zeros(50, 3, dtype=torch.float64)), SM, r"float targets \[50, 2\]"),
        (lambda: dynascope.llc(m, x, torch.zeros(50, 2, dtype=torch.float64), loss="xent"), IA, "xent"),
        (lambda: dynascope.llc(m, x, y, loss="l1"), IA, "loss: expected"),
        (lambda: dynascope.llc(m, torch.full_like(x, float("nan")), y), IA, "inputs: contains NaN"),
        (lambda: dynascope.llc(m, x), IA, "targets: the LLC needs targets"),
        (lambda: dynascope.llc(m), IA, "inputs: an Mlp needs the data"),
        (lambda: dynascope.llc(m, x, y, w_star=w), IA, "only for a loss-and-gradient callback"),
        (lambda: dynascope.llc(m, x, y, epsilon=0), IA, "epsilon: expected a finite number > 0"),
        (lambda: dynascope.llc(m, x, y, gamma=-1), IA, "gamma"),
        (lambda: dynascope.llc(m, x, y, chains=0), IA, "chains: expected an integer >= 1"),
        (lambda: dynascope.llc(m, x, y, draws=2.5), IA, "draws"),
        (lambda: dynascope.llc(m, x, y, nbeta="big"), IA, "nbeta: expected 'auto'"),
        (lambda: dynascope.llc(m, x, y, nbeta=-3.0), IA, "nbeta"),
        (lambda: dynascope.llc(m, x, y, batch=51), IA, "batch: 51 is larger than the 50"),
        (lambda: dynascope.llc(m, x, y, sampler="hmc"), IA, "sampler"),
        (lambda: dynascope.llc(m, x, y, rmsprop_alpha=0.9), IA, "rmsprop_alpha: it is a constant of sampler"),
        (lambda: dynascope.llc(m, x, y, sampler="rmsprop-sgld", rmsprop_alpha=1.0), IA, r"\[0, 1\)"),
        (lambda: dynascope.llc(m, x, y, init_loss="minibatch"), IA, "needs minibatches"),
        (lambda: dynascope.llc(m, x, y, bounding_box=0), IA, "bounding_box"),
        (lambda: dynascope.llc(m, x, y, mask=np.ones(5)), SM, r"mask: expected \[50\]"),
        (lambda: dynascope.llc(m, x, y, mask=np.full(50, 2)), IA, "expected 0 \\(fixed\\) or 1"),
        (lambda: dynascope.llc(m, x, y, mask=np.zeros(50)), IA, "fixes every parameter"),
        (lambda: dynascope.llc(m, x, y, seed=-1), IA, "seed"),
        (lambda: dynascope.llc(m, x, y, threads=-1), IA, "threads"),
        (lambda: dynascope.llc(m, x, y, progress="yes"), IA, "progress"),
        (lambda: dynascope.llc("net", x, y), IA, "model: expected a dynascope.Mlp or a callable"),
        (lambda: dynascope.llc(zero, n=10), IA, "w_star: a loss-and-gradient callback needs"),
        (lambda: dynascope.llc(zero, w_star=w), IA, "n: a loss-and-gradient callback needs the dataset size"),
        (lambda: dynascope.llc(zero, x, w_star=w, n=10), IA, "inputs: a loss-and-gradient callback computes"),
        (lambda: dynascope.llc(zero, w_star=w.astype(np.int64), n=10), IA, "w_star: expected float32 or float64"),
        (lambda: dynascope.llc(zero, w_star=np.zeros((3, 1)), n=10), SM, "w_star: expected a 1-D array"),
        (lambda: dynascope.llc(zero, w_star=np.array([np.nan, 0, 0]), n=10), IA, "w_star: contains NaN"),
        (lambda: dynascope.llc(zero, w_star=w, n=0), IA, "n: expected an integer >= 1"),
        (lambda: dynascope.llc(zero, w_star=w, n=1), IA, "nbeta auto/batch needs at least 2 samples"),
        (lambda: dynascope.llc_calibrate(m, x, y, epsilons=[1e-4], epsilon=1e-4), IA, "epsilon: it is the centre"),
        (lambda: dynascope.llc_calibrate(m, x, y, nbetas=[], chains=1), IA, "nbetas: expected at least one"),
        (lambda: dynascope.llc_calibrate(m, x, y, epsilons=[1e-4, -1]), IA, "epsilons: every value"),
        (lambda: dynascope.torch_loss_grad("net", "mse", x, y), IA, "model: expected a torch.nn.Module"),
        (lambda: dynascope.torch_loss_grad(net, "mse", x.numpy(), y), IA, "inputs: expected a torch.Tensor"),
        (lambda: dynascope.torch_loss_grad(net, "mse", x, y[:3]), SM, "targets: 3 rows for 50"),
        (lambda: dynascope.torch_loss_grad(net, "hinge", x, y), IA, "loss_fn"),
        (lambda: dynascope.torch_loss_grad(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2).double()), "mse", x, y),
         IA, "must all be float32 or all float64"),
    ]
    for i, (call, exc, match) in enumerate(cases):
        with pytest.raises(exc, match=match):
            call()
    assert issubclass(IA, ValueError) and issubclass(IA, dynascope.Error)


def test_divergence_is_reported_not_raised():
    """A step far too large for the curvature: every chain's loss overflows; the estimate is NaN,
    the chains are listed as diverged and a warning says why."""
    w_star = np.zeros(2)
    h = np.array([1e3, 1.0])
    with np.errstate(over="ignore", invalid="ignore"):
        r = dynascope.llc(numpy_quadratic(h, w_star), w_star=w_star, n=10, chains=3, draws=200, burnin=0,
                          epsilon=1.0, gamma=0.0, nbeta=10.0, threads=1, progress=False)
    assert sorted(r.diverged) == [0, 1, 2] and math.isnan(r.llc_mean)
    assert np.isnan(np.asarray(r.llc_per_chain)).all()
    assert any("diverged" in w for w in r.warnings)


def test_int32_labels_are_converted_once_and_give_the_same_chains():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    mlp = dynascope.Mlp.from_torch(net)
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    kw = dict(chains=2, draws=20, burnin=5, epsilon=1e-4, seed=3, threads=1, progress=False)
    a = dynascope.llc(mlp, x, y, **kw)
    b = dynascope.llc(mlp, x, y.int(), **kw)
    c = dynascope.llc(mlp, x.numpy(), y.numpy().astype(np.int32), **kw)
    np.testing.assert_array_equal(np.asarray(a.loss_trace), np.asarray(b.loss_trace))
    np.testing.assert_array_equal(np.asarray(a.loss_trace), np.asarray(c.loss_trace))
