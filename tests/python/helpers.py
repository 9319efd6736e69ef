"""Reference pieces shared by the test files: small float64 torch networks and per-sample Jacobians
taken one sample and one output at a time with torch.autograd (no torch.func, no dynascope code).

The test files import them as ``from helpers import ...``: pytest's default ("prepend") import
mode puts this folder, which has no __init__.py, on sys.path before it imports a test file, also
when it is given a single file (as ctest does).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


def make_model(widths, act=nn.Tanh, seed=0):
    """nn.Sequential of Linear layers of the given widths with `act` between them, float64."""
    torch.manual_seed(seed)
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i + 2 < len(widths):
            layers.append(act())
    return nn.Sequential(*layers).double()


class PoolCnn(nn.Module):
    """Conv2d(1, 3, 3) -> act -> AvgPool2d(2) -> Linear(12, 3), for 1 x 6 x 6 images."""

    def __init__(self, act):
        super().__init__()
        self.act = act
        self.conv = nn.Conv2d(1, 3, 3)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(3 * 2 * 2, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


def flat(model):
    """The model's parameters as one detached vector (parameters_to_vector order)."""
    return torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def data(n, d, seed, labels=None, outputs=1):
    """x [N, d] float64 and targets: class labels arange(N) % labels, or float64 values [N, outputs]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if labels:
        y = torch.arange(n) % labels
    else:
        y = torch.randn(n, outputs, generator=g, dtype=torch.float64)
    return x, y


def jacobians(model, x):
    """[N, O, P]: per-sample Jacobians w.r.t. the trainable parameters, in parameters_to_vector order."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for n in range(x.shape[0]):
        f = model(x[n:n + 1]).reshape(-1)
        per_output = []
        for a in range(f.shape[0]):
            grads = torch.autograd.grad(f[a], params, retain_graph=True)
            per_output.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_output))
    return torch.stack(rows).detach()


def ntk_reference(j1, j2, outputs):
    """The NTK of the outputs mode from Jacobians [N, O, P] and [M, O, P]:
    Theta[n, a, m, b] = <J1[n, a], J2[m, b]> ("full"), its diagonal in a = b, the trace, the sum."""
    if outputs == "full":
        return torch.einsum("nap,mbp->namb", j1, j2)
    diag = torch.einsum("nap,map->nma", j1, j2)
    if outputs == "diagonal":
        return diag
    if outputs == "trace":
        return diag.sum(-1)
    if outputs == "sum":
        return j1.sum(1) @ j2.sum(1).T
    raise ValueError(outputs)


def assert_close(actual, expected, rtol, nan=False):
    """|actual - expected| <= rtol * max|expected| elementwise, in float64 on the host (torch
    tensors of any device, NumPy and JAX arrays). nan=True: the scale is that of the entries that
    are not NaN, and NaN must stand where the expected values have NaN."""
    actual, expected = _float64(actual), _float64(expected)
    assert actual.shape == expected.shape
    scale = np.nanmax(np.abs(expected)) if nan else np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def _float64(a):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)
