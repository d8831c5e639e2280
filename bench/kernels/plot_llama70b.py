#!/usr/bin/env python3
"""Draws issue 17's plots from llama70b_bench's JSON (bench/results/llama70b-<gpu>-tp<N>.json,
the serving figures merged in by serving_bench.py --merge-into). The numbers are the JSON's own.
This script adds no measurement; it divides batch by step time to get tokens/s, and nothing else.

usage: plot_llama70b.py RESULT_JSON OUT_PREFIX [png|svg]

Writes OUT_PREFIX-step_vs_batch, -throughput_vs_batch and -layer_gemms, and prints per batch the
step (GPU greedy, the served path), its roofline and their ratio.
  step_vs_batch:       decode step ms against batch: the graph with the logits copied to the host,
                       the graph with GPU greedy (what the worker runs), and the roofline
                       (max(bytes / copy rate, FLOPs / bf16 rate), measured in the same run).
  throughput_vs_batch: output tokens/s against concurrency (the batch of a decode step):
                       batch / step for each, the roofline's, and the serving run's tokens/s at its
                       max_num_seqs.
  layer_gemms:         one layer's four projections at TP 1, µs against rows of x, for each path
                       (4-bit decode, tiled with exact group sums and with bf16 weights, dense
                       and bf16 cuBLASLt; a path the JSON lacks is left out), beside the 4-bit paths'
                       two floors: bytes over the copy rate, FLOPs over the bf16 rate.
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402

REQUIRED = ("gpu", "tp", "date", "copy_tbps", "bf16_tflops", "step_ms_by_batch_graph",
            "step_ms_by_batch_graph_greedy", "roofline_step_ms_by_batch", "layer_gemms")
# The sweep's decode-kernel grids (w4_decode_w8 ...) are not paths w4_matmul takes: left out.
PATHS = ("w4_decode", "w4_tiled", "w4_tiled_bf16w", "w4_wgmma", "w4_dequant_gemm", "bf16_cublaslt")


def by_batch(table):
    """{"16": ms, ...} -> [(16, ms), ...] sorted by batch."""
    return sorted((int(b), float(v)) for b, v in table.items())


def save(fig, prefix, name, fmt):
    fig.tight_layout()
    fig.savefig(f"{prefix}-{name}.{fmt}", dpi=120)
    plt.close(fig)


def finish(ax, r, what, xlabel, ylabel, legend_size=None):
    """The axes all three plots share: log-log, labelled, titled with the run, a grid, a legend."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"LLaMA-70B W4 g128, {r['gpu']}, TP {r['tp']} ({r['date']}): {what}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)


def step_vs_batch(r, prefix, fmt):
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label, style in (("step_ms_by_batch_graph", "graph, logits to the host", "o--"),
                              ("step_ms_by_batch_graph_greedy", "graph, GPU greedy (served)", "o-"),
                              ("roofline_step_ms_by_batch", "roofline", "k:")):
        pts = by_batch(r[key])
        ax.plot([b for b, _ in pts], [v for _, v in pts], style, label=label)
    finish(ax, r, "decode step", "batch (sequences in the decode step)", "step ms (context 128)")
    save(fig, prefix, "step_vs_batch", fmt)


def throughput_vs_batch(r, prefix, fmt):
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label, style in (("step_ms_by_batch_graph_greedy", "decode steps, GPU greedy", "o-"),
                              ("roofline_step_ms_by_batch", "roofline", "k:")):
        pts = by_batch(r[key])
        ax.plot([b for b, _ in pts], [1000.0 * b / ms for b, ms in pts], style, label=label)
    serving = r.get("serving")
    if serving:
        ax.plot([serving["max_num_seqs"]], [serving["output_tokens_per_s"]], "r*", markersize=12,
                label=f"serving: {serving['requests']} requests, up to {serving['max_num_seqs']} "
                      f"sequences ({100 * serving['of_roofline']:.0f} % of roofline)")
    finish(ax, r, "throughput", "concurrency (sequences decoding together)", "output tokens/s",
           legend_size=8)
    save(fig, prefix, "throughput_vs_batch", fmt)


def layer_gemms(r, prefix, fmt):
    rows = [g for g in r["layer_gemms"] if g["tp"] == 1]
    fig, ax = plt.subplots(figsize=(8, 5))
    for path in PATHS:
        pts = sorted((g["batch"], g["layer_us"]) for g in rows if g["path"] == path)
        if pts:
            ax.plot([b for b, _ in pts], [us for _, us in pts], "o-", label=path)
    # The two floors of a 4-bit path: its bytes (weights once + activations) over the copy rate,
    # its FLOPs over the bf16 rate (each row's FLOPs = tflops x time, as the benchmark wrote them).
    tiled = sorted((g["batch"], g) for g in rows if g["path"] == "w4_tiled")
    ax.plot([b for b, _ in tiled], [g["bytes"] / (r["copy_tbps"] * 1e12) * 1e6 for _, g in tiled],
            "k:", label="4-bit bytes / copy rate")
    ax.plot([b for b, _ in tiled],
            [g["tflops"] * g["layer_us"] / r["bf16_tflops"] for _, g in tiled], "k-.",
            label="FLOPs / bf16 rate")
    finish(ax, r, "one layer's projections by path", "rows of x", "µs per layer (4 projections)")
    save(fig, prefix, "layer_gemms", fmt)


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__)
    path, prefix = argv[1], argv[2]
    fmt = argv[3] if len(argv) == 4 else "png"
    with open(path) as f:
        r = json.load(f)
    missing = [k for k in REQUIRED if k not in r]
    if missing:
        sys.exit(f"plot_llama70b.py: {path} lacks {', '.join(missing)}: not llama70b_bench's JSON")
    step_vs_batch(r, prefix, fmt)
    throughput_vs_batch(r, prefix, fmt)
    layer_gemms(r, prefix, fmt)
    roof = dict(by_batch(r["roofline_step_ms_by_batch"]))
    for b, ms in by_batch(r["step_ms_by_batch_graph_greedy"]):
        print(f"batch {b}: {ms:.2f} ms, roofline {roof[b]:.2f} ms, {100 * roof[b] / ms:.0f} %")


if __name__ == "__main__":
    main(sys.argv)
