#!/usr/bin/env python3
"""Condenses Nsight Compute's per-instruction export of one kernel into where it waits.

  ncu -i REPORT --page source --csv --print-source sass > source.csv
  ncu_source_profile.py source.csv --units N [--tsv OUT.tsv]

--units: what one unit of work is for the kernel (the W4 decode kernel: its code tiles, n * k /
1024), so that executions print per unit. Prints the stall reasons over all samples, the opcode
mix per unit and the instructions holding the most samples; --tsv writes every instruction
(executions per unit, samples, its two largest stall reasons, the SASS).
"""
import argparse
import collections
import csv
import sys


def load(path):
    rows = list(csv.reader(open(path, newline="")))
    # Row 0 names the kernel; row 1 is the header.
    if len(rows) < 3 or "Source" not in rows[1]:
        sys.exit(f"{path}: not an ncu --page source --csv export (no 'Source' column in row 2)")
    header = rows[1]
    return rows[0], header, [dict(zip(header, r)) for r in rows[2:]]


def number(row, key):
    v = row.get(key, "")
    return int(v) if v not in ("", "-") else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("--units", type=float, required=True, help="units of work in the profiled launch")
    p.add_argument("--tsv", help="write every instruction here")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    if a.units <= 0:
        p.error("--units must be positive")
    kernel, header, rows = load(a.csv)
    stalls = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    samples_key, exec_key = "Warp Stall Sampling (All Samples)", "Instructions Executed"
    samples = sum(number(r, samples_key) for r in rows)
    executed = sum(number(r, exec_key) for r in rows)
    print(f"kernel: {','.join(x for x in kernel if x)[:160]}")
    print(f"instructions per unit: {executed / a.units:.1f}; stall samples: {samples}")
    by_reason = collections.Counter()
    for r in rows:
        for s in stalls:
            by_reason[s[len("stall_"):]] += number(r, s)
    for reason, v in by_reason.most_common():
        if v:
            print(f"  {reason:20s} {v:7d}  {100 * v / max(samples, 1):5.1f} %")
    mix = collections.Counter()
    for r in rows:
        words = r["Source"].split()
        if words and words[0].startswith("@"):
            words = words[1:]
        if words:
            mix[words[0].split(".")[0]] += number(r, exec_key)
    print("opcodes per unit: " + ", ".join(f"{op} {v / a.units:.1f}" for op, v in mix.most_common(16)))

    def top_reasons(r):
        best = sorted(((number(r, s), s[len("stall_"):]) for s in stalls), reverse=True)[:2]
        return ",".join(f"{name}:{v}" for v, name in best if v)
    print("instructions with the most samples (index, per unit, samples, reasons, SASS):")
    ranked = sorted(range(len(rows)), key=lambda i: -number(rows[i], samples_key))[: a.top]
    for i in ranked:
        r = rows[i]
        print(f"  {i:5d} {number(r, exec_key) / a.units:7.3f} {number(r, samples_key):6d} "
              f"{top_reasons(r):32s} {r['Source'].strip()}")
    if a.tsv:
        with open(a.tsv, "w") as f:
            f.write("index\tper_unit\tsamples\ttop_stalls\tsass\n")
            for i, r in enumerate(rows):
                f.write(f"{i}\t{number(r, exec_key) / a.units:.3f}\t{number(r, samples_key)}\t"
                        f"{top_reasons(r)}\t{r['Source'].strip()}\n")


if __name__ == "__main__":
    main()
