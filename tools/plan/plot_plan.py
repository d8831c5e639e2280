#!/usr/bin/env python3
"""Draws the capacity planner's plots from its JSON report (`plan --json FILE` or the plan.json
that `plan --plots DIR` writes). Every number comes from the report's "plot" section, which the
C++ planner computed; this script only draws, so the arithmetic has one home.

usage: plot_plan.py PLAN_JSON OUT_DIR [png|svg]

Writes kv_vs_context, kv_vs_batch, speculative_speedup and memory_by_precision in OUT_DIR.
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt  # noqa: E402

GIB = float(1 << 30)


def _save(fig, out_dir, name, fmt):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"{name}.{fmt}"), dpi=120)
    plt.close(fig)


def _capacity_lines(ax, capacity, tp, gpu_memory):
    """The KV pool a TP size leaves per GPU, and the whole GPU for scale."""
    for entry in capacity:
        if entry["tp"] == tp:
            ax.axhline(entry["kv_pool_bytes"] / GIB, color="red", linestyle="--",
                       label=f"KV pool per GPU ({entry['kv_pool_bytes'] / GIB:.1f} GiB)")
    ax.axhline(gpu_memory / GIB, color="gray", linestyle=":",
               label=f"GPU memory ({gpu_memory / GIB:.0f} GiB)")


def _tp_sizes(plot):
    return [entry["tp"] for entry in plot["capacity"]]


def plot_kv(plot, key, x_key, series_key, x_label, title, out_dir, name, fmt, log_x):
    tps = _tp_sizes(plot)
    cols = min(2, len(tps))
    rows = (len(tps) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(tps):]:
        ax.set_visible(False)
    xs = plot[key][x_key]
    for ax, tp in zip(axes.flat, tps):
        for s in plot[key]["series"]:
            if s["tp"] != tp:
                continue
            ax.plot(xs, [b / GIB for b in s["kv_bytes"]], marker="o", markersize=3,
                    label=f"{series_key} {s[series_key]}")
        _capacity_lines(ax, plot["capacity"], tp, plot["gpu_memory_bytes"])
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel("KV cache per GPU (GiB)")
        ax.set_title(f"TP {tp}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\n{plot['title']}", fontsize=10)
    _save(fig, out_dir, name, fmt)


def plot_speculative(plot, out_dir, fmt):
    spec = plot["speculative"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rates = [a * 100 for a in spec["acceptance"]]
    for s in spec["series"]:
        ax.plot(rates, s["speedup"], linewidth=2, label=f"K = {s['k']}")
    chosen = spec["chosen"]
    ax.plot([chosen["acceptance"] * 100], [chosen["speedup"]], "k*", markersize=12,
            label=f"a = {chosen['acceptance']:.2f}, K = {chosen['k']}: {chosen['speedup']:.2f}x")
    ax.axhline(1.0, color="red", linestyle="--", label="plain decoding")
    ax.set_xlabel("acceptance rate a (%)")
    ax.set_ylabel("speedup (E[accepted] + 1) / (1 + K c)")
    ax.set_title(f"Speculative decoding, draft cost c = {spec['draft_cost']:.3f}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_dir, "speculative_speedup", fmt)


def plot_precision(plot, out_dir, fmt):
    rows = plot["precision"]
    formats = list(dict.fromkeys(r["format"] for r in rows))
    tps = list(dict.fromkeys(r["tp"] for r in rows))
    width = 0.8 / len(tps)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, tp in enumerate(tps):
        values = []
        for f in formats:
            match = [r for r in rows if r["format"] == f and r["tp"] == tp]
            size = match[0]["bytes_per_gpu"] if match else None
            values.append(size / GIB if size is not None else 0.0)  # 0: cannot shard
        xs = [x + (i - (len(tps) - 1) / 2) * width for x in range(len(formats))]
        bars = ax.bar(xs, values, width, label=f"TP {tp}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(plot["gpu_memory_bytes"] / GIB, color="red", linestyle="--",
               label=f"GPU memory ({plot['gpu_memory_bytes'] / GIB:.0f} GiB)")
    ax.set_xticks(range(len(formats)))
    ax.set_xticklabels(formats)
    ax.set_ylabel("weights per GPU (GiB)")
    ax.set_title(f"Weight memory by precision\n{plot['model_gpu']}", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_dir, "memory_by_precision", fmt)


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    plan_path, out_dir = argv[1], argv[2]
    fmt = argv[3] if len(argv) == 4 else "png"
    if fmt not in ("png", "svg"):
        sys.stderr.write(f"plot_plan.py: format must be png or svg, got {fmt}\n")
        return 2
    with open(plan_path, encoding="utf-8") as f:
        plot = json.load(f)["plot"]
    os.makedirs(out_dir, exist_ok=True)
    plot_kv(plot, "kv_vs_context", "contexts", "batch", "context (tokens)",
            "KV cache per GPU against context", out_dir, "kv_vs_context", fmt, log_x=True)
    plot_kv(plot, "kv_vs_batch", "batches", "context", "batch (sequences)",
            "KV cache per GPU against batch", out_dir, "kv_vs_batch", fmt, log_x=True)
    plot_speculative(plot, out_dir, fmt)
    plot_precision(plot, out_dir, fmt)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
