#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (small valid files) to tests/fuzz/corpus/<reader>/.

Standard library only; the output is deterministic, so rerunning it changes nothing.
"""
import gzip
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent


def npy(descr, shape, data, major=1, dict_text=None):
    if dict_text is None:
        shape_text = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
        dict_text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    prefix = 10 if major == 1 else 12
    header = dict_text + " " * ((64 - (prefix + len(dict_text) + 1) % 64) % 64) + "\n"
    length = struct.pack("<H", len(header)) if major == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([major, 0]) + length + header.encode("latin1") + data


def safetensors(tensors, metadata=None):
    header, buffer = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buffer), len(buffer) + len(data)]}
        buffer += data
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + buffer


def idx(type_code, dims, data):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def gz(data):
    return gzip.compress(data, mtime=0)


def f32(*values, endian="<"):
    return struct.pack(endian + "%df" % len(values), *values)


SEEDS = {
    "npy": {
        "f4_2x3.npy": npy("<f4", (2, 3), f32(1, 2, 3, 4, 5, 6)),
        "f8_scalar.npy": npy("<f8", (), struct.pack("<d", 3.25)),
        "i4_1d.npy": npy("<i4", (3,), struct.pack("<3i", -1, 0, 7)),
        "i8_empty.npy": npy("<i8", (0, 3), b""),
        "u1_3d.npy": npy("|u1", (1, 2, 3), bytes(range(6))),
        "u1_alias_v2.npy": npy("<u1", (2,), b"\x05\x06", major=2),
        "f4_v3_spacing.npy": npy(None, None, f32(1.5, -2), major=3,
                                 dict_text='{ "shape" : ( 2 , ) , "descr" : "<f4" , "fortran_order" : False }'),
    },
    "safetensors": {
        "model.safetensors": safetensors(
            [("0.weight", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6)), ("0.bias", "F32", [2], f32(-1, 1)),
             ("layers.1.weight", "F64", [1, 2], struct.pack("<2d", 0.5, -0.25)),
             ("step", "I64", [], struct.pack("<q", 12)), ("counts", "I32", [2], struct.pack("<2i", -7, 8)),
             ("mask", "U8", [3], b"\x01\x00\x01"), ("empty", "F32", [0, 4], b"")],
            metadata={"activation": "relu", "parameterization": "ntk"}),
        "empty.safetensors": safetensors([]),
        "one.safetensors": safetensors([("w", "F64", [1], struct.pack("<d", 1.0))]),
        # Half precision, as PyTorch's .half() / .bfloat16() checkpoints store it (read as F32):
        # 1, -2, the smallest subnormal, infinity; bfloat16 1, pi rounded, NaN.
        "half.safetensors": safetensors(
            [("0.weight", "F16", [2, 2], struct.pack("<4H", 0x3C00, 0xC000, 0x0001, 0x7C00)),
             ("0.bias", "BF16", [3], struct.pack("<3H", 0x3F80, 0x4049, 0x7FC0))],
            metadata={"activation": "tanh"}),
    },
    "idx": {
        "u8_3d.idx": idx(0x08, [2, 3, 4], bytes(range(24))),
        "i8.idx": idx(0x09, [3], b"\xff\x7f\x80"),
        "i16.idx": idx(0x0B, [2], b"\xff\xfe\x01\x02"),
        "i32.idx": idx(0x0C, [2], struct.pack(">2i", -3, 70000)),
        "f32.idx": idx(0x0D, [1, 2], f32(1.5, -2, endian=">")),
        "f64.idx": idx(0x0E, [1], struct.pack(">d", 0.1)),
        "u8_3d.idx.gz": gz(idx(0x08, [2, 3, 4], bytes(range(24)))),
        "labels-idx1-ubyte.gz": gz(idx(0x08, [10], bytes(range(10)))),
        "two_members.gz": gz(idx(0x08, [4], b"")) + gz(b"\x01\x02\x03\x04"),
    },
}

for reader, files in SEEDS.items():
    folder = HERE / "corpus" / reader
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
