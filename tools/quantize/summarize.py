#!/usr/bin/env python3
"""Summarise tools/quantize/quality_report.sh's output folder: a markdown table (perplexity,
change against bf16, bytes of the linears and of the whole checkpoint, quantization time) on
stdout, and the same numbers as JSON (default bench/results/quant-kjv-llama.json).

    python3 tools/quantize/summarize.py /tmp/kjv-quant [--json PATH]
"""
import argparse
import glob
import json
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# bf16 kjv-llama (models/README.md): every projection of the 6 layers, and the whole file.
BF16_LINEAR_BYTES = 6 * 2 * (256 * 256 + 2 * 128 * 256 + 256 * 256 + 3 * 768 * 256)
ORDER = ["bf16", "rtn-gptq-w8g128", "gptq-w8g128", "rtn-gptq-w4g128", "gptq-w4g128",
         "gptq-w4g128-descact", "rtn-awq-w4g128", "awq-w4g128", "rtn-gptq-w4gall",
         "gptq-w4gall-descact"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench/results/quant-kjv-llama.json"))
    ap.add_argument("--transformers", action="append", default=[],
                    help="output of check_with_transformers.py to merge (repeatable)")
    args = ap.parse_args()
    checked, check_env = {}, None
    for path in args.transformers:
        c = json.load(open(path))
        checked.update({k: v["perplexity"] for k, v in c["models"].items()})
        check_env = {"script": "tools/quantize/check_with_transformers.py", "torch": c["torch"],
                     "transformers": c["transformers"], "device": c["device"]}
    rows = {}
    for p in glob.glob(os.path.join(args.out_dir, "*.perplexity.json")):
        name = os.path.basename(p)[: -len(".perplexity.json")]
        ppl = json.load(open(p))
        row = {"name": name, "perplexity": ppl["perplexity"], "nll_per_token":
               ppl["nll_total"] / ppl["tokens"], "windows": ppl["windows"],
               "tokens": ppl["tokens"]}
        q = os.path.join(args.out_dir, name + ".quantize.json")
        if os.path.exists(q):
            r = json.load(open(q))
            row.update({"method": r["method"], "format": r["format"], "bits": r["bits"],
                        "group_size": r["group_size"], "sym": r["sym"], "desc_act": r["desc_act"],
                        "file_bytes": r["sizes"]["file_bytes"],
                        "linear_bytes": r["sizes"]["linear_bytes"],
                        "other_bytes": r["sizes"]["other_bytes"],
                        "quantize_seconds": r["quantize_seconds"]})
            if r["method"] == "awq":
                row["awq_alphas"] = [{k: v.get("alpha") for k, v in layer.items()
                                      if isinstance(v, dict)} for layer in r["layers"]]
        else:
            model = os.path.join(ROOT, "models/kjv-llama/model.safetensors")
            row.update({"method": "none", "format": "bf16", "bits": 16,
                        "file_bytes": os.path.getsize(model),
                        "linear_bytes": BF16_LINEAR_BYTES})
        if name in checked:
            row["perplexity_transformers"] = checked[name]
        rows[name] = row
    base = rows.get("bf16")
    names = [n for n in ORDER if n in rows] + sorted(n for n in rows if n not in ORDER)
    print("| variant | perplexity | vs bf16 | transformers | linears (bytes) | linears vs bf16 | "
          "file (bytes) | file vs bf16 | quantize (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        r = rows[n]
        d = f"{r['perplexity'] - base['perplexity']:+.2f} ({100 * (r['perplexity'] / base['perplexity'] - 1):+.1f} %)" if base else ""
        lin = f"{base['linear_bytes'] / r['linear_bytes']:.2f}x smaller" if base else ""
        fil = f"{base['file_bytes'] / r['file_bytes']:.2f}x smaller" if base else ""
        qs = f"{r['quantize_seconds']:.0f}" if "quantize_seconds" in r else ""
        tf = f"{r['perplexity_transformers']:.4f}" if "perplexity_transformers" in r else ""
        print(f"| {n} | {r['perplexity']:.4f} | {d} | {tf} | {r['linear_bytes']:,} | {lin} | "
              f"{r['file_bytes']:,} | {fil} | {qs} |")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"model": "models/kjv-llama", "text": "models/eval/heldout.txt",
                   "protocol": "models/eval/perplexity.json (59 windows of 256 tokens)",
                   "calibration": "tools/train/data/calibration.txt (make_calibration.py "
                                  "--stride 8), 128 windows of 512 tokens",
                   "transformers_check": check_env,
                   "variants": [rows[n] for n in names]}, f, indent=2)
        f.write("\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
