#!/usr/bin/python3
"""The empirical NTK (trace over outputs) of an MLP 784-512-512-10 by PyTorch's Jacobian
contraction (functorch vmap + jacrev + einsum) next to the dynascope package in the same process,
on the same weights and inputs (torch tensors in, torch tensors out):
  dynascope.ntk        the library's structured kernel of the network (Mlp.from_torch)
  dynascope.torch_ntk  the generic path for any module: the same vmap(jacrev) Jacobians as the
                       peer, contracted in the library's Gram tiles
  dynascope ntk (CLI)  the whole command as a process (start-up, safetensors and .npy I/O), only
                       to show what the package saves; skipped with --no-cli
Checks that the kernels agree and prints the times (best of --repeats after a warm-up) and ratios.
Usage: torch_ntk.py [N] [threads] [--repeats R] [--no-cli]
  environment: DYNASCOPE_BUILD (build folder, default ../../build)."""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, dynascope_exe, dynascope_package, need_torch, save_safetensors  # noqa: E402

need_torch()
import torch  # noqa: E402

try:
    from torch.func import functional_call, jacrev, vmap  # torch >= 2.0
except ImportError:
    from functorch import jacrev, vmap  # torch 1.13
    from torch.nn.utils.stateless import functional_call


def cli_seconds(net, x, threads, repeats):
    """Best wall time of the whole `dynascope ntk` process on the same weights and inputs, and its kernel."""
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "net.safetensors")
        save_safetensors(model, {k: v.numpy() for k, v in net.state_dict().items()}, {"activation": "relu"})
        np.save(os.path.join(tmp, "x.npy"), x.numpy())
        out = os.path.join(tmp, "k.npy")
        cmd = [dynascope_exe(), "ntk", "--model", model, "--inputs", os.path.join(tmp, "x.npy"), "--outputs", "trace",
               "--out-matrix", out, "--threads", str(threads), "--quiet", "--out", os.path.join(tmp, "r.json")]
        seconds, _ = best_time(lambda: subprocess.run(cmd, check=True), repeats, warmup=False)
        return seconds, np.load(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=64)
    ap.add_argument("threads", nargs="?", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-cli", action="store_true")
    args = ap.parse_args()
    n, threads = args.n, args.threads
    ds = dynascope_package(required=False)  # without it: the peer and the CLI only
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
                              torch.nn.Linear(512, 10))
    x = torch.rand(n, 784)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p, xi):
        return functional_call(net, p, (xi.unsqueeze(0),)).squeeze(0)

    def peer():
        jac = vmap(jacrev(f), (None, 0))(params, x)  # {name: [N, 10, *shape]}
        return sum(torch.einsum("naf,maf->nm", j.flatten(2), j.flatten(2)) for j in jac.values())

    t_torch, k_torch = best_time(peer, args.repeats)
    ref = k_torch.numpy().astype(np.float64)

    def rel(k):
        return np.abs(np.asarray(k, dtype=np.float64) - ref).max() / np.abs(ref).max()

    rows = []  # (label, seconds, kernel)
    if ds is not None:
        mlp = ds.Mlp.from_torch(net)  # one copy of the weights, outside the timed calls
        t, k = best_time(lambda: ds.ntk(mlp, x, outputs="trace", threads=threads), args.repeats)
        rows.append(("dynascope.ntk (Mlp, in process)", t, k.numpy()))
        t, k = best_time(lambda: ds.torch_ntk(net, x, outputs="trace", threads=threads), args.repeats)
        rows.append(("dynascope.torch_ntk (generic)", t, k.numpy()))
    if not args.no_cli:
        if os.path.exists(dynascope_exe()):
            t, k = cli_seconds(net, x, threads, args.repeats)
            rows.append(("dynascope ntk (whole CLI run)", t, k))
        else:
            print(f"note: no CLI at {dynascope_exe()}: its line is skipped", file=sys.stderr)

    print(f"NTK trace kernel, MLP 784-512-512-10, N={n}, float32, {threads} threads, best of {args.repeats}")
    print(f"  {'torch ' + torch.__version__ + ' vmap+jacrev+einsum':34} {t_torch:8.3f} s")
    worst = 0.0
    for label, t, k in rows:
        err = rel(k)
        worst = max(worst, err)
        print(f"  {label:34} {t:8.3f} s   torch / this = {t_torch / t:6.2f}   max rel. difference {err:.2e}")
    if worst > 1e-4:
        sys.exit("kernels disagree (max relative difference > 1e-4)")


if __name__ == "__main__":
    main()
