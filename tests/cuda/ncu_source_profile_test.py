#!/usr/bin/env python3
"""tools/gpu/ncu_source_profile.py on a small export in Nsight Compute's --page source --csv
layout (CTest cuda.ncu_source_profile; no GPU needed): instructions per unit, stall shares, the
opcode mix, the ranking, the TSV, and a clear refusal of a file that is not such an export."""
import csv
import os
import subprocess
import sys
import tempfile

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "gpu",
                    "ncu_source_profile.py")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=60)


def main():
    header = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Instructions Executed",
              "stall_long_sb", "stall_wait", "stall_long_sb (Not Issued)"]
    rows = [  # 120 executions over 10 units of work: 12 per unit
        ["0x0", "LOP3.LUT R1, R2, 0xf000f, R3, 0xea, !PT", "10", "40", "0", "10", "0"],
        ["0x10", "@P0 BRA 0x100", "0", "20", "0", "0", "0"],
        ["0x20", "IMAD.MOV.U32 R4, RZ, RZ, R5", "30", "20", "27", "3", "9"],
        ["0x30", "LOP3.LUT R6, R7, 0xf000f, R3, 0xea, !PT", "0", "40", "0", "0", "0"],
    ]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "source.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f, quoting=csv.QUOTE_ALL)
            w.writerow(["Kernel Name", "void k<1>(int)"])
            w.writerow(header)
            w.writerows(rows)
        tsv = os.path.join(d, "out.tsv")
        r = run(path, "--units", "10", "--tsv", tsv, "--top", "2")
        if r.returncode != 0:
            fail(f"exit {r.returncode}: {r.stderr}")
        out = r.stdout
        for want in ("instructions per unit: 12.0; stall samples: 40",
                     "long_sb                   27   67.5 %",
                     "wait                      13   32.5 %",
                     "opcodes per unit: LOP3 8.0, BRA 2.0, IMAD 2.0"):
            if want not in out:
                fail(f"missing {want!r} in:\n{out}")
        ranked = out.split("instructions with the most samples")[1].splitlines()[1:]
        if len(ranked) != 2 or "IMAD.MOV.U32" not in ranked[0] or "long_sb:27,wait:3" not in ranked[0] \
                or "LOP3.LUT R1" not in ranked[1]:
            fail(f"ranking {ranked}")
        lines = open(tsv).read().splitlines()
        if len(lines) != 5 or lines[3].split("\t")[:4] != ["2", "2.000", "30", "long_sb:27,wait:3"]:
            fail(f"tsv {lines}")
        bad = os.path.join(d, "bad.csv")
        open(bad, "w").write("a,b\n1,2\n3,4\n")
        r = run(bad, "--units", "10")
        if r.returncode == 0 or "not an ncu --page source --csv export" not in r.stderr:
            fail(f"a non-export was accepted: exit {r.returncode}, {r.stderr!r}")
        r = run(path, "--units", "0")
        if r.returncode == 0 or "--units must be positive" not in r.stderr:
            fail(f"--units 0 was accepted: exit {r.returncode}, {r.stderr!r}")
    print("ok: per-unit counts, stall shares, opcode mix, ranking, TSV and both refusals")


if __name__ == "__main__":
    main()
