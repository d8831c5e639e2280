#!/usr/bin/env python3
"""Speculative decoding in the served binary: tokens/s with and without speculation on the demo
pair under mpirun (CPU), with the seed's prediction (E[accepted] + 1) / (1 + K c) from the
acceptance and the step costs the same run measured. A benchmark, not a test.

    /usr/bin/python3 bench/speculative/service_bench.py --build build \
        --out bench/results/speculative-service-cpu

Each configuration serves the same batch (held-out prompts, greedy, ignore_eos) with
max_num_seqs = --concurrency, --reps times interleaved; the fastest run is kept. tokens/s is the
coordinator's own figure ("done: ... tokens in X s"), the served batch from submission to the
last result. a (per-token acceptance), t_target and t_draft (seconds per forward pass) come from
the worker's shutdown line ("speculative: ..."): c = t_draft / t_target.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port(count):
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise SystemExit("no free ports")


def prompts(n, length):
    ids = json.load(open(os.path.join(ROOT, "models/eval/heldout_ids.json")))
    ids = ids["ids"] if isinstance(ids, dict) else ids
    flat = [t for seq in ids for t in seq] if ids and isinstance(ids[0], list) else ids
    step = max(1, (len(flat) - length) // n)
    return [[8176] + flat[i * step:i * step + length - 1] for i in range(n)]


def run(args, workdir, name, tp, spec, requests):
    base = free_port(tp + 4)
    cfg = os.path.join(workdir, name + ".toml")
    lines = [f'model = "{os.path.join(ROOT, "models/kjv-llama")}"', f"tp = {tp}",
             "[kv]", "num_blocks = 256", "block_size = 16",
             "[scheduler]", f"max_num_seqs = {args.concurrency}", "max_num_batched_tokens = 256",
             "max_model_len = 512",
             "[ports]", f"metrics = {base}", f"zmq = {base + tp + 1}", f"http = {base + tp + 2}"]
    if spec:
        lines.append("[speculative]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in spec.items()]
    open(cfg, "w").write("\n".join(lines) + "\n")
    out = os.path.join(workdir, name + ".jsonl")
    cmd = ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "1",
           os.path.join(args.build, "coordinator/runtime/coordinator"), "--config", cfg,
           "--requests", requests, "--output", out, ":", "-np", str(tp),
           os.path.join(args.build, "worker/worker")]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OMPI_MCA_btl_vader_single_copy_mechanism="none")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    log = p.stdout + p.stderr
    if p.returncode != 0:
        sys.exit(f"{name}: mpirun exited {p.returncode}\n{log[-5000:]}")
    m = re.search(r"done: (\d+) of (\d+) request\(s\) finished, (\d+) tokens in ([\d.]+) s", log)
    r = {"tokens": int(m.group(3)), "seconds": float(m.group(4)),
         "outputs": {j["id"]: j["output_ids"] for j in map(json.loads, open(out))}}
    s = re.search(r"\[worker 1\] \[info\] speculative: (\d+) verifies, (\d+) draft tokens proposed, "
                  r"(\d+) accepted \(per-token acceptance ([\d.]+), ([\d.]+) tokens/verify\); target "
                  r"([\d.]+) s in (\d+) passes, draft ([\d.]+) s in (\d+) passes", log)
    if s:
        r.update(verifies=int(s.group(1)), proposed=int(s.group(2)), accepted=int(s.group(3)),
                 a=float(s.group(4)), tokens_per_verify=float(s.group(5)),
                 t_target=float(s.group(6)) / int(s.group(7)),
                 t_draft=float(s.group(8)) / int(s.group(9)) if int(s.group(9)) else 0.0)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/speculative-service-cpu"))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS per rank")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tp", default="1,2")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="spec_service_bench_")
    requests = os.path.join(workdir, "requests.jsonl")
    with open(requests, "w") as f:
        for i, ids in enumerate(prompts(args.prompts, 33)):
            f.write(json.dumps({"id": f"p{i}", "prompt_ids": ids, "max_tokens": args.max_tokens,
                                "temperature": 0.0, "ignore_eos": True}) + "\n")
    draft = os.path.join(ROOT, "models/kjv-llama-draft")
    configs = []
    for tp in [int(t) for t in args.tp.split(",")]:
        configs.append((tp, "plain", 0, None, None))
        for k in (2, 4):
            placements = ["every_rank", "rank_zero"] if tp > 1 else ["every_rank"]
            for pl in placements:
                configs.append((tp, "draft", k, pl, {"method": "draft", "draft_model": draft,
                                                     "num_speculative_tokens": k,
                                                     "draft_placement": pl}))
            configs.append((tp, "ngram", k, None, {"method": "ngram", "num_speculative_tokens": k}))
    load_before = os.getloadavg()[0]
    best = {}
    for rep in range(args.reps):
        for c in configs:
            tp, method, k, pl, spec = c
            name = f"tp{tp}_{method}_k{k}_{pl or ''}_r{rep}"
            r = run(args, workdir, name, tp, spec, requests)
            key = (tp, method, k, pl)
            if key not in best or r["seconds"] < best[key]["seconds"]:
                best[key] = r
            print(f"{name}: {r['tokens'] / r['seconds']:.1f} tok/s", flush=True)
    rows = []
    for (tp, method, k, pl), r in best.items():
        plain = best[(tp, "plain", 0, None)]
        row = {"tp": tp, "method": method, "K": k, "placement": pl,
               "tokens": r["tokens"], "seconds": r["seconds"],
               "tokens_per_s": r["tokens"] / r["seconds"],
               "speedup": (r["tokens"] / r["seconds"]) / (plain["tokens"] / plain["seconds"]),
               "greedy_same": r["outputs"] == plain["outputs"]}
        if "a" in r:
            a, c = r["a"], (r["t_draft"] / r["t_target"] if r["t_target"] else 0.0)
            expected = sum(a ** j for j in range(1, k + 1))
            row.update(a=a, acceptance=r["accepted"] / r["proposed"],
                       tokens_per_verify=r["tokens_per_verify"], t_target_ms=r["t_target"] * 1e3,
                       t_draft_ms=r["t_draft"] * 1e3, c=c,
                       seed_prediction=(expected + 1) / (1 + k * c))
        rows.append(row)
    result = {"generated_by": "bench/speculative/service_bench.py", "prompts": args.prompts,
              "prompt_tokens": 33, "max_tokens": args.max_tokens, "concurrency": args.concurrency,
              "omp_threads_per_rank": args.threads, "reps": args.reps,
              "load_average": [load_before, os.getloadavg()[0]], "rows": rows}
    json.dump(result, open(args.out + ".json", "w"), indent=1)
    md = ["# Speculative decoding in the served binary (CPU, mpirun)", "",
          f"Generated by `bench/speculative/service_bench.py` (do not edit by hand; rerun it). "
          f"`mpirun -np 1 coordinator --requests ... : -np TP worker` serving `models/kjv-llama` "
          f"(draft `models/kjv-llama-draft`): {args.prompts} held-out prompts of 33 tokens, "
          f"{args.max_tokens} greedy tokens each (ignore_eos), max_num_seqs = {args.concurrency}, "
          f"OMP_NUM_THREADS = {args.threads} per rank; {args.reps} interleaved runs per "
          f"configuration, the fastest kept. Load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after (the machine is shared).", "",
          "- **tok/s**: the coordinator's figure (batch submitted to last result); **speedup** over "
          "plain at the same tp.",
          "- **a**: per-token acceptance (worker's ExecutorCounters: accepted / (accepted + "
          "rejections)); **c** = t_draft / t_target, seconds per draft pass over seconds per "
          "target pass on TP rank 0.",
          "- **seed** = (E[accepted] + 1) / (1 + K c), E[accepted] = a + ... + a^K (ngram: c = 0).",
          "",
          "| tp | method | K | draft on | tok/s | speedup | seed | a | acc/prop | tokens/verify | "
          "t_target ms | t_draft ms | c | greedy same |",
          "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        f = lambda key, fmt="{:.2f}": fmt.format(r[key]) if key in r else ""
        md.append(f"| {r['tp']} | {r['method']} | {r['K']} | {r['placement'] or ''} | "
                  f"{r['tokens_per_s']:.1f} | {r['speedup']:.2f} | {f('seed_prediction')} | "
                  f"{f('a', '{:.3f}')} | {f('acceptance', '{:.3f}')} | {f('tokens_per_verify')} | "
                  f"{f('t_target_ms')} | {f('t_draft_ms')} | {f('c', '{:.3f}')} | "
                  f"{'yes' if r['greedy_same'] else 'NO'} |")
    open(args.out + ".md", "w").write("\n".join(md) + "\n")
    shutil.rmtree(workdir)
    print("\n".join(md))


if __name__ == "__main__":
    main()
