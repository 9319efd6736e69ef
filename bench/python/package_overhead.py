#!/usr/bin/env python3
"""Per-call overhead of the Python package: `dynascope.ntk` on small problems next to the same
computation called from C++ (Google Benchmark's BM_ntk_small in bench_ntk, one thread, float64).

Prints, per problem: the C++ time, the Python call's time, the part of it spent in nanobind's
dispatch and in the package's Python checks, and the overhead in µs and in % of the C++ time.
Run with the interpreter the build's extension was made for (.venv/bin/python) on an idle machine:
    .venv/bin/python bench/python/package_overhead.py [build dir]
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
if len(sys.argv) > 1:
    os.environ["DYNASCOPE_BUILD"] = sys.argv[1]
sys.path.insert(0, here)
from common import build_dir, dynascope_package  # noqa: E402

build = build_dir()
dynascope = dynascope_package()
from dynascope import _core  # noqa: E402

# (N, hidden width, inputs): the same list as BM_ntk_small's Args.
PROBLEMS = [(8, 16, 8), (64, 64, 16), (100, 512, 784)]


def best_of(fn, seconds=0.5):
    """Median of many calls after a warm-up, in seconds."""
    fn()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def cxx_times():
    exe = os.path.join(build, "bench", "bench_ntk")
    out = subprocess.run([exe, "--benchmark_filter=BM_ntk_small", "--benchmark_format=json",
                          "--benchmark_min_time=0.5"], check=True, capture_output=True, text=True).stdout
    times = {}
    for b in json.loads(out)["benchmarks"]:
        n, w, d = (int(v) for v in b["name"].split("/")[1:4])
        times[(n, w, d)] = b["real_time"] * {"us": 1e-6, "ns": 1e-9, "ms": 1e-3}[b["time_unit"]]
    return times


def main():
    cxx = cxx_times()
    print("dynascope.ntk per-call overhead (trace, float64, 1 thread, NumPy in/out; median times)")
    print(f"{'problem':>26} {'C++':>10} {'Python':>10} {'overhead':>10} {'of C++':>8} {'dispatch':>9} {'checks':>8}")
    for n, w, d in PROBLEMS:
        arch = f"{d}-{w}-{w}-4"
        rng = np.random.default_rng(0)
        spec = _core.MlpSpec.from_arch(arch, "relu", "standard")
        # The same weights as the C++ benchmark is not needed: the work does not depend on values.
        params = rng.standard_normal(spec.num_params) * 0.1
        mlp = dynascope.Mlp(arch, params)
        x = rng.random((n, d))
        out = np.empty((n, n))
        t_py = best_of(lambda: dynascope.ntk(mlp, x, threads=1, progress=False))
        t_core = best_of(lambda: _core.ntk_into(mlp._spec, params, x, None, "trace", "auto", 1, None, out, []))
        t_noop = best_of(lambda: _core.input_address(x))
        t_cxx = cxx[(n, w, d)]
        over = t_py - t_cxx
        print(f"{'N=' + str(n) + ' ' + arch:>26} {t_cxx * 1e6:8.1f}µs {t_py * 1e6:8.1f}µs {over * 1e6:8.1f}µs "
              f"{100 * over / t_cxx:7.1f}% {t_noop * 1e6:7.2f}µs {(t_py - t_core) * 1e6:6.1f}µs")
    print("overhead = Python call - C++ call; dispatch = one nanobind call with an array argument; "
          "checks = dynascope.ntk - the bare _core call (argument checks, output allocation)")


if __name__ == "__main__":
    main()
