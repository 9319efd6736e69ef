"""dynascope.eigsh / slq_density / trace / spectrum against independent float64 computations.

References: numpy.linalg.eigvalsh on dense matrices, scipy.sparse.linalg.eigsh on the same
operator, torch.autograd.functional.hessian / jacobian for an MLP's and a small CNN's loss
curvature (nothing from dynascope is used to build a reference).
Run: python -m pytest tests/python/test_spectra.py
"""
import copy

import numpy as np
import pytest

import dynascope
from helpers import PoolCnn

torch = pytest.importorskip("torch")
nn = torch.nn
scipy_linalg = pytest.importorskip("scipy.sparse.linalg")

Q = dict(threads=1, progress=False)


def sym(n, seed=0, dtype=np.float64):
    a = np.random.default_rng(seed).standard_normal((n, n))
    return ((a + a.T) / 2).astype(dtype)


def check_pairs(a, r, k, which="largest", rtol=1e-9):
    """Eigenvalues against numpy.linalg.eigvalsh, vectors by their true residual and orthonormality."""
    w = np.linalg.eigvalsh(np.asarray(a, dtype=np.float64))
    if which == "largest":
        ref = w[::-1][:k]
    elif which == "smallest":
        ref = w[:k]
    else:
        ref = w[np.argsort(-np.abs(w), kind="stable")][:k]
    vals = np.asarray(r.eigenvalues)
    scale = np.abs(w).max()
    np.testing.assert_allclose(vals, ref, rtol=0, atol=rtol * scale)
    v = np.asarray(r.vectors, dtype=np.float64)
    assert v.shape == (k, a.shape[0])
    np.testing.assert_allclose(v @ v.T, np.eye(k), atol=100 * rtol)
    res = np.linalg.norm(v @ np.asarray(a, dtype=np.float64) - vals[:, None] * v, axis=1)
    assert res.max() <= 100 * rtol * scale
    assert r.all_converged and r.status == ["converged"] * k


# ---------------------------------------------------------------- dense matrices

@pytest.mark.parametrize("method", ["dense", "lanczos"])
@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_dense_matrix_against_eigvalsh(method, which):
    a = sym(60, seed=1)
    r = dynascope.eigsh(a, k=4, which=which, method=method, **Q)
    assert isinstance(r.eigenvalues, np.ndarray) and r.method == method
    check_pairs(a, r, 4, which)
    if method == "lanczos":
        assert r.matvecs > 0 and r.multiplicity_checked


def test_dense_torch_in_torch_out_and_float32():
    a = sym(40, seed=2)
    t = torch.from_numpy(a)
    r = dynascope.eigsh(t, k=3, method="lanczos", **Q)
    assert isinstance(r.eigenvalues, torch.Tensor) and isinstance(r.vectors, torch.Tensor)
    assert r.vectors.dtype == torch.float64 and isinstance(r.converged, torch.Tensor)
    check_pairs(a, r, 3)
    r32 = dynascope.eigsh(t.float(), k=3, method="lanczos", tol=1e-5, **Q)
    assert r32.vectors.dtype == torch.float32
    w = np.linalg.eigvalsh(a)[::-1][:3]
    np.testing.assert_allclose(r32.eigenvalues.numpy(), w, rtol=0, atol=1e-4 * np.abs(w).max())


def test_dense_jax_round_trip():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    a = sym(30, seed=3)
    r = dynascope.eigsh(jnp.asarray(a), k=2, **Q)
    assert "jax" in type(r.vectors).__module__ or "jaxlib" in type(r.vectors).__module__
    check_pairs(a, r, 2)


def test_warm_start_and_input_untouched():
    a = sym(80, seed=4)
    before = a.copy()
    r1 = dynascope.eigsh(a, k=3, method="lanczos", **Q)
    r2 = dynascope.eigsh(a, k=3, method="lanczos", start=r1.vectors, **Q)
    check_pairs(a, r2, 3)
    assert r2.matvecs < r1.matvecs   # started from the answer
    assert np.array_equal(a, before)


# ---------------------------------------------------------------- Python operators

def test_callback_operator_against_scipy_eigsh():
    n = 120
    a = sym(n, seed=5)
    calls = []

    def matvec(v):
        calls.append(v.shape)
        assert isinstance(v, np.ndarray) and not v.flags.writeable
        return a @ v

    ref = scipy_linalg.eigsh(a, k=5, which="LA")[0][::-1]
    r = dynascope.eigsh(dynascope.CallbackOperator(n, matvec=matvec), k=5, method="lanczos", **Q)
    np.testing.assert_allclose(r.eigenvalues, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert calls and all(s == (n,) for s in calls) and len(calls) == r.matvecs
    # a block matmat: one call per block, [n, b] columns
    blocks = []

    def matmat(x):
        blocks.append(x.shape)
        return a @ x

    r = dynascope.eigsh(dynascope.CallbackOperator(n, matmat=matmat), k=5, block=3, method="lanczos", **Q)
    np.testing.assert_allclose(r.eigenvalues, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert any(s[1] == 3 for s in blocks) and all(s[0] == n for s in blocks)


def test_scipy_linear_operator_and_torch_framework():
    n = 90
    a = sym(n, seed=6)
    ref = scipy_linalg.eigsh(a, k=3, which="SA")[0]
    lo = scipy_linalg.LinearOperator((n, n), matvec=lambda v: a @ v, matmat=lambda x: a @ x, dtype=np.float64)
    r = dynascope.eigsh(lo, k=3, which="smallest", method="lanczos", **Q)
    np.testing.assert_allclose(r.eigenvalues, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    at = torch.from_numpy(a)
    op = dynascope.CallbackOperator(n, matvec=lambda v: at @ v, framework="torch")
    r = dynascope.eigsh(op, k=3, which="smallest", method="lanczos", **Q)
    assert isinstance(r.eigenvalues, torch.Tensor)
    np.testing.assert_allclose(r.eigenvalues.numpy(), ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    x = np.random.default_rng(0).standard_normal((n, 2))
    np.testing.assert_allclose(op @ torch.from_numpy(x), a @ x, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- SLQ and traces

def test_slq_full_lanczos_nodes_are_the_eigenvalues():
    n = 24
    a = sym(n, seed=7)
    w = np.linalg.eigvalsh(a)
    s = dynascope.slq_density(a, steps=n, probes=6, grid=4000, **Q)   # grid step < sigma
    assert len(s.nodes) == 6 and s.matvecs >= 6
    for theta, tau in zip(s.nodes, s.weights):
        # n steps of fully reorthogonalized Lanczos span the whole space: the Ritz values are the
        # eigenvalues (distinct here), the weights squared components of the probe (sum 1)
        np.testing.assert_allclose(np.sort(theta), w, rtol=0, atol=1e-9 * np.abs(w).max())
        assert abs(tau.sum() - 1) < 1e-12 and (tau >= 0).all()
    # the smoothed density, from the quadrature by its definition
    x = s.grid
    ref = np.zeros_like(x)
    for theta, tau in zip(s.nodes, s.weights):
        ref += (tau[None, :] * np.exp(-(x[:, None] - theta[None, :]) ** 2 / (2 * s.sigma2))).sum(1)
    ref /= len(s.nodes) * np.sqrt(2 * np.pi * s.sigma2)
    np.testing.assert_allclose(s.density, ref, rtol=1e-9, atol=1e-9 * ref.max())
    assert abs(np.trapz(s.density, x) - 1) < 1e-3
    assert abs(s.trace_estimate - np.trace(a)) <= 5 * s.trace_stderr + 1e-9


def test_slq_density_matches_dense_spectrum_distribution():
    # many probes: the quadrature measure approaches the eigenvalue counting measure; compare the
    # spectral distribution function at the quartiles
    n = 40
    a = sym(n, seed=8)
    w = np.linalg.eigvalsh(a)
    s = dynascope.slq_density(dynascope.CallbackOperator(n, matmat=lambda x: a @ x), steps=n, probes=400,
                              grid=200, **Q)
    nodes = np.concatenate(s.nodes)
    weights = np.concatenate(s.weights) / len(s.nodes)
    for q in (0.25, 0.5, 0.75):
        t = np.quantile(w, q)
        cdf = weights[nodes <= t + 1e-9].sum()
        exact = (w <= t + 1e-9).mean()
        assert abs(cdf - exact) < 0.05, (q, cdf, exact)


def test_trace_estimates_against_the_dense_trace():
    n = 50
    a = sym(n, seed=9) + 3 * np.eye(n)
    tr = np.trace(a)
    h = dynascope.trace(a, probes=200, seed=1, **Q)
    assert h.trace_method == "hutchinson" and h.matvecs == 200 and h.probes == 200
    assert abs(h.trace_estimate - tr) <= 5 * h.trace_stderr
    p = dynascope.trace(a, method="hutchpp", probes=60, seed=1, **Q)
    assert p.matvecs == 2 * 30 + 30
    assert abs(p.trace_estimate - tr) <= 5 * p.trace_stderr + 1e-9
    exact = dynascope.trace(a, method="hutchpp", probes=2 * n, **Q)   # sketch spans the space
    assert exact.trace_stderr == 0 and abs(exact.trace_estimate - tr) < 1e-9 * np.abs(a).sum()
    # Rademacher probes on a diagonal matrix: every z^T D z is tr(D)
    d = np.diag(np.arange(1.0, n + 1))
    one = dynascope.trace(d, probes=3, **Q)
    assert abs(one.trace_estimate - np.trace(d)) < 1e-9


# ---------------------------------------------------------------- Mlp operators

def make_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 3)).double()


def flat_fn(model):
    """f(w) = model with flat parameters w (parameters_to_vector order), by functional_call."""
    from torch.nn.utils import stateless
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def f(w, x):
        ps = {k: t.view(s) for k, t, s in zip(names, torch.split(w, sizes), shapes)}
        return stateless.functional_call(model, ps, (x,))
    w0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    return f, w0


def dense_curvature(model, x, loss_fn, kind):
    f, w0 = flat_fn(model)
    if kind == "hessian":
        return torch.autograd.functional.hessian(lambda w: loss_fn(f(w, x)), w0).numpy()
    out = f(w0, x).detach()
    j = torch.autograd.functional.jacobian(lambda w: f(w, x), w0).reshape(out.numel(), -1)
    hl = torch.autograd.functional.hessian(lambda o: loss_fn(o.view(out.shape)), out.reshape(-1))
    return (j.T @ hl @ j).numpy()


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_mlp_curvature_against_torch(kind, loss):
    model = make_mlp()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, dtype=torch.float64, generator=g)
    if loss == "xent":
        y = torch.randint(0, 3, (7,), generator=g)
        loss_fn = lambda o: nn.functional.cross_entropy(o, y)  # noqa: E731
    else:
        y = torch.randn(7, 3, dtype=torch.float64, generator=g)
        loss_fn = lambda o: nn.functional.mse_loss(o, y)  # noqa: E731
    h = dense_curvature(model, x, loss_fn, kind)
    mlp = dynascope.Mlp.from_torch(model)
    op = dynascope.curvature_operator(mlp, x, y, curvature=kind)
    assert op.size == h.shape[0] and op.loss == loss
    assert abs(op.loss_value - float(loss_fn(model(x)))) < 1e-12
    v = torch.randn(op.size, 3, dtype=torch.float64, generator=g)
    np.testing.assert_allclose(op @ v, h @ v.numpy(), rtol=0, atol=1e-11 * np.abs(h).max())
    r = dynascope.eigsh(op, k=3, which="magnitude", method="lanczos", **Q)
    check_pairs(h, r, 3, "magnitude", rtol=1e-8)
    # the CLI-style entry point gives the same numbers
    r2 = dynascope.spectrum(mlp, x, y, operator=kind, k=3, which="magnitude", method="lanczos", **Q)
    np.testing.assert_allclose(r2.eigenvalues, r.eigenvalues, rtol=1e-12)


def test_mlp_ntk_operator_and_spectrum_modes():
    model = make_mlp(1)
    x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    f, w0 = flat_fn(model)
    j = torch.autograd.functional.jacobian(lambda w: f(w, x), w0).reshape(6 * 3, -1).numpy()
    kmat = j @ j.T   # index n*O + o
    mlp = dynascope.Mlp.from_torch(model)
    r = dynascope.spectrum(mlp, x, operator="ntk", k=4, method="lanczos", **Q)
    check_pairs(kmat, r, 4, rtol=1e-8)
    t = dynascope.spectrum(mlp, x, operator="ntk", trace="hutchpp", probes=40, **Q)
    assert isinstance(t, dynascope.TraceEstimate) and abs(t.trace_estimate - np.trace(kmat)) < 1e-9 * np.trace(kmat)
    s = dynascope.spectrum(mlp, x, operator="ntk", density=True, steps=18, probes=3, **Q)
    assert isinstance(s, dynascope.SpectralDensity)
    w = np.linalg.eigvalsh(kmat)
    assert np.sort(s.nodes[0]).max() == pytest.approx(w.max(), rel=1e-8)


# ---------------------------------------------------------------- any torch model

def SmallCnn():
    return PoolCnn(torch.tanh)


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_torch_curvature_operator_small_cnn(kind):
    torch.manual_seed(5)
    model = SmallCnn().double()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (5,), generator=g)
    loss_fn = nn.functional.cross_entropy
    h = dense_curvature(model, x, lambda o: loss_fn(o, y), kind)
    op = dynascope.torch_curvature_operator(model, loss_fn, x, y, curvature=kind)
    assert op.size == h.shape[0] == sum(p.numel() for p in model.parameters())
    assert op.dtype == "float64" and abs(op.loss_value - float(loss_fn(model(x), y))) < 1e-12
    r = dynascope.eigsh(op, k=4, method="lanczos", **Q)
    assert isinstance(r.eigenvalues, torch.Tensor)
    check_pairs(h, r, 4, rtol=1e-8)
    t = dynascope.trace(op, method="hutchpp", probes=2 * op.size, **Q)
    assert abs(t.trace_estimate - np.trace(h)) < 1e-8 * np.abs(h).sum()


def test_torch_curvature_operator_float32():
    torch.manual_seed(7)
    model = SmallCnn()
    x = torch.randn(4, 1, 6, 6)
    y = torch.randn(4, 3)
    h = dense_curvature(copy.deepcopy(model).double(), x.double(), lambda o: nn.functional.mse_loss(o, y.double()),
                        "hessian")
    op = dynascope.torch_curvature_operator(model, nn.functional.mse_loss, x, y)
    assert op.dtype == "float32"
    r = dynascope.eigsh(op, k=2, method="lanczos", tol=1e-4, **Q)
    w = np.linalg.eigvalsh(h)[::-1][:2]
    np.testing.assert_allclose(r.eigenvalues.numpy(), w, rtol=0, atol=1e-4 * np.abs(w).max())


# ---------------------------------------------------------------- progress, exceptions, Ctrl-C path

def test_progress_is_called_and_a_raising_callback_stops():
    a = sym(500, seed=10)
    seen = []
    dynascope.eigsh(a, k=2, method="lanczos", threads=1, progress=lambda t, d, n: seen.append((t, d, n)))
    assert seen and all(t.startswith("lanczos") for t, _, _ in seen)

    class Stop(Exception):
        pass

    def stop(task, done, total):
        raise Stop(task)

    with pytest.raises(Stop):
        dynascope.eigsh(a, k=2, method="lanczos", threads=1, progress=stop)
    with pytest.raises(Stop):
        dynascope.slq_density(a, steps=10, probes=2, threads=1, progress=stop)


def test_matvec_exception_reaches_the_caller():
    class Boom(Exception):
        pass

    calls = [0]

    def matvec(v):
        calls[0] += 1
        if calls[0] == 3:
            raise Boom("third product")
        return v

    with pytest.raises(Boom, match="third product"):
        dynascope.eigsh(dynascope.CallbackOperator(30, matvec=matvec), k=2, method="lanczos", **Q)
    assert calls[0] == 3   # stopped at once
    with pytest.raises(dynascope.ShapeMismatch, match=r"matvec: returned shape \(29,\), expected \(30,\)"):
        dynascope.eigsh(dynascope.CallbackOperator(30, matvec=lambda v: v[:29]), k=2, method="lanczos", **Q)
    with pytest.raises(dynascope.InvalidArgument, match="matvec: returned NaN"):
        dynascope.trace(dynascope.CallbackOperator(30, matvec=lambda v: v * np.nan), **Q)


# ---------------------------------------------------------------- bad input

def test_bad_input_messages():
    a = sym(10)
    E = dynascope.InvalidArgument
    with pytest.raises(E, match="symmetric"):
        dynascope.eigsh(a + np.triu(np.ones((10, 10)), 1), k=2, **Q)
    with pytest.raises(dynascope.ShapeMismatch, match="square"):
        dynascope.eigsh(np.zeros((3, 4)), k=2, **Q)
    bad = a.copy()
    bad[1, 1] = np.nan
    with pytest.raises(E, match="operator: contains NaN"):
        dynascope.eigsh(bad, k=2, **Q)
    with pytest.raises(E, match="operator: expected float32 or float64"):
        dynascope.eigsh(a.astype(np.int64), k=2, **Q)
    with pytest.raises(E, match="not C-contiguous"):
        dynascope.eigsh(np.asfortranarray(a), k=2, **Q)
    with pytest.raises(E, match="k: 11 exceeds the operator's size 10"):
        dynascope.eigsh(a, k=11, **Q)
    with pytest.raises(E, match="which"):
        dynascope.eigsh(a, which="biggest", **Q)
    with pytest.raises(E, match="tol"):
        dynascope.eigsh(a, tol=0, **Q)
    with pytest.raises(E, match="hutchpp needs probes >= 2"):
        dynascope.trace(a, method="hutchpp", probes=1, **Q)
    with pytest.raises(E, match="bare callable"):
        dynascope.eigsh(lambda v: v, **Q)
    with pytest.raises(E, match="start: dtype float32"):
        dynascope.eigsh(a, k=2, start=np.ones((1, 10), np.float32), **Q)
    with pytest.raises(E, match="give at least one"):
        dynascope.CallbackOperator(10)
    model = make_mlp()
    mlp = dynascope.Mlp.from_torch(model)
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(E, match="loss xent needs integer class labels"):
        dynascope.curvature_operator(mlp, x, torch.randn(4, 3, dtype=torch.float64), loss="xent")
    # Integer labels of another dtype (JAX's int32 without x64) are converted once: the same operator.
    y32 = torch.tensor([0, 2, 1, 2], dtype=torch.int32)
    v = torch.randn(mlp.num_params, 1, dtype=torch.float64)
    assert torch.equal(dynascope.curvature_operator(mlp, x, y32) @ v,
                       dynascope.curvature_operator(mlp, x, y32.long()) @ v)
    with pytest.raises(E, match=r"labels must be in \[0, 3\)"):
        dynascope.curvature_operator(mlp, x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(dynascope.ShapeMismatch, match="targets: expected float targets"):
        dynascope.curvature_operator(mlp, x, torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(dynascope.ShapeMismatch, match="inputs: the network 3-6-5-3 takes 3 inputs"):
        dynascope.ntk_operator(mlp, torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(E, match="inputs: dtype float32 differs"):
        dynascope.ntk_operator(mlp, torch.randn(4, 3))
    with pytest.raises(E, match="inputs: contains NaN"):
        dynascope.ntk_operator(mlp, torch.full((4, 3), float("nan"), dtype=torch.float64))
    # spectrum: the command line's mode rules
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(E, match="density, trace"):
        dynascope.spectrum(mlp, x, y, density=True, trace="hutchinson", **Q)
    with pytest.raises(E, match="k: a top-k eigenpair option"):
        dynascope.spectrum(mlp, x, y, density=True, k=3, **Q)
    with pytest.raises(E, match="steps: sets the Lanczos steps"):
        dynascope.spectrum(mlp, x, y, steps=3, **Q)
    with pytest.raises(E, match="probes: sets the probes"):
        dynascope.spectrum(mlp, x, y, probes=3, **Q)
    with pytest.raises(E, match="targets: the NTK operator"):
        dynascope.spectrum(mlp, x, y, operator="ntk", **Q)
    with pytest.raises(E, match="needs targets"):
        dynascope.spectrum(mlp, x, operator="hessian", **Q)
    with pytest.raises(E, match="model: expected a torch.nn.Module"):
        dynascope.torch_curvature_operator(mlp, nn.functional.mse_loss, x, y)


# ---------------------------------------------------------------- prepared operators

@pytest.mark.parametrize("kind", ["hessian", "ggn", "ntk"])
def test_prepared_operator_products_against_torch_and_the_per_call_operator(kind):
    model = make_mlp(2)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(9, 3, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (9,), generator=g)
    mlp = dynascope.Mlp.from_torch(model)
    if kind == "ntk":
        f, w0 = flat_fn(model)
        j = torch.autograd.functional.jacobian(lambda w: f(w, x), w0).reshape(9 * 3, -1).numpy()
        dense = j @ j.T
        op = dynascope.ntk_operator(mlp, x)
    else:
        dense = dense_curvature(model, x, lambda o: nn.functional.cross_entropy(o, y), kind)
        op = dynascope.curvature_operator(mlp, x, y, curvature=kind)
    p = op.prepared(threads=2)
    assert (p.size, p.dtype, p.shape, p.framework) == (op.size, op.dtype, op.shape, op.framework)
    atol = 1e-11 * np.abs(dense).max()
    for _ in range(3):   # the same prepared state serves every call
        v = torch.randn(op.size, dtype=torch.float64, generator=g)
        pv = p @ v
        assert isinstance(pv, torch.Tensor) and pv.shape == (op.size,)
        np.testing.assert_allclose(pv, dense @ v.numpy(), rtol=0, atol=atol)
        np.testing.assert_allclose(pv, op @ v, rtol=0, atol=atol)
    block = np.random.default_rng(1).standard_normal((op.size, 4))
    np.testing.assert_allclose(p.matmat(block), dense @ block, rtol=0, atol=atol)
    if kind != "ntk":
        assert p.loss_value == op.loss_value
    else:
        with pytest.raises(dynascope.InvalidArgument, match="only curvature operators"):
            p.loss_value
    # the solvers take it (they build their own operator from the same arrays)
    r = dynascope.eigsh(p, k=2, which="magnitude", method="lanczos", **Q)
    check_pairs(dense, r, 2, "magnitude", rtol=1e-8)


def test_prepared_operator_from_several_threads_and_bad_input():
    import threading
    rng = np.random.default_rng(7)
    n = 40
    a = rng.standard_normal((n, n))
    a = a + a.T
    p = dynascope.CallbackOperator(n, matmat=lambda x: a @ x).prepared()
    vs = rng.standard_normal((8, n))
    got = [None] * 8

    def work(i):
        for _ in range(20):
            got[i] = p @ vs[i]
    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(8):
        np.testing.assert_allclose(got[i], a @ vs[i], rtol=1e-13, atol=1e-12)
    with pytest.raises(dynascope.ShapeMismatch, match=r"x: expected \[40\] or \[40, b\]"):
        p @ np.ones(n + 1)
    with pytest.raises(ValueError, match="x: .*float32"):
        p @ np.ones(n, dtype=np.float32)

    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("matvec failed once")
        return a @ x
    q = dynascope.CallbackOperator(n, matvec=flaky).prepared()
    with pytest.raises(RuntimeError, match="matvec failed once"):
        q @ vs[0]
    np.testing.assert_allclose(q @ vs[0], a @ vs[0], rtol=1e-13, atol=1e-12)   # usable after an error
