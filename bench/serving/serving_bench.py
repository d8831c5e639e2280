#!/usr/bin/env python3
"""Issue 17 (d): a serving run through the whole coordinator on the GPU, LLaMA-3.1-70B shape.

    python3 bench/serving/serving_bench.py --coordinator C --worker W --workdir /tmp/serving \
        --merge-into llama70b-h200-tp1.json --md serving.md [--requests 1000] [--tp 1]

`mpirun -np 1 coordinator --requests R --output O : -np TP worker` serves a fixed synthetic
workload (seeded: prompt lengths uniform in [--prompt-min, --prompt-max] of random token ids,
output lengths uniform in [--output-min, --output-max], greedy, ignore_eos), every request
submitted at once (an offline-throughput run: TTFT includes the queue). The model directory holds
only the 70B config.json; the workers make random weights of its shape on the GPU
(`weights = "random-w4g128"`). Reported: output tokens/s and requests/s over the coordinator's
serving time ("done: ... in X s"), TTFT and TPOT p50/p99 from the result lines (ttft_s,
latency_s), and the prediction of the step-time roofline for the batch the KV pool and
max_num_seqs allow (ceilings from --merge-into, the llama70b_bench JSON of the same device run):
  step(B) = max((weights + B * context * KV bytes/token) / copy bandwidth, 2 * params * B / bf16 rate)
  s per output token = step(B) / B + (mean prompt / mean output) * 2 * params / bf16 rate (prefill)
A benchmark, not a test: it fails only when the service does.
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time

LLAMA31_70B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False, "bos_token_id": 128000, "eos_token_id": [128001, 128009],
    "torch_dtype": "bfloat16", "attention_bias": False, "mlp_bias": False,
}


def percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def linear_params(c):
    h, f, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    qkv = h * (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * d
    layer = qkv + c["num_attention_heads"] * d * h + 2 * h * f + f * h
    return c["num_hidden_layers"] * layer + c["vocab_size"] * h  # + the LM head


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mpiexec", default="mpirun")
    p.add_argument("--mpiexec-flags", default="--oversubscribe;--allow-run-as-root")
    p.add_argument("--coordinator", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--weights", default="random-w4g128")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prompt-min", type=int, default=128)
    p.add_argument("--prompt-max", type=int, default=1024)
    p.add_argument("--output-min", type=int, default=64)
    p.add_argument("--output-max", type=int, default=512)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=480)
    p.add_argument("--merge-into", help="llama70b_bench JSON: ceilings in, 'serving' written")
    p.add_argument("--md", help="markdown table out")
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    model = os.path.join(args.workdir, "llama31-70b-shape")
    os.makedirs(model, exist_ok=True)
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump(LLAMA31_70B, f, indent=1)
    rng = random.Random(args.seed)
    requests = os.path.join(args.workdir, "requests.jsonl")
    specs = []
    with open(requests, "w") as f:
        for i in range(args.requests):
            n_in = rng.randint(args.prompt_min, args.prompt_max)
            n_out = rng.randint(args.output_min, args.output_max)
            ids = [rng.randrange(128000) for _ in range(n_in)]
            specs.append((n_in, n_out))
            f.write(json.dumps({"id": f"r{i}", "prompt_ids": ids, "max_tokens": n_out,
                                "ignore_eos": True, "temperature": 0.0}) + "\n")
    config = os.path.join(args.workdir, "serving.toml")
    max_len = args.prompt_max + args.output_max
    with open(config, "w") as f:
        f.write(f'model = "{model}"\ntp = {args.tp}\ndevice = "cuda"\nweights = "{args.weights}"\n'
                f"[kv]\nblock_size = 16\nmemory_fraction = 0.9\n"
                f"[scheduler]\nmax_num_seqs = {args.max_num_seqs}\n"
                f"max_num_batched_tokens = {args.max_num_batched_tokens}\nmax_model_len = {max_len}\n"
                f"[ports]\nmetrics = 0\n")
    output = os.path.join(args.workdir, "outputs.jsonl")
    flags = [x for x in args.mpiexec_flags.split(";") if x]
    cmd = ([args.mpiexec] + flags + ["-np", "1", args.coordinator, "--config", config,
                                     "--requests", requests, "--output", output,
                                     ":", "-np", str(args.tp), args.worker])
    env = dict(os.environ, OMP_NUM_THREADS="4", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    start = time.monotonic()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
        log, rc = run.stdout + run.stderr, run.returncode
    except subprocess.TimeoutExpired as e:
        log = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        rc = "timeout"
    wall = time.monotonic() - start
    with open(os.path.join(args.workdir, "serving.log"), "w") as f:
        f.write(log)
    records = [json.loads(line) for line in open(output)] if os.path.exists(output) else []
    done = re.search(r"done: (\d+) of (\d+) request\(s\) finished, (\d+) tokens in ([\d.]+) s", log)
    if rc != 0 or not done or len(records) != args.requests:
        print(log[-6000:])
        sys.exit(f"serving run failed: mpirun {rc}, {len(records)} of {args.requests} results "
                 f"after {wall:.0f} s")
    seconds = float(done.group(4))
    out_tokens = sum(r["output_tokens"] for r in records)
    ttft = [r["ttft_s"] for r in records]
    tpot = [(r["latency_s"] - r["ttft_s"]) / (r["output_tokens"] - 1) for r in records
            if r["output_tokens"] > 1]
    blocks = [int(m) for m in re.findall(r"KV \d+/(\d+) blocks", log)]
    kv_blocks = max(blocks) if blocks else None
    # Tensor-parallel rank 0's steps: time in them against the time since its first step began
    # (the rest is the coordinator, the control channel and waiting).
    busy = re.search(r"\[worker 1\] .*after (\d+) steps \(([\d.]+) s executing them, ([\d.]+) s "
                     r"since the first began\)", log)

    result = {"requests": args.requests, "seed": args.seed, "tp": args.tp, "weights": args.weights,
              "prompt_tokens": [args.prompt_min, args.prompt_max],
              "output_tokens": [args.output_min, args.output_max],
              "max_num_seqs": args.max_num_seqs,
              "max_num_batched_tokens": args.max_num_batched_tokens, "kv_blocks": kv_blocks,
              "seconds": seconds, "output_tokens_per_s": out_tokens / seconds,
              "requests_per_s": args.requests / seconds,
              "ttft_s": {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99)},
              "tpot_s": {"p50": percentile(tpot, 50), "p99": percentile(tpot, 99)}}
    if busy:
        result["worker_steps"] = {"steps": int(busy.group(1)), "busy_s": float(busy.group(2)),
                                  "since_first_s": float(busy.group(3))}
    if args.merge_into:
        bench = json.load(open(args.merge_into))
        bw, rate = bench["copy_tbps"] * 1e12, bench["bf16_tflops"] * 1e12
        c = LLAMA31_70B
        kv_per_token = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * c["head_dim"] * 2
        mean_in = statistics.mean(s[0] for s in specs)
        mean_out = statistics.mean(s[1] for s in specs)
        context = mean_in + mean_out / 2  # a decoding sequence's mean context
        pool_seqs = (kv_blocks * 16 / (mean_in + mean_out)) if kv_blocks else args.max_num_seqs
        batch = max(1, int(min(args.max_num_seqs, args.requests, pool_seqs)))
        params = linear_params(c)
        step = max((bench["weights_bytes_per_token"] + batch * context * kv_per_token) / bw,
                   2 * params * batch / rate)
        per_token = step / batch + (mean_in / mean_out) * 2 * params / rate
        result["roofline"] = {"batch": batch, "step_ms": step * 1e3,
                              "output_tokens_per_s": 1 / per_token}
        result["of_roofline"] = result["output_tokens_per_s"] * per_token
        bench["serving"] = result
        with open(args.merge_into, "w") as f:
            json.dump(bench, f, indent=1, sort_keys=True)
    print(json.dumps(result, indent=1))
    if args.md:
        r = result
        rows = [("requests", f"{r['requests']} (seed {r['seed']}; prompts {args.prompt_min}-"
                 f"{args.prompt_max}, outputs {args.output_min}-{args.output_max} tokens)"),
                ("served in", f"{seconds:.1f} s"),
                ("output tokens/s", f"{r['output_tokens_per_s']:.0f}"),
                ("requests/s", f"{r['requests_per_s']:.2f}"),
                ("TTFT p50 / p99", f"{r['ttft_s']['p50']:.2f} / {r['ttft_s']['p99']:.2f} s"),
                ("TPOT p50 / p99", f"{r['tpot_s']['p50'] * 1e3:.1f} / {r['tpot_s']['p99'] * 1e3:.1f} ms"),
                ("KV pool", f"{kv_blocks} blocks x 16 tokens")]
        if "worker_steps" in r:
            w = r["worker_steps"]
            rows.append(("worker rank 1", f"{w['steps']} steps, {w['busy_s']:.1f} s executing them of "
                         f"{w['since_first_s']:.1f} s ({100 * w['busy_s'] / max(w['since_first_s'], 1e-9):.0f} %)"))
        if "roofline" in r:
            rows += [("roofline batch / step", f"{r['roofline']['batch']} / {r['roofline']['step_ms']:.1f} ms"),
                     ("roofline output tokens/s", f"{r['roofline']['output_tokens_per_s']:.0f}"),
                     ("of roofline", f"{100 * r['of_roofline']:.0f} %")]
        with open(args.md, "w") as f:
            f.write("| serving (70B shape, W4 g128, TP %d) | |\n| --- | --- |\n" % args.tp)
            f.writelines(f"| {k} | {v} |\n" for k, v in rows)


if __name__ == "__main__":
    main()
