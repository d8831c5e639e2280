#!/usr/bin/env python3
"""Overload benchmark (issue #21): the gateway + a ZeroMQ server (llm-local's flags) with a
capacity of C = --max-num-seqs running + --max-waiting waiting requests, and the gateway's
--max-active = --max-num-seqs (nothing the gateway admits waits in the coordinator). Measures
  unloaded     one client, --unloaded requests one after the other: latency p50 / p99;
  at capacity  --max-num-seqs closed-loop clients for --seconds / 2: every request admitted;
  10x          --factor x C closed-loop clients for --seconds (a refused client retries after
               --retry-ms, so the offered load stays ~10x capacity): the latency of each 429
               (rejection) and of each admitted request, p50 / p99.
The load comes from bench/overload/overload_load (C++, one thread and kept-alive connection per
client; --load-generator), never from this interpreter (the first version's 80 Python threads
shared one interpreter lock with the timing; docs/RELIABILITY.md "Overload"). Each phase records the load average
and the CPU seconds of the generator, the gateway and the server, so a reader can judge how quiet
the machine was. Writes bench/results/overload-<tag>.json and .md (the issue's targets: rejections
under 10 ms at p99; admitted p99 within 1.5x the unloaded p99).
  bench/overload/overload_bench.py --server build/api/llm-local --gateway build/gateway/gateway \\
      --load-generator build/bench/overload/overload_load --model models/kjv-llama --tag cpu"""
import argparse
import json
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "support"))
from service_testing import Proc  # noqa: E402

MODEL = "kjv-llama"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of a process (from /proc; its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Phase:
    """One run of the load generator, with the machine's state around it."""

    def __init__(self, args, port, body_file, procs, name, clients, seconds=0, requests=0, warmup=0):
        out = os.path.join(args.workdir, f"load-{name}.json")
        cmd = pinned(args.generator_cpus) + [args.load_generator, "--port", str(port), "--body-file", body_file,
               "--clients", str(clients), "--retry-ms", str(args.retry_ms), "--out", out,
               "--warmup", str(warmup), "--records"]
        if seconds:
            cmd += ["--seconds", str(seconds)]
        if requests:
            cmd += ["--requests", str(requests)]
        load0 = os.getloadavg()[0]
        cpu0 = {k: cpu_seconds(p.proc.pid) for k, p in procs.items()}
        subprocess.run(cmd, check=True, timeout=(seconds or 0) + 600)
        cpu1 = {k: cpu_seconds(p.proc.pid) for k, p in procs.items()}
        with open(out) as f:
            self.raw = json.load(f)
        self.name = name
        self.wall_s = self.raw["wall_s"]
        self.load_average = [round(load0, 2), round(os.getloadavg()[0], 2)]
        self.cpu_share = {k: round((cpu1[k] - cpu0[k]) / max(self.wall_s, 1e-9), 3) for k in procs}
        self.cpu_share["load_generator"] = self.raw["generator_cpu_share_of_one_core"]

    def latency(self, status):
        s = self.raw["latency_ms_by_status"].get(str(status))
        return {"n": s["n"], "p50": s["p50"], "p99": s["p99"], "max": s["max"]} if s else \
            {"n": 0, "p50": None, "p99": None, "max": None}

    def others(self):
        return sum(v["n"] for k, v in self.raw["latency_ms_by_status"].items() if k not in ("200", "429"))

    def machine(self):
        return {"wall_s": self.wall_s, "load_average_1min_before_after": self.load_average,
                "cpu_cores_used": self.cpu_share}


def pinned(cpus):
    """The command prefix that runs a process, and every thread it starts, on `cpus` only."""
    return ["taskset", "-c", cpus] if cpus else []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--load-generator", required=True, help="build/bench/overload/overload_load")
    ap.add_argument("--model", required=True)
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--max-waiting", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--unloaded", type=int, default=400,
                    help="requests of the one-client phase (400: its p99 is a p99, not the max of 40)")
    ap.add_argument("--retry-ms", type=float, default=5)
    ap.add_argument("--server-threads", type=int, default=1, help="the server's OMP_NUM_THREADS")
    ap.add_argument("--server-cpus", default="",
                    help="taskset CPU list for the server (e.g. 0); default: any")
    ap.add_argument("--gateway-cpus", default="", help="taskset CPU list for the gateway")
    ap.add_argument("--generator-cpus", default="",
                    help="taskset CPU list for the load generator (e.g. 1): the clients off the "
                         "service's cores, as in a deployment")
    ap.add_argument("--note", default="", help="free text for the .md (e.g. what else ran)")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "results"))
    ap.add_argument("--workdir", default="/tmp/overload_bench")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    cap = args.max_num_seqs + args.max_waiting
    srv = Proc("server", pinned(args.server_cpus) + [args.server, "--model", args.model, "--listen", "tcp://127.0.0.1:*",
                          "--max-num-seqs", str(args.max_num_seqs), "--max-waiting", str(args.max_waiting),
                          "--kv-blocks", "512"], args.workdir,
               env={"OMP_NUM_THREADS": str(args.server_threads)})
    endpoint = srv.listening(60)
    clients = args.factor * cap
    gw = Proc("gateway", pinned(args.gateway_cpus) + [args.gateway, "--coordinator", endpoint, "--host", "127.0.0.1", "--port", "0",
                          "--threads", str(clients + 8), "--max-active", str(args.max_num_seqs)], args.workdir)
    base = gw.listening(60)
    port = int(base.rsplit(":", 1)[1].strip("/"))
    body_file = os.path.join(args.workdir, "body.json")
    with open(body_file, "w") as f:
        json.dump({"model": MODEL, "prompt": "In the beginning", "max_tokens": args.max_tokens,
                   "ignore_eos": True, "temperature": 0}, f)
    procs = {"gateway": gw, "server": srv}
    try:
        unloaded = Phase(args, port, body_file, procs, "unloaded", 1, requests=args.unloaded, warmup=5)
        at_capacity = Phase(args, port, body_file, procs, "at_capacity", args.max_num_seqs,
                            seconds=args.seconds / 2, warmup=1)
        # One unrecorded request per client first: 80 connections opened at once overflow the
        # gateway's listen backlog (5, cpp-httplib's compiled-in CPPHTTPLIB_LISTEN_BACKLOG) and
        # wait for SYN retransmits (1 s); that is connection set-up, not the rejection path.
        overload = Phase(args, port, body_file, procs, "overload", clients, seconds=args.seconds,
                         warmup=1)
    finally:
        gw.signal(signal.SIGTERM)
        gw.wait(20)
        srv.signal(signal.SIGTERM)
        srv.wait(20)

    result = {
        "bench": "overload", "tag": args.tag, "capacity": cap, "clients": clients,
        "max_num_seqs": args.max_num_seqs, "max_waiting": args.max_waiting, "max_tokens": args.max_tokens,
        "seconds": args.seconds, "retry_ms": args.retry_ms, "server_threads": args.server_threads, "cpus": os.cpu_count(),
        "server_cpus": args.server_cpus or "any", "gateway_cpus": args.gateway_cpus or "any",
        "generator_cpus": args.generator_cpus or "any",
        "load_generator": "bench/overload/overload_load (C++, cpp-httplib client, a thread per client)",
        "note": args.note,
        "unloaded_ms": unloaded.latency(200),
        "at_capacity_ms": at_capacity.latency(200),
        "admitted_ms": overload.latency(200),
        "rejected_ms": overload.latency(429),
        "other_answers": unloaded.others() + at_capacity.others() + overload.others(),
        "machine": {p.name: p.machine() for p in (unloaded, at_capacity, overload)},
    }
    # "10x capacity" as a rate: requests sent per second at 10x (every answer) over requests
    # finished per second at capacity; the closed-loop clients' pause after a 429 sets it.
    sent = sum(v["n"] for v in overload.raw["latency_ms_by_status"].values())
    result["offered_per_s"] = round(sent / overload.wall_s, 1)
    result["served_per_s_at_capacity"] = round(result["at_capacity_ms"]["n"] / at_capacity.wall_s, 1)
    result["offered_over_capacity"] = round(result["offered_per_s"] / result["served_per_s_at_capacity"], 1) \
        if result["served_per_s_at_capacity"] else None
    u99, a99 = result["unloaded_ms"]["p99"], result["admitted_ms"]["p99"]
    result["admitted_p99_over_unloaded_p99"] = round(a99 / u99, 2) if a99 and u99 else None
    c99 = result["at_capacity_ms"]["p99"]
    result["admitted_p99_over_at_capacity_p99"] = round(a99 / c99, 2) if a99 and c99 else None
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"overload-{args.tag}")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(f"# Overload at {args.factor}x capacity ({args.tag})\n\n"
                f"Gateway + llm-local, capacity {cap} ({args.max_num_seqs} running + {args.max_waiting} waiting; "
                f"gateway --max-active {args.max_num_seqs}: nothing the gateway admits waits), "
                f"{clients} closed-loop HTTP clients for {args.seconds} s (C++ `overload_load`, a 429 "
                f"retried after {args.retry_ms} ms), {args.max_tokens} tokens per request, the server on "
                f"{args.server_threads} OpenMP thread(s), "
                f"{os.cpu_count()} CPUs"
                + (f" (pinned: server to CPU {args.server_cpus or 'any'}, gateway to "
                   f"{args.gateway_cpus or 'any'}, load generator to {args.generator_cpus or 'any'})"
                   if args.server_cpus or args.gateway_cpus or args.generator_cpus else "")
                + ". Made by `bench/overload/overload_bench.py`.\n\n"
                "| | requests | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- |\n")
        for k, name in (("unloaded_ms", "unloaded (1 client)"),
                        ("at_capacity_ms", f"at capacity ({args.max_num_seqs} clients)"),
                        ("admitted_ms", f"admitted at {args.factor}x"),
                        ("rejected_ms", f"rejected (429) at {args.factor}x")):
            r = result[k]
            f.write(f"| {name} | {r['n']} | {r['p50']} | {r['p99']} | {r['max']} |\n")
        f.write(f"\nOffered at {args.factor}x: {result['offered_per_s']} requests/s against "
                f"{result['served_per_s_at_capacity']} served per second at capacity = "
                f"{result['offered_over_capacity']}x.\n")
        f.write(f"\nadmitted p99 / unloaded p99 = {result['admitted_p99_over_unloaded_p99']}, "
                f"/ at-capacity p99 = {result['admitted_p99_over_at_capacity_p99']} "
                f"(target <= 1.5); rejection p99 {result['rejected_ms']['p99']} ms (target < 10). "
                f"Other answers (errors, resets): {result['other_answers']}.\n\n"
                "The machine during each phase (1-minute load average before / after; CPU cores "
                "used = CPU seconds / wall seconds):\n\n"
                "| phase | s | load avg | gateway | server | load generator |\n"
                "| --- | --- | --- | --- | --- | --- |\n")
        for name, m in result["machine"].items():
            c = m["cpu_cores_used"]
            f.write(f"| {name} | {m['wall_s']} | {m['load_average_1min_before_after'][0]} / "
                    f"{m['load_average_1min_before_after'][1]} | {c['gateway']} | {c['server']} | "
                    f"{c['load_generator']} |\n")
        if args.note:
            f.write(f"\n{args.note}\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
