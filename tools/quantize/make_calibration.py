#!/usr/bin/env python3
"""Write the calibration text of tools/quantize (AWQ and GPTQ) for the demo model kjv-llama.

Input: tools/train/data/chapters.jsonl, made by tools/train/prepare_corpus.py from Debian's
bible-kjv-text (`apt-get install bible-kjv && python3 tools/train/prepare_corpus.py`).

Output (default tools/train/data/calibration.txt, next to chapters.jsonl and, like it, not
committed): every STRIDE-th chapter of the *train* split, in Bible order, starting with the
first (Genesis 1), texts concatenated. Only training chapters are used: none of the held-out
(test) or validation books, so the perplexity measured on models/eval/heldout.txt stays
held-out for the quantized models too. Stride 8 spreads the sample over the whole Bible
(Genesis 1, Genesis 9, ..., Revelation) instead of the first books only.

    python3 tools/quantize/make_calibration.py [--stride 8] [--out PATH]
"""
import argparse
import hashlib
import json
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chapters", default=os.path.join(ROOT, "tools/train/data/chapters.jsonl"))
    ap.add_argument("--stride", type=int, default=8)
    ap.add_argument("--out", default=os.path.join(ROOT, "tools/train/data/calibration.txt"))
    args = ap.parse_args()
    train = []
    with open(args.chapters, encoding="utf-8") as f:
        for line in f:
            c = json.loads(line)
            if c["split"] == "train":
                train.append(c)
    picked = train[:: args.stride]
    text = "".join(c["text"] for c in picked)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    books = sorted({c["book"] for c in picked}, key=lambda b: [c["book"] for c in picked].index(b))
    print(f"{args.out}: {len(picked)} of {len(train)} train chapters (stride {args.stride}), "
          f"{len(books)} books, {len(text)} bytes, sha256 "
          f"{hashlib.sha256(text.encode()).hexdigest()[:16]}")
    print(f"first: {picked[0]['book']} {picked[0]['chapter']}, last: {picked[-1]['book']} "
          f"{picked[-1]['chapter']}")


if __name__ == "__main__":
    main()
