"""dynascope.torch_ntk (the NTK of any torch module) and dynascope.gram (the kernel of given
Jacobians) against a direct PyTorch computation.

The reference kernel is built from per-sample Jacobians taken one sample and one output at a time
with torch.autograd.grad (no torch.func, no dynascope code), in float64:
    Theta[n, a, m, b] = <d f_a(x1_n)/dw, d f_b(x2_m)/dw>.
"""
import numpy as np
import pytest

import dynascope
from helpers import assert_close, jacobians
from helpers import ntk_reference as reference

torch = pytest.importorskip("torch")
nn = torch.nn


def small_cnn(seed=0, batchnorm=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(3))
    layers += [nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 5), nn.ReLU(),
               nn.Linear(5, 3)]
    return nn.Sequential(*layers).double()


def inputs(n, seed, dtype=torch.float64):
    return torch.randn(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)




@pytest.fixture(scope="module")
def cnn():
    model = small_cnn()
    x1, x2 = inputs(5, 1), inputs(3, 2)
    return model, x1, x2, jacobians(model, x1), jacobians(model, x2)


@pytest.mark.parametrize("outputs", ["full", "diagonal", "trace", "sum"])
@pytest.mark.parametrize("two_sets", [False, True])
def test_cnn_kernel_matches_torch_float64(cnn, outputs, two_sets):
    model, x1, x2, j1, j2 = cnn
    k = dynascope.torch_ntk(model, x1, x2 if two_sets else None, outputs=outputs, threads=1, progress=False)
    assert isinstance(k, torch.Tensor) and k.dtype == torch.float64
    assert_close(k, reference(j1, j2 if two_sets else j1, outputs), 1e-12)
    if not two_sets and outputs in ("trace", "sum"):
        assert torch.equal(k, k.T)  # the symmetric path is exactly symmetric


def test_tiled_and_chunked_equals_reference_and_reports_progress(cnn):
    model, x1, _, j1, _ = cnn
    p = j1.shape[2]
    calls = []
    # A budget for about two samples' Jacobians: 3 row blocks, 6 tiles of the symmetric kernel.
    budget = 8 * (2 * 2 * 3 * p + 4 * 9 + 2 * 4 * 9) + 64
    k = dynascope.torch_ntk(model, x1, outputs="full", chunk_size=1, max_memory=budget, threads=1,
                            progress=lambda task, done, total: calls.append((task, done, total)))
    assert_close(k, reference(j1, j1, "full"), 1e-12)
    m = k.reshape(15, 15)
    assert torch.equal(m, m.T)
    assert calls and all(t == "ntk" for t, _, _ in calls)
    assert calls[-1][1] == calls[-1][2] == 6
    k2 = dynascope.torch_ntk(model, x1, outputs="trace", max_memory="1M", chunk_size=2, threads=1, progress=False)
    assert_close(k2, reference(j1, j1, "trace"), 1e-12)


def test_float32_numpy_and_jax_frameworks(cnn):
    model64, x1, x2, j1, j2 = cnn
    expected = reference(j1, j2, "trace")
    model = small_cnn().float()
    k_t = dynascope.torch_ntk(model, x1.float(), x2.float(), threads=1, progress=False)
    assert isinstance(k_t, torch.Tensor) and k_t.dtype == torch.float32
    assert_close(k_t, expected, 1e-5)
    k_np = dynascope.torch_ntk(model64, x1.numpy(), x2.numpy(), threads=1, progress=False)
    assert isinstance(k_np, np.ndarray) and k_np.dtype == np.float64
    assert_close(k_np, expected, 1e-12)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    k_j = dynascope.torch_ntk(model64, jnp.asarray(x1.numpy()), jnp.asarray(x2.numpy()), threads=1, progress=False)
    assert isinstance(k_j, jax.Array) and k_j.dtype == jnp.float64
    assert_close(np.asarray(k_j), expected, 1e-12)


def test_frozen_parameters_and_batchnorm_in_eval_mode():
    model = small_cnn(seed=3, batchnorm=True)
    with torch.no_grad():  # non-trivial running statistics
        model[3].running_mean.uniform_(-0.5, 0.5)
        model[3].running_var.uniform_(0.5, 2.0)
    model[0].weight.requires_grad_(False)
    model.eval()
    x = inputs(4, 4)
    j = jacobians(model, x)
    assert j.shape[2] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    k = dynascope.torch_ntk(model, x, outputs="diagonal", threads=1, progress=False)
    assert_close(k, reference(j, j, "diagonal"), 1e-12)
    model.train()
    with pytest.raises(dynascope.InvalidArgument, match=r"model: 3 \(BatchNorm2d\) is in training mode.*model\.eval\(\)"):
        dynascope.torch_ntk(model, x, threads=1, progress=False)
    drop = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"model: 1 \(Dropout\) is in training mode"):
        dynascope.torch_ntk(drop, torch.zeros(2, 3), threads=1, progress=False)


def test_model_is_not_modified_and_inputs_not_copied(cnn):
    model, x1, _, j1, _ = cnn
    before = [p.detach().clone() for p in model.parameters()]
    x = x1.clone()
    dynascope.torch_ntk(model, x, threads=1, progress=False)
    assert torch.equal(x, x1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_callback_exceptions_stop_the_computation(cnn):
    model, x1, _, j1, _ = cnn

    def stop(task, done, total):
        raise KeyboardInterrupt  # what Ctrl-C raises inside the callback

    with pytest.raises(KeyboardInterrupt):
        dynascope.torch_ntk(model, x1, chunk_size=1, max_memory=8 * 3 * 3 * j1.shape[2], threads=1, progress=stop)

    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2).double()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:  # the shape probe passes, the Jacobians fail
                raise ArithmeticError("user model failed")
            return self.lin(x)

    with pytest.raises(ArithmeticError, match="user model failed"):
        dynascope.torch_ntk(Fails(), torch.zeros(3, 3, dtype=torch.float64), threads=1, progress=False)


def test_torch_ntk_bad_input(cnn):
    model, x1, _, _, _ = cnn
    with pytest.raises(ValueError, match=r"model: expected a torch.nn.Module, got builtins.str"):
        dynascope.torch_ntk("net", x1)
    with pytest.raises(ValueError, match=r"x1: dtype float32 differs from the model's parameters \(float64\)"):
        dynascope.torch_ntk(model, x1.float(), progress=False)
    with pytest.raises(ValueError, match=r"x2: expected samples of shape \(2, 8, 8\) as x1's, got \(2, 8, 7\)"):
        dynascope.torch_ntk(model, x1, x1[:, :, :, :7].contiguous(), progress=False)
    bad = x1.clone()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"x1: contains NaN or infinite values"):
        dynascope.torch_ntk(model, bad, progress=False)
    with pytest.raises(ValueError, match=r"NTK output mode 'bogus'"):
        dynascope.torch_ntk(model, x1, outputs="bogus", progress=False)
    with pytest.raises(ValueError, match=r"chunk_size: expected None or an integer >= 1, got 0"):
        dynascope.torch_ntk(model, x1, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match=r"max_memory: expected .*'512M'.*got 'lots'"):
        dynascope.torch_ntk(model, x1, max_memory="lots", progress=False)
    with pytest.raises(dynascope.OutOfMemory, match=r"workspace budget of 1000 bytes cannot hold"):
        dynascope.torch_ntk(model, x1, max_memory=1000, threads=1, progress=False)
    with pytest.raises(ValueError, match=r"x1: expected a numpy.ndarray, a torch.Tensor or a jax.Array, got builtins.list"):
        dynascope.torch_ntk(model, [[0.0]], progress=False)
    with pytest.raises(ValueError, match=r"x1: expected samples \[N, \.\.\.\] with N >= 1"):
        dynascope.torch_ntk(model, x1[:0], progress=False)
    frozen = nn.Linear(2, 2).double().requires_grad_(False)
    with pytest.raises(ValueError, match=r"model: it has no parameters with requires_grad=True"):
        dynascope.torch_ntk(frozen, torch.zeros(2, 2, dtype=torch.float64), progress=False)


# ---- gram: Jacobians given by the caller ------------------------------------------------------

@pytest.mark.parametrize("outputs", ["full", "diagonal", "trace", "sum"])
def test_gram_matches_einsum(outputs):
    g = torch.Generator().manual_seed(7)
    j1 = torch.randn(6, 3, 40, generator=g, dtype=torch.float64)
    j2 = torch.randn(4, 3, 40, generator=g, dtype=torch.float64)
    k = dynascope.gram(j1, outputs=outputs, threads=1, progress=False)
    assert isinstance(k, torch.Tensor)
    assert_close(k, reference(j1, j1, outputs), 1e-13)
    k12 = dynascope.gram(j1.numpy(), j2.numpy(), outputs=outputs, threads=1, progress=False)
    assert isinstance(k12, np.ndarray)
    assert_close(k12, reference(j1, j2, outputs), 1e-13)
    # tiled: a budget for two samples' Jacobians
    kt = dynascope.gram(j1, j2, outputs=outputs, max_memory=8 * (2 * 2 * 3 * 40 + 4 * 9 + 2 * 4 * 9), threads=1,
                        progress=False)
    assert_close(kt, reference(j1, j2, outputs), 1e-13)


def test_gram_per_sample_gradients_and_float32():
    rng = np.random.default_rng(8)
    g = rng.standard_normal((7, 30))
    k = dynascope.gram(g, threads=1, progress=False)
    assert_close(k, g @ g.T, 1e-13)
    assert np.array_equal(k, k.T)
    k32 = dynascope.gram(g.astype(np.float32), g[:3].astype(np.float32), threads=1, progress=False)
    assert k32.dtype == np.float32
    assert_close(k32, g @ g[:3].T, 1e-5)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    kj = dynascope.gram(jnp.asarray(g), threads=1, progress=False)
    assert isinstance(kj, jax.Array)
    assert_close(np.asarray(kj), g @ g.T, 1e-13)


def test_gram_bad_input():
    j = np.zeros((4, 2, 5))
    with pytest.raises(ValueError, match=r"j1: expected \[N, O, P\] Jacobians or \[N, P\] per-sample gradients"):
        dynascope.gram(np.zeros(5))
    with pytest.raises(ValueError, match=r"j2: expected shape \[N2, 2, 5\] as j1's \(4, 2, 5\), got \(3, 2, 6\)"):
        dynascope.gram(j, np.zeros((3, 2, 6)))
    with pytest.raises(ValueError, match=r"j2: dtype float32 differs from j1's \(float64\)"):
        dynascope.gram(j, np.zeros((3, 2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"j1: the array is not C-contiguous"):
        dynascope.gram(np.zeros((5, 4)).T)
    bad = np.ones((3, 4))
    bad[1, 1] = np.inf
    with pytest.raises(ValueError, match=r"j1: contains NaN or infinite values"):
        dynascope.gram(bad)
    with pytest.raises(ValueError, match=r"j1: expected float32 or float64, got int64"):
        dynascope.gram(np.zeros((3, 4), dtype=np.int64))


def test_residual_block_with_layernorm_and_tuple_outputs_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.norm, self.head = nn.Linear(6, 6), nn.LayerNorm(6), nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.norm(x + torch.relu(self.inner(x))))

    torch.manual_seed(5)
    model = Residual().double()
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    j = jacobians(model, x)
    k = dynascope.torch_ntk(model, x, outputs="full", threads=1, progress=False)
    assert_close(k, reference(j, j, "full"), 1e-12)

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2).double()

        def forward(self, x):
            return self.lin(x), x

    with pytest.raises(ValueError, match=r"model: expected it to map a batch \[B, \.\.\.\] to one tensor.*tuple"):
        dynascope.torch_ntk(Pair(), torch.zeros(2, 3, dtype=torch.float64), progress=False)
