"""The package and the command-line tool agree: a model built from an nn.Sequential gives the same
numbers as the same weights saved with safetensors and loaded by `dynascope ntk`.

Needs the CLI (ctest sets DYNASCOPE_CLI to its path), torch and safetensors; skipped otherwise."""

import json
import os
import subprocess

import numpy as np
import pytest

import dynascope

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
CLI = os.environ.get("DYNASCOPE_CLI")
pytestmark = pytest.mark.skipif(not CLI or not os.path.exists(CLI),
                                reason="DYNASCOPE_CLI does not name the dynascope binary (ctest sets it)")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", [("tanh", torch.nn.Tanh), ("relu", torch.nn.ReLU)])
def test_ntk_equals_cli_on_saved_weights(tmp_path, dtype, activation):
    name, layer = activation
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 9), layer(), torch.nn.Linear(9, 7), layer(),
                                torch.nn.Linear(7, 3)).to(getattr(torch, dtype))
    x = torch.randn(11, 6, dtype=getattr(torch, dtype))
    weights = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(weights), metadata={"activation": name})
    np.save(tmp_path / "x.npy", x.numpy())
    out = tmp_path / "k.npy"
    subprocess.run([CLI, "ntk", "--model", str(weights), "--inputs", str(tmp_path / "x.npy"), "--outputs", "full",
                    "--out-matrix", str(out), "--threads", "1", "--quiet", "--out", str(tmp_path / "r.json")],
                   check=True)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["dtype"] == dtype
    k_cli = np.load(out)

    k_py = dynascope.ntk(dynascope.Mlp.from_torch(model), x, outputs="full", threads=1, progress=False)
    assert isinstance(k_py, torch.Tensor) and k_py.dtype == getattr(torch, dtype)
    k_py = k_py.numpy()
    assert k_cli.shape == k_py.shape == (11, 3, 11, 3)
    # The same library code on the same data and thread count; agreement to rounding (the CLI may
    # order its reads differently from the caller's buffers, so no bit-equality is claimed).
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(k_py, k_cli, rtol=0, atol=64 * eps * np.abs(k_cli).max())
