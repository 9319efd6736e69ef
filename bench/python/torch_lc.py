#!/usr/bin/python3
"""Local complexity of an MLP 784-200x4-10 (relu) by the reference approach of Humayun, Balestriero
& Baraniuk's code — one shared frame of P orthonormal directions, the 2P cross-polytope vertices
x +- r v_p of every sample through the network in one batched forward, forward hooks on every
Linear collecting the pre-activations, and per layer the neurons whose sign differs from vertex 0's
counted in PyTorch — next to `dynascope lc` on the same weights, inputs and frame: checks that the
counts [N, L] agree and prints both times. Usage: torch_lc.py [N] [threads] [radius] [P]"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import dynascope_exe, need_torch, run_benchmark, save_safetensors

need_torch()
import torch  # noqa: E402

WIDTHS = [784, 200, 200, 200, 200, 10]
REPEATS = 3  # every time printed is the best of this many runs


def vertices(x, frame, radius, exact):
    """[N * 2P, D] float32: row s * 2P + 2p is x_s + r v_p, row s * 2P + 2p + 1 is x_s - r v_p
    (dynascope's order). exact=False: float32 arithmetic, as the reference code builds them (the
    timed run); exact=True: float64 rounded once, as dynascope builds them, so that both programs
    push bit-identical vertices (the run whose counts are compared)."""
    dtype = torch.float64 if exact else torch.float32
    offsets = radius * torch.stack([frame, -frame], dim=1).reshape(-1, frame.shape[1]).to(dtype)  # [2P, D]
    return (x.to(dtype)[:, None, :] + offsets[None, :, :]).reshape(-1, frame.shape[1]).float()


def torch_counts(net, x, frame, radius, exact=False):
    """counts [N, L] and the pre-activations [N, 2P, d_l] of every Linear layer."""
    pre = []
    hooks = [m.register_forward_hook(lambda _m, _inp, out: pre.append(out))
             for m in net.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            net(vertices(x, frame, radius, exact))
            n, v = x.shape[0], 2 * frame.shape[0]
            z = [t.reshape(n, v, -1) for t in pre]
            counts = torch.stack([((t > 0) != (t[:, :1, :] > 0)).any(dim=1).sum(dim=1) for t in z], dim=1)
    finally:
        for h in hooks:
            h.remove()
    return counts.numpy().astype(np.int64), z


def compare(ours, counts, z):
    """Exits with an error unless dynascope's counts equal torch's, or every entry that differs is
    explained by vertices within float32 rounding of a neuron's hyperplane."""
    if ours.shape != counts.shape:
        sys.exit(f"count arrays differ in shape: dynascope {ours.shape}, torch {counts.shape}")
    diff = np.argwhere(ours != counts)
    if len(diff) == 0:
        print(f"  counts agree exactly ({counts.size} entries)")
        return
    # float32 GEMMs that sum in another order can put a vertex on the other side of a hyperplane
    # when its pre-activation is within rounding of 0: every disagreement must be explained by
    # neurons with such a vertex (|z| <= 1e-5 of the layer's largest |z| at that sample).
    print(f"  counts differ in {len(diff)} of {counts.size} (sample, layer) entries:")
    explained = True
    for s, layer in diff:
        t = z[layer][s].abs()  # [2P, d_l]
        near = t <= 1e-5 * t.max()
        fragile = int(near.any(dim=0).sum())
        closest = (t.min() / t.max()).item()
        explained &= abs(int(ours[s, layer]) - int(counts[s, layer])) <= fragile
        print(f"    sample {s} layer {layer + 1}: dynascope {ours[s, layer]}, torch {counts[s, layer]}; "
              f"{fragile} neuron(s) with a vertex within 1e-5 of the layer's max |z|, closest {closest:.1e}")
    if not explained:
        sys.exit("a disagreement is not explained by vertices at a hyperplane")
    print("  every disagreement is explained by vertices within float32 rounding of a neuron's hyperplane")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    radius = float(sys.argv[3]) if len(sys.argv) > 3 else 0.75
    p = int(sys.argv[4]) if len(sys.argv) > 4 else 25
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers = []
    for i in range(len(WIDTHS) - 1):
        layers.append(torch.nn.Linear(WIDTHS[i], WIDTHS[i + 1]))
        if i + 2 < len(WIDTHS):
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    x = torch.rand(n, WIDTHS[0])
    # One shared frame: P orthonormal directions from the QR factorisation of a Gaussian [D, P].
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((WIDTHS[0], p)))
    frame = torch.from_numpy(np.ascontiguousarray(q.T).astype(np.float32))  # [P, D]

    torch_counts(net, x[:8], frame, radius)  # warm-up: thread pool, allocator
    t_torch = 1e300
    for _rep in range(REPEATS):
        t0 = time.perf_counter()
        counts_f32, _z = torch_counts(net, x, frame, radius)
        t_torch = min(t_torch, time.perf_counter() - t0)
    counts, z = torch_counts(net, x, frame, radius, exact=True)

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "net.safetensors")
        save_safetensors(model, {k: v.detach().numpy() for k, v in net.state_dict().items()}, {"activation": "relu"})
        np.save(os.path.join(tmp, "x.npy"), x.numpy())
        np.save(os.path.join(tmp, "frame.npy"), frame.numpy())
        out_counts, out_json = os.path.join(tmp, "c.npy"), os.path.join(tmp, "r.json")
        t_cli, t_json = 1e300, 1e300
        for _rep in range(REPEATS):
            t0 = time.perf_counter()
            subprocess.run([dynascope_exe(), "lc", "--model", model, "--inputs", os.path.join(tmp, "x.npy"), "--frame",
                            os.path.join(tmp, "frame.npy"), "--radius", repr(radius), "--out-counts", out_counts,
                            "--threads", str(threads), "--quiet", "--out", out_json], check=True)
            t_cli = min(t_cli, time.perf_counter() - t0)
            with open(out_json) as f:
                t_json = min(t_json, json.load(f)["seconds"])
        ours = np.load(out_counts).astype(np.int64)

    print(f"local complexity, MLP {'-'.join(map(str, WIDTHS))} relu, N={n}, P={p}, r={radius}, float32, "
          f"{threads} threads")
    print(f"  mean count per layer: {' '.join(f'{c:.2f}' for c in counts.mean(axis=0))}  "
          f"(hidden total {counts[:, :-1].sum(axis=1).mean():.2f})")
    print(f"  torch {torch.__version__} batched forward + hooks + sign test: {t_torch:8.3f} s")
    print(f"  dynascope lc (JSON seconds, whole command):          {t_json:8.3f} s   "
          f"(torch time / this = {t_torch / t_json:.2f})")
    print(f"  dynascope lc (whole process, as timed here):         {t_cli:8.3f} s")
    if n == 1024 and p == 25:
        try:
            rec = [b for b in run_benchmark("bench_regions", "^lc/1024/") if b.get("run_type", "iteration") == "iteration"][0]
            seconds = rec["real_time"] * {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[rec["time_unit"]]
            print(f"  bench_regions lc/1024 (in process, own net, r=0.75): {seconds:8.3f} s   (torch time / this = {t_torch / seconds:.2f})")
        except (OSError, subprocess.CalledProcessError, IndexError, KeyError) as e:
            print(f"  bench_regions lc: not run ({e})")

    if (counts_f32 != counts).any():
        print(f"  (the timed run's float32 vertices change {int((counts_f32 != counts).sum())} entries; "
              "the comparison uses dynascope's float64-rounded vertices)")
    compare(ours, counts, z)


if __name__ == "__main__":
    main()
