"""dynascope.Mlp and dynascope.ntk against a direct PyTorch computation.

The reference kernel is built from per-sample Jacobians taken one output at a time with
torch.autograd (no dynascope code involved), in float64:
    Theta[n, a, m, b] = <d f_a(x1_n)/dw, d f_b(x2_m)/dw>.
Run: python -m pytest tests/python   (after `pip install .`, see docs/python.md)
"""
import numpy as np
import pytest

import dynascope

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


def jacobians(model, x):
    """[N, O, P]: per-sample Jacobians of the outputs w.r.t. all parameters (parameters_to_vector order)."""
    params = list(model.parameters())
    rows = []
    for n in range(x.shape[0]):
        f = model(x[n:n + 1])[0]
        per_output = []
        for a in range(f.shape[0]):
            grads = torch.autograd.grad(f[a], params, retain_graph=True)
            per_output.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_output))
    return torch.stack(rows)


def reference(j1, j2, outputs):
    full = torch.einsum("nap,mbp->namb", j1, j2)
    if outputs == "full":
        return full
    diag = torch.einsum("nap,map->nma", j1, j2)
    if outputs == "diagonal":
        return diag
    if outputs == "trace":
        return diag.sum(-1)
    if outputs == "sum":
        return j1.sum(1) @ j2.sum(1).T
    raise ValueError(outputs)


def assert_close(actual, expected, rtol):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


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
