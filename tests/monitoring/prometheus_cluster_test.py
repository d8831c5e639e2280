#!/usr/bin/env python3
"""The real Prometheus server scrapes a running CPU cluster (CTest monitoring.prometheus_cluster
and monitoring.prometheus_cluster_zmq).

1. Prometheus (Debian's `prometheus`) starts on 127.0.0.1 with the project's own
   deploy/prometheus/prometheus.yml and rules; only the target files are rewritten to this test's
   ports and the intervals shortened to 1 s.
2. `mpirun -np 1 coordinator ... : -np 4 worker` (2 replicas x tp 2, tiny random model) serves a
   known workload: N greedy requests with ignore_eos (each ends by length after exactly
   max_tokens unless cancelled), some sharing a prompt (prefix-cache hits), one with a prompt
   longer than the context.
   --front file: the coordinator reads them with --requests (--keep-running); the long one is
     rejected by the scheduler.
   --front zmq: the coordinator serves ZeroMQ and the Python client (client/python) submits them
     all at once; the front end answers the long one invalid_request (the engine never sees it);
     the client cancels some as soon as they are accepted (they never run) and some at their
     first token.
3. While it runs, every endpoint's /metrics passes `promtool check metrics` and exports only
   documented metrics; together they export every documented metric.
4. Through Prometheus's HTTP API, once the workload is done: the request, token and
   finish-reason counters equal exactly what was sent and received (file: per replica too); every
   latency histogram counted each request once (zmq: the queue-time histogram counted exactly
   the requests whose final carries timings.queue_s, i.e. that were ever scheduled); the workers'
   forward passes equal the coordinator's steps; the KV gauges are back at their idle value (0)
   after having been above it (Prometheus's samples, or the test's own 20 ms polls of the
   coordinator when the batch is shorter than a scrape interval); every target is up.
5. (file) Every PromQL expression of the dashboards (Grafana variables selecting everything) and
   every recording rule returns data; every metric a query names is documented and exported.
   The zmq run skips this (the same queries over the same metrics) to stay short.
6. SIGTERM drains the job; every rank exits 0.
Every wait is bounded; on failure both process groups are killed and the logs printed.
"""
import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import promql  # noqa: E402
from service_testing import Proc, cmake_list, fail, free_port_range, http_get, scrape_metrics, wait_for_state  # noqa: E402

TP, REPLICAS = 2, 2
WORLD = 1 + TP * REPLICAS
MAX_TOKENS = 200
class Prom:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        try:
            body = json.loads(http_get(url, timeout=10))
        except urllib.error.HTTPError as e:
            body = json.loads(e.read().decode())
        if body.get("status") != "success":
            fail(f"Prometheus {path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr):
        """{frozenset(labels): value} of an instant query."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return {frozenset(): float(data["result"][1])}
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}

    def scalar(self, expr):
        r = self.query(expr)
        return next(iter(r.values())) if len(r) == 1 else None

    def query_range(self, expr, start, end):
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")["result"]


def write_requests(args, workdir):
    """The batch, and what it must produce."""
    path = os.path.join(workdir, "requests.jsonl")
    subprocess.run([args.fixture_tool, "make-requests", path, "64", str(MAX_TOKENS), "61", "5"],
                   check=True, timeout=60)
    reqs = [json.loads(line) for line in open(path) if line.strip()]
    rng = random.Random(11)
    shared = [rng.randrange(61) for _ in range(40)]  # 2 full blocks of 16: prefix-cache hits
    for i in range(4):
        reqs.append({"id": f"shared-{i}", "prompt_ids": shared, "max_tokens": MAX_TOKENS,
                     "temperature": 0.0, "ignore_eos": True})
    reqs.append({"id": "too-long", "prompt_ids": [1] * 300, "max_tokens": MAX_TOKENS,
                 "temperature": 0.0, "ignore_eos": True})  # max_model_len 256: rejected
    with open(path, "w") as f:
        for r in reqs:
            f.write(json.dumps(r) + "\n")
    admitted = [r for r in reqs if len(r["prompt_ids"]) < 256]
    return path, reqs, {
        "received": len(reqs),
        "length": len(admitted),
        "rejected": len(reqs) - len(admitted),
        "prompt_tokens": sum(len(r["prompt_ids"]) for r in admitted),
        "generation_tokens": len(admitted) * MAX_TOKENS,
    }


def file_expectations(output, expect, t_serving):
    """--front file: the batch's records, checked against what was sent; the counters they imply."""
    def records():
        if not os.path.exists(output):
            return []
        return [json.loads(line) for line in open(output) if line.strip()]
    wait_for_state("every request finished", lambda: (len(records()) == expect["received"],
                                                  f"{len(records())} of {expect['received']} records"), 60)
    recs = records()
    reasons = {}
    for r in recs:
        reasons[r["finish_reason"].split(":")[0]] = reasons.get(r["finish_reason"].split(":")[0], 0) + 1
    if reasons.get("length") != expect["length"] or reasons.get("rejected") != expect["rejected"]:
        fail(f"the batch ended with {reasons}; expected {expect}")
    got_tokens = sum(r["output_tokens"] for r in recs)
    if got_tokens != expect["generation_tokens"]:
        fail(f"received {got_tokens} output tokens, sent for {expect['generation_tokens']}")
    per_replica = {}
    for r in recs:
        if r.get("replica", -1) >= 0:
            per_replica[str(r["replica"])] = per_replica.get(str(r["replica"]), 0) + r["output_tokens"]
    want = {
        "sum(shardserve_requests_received_total)": expect["received"],
        'sum(shardserve_requests_finished_total{reason="length"})': expect["length"],
        'sum(shardserve_requests_finished_total{reason="rejected"})': expect["rejected"],
        'sum(shardserve_requests_finished_total{reason="stop"})': 0,
        'sum(shardserve_requests_finished_total{reason="cancelled"})': 0,
        "sum(shardserve_prompt_tokens_total)": expect["prompt_tokens"],
        "sum(shardserve_generation_tokens_total)": expect["generation_tokens"],
        "sum(shardserve_time_to_first_token_seconds_count)": expect["length"],
        "sum(shardserve_e2e_request_latency_seconds_count)": expect["length"],
        "sum(shardserve_time_per_output_token_seconds_count)": expect["length"],
        "sum(shardserve_request_queue_time_seconds_count)": expect["length"],
    }
    for rep, tokens in per_replica.items():
        want[f'sum(shardserve_generation_tokens_total{{replica="{rep}"}})'] = tokens
    summary = (f"{expect['received']} requests received, {expect['length']} finished by length and "
               f"{expect['rejected']} rejected, {expect['prompt_tokens']} prompt and "
               f"{expect['generation_tokens']} generation tokens (per replica {per_replica})")
    return want, summary


CANCEL_EACH = 4  # --front zmq: requests cancelled while queued, and as many at their first token


class ZmqWorkload:
    """--front zmq: the workload through the Python client over ZeroMQ. Every request is
    submitted at once (streamed); the last ordinary ones (queued behind 60 others) are cancelled
    right behind their own submit on the same socket, so the coordinator reads the cancel before
    it can schedule them, however fast the engine (waiting for their "accepted" first lost the
    race on a fast machine: the tiny model served 60 requests in the 0.5 s the client spent
    reading). The first ones are cancelled at their first token (one that ends before its cancel
    arrives ends "length": counted as the client saw it).
    What the client receives is tallied, and the counters are computed from that alone."""

    def __init__(self, python_client, endpoint, reqs):
        sys.path.insert(0, python_client)
        from shardserve_client import Client
        self.client = Client(endpoint)
        self.reqs = reqs
        ordinary = [r["id"] for r in reqs if r["id"].startswith("req-")]
        self.cancel_queued = set(ordinary[-CANCEL_EACH:])
        self.cancel_on_delta = set(ordinary[:CANCEL_EACH])
        self.state = {r["id"]: {"prompt": len(r["prompt_ids"]), "accepted": False, "tokens": 0,
                                "final": None, "error": None, "cancel_sent": False} for r in reqs}

    def submit_all(self):
        """Submits everything, each queued one's cancel right behind it, and reads on until each
        request is accepted or refused."""
        for r in self.reqs:
            self.client.submit(prompt_ids=r["prompt_ids"], id=r["id"], max_tokens=r["max_tokens"],
                               temperature=0.0, ignore_eos=True)
            if r["id"] in self.cancel_queued:
                self._cancel(r["id"])
        deadline = time.monotonic() + 20
        while any(not st["accepted"] and st["error"] is None for st in self.state.values()):
            if time.monotonic() > deadline:
                fail("not every submit was answered within 20 s")
            m = self.client.receive(1.0)
            if m is not None:
                self._handle(m)

    def _cancel(self, rid):
        st = self.state[rid]
        if not st["cancel_sent"]:
            st["cancel_sent"] = True
            self.client.cancel(rid)

    def _handle(self, m):
        rid, kind = m.get("id"), m["type"]
        st = self.state.get(rid)
        if st is None:
            fail(f"a message for no request of the workload: {m}")
        if kind == "accepted":
            st["accepted"] = True
        elif kind == "delta":
            st["tokens"] += len(m["token_ids"])
            if rid in self.cancel_on_delta:
                self._cancel(rid)
        elif kind == "final":
            st["final"] = m
        elif kind == "error":
            if st["cancel_sent"] and m["code"] == "unknown_request":
                return  # it ended before the cancel arrived; its final came first
            st["error"] = m

    def expectations(self, deadline):
        def open_ids():
            return [rid for rid, st in self.state.items() if st["final"] is None and st["error"] is None]
        while open_ids():
            left = deadline - time.monotonic()
            if left <= 0:
                fail(f"the client still waits for {len(open_ids())} request(s): {open_ids()[:8]}")
            m = self.client.receive(min(left, 5.0))
            if m is not None:
                self._handle(m)
        self.client.close()

        errors = {rid: st["error"]["code"] for rid, st in self.state.items() if st["error"]}
        if errors != {"too-long": "invalid_request"}:
            fail(f"errors {errors}; want only too-long answered invalid_request by the front end")
        finals = {rid: st for rid, st in self.state.items() if st["final"]}
        reasons = {}
        for rid, st in finals.items():
            f = st["final"]
            reasons[f["finish_reason"]] = reasons.get(f["finish_reason"], 0) + 1
            if not st["accepted"]:
                fail(f"{rid}: a final without 'accepted' first")
            if f["usage"]["completion_tokens"] != st["tokens"] or f["usage"]["prompt_tokens"] != st["prompt"]:
                fail(f"{rid}: usage {f['usage']} but {st['tokens']} tokens streamed, prompt {st['prompt']}")
            if f["finish_reason"] == "length" and (st["tokens"] != MAX_TOKENS or f["timings"]["queue_s"] is None):
                fail(f"{rid}: length after {st['tokens']} tokens, timings {f['timings']}")
            if rid in self.cancel_queued and (f["finish_reason"] != "cancelled" or st["tokens"] != 0
                                                 or f["timings"]["queue_s"] is not None):
                fail(f"{rid}, cancelled while queued: {f['finish_reason']} after {st['tokens']} tokens, "
                     f"timings {f['timings']}; want cancelled, no tokens, queue_s null (never scheduled)")
        if set(reasons) - {"length", "cancelled"} or reasons.get("cancelled", 0) < CANCEL_EACH:
            fail(f"finish reasons {reasons}")
        tokens = sum(st["tokens"] for st in finals.values())
        length = reasons.get("length", 0)
        want = {
            "sum(shardserve_requests_received_total)": len(finals),
            'sum(shardserve_requests_finished_total{reason="length"})': length,
            'sum(shardserve_requests_finished_total{reason="cancelled"})': reasons.get("cancelled", 0),
            'sum(shardserve_requests_finished_total{reason="rejected"})': 0,
            'sum(shardserve_requests_finished_total{reason="stop"})': 0,
            "sum(shardserve_prompt_tokens_total)": sum(st["prompt"] for st in finals.values()),
            "sum(shardserve_generation_tokens_total)": tokens,
            "sum(shardserve_time_to_first_token_seconds_count)":
                sum(1 for st in finals.values() if st["tokens"] > 0),
            "sum(shardserve_e2e_request_latency_seconds_count)": length,
            "sum(shardserve_time_per_output_token_seconds_count)": length,
            "sum(shardserve_request_queue_time_seconds_count)":
                sum(1 for st in finals.values() if st["final"]["timings"]["queue_s"] is not None),
        }
        mid = sum(1 for rid in self.cancel_on_delta if finals[rid]["final"]["finish_reason"] == "cancelled")
        summary = (f"{len(finals)} requests accepted over ZeroMQ (+1 invalid, never the engine's; "
                   f"{mid} of {CANCEL_EACH} cancelled mid-stream), "
                   f"finished {reasons}, {want['sum(shardserve_prompt_tokens_total)']} prompt and "
                   f"{tokens} generation tokens, "
                   f"{want['sum(shardserve_request_queue_time_seconds_count)']} ever scheduled")
        return want, summary


def prometheus_config(args, workdir, base):
    """The project's deploy/prometheus, targets rewritten to this test's ports, 1 s intervals."""
    conf_dir = os.path.join(workdir, "prometheus")
    shutil.copytree(os.path.join(args.source_dir, "deploy", "prometheus"), conf_dir)
    yml = os.path.join(conf_dir, "prometheus.yml")
    text = open(yml).read()
    for key, value in (("scrape_interval", "1s"), ("scrape_timeout", "1s"), ("evaluation_interval", "1s")):
        text, n = re.subn(rf"^(\s*{key}:\s*)\S+", rf"\g<1>{value}", text, flags=re.M)
        if n != 1:
            fail(f"prometheus.yml: expected one global {key}, found {n}")
    open(yml, "w").write(text)
    with open(os.path.join(conf_dir, "targets", "coordinator.yml"), "w") as f:
        f.write(f'- targets: ["127.0.0.1:{base}"]\n  labels:\n    cluster: test\n')
    with open(os.path.join(conf_dir, "targets", "workers.yml"), "w") as f:
        targets = ", ".join(f'"127.0.0.1:{base + w}"' for w in range(1, WORLD))
        f.write(f"- targets: [{targets}]\n  labels:\n    cluster: test\n")
    return yml


class KvUsePoller:
    """The coordinator's own /metrics read every 20 ms from job start, keeping the highest
    shardserve_kv_cache_usage_ratio seen. Prometheus samples the gauge once a second, and the
    tiny model serves the whole batch in well under a second on a fast machine, so its
    max_over_time alone can miss a busy pool; the gauge's rising is checked against both."""

    def __init__(self, port):
        self.port, self.peak, self.done = port, 0.0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.wait(0.02):
            try:
                series = scrape_metrics(self.port)
            except OSError:
                continue  # not listening yet
            for name, value in series.items():
                if name.startswith("shardserve_kv_cache_usage_ratio"):
                    self.peak = max(self.peak, value)

    def stop(self):
        self.done.set()
        self.thread.join(5)
        return self.peak


def documented(source_dir):
    text = open(os.path.join(source_dir, "docs", "metrics.md")).read()
    return dict(re.findall(r"^\|\s*`([a-z0-9_:]+)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|", text, re.M))


def main():
    p = argparse.ArgumentParser()
    for a in ("--source-dir", "--prometheus", "--promtool", "--mpiexec", "--coordinator", "--worker",
              "--fixture-tool", "--workdir"):
        p.add_argument(a, required=True)
    p.add_argument("--mpiexec-flags", default="")
    p.add_argument("--front", choices=("file", "zmq"), default="file")
    p.add_argument("--python-client", help="client/python (--front zmq)")
    args = p.parse_args()
    if args.front == "zmq" and not args.python_client:
        p.error("--front zmq needs --python-client")
    flags = cmake_list(args.mpiexec_flags)
    workdir = args.workdir
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    t_begin = time.monotonic()

    # ----- the model, the batch, the configuration -------------------------------------------------
    model = os.path.join(workdir, "tiny")
    subprocess.run([args.fixture_tool, "make-model", model, "7"], check=True, timeout=60)
    requests, reqs, expect = write_requests(args, workdir)
    base = free_port_range(WORLD)
    prom_port = free_port_range(1)
    service = os.path.join(workdir, "service.toml")
    with open(service, "w") as f:
        f.write(f'model = "{model}"\ntp = {TP}\n'
                "[kv]\nnum_blocks = 64\nblock_size = 16\n"
                "[scheduler]\nmax_num_seqs = 2\nmax_num_batched_tokens = 64\nmax_model_len = 256\n"
                f'[ports]\nmetrics = {base}\nmetrics_host = "127.0.0.1"\n')

    # ----- Prometheus ------------------------------------------------------------------------------
    yml = prometheus_config(args, workdir, base)
    rc = subprocess.run([args.promtool, "check", "config", yml], capture_output=True, text=True)
    if rc.returncode != 0:
        fail(f"promtool check config on the test's copy: {rc.stdout}{rc.stderr}")
    Proc("prometheus", [args.prometheus, f"--config.file={yml}", f"--storage.tsdb.path={workdir}/tsdb",
                        f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
         workdir)
    prom = Prom(prom_port)

    def ready():
        try:
            return "Ready" in http_get(f"{prom.base}/-/ready", timeout=1), "not ready"
        except OSError as e:
            return False, str(e)
    wait_for_state("Prometheus ready", ready, 20)

    # File-based discovery reaches the scrape loops within ~5 s (Prometheus throttles discovery
    # updates): start the job only once every target has been tried, so no step goes unseen.
    def targets_tried():
        active = prom.api("targets", state="active")["activeTargets"]
        tried = [t for t in active if not t["lastScrape"].startswith("0001-")]
        return len(tried) == WORLD, f"{len(tried)} of {WORLD} targets scraped at least once"
    wait_for_state("Prometheus trying every target", targets_tried, 20)

    # ----- the cluster -----------------------------------------------------------------------------
    output = os.path.join(workdir, "outputs.jsonl")
    if args.front == "file":
        front = ["--requests", requests, "--output", output, "--keep-running"]
    else:
        front = ["--listen", "tcp://127.0.0.1:*"]
    job = Proc("job", [args.mpiexec] + flags + ["-np", "1", args.coordinator, "--config", service] + front +
               [":", "-np", str(WORLD - 1), args.worker], workdir)
    t_job = time.time()
    kv_poller = KvUsePoller(base)

    job_text = job.text
    if args.front == "file":
        wait_for_state("the coordinator serving", lambda: ("serving: " in job_text(), "no 'serving:' line"), 40)
        client = None
    else:
        def listening():
            m = re.search(r"^listening on (\S+)", job_text(), re.M)
            return bool(m), m.group(1) if m else "no 'listening on' line"
        endpoint = wait_for_state("the coordinator listening", listening, 40)
    t_serving = time.monotonic()

    # Every endpoint, scraped directly (mid-run; with ZeroMQ just before the client submits, so
    # that it reads from its first submit on): promtool, and only documented metrics.
    docs = documented(args.source_dir)
    exported = {}
    for w in range(WORLD):
        url = f"http://127.0.0.1:{base + w}/metrics"
        try:
            text = http_get(url)
        except OSError as e:
            fail(f"world rank {w}: {url}: {e}")
        r = subprocess.run([args.promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        if r.returncode != 0 or (r.stdout + r.stderr).strip():
            fail(f"promtool check metrics on world rank {w} ({url}): {r.stdout}{r.stderr}")
        fams = promql.exported_families(text)
        for name, kind in fams.items():
            if docs.get(name) != kind:
                fail(f"world rank {w} exports {kind} {name}, not in docs/metrics.md as such")
        exported.update(fams)
    missing = sorted(set(docs) - set(exported))
    if missing:
        fail(f"documented but exported by no endpoint: {missing}")
    print(f"ok: {WORLD} endpoints pass promtool check metrics and export exactly the "
          f"{len(docs)} documented metrics")
    if args.front == "zmq":
        client = ZmqWorkload(args.python_client, endpoint, reqs)
        client.submit_all()

    common = {
        "sum(shardserve_requests_running)": 0,
        "sum(shardserve_requests_waiting)": 0,
        "sum(shardserve_kv_blocks_used)": 0,
        "max(shardserve_kv_cache_usage_ratio)": 0,
        "count(shardserve_kv_cache_usage_ratio == 0)": REPLICAS,
        "sum(shardserve_kv_blocks_capacity)": 64 * REPLICAS,
        'count(up{job=~"shardserve-.*"} == 1)': WORLD,
        'count(shardserve_build_info{role="worker"})': WORLD - 1,
        'count(shardserve_build_info{role="coordinator",tp="2",replicas="2"})': 1,
    }
    if args.front == "file":
        want, summary = file_expectations(output, expect, t_serving)
    else:
        want, summary = client.expectations(time.monotonic() + 60)
    want.update(common)

    # ----- exact counters through Prometheus --------------------------------------------------------
    def counters():
        got = {q: prom.scalar(q) for q in want}
        bad = {q: (got[q], v) for q, v in want.items() if got[q] is None or abs(got[q] - v) > 1e-9}
        return not bad, bad
    wait_for_state("Prometheus's counters equal the workload (query: (got, want))", counters, 15)
    print(f"ok: through Prometheus, {summary}, as sent and received; KV use back to 0 "
          f"(workload {time.monotonic() - t_serving:.1f} s)")

    # Relations that must hold once idle.
    scraped_peak = prom.scalar("max(max_over_time(shardserve_kv_cache_usage_ratio[5m]))") or 0.0
    polled_peak = kv_poller.stop()
    used = max(scraped_peak, polled_peak)
    if used <= 0:
        fail("the KV-use gauge never rose above its idle value during the workload "
             f"(Prometheus: {scraped_peak}, polled every 20 ms: {polled_peak})")
    def forwards_match_steps():
        steps = prom.query("sum by (replica) (shardserve_step_duration_seconds_count)")
        forwards = prom.query("sum by (replica, rank) (shardserve_worker_forward_duration_seconds_count)")
        step_of = {dict(k)["replica"]: v for k, v in steps.items()}
        bad = {dict(k)["rank"]: (v, step_of.get(dict(k)["replica"])) for k, v in forwards.items()
               if v != step_of.get(dict(k)["replica"])}
        return len(forwards) == WORLD - 1 and len(step_of) == REPLICAS and not bad and \
            all(v > 0 for v in step_of.values()), {"steps": step_of, "rank: (forwards, steps)": bad}
    step_of = wait_for_state("every rank's forward passes equal its replica's steps", forwards_match_steps, 10)["steps"]
    ages = prom.query("shardserve_worker_heartbeat_age_seconds")
    if len(ages) != WORLD - 1 or max(ages.values()) > 5:
        fail(f"heartbeat ages {ages}")
    allreduce = prom.scalar("sum(shardserve_worker_allreduce_duration_seconds_sum)")
    if not allreduce or allreduce <= 0:
        fail(f"no all-reduce time recorded ({allreduce})")
    print(f"ok: KV use peaked at {used:.2f} (Prometheus saw {scraped_peak:.2f}); every rank's "
          "forward passes equal its replica's steps "
          f"{step_of}; heartbeats fresh; all-reduce time {allreduce:.3f} s")

    if args.front == "file":
        # ----- every dashboard query and recording rule returns data ------------------------------------
        # rate() and the recording rules need two scrapes of a series; a fast run can end within one,
        # so wait (bounded) until every recording rule has data (a ratio of two rates needs both;
        # under load one of them once had none when only two rules were awaited).
        recording = [r["name"] for g in prom.api("rules")["groups"] for r in g["rules"]
                     if r["type"] == "recording"]
        for rule in recording:
            wait_for_state(f"{rule} evaluated", lambda: (bool(prom.query_range(rule, t_job, time.time())),
                                                     "no data yet"), 30)
        end = time.time()
        n = 0
        empty = []
        for path in sorted(glob.glob(os.path.join(args.source_dir, "deploy", "grafana", "dashboards", "*.json"))):
            d = json.load(open(path))
            for where, expr in promql.dashboard_queries(d):
                n += 1
                for name in promql.metric_names(expr):
                    if ":" in name or name in promql.SYNTHETIC:
                        continue
                    base_name = promql.base_name(name, exported)
                    if base_name not in docs or base_name not in exported:
                        fail(f"{os.path.basename(path)} {where}: {name} is not documented and exported")
                lv = promql.grafana_label_values(expr)
                if lv:
                    series = prom.api("series", **{"match[]": lv[0], "start": f"{t_job:.3f}", "end": f"{end:.3f}"})
                    if not any(lv[1] in s for s in series):
                        empty.append(f"{os.path.basename(path)} {where}: {expr}")
                    continue
                if not prom.query_range(promql.substitute_grafana(expr), t_job, end):
                    empty.append(f"{os.path.basename(path)} {where}: {expr}")
        rules = 0
        for g in prom.api("rules")["groups"]:
            for r in g["rules"]:
                if r["type"] == "recording":
                    rules += 1
                    if not prom.query_range(r["name"], t_job, end):
                        empty.append(f"recording rule {r['name']}")
                if r.get("health") != "ok":
                    fail(f"rule {r['name']}: health {r.get('health')}: {r.get('lastError')}")
        if empty:
            fail("no data for:\n  " + "\n  ".join(empty))
        print(f"ok: all {n} dashboard queries and {rules} recording rules return data")

    # ----- shutdown ---------------------------------------------------------------------------------
    coord_pid = int(re.search(r"coordinator \(pid (\d+)\)", job.text()).group(1))
    os.kill(coord_pid, signal.SIGTERM)
    rc = job.wait(timeout=20)
    if rc is None:
        fail("the job did not end within 20 s of SIGTERM")
    if rc != 0:
        fail(f"mpirun exited {rc} after SIGTERM")
    for needle in ("received SIGTERM: draining", "drained:", "coordinator exits 0"):
        if needle not in job_text():
            fail(f"the coordinator's log lacks '{needle}'")
    print(f"ok: SIGTERM drained the job, every rank exited 0; test took {time.monotonic() - t_begin:.1f} s")


if __name__ == "__main__":
    main()
