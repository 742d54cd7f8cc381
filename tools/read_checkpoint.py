#!/usr/bin/env python3
"""Reads a moe4j / Hugging Face checkpoint folder with the standard library only (json + struct).

Usage: python3 tools/read_checkpoint.py CHECKPOINT_DIR
Prints one JSON object: {"config": {...}, "tensors": {name: {"dtype", "shape", "file", "first", "sum"}}}
where "first" holds up to the first 8 values (as floats) and "sum" the sum of all values.
It exists so that anyone can check what moe4j wrote without moe4j (or numpy, or torch).
"""
import json
import os
import struct
import sys

SIZES = {"F32": 4, "BF16": 2, "F16": 2}


def values(dtype, raw):
    n = len(raw) // SIZES[dtype]
    if dtype == "F32":
        return list(struct.unpack("<%df" % n, raw))
    if dtype == "F16":
        return list(struct.unpack("<%de" % n, raw))
    # bf16 is the upper half of a float32
    return [struct.unpack("<f", b"\x00\x00" + raw[2 * i:2 * i + 2])[0] for i in range(n)]


def read_file(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
        start = 8 + n
        out = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            vals = values(entry["dtype"], f.read(end - begin))
            out[name] = {"dtype": entry["dtype"], "shape": entry["shape"], "file": os.path.basename(path),
                         "first": vals[:8], "sum": sum(vals)}
        return out


def read_checkpoint(folder):
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(read_file(os.path.join(folder, name)))
    return {"config": config, "tensors": tensors}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    json.dump(read_checkpoint(sys.argv[1]), sys.stdout, indent=1)
