#!/usr/bin/python3
"""Loss-Hessian products, trace, spectral density and top eigenvalues of an MLP 784-128-128-10
(ReLU, biases, mean cross-entropy torch.nn.CrossEntropyLoss(), float32, 118,282 parameters) on
N inputs: PyTorch double backward, PyHessian and curvlinops + SciPy next to the dynascope package
in the same process, on the same weights and data.

  hvp      one Hessian-vector product. Peers: torch double backward, autograd.grad(g, params,
           grad_outputs=v) with g = autograd.grad(L, params, create_graph=True), the graph kept
           (as PyHessian does per product) and from scratch (forward, first and second backward);
           curvlinops' HessianLinearOperator @ v (forward-over-reverse by torch.func).
           dynascope: curvature_operator(Mlp.from_torch(net), x, y) @ v (the library's MLP path)
           and torch_curvature_operator(net, loss, x, y) @ v (double backward, for any module).
           Agreement: ||Hv - Hv_64|| / ||Hv_64|| against torch double backward in float64.
  trace    Hutchinson with --probes (100) Rademacher probes, end to end (building the operator
           included). Peer: pyhessian.hessian(net, loss, data=(x, y), cuda=False).trace(maxIter=100,
           tol=-inf) (tol -inf: PyHessian otherwise stops early when the running mean changes by
           less than tol). dynascope: trace(curvature_operator(...), method="hutchinson",
           probes=100); also on torch_curvature_operator with the same seed, hence the same
           probes: that pair must agree to float32 rounding. The probes of PyHessian and
           dynascope differ: agreement within 4 combined standard errors,
           |t1 - t2| <= 4 sqrt(se1^2 + se2^2) (se = std of z'Hz over probes / sqrt(probes)).
  slq      stochastic Lanczos quadrature, --slq-steps (90) Lanczos steps x --slq-probes (10)
           probes, end to end. Peer: pyhessian.hessian(...).density(iter=90, n_v=10). dynascope:
           slq_density(curvature_operator(...), steps=90, probes=10). Compared: the largest and
           smallest Ritz values over all probes (the extreme eigenvalues, which 90 steps resolve:
           relative difference <= 1e-3 of the largest |eigenvalue|) and the trace estimates
           P mean_k sum_j tau_kj theta_kj (different probes: within 4 combined standard errors);
           the density's second moment is printed, not checked.
  eigsh    the 10 largest (algebraic) eigenvalues. Peer: scipy.sparse.linalg.eigsh(k=10,
           which="LA", tol) on curvlinops' HessianLinearOperator(...).to_scipy(float32) (ARPACK in
           float32, the operator's precision; a seeded start vector). dynascope: eigsh(
           curvature_operator(...), k=10, which="largest", tol). Agreement: max_i |l_i - l'_i| /
           |l_1| <= 1e-4.

PyHessian 0.1's density() calls torch.eig, removed in torch 2: this script replaces it (a
monkeypatch of torch.eig, only when torch's raises) by torch.linalg.eigh of the symmetric
tridiagonal matrix, returning eig's layout ((eigenvalues [n, 2], real and zero imaginary parts;
eigenvectors as columns)). PyHessian's constructor accumulates the create_graph gradient into
.grad: the script clears the gradients before each construction.
Threads: torch.set_num_threads(T) and dynascope threads=T, and the process is pinned to T CPUs
when it may use more (--threads, default 2): both run on the same T cores.
Data: the first N Fashion-MNIST training images scaled to [0, 1] and their labels (Debian's
dataset-fashion-mnist) with --data fashion (the default when installed), else seeded standard
normal inputs and uniform random labels (--data normal). Weights: torch.manual_seed(--seed), the
default nn.Linear initialisation. Times: hvp is the best of --repeats calls after a warm-up; the
end-to-end rows are the best of --e2e-repeats (default 1) calls, after the hvp part has warmed up
the thread pools.

Usage: torch_curvature.py [--n 1024] [--parts hvp,trace,slq,eigsh] [--threads 2] [--probes 100]
                          [--slq-steps 90] [--slq-probes 10] [--k 10] [--tol 1e-5] [--repeats 5]
                          [--e2e-repeats 1] [--data fashion|normal] [--widths 784-128-128-10]
  environment: DYNASCOPE_BUILD (build folder, default ../../build).
Run it with a Python 3.11 (the package's extension is built for Debian's CPython 3.11) that has
torch >= 2, PyHessian and curvlinops; the environment used for the measurements (PyPI only, no
system site packages; the CPU-only wheel index was not reachable, so PyPI's torch came with its
CUDA libraries, unused here):
  /usr/bin/python3 -m venv /work/venv-curv
  /work/venv-curv/bin/pip install "torch>=2"
  /work/venv-curv/bin/pip install numpy scipy pyhessian curvlinops-for-pytorch
(resolved to torch 2.15.0, numpy 2.4.6, scipy 1.17.1, PyHessian 0.1, curvlinops-for-pytorch 3.0.1).
Where https://download.pytorch.org/whl/cpu is reachable, `pip install --index-url
https://download.pytorch.org/whl/cpu "torch>=2"` gives the same without the CUDA libraries.
"""
import argparse
import copy
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, dynascope_package, load_fashion_mnist, pin_cpus, relu_mlp  # noqa: E402

PARTS = ("hvp", "trace", "slq", "eigsh")


def timed(fn, repeats):
    """(best wall time of `repeats` calls without a warm-up, the last result)."""
    return best_time(fn, repeats, warmup=False)


def shim_torch_eig(torch):
    """PyHessian 0.1 calls torch.eig(T, eigenvectors=True) (removed in torch 2) on its symmetric
    Lanczos tridiagonal matrix: the same results from torch.linalg.eigh, in eig's layout."""
    if hasattr(torch, "eig"):
        try:   # torch 2 keeps a stub that raises, saying the function was removed
            torch.eig(torch.eye(2), eigenvectors=True)
            return False
        except RuntimeError:
            pass

    def eig(a, eigenvectors=False):
        w, v = torch.linalg.eigh(a)
        vals = torch.stack([w, torch.zeros_like(w)], dim=1)
        return vals, (v if eigenvectors else torch.empty(0, dtype=a.dtype))

    torch.eig = eig
    return True


def stats(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1024, help="inputs")
    ap.add_argument("--widths", default="784-128-128-10")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probes", type=int, default=100, help="Hutchinson probes")
    ap.add_argument("--slq-steps", type=int, default=90)
    ap.add_argument("--slq-probes", type=int, default=10)
    ap.add_argument("--k", type=int, default=10, help="top eigenvalues")
    ap.add_argument("--tol", type=float, default=1e-5, help="eigsh relative residual tolerance (both solvers)")
    ap.add_argument("--repeats", type=int, default=5, help="hvp: best of R calls after a warm-up")
    ap.add_argument("--e2e-repeats", type=int, default=1, help="trace, slq, eigsh: best of R end-to-end runs")
    ap.add_argument("--data", choices=("fashion", "normal"), default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            sys.exit(f"--parts: unknown part '{p}' (expected {', '.join(PARTS)})")
    if min(args.n, args.threads, args.probes, args.slq_steps, args.slq_probes, args.k, args.repeats,
           args.e2e_repeats) < 1:
        sys.exit("--n, --threads, --probes, --slq-steps, --slq-probes, --k, --repeats, --e2e-repeats must be positive")
    if args.probes < 2 or args.slq_probes < 2:
        sys.exit("--probes and --slq-probes must be at least 2 (the comparison needs a standard error)")
    widths = [int(w) for w in args.widths.split("-")]
    cpus = pin_cpus(args.threads)
    try:
        import torch
    except ImportError as e:
        print(f"torch is not importable here ({e}); make the environment in this script's docstring", file=sys.stderr)
        sys.exit(2)
    ds = dynascope_package()
    T = args.threads
    torch.set_num_threads(T)

    data = args.data or ("fashion" if load_fashion_mnist(1) is not None else "normal")
    if data == "fashion":
        loaded = load_fashion_mnist(args.n)
        if loaded is None or loaded[0].shape[0] < args.n or widths[0] != 784 or widths[-1] != 10:
            sys.exit("--data fashion: needs Debian's dataset-fashion-mnist with --n images, and widths 784-...-10; "
                     "use --data normal")
        x = torch.from_numpy(np.ascontiguousarray(loaded[0]))
        y = torch.from_numpy(np.ascontiguousarray(loaded[1]))
    else:
        g = torch.Generator().manual_seed(args.seed + 1)
        x = torch.randn(args.n, widths[0], generator=g)
        y = torch.randint(0, widths[-1], (args.n,), generator=g)
    torch.manual_seed(args.seed)
    net = relu_mlp(widths)
    params = [p for p in net.parameters()]
    P = sum(p.numel() for p in params)
    loss_fn = torch.nn.CrossEntropyLoss()
    mlp = ds.Mlp.from_torch(net)   # one copy of the weights, outside the timed calls

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts])

    def unflat(v):
        return [c.view_as(p) for c, p in zip(torch.split(v, [p.numel() for p in params]), params)]

    print(f"loss Hessian of an MLP {args.widths} (ReLU, biases, mean cross-entropy), P = {P} parameters, "
          f"N = {args.n} inputs ({data}), float32")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads) and dynascope (threads={T}) in one "
          f"process pinned to CPUs {cpus}: both run on the same {len(cpus)} cores")
    rows = []     # (part, tool, seconds, agreement text)
    failed = []

    def add(row):   # printed as it comes (the end-to-end parts take a while), and again in the table
        rows.append(row)
        print(f"  {row[0]}: {row[1]}: " + (f"{row[2]:.4f} s, " if " vs " not in row[1] else "") + row[3], flush=True)

    def check(ok, what):
        if not ok:
            failed.append(what)

    if "hvp" in parts:
        v = torch.randn(P, generator=torch.Generator().manual_seed(args.seed + 2))
        vs = unflat(v)
        # float64 reference: the same network and data in double precision
        net64 = copy.deepcopy(net).double()
        p64 = list(net64.parameters())
        g64 = torch.autograd.grad(loss_fn(net64(x.double()), y), p64, create_graph=True)
        ref = flat(torch.autograd.grad(g64, p64, grad_outputs=[t.double() for t in vs])).numpy()
        del g64, net64, p64

        def err(hv):
            hv = np.asarray(hv.detach().numpy() if hasattr(hv, "detach") else hv, dtype=np.float64)
            return float(np.linalg.norm(hv - ref) / np.linalg.norm(ref))

        g = torch.autograd.grad(loss_fn(net(x), y), params, create_graph=True)
        t, hv_t = best_time(lambda: flat(torch.autograd.grad(g, params, grad_outputs=vs, retain_graph=True)),
                            args.repeats)
        add(("hvp", "torch double backward (graph kept)", t, f"rel. err. vs float64 {err(hv_t):.2e}"))
        t_peer = t

        def scratch():
            gg = torch.autograd.grad(loss_fn(net(x), y), params, create_graph=True)
            return flat(torch.autograd.grad(gg, params, grad_outputs=vs))

        t, hv = best_time(scratch, args.repeats)
        add(("hvp", "torch double backward (from scratch)", t, f"rel. err. vs float64 {err(hv):.2e}"))
        t_scratch = t
        del g
        try:
            from curvlinops import HessianLinearOperator
            H_cl = HessianLinearOperator(net, loss_fn, params, [(x, y)], check_deterministic=False, num_data=args.n)
            t, hv = best_time(lambda: H_cl @ v, args.repeats)
            add(("hvp", "curvlinops HessianLinearOperator @ v", t, f"rel. err. vs float64 {err(hv):.2e}"))
        except ImportError:
            print("note: curvlinops is not installed: its rows are skipped")
        op = ds.curvature_operator(mlp, x, y)   # built once, outside the timing
        t, hv = best_time(lambda: op.matmat(v, threads=T), args.repeats)
        e = err(hv)
        d = float(torch.linalg.norm(hv - hv_t) / torch.linalg.norm(hv_t))
        add(("hvp", "dynascope curvature_operator(Mlp) @ v", t,
                     f"rel. err. vs float64 {e:.2e}, vs torch float32 {d:.2e}; graph kept / this "
                     f"{t_peer / t:.2f}, from scratch / this {t_scratch / t:.2f}"))
        check(e <= 1e-4, f"hvp: dynascope Mlp operator rel. err. {e:.2e} > 1e-4")
        # The operator prepared once (forward pass and gradient outside the timing), one vector per
        # call: what a loop of products in Python gets, against torch's graph-kept product.
        prep = op.prepared(threads=T)
        t, hv = best_time(lambda: prep @ v, args.repeats)
        e = err(hv)
        add(("hvp", "dynascope curvature_operator(Mlp).prepared() @ v", t,
                     f"rel. err. vs float64 {e:.2e}; graph kept / this {t_peer / t:.2f}"))
        check(e <= 1e-4, f"hvp: dynascope prepared operator rel. err. {e:.2e} > 1e-4")
        del prep
        # Many products at the same weights, as the solvers do: 16 vectors through one call (the
        # operator built once for them), per product, against torch's graph-kept product.
        V16 = torch.stack([v] + [torch.randn_like(v) for _ in range(15)], dim=1).contiguous()
        t16, hv16 = best_time(lambda: op.matmat(V16, threads=T), args.repeats)
        e16 = err(hv16[:, 0])
        add(("hvp", "dynascope curvature_operator(Mlp) @ V, 16 vectors, per vector", t16 / 16,
                     f"rel. err. vs float64 {e16:.2e} (first column); graph kept / this {t_peer * 16 / t16:.2f}"))
        check(e16 <= 1e-4, f"hvp: dynascope Mlp operator, block of 16, rel. err. {e16:.2e} > 1e-4")
        check(err(hv_t) <= 1e-4, f"hvp: torch float32 rel. err. {err(hv_t):.2e} > 1e-4")
        op_t = ds.torch_curvature_operator(net, loss_fn, x, y)
        t, hv = best_time(lambda: op_t.matmat(v, threads=T), args.repeats)
        add(("hvp", "dynascope torch_curvature_operator @ v", t,
                     f"rel. err. vs float64 {err(hv):.2e}; graph kept / this {t_peer / t:.2f}"))
        check(err(hv) <= 1e-4, f"hvp: dynascope torch operator rel. err. {err(hv):.2e} > 1e-4")
        del op_t

    def pyhessian_obj():
        from pyhessian import hessian
        net.zero_grad(set_to_none=True)   # its constructor accumulates into .grad
        return hessian(net, loss_fn, data=(x, y), cuda=False)

    have_pyhessian = True
    try:
        import pyhessian  # noqa: F401
    except ImportError:
        have_pyhessian = False
        print("note: pyhessian is not installed: its rows are skipped")

    if "trace" in parts:
        res = {}
        if have_pyhessian:
            torch.manual_seed(args.seed + 3)
            t, tr = timed(lambda: pyhessian_obj().trace(maxIter=args.probes, tol=float("-inf")), args.e2e_repeats)
            net.zero_grad(set_to_none=True)
            res["ph"] = stats(tr)
            add(("trace", f"PyHessian trace ({len(tr)} probes)", t,
                         f"{res['ph'][0]:.6g} +- {res['ph'][1]:.3g}"))
            t_ph = t
        t, r = timed(lambda: ds.trace(ds.curvature_operator(mlp, x, y), method="hutchinson", probes=args.probes,
                                      seed=args.seed, threads=T, progress=False), args.e2e_repeats)
        res["ds"] = (r.trace_estimate, r.trace_stderr)
        text = f"{r.trace_estimate:.6g} +- {r.trace_stderr:.3g}"
        if "ph" in res:
            diff, bound = abs(res["ph"][0] - res["ds"][0]), 4 * math.hypot(res["ph"][1], res["ds"][1])
            text += f"; |PyHessian - this| = {diff:.3g} (bound 4 se = {bound:.3g}); PyHessian / this {t_ph / t:.2f}"
            check(diff <= bound, f"trace: PyHessian {res['ph'][0]:.6g} and dynascope {res['ds'][0]:.6g} differ by "
                                 f"{diff:.3g} > 4 combined standard errors {bound:.3g}")
        add(("trace", f"dynascope trace(Mlp op, {r.probes} probes)", t, text))
        t, r2 = timed(lambda: ds.trace(ds.torch_curvature_operator(net, loss_fn, x, y), method="hutchinson",
                                       probes=args.probes, seed=args.seed, threads=T, progress=False), args.e2e_repeats)
        same = abs(r2.trace_estimate - r.trace_estimate) / abs(r.trace_estimate)
        add(("trace", f"dynascope trace(torch op, {r2.probes} probes)", t,
                     f"{r2.trace_estimate:.6g} +- {r2.trace_stderr:.3g}; same probes as the Mlp op: rel. diff "
                     f"{same:.2e}"))
        check(same <= 1e-4, f"trace: the Mlp and torch operators with the same probes differ by {same:.2e} > 1e-4")

    if "slq" in parts:
        S, K = args.slq_steps, args.slq_probes
        summaries = {}
        if have_pyhessian:
            shimmed = shim_torch_eig(torch)
            torch.manual_seed(args.seed + 4)
            t, (nodes, weights) = timed(lambda: pyhessian_obj().density(iter=S, n_v=K), args.e2e_repeats)
            net.zero_grad(set_to_none=True)
            summaries["PyHessian density"] = (t, [np.asarray(a, np.float64) for a in nodes],
                                              [np.asarray(w, np.float64) for w in weights])
            if shimmed:
                print("note: torch.eig (removed in torch 2) is shimmed with torch.linalg.eigh for PyHessian's density()")
        t, dens = timed(lambda: ds.slq_density(ds.curvature_operator(mlp, x, y), steps=S, probes=K, seed=args.seed,
                                               threads=T, progress=False), args.e2e_repeats)
        nodes, weights = dens.nodes, dens.weights
        if not isinstance(nodes, (list, tuple)):
            nodes, weights = [nodes], [weights]
        summaries["dynascope slq_density"] = (t, [np.asarray(a, np.float64) for a in nodes],
                                              [np.asarray(w, np.float64) for w in weights])
        summary = {}
        for tool, (t, nodes, weights) in summaries.items():
            per_probe = [float(np.dot(w, a)) for a, w in zip(nodes, weights)]
            m1, se = stats(per_probe)
            m2 = float(np.mean([np.dot(w, a * a) for a, w in zip(nodes, weights)]))
            hi, lo = max(a.max() for a in nodes), min(a.min() for a in nodes)
            summary[tool] = (t, hi, lo, P * m1, P * se)
            add(("slq", f"{tool} ({S} x {len(nodes)})", t,
                         f"Ritz range [{lo:.6g}, {hi:.6g}], trace {P * m1:.6g} +- {P * se:.3g}, "
                         f"second moment {m2:.4g}"))
        if len(summary) == 2:
            (ta, hia, loa, tra, sea), (tb, hib, lob, trb, seb) = summary.values()
            scale = max(abs(hia), abs(loa), abs(hib), abs(lob))
            dhi, dlo = abs(hia - hib) / scale, abs(loa - lob) / scale
            dtr, bound = abs(tra - trb), 4 * math.hypot(sea, seb)
            add(("slq", "PyHessian vs dynascope", ta / tb,
                         f"largest Ritz value rel. diff {dhi:.2e}, smallest {dlo:.2e} (of the largest |value|); "
                         f"|trace diff| {dtr:.3g} (bound 4 se = {bound:.3g}); PyHessian / dynascope {ta / tb:.2f}"))
            check(dhi <= 1e-3 and dlo <= 1e-3, f"slq: extreme Ritz values differ (rel. {dhi:.2e}, {dlo:.2e} > 1e-3)")
            check(dtr <= bound, f"slq: trace estimates differ by {dtr:.3g} > 4 combined standard errors {bound:.3g}")

    if "eigsh" in parts:
        k = args.k
        vals = {}
        try:
            import scipy.sparse.linalg as sla
            from curvlinops import HessianLinearOperator

            def peer():
                H = HessianLinearOperator(net, loss_fn, params, [(x, y)], check_deterministic=False,
                                          num_data=args.n).to_scipy(dtype=np.float32)
                v0 = np.random.default_rng(args.seed + 5).standard_normal(P).astype(np.float32)
                return sla.eigsh(H, k=k, which="LA", tol=args.tol, v0=v0, return_eigenvectors=False)

            t, w = timed(peer, args.e2e_repeats)
            vals["scipy"] = np.sort(np.asarray(w, np.float64))[::-1]
            add(("eigsh", f"curvlinops + scipy eigsh (ARPACK, k={k})", t,
                         f"top {vals['scipy'][0]:.6g} .. {vals['scipy'][-1]:.6g}"))
            t_sp = t
        except ImportError as e:
            print(f"note: {e}: the scipy/curvlinops row is skipped")
        t, r = timed(lambda: ds.eigsh(ds.curvature_operator(mlp, x, y), k=k, which="largest", tol=args.tol,
                                      seed=args.seed, threads=T, progress=False), args.e2e_repeats)
        vals["ds"] = np.asarray(r.eigenvalues, np.float64)
        text = (f"top {vals['ds'][0]:.6g} .. {vals['ds'][-1]:.6g}, {r.matvecs} products, all converged "
                f"{r.all_converged}")
        if "scipy" in vals:
            d = float(np.max(np.abs(vals["ds"] - vals["scipy"])) / abs(vals["scipy"][0]))
            text += f"; max |diff| / |l1| {d:.2e}; scipy / this {t_sp / t:.2f}"
            check(d <= 1e-4, f"eigsh: eigenvalues differ by {d:.2e} of the largest > 1e-4")
        add(("eigsh", f"dynascope eigsh(Mlp op, k={k})", t, text))
        if "scipy" in vals:
            print("eigenvalues (scipy, dynascope):")
            for a, b in zip(vals["scipy"], vals["ds"]):
                print(f"  {a:14.8g} {b:14.8g}   rel. {abs(a - b) / abs(a):.1e}")

    print(f"\n{'part':6} {'tool':42} {'seconds':>9}  agreement")
    for part, tool, t, text in rows:
        tt = f"{t:9.4f}" if " vs " not in tool else f"{'':9}"
        print(f"{part:6} {tool:42} {tt}  {text}")
    print("(ratios peer / dynascope > 1: dynascope is faster. trace, slq and eigsh are end to end, building the "
          "operator included.)")
    if failed:
        sys.exit("disagreement: " + "; ".join(failed))


if __name__ == "__main__":
    main()
