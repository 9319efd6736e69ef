#!/usr/bin/python3
"""Top-k eigenpairs of the same symmetric matrix by `dynascope eigen` (thick-restart Lanczos) and
by SciPy's eigsh (ARPACK), at the same tolerance: operator applications, times and agreement.
Usage: scipy_eigsh.py [matrix.npy] [k] [tol]   (no matrix: a 3000 x 3000 one with a decaying spectrum)"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import dynascope_exe

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
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-6
    with tempfile.TemporaryDirectory() as tmp:
        if len(sys.argv) > 1:
            path = sys.argv[1]
            a = np.load(path).astype(np.float64)
        else:
            a = synthetic(3000)
            path = os.path.join(tmp, "a.npy")
            np.save(path, a)
        a = 0.5 * (a + a.T)
        out = os.path.join(tmp, "r.json")
        t0 = time.perf_counter()
        subprocess.run([dynascope_exe(), "eigen", "--matrix", path, "--k", str(k), "--tol", str(tol), "--method", "lanczos",
                        "--dtype", "float64", "--quiet", "--out", out], check=True)
        t_ours = time.perf_counter() - t0
        ours = json.load(open(out))
    count = [0]

    def mv(x):
        count[0] += 1
        return a @ x

    op = LinearOperator(a.shape, matvec=mv, dtype=np.float64)
    t0 = time.perf_counter()
    vals = eigsh(op, k=k, which="LA", tol=tol, return_eigenvectors=False)
    t_scipy = time.perf_counter() - t0
    vals = np.sort(vals)[::-1]
    diff = np.max(np.abs(np.array(ours["eigenvalues"]) - vals)) / np.max(np.abs(vals))
    print(f"top-{k} of a {a.shape[0]}x{a.shape[0]} symmetric matrix, tol {tol}")
    print(f"  dynascope eigen (whole CLI run): {ours['matvecs']:6d} matvecs  {t_ours:7.3f} s  "
          f"(solver {ours['seconds']:.3f} s, converged {ours['all_converged']})")
    print(f"  scipy eigsh (ARPACK):            {count[0]:6d} matvecs  {t_scipy:7.3f} s")
    print(f"  max relative eigenvalue difference: {diff:.2e}")


if __name__ == "__main__":
    main()
