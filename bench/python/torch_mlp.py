#!/usr/bin/python3
"""Forward+backward of the MNIST-sized MLP (784-1024-1024-10, batch 512) in PyTorch next to
dynascope's bench_model on the same machine. Usage: bench/python/torch_mlp.py [threads]"""
import sys
import time

from common import need_torch, run_benchmark

need_torch()
import torch  # noqa: E402


def layer_flops(widths, n, skip_first):
    return sum(2.0 * n * a * b for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])) if not (skip_first and i == 0))


def torch_rate(dtype, widths, n, repeats=20):
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i + 2 < len(widths):
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers).to(dtype)
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


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    widths, n = [784, 1024, 1024, 10], 512
    ours = {b["name"]: b for b in run_benchmark("bench_model", "forward_backward")}
    print(f"forward+backward 784-1024-1024-10, N=512, torch {torch.__version__} on {threads} threads")
    print(f"{'dtype':8} {'dynascope GFLOP/s':>18} {'torch GFLOP/s':>14} {'ratio':>6}")
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        rate, _ = torch_rate(dtype, widths, n)
        mine = ours[f"forward_backward/{tag}/0/real_time"]["flops"] * 1e-9
        print(f"{tag:8} {mine:18.1f} {rate:14.1f} {mine / rate:6.2f}")


if __name__ == "__main__":
    main()
