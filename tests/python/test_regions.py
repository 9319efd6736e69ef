"""dynascope.local_complexity, count_patterns and exact_regions against NumPy brute force.

The references push every vertex x +- r v_p (or every point) through a float64 NumPy forward pass
written here (matrix products, and a convolution by explicit patch loops for the CNN) and compare
sign vectors one by one; no dynascope code is involved except, where named, the random frame
(checked orthonormal first) and the samplers' points (checked against their formulas).
"""
import math

import numpy as np
import pytest

import dynascope

torch = pytest.importorskip("torch")
nn = torch.nn

RADIUS = 0.3


# ---- NumPy references -----------------------------------------------------------------------------

def np_mlp_preacts(model, x):
    """Pre-activations of every Linear of an nn.Sequential of Linear/ReLU/Tanh, float64 NumPy."""
    a = np.asarray(x, dtype=np.float64)
    zs = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            w = layer.weight.detach().double().numpy()
            b = layer.bias.detach().double().numpy() if layer.bias is not None else 0.0
            a = a @ w.T + b
            zs.append(a)
        elif isinstance(layer, nn.ReLU):
            a = np.maximum(a, 0.0)
        elif isinstance(layer, nn.Tanh):
            a = np.tanh(a)
        else:
            raise TypeError(layer)
    return zs


def np_conv2d(x, w, b, stride):
    """x [N, C, H, W], w [O, C, k, k]: a valid convolution by explicit loops over output pixels."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.empty((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w) + b
    return out


def np_cnn_preacts(model, x):
    """The small CNN below in NumPy: pre-activations of conv1, conv2, fc1, fc2, each [N, -1]."""
    p = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    z1 = np_conv2d(x, p["conv1.weight"], p["conv1.bias"][None, :], 1)
    z2 = np_conv2d(np.maximum(z1, 0), p["conv2.weight"], p["conv2.bias"][None, :], 2)
    h = np.maximum(z2, 0).reshape(x.shape[0], -1)
    z3 = h @ p["fc1.weight"].T + p["fc1.bias"]
    z4 = np.maximum(z3, 0) @ p["fc2.weight"].T + p["fc2.bias"]
    return [z.reshape(x.shape[0], -1) for z in (z1, z2, z3, z4)]


def brute_lc(preacts_fn, x, frames, radius):
    """counts [N, L]: frames [N, P, D] (one per sample), vertices x +- r v_p in vertex order."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    counts = []
    for i in range(n):
        f = frames[i]
        verts = np.empty((2 * f.shape[0], flat.shape[1]))
        verts[0::2] = flat[i] + radius * f
        verts[1::2] = flat[i] - radius * f
        zs = preacts_fn(verts.reshape((-1,) + x.shape[1:]))
        counts.append([int(((z > 0) != (z[0] > 0)).any(axis=0).sum()) for z in zs])
    return np.array(counts)


def brute_patterns(zs_hidden):
    """(distinct, distinct per layer, ids in order of first appearance) of sign vectors."""
    signs = [z > 0 for z in zs_hidden]
    rows = np.concatenate(signs, axis=1)
    seen, ids = {}, []
    for r in rows:
        ids.append(seen.setdefault(r.tobytes(), len(seen)))
    per_layer = [len({r.tobytes() for r in s}) for s in signs]
    return len(seen), per_layer, np.array(ids)


def orthonormal(p, d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, p)))
    return np.ascontiguousarray(q.T)


def make_mlp(seed=0, act=nn.ReLU):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 24), act(), nn.Linear(24, 16), act(), nn.Linear(16, 3)).double()


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2)
        self.fc1 = nn.Linear(4 * 2 * 2, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h)).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


def make_cnn(seed=0):
    torch.manual_seed(seed)
    return SmallCnn().double().eval()


def data(n, d, seed=1):
    return np.random.default_rng(seed).standard_normal((n, d))


# ---- local complexity -----------------------------------------------------------------------------

def test_random_frame_is_orthonormal():
    for per_sample in (False, True):
        f = dynascope.random_frame(9, 4, seed=3, per_sample=per_sample, sample=5)
        np.testing.assert_allclose(f @ f.T, np.eye(4), atol=1e-13)
    assert not np.array_equal(dynascope.random_frame(9, 4, seed=3, per_sample=True, sample=0),
                              dynascope.random_frame(9, 4, seed=3, per_sample=True, sample=1))


@pytest.mark.parametrize("frame_kind", ["shared", "per_sample", "given"])
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh])
def test_mlp_lc_matches_numpy_brute_force(frame_kind, act):
    net = make_mlp(act=act)
    mlp = dynascope.Mlp.from_torch(net)
    x = data(40, 5)
    kw = {}
    if frame_kind == "given":
        f = orthonormal(3, 5, 7)
        frames = np.repeat(f[None], 40, axis=0)
        kw["frame"] = f
    else:
        per = frame_kind == "per_sample"
        frames = np.stack([dynascope.random_frame(5, 3, seed=11, per_sample=per, sample=i) for i in range(40)])
        kw.update(dims=3, seed=11, frame_per_sample=per)
    r = dynascope.local_complexity(mlp, x, RADIUS, threads=1, progress=False, **kw)
    want = brute_lc(lambda v: np_mlp_preacts(net, v), x, frames, RADIUS)
    assert isinstance(r.counts, np.ndarray) and r.counts.dtype == np.int32
    np.testing.assert_array_equal(r.counts, want)
    assert want[:, :2].sum() > 0
    np.testing.assert_allclose(r.per_layer_mean, want.mean(axis=0), rtol=1e-15)
    assert r.total_mean == pytest.approx(want[:, :2].sum(axis=1).mean(), rel=1e-15)
    assert r.all_layers_mean == pytest.approx(want.sum(axis=1).mean(), rel=1e-15)
    assert (r.dims, r.radius, r.samples, r.output_layer) == (3, RADIUS, 40, 2)
    assert r.layers == ["layer1", "layer2", "layer3"]


def test_dims_default_is_min_25_and_input_width():
    mlp = dynascope.Mlp.from_torch(make_mlp())
    r = dynascope.local_complexity(mlp, data(5, 5), RADIUS, threads=1, progress=False)
    assert r.dims == 5


def test_cnn_lc_matches_numpy_brute_force():
    cnn = make_cnn()
    x = np.random.default_rng(2).standard_normal((12, 2, 7, 7))
    xt = torch.from_numpy(x)
    p = 6
    frames = np.stack([dynascope.random_frame(98, p, seed=4, per_sample=True, sample=i) for i in range(12)])
    r = dynascope.local_complexity(cnn, xt, 0.5, dims=p, seed=4, frame_per_sample=True, threads=1, progress=False)
    want = brute_lc(lambda v: np_cnn_preacts(cnn, v), x, frames, 0.5)
    assert isinstance(r.counts, torch.Tensor) and r.counts.dtype == torch.int32
    assert r.layers == ["conv1", "conv2", "fc1", "fc2"]
    assert r.output_layer == 3       # fc2's output is what forward returns
    np.testing.assert_array_equal(r.counts.numpy(), want)
    assert want[:, :3].sum() > 0
    assert r.total_mean == pytest.approx(want[:, :3].sum(axis=1).mean(), rel=1e-15)
    assert r.all_layers_mean == pytest.approx(want.sum(axis=1).mean(), rel=1e-15)
    # Tiles of 5 samples (per-sample frames follow the sample index) and a given frame.
    r5 = dynascope.local_complexity(cnn, xt, 0.5, dims=p, seed=4, frame_per_sample=True, batch_size=5, threads=1,
                                    progress=False)
    assert torch.equal(r5.counts, r.counts)
    f = orthonormal(4, 98, 9)
    rg = dynascope.local_complexity(cnn, xt, 0.5, frame=torch.from_numpy(f).reshape(4, 2, 7, 7), threads=1,
                                    progress=False)
    np.testing.assert_array_equal(rg.counts.numpy(),
                                  brute_lc(lambda v: np_cnn_preacts(cnn, v), x, np.repeat(f[None], 12, 0), 0.5))


def test_cnn_chosen_layers_by_name_and_module():
    cnn = make_cnn()
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((6, 2, 7, 7)))
    full = dynascope.local_complexity(cnn, x, 0.5, dims=5, threads=1, progress=False)
    part = dynascope.local_complexity(cnn, x, 0.5, dims=5, layers=["conv2", cnn.fc1], threads=1, progress=False)
    assert part.layers == ["conv2", "fc1"] and part.output_layer is None
    assert torch.equal(part.counts, full.counts[:, 1:3])
    assert part.total_mean == pytest.approx(float(full.counts[:, 1:3].sum(1).double().mean()))


def test_sequential_through_hooks_equals_mlp_path_in_float32():
    net = make_mlp(3).float()
    x = torch.from_numpy(data(30, 5, 4).astype(np.float32))
    a = dynascope.local_complexity(dynascope.Mlp.from_torch(net), x, RADIUS, dims=4, seed=2, threads=1, progress=False)
    b = dynascope.local_complexity(net, x, RADIUS, dims=4, seed=2, threads=1, progress=False)
    assert torch.equal(a.counts, b.counts)
    assert (a.total_mean, a.all_layers_mean) == (b.total_mean, b.all_layers_mean)


def test_callable_returning_preactivations():
    net = make_mlp()
    x = data(20, 5)
    ref = dynascope.local_complexity(dynascope.Mlp.from_torch(net), x, RADIUS, dims=3, threads=1, progress=False)
    seen = []

    def fn(v):
        seen.append(type(v))
        return {"a": np_mlp_preacts(net, v)[0], "b": np_mlp_preacts(net, v)[1]}

    r = dynascope.local_complexity(fn, x, RADIUS, dims=3, threads=1, progress=False)
    assert seen[0] is np.ndarray
    assert r.layers == ["a", "b"] and r.output_layer is None
    np.testing.assert_array_equal(r.counts, ref.counts[:, :2])
    assert r.total_mean == r.all_layers_mean == pytest.approx(ref.total_mean)


def test_jax_in_jax_out():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    net = make_mlp()
    mlp = dynascope.Mlp.from_torch(net)
    x = data(10, 5)
    r = dynascope.local_complexity(mlp, jnp.asarray(x), RADIUS, dims=2, threads=1, progress=False)
    assert isinstance(r.counts, jax.Array)
    ref = dynascope.local_complexity(mlp, x, RADIUS, dims=2, threads=1, progress=False)
    np.testing.assert_array_equal(np.asarray(r.counts), ref.counts)
    p = dynascope.count_patterns(mlp, jnp.asarray(x), ids=True, threads=1, progress=False)
    assert isinstance(p.ids, jax.Array)


def test_inputs_not_modified_and_not_copied():
    net = make_mlp()
    mlp = dynascope.Mlp.from_torch(net)
    x = torch.from_numpy(data(10, 5))
    before = x.clone()
    dynascope.local_complexity(mlp, x, RADIUS, threads=1, progress=False)
    dynascope.local_complexity(net, x, RADIUS, threads=1, progress=False)
    assert torch.equal(x, before)


# ---- patterns and samplers ------------------------------------------------------------------------

def test_mlp_patterns_match_numpy_brute_force():
    net = make_mlp(5)
    mlp = dynascope.Mlp.from_torch(net)
    base = data(60, 5, 6)
    x = base[np.random.default_rng(0).integers(0, 60, 300)]   # duplicates
    r = dynascope.count_patterns(mlp, x, ids=True, threads=1, progress=False)
    distinct, per_layer, ids = brute_patterns(np_mlp_preacts(net, x)[:2])
    assert (r.samples, r.distinct, r.distinct_per_layer) == (300, distinct, per_layer)
    np.testing.assert_array_equal(r.ids, ids)
    assert r.ids.dtype == np.int64
    assert dynascope.count_patterns(mlp, x, threads=1, progress=False).ids is None


def test_cnn_patterns_match_numpy_brute_force():
    cnn = make_cnn(1)
    x = np.random.default_rng(5).standard_normal((50, 2, 7, 7)) * 0.3
    x = np.concatenate([x, x[:10]])
    r = dynascope.count_patterns(cnn, torch.from_numpy(x), ids=True, batch_size=16, threads=1, progress=False)
    distinct, per_layer, ids = brute_patterns(np_cnn_preacts(cnn, x)[:3])
    assert r.layers == ["conv1", "conv2", "fc1"]
    assert (r.samples, r.distinct, r.distinct_per_layer) == (60, distinct, per_layer)
    np.testing.assert_array_equal(r.ids.numpy(), ids)


def test_plane_and_segment_samplers_follow_their_formulas():
    net = make_mlp(2)
    mlp = dynascope.Mlp.from_torch(net)
    abc = data(3, 5, 8)
    res = 40
    s = (np.arange(res) + 0.5) / res
    grid = (abc[0] + s[None, :, None] * (abc[1] - abc[0]) + s[:, None, None] * (abc[2] - abc[0])).reshape(-1, 5)
    r = dynascope.count_patterns(mlp, plane=abc, resolution=res, ids=True, threads=1, progress=False)
    distinct, per_layer, ids = brute_patterns(np_mlp_preacts(net, grid)[:2])
    assert (r.samples, r.distinct, r.distinct_per_layer) == (res * res, distinct, per_layer)
    np.testing.assert_array_equal(r.ids, ids)
    seg = np.linspace(abc[0], abc[1], 777)
    r = dynascope.count_patterns(mlp, segment=abc[:2], count=777, threads=1, progress=False)
    assert r.distinct == brute_patterns(np_mlp_preacts(net, seg)[:2])[0]
    # Around anchors: counts of points only (the draws are the library's); every point of the
    # cross-polytope sampler lies within the L1 ball of the frame around its anchor.
    r = dynascope.count_patterns(mlp, around=abc, radius=0.2, count=50, shape="cross-polytope", dims=3, seed=1,
                                 threads=1, progress=False)
    assert r.samples == 150 and 1 <= r.distinct <= 150


def test_exact_segment_regions_against_dense_sampling():
    net = make_mlp(4)
    mlp = dynascope.Mlp.from_torch(net)
    ends = data(2, 5, 9) * 2
    r = dynascope.exact_regions(mlp, segment=ends)
    t = np.linspace(0, 1, 20001)
    pts = ends[0] + t[:, None] * (ends[1] - ends[0])
    signs = np.concatenate([z > 0 for z in np_mlp_preacts(net, pts)[:2]], axis=1)
    change = np.nonzero((signs[1:] != signs[:-1]).any(axis=1))[0]
    # Regions are convex, so a segment crosses each at most once: runs of one pattern = regions.
    assert r.regions == len(change) + 1 == len(r.breakpoints) + 1
    assert np.all(np.abs(r.breakpoints - t[change]) <= 1 / 20000 + 1e-12)


def test_exact_plane_regions_cover_the_plane_once():
    net = make_mlp(4)
    mlp = dynascope.Mlp.from_torch(net)
    abc = data(3, 5, 10)
    r = dynascope.exact_regions(mlp, plane=abc)
    area = 0.0
    patterns = set()
    for poly in r.polygons:
        v = poly.vertices
        a = 0.5 * np.sum(v[:, 0] * np.roll(v[:, 1], -1) - np.roll(v[:, 0], -1) * v[:, 1])
        assert a > 0     # counter-clockwise
        area += a
        c = v.mean(axis=0)
        pt = abc[0] + c[0] * (abc[1] - abc[0]) + c[1] * (abc[2] - abc[0])
        zs = np_mlp_preacts(net, pt[None])
        patterns.add(np.concatenate([z[0] > 0 for z in zs[:2]]).tobytes())
        assert poly.label == int(np.argmax(zs[2][0]))
    assert area == pytest.approx(1.0, abs=1e-9)
    assert len(patterns) == r.regions == len(r.polygons)     # one region per pattern
    assert r.boundary_regions == sum(p.boundary for p in r.polygons)
    assert r.boundary_segments.shape[1] == 4
    # A grid of the same plane never sees more regions than exist.
    assert dynascope.count_patterns(mlp, plane=abc, resolution=64, threads=1, progress=False).distinct <= r.regions
    with pytest.raises(dynascope.InvalidArgument, match="max_regions|regions"):
        dynascope.exact_regions(mlp, plane=abc, max_regions=2)


# ---- progress, cancellation -----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["mlp", "torch"])
def test_progress_is_reported_and_an_exception_stops(which):
    net = make_mlp()
    model = dynascope.Mlp.from_torch(net) if which == "mlp" else net
    x = data(50, 5)
    calls = []
    dynascope.local_complexity(model, x, RADIUS, batch_size=None if which == "mlp" else 10, threads=1,
                               progress=lambda *a: calls.append(a))
    assert calls and calls[-1][1] == calls[-1][2] == 50

    class Stop(Exception):
        pass

    def stop(*a):
        raise Stop()

    with pytest.raises(Stop):
        dynascope.local_complexity(model, x, RADIUS, threads=1, progress=stop)
    with pytest.raises(Stop):
        dynascope.count_patterns(model, x, threads=1, progress=stop)


# ---- bad input ------------------------------------------------------------------------------------

def test_bad_input_gives_clear_errors():
    net = make_mlp()
    mlp = dynascope.Mlp.from_torch(net)
    x = data(8, 5)
    E, S = dynascope.InvalidArgument, dynascope.ShapeMismatch
    lc = dynascope.local_complexity
    kw = dict(threads=1, progress=False)
    with pytest.raises(E, match="x: expected float32 or float64"):
        lc(mlp, x.astype(np.int64), RADIUS, **kw)
    with pytest.raises(E, match="x: dtype float32 differs"):
        lc(mlp, x.astype(np.float32), RADIUS, **kw)
    with pytest.raises(E, match="not C-contiguous"):
        lc(mlp, np.asfortranarray(x), RADIUS, **kw)
    with pytest.raises(S, match="takes 5 inputs"):
        lc(mlp, data(8, 4), RADIUS, **kw)
    with pytest.raises(E, match="radius"):
        lc(mlp, x, 0.0, **kw)
    with pytest.raises(E, match="radius"):
        lc(mlp, x, float("nan"), **kw)
    with pytest.raises(E, match="dims: 6 exceeds the input width 5"):
        lc(mlp, x, RADIUS, dims=6, **kw)
    with pytest.raises(E, match="frame.*dims"):
        lc(mlp, x, RADIUS, dims=2, frame=orthonormal(2, 5, 0), **kw)
    with pytest.raises(E, match="frame_per_sample"):
        lc(mlp, x, RADIUS, frame=orthonormal(2, 5, 0), frame_per_sample=True, **kw)
    with pytest.raises(E, match="orthonormal"):
        lc(mlp, x, RADIUS, frame=2 * orthonormal(2, 5, 0), **kw)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(E, match="sample 3.*NaN"):
        lc(mlp, bad, RADIUS, **kw)
    with pytest.raises(E, match="sample 3.*NaN"):
        lc(net, bad, RADIUS, **kw)
    with pytest.raises(E, match="NaN"):
        dynascope.count_patterns(mlp, bad, **kw)
    with pytest.raises(E, match="NaN"):
        dynascope.count_patterns(net, bad, **kw)
    with pytest.raises(E, match="model: expected a dynascope.Mlp"):
        lc("net", x, RADIUS, **kw)
    # torch model specifics
    with pytest.raises(E, match="no module named 'nope'"):
        lc(net, x, RADIUS, layers=["nope"], **kw)
    with pytest.raises(E, match="not a submodule"):
        lc(net, x, RADIUS, layers=[nn.Linear(2, 2)], **kw)
    with pytest.raises(E, match="parameter '0.weight' is torch.float64 but the inputs are float32"):
        lc(net, x.astype(np.float32), RADIUS, **kw)
    cnn = make_cnn()
    cnn.extra = nn.Linear(3, 3).double()      # a submodule that forward never calls
    with pytest.raises(E, match=r"\['extra'\] did not run"):
        lc(cnn, np.zeros((2, 2, 7, 7)), RADIUS, layers=["conv1", "extra"], **kw)
    shared = nn.Sequential(nn.Linear(5, 5), nn.ReLU())
    twice = nn.Sequential(shared, shared, nn.Linear(5, 2)).double()
    with pytest.raises(E, match="ran twice"):
        lc(twice, x, RADIUS, **kw)
    with pytest.raises(E, match="only for torch models"):
        lc(lambda v: [v], x, RADIUS, layers=["a"], **kw)
    with pytest.raises(E, match="list \\(or dict\\)"):
        lc(lambda v: v, x, RADIUS, **kw)
    # count_patterns sources and keywords
    with pytest.raises(E, match="exactly one of samples, around, segment, plane"):
        dynascope.count_patterns(mlp, x, plane=data(3, 5), **kw)
    with pytest.raises(E, match="exactly one"):
        dynascope.count_patterns(mlp, **kw)
    with pytest.raises(E, match="radius: only with around"):
        dynascope.count_patterns(mlp, x, radius=1.0, **kw)
    with pytest.raises(E, match="around: needs radius"):
        dynascope.count_patterns(mlp, around=x, count=3, **kw)
    with pytest.raises(S, match="plane: expected 3 points"):
        dynascope.count_patterns(mlp, plane=data(2, 5), **kw)
    with pytest.raises(E, match="resolution: only with plane"):
        dynascope.count_patterns(mlp, x, resolution=10, **kw)
    # exact regions
    tanh = dynascope.Mlp.from_torch(make_mlp(act=nn.Tanh))
    with pytest.raises(E, match="piecewise"):
        dynascope.exact_regions(tanh, segment=data(2, 5))
    with pytest.raises(E, match="exactly one of segment"):
        dynascope.exact_regions(mlp)
    with pytest.raises(S, match=r"segment: expected \[2, 5\]"):
        dynascope.exact_regions(mlp, segment=data(3, 5))
    with pytest.raises(E, match="exact regions need a dynascope.Mlp"):
        dynascope.exact_regions(net, segment=data(2, 5))
