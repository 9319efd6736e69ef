#!/usr/bin/python3
"""The MNIST-sized MLP (784-1024-1024-10, batch 512) in PyTorch next to dynascope:
  forward+backward  GFLOP/s of torch against bench_model's forward_backward (the library's own
                    C++ benchmark: the package has no bare forward/backward call)
  training steps    full-batch SGD steps (cross-entropy, lr 0.01) from the same weights on the same
                    data: torch's loop (forward, backward, optimizer.step) against dynascope.train in
                    the same process; the trained parameters must agree
Usage: bench/python/torch_mlp.py [threads] [--steps K] [--no-bench-model]
  environment: DYNASCOPE_BUILD (build folder, default ../../build)."""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, dynascope_package, need_torch, run_benchmark  # noqa: E402

need_torch()
import torch  # noqa: E402


def layer_flops(widths, n, skip_first):
    return sum(2.0 * n * a * b for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])) if not (skip_first and i == 0))


def torch_rate(dtype, widths, n, repeats=20):
    torch.manual_seed(0)
    net = build(widths, dtype)
    x = torch.rand(n, widths[0], dtype=dtype)
    g = torch.full((n, widths[-1]), 0.1, dtype=dtype)
    best = 1e300
    for _ in range(repeats):
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = net(x)
        out.backward(g)
        best = min(best, time.perf_counter() - t0)
    # Same count as bench_model: forward + parameter gradients + delta propagation. PyTorch also
    # skips the input gradient because x does not require grad.
    flops = 2 * layer_flops(widths, n, False) + layer_flops(widths, n, True)
    return flops / best * 1e-9, best


def build(widths, dtype=None):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i + 2 < len(widths):
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    return net.to(dtype) if dtype is not None else net


def training_steps(ds, widths, n, steps, threads, lr=0.01):
    """Times `steps` full-batch SGD updates by torch and by dynascope.train on the same start."""
    torch.manual_seed(0)
    start = build(widths)
    x = torch.rand(n, widths[0])
    y = torch.randint(0, widths[-1], (n,))
    mlp = ds.Mlp.from_torch(start)

    def torch_run():
        net = build(widths)
        net.load_state_dict(start.state_dict())
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return torch.nn.utils.parameters_to_vector(net.parameters()).detach()

    t_torch, w_torch = best_time(torch_run, 3)
    t_ours, r = best_time(lambda: ds.train(mlp, x, y, loss="xent", optimizer="sgd", lr=lr, steps=steps, batch=0,
                                           threads=threads, progress=False), 3)
    w_ours = np.asarray(r.model.params, dtype=np.float64)
    w_ref, w0 = w_torch.numpy().astype(np.float64), np.asarray(mlp.params, dtype=np.float64)
    # Relative to how far training moved the weights: float32 rounding in another summation order
    # compared with the update itself.
    err = np.abs(w_ours - w_ref).max() / np.abs(w_ref - w0).max()
    print(f"{steps} full-batch SGD steps (cross-entropy, lr {lr:g}), float32, N={n}")
    print(f"  torch loop (forward, backward, optimizer.step): {t_torch:8.3f} s  ({t_torch / steps * 1e3:.1f} ms a step)")
    print(f"  dynascope.train:                                {t_ours:8.3f} s  ({t_ours / steps * 1e3:.1f} ms a step; "
          f"torch / this = {t_torch / t_ours:.2f}; includes its loss on the whole set at the start and the end)")
    print(f"  trained parameters: max |difference| / max |update| = {err:.2e}")
    if err > 1e-3:
        sys.exit("the trained parameters disagree")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("threads", nargs="?", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--no-bench-model", action="store_true")
    args = ap.parse_args()
    threads = args.threads
    torch.set_num_threads(threads)
    widths, n = [784, 1024, 1024, 10], args.n
    if not args.no_bench_model:
        ours = {b["name"]: b for b in run_benchmark("bench_model", "forward_backward")}
        print(f"forward+backward 784-1024-1024-10, N=512, torch {torch.__version__} on {threads} threads")
        print(f"{'dtype':8} {'dynascope GFLOP/s':>18} {'torch GFLOP/s':>14} {'ratio':>6}   (bench_model, C++)")
        for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
            rate, _ = torch_rate(dtype, widths, 512)
            mine = ours[f"forward_backward/{tag}/0/real_time"]["flops"] * 1e-9
            print(f"{tag:8} {mine:18.1f} {rate:14.1f} {mine / rate:6.2f}")
    ds = dynascope_package(required=False)
    if ds is not None:
        training_steps(ds, widths, n, args.steps, threads)


if __name__ == "__main__":
    main()
