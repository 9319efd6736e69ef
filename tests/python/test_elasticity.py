"""dynascope.elasticity, dynascope.response and dynascope.aging_fit against hand computations in
torch float64.

The references take the one step themselves: the per-sample loss gradient by torch.autograd, the
stepped parameters written into a copy of the nn.Sequential, and the change of its outputs; the
eta -> 0 forms contract per-sample Jacobians (one output at a time). No dynascope code is involved.
"""
import copy
import math
import warnings

import numpy as np
import pytest

import dynascope
import helpers
from helpers import data, flat, jacobians, make_model

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


# ---- references ----

def forward_at(model, w, x):
    m = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(w, m.parameters())
    with torch.no_grad():
        return m(x)


def sample_loss(f, y, loss, o):
    """The per-sample loss of one row f [O] (the library's: mse = mean over outputs)."""
    if loss == "xent":
        return F.cross_entropy(f[None], y[None])
    target = F.one_hot(y, o).double() if y.dtype == torch.int64 else y
    return ((f - target) ** 2).mean()


def loss_grads(model, x, y, loss):
    """Per-sample parameter gradients g_i [N, P] and dl_i/df [N, O]."""
    params = list(model.parameters())
    gs, dfs = [], []
    for i in range(x.shape[0]):
        f = model(x[i:i + 1])[0]
        fd = f.detach().requires_grad_(True)
        dfs.append(torch.autograd.grad(sample_loss(fd, y[i], loss, f.shape[0]), fd)[0])
        g = torch.autograd.grad(sample_loss(f, y[i], loss, f.shape[0]), params)
        gs.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(gs), torch.stack(dfs)


def step_changes(model, x1, y1, x2, eta, loss, update="sgd", adam_eps=1e-8):
    """Delta[i, j] = f(x2_j; w+_i) - f(x2_j; w) [N1, N2, O], and Delta_i(x1_i) [N1, O]."""
    w = flat(model)
    g, df = loss_grads(model, x1, y1, loss)
    base1, base2 = forward_at(model, w, x1), forward_at(model, w, x2)
    delta, own = [], []
    for i in range(x1.shape[0]):
        step = g[i] if update == "sgd" else g[i] / (g[i].abs() + adam_eps)
        wp = w - eta * step
        delta.append(forward_at(model, wp, x2) - base2)
        own.append(forward_at(model, wp, x1[i:i + 1])[0] - base1[i])
    return torch.stack(delta), torch.stack(own), df, base1, base2


def metric_of(delta, base, metric):
    """m for changes delta [..., O] at outputs base [..., O]."""
    if metric == "abs":
        return delta.norm(dim=-1)
    p = torch.softmax(base, -1)
    q = torch.softmax(base + delta, -1)
    if metric == "l2":
        return (q - p).norm(dim=-1)
    if metric == "kl":
        return (p * (torch.log_softmax(base, -1) - torch.log_softmax(base + delta, -1))).sum(-1)
    if metric == "kl-compat":
        return (q * (torch.log(q) - p)).mean(-1)
    raise ValueError(metric)


def assert_close(actual, expected, rtol):
    helpers.assert_close(actual, expected, rtol, nan=True)   # s_rel has NaN where it is undefined


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a result without undefined sources warns nothing
        return fn(*args, **kwargs)


# ---- elasticity: the step form ----

@pytest.mark.parametrize("outputs", [1, 3])
@pytest.mark.parametrize("two_sets", [False, True])
@pytest.mark.parametrize("update", ["sgd", "adam"])
def test_step_form_abs_matches_torch(outputs, two_sets, update):
    model = make_model((4, 6, 5, outputs))
    x, y = data(6, 4, 1, outputs=outputs)
    x2 = data(5, 4, 2)[0] if two_sets else None
    eta = 1e-3
    e = quiet(dynascope.elasticity, dynascope.Mlp.from_torch(model), x, y, x2=x2, eta=eta, update=update,
              threads=1, progress=False)
    delta, own, df, _, _ = step_changes(model, x, y, x if x2 is None else x2, eta, "mse", update)
    self_change = own.norm(dim=-1)
    expected = delta.norm(dim=-1) / self_change[:, None]
    assert e.metric == "abs" and e.loss == "mse" and e.update == update and e.same_set == (x2 is None)
    assert isinstance(e.s_rel, torch.Tensor) and e.s_rel.dtype == torch.float64
    assert_close(e.s_rel, expected, 1e-9)
    assert_close(e.self_change, self_change, 1e-9)
    if outputs == 1 and update == "sgd":
        # S_ker = Delta_i(x'_j) / (-eta dl_i/df(x_i)).
        assert_close(e.s_ker, delta[..., 0] / (-eta * df[:, 0:1]), 1e-9)
    elif outputs > 1:
        assert e.s_ker is None
    # The mean over the pairs, without a sample's pair with itself when the targets are the sources.
    s = expected.numpy().copy()
    if x2 is None:
        np.fill_diagonal(s, np.nan)
    assert e.pairs == np.isfinite(s).sum()
    assert e.mean == pytest.approx(np.nanmean(s), rel=1e-9)
    assert e.undefined_sources.numel() == 0 and e.class_matrix is None and e.classes is None


@pytest.mark.parametrize("metric", ["kl", "l2", "kl-compat"])
@pytest.mark.parametrize("loss", ["xent", "mse"])
def test_step_form_class_metrics_match_torch(metric, loss):
    model = make_model((3, 7, 4), act=nn.ReLU, seed=3)
    x, y = data(8, 3, 4, labels=4)
    eta = 1e-2
    e = quiet(dynascope.elasticity, dynascope.Mlp.from_torch(model), x, y, eta=eta, metric=metric, loss=loss,
              threads=1, progress=False)
    delta, own, _, base1, base2 = step_changes(model, x, y, x, eta, loss)
    self_m = metric_of(own, base1, metric)
    expected = metric_of(delta, base2[None].expand_as(delta), metric) / self_m[:, None]
    assert e.metric == metric and e.loss == loss
    # KL is a difference of log-probabilities of nearby logits (~eta^2): rounding ~1e-16 / 1e-4.
    assert_close(e.s_rel, expected, 1e-7 if metric != "l2" else 1e-9)
    assert_close(e.self_change, self_m, 1e-7 if metric != "l2" else 1e-9)


def test_auto_metric_and_default_loss():
    model = make_model((3, 5, 3), seed=5)
    x, y = data(6, 3, 6, labels=3)
    e = quiet(dynascope.elasticity, dynascope.Mlp.from_torch(model), x, y, threads=1, progress=False)
    assert e.metric == "kl" and e.loss == "xent"
    xr, yr = data(6, 3, 6, outputs=3)
    e = quiet(dynascope.elasticity, dynascope.Mlp.from_torch(model), xr, yr, threads=1, progress=False)
    assert e.metric == "abs" and e.loss == "mse"


# ---- elasticity: the eta -> 0 form ----

@pytest.mark.parametrize("metric", ["abs", "kl", "l2"])
def test_ntk_form_matches_jacobian_contraction(metric):
    model = make_model((4, 6, 3), act=nn.GELU, seed=7)
    labels = metric != "abs"
    x, y = data(5, 4, 8, labels=3 if labels else None, outputs=3)
    x2 = data(4, 4, 9)[0]
    loss = "xent" if labels else "mse"
    eta = 1e-3
    e = quiet(dynascope.elasticity, dynascope.Mlp.from_torch(model), x, y, x2=x2, eta=eta, form="ntk",
              metric=metric, threads=1, progress=False)
    j1, j2 = jacobians(model, x), jacobians(model, x2)
    _, df = loss_grads(model, x, y, loss)
    # Delta_i(x') = -eta J(x') J(x_i)^T dl_i/df.
    v = torch.einsum("iop,io->ip", j1, df)
    delta = -eta * torch.einsum("jap,ip->ija", j2, v)        # [N1, N2, O]
    own = -eta * torch.einsum("iap,ip->ia", j1, v)            # [N1, O]

    def fisher(f):
        p = torch.softmax(f, -1)
        return torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    if metric == "abs":
        expected = delta.norm(dim=-1) / own.norm(dim=-1)[:, None]
    else:
        f1, f2 = model(x).detach(), model(x2).detach()
        fd2 = torch.einsum("jab,ijb->ija", fisher(f2), delta)
        fo = torch.einsum("iab,ib->ia", fisher(f1), own)
        if metric == "l2":
            expected = fd2.norm(dim=-1) / fo.norm(dim=-1)[:, None]
        else:
            expected = (delta * fd2).sum(-1) / (own * fo).sum(-1)[:, None]
    assert_close(e.s_rel, expected, 1e-10)


# ---- classes ----

def test_class_matrix_and_pairs_per_class():
    model = make_model((3, 6, 3), seed=11)
    g = torch.Generator().manual_seed(12)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1])
    mlp = dynascope.Mlp.from_torch(model)
    e = quiet(dynascope.elasticity, mlp, x, y, threads=1, progress=False)
    s = e.s_rel.numpy()
    lab = y.numpy()
    assert e.classes == 3
    matrix = np.zeros((3, 3))
    counts = np.zeros((3, 3), dtype=np.int64)
    for a in range(3):
        for b in range(3):
            vals = [s[i, j] for i in range(12) for j in range(12) if lab[i] == a and lab[j] == b and i != j]
            matrix[a, b] = np.mean(vals)
            counts[a, b] = len(vals)
    assert_close(e.class_matrix, matrix, 1e-14)
    assert np.array_equal(e.class_pairs.numpy(), counts)
    within = np.mean(np.diag(matrix))
    across = matrix[~np.eye(3, dtype=bool)].mean()
    assert e.within_class == pytest.approx(within, rel=1e-13)
    assert e.across_class == pytest.approx(across, rel=1e-13)
    assert e.ratio == pytest.approx(within / across, rel=1e-13)
    assert e.empty_cells == 0

    # K per class: the drawn rows, distinct, K of every class, seeded; S_rel on that subset.
    k = 2
    ek = quiet(dynascope.elasticity, mlp, x, y, pairs_per_class=k, seed=5, threads=1, progress=False)
    rows = ek.source_rows.numpy()
    assert len(set(rows.tolist())) == 3 * k and np.array_equal(np.bincount(lab[rows]), [k, k, k])
    assert np.array_equal(ek.target_rows.numpy(), rows)
    again = quiet(dynascope.elasticity, mlp, x, y, pairs_per_class=k, seed=5, threads=1, progress=False)
    assert np.array_equal(again.source_rows.numpy(), rows)
    assert_close(ek.s_rel, s[np.ix_(rows, rows)], 1e-12)
    assert ek.class_pairs.numpy().sum() == 3 * k * (3 * k - 1)

    # Targets of the move with their own labels.
    x2 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y2 = torch.tensor([2, 1, 0, 2, 1, 0])
    e2 = quiet(dynascope.elasticity, mlp, x, y, x2=x2, targets2=y2, threads=1, progress=False)
    s2 = e2.s_rel.numpy()
    m2 = np.array([[s2[np.ix_(lab == a, y2.numpy() == b)].mean() for b in range(3)] for a in range(3)])
    assert_close(e2.class_matrix, m2, 1e-14)
    assert e2.mean == pytest.approx(s2.mean(), rel=1e-13) and e2.pairs == s2.size


def test_zero_gradient_source_is_undefined_with_a_warning():
    model = make_model((3, 5, 1), seed=13)
    x, y = data(5, 3, 14)
    y[2] = model(x[2:3]).detach()[0]          # sample 2 is fitted exactly: its loss gradient is zero
    with pytest.warns(RuntimeWarning, match="zero loss gradient"):
        e = dynascope.elasticity(dynascope.Mlp.from_torch(model), x, y, threads=1, progress=False)
    assert e.undefined_sources.tolist() == [2] and e.unresolved_sources.numel() == 0
    assert torch.isnan(e.s_rel[2]).all() and torch.isfinite(e.s_rel[[0, 1, 3, 4]]).all()
    s = e.s_rel.numpy().copy()
    np.fill_diagonal(s, np.nan)
    assert e.pairs == 4 * 4 and e.mean == pytest.approx(np.nanmean(s), rel=1e-12)


# ---- frameworks ----

def test_numpy_and_float32_round_trip():
    model = make_model((4, 6, 2), seed=15)
    x, y = data(5, 4, 16, outputs=2)
    mlp = dynascope.Mlp.from_torch(model)
    et = quiet(dynascope.elasticity, mlp, x, y, threads=1, progress=False)
    mn = dynascope.Mlp(mlp.arch, mlp.params.numpy(), activation="tanh")
    en = quiet(dynascope.elasticity, mn, x.numpy(), y.numpy(), threads=1, progress=False)
    assert isinstance(en.s_rel, np.ndarray) and isinstance(en.undefined_sources, np.ndarray)
    np.testing.assert_array_equal(en.s_rel, et.s_rel.numpy())
    # float32: the same numbers to float32's resolution of a 1e-2 step.
    m32 = dynascope.Mlp(mlp.arch, mlp.params.numpy().astype(np.float32), activation="tanh")
    e32 = quiet(dynascope.elasticity, m32, x.numpy().astype(np.float32), y.numpy().astype(np.float32), eta=1e-2,
                threads=1, progress=False)
    e64 = quiet(dynascope.elasticity, mn, x.numpy(), y.numpy(), eta=1e-2, threads=1, progress=False)
    assert_close(e32.s_rel, e64.s_rel, 1e-3)


def test_jax_round_trip():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    model = make_model((3, 5, 3), seed=17)
    x, y = data(6, 3, 18, labels=3)
    mlp = dynascope.Mlp.from_torch(model)
    ref = quiet(dynascope.elasticity, mlp, x, y, threads=1, progress=False)
    ej = quiet(dynascope.elasticity, mlp, jnp.asarray(x.numpy()), jnp.asarray(y.numpy()), threads=1, progress=False)
    assert isinstance(ej.s_rel, jax.Array)
    np.testing.assert_array_equal(np.asarray(ej.s_rel), ref.s_rel.numpy())
    np.testing.assert_array_equal(np.asarray(ej.class_matrix), ref.class_matrix.numpy())


def test_inputs_are_not_modified():
    model = make_model((3, 4, 2), seed=19)
    x, y = data(4, 3, 20, outputs=2)
    mlp = dynascope.Mlp.from_torch(model)
    x0, y0, p0 = x.clone(), y.clone(), mlp.params.clone()
    quiet(dynascope.elasticity, mlp, x, y, threads=1, progress=False)
    quiet(dynascope.response, mlp, x, y, threads=1, progress=False)
    assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(mlp.params, p0)


# ---- bad input ----

def test_bad_input_gives_clear_errors():
    model = make_model((3, 4, 2), seed=21)
    mlp = dynascope.Mlp.from_torch(model)
    x, y = data(5, 3, 22, outputs=2)
    xl, yl = data(5, 3, 22, labels=2)
    E = dynascope.elasticity
    with pytest.raises(dynascope.InvalidArgument, match="x: dtype float32 differs"):
        E(mlp, x.float(), y)
    with pytest.raises(dynascope.InvalidArgument, match="not C-contiguous"):
        E(mlp, torch.randn(3, 5, dtype=torch.float64).T, y)
    with pytest.raises(dynascope.ShapeMismatch, match="x: the network 3-4-2 takes 3 inputs"):
        E(mlp, torch.randn(5, 4, dtype=torch.float64), y)
    bad = x.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(dynascope.InvalidArgument, match="x: contains NaN"):
        E(mlp, bad, y)
    with pytest.raises(dynascope.ShapeMismatch, match=r"targets: expected float targets of shape \[5, 2\]"):
        E(mlp, x, y[:, :1].contiguous())
    with pytest.raises(dynascope.InvalidArgument, match="class label 2 at row"):
        E(mlp, xl, yl + 1)
    with pytest.raises(dynascope.InvalidArgument, match="metric: 'abs'.*class labels"):
        E(mlp, xl, yl, metric="abs")
    with pytest.raises(dynascope.InvalidArgument, match="metric: 'kl'.*needs class labels"):
        E(mlp, x, y, metric="kl")
    with pytest.raises(dynascope.InvalidArgument, match="adam_eps"):
        E(mlp, x, y, adam_eps=1e-6)
    with pytest.raises(dynascope.InvalidArgument, match="adam"):
        E(mlp, x, y, update="adam", form="ntk")
    with pytest.raises(dynascope.InvalidArgument, match="eta: expected a finite number > 0"):
        E(mlp, x, y, eta=0.0)
    with pytest.raises(dynascope.InvalidArgument, match="targets2: .*give x2"):
        E(mlp, xl, yl, targets2=yl)
    with pytest.raises(dynascope.InvalidArgument, match="loss: xent needs integer class labels"):
        E(mlp, x, y, loss="xent")
    with pytest.raises(dynascope.InvalidArgument, match="pairs_per_class 3: class 1 of the sources has 2 samples, fewer than 3"):
        E(mlp, xl, yl, pairs_per_class=3)
    with pytest.raises(dynascope.InvalidArgument, match="pairs_per_class: the targets are floats"):
        E(mlp, x, y, pairs_per_class=1)
    with pytest.raises(dynascope.InvalidArgument, match="model: expected a dynascope.Mlp"):
        E(model, x, y)
    with pytest.raises(dynascope.InvalidArgument, match="targets: the step is taken"):
        E(mlp, x, None)
    with pytest.raises(dynascope.InvalidArgument, match="form"):
        E(mlp, x, y, form="kernel")
    R = dynascope.response
    with pytest.raises(dynascope.InvalidArgument, match="at least 2 samples"):
        R(mlp, x[:1], y[:1])
    with pytest.raises(dynascope.InvalidArgument, match="duplicate_tolerance"):
        R(mlp, x, y, duplicate_tolerance=-1.0)
    with pytest.raises(dynascope.InvalidArgument, match="eta"):
        R(mlp, x, y, eta=-1e-3)


def test_progress_is_reported_and_an_exception_stops_the_computation():
    model = make_model((3, 8, 2), seed=23)
    x, y = data(16, 3, 24, outputs=2)
    mlp = dynascope.Mlp.from_torch(model)
    calls = []
    quiet(dynascope.elasticity, mlp, x, y, threads=1, progress=lambda task, done, total: calls.append((task, done, total)))
    assert calls and all(t.startswith("elasticity") for t, _, _ in calls)
    assert calls[-1][1] == calls[-1][2]

    class Stop(Exception):
        pass

    def stop(task, done, total):
        raise Stop("stopped by the test")
    with pytest.raises(Stop, match="stopped by the test"):
        dynascope.elasticity(mlp, x, y, threads=1, progress=stop)
    with pytest.raises(Stop):
        dynascope.response(mlp, x, y, threads=1, progress=stop)


# ---- response ----

@pytest.mark.parametrize("labels", [False, True])
def test_response_matches_torch(labels):
    model = make_model((4, 7, 6, 3), seed=25)
    x, y = data(6, 4, 26, labels=3 if labels else None, outputs=3)
    loss = "xent" if labels else "mse"
    eta = 1e-4
    mlp = dynascope.Mlp.from_torch(model)
    r = quiet(dynascope.response, mlp, x, y, eta=eta, threads=1, progress=False)
    delta, _, df, _, _ = step_changes(model, x, y, x, eta, loss)
    # R(x_j, x_i) = -<g_i, Delta_i(x_j)> / (eta ||g_i||^2), g_i = dl_i/df.
    step = -torch.einsum("ia,ija->ij", df, delta) / (eta * (df ** 2).sum(-1))[:, None]
    assert r.loss == loss and r.form == "step" and r.samples == 6
    assert_close(r.matrix, step, 1e-8)
    off = ~torch.eye(6, dtype=torch.bool)
    assert r.mean_diagonal == pytest.approx(step.diagonal().mean().item(), rel=1e-8)
    assert r.mean_off_diagonal == pytest.approx(step[off].mean().item(), rel=1e-8)

    # The eta -> 0 limit, g^T Theta(x_j, x_i) g / ||g||^2, per layer from each layer's Jacobian block.
    j = jacobians(model, x)
    sizes = [sum(p.numel() for p in layer.parameters()) for layer in model if isinstance(layer, nn.Linear)]
    gn = (df ** 2).sum(-1)
    layer_diag, layer_off = [], []
    start = 0
    for size in sizes:
        jl = j[:, :, start:start + size]
        rl = torch.einsum("ia,jap,ibp,ib->ij", df, jl, jl, df) / gn[:, None]
        layer_diag.append(rl.diagonal().mean().item())
        layer_off.append(rl[off].mean().item())
        start += size
    assert_close(r.layer_diagonal, layer_diag, 1e-10)
    assert_close(r.layer_off_diagonal, layer_off, 1e-10)
    total = torch.einsum("ia,jap,ibp,ib->ij", df, j, j, df) / gn[:, None]
    rn = quiet(dynascope.response, mlp, x, y, eta=eta, form="ntk", threads=1, progress=False)
    assert_close(rn.matrix, total, 1e-10)
    assert math.isnan(rn.kernel_gap)
    assert sum(layer_diag) == pytest.approx(rn.mean_diagonal, rel=1e-10)
    # The step's distance from its limit.
    gap = abs(r.mean_diagonal - sum(layer_diag)) / abs(sum(layer_diag))
    assert r.kernel_gap == pytest.approx(gap, rel=1e-5, abs=1e-12)


def test_feature_space_matches_numpy():
    torch.manual_seed(27)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    with torch.no_grad():
        model[0].bias[4] = -1e3          # unit 5 of layer 1 is dead on every sample
        model[2].weight[3] = model[2].weight[1] * 2.5   # unit 4 of layer 2 duplicates unit 2 (same direction)
        model[2].bias[3] = model[2].bias[1] * 2.5
    x, y = data(9, 3, 28, outputs=2)
    r = quiet(dynascope.response, dynascope.Mlp.from_torch(model), x, y, threads=1, progress=False)
    h1 = model[1](model[0](x)).detach().numpy()
    h2 = model[3](model[2](torch.from_numpy(h1))).detach().numpy()
    assert len(r.features) == 2
    for f, h, width in zip(r.features, (h1, h2), (6, 5)):
        s = np.linalg.svd(h, compute_uv=False)
        s = s[s > max(h.shape) * np.finfo(float).eps * s[0]]
        p = s / s.sum()
        assert f.width == width
        assert f.effective_rank == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
        assert f.participation_ratio == pytest.approx((s ** 2).sum() ** 2 / (s ** 4).sum(), rel=1e-9)
        assert f.dead == int((np.abs(h).max(0) == 0).sum())
    assert r.features[0].dead >= 1 and r.features[1].duplicated == 1 and r.features[0].duplicated == 0
    jac = torch.autograd.functional.jacobian(lambda v: model(v).sum(0), x)   # [O, N, D]
    norms = jac.permute(1, 0, 2).reshape(9, -1).norm(dim=1)
    assert r.input_grad_norm == pytest.approx(norms.mean().item(), rel=1e-12)


def test_aging_fit_matches_least_squares():
    stats = pytest.importorskip("scipy.stats")
    t = np.array([0.0, 10, 20, 40, 80, 160, 320])
    rng = np.random.default_rng(0)
    r = np.empty_like(t)
    r[0] = 5.0                          # step 0 lies outside the window (and has no logarithm)
    r[1:] = 3.0 * t[1:] ** -0.4 * np.exp(rng.normal(0, 0.05, t.size - 1))
    fit = dynascope.aging_fit(t, r, fit_window=(10, 320), confidence=0.9)
    lt, lr = np.log(t[1:]), np.log(r[1:])
    slope, intercept = np.polyfit(lt, lr, 1)
    res = lr - (slope * lt + intercept)
    n = lt.size
    stderr = math.sqrt(res @ res / (n - 2) / ((lt - lt.mean()) ** 2).sum())
    q = stats.t.ppf(0.95, n - 2)
    assert fit.beta == pytest.approx(-slope, rel=1e-10)
    assert fit.amplitude == pytest.approx(math.exp(intercept), rel=1e-10)
    assert fit.beta_stderr == pytest.approx(stderr, rel=1e-9)
    assert fit.beta_ci[0] == pytest.approx(-slope - q * stderr, rel=1e-9)
    assert fit.beta_ci[1] == pytest.approx(-slope + q * stderr, rel=1e-9)
    assert fit.r_squared == pytest.approx(1 - (res @ res) / ((lr - lr.mean()) ** 2).sum(), rel=1e-10)
    assert fit.points == 6 and fit.skipped == 0 and fit.fit_window == (10.0, 320.0)
    default = dynascope.aging_fit(t, r)
    assert default.fit_window == (1.0, 320.0) and default.points == 6
    with pytest.raises(dynascope.InvalidArgument, match="3"):
        dynascope.aging_fit(t, r, fit_window=(100, 200))
    with pytest.raises(dynascope.ShapeMismatch, match="one response per step"):
        dynascope.aging_fit(t, r[:3])


# ---- the command-line tool on the same network and data ----

def run_cli(tmp_path, *args):
    import json
    import os
    import subprocess
    cli = os.environ.get("DYNASCOPE_CLI")
    if not cli:
        pytest.skip("DYNASCOPE_CLI is not set (ctest sets it to the command-line tool of the build)")
    out = tmp_path / "out.json"
    subprocess.run([cli, *args, "--threads", "1", "--quiet", "--out", str(out)], check=True)
    return json.loads(out.read_text())


def save_network(model, path, activation):
    st = pytest.importorskip("safetensors.numpy")
    tensors = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    st.save_file(tensors, str(path), metadata={"activation": activation})


def test_elasticity_and_response_equal_the_command_line(tmp_path):
    model = make_model((3, 6, 3), seed=31)
    g = torch.Generator().manual_seed(32)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2] * 4)
    save_network(model, tmp_path / "m.safetensors", "tanh")
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    common = ["--model", str(tmp_path / "m.safetensors"), "--inputs", str(tmp_path / "x.npy"), "--targets",
              str(tmp_path / "y.npy")]
    mlp = dynascope.Mlp.from_torch(model)
    j = run_cli(tmp_path, "elasticity", *common, "--pairs-per-class", "2", "--seed", "9", "--update", "adam",
                "--eta", "1e-2", "--out-matrix", str(tmp_path / "s.npy"))
    e = quiet(dynascope.elasticity, mlp, x, y, pairs_per_class=2, seed=9, update="adam", eta=1e-2, threads=1,
              progress=False)
    assert j["data"]["train_samples"] == 12
    assert e.source_rows.tolist() == j["source_rows"] and e.metric == j["metric"]
    np.testing.assert_array_equal(e.s_rel.numpy(), np.load(tmp_path / "s.npy"))
    np.testing.assert_array_equal(e.class_matrix.numpy(), np.array(j["class_matrix"]))
    assert (e.mean, e.pairs, e.ratio) == (j["mean"], j["pairs"], j["ratio"])

    j = run_cli(tmp_path, "response", *common, "--eta", "1e-2")
    r = quiet(dynascope.response, mlp, x, y, eta=1e-2, threads=1, progress=False)
    assert (r.mean_diagonal, r.mean_off_diagonal) == (j["mean_diagonal"], j["mean_off_diagonal"])
    assert r.layer_diagonal.tolist() == j["layer_diagonal"] and r.input_grad_norm == j["input_grad_norm"]
    assert [f.effective_rank for f in r.features] == [f["effective_rank"] for f in j["features"]]


# ---- any torch model ----

class SmallCnn(nn.Module):
    def __init__(self, outputs):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3),
                                 nn.Tanh(), nn.Flatten(), nn.Linear(4 * 2 * 2, outputs))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("case", ["kl-labels", "abs-values-x2", "l2-adam"])
def test_torch_elasticity_of_a_cnn_matches_torch(case):
    torch.manual_seed(33)
    outputs = 1 if case == "abs-values-x2" else 3
    model = SmallCnn(outputs).double().eval()
    g = torch.Generator().manual_seed(34)
    x = torch.randn(7, 1, 8, 8, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64) if case == "abs-values-x2" else None
    if case == "abs-values-x2":
        y = torch.randn(7, 1, generator=g, dtype=torch.float64)
        metric, loss, update = "abs", "mse", "sgd"
    else:
        y = torch.tensor([0, 1, 2, 0, 1, 2, 1])
        metric, loss, update = ("kl", "xent", "sgd") if case == "kl-labels" else ("l2", "xent", "adam")
    eta = 1e-3
    p0 = flat(model)
    e = quiet(dynascope.torch_elasticity, model, x, y, x2=x2, eta=eta, update=update, metric=metric,
              chunk_size=3, progress=False)
    assert torch.equal(flat(model), p0)
    delta, own, df, base1, base2 = step_changes(model, x, y, x if x2 is None else x2, eta, loss, update)
    self_m = metric_of(own, base1, metric)
    expected = metric_of(delta, base2[None].expand_as(delta), metric) / self_m[:, None]
    assert e.metric == metric and e.form == "step" and isinstance(e.s_rel, torch.Tensor)
    assert_close(e.s_rel, expected, 1e-7 if metric == "kl" else 1e-9)
    if case == "abs-values-x2":
        assert_close(e.s_ker, delta[..., 0] / (-eta * df[:, 0:1]), 1e-9)
    else:
        s = expected.numpy().copy()
        np.fill_diagonal(s, np.nan)
        assert e.mean == pytest.approx(np.nanmean(s), rel=1e-6)
        assert e.class_matrix.shape == (3, 3)


def test_torch_elasticity_equals_the_mlp_path():
    model = make_model((4, 6, 5, 3), seed=35)
    x, y = data(6, 4, 36, labels=3)
    x2, y2 = data(4, 4, 37, labels=3)
    a = quiet(dynascope.elasticity, dynascope.Mlp.from_torch(model), x, y, x2=x2, targets2=y2, threads=1,
              progress=False)
    b = quiet(dynascope.torch_elasticity, model, x.numpy(), y.numpy(), x2=x2.numpy(), targets2=y2.numpy(),
              progress=False)
    assert isinstance(b.s_rel, np.ndarray)
    assert_close(b.s_rel, a.s_rel, 1e-7)
    assert_close(b.class_matrix, a.class_matrix, 1e-7)
    with pytest.raises(dynascope.InvalidArgument, match="model: expected a torch.nn.Module"):
        dynascope.torch_elasticity(dynascope.Mlp.from_torch(model), x, y)
    with pytest.raises(dynascope.InvalidArgument, match="x: dtype float32 differs"):
        dynascope.torch_elasticity(model, x.float(), y)
    drop = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).double()
    with pytest.raises(dynascope.InvalidArgument, match="model.eval()"):
        dynascope.torch_elasticity(drop, x, y)


# ---- the training response of any torch model ----

class SharedReluCnn(nn.Module):
    """Two convolutions sharing one in-place ReLU module (called twice), pooling, a Linear head."""

    def __init__(self, outputs):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * 2 * 2, outputs)

    def forward(self, x):
        h = self.pool(self.act(self.conv1(x)))
        return self.head(self.act(self.conv2(h)).flatten(1))


def group_columns(model):
    """(module name, slice of parameters_to_vector) of every module owning parameters directly."""
    out, start = [], 0
    for name, m in model.named_modules():
        size = sum(p.numel() for p in m.parameters(recurse=False))
        if size:
            out.append((name, slice(start, start + size)))
            start += size
    assert start == flat(model).numel()
    return out


def response_means(r):
    r = np.asarray(r)
    off = ~np.eye(r.shape[0], dtype=bool)
    return r.diagonal().mean(), r[off].mean()


def features_reference(h, weights=None, bias=None, tolerance=1e-3):
    """Effective rank, participation ratio, dead and duplicated units of h [N, width] by NumPy."""
    s = np.linalg.svd(h, compute_uv=False)
    s = s[s > max(h.shape) * np.finfo(float).eps * s[0]]
    p = s / s.sum()
    dup = None
    if weights is not None:
        u = np.concatenate([weights.reshape(weights.shape[0], -1), bias[:, None]], 1)
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        dup = sum(any(np.linalg.norm(u[j] - u[i]) <= tolerance for i in range(j)) for j in range(u.shape[0]))
    return np.exp(-(p * np.log(p)).sum()), (s ** 2).sum() ** 2 / (s ** 4).sum(), int((np.abs(h).max(0) == 0).sum()), dup


@pytest.mark.parametrize("labels", [True, False])
def test_torch_response_of_a_cnn_matches_torch(labels):
    torch.manual_seed(41)
    model = SharedReluCnn(3).double().eval()
    with torch.no_grad():
        model.conv1.bias[2] = -1e3                       # channel 2 of the first ReLU is dead everywhere
        model.conv2.weight[3] = 2.5 * model.conv2.weight[1]   # filter 4 of conv2 duplicates filter 2
        model.conv2.bias[3] = 2.5 * model.conv2.bias[1]
    g = torch.Generator().manual_seed(42)
    x = torch.randn(7, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 1]) if labels else torch.randn(7, 3, generator=g, dtype=torch.float64)
    loss = "xent" if labels else "mse"
    eta = 1e-4
    p0 = flat(model)
    r = quiet(dynascope.torch_response, model, x, y, eta=eta, chunk_size=3, threads=1, progress=False)
    assert torch.equal(flat(model), p0)
    rn = quiet(dynascope.torch_response, model, x.numpy(), y.numpy(), eta=eta, form="ntk", chunk_size=2, threads=1,
               progress=False)
    assert isinstance(r.matrix, torch.Tensor) and isinstance(rn.matrix, np.ndarray)

    # The step: per-sample gradients by autograd, the stepped parameters in a copy, the output change.
    delta, _, df, _, _ = step_changes(model, x, y, x, eta, loss)
    gn = (df ** 2).sum(-1)
    step = -torch.einsum("ia,ija->ij", df, delta) / (eta * gn)[:, None]
    assert r.loss == loss and r.form == "step" and r.samples == 7 and r.flops == 0
    assert_close(r.matrix, step, 1e-8)
    diag, off = response_means(step)
    assert r.mean_diagonal == pytest.approx(diag, rel=1e-8) and r.mean_off_diagonal == pytest.approx(off, rel=1e-8)

    # The eta -> 0 limit and its parts: g^T J_G(x_j) J_G(x_i)^T g / ||g||^2 per module's parameter block.
    j = jacobians(model, x)
    groups = group_columns(model)
    assert r.layer_names == rn.layer_names == [name for name, _ in groups] == ["conv1", "conv2", "head"]
    parts = [torch.einsum("ia,jap,ibp,ib->ij", df, j[:, :, c], j[:, :, c], df) / gn[:, None] for _, c in groups]
    total = sum(parts)
    assert_close(rn.matrix, total, 1e-10)
    layer = np.array([response_means(p) for p in parts])
    for res in (r, rn):
        assert_close(res.layer_diagonal, layer[:, 0], 1e-10)
        assert_close(res.layer_off_diagonal, layer[:, 1], 1e-10)
    assert rn.mean_diagonal == pytest.approx(response_means(total)[0], rel=1e-10)
    assert math.isnan(rn.kernel_gap)
    limit = layer[:, 0].sum()
    assert r.kernel_gap == pytest.approx(abs(r.mean_diagonal - limit) / abs(limit), rel=1e-6)
    assert 0 < r.kernel_gap < 0.05

    # The features: the shared in-place ReLU's two calls, with the convolution feeding each.
    with torch.no_grad():
        h1 = F.relu(model.conv1(x))
        h2 = F.relu(model.conv2(model.pool(h1)))
    assert [f.name for f in r.features] == ["act (call 1)", "act (call 2)"]
    for f, h, conv in zip(r.features, (h1, h2), (model.conv1, model.conv2)):
        hn = h.reshape(7, -1).numpy()
        er, pr, dead, dup = features_reference(hn, conv.weight.detach().numpy(), conv.bias.detach().numpy())
        assert f.width == hn.shape[1]
        assert f.effective_rank == pytest.approx(er, rel=1e-9)
        assert f.participation_ratio == pytest.approx(pr, rel=1e-9)
        assert (f.dead, f.duplicated) == (dead, dup)
    assert r.features[0].dead >= 64 and r.features[1].duplicated == 1 and r.features[0].duplicated == 0
    norms = [torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[i]).reshape(3, -1).norm()
             for i in range(7)]
    assert r.input_grad_norm == pytest.approx(torch.stack(norms).mean().item(), rel=1e-12)

    # Chosen modules: the pooled features have no Linear / Conv feeding them, so no duplicate count.
    rp = quiet(dynascope.torch_response, model, x, y, eta=eta, per_layer=False, layers=["pool"], threads=1,
               progress=False)
    assert rp.layer_names == [] and rp.layer_diagonal.numel() == 0 and math.isnan(rp.kernel_gap)
    assert_close(rp.matrix, r.matrix, 1e-12)
    (fp,) = rp.features
    hp = model.pool(h1).reshape(7, -1).numpy()
    er, pr, dead, _ = features_reference(hp)
    assert fp.name == "pool" and fp.layer == 1 and fp.duplicated is None and fp.dead == dead
    assert fp.effective_rank == pytest.approx(er, rel=1e-9) and fp.participation_ratio == pytest.approx(pr, rel=1e-9)


@pytest.mark.parametrize("form", ["step", "ntk"])
def test_torch_response_of_a_sequential_equals_the_mlp_path(form):
    torch.manual_seed(43)
    model = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        model[2].weight[4] = 3.0 * model[2].weight[0]   # a duplicated unit in the second hidden layer
        model[2].bias[4] = 3.0 * model[2].bias[0]
    mlp = dynascope.Mlp.from_torch(model)
    for y in (data(9, 4, 44, labels=3)[1], data(9, 4, 45, outputs=3)[1]):
        x = data(9, 4, 46)[0]
        a = quiet(dynascope.response, mlp, x, y, eta=1e-2, form=form, threads=1, progress=False)
        b = quiet(dynascope.torch_response, model, x, y, eta=1e-2, form=form, chunk_size=4, threads=1, progress=False)
        assert_close(b.matrix, a.matrix, 1e-12)
        assert b.mean_diagonal == pytest.approx(a.mean_diagonal, rel=1e-12)
        assert b.mean_off_diagonal == pytest.approx(a.mean_off_diagonal, rel=1e-12)
        assert_close(b.layer_diagonal, a.layer_diagonal, 1e-12)
        assert_close(b.layer_off_diagonal, a.layer_off_diagonal, 1e-12)
        assert b.layer_names == ["0", "2", "4"]
        if form == "step":
            assert b.kernel_gap == pytest.approx(a.kernel_gap, rel=1e-8)
        else:
            assert math.isnan(b.kernel_gap) and math.isnan(a.kernel_gap)
        assert b.input_grad_norm == pytest.approx(a.input_grad_norm, rel=1e-12)
        assert [f.name for f in b.features] == ["1", "3"]
        for fa, fb in zip(a.features, b.features):
            assert (fb.layer, fb.width, fb.dead, fb.duplicated) == (fa.layer, fa.width, fa.dead, fa.duplicated)
            assert fb.effective_rank == pytest.approx(fa.effective_rank, rel=1e-12)
            assert fb.participation_ratio == pytest.approx(fa.participation_ratio, rel=1e-12)
        assert b.features[1].duplicated == 1

    # A sample fitted exactly has no response, in both paths alike (its output is the last bias,
    # exactly, in any order of summation: x = 0, no first bias, tanh(0) = 0).
    one = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    with torch.no_grad():
        one[0].bias.zero_()
    x, y = data(6, 4, 47)
    x[2] = 0.0
    y[2] = one[2].bias.detach()
    with pytest.warns(RuntimeWarning, match="zero loss gradient"):
        a = dynascope.response(dynascope.Mlp.from_torch(one), x, y, form=form, threads=1, progress=False)
    with pytest.warns(RuntimeWarning, match="zero loss gradient"):
        b = dynascope.torch_response(one, x, y, form=form, threads=1, progress=False)
    assert b.undefined_sources.tolist() == a.undefined_sources.tolist() == [2]
    assert torch.isnan(b.matrix[2]).all() and torch.isfinite(b.matrix[[0, 1, 3, 4, 5]]).all()
    assert b.mean_diagonal == pytest.approx(a.mean_diagonal, rel=1e-11)
    assert b.mean_off_diagonal == pytest.approx(a.mean_off_diagonal, rel=1e-11)


def test_torch_response_progress_and_bad_input():
    torch.manual_seed(48)
    model = SharedReluCnn(2).double().eval()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1])
    calls = []
    quiet(dynascope.torch_response, model, x, y, chunk_size=2, threads=1,
          progress=lambda task, done, total: calls.append((task, done, total)))
    tasks = [t for t, _, _ in calls]
    assert {"response", "response kernel", "feature space"} == set(tasks)
    assert all(done <= total for _, done, total in calls) and calls[-1][1] == calls[-1][2]

    class Stop(Exception):
        pass

    def stop(task, done, total):
        raise Stop("stopped by the test")
    with pytest.raises(Stop, match="stopped by the test"):
        dynascope.torch_response(model, x, y, threads=1, progress=stop)

    R = dynascope.torch_response
    with pytest.raises(dynascope.InvalidArgument, match="model: expected a torch.nn.Module"):
        R(dynascope.Mlp.from_torch(make_model((3, 4, 2))), x, y)
    with pytest.raises(dynascope.InvalidArgument, match="x: dtype float32 differs"):
        R(model, x.float(), y)
    with pytest.raises(dynascope.InvalidArgument, match="x: the response needs at least 2 samples"):
        R(model, x[:1], y[:1])
    with pytest.raises(dynascope.ShapeMismatch, match=r"targets: expected 5 labels"):
        R(model, x, y[:4])
    with pytest.raises(dynascope.InvalidArgument, match="class label 2 at row"):
        R(model, x, y + 1)
    with pytest.raises(dynascope.InvalidArgument, match="form: expected 'step' or 'ntk'"):
        R(model, x, y, form="kernel")
    with pytest.raises(dynascope.InvalidArgument, match="eta: expected a finite number > 0"):
        R(model, x, y, eta=float("nan"))
    with pytest.raises(dynascope.InvalidArgument, match="duplicate_tolerance"):
        R(model, x, y, duplicate_tolerance=-1.0)
    with pytest.raises(dynascope.InvalidArgument, match="chunk_size: expected an integer >= 1"):
        R(model, x, y, chunk_size=0)
    with pytest.raises(dynascope.InvalidArgument, match="layers: the model has no module named 'conv3'; its modules "
                                                        "are 'conv1', 'conv2'"):
        R(model, x, y, layers=["conv3"])
    with pytest.raises(dynascope.InvalidArgument, match="layers: expected a list of module names"):
        R(model, x, y, layers="act")
    unused = SharedReluCnn(2).double().eval()
    unused.spare = nn.Tanh()
    with pytest.raises(dynascope.InvalidArgument, match="layers: module 'spare' does not run"):
        R(unused, x, y, layers=["act", "spare"])
    assert [f.name for f in quiet(R, unused, x, y, threads=1, progress=False).features] == \
        ["act (call 1)", "act (call 2)"]      # by default, an activation module that never runs is left out
    drop = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)).double()
    with pytest.raises(dynascope.InvalidArgument, match="model.eval()"):
        R(drop, torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1]))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, v):
            return self.lin(v), v
    with pytest.raises(dynascope.InvalidArgument, match="model: returns tuple"):
        R(Pair().double(), torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1]))
