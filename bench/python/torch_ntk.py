#!/usr/bin/python3
"""The empirical NTK (trace over outputs) of an MLP 784-512-512-10 by PyTorch's Jacobian
contraction (functorch vmap + jacrev) next to `dynascope ntk` on the same weights and inputs:
checks that the kernels agree and prints both times. Usage: torch_ntk.py [N] [threads]"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import dynascope_exe, need_torch, save_safetensors

need_torch()
import torch  # noqa: E402

try:
    from torch.func import functional_call, jacrev, vmap  # torch >= 2.0
except ImportError:
    from functorch import jacrev, vmap  # torch 1.13
    from torch.nn.utils.stateless import functional_call


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 10))
    x = torch.rand(n, 784)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, xi):
        return functional_call(net, p, (xi.unsqueeze(0),)).squeeze(0)

    t0 = time.perf_counter()
    jac = vmap(jacrev(f), (None, 0))(params, x)  # {name: [N, 10, *shape]}
    k_torch = sum(torch.einsum("naf,maf->nm", j.flatten(2), j.flatten(2)) for j in jac.values())
    t_torch = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "net.safetensors")
        save_safetensors(model, {k: v.numpy() for k, v in net.state_dict().items()}, {"activation": "relu"})
        np.save(os.path.join(tmp, "x.npy"), x.numpy())
        out = os.path.join(tmp, "k.npy")
        t0 = time.perf_counter()
        subprocess.run([dynascope_exe(), "ntk", "--model", model, "--inputs", os.path.join(tmp, "x.npy"), "--outputs", "trace",
                        "--out-matrix", out, "--threads", str(threads), "--quiet", "--out", os.path.join(tmp, "r.json")],
                       check=True)
        t_ours = time.perf_counter() - t0
        k_ours = np.load(out)
    ref = k_torch.numpy().astype(np.float64)
    err = np.abs(k_ours - ref).max() / np.abs(ref).max()
    print(f"NTK trace kernel, MLP 784-512-512-10, N={n}, float32, {threads} threads")
    print(f"  torch {torch.__version__} vmap+jacrev+einsum: {t_torch:8.3f} s")
    print(f"  dynascope ntk (whole CLI run):       {t_ours:8.3f} s   ({t_torch / t_ours:.0f}x)")
    print(f"  max relative difference: {err:.2e}")
    if err > 1e-4:
        sys.exit("kernels disagree")


if __name__ == "__main__":
    main()
