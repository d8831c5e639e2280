#!/usr/bin/env python3
"""A bounded soak of the ZeroMQ service (issue #21; docs/RELIABILITY.md): --requests (2,000)
requests from --clients (64) client threads against a server taking llm-local's flags
(--server), each request one of
  complete    streamed or not, 1-12 tokens: must end in a final "length"/"stop" with that many
              tokens (streamed: the deltas' tokens add up to usage.completion_tokens)
  cancel      cancelled after its first delta (or at once): must end in a final (cancelled, or
              finished first) and nothing after it
  disconnect  the client closes its socket after the first delta and reconnects with a new one:
              the server cancels what it left (disconnect_cancels) or finished it first
  bad         a malformed or invalid submit: must be answered by an error naming its code
  overloaded  (not chosen: it happens) a submit past the live limit: "overloaded" + retry_after_s
Afterwards every request is accounted for with its reason, the server's counters agree with the
clients' tally (submitted = finished + cancelled; invalid = bad; overloaded = overloaded seen),
nothing is live, the KV pool is empty, and the server's resident memory and open descriptors are
flat against the start (after a warm-up), within a tolerance. No timing assertions."""
import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, check, fail, wait_until  # noqa: E402

BAD = [
    (b"{oops", "malformed"),
    (b'{"v":1,"type":"submit","id":"b","prompt":"x","temprature":1}', "invalid_request"),
    (b'{"v":1,"type":"submit","id":"b","prompt":""}', "invalid_request"),
    (b'{"v":1,"type":"submit","id":"b","prompt_ids":[1,99999999]}', "invalid_request"),
    (b'{"v":1,"type":"submit","id":"b","prompt":"x","stop":' + b"[" * 40 + b"]" * 40 + b"}", "malformed"),
    (b'{"v":1,"type":"submit","id":"b","prompt":"x","logprobs":99}', "invalid_request"),
]
PROMPTS = ["In the beginning", "And God said", "The LORD is my shepherd", "Blessed are", "x"]


def proc_stats(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = Counter()  # (kind, reason) -> count
        self.problems = []

    def add(self, kind, reason):
        with self.lock:
            self.outcomes[(kind, reason)] += 1

    def problem(self, what):
        with self.lock:
            self.problems.append(what)


def new_socket(ctx, endpoint):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def next_message(sock, timeout_s=60, rid=None):
    """The next message, skipping heartbeats and the "unknown_request" answers to cancels that
    arrived after their request's final (a race the protocol allows)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000)):
            return None
        m = json.loads(sock.recv_multipart()[-1])
        if m["type"] == "heartbeat":
            continue
        if m["type"] == "error" and m["code"] == "unknown_request" and m.get("id") != rid:
            continue
        return m


def client(ctx, endpoint, worker, jobs, tally):
    sock = new_socket(ctx, endpoint)
    rng = random.Random(worker)
    for n in jobs:
        kind = rng.choices(["complete", "cancel", "disconnect", "bad"], [70, 12, 10, 8])[0]
        rid = f"w{worker}-{n}"
        if kind == "bad":
            frame, code = rng.choice(BAD)
            sock.send(frame)
            m = next_message(sock, rid="b")
            # A submit that decodes is checked against the live limit before it is validated
            # (overload is answered without tokenizing): "overloaded" is a right answer too.
            ok = m is not None and m["type"] == "error" and (
                m["code"] == code or (code == "invalid_request" and m["code"] == "overloaded"))
            if not ok:
                tally.problem(f"{rid}: bad request answered {m}")
            tally.add("bad", m["code"] if ok else code)
            continue
        max_tokens = rng.randint(1, 12)
        stream = kind != "complete" or rng.random() < 0.7
        sock.send(json.dumps({"v": 1, "type": "submit", "id": rid, "prompt": rng.choice(PROMPTS),
                              "max_tokens": max_tokens, "ignore_eos": True, "stream": stream,
                              "temperature": rng.choice([0, 0.8]), "seed": n}).encode())
        m = next_message(sock, rid=rid)
        if m is None:
            tally.problem(f"{rid}: no answer to the submit")
            continue
        if m["type"] == "error":
            if m["code"] != "overloaded" or not m.get("retry_after_s"):
                tally.problem(f"{rid}: refused {m}")
            tally.add(kind, "overloaded")
            continue
        if m["type"] != "accepted":
            tally.problem(f"{rid}: first answer {m}")
            continue
        if kind == "cancel" and rng.random() < 0.3:
            sock.send(json.dumps({"v": 1, "type": "cancel", "id": rid}).encode())
            kind = "cancel-sent"
        tokens = 0
        while True:
            m = next_message(sock, rid=rid)
            if m is None:
                tally.problem(f"{rid}: no final within 60 s")
                break
            if m.get("id") != rid:
                tally.problem(f"{rid}: message for another request {m}")
                break
            if m["type"] == "delta":
                tokens += len(m["token_ids"])
                if kind == "cancel":
                    sock.send(json.dumps({"v": 1, "type": "cancel", "id": rid}).encode())
                    kind = "cancel-sent"
                elif kind == "disconnect":
                    sock.close()
                    sock = new_socket(ctx, endpoint)
                    tally.add("disconnect", "left")
                    break
                continue
            if m["type"] != "final":
                tally.problem(f"{rid}: {m}")
                break
            reason = m["finish_reason"]
            got = tokens if stream else len(m.get("token_ids") or [])
            if got != m["usage"]["completion_tokens"]:
                tally.problem(f"{rid}: {got} tokens seen, usage says {m['usage']['completion_tokens']}")
            if reason == "length" and got != max_tokens:
                tally.problem(f"{rid}: finished 'length' with {got} of {max_tokens} tokens")
            if kind == "complete" and reason != "length":
                tally.problem(f"{rid}: ended {reason}")
            tally.add("complete" if kind == "complete" else ("disconnect" if kind == "disconnect" else "cancel"),
                      reason)
            break
    # Anything after the last final would be a stray message: wait briefly for one.
    if sock.poll(50):
        m = json.loads(sock.recv_multipart()[-1])
        if m["type"] not in ("heartbeat", "error"):
            tally.problem(f"worker {worker}: stray message {m}")
    sock.close()


def status(ctx, endpoint):
    s = new_socket(ctx, endpoint)
    try:
        s.send(b'{"v":1,"type":"status"}')
        m = next_message(s, 10)
        if m is None:
            fail("no status reply")
        return m
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rss-tolerance-mb", type=float, default=48)
    ap.add_argument("--fd-tolerance", type=int, default=8)
    args = ap.parse_args()
    srv = Proc("server", [args.server, "--model", args.model, "--listen", "tcp://127.0.0.1:*",
                          "--max-num-seqs", "16", "--max-waiting", "40", "--kv-blocks", "256"], args.workdir)
    endpoint = srv.listening(60)
    ctx = zmq.Context()

    def run_clients(total, clients):
        tally = Tally()
        per = [list(range(w, total, clients)) for w in range(clients)]
        threads = [threading.Thread(target=client, args=(ctx, endpoint, w, per[w], tally)) for w in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        if any(t.is_alive() for t in threads):
            fail("client threads still running after 600 s", srv)
        return tally

    # Warm-up: the allocator's and the tokenizer's caches reach their working size.
    run_clients(min(200, args.requests), min(16, args.clients))
    wait_until(lambda: status(ctx, endpoint)["live_requests"] == 0, 30, "warm-up done")
    rss0, fds0 = proc_stats(srv.proc.pid)
    before = status(ctx, endpoint)["counters"]
    t0 = time.monotonic()
    tally = run_clients(args.requests, args.clients)
    elapsed = time.monotonic() - t0
    s = wait_until(lambda: (lambda s: s if s["live_requests"] == 0 else None)(status(ctx, endpoint)), 30,
                   "nothing live after the soak")
    time.sleep(0.5)  # the last disconnected sockets' fds close asynchronously
    rss1, fds1 = proc_stats(srv.proc.pid)
    after = s["counters"]
    delta = {k: after[k] - before[k] for k in after}
    o = tally.outcomes
    print(f"soak: {args.requests} requests from {args.clients} clients in {elapsed:.1f} s")
    for (kind, reason), n in sorted(o.items()):
        print(f"  {kind:10s} {reason:16s} {n}")
    print(f"  server counters: {delta}")
    for p in tally.problems[:20]:
        print("  problem:", p)
    total = sum(o.values())
    check(not tally.problems, f"every request answered as its kind requires ({len(tally.problems)} problems)")
    check(total == args.requests, f"every request accounted for: {total} of {args.requests}")
    bad = sum(n for (k, r), n in o.items() if k == "bad" and r != "overloaded")
    overloaded = sum(n for (_, r), n in o.items() if r == "overloaded")
    left = o[("disconnect", "left")]
    accepted = args.requests - bad - overloaded
    finals = {r: sum(n for (k, rr), n in o.items() if rr == r and k != "bad") for r in ("length", "stop", "cancelled")}
    check(delta["submitted"] == accepted, f"submitted {delta['submitted']} = accepted {accepted}")
    check(delta["invalid"] == bad, f"invalid {delta['invalid']} = bad requests answered as bad {bad}")
    check(delta["overloaded"] == overloaded, f"overloaded {delta['overloaded']} = overloaded answers {overloaded}")
    check(delta["finished"] + delta["cancelled"] == accepted and delta["rejected"] == 0,
          f"finished {delta['finished']} + cancelled {delta['cancelled']} = accepted")
    check(delta["finished"] >= finals["length"] + finals["stop"] and delta["cancelled"] >= finals["cancelled"]
          and delta["finished"] + delta["cancelled"] - (finals["length"] + finals["stop"] + finals["cancelled"]) == left,
          f"the {left} requests whose clients left are the server's extra finals "
          f"({delta['disconnect_cancels']} of them cancelled by disconnect)")
    check(delta["disconnect_cancels"] <= left, "disconnect cancels only for clients that left")
    check(s["kv_blocks_used"] == 0 and s["running"] == 0 and s["waiting"] == 0, "KV pool empty, nothing queued")
    check(rss1 - rss0 <= args.rss_tolerance_mb * 1024, f"RSS flat: {rss0 // 1024} MB -> {rss1 // 1024} MB "
          f"(tolerance {args.rss_tolerance_mb} MB)")
    check(abs(fds1 - fds0) <= args.fd_tolerance, f"open fds flat: {fds0} -> {fds1} (tolerance {args.fd_tolerance})")
    srv.signal(signal.SIGTERM)
    check(srv.wait(20) == 0, "the server exits 0 on SIGTERM", srv)
    print("PASS")


if __name__ == "__main__":
    main()
