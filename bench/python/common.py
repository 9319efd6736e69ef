"""Helpers shared by the peer-comparison scripts. Run them with the interpreter the build's Python
extension was made for (the build's .venv/bin/python, or Debian's /usr/bin/python3: both are
CPython 3.11 and see python3-torch and python3-numpy): each script imports the package from
<build>/python and times it in the same process as the peer, on the same weights and data."""
import glob
import json
import os
import struct
import subprocess
import sys
import sysconfig
import time

import numpy as np


def build_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("DYNASCOPE_BUILD", os.path.join(here, "..", "..", "build"))


def dynascope_exe():
    return os.path.join(build_dir(), "src", "cli", "dynascope")


_PACKAGE = []


def dynascope_package(required=True):
    """Imports the dynascope package from <build>/python (DYNASCOPE_BUILD, default ../../build),
    ahead of any installed copy. When it cannot be imported — not built, or built for another
    Python — says why and how to fix it on stderr, then exits (required) or returns None (the
    caller goes on with what it can do without it)."""
    if _PACKAGE:
        return _PACKAGE[0]
    where = os.path.join(os.path.abspath(build_dir()), "python")
    problem = None
    ext = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    found = glob.glob(os.path.join(where, "dynascope", "_core*"))
    if not os.path.isdir(os.path.join(where, "dynascope")):
        problem = (f"no package at {where}/dynascope: build it with -DDYNASCOPE_PYTHON=ON (target _core), "
                   f"or set DYNASCOPE_BUILD to the build folder")
    elif not found:
        problem = f"{where}/dynascope has no compiled _core extension: build the target _core"
    elif not any(f.endswith(ext) for f in found):
        problem = (f"{where}/dynascope/_core is built for another Python ({', '.join(os.path.basename(f) for f in found)}); "
                   f"this is {sys.executable} (Python {sys.version.split()[0]}, needs _core{ext}): run the script "
                   f"with the build's interpreter (e.g. <repo>/.venv/bin/python) or rebuild with "
                   f"-DPython_EXECUTABLE={sys.executable}")
    if problem is None:
        sys.path.insert(0, where)
        try:
            import dynascope  # noqa: F401
        except ImportError as e:
            problem = f"import dynascope from {where} failed: {e}"
    if problem is not None:
        print(f"dynascope package: {problem}", file=sys.stderr)
        if required:
            sys.exit(2)
        return None
    dynascope.set_progress(False)
    _PACKAGE.append(dynascope)
    return dynascope


def best_time(fn, repeats=3, warmup=True):
    """(smallest wall time in seconds of `repeats` calls, the last call's result); one untimed call
    first when warmup (thread pools, allocators, lazy imports)."""
    if warmup:
        fn()
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench_exe(name):
    return os.path.join(build_dir(), "bench", name)


def run_benchmark(name, pattern):
    """Runs one of our Google Benchmark binaries and returns its JSON records."""
    out = subprocess.run([bench_exe(name), f"--benchmark_filter={pattern}", "--benchmark_format=json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["benchmarks"]


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: float32/float64 numpy array} as safetensors (the format is small enough to
    write by hand, so the scripts need no safetensors package)."""
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}[arr.dtype]
        blob = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def need_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not importable here (apt-get install python3-torch, run with /usr/bin/python3)", file=sys.stderr)
        sys.exit(0)


FASHION_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist (as src/data/datasets.cpp)


def load_fashion_mnist(n=None):
    """(images [n, 784] float32 in [0, 1], labels [n] int64) from the training set, or None when
    the package is not installed."""
    import gzip
    images = os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")
    labels = os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz")
    if not (os.path.exists(images) and os.path.exists(labels)):
        return None
    with gzip.open(images, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{images}: not an IDX image file"
        x = np.frombuffer(f.read(), dtype=np.uint8).reshape(count, rows * cols)
    with gzip.open(labels, "rb") as f:
        magic, count_l = struct.unpack(">II", f.read(8))
        assert magic == 2049 and count_l == count, f"{labels}: not the label file of {images}"
        y = np.frombuffer(f.read(), dtype=np.uint8)
    n = count if n is None else min(n, count)
    return (x[:n].astype(np.float32) / 255.0), y[:n].astype(np.int64)


def pin_cpus(threads):
    """Restricts this process to `threads` of the CPUs it may use (os.sched_setaffinity) when it may
    use more, so that a peer's own thread pool (XLA's, sized from the CPUs it sees) and dynascope's
    `threads` threads compute on the same cores; call it before importing the peer. Returns the
    CPUs used."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
    return sorted(os.sched_getaffinity(0))


def relu_mlp(widths, bias=True):
    """torch.nn.Sequential of Linear layers with ReLU between them (none after the last), built in
    layer order so that a seeded torch RNG gives every script the same weights."""
    import torch
    layers = []
    for i in range(len(widths) - 1):
        layers.append(torch.nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i + 2 < len(widths):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)
