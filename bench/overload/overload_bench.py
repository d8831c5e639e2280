#!/usr/bin/env python3
"""Overload benchmark (issue #21): the gateway + a ZeroMQ server (llm-local's flags) with a
capacity of C = --max-num-seqs running + --max-waiting waiting requests, and the gateway's
--max-active C. Measures
  unloaded   one client at a time, --unloaded requests: latency p50 / p99;
  10x        --factor x C clients in a closed loop for --seconds (a refused client retries after
             --retry-ms, so the offered load stays ~10x capacity): the latency of each 429
             (rejection) and of each admitted request, p50 / p99.
Writes bench/results/overload-<tag>.json and .md (the issue's targets: rejections under 10 ms at
p99; admitted p99 within 1.5x the unloaded p99).
  bench/overload/overload_bench.py --server build/api/llm-local --gateway build/gateway/gateway \\
      --model models/kjv-llama --tag cpu"""
import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "support"))
from service_testing import Proc  # noqa: E402

MODEL = "kjv-llama"


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Conn:
    def __init__(self, base):
        host, port = base.replace("http://", "").split(":")
        self.c = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, body):
        t0 = time.perf_counter()
        self.c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        r = self.c.getresponse()
        r.read()
        return r.status, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--max-waiting", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--unloaded", type=int, default=40)
    ap.add_argument("--retry-ms", type=float, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "results"))
    ap.add_argument("--workdir", default="/tmp/overload_bench")
    args = ap.parse_args()
    cap = args.max_num_seqs + args.max_waiting
    srv = Proc("server", [args.server, "--model", args.model, "--listen", "tcp://127.0.0.1:*",
                          "--max-num-seqs", str(args.max_num_seqs), "--max-waiting", str(args.max_waiting),
                          "--kv-blocks", "512"], args.workdir)
    endpoint = srv.listening(60)
    clients = args.factor * cap
    gw = Proc("gateway", [args.gateway, "--coordinator", endpoint, "--host", "127.0.0.1", "--port", "0",
                          "--threads", str(clients + 8), "--max-active", str(args.max_num_seqs)], args.workdir)
    base = gw.listening(60)
    body = json.dumps({"model": MODEL, "prompt": "In the beginning", "max_tokens": args.max_tokens,
                       "ignore_eos": True, "temperature": 0})

    c = Conn(base)
    for _ in range(5):
        c.post(body)  # warm-up
    unloaded = []
    for _ in range(args.unloaded):
        st, dt = c.post(body)
        assert st == 200, st
        unloaded.append(dt)

    lock = threading.Lock()

    def closed_loop(n, seconds):
        admitted, rejected, other = [], [], []
        stop = time.monotonic() + seconds

        def loop():
            conn = Conn(base)
            while time.monotonic() < stop:
                try:
                    st, dt = conn.post(body)
                except (OSError, http.client.HTTPException):
                    conn = Conn(base)
                    with lock:
                        other.append(-1)
                    continue
                with lock:
                    (admitted if st == 200 else rejected if st == 429 else other).append(dt)
                if st == 429:
                    time.sleep(args.retry_ms / 1000)
        threads = [threading.Thread(target=loop) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return admitted, rejected, other

    at_capacity, _, _ = closed_loop(args.max_num_seqs, args.seconds / 2)
    admitted, rejected, other = closed_loop(clients, args.seconds)
    gw.signal(signal.SIGTERM)
    gw.wait(20)
    srv.signal(signal.SIGTERM)
    srv.wait(20)

    ms = lambda x: None if x is None else round(x * 1000, 2)  # noqa: E731
    result = {
        "bench": "overload", "tag": args.tag, "capacity": cap, "clients": clients,
        "max_num_seqs": args.max_num_seqs, "max_waiting": args.max_waiting, "max_tokens": args.max_tokens,
        "seconds": args.seconds, "cpus": os.cpu_count(),
        "unloaded_ms": {"n": len(unloaded), "p50": ms(pct(unloaded, 50)), "p99": ms(pct(unloaded, 99))},
        "at_capacity_ms": {"n": len(at_capacity), "p50": ms(pct(at_capacity, 50)),
                           "p99": ms(pct(at_capacity, 99))},
        "admitted_ms": {"n": len(admitted), "p50": ms(pct(admitted, 50)), "p99": ms(pct(admitted, 99))},
        "rejected_ms": {"n": len(rejected), "p50": ms(pct(rejected, 50)), "p99": ms(pct(rejected, 99))},
        "other_answers": len(other),
    }
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
                f"gateway --max-active {args.max_num_seqs}: nothing the gateway admits waits), {clients} closed-loop HTTP clients for {args.seconds} s, "
                f"{args.max_tokens} tokens per request, {os.cpu_count()} CPUs. Made by "
                f"`bench/overload/overload_bench.py`.\n\n"
                "| | requests | p50 ms | p99 ms |\n| --- | --- | --- | --- |\n")
        for k, name in (("unloaded_ms", "unloaded (1 client)"),
                        ("at_capacity_ms", f"at capacity ({args.max_num_seqs} clients)"),
                        ("admitted_ms", f"admitted at {args.factor}x"),
                        ("rejected_ms", "rejected (429) at 10x")):
            r = result[k]
            f.write(f"| {name} | {r['n']} | {r['p50']} | {r['p99']} |\n")
        f.write(f"\nadmitted p99 / unloaded p99 = {result['admitted_p99_over_unloaded_p99']}, "
                f"/ at-capacity p99 = {result['admitted_p99_over_at_capacity_p99']} "
                f"(target <= 1.5); rejection p99 {result['rejected_ms']['p99']} ms (target < 10). "
                f"Other answers (errors, resets): {len(other)}.\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
