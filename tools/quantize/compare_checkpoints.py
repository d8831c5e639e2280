#!/usr/bin/env python3
"""How far apart two quantized checkpoints of the same model and layout are: the share of
4/8-bit codes (qweight fields) and zero points (qzeros fields) that differ, of fp16 scales that
differ and their largest relative difference, and whether g_idx agrees. Made to compare the
quantize tool's --device cpu and --device cuda outputs (docs/quantization.md, "GPU"); the
fields are compared bit-field by bit-field, so it holds for the GPTQ and the AWQ packing alike.
Pure Python (no numpy): it runs on any machine with python3.

    python3 tools/quantize/compare_checkpoints.py DIR_A DIR_B [--json OUT]
Exit status 0; the caller judges the numbers.
"""
import argparse
import array
import json
import os
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return header, data


def tensor(header, data, name):
    meta = header[name]
    code = {"I32": "i", "F16": "H"}[meta["dtype"]]
    begin, end = meta["data_offsets"]
    a = array.array(code)
    a.frombytes(data[begin:end])
    if sys.byteorder != "little":
        a.byteswap()
    return a


def fp16(bits):
    return struct.unpack("<e", struct.pack("<H", bits))[0]


def differing_fields(a, b, width):
    mask, count = (1 << width) - 1, 0
    for x, y in zip(a, b):
        d = (x ^ y) & 0xFFFFFFFF
        while d:
            count += (d & mask) != 0
            d >>= width
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--json")
    args = ap.parse_args()
    bits = json.load(open(os.path.join(args.a, "config.json")))["quantization_config"]["bits"]
    ha, da = read_safetensors(os.path.join(args.a, "model.safetensors"))
    hb, db = read_safetensors(os.path.join(args.b, "model.safetensors"))
    fields_per_word = 32 // bits
    totals = {"codes": 0, "codes_differing": 0, "zeros": 0, "zeros_differing": 0, "scales": 0,
              "scales_differing": 0, "scale_max_rel_diff": 0.0, "g_idx_differing": 0,
              "linears": 0}
    for name in sorted(k for k in ha if k.endswith(".qweight")):
        base = name[: -len(".qweight")]
        totals["linears"] += 1
        for part, key in (("qweight", "codes"), ("qzeros", "zeros")):
            a, b = tensor(ha, da, base + "." + part), tensor(hb, db, base + "." + part)
            totals[key] += len(a) * fields_per_word
            totals[key + "_differing"] += differing_fields(a, b, bits)
        sa, sb = tensor(ha, da, base + ".scales"), tensor(hb, db, base + ".scales")
        totals["scales"] += len(sa)
        for x, y in zip(sa, sb):
            if x != y:
                totals["scales_differing"] += 1
                fx, fy = fp16(x), fp16(y)
                totals["scale_max_rel_diff"] = max(totals["scale_max_rel_diff"],
                                                   abs(fx - fy) / max(abs(fx), 1e-30))
        if base + ".g_idx" in ha:
            ga, gb = tensor(ha, da, base + ".g_idx"), tensor(hb, db, base + ".g_idx")
            totals["g_idx_differing"] += sum(x != y for x, y in zip(ga, gb))
    for key in ("codes", "zeros", "scales"):
        totals[key + "_differing_share"] = totals[key + "_differing"] / max(totals[key], 1)
    print("%d linears: codes differing %d of %d (%.2e), zeros %d of %d, scales %d of %d "
          "(max relative difference %.3g), g_idx entries differing %d"
          % (totals["linears"], totals["codes_differing"], totals["codes"],
             totals["codes_differing_share"], totals["zeros_differing"], totals["zeros"],
             totals["scales_differing"], totals["scales"], totals["scale_max_rel_diff"],
             totals["g_idx_differing"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(totals, f, indent=2)


if __name__ == "__main__":
    main()
