#!/usr/bin/python3
"""Top-k eigenpairs of the same symmetric matrix by SciPy's eigsh (ARPACK) and by dynascope.eigsh
(thick-restart Lanczos) in the same process, at the same tolerance: operator applications, times
and agreement. dynascope runs twice:
  LinearOperator  the very scipy.sparse.linalg.LinearOperator ARPACK gets (the same Python matvec,
                  so the two solvers pay the same per application: this compares the algorithms)
  dense matrix    the NumPy array itself, read in place (the library's own matvecs, no Python
                  call per application)
The tolerances are not the same test (ARPACK: relative accuracy of the Ritz values; dynascope:
||A u - l u|| <= tol |l|), so the matvec counts compare the work to a similar accuracy, not to
an identical stopping rule.
Usage: scipy_eigsh.py [matrix.npy] [k] [tol] [--threads T] [--repeats R]
  (no matrix: a 3000 x 3000 one with a decaying spectrum)
  environment: DYNASCOPE_BUILD (build folder, default ../../build)."""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, dynascope_package  # noqa: E402

try:
    from scipy.sparse.linalg import LinearOperator, eigsh
except ImportError:
    print("SciPy is not importable here (apt-get install python3-scipy, run with /usr/bin/python3)", file=sys.stderr)
    sys.exit(0)


def synthetic(n, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = 1.0 / (1.0 + 0.05 * np.arange(n))
    return (q * lam) @ q.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("matrix", nargs="?", help=".npy file of a square matrix (symmetrised); default: synthetic")
    ap.add_argument("k", nargs="?", type=int, default=20)
    ap.add_argument("tol", nargs="?", type=float, default=1e-6)
    ap.add_argument("--n", type=int, default=3000, help="size of the synthetic matrix")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each solver (best is printed)")
    args = ap.parse_args()
    ds = dynascope_package()
    k, tol = args.k, args.tol
    a = np.load(args.matrix).astype(np.float64) if args.matrix else synthetic(args.n)
    a = np.ascontiguousarray(0.5 * (a + a.T))
    count = [0]

    def mv(x):
        count[0] += 1
        return a @ x

    op = LinearOperator(a.shape, matvec=mv, dtype=np.float64)

    def scipy_run():
        count[0] = 0
        return np.sort(eigsh(op, k=k, which="LA", tol=tol, return_eigenvectors=False))[::-1]

    def ours_op():
        count[0] = 0
        return ds.eigsh(op, k=k, which="largest", tol=tol, method="lanczos", threads=args.threads)

    t_scipy, vals = best_time(scipy_run, args.repeats, warmup=False)
    scipy_mv = count[0]
    t_op, r_op = best_time(ours_op, args.repeats, warmup=False)
    op_calls = count[0]
    t_dense, r_dense = best_time(lambda: ds.eigsh(a, k=k, which="largest", tol=tol, method="lanczos",
                                                  threads=args.threads), args.repeats, warmup=False)
    scale = np.max(np.abs(vals))
    print(f"top-{k} of a {a.shape[0]}x{a.shape[0]} symmetric matrix, tol {tol}, float64, "
          f"{args.threads} threads for dynascope's own work, best of {args.repeats}")
    print(f"  {'scipy eigsh (ARPACK), Python matvec':42} {scipy_mv:6d} matvecs  {t_scipy:8.3f} s")
    worst = 0.0
    for label, t, r, extra in (("dynascope.eigsh(LinearOperator), same matvec", t_op, r_op,
                                f", {op_calls} Python calls"),
                               ("dynascope.eigsh(dense array, in place)", t_dense, r_dense, "")):
        diff = np.max(np.abs(np.asarray(r.eigenvalues) - vals)) / scale
        worst = max(worst, diff)
        print(f"  {label:42} {r.matvecs:6d} matvecs  {t:8.3f} s   scipy / this = {t_scipy / t:6.2f}   "
              f"max rel. eigenvalue difference {diff:.2e} (converged {r.all_converged}{extra})")
    if worst > max(100 * tol, 1e-8):
        sys.exit(f"eigenvalues disagree: {worst:.2e} > {max(100 * tol, 1e-8):.0e}")


if __name__ == "__main__":
    main()
