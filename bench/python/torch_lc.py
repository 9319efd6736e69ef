#!/usr/bin/python3
"""Local complexity of an MLP 784-200x4-10 (relu) by the reference approach of Humayun, Balestriero
& Baraniuk's code — one shared frame of P orthonormal directions, the 2P cross-polytope vertices
x +- r v_p of every sample through the network in one batched forward, forward hooks on every
Linear collecting the pre-activations, and per layer the neurons whose sign differs from vertex 0's
counted in PyTorch — next to the dynascope package in the same process, on the same weights,
inputs and frame: dynascope.local_complexity on the network (Mlp.from_torch: the library's own
forward) and on the torch module itself (the generic path: the library's vertices through the
module, forward hooks on every Linear, the sign test and counting in the library). Checks that
the counts [N, L] agree and prints the times (best of --repeats) and ratios.
Usage: torch_lc.py [N] [threads] [radius] [P] [--repeats R]
  environment: DYNASCOPE_BUILD (build folder, default ../../build)."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, dynascope_package, need_torch, relu_mlp  # noqa: E402

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
        print(f"    counts agree exactly ({counts.size} entries)")
        return
    # float32 GEMMs that sum in another order can put a vertex on the other side of a hyperplane
    # when its pre-activation is within rounding of 0: every disagreement must be explained by
    # neurons with such a vertex (|z| <= 1e-5 of the layer's largest |z| at that sample).
    print(f"    counts differ in {len(diff)} of {counts.size} (sample, layer) entries:")
    explained = True
    for s, layer in diff:
        t = z[layer][s].abs()  # [2P, d_l]
        near = t <= 1e-5 * t.max()
        fragile = int(near.any(dim=0).sum())
        closest = (t.min() / t.max()).item()
        explained &= abs(int(ours[s, layer]) - int(counts[s, layer])) <= fragile
        print(f"      sample {s} layer {layer + 1}: dynascope {ours[s, layer]}, torch {counts[s, layer]}; "
              f"{fragile} neuron(s) with a vertex within 1e-5 of the layer's max |z|, closest {closest:.1e}")
    if not explained:
        sys.exit("a disagreement is not explained by vertices at a hyperplane")
    print("    every disagreement is explained by vertices within float32 rounding of a neuron's hyperplane")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=1024)
    ap.add_argument("threads", nargs="?", type=int, default=2)
    ap.add_argument("radius", nargs="?", type=float, default=0.75)
    ap.add_argument("p", nargs="?", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    args = ap.parse_args()
    n, threads, radius, p = args.n, args.threads, args.radius, args.p
    ds = dynascope_package()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = relu_mlp(WIDTHS)
    x = torch.rand(n, WIDTHS[0])
    # One shared frame: P orthonormal directions from the QR factorisation of a Gaussian [D, P].
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((WIDTHS[0], p)))
    frame = torch.from_numpy(np.ascontiguousarray(q.T).astype(np.float32))  # [P, D]

    torch_counts(net, x[:8], frame, radius)  # warm-up: thread pool, allocator
    t_torch, (counts_f32, _z) = best_time(lambda: torch_counts(net, x, frame, radius), args.repeats, warmup=False)
    counts, z = torch_counts(net, x, frame, radius, exact=True)

    mlp = ds.Mlp.from_torch(net)  # one copy of the weights, outside the timed calls
    t_mlp, r_mlp = best_time(lambda: ds.local_complexity(mlp, x, radius, frame=frame, threads=threads), args.repeats)
    # The generic path: the same hooks on the same module, the sign test and the counting in the library.
    t_gen, r_gen = best_time(lambda: ds.local_complexity(net, x, radius, frame=frame, threads=threads), args.repeats)

    print(f"local complexity, MLP {'-'.join(map(str, WIDTHS))} relu, N={n}, P={p}, r={radius}, float32, "
          f"{threads} threads, best of {args.repeats}")
    print(f"  mean count per layer: {' '.join(f'{c:.2f}' for c in counts.mean(axis=0))}  "
          f"(hidden total {counts[:, :-1].sum(axis=1).mean():.2f}; dynascope's total_mean {r_mlp.total_mean:.2f})")
    print(f"  {'torch ' + torch.__version__ + ' batched forward + hooks + sign test':52} {t_torch:8.3f} s")
    print(f"  {'dynascope.local_complexity(Mlp)':52} {t_mlp:8.3f} s   torch / this = {t_torch / t_mlp:.2f}")
    print(f"  {'dynascope.local_complexity(nn.Module, hooks)':52} {t_gen:8.3f} s   torch / this = {t_torch / t_gen:.2f}")

    if (counts_f32 != counts).any():
        print(f"  (the timed run's float32 vertices change {int((counts_f32 != counts).sum())} entries; "
              "the comparison uses dynascope's float64-rounded vertices)")
    print("  dynascope.local_complexity(Mlp) against torch:")
    compare(r_mlp.counts.numpy().astype(np.int64), counts, z)
    print("  dynascope.local_complexity(nn.Module) against torch:")
    compare(r_gen.counts.numpy().astype(np.int64), counts, z)


if __name__ == "__main__":
    main()
