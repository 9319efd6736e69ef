"""dynascope.Mlp and dynascope.ntk against a direct PyTorch computation.

The reference kernel is built from per-sample Jacobians taken one output at a time with
torch.autograd (no dynascope code involved), in float64:
    Theta[n, a, m, b] = <d f_a(x1_n)/dw, d f_b(x2_m)/dw>.
Run: python -m pytest tests/python   (after `pip install .`, see docs/python.md)
"""
import numpy as np
import pytest

import dynascope
from helpers import assert_close, jacobians
from helpers import ntk_reference as reference

torch = pytest.importorskip("torch")
nn = torch.nn


def make_model(kind="mixed", seed=0):
    torch.manual_seed(seed)
    if kind == "mixed":
        layers = [nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6, bias=False), nn.GELU(), nn.Identity(),
                  nn.Linear(6, 3)]
    elif kind == "others":
        layers = [nn.Linear(4, 6), nn.LeakyReLU(0.2), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 4),
                  nn.Sigmoid(), nn.Linear(4, 2), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)]
    else:
        raise ValueError(kind)
    return nn.Sequential(*layers).double()




@pytest.mark.parametrize("kind", ["mixed", "others"])
@pytest.mark.parametrize("outputs", ["full", "diagonal", "trace", "sum"])
@pytest.mark.parametrize("method", ["auto", "structured", "jvp", "jacobian"])
@pytest.mark.parametrize("two_sets", [False, True])
def test_kernel_matches_torch_float64(kind, outputs, method, two_sets):
    model = make_model(kind)
    d = model[0].in_features
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(6, d, generator=g, dtype=torch.float64)
    x2 = torch.randn(4, d, generator=g, dtype=torch.float64) if two_sets else None
    j1 = jacobians(model, x1)
    j2 = jacobians(model, x2) if two_sets else j1
    expected = reference(j1, j2, outputs)

    mlp = dynascope.Mlp.from_torch(model)
    k = dynascope.ntk(mlp, x1, x2, outputs=outputs, method=method)
    assert isinstance(k, torch.Tensor) and k.dtype == torch.float64
    assert_close(k, expected, 1e-12)
    if not two_sets:  # without x2 the library promises a bit-for-bit symmetric kernel
        n = x1.shape[0]
        if outputs == "full":
            m = k.reshape(n * k.shape[1], n * k.shape[1])
            assert torch.equal(m, m.T)
        elif outputs == "diagonal":
            assert torch.equal(k, k.permute(1, 0, 2))
        else:
            assert torch.equal(k, k.T)


@pytest.mark.parametrize("method", ["structured", "jacobian"])
def test_per_layer_kernels(method):
    model = make_model("mixed")
    x = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    j = jacobians(model, x)
    sizes = []
    for layer in model:
        if isinstance(layer, nn.Linear):
            sizes.append(sum(p.numel() for p in layer.parameters()))
    k, layers = dynascope.ntk(dynascope.Mlp.from_torch(model), x, outputs="full", method=method, per_layer=True)
    assert len(layers) == 3
    start = 0
    for size, kl in zip(sizes, layers):
        js = j[:, :, start:start + size]
        assert_close(kl, reference(js, js, "full"), 1e-12)
        start += size
    assert_close(sum(layers), k, 1e-12)


def test_spec_string_equals_from_torch():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    params = torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy().copy()
    mlp = dynascope.Mlp("4-8-8-2", params, activation="relu")
    assert mlp.arch == "4-8-8-2" and mlp.num_params == params.size and mlp.activations == ["relu", "relu"]
    x = np.random.default_rng(0).standard_normal((7, 4))
    k = dynascope.ntk(mlp, x, outputs="full")
    j = jacobians(model, torch.from_numpy(x))
    assert_close(k, reference(j, j, "full"), 1e-12)
    assert_close(k, dynascope.ntk(dynascope.Mlp.from_torch(model), torch.from_numpy(x), outputs="full"), 1e-13)


def test_no_bias_spec():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 5, bias=False), nn.Tanh(), nn.Linear(5, 2, bias=False)).double()
    params = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    mlp = dynascope.Mlp("3-5-2", params, activation="tanh", bias=False)
    assert mlp.bias == [False, False] and mlp.num_params == 25
    x = torch.randn(4, 3, dtype=torch.float64)
    j = jacobians(model, x)
    assert_close(dynascope.ntk(mlp, x), reference(j, j, "trace"), 1e-12)


def test_numpy_and_torch_in_out_float32():
    model = make_model("mixed")
    x64 = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    j = jacobians(model, x64)
    expected = reference(j, j, "trace")
    mlp32 = dynascope.Mlp.from_torch(model.float())
    assert mlp32.dtype == "float32"
    x_t = x64.float()
    k_t = dynascope.ntk(mlp32, x_t)
    assert isinstance(k_t, torch.Tensor) and k_t.dtype == torch.float32
    x_np = x_t.numpy().copy()
    k_np = dynascope.ntk(mlp32, x_np)
    assert isinstance(k_np, np.ndarray) and k_np.dtype == np.float32
    assert_close(k_t, expected, 1e-5)
    assert_close(k_np, expected, 1e-5)
    # the parameters may come from another framework than the inputs: the result follows x1
    mlp_np = dynascope.Mlp("5-7-6-3", mlp32.params.numpy(), activation="relu", bias=[True, False, True])
    assert isinstance(dynascope.ntk(mlp_np, x_t), torch.Tensor)


def test_inputs_are_not_copied_or_modified():
    mlp = dynascope.Mlp.from_torch(make_model("mixed"))
    x_t = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    x_np = np.random.default_rng(1).standard_normal((3, 5))
    assert dynascope._core.input_address(x_t.detach()) == x_t.data_ptr()
    assert dynascope._core.input_address(x_np) == x_np.ctypes.data
    assert dynascope._core.input_address(mlp.params) == mlp.params.data_ptr()
    params = np.ascontiguousarray(mlp.params.numpy())
    mlp_np = dynascope.Mlp("5-7-6-3", params, bias=[True, False, True])
    assert mlp_np.params is params  # kept, not copied
    before_t, before_np, before_p = x_t.detach().clone(), x_np.copy(), params.copy()
    dynascope.ntk(mlp, x_t.detach())
    dynascope.ntk(mlp_np, x_np, x_np)
    assert torch.equal(x_t.detach(), before_t)
    assert np.array_equal(x_np, before_np) and np.array_equal(params, before_p)


def test_non_contiguous_input_is_refused_with_the_fix():
    mlp = dynascope.Mlp.from_torch(make_model("mixed"))
    x_t = torch.randn(5, 6, dtype=torch.float64).T  # [6, 5], transposed view
    with pytest.raises(ValueError, match=r"x1: the array is not C-contiguous.*x1\.contiguous\(\)"):
        dynascope.ntk(mlp, x_t)
    assert dynascope.ntk(mlp, x_t.contiguous()).shape == (6, 6)
    x_np = np.asfortranarray(np.random.default_rng(2).standard_normal((6, 5)))
    with pytest.raises(dynascope.InvalidArgument, match=r"x2: .*numpy\.ascontiguousarray\(x2\)"):
        dynascope.ntk(mlp, np.ascontiguousarray(x_np), x_np)


def test_bad_inputs():
    mlp = dynascope.Mlp.from_torch(make_model("mixed"))
    with pytest.raises(ValueError, match=r"x1: expected float32 or float64, got float16"):
        dynascope.ntk(mlp, np.zeros((2, 5), dtype=np.float16))
    with pytest.raises(ValueError, match=r"x1: dtype float32 differs from the model's parameters \(float64\)"):
        dynascope.ntk(mlp, np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"x1: the network 5-7-6-3 takes 5 inputs per sample, got shape \(2, 4\)"):
        dynascope.ntk(mlp, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"x1: expected a 2-D array"):
        dynascope.ntk(mlp, np.zeros(5))
    with pytest.raises(ValueError, match=r"x1: expected a numpy.ndarray, a torch.Tensor or a jax.Array, got builtins.list"):
        dynascope.ntk(mlp, [[0.0] * 5])
    with pytest.raises(ValueError, match=r"NTK output mode 'bogus'"):
        dynascope.ntk(mlp, np.zeros((2, 5)), outputs="bogus")
    with pytest.raises(ValueError, match=r"params: the network 4-8-2 has 58 parameters, got 3"):
        dynascope.Mlp("4-8-2", np.zeros(3))
    with pytest.raises(ValueError, match=r"activation 'swish'"):
        dynascope.Mlp("4-8-2", np.zeros(58), activation="swish")


def test_unsupported_module_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Linear(4, 2))
    with pytest.raises(dynascope.InvalidArgument, match=r"model\[1\] \(Dropout.*unsupported module Dropout"):
        dynascope.Mlp.from_torch(model)
    with pytest.raises(ValueError, match=r"GELU\(approximate='none'\)"):
        dynascope.Mlp.from_torch(nn.Sequential(nn.Linear(4, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match=r"ends with an activation"):
        dynascope.Mlp.from_torch(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(ValueError, match=r"expected a torch.nn.Sequential, got Linear"):
        dynascope.Mlp.from_torch(nn.Linear(4, 4))


def test_errors_share_a_base():
    assert issubclass(dynascope.InvalidArgument, dynascope.Error)
    assert issubclass(dynascope.InvalidArgument, ValueError)
    assert issubclass(dynascope.OutOfMemory, MemoryError)
    assert issubclass(dynascope.Error, RuntimeError)


# ---- What the CLI's `ntk` reports about a kernel matrix, against NumPy formulas ----------------

def np_alignment(k, y, centered):
    if centered:
        h = np.eye(k.shape[0]) - 1.0 / k.shape[0]
        k, y = h @ k @ h, h @ y
    yy = y @ y.T
    return np.sum(k * yy) / (np.linalg.norm(k) * np.linalg.norm(yy))


def np_energy(k, y, ks, centered):
    if centered:
        y = y - y.mean(0)
    _, u = np.linalg.eigh(k)
    u = u[:, ::-1]
    return {q: np.sum((u[:, :q].T @ y) ** 2) / np.sum(y ** 2) for q in ks}


def psd_kernel(m, rank, seed):
    a = np.random.default_rng(seed).standard_normal((m, rank))
    return a @ a.T + 0.5  # a constant mode, as one-hot targets and NTKs have


@pytest.mark.parametrize("centered", [True, False])
def test_alignment_matches_numpy(centered):
    k = psd_kernel(20, 8, 0)
    labels = np.random.default_rng(1).integers(0, 3, 20)
    y = np.eye(3)[labels]
    a = dynascope.kernel_target_alignment(k, labels, centered=centered)
    assert a == pytest.approx(np_alignment(k, y, centered), rel=1e-12, abs=0)
    values = np.random.default_rng(2).standard_normal((20, 2))
    a2 = dynascope.kernel_target_alignment(torch.from_numpy(k.astype(np.float32)), torch.from_numpy(values),
                                           centered=centered)
    assert a2 == pytest.approx(np_alignment(k, values, centered), rel=1e-6, abs=0)
    one = values[:, 0]  # one column: y^T K y / (||K||_F ||y||^2)
    assert dynascope.kernel_target_alignment(k, one, centered=False) == pytest.approx(
        one @ k @ one / (np.linalg.norm(k) * (one @ one)), rel=1e-12, abs=0)


def test_full_kernel_alignment_uses_vec_of_the_targets():
    model = make_model("mixed")
    x = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    k = dynascope.ntk(dynascope.Mlp.from_torch(model), x, outputs="full", threads=1, progress=False)
    labels = np.array([0, 2, 1, 1, 0, 2])
    vec = np.eye(3)[labels].reshape(18, 1)
    km = k.reshape(18, 18).numpy()
    assert dynascope.kernel_target_alignment(k, labels) == pytest.approx(np_alignment(km, vec, True), rel=1e-12)
    values = np.random.default_rng(4).standard_normal((6, 3))
    assert dynascope.kernel_target_alignment(k, values, centered=False) == pytest.approx(
        np_alignment(km, values.reshape(18, 1), False), rel=1e-12)


@pytest.mark.parametrize("energy_targets", ["centered", "raw"])
def test_cumulative_energy_matches_numpy(energy_targets):
    k = psd_kernel(30, 30, 5)
    labels = np.random.default_rng(6).integers(0, 4, 30)
    e = dynascope.cumulative_energy(k, labels, energy_targets=energy_targets, threads=1, progress=False)
    assert list(e) == [1, 2, 5, 10, 20, 30] == dynascope.energy_ks(30)
    expected = np_energy(k, np.eye(4)[labels], list(e), energy_targets == "centered")
    for q in e:
        assert e[q] == pytest.approx(expected[q], rel=1e-10, abs=1e-12)
    assert e[30] == pytest.approx(1.0, rel=1e-12)


def test_eigenvalues_dense_and_lanczos_paths():
    k = psd_kernel(40, 40, 7)
    exact = np.linalg.eigvalsh(k)[::-1]
    ev = dynascope.kernel_eigenvalues(torch.from_numpy(k), k=4, threads=1, progress=False)
    assert isinstance(ev, torch.Tensor)
    np.testing.assert_allclose(ev.numpy(), exact[:4], rtol=1e-12)
    # above 400 rows with few eigenvalues wanted: Lanczos on the kernel in place
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.standard_normal((420, 420)))
    lam = np.concatenate([[50.0, 40.0, 30.0], rng.uniform(0, 10, 417)])
    big = (q * lam) @ q.T
    big = 0.5 * (big + big.T)
    s = dynascope.kernel_summary(big, k=3, threads=1, progress=False)
    assert s.eigen["method"] == "lanczos" and s.eigen["all_converged"]
    np.testing.assert_allclose(s.eigenvalues, [50.0, 40.0, 30.0], rtol=1e-9)


def test_summary_matches_numpy_formulas():
    k = psd_kernel(25, 10, 9)
    labels = np.random.default_rng(10).integers(0, 3, 25)
    y = np.eye(3)[labels]
    s = dynascope.kernel_summary(k, labels, k=3, energy=[1, 2, 5], threads=1, progress=False)
    assert s.trace == pytest.approx(np.trace(k), rel=1e-13)
    assert s.frobenius == pytest.approx(np.linalg.norm(k), rel=1e-13)
    assert s.kta == pytest.approx(np_alignment(k, y, False), rel=1e-12)
    assert s.kta_centered == pytest.approx(np_alignment(k, y, True), rel=1e-12)
    np.testing.assert_allclose(s.eigenvalues, np.linalg.eigvalsh(k)[::-1][:3], rtol=1e-12)
    expected = np_energy(k, y, [1, 2, 5], True)
    assert s.energy_targets == "centered" and list(s.energy) == [1, 2, 5]
    for q in s.energy:
        assert s.energy[q] == pytest.approx(expected[q], rel=1e-10, abs=1e-12)
    assert s.eigen["k"] == 5 and s.eigen["method"] == "dense"
    bare = dynascope.kernel_summary(k)
    assert bare.kta is None and bare.eigenvalues is None and bare.energy is None and bare.eigen is None


def test_kernel_distance_matches_numpy():
    k0 = psd_kernel(12, 5, 11)
    k1 = k0 + psd_kernel(12, 2, 12)
    expected = 1 - np.sum(k0 * k1) / (np.linalg.norm(k0) * np.linalg.norm(k1))
    assert dynascope.kernel_distance(k0, k1) == pytest.approx(expected, rel=1e-12)
    assert dynascope.kernel_distance(torch.from_numpy(k0).float(), torch.from_numpy(k1).float()) == pytest.approx(
        expected, rel=1e-4)
    assert dynascope.kernel_distance(k0, 3 * k0) == pytest.approx(0.0, abs=1e-14)


def test_kernel_functions_bad_input():
    k = psd_kernel(6, 3, 13)
    labels = np.array([0, 1, 0, 1, 2, 2])
    with pytest.raises(ValueError, match=r"kernel: the diagonal kernel \[N1, N2, O\] is a stack"):
        dynascope.kernel_target_alignment(np.zeros((6, 6, 2)), labels)
    with pytest.raises(ValueError, match=r"kernel: expected a square kernel \[M, M\]"):
        dynascope.kernel_target_alignment(np.zeros((6, 5)), labels)
    with pytest.raises(ValueError, match=r"targets: the targets have 5 rows but the kernel 6"):
        dynascope.kernel_target_alignment(k, labels[:5])
    asym = k.copy()
    asym[0, 1] += 1.0
    with pytest.raises(ValueError, match=r"symmetric"):
        dynascope.kernel_target_alignment(asym, labels, centered=True)
    with pytest.raises(ValueError, match=r"symmetric"):
        dynascope.kernel_eigenvalues(asym, k=2, progress=False)
    nan = k.copy()
    nan[2, 2] = np.nan
    with pytest.raises(ValueError, match=r"kernel: contains NaN"):
        dynascope.kernel_target_alignment(nan, labels, centered=False)
    with pytest.raises(ValueError, match=r"k: expected an integer in \[1, 6\]"):
        dynascope.kernel_eigenvalues(k, k=7, progress=False)
    with pytest.raises(ValueError, match=r"energy: E_k needs targets"):
        dynascope.kernel_summary(k, energy=[1])
    with pytest.raises(ValueError, match=r"energy: k must be an integer in \[1, 6\].*got 9"):
        dynascope.kernel_summary(k, labels, energy=[1, 9])
    with pytest.raises(ValueError, match=r"energy_targets: expected 'centered' or 'raw', got 'mean'"):
        dynascope.cumulative_energy(k, labels, energy_targets="mean")
    with pytest.raises(ValueError, match=r"targets: class labels must be >= 0"):
        dynascope.kernel_target_alignment(k, labels - 1)
    with pytest.raises(ValueError, match=r"k2: expected the shape of k1"):
        dynascope.kernel_distance(k, k[:5, :5].copy())
    with pytest.raises(ValueError, match=r"a kernel is zero"):
        dynascope.kernel_distance(k, np.zeros_like(k))
