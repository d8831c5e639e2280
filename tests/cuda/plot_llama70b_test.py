#!/usr/bin/env python3
"""bench/kernels/plot_llama70b.py on a small hand-made result in llama70b_bench's JSON layout
(CTest cuda.plot_llama70b; no GPU needed): the three plots are written as PNG (and as SVG when
asked), the printed steps and roofline shares are the JSON's, and a file that is not such a
result is refused, naming what it lacks."""
import json
import os
import subprocess
import sys
import tempfile

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "kernels",
                    "plot_llama70b.py")
PLOTS = ("step_vs_batch", "throughput_vs_batch", "layer_gemms")


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=120)


def gemm(tp, batch, path, us):
    return {"tp": tp, "batch": batch, "path": path, "layer_us": us, "bytes": 4.5e8 + batch * 1e5,
            "tflops": 1.7e9 * batch / (us * 1e-6) / 1e12}


def result():
    return {
        "gpu": "Test GPU", "tp": 1, "date": "2026-12-03", "copy_tbps": 4.0, "bf16_tflops": 800.0,
        "step_ms_by_batch_graph": {"1": 11.0, "16": 22.0},
        "step_ms_by_batch_graph_greedy": {"16": 20.0, "1": 10.0},
        "roofline_step_ms_by_batch": {"1": 8.0, "16": 9.0},
        "layer_gemms": [gemm(1, b, p, us) for b, p, us in (
            (1, "w4_decode", 160.0), (16, "w4_decode", 330.0), (1, "w4_tiled", 190.0),
            (16, "w4_tiled", 200.0), (16, "w4_dequant_gemm", 1250.0), (1, "bf16_cublaslt", 450.0),
            (16, "bf16_cublaslt", 450.0), (1, "w4_decode_w8", 170.0))] + [gemm(2, 1, "w4_decode", 99.0)],
        "serving": {"requests": 40, "max_num_seqs": 16, "output_tokens_per_s": 500.0,
                    "of_roofline": 0.28},
    }


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.json")
        with open(path, "w") as f:
            json.dump(result(), f)
        prefix = os.path.join(tmp, "out")
        p = run(path, prefix)
        if p.returncode != 0:
            fail(f"exit {p.returncode}: {p.stderr}")
        for name in PLOTS:
            with open(f"{prefix}-{name}.png", "rb") as f:
                if f.read(8) != b"\x89PNG\r\n\x1a\n":
                    fail(f"{name}.png is not a PNG")
        # Sorted by batch (the JSON has 16 first), greedy step against the roofline's share.
        want = ["batch 1: 10.00 ms, roofline 8.00 ms, 80 %",
                "batch 16: 20.00 ms, roofline 9.00 ms, 45 %"]
        if p.stdout.splitlines() != want:
            fail(f"printed {p.stdout.splitlines()!r}, want {want!r}")

        p = run(path, os.path.join(tmp, "vector"), "svg")
        if p.returncode != 0 or not all(
                open(os.path.join(tmp, f"vector-{n}.svg")).read(200).lstrip().startswith("<?xml")
                for n in PLOTS):
            fail(f"svg: exit {p.returncode} {p.stderr}")

        bad = result()
        del bad["layer_gemms"], bad["copy_tbps"]
        with open(path, "w") as f:
            json.dump(bad, f)
        p = run(path, os.path.join(tmp, "bad"))
        if p.returncode == 0 or "lacks copy_tbps, layer_gemms" not in p.stderr:
            fail(f"a result without copy_tbps and layer_gemms: exit {p.returncode}, {p.stderr!r}")
        if os.path.exists(os.path.join(tmp, "bad-step_vs_batch.png")):
            fail("a refused result still drew a plot")
    print("ok: plot_llama70b.py draws the three plots, prints the JSON's steps, refuses a "
          "file that is not a result")


if __name__ == "__main__":
    main()
