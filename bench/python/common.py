"""Helpers shared by the peer-comparison scripts (run with Debian's /usr/bin/python3, which sees
python3-torch and python3-numpy)."""
import json
import os
import struct
import subprocess
import sys

import numpy as np


def build_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.environ.get("DYNASCOPE_BUILD", os.path.join(here, "..", "..", "build"))


def dynascope_exe():
    return os.path.join(build_dir(), "src", "cli", "dynascope")


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


def has_command(name):
    """True when the dynascope binary exists and knows the subcommand `name` (scripts that compare a
    command that is still being written skip its half with a message instead of failing)."""
    exe = dynascope_exe()
    if not os.path.exists(exe):
        return False
    r = subprocess.run([exe, name, "--help"], capture_output=True, text=True)
    return r.returncode == 0


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
