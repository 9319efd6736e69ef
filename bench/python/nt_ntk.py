#!/usr/bin/python3
"""The empirical NTK of an MLP 784-512-512-10 (ReLU, biases, standard parameterization, float32)
by Neural Tangents (JAX) next to the dynascope package in the same process, on the same weights
and inputs:
  peer       neural_tangents.empirical_ntk_fn(f, trace_axes, vmap_axes=0, implementation=...),
             jitted, of f = the apply function of NT's own layers (stax.serial of Dense with
             parameterization="standard", W_std = b_std = 1, and Relu; params (W^T, b) of the same
             weights: the form NT's structured rules are written for, and the fastest: 26 ms
             against 42 ms for the same layers written as `x @ W + b` and 12.8 s as `x @ W.T + b`,
             trace N = 256 on 2 cores; --peer-fn plain / plain-t times those) or a plain JAX
             function; STRUCTURED_DERIVATIVES at every size, and
             NTK_VECTOR_PRODUCTS (--extra ntvp, the default) and JACOBIAN_CONTRACTION (--extra
             jacobian: it holds the whole Jacobian, N*O*P*4 bytes, 6.9 GB at N=256) at the sizes
             up to --extra-max-n (256).
  dynascope  dynascope.ntk(Mlp.from_pairs(the same (W, b)), x, outputs=..., threads=T).
Modes: "trace" (NT trace_axes=(-1,); dynascope outputs="trace") and "full" (NT trace_axes=();
dynascope outputs="full").
Conventions, checked by this script at run time on the first size (it exits non-zero when they do
not hold):
  * NT's trace kernel is the MEAN over the traced output axis (its _trace_and_diagonal divides by
    the axis' size), dynascope's "trace" the SUM: the script compares NT * O with dynascope.
  * NT's full kernel is [N1, N2, O, O]; dynascope's "full" is [N1, O, N2, O]: the script compares
    NT against dynascope.transpose(0, 2, 1, 3) (a view; entry (n, m, a, b) = d f_a(x_n)/dw .
    d f_b(x_m)/dw in both).
Times are the best of --repeats calls after one warm-up call (for NT the warm-up also compiles;
the compile + first call time is printed apart); NT's result is waited for with
block_until_ready. The row "max rel diff" is max |K_nt - K_ds| / max |K_ds| over the entries of
samples with no hidden pre-activation within 1e-5 (relative, float64) of a ReLU kink: for those the
two tools' float32 products may put the unit on either side (without biases, N = 1024 of
Fashion-MNIST has some: a ~1e-3 change of their rows); the per-size line also prints the maximum
over all entries and how many samples were left out.
Threads: with --threads T the process is pinned to T CPUs (os.sched_setaffinity, before JAX is
imported) when it may use more, so XLA's CPU thread pool and dynascope's T threads use the same
T cores (on a 2-core machine, both use the 2 cores).
Data: the first N Fashion-MNIST training images scaled to [0, 1] (Debian's dataset-fashion-mnist)
with --data fashion (the default when installed), else seeded standard normal inputs (--data normal).
Weights: PyTorch's nn.Linear initialisation (W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from a
seeded NumPy generator.

Usage: nt_ntk.py [--sizes 256,1024] [--modes trace,full] [--threads 2] [--repeats 3]
                 [--extra ntvp,jacobian] [--extra-max-n 256] [--data fashion|normal] [--tol 1e-4]
  environment: DYNASCOPE_BUILD (build folder, default ../../build).
Run it with a Python 3.11 that has JAX 0.4.25 and neural-tangents (the package's extension is
built for Debian's CPython 3.11); the environment used for the measurements (PyPI, no system site
packages; newer JAX breaks neural-tangents' structured derivatives):
  /usr/bin/python3 -m venv /work/venv-nt
  /work/venv-nt/bin/pip install "jax==0.4.25" "jaxlib==0.4.25" "numpy<2" neural-tangents "tf2jax<=0.3.6"
which resolved to neural-tangents 0.6.5, tf2jax 0.3.6, tensorflow 2.21.0, numpy 1.26.4,
ml_dtypes 0.5.4 (neural_tangents imports tf2jax, which imports tensorflow).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, dynascope_package, load_fashion_mnist, pin_cpus  # noqa: E402

WIDTHS = (784, 512, 512, 10)
IMPLS = {"structured": "STRUCTURED_DERIVATIVES", "jacobian": "JACOBIAN_CONTRACTION", "ntvp": "NTK_VECTOR_PRODUCTS"}


def make_weights(seed):
    """[(W [out, in], b [out])] float32, PyTorch's nn.Linear initialisation."""
    rng = np.random.default_rng(seed)
    pairs = []
    for fan_in, fan_out in zip(WIDTHS[:-1], WIDTHS[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        b = rng.uniform(-bound, bound, fan_out).astype(np.float32)
        pairs.append((w, b))
    return pairs


def near_kink(pairs, x, rel=1e-5):
    """[N] bool: samples whose float64 hidden pre-activations come within rel * (the layer's largest
    |z|) of zero."""
    a = np.asarray(x, np.float64)
    near = np.zeros(a.shape[0], bool)
    for i, (w, b) in enumerate(pairs[:-1]):
        z = a @ np.asarray(w, np.float64).T + (0 if b is None else np.asarray(b, np.float64))
        near |= (np.abs(z) < rel * np.abs(z).max()).any(axis=1)
        a = np.maximum(z, 0)
    return near


def make_inputs(n, data, seed):
    if data == "fashion":
        loaded = load_fashion_mnist(n)
        if loaded is None or loaded[0].shape[0] < n:
            sys.exit(f"--data fashion: Debian's dataset-fashion-mnist is not installed (or has fewer than {n} "
                     f"images); use --data normal")
        return np.ascontiguousarray(loaded[0][:n])
    return np.random.default_rng(seed + 1).standard_normal((n, WIDTHS[0])).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,1024", help="numbers of inputs N, comma-separated")
    ap.add_argument("--modes", default="trace,full", help="trace (sum over outputs, [N, N]) and/or full ([N, O, N, O])")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--extra", default="ntvp",
                    help="NT implementations timed besides structured derivatives at N <= --extra-max-n: ntvp, jacobian "
                         "(holds the Jacobian, N*O*P*4 bytes: 6.9 GB at N=256); empty: none")
    ap.add_argument("--extra-max-n", type=int, default=256, help="largest N at which --extra runs")
    ap.add_argument("--data", choices=("fashion", "normal"), default=None,
                    help="inputs: Fashion-MNIST images (default when installed) or seeded normal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-bias", action="store_true", help="the same network without biases (both tools)")
    ap.add_argument("--peer-fn", choices=("stax", "plain", "plain-t"), default="stax",
                    help="the network as NT sees it: its stax layers (default, the fastest), x @ W + b with W [in, out], "
                         "or x @ W.T + b with W [out, in] (PyTorch's layout)")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest accepted max |K_nt - K_ds| / max |K_ds|")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    extra = [e for e in args.extra.split(",") if e]
    for m in modes:
        if m not in ("trace", "full"):
            sys.exit(f"--modes: unknown mode '{m}' (expected trace, full)")
    for e in extra:
        if e not in IMPLS or e == "structured":
            sys.exit(f"--extra: unknown implementation '{e}' (expected jacobian, ntvp)")
    if args.threads < 1 or args.repeats < 1 or not sizes or min(sizes) < 1:
        sys.exit("--threads, --repeats and --sizes must be positive")
    data = args.data or ("fashion" if load_fashion_mnist(1) is not None else "normal")

    cpus = pin_cpus(args.threads)  # before JAX sizes its thread pool
    try:
        import jax
        import jax.numpy as jnp
        import neural_tangents as nt
    except ImportError as e:
        print(f"neural_tangents / JAX are not importable here ({e}); make the environment shown in this "
              f"script's docstring and run the script with its python", file=sys.stderr)
        sys.exit(2)
    ds = dynascope_package()
    from neural_tangents import NtkImplementation

    pairs = make_weights(args.seed)
    if args.no_bias:
        pairs = [(w, None) for w, _ in pairs]
    mlp = ds.Mlp.from_pairs(pairs)  # one copy of the weights, outside the timed calls
    O = WIDTHS[-1]
    if args.peer_fn == "stax":
        from neural_tangents import stax
        layers = []
        for i, (w, _) in enumerate(pairs):
            layers.append(stax.Dense(w.shape[0], W_std=1.0, b_std=None if args.no_bias else 1.0,
                                     parameterization="standard"))
            if i + 1 < len(pairs):
                layers.append(stax.Relu())
        _, f, _ = stax.serial(*layers)
        # stax params: (W [in, out], b [out]) per Dense, () per Relu; standard parameterization
        # applies them as x @ W + b (the agreement check below confirms it).
        params = []
        for i, (w, b) in enumerate(pairs):
            params.append((jnp.asarray(w.T.copy()), None if b is None else jnp.asarray(b)))
            if i + 1 < len(pairs):
                params.append(())
    else:
        transposed = args.peer_fn == "plain-t"
        params = [(jnp.asarray(w if transposed else w.T.copy()), None if b is None else jnp.asarray(b)) for w, b in pairs]

        def f(p, x):
            for i, (w, b) in enumerate(p):
                x = x @ w.T if transposed else x @ w
                if b is not None:
                    x = x + b
                if i + 1 < len(p):
                    x = jax.nn.relu(x)
            return x

    print(f"empirical NTK, MLP {'-'.join(map(str, WIDTHS))} (ReLU, {'no biases' if args.no_bias else 'biases'}, standard parameterization, "
          f"{sum(w.size + (0 if b is None else b.size) for w, b in pairs)} parameters), float32, inputs {data}")
    print(f"neural-tangents {getattr(nt, '__version__', '?')} on JAX {jax.__version__} (XLA CPU) and dynascope "
          f"(threads={args.threads}), NT's network as {args.peer_fn}, in one process pinned to CPUs {cpus}: both run on the same {len(cpus)} cores; "
          f"best of {args.repeats} after a warm-up")
    rows = []  # (problem, peer, t_peer, t_ours, rel, compile_s)
    failed = []
    conventions_checked = False
    for n in sizes:
        x_np = make_inputs(n, data, args.seed)
        x = jnp.asarray(x_np)
        for mode in modes:
            t_ours, k_ours = best_time(lambda: ds.ntk(mlp, x_np, outputs=mode, threads=args.threads,
                                                      progress=False), args.repeats)
            # The kernel laid out as NT's: trace = NT * O (NT's mean over outputs), full transposed.
            ref = k_ours / O if mode == "trace" else k_ours.transpose(0, 2, 1, 3)
            scale = float(np.abs(k_ours).max())
            # Samples with a hidden pre-activation within float32 rounding of a ReLU kink: the two
            # tools' float32 products may put it on either side, which changes that sample's rows
            # and columns by one unit's share (~1e-3). They are left out of the comparison (and
            # counted); every other entry must agree to --tol.
            keep = ~near_kink(pairs, x_np)
            impls = ["structured"] + (extra if n <= args.extra_max_n else [])
            for impl in impls:
                fn = nt.empirical_ntk_fn(f, trace_axes=(-1,) if mode == "trace" else (), vmap_axes=0,
                                         implementation=getattr(NtkImplementation, IMPLS[impl]))
                jitted = jax.jit(lambda xx, pp, fn=fn: fn(xx, None, pp))
                t0 = time.perf_counter()
                try:
                    jitted(x, params).block_until_ready()
                except Exception as e:  # e.g. out of memory for the full kernel's Jacobians
                    print(f"  N={n} {mode} NT {impl}: failed: {type(e).__name__}: {str(e)[:300]}")
                    continue
                compile_s = time.perf_counter() - t0
                t_peer, k_nt = best_time(lambda: jitted(x, params).block_until_ready(), args.repeats, warmup=False)
                k_nt = np.asarray(k_nt)
                if k_nt.shape != ref.shape:
                    sys.exit(f"N={n} {mode}: NT returned shape {k_nt.shape}, expected {ref.shape}: "
                             f"the layout conventions in this script's docstring no longer hold")
                diff = np.abs(k_nt * (O if mode == "trace" else 1) - (k_ours if mode == "trace" else ref))
                rel = float(diff[np.ix_(keep, keep)].max()) / scale
                rel_all = float(diff.max()) / scale
                if not conventions_checked and mode == "trace" and impl == "structured":
                    # NT's mean over outputs, not the sum: NT * O matches, NT itself is O times smaller.
                    if not np.allclose(np.asarray(k_nt, np.float64).sum() * O, np.asarray(k_ours, np.float64).sum(),
                                       rtol=1e-3):
                        sys.exit("NT's trace kernel is not the mean over outputs any more: check the convention")
                    conventions_checked = True
                rows.append((f"{mode} N={n}", f"NT {impl}", t_peer, t_ours, rel, compile_s))
                print(f"  {mode} N={n} NT {impl}: {t_peer:.4f} s, dynascope {t_ours:.4f} s, ratio {t_peer / t_ours:.2f}, "
                      f"max rel diff {rel:.2e} ({int((~keep).sum())} samples near a ReLU kink left out; with them "
                      f"{rel_all:.2e}) (NT compile + first call {compile_s:.2f} s)", flush=True)
                if rel > args.tol:
                    failed.append(f"{mode} N={n} NT {impl}: max rel diff {rel:.2e} > {args.tol:g}")
                del k_nt
            del k_ours, ref

    print(f"\n{'problem':14} {'peer':16} {'peer s':>9} {'dynascope s':>11} {'peer/ours':>9} {'max rel diff':>12} "
          f"{'NT compile+1st s':>16}")
    for problem, peer, tp, to, rel, cs in rows:
        print(f"{problem:14} {peer:16} {tp:9.4f} {to:11.4f} {tp / to:9.2f} {rel:12.2e} {cs:16.2f}")
    print("(peer/ours > 1: dynascope is faster. trace: NT trace_axes=(-1,) times O (NT averages over outputs) "
          "against dynascope outputs='trace' (the sum); full: NT trace_axes=() [N, N, O, O] against dynascope "
          "outputs='full' [N, O, N, O] transposed (0, 2, 1, 3).)")
    if failed:
        sys.exit("kernels disagree: " + "; ".join(failed))


if __name__ == "__main__":
    main()
