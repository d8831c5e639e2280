#!/usr/bin/env python3
"""Drives the whole service under mpirun for CTest: `mpirun -np 1 coordinator ... : -np N worker`.

Scenarios (one per CTest test):
  serve         R replicas x TP ranks serve a batch of greedy requests; every request completes
                with the expected number of tokens and the tokens of the single-process reference.
  kill          without Open MPI's recovery options: kill -9 of one worker rank mid-run ends the
                job within 10 s, non-zero, with a message naming the dead rank; no rank survives.
  hang          without the recovery options: SIGSTOP of one worker rank mid-run (alive but
                silent): the coordinator's step timeout gives the replica up (it kills the
                replica's ranks, which makes mpirun end the job), naming the replica.
(Failover with the recovery options: run_fault_test.py.)
  sigterm       SIGTERM to the coordinator mid-run: it drains (grace period, then cancels), tells
                the workers to exit, and every rank exits 0; every request has a final record.
  config-error  an invalid setting: the coordinator names it and every rank exits promptly.
  startup-error every worker fails during start-up (no room for one KV block): the coordinator
                names the rank and the setting, tells the workers to exit, and the job ends.
Every wait is bounded; on any failure the job's process group is killed.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from service_testing import Proc, alive, cmake_list, rank_pids, read_jsonl  # noqa: E402,F401 (re-exported)


def fail(msg, log=None):
    print("FAIL:", msg)
    if log and os.path.exists(log):
        print("----- job log -----")
        print(open(log, errors="replace").read()[-20000:])
    sys.exit(1)


class Job(Proc):
    """`mpirun -np 1 coordinator ... : -np N worker` as a Proc (own session, output in a log,
    killed with its process group at exit)."""

    def __init__(self, args, workdir, name, coordinator_args, np_workers):
        cmd = [args.mpiexec] + args.mpiexec_flags + ["-np", "1", args.coordinator] + coordinator_args
        cmd += [":", "-np", str(np_workers), args.worker]
        super().__init__(name, cmd, workdir)
        self.start = time.monotonic()

    def rank_pids(self):
        """World rank -> pid, from the coordinator's start-up log."""
        return rank_pids(self.text())


def write_config(path, model, tp, **sections):
    # Batch jobs need no metrics endpoint: the default port may be taken by another job on the
    # machine (a scenario that scrapes passes its own free ports).
    sections.setdefault("ports", {"metrics": 0})
    lines = [f'model = "{model}"', f"tp = {tp}"]
    for table, values in sections.items():
        lines.append(f"[{table}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_tiny_model(args, workdir):
    model = os.path.join(workdir, "tiny")
    subprocess.run([args.fixture_tool, "make-model", model, "7"], check=True, timeout=60)
    return model


def make_requests(args, path, n, max_tokens, seed=1):
    subprocess.run([args.fixture_tool, "make-requests", path, str(n), str(max_tokens), "61", str(seed)],
                   check=True, timeout=60)


def scenario_serve(args, workdir):
    tp, replicas = args.tp, args.replicas
    if args.fixture:
        model = args.fixture
        ref = json.load(open(os.path.join(model, "reference.json")))
        requests = os.path.join(workdir, "requests.jsonl")
        expected_text = {}
        with open(requests, "w") as f:
            for i, p in enumerate(ref["prompts"] * 3):  # each prompt three times, as 12 requests
                r = {"id": f"req-{i}", "max_tokens": 32, "temperature": 0.0, "ignore_eos": True}
                if i % 2:
                    r["prompt"] = p["text"]  # encoded by the coordinator's tokenizer
                else:
                    r["prompt_ids"] = p["ids"]
                f.write(json.dumps(r) + "\n")
                decoded = subprocess.run([args.fixture_tool, "decode", model,
                                          ",".join(map(str, p["greedy"][:32]))],
                                         check=True, timeout=60, capture_output=True, text=True)
                expected_text[f"req-{i}"] = json.loads(decoded.stdout)
        expected = {f"req-{i}": p["greedy"][:32] for i, p in enumerate(ref["prompts"] * 3)}
    else:
        model = make_tiny_model(args, workdir)
        requests = os.path.join(workdir, "requests.jsonl")
        make_requests(args, requests, 16, 32)
        reference = os.path.join(workdir, "reference.jsonl")
        subprocess.run([args.fixture_tool, "reference", model, requests, reference], check=True, timeout=60)
        expected = {r["id"]: r["output_ids"] for r in read_jsonl(reference)}
        expected_text = {}
    config = os.path.join(workdir, "service.toml")
    # A small pool so that requests queue, and max_num_seqs below the batch so admission waits.
    write_config(config, model, tp, kv={"num_blocks": 40, "block_size": 16},
                 scheduler={"max_num_seqs": 6, "max_num_batched_tokens": 128, "max_model_len": 256})
    output = os.path.join(workdir, "outputs.jsonl")
    job = Job(args, workdir, "serve", ["--config", config, "--requests", requests, "--output", output],
              tp * replicas)
    try:
        rc = job.wait(50)
        elapsed = time.monotonic() - job.start
        if rc is None:
            fail("the job did not end within 50 s", job.log)
        if rc != 0:
            fail(f"mpirun exited {rc}", job.log)
        got = {r["id"]: r for r in read_jsonl(output)}
        if set(got) != set(expected):
            fail(f"finished {sorted(got)} but expected {sorted(expected)}", job.log)
        used = set()
        for rid, want in expected.items():
            r = got[rid]
            if r["finish_reason"] != "length" or r["output_tokens"] != len(want):
                fail(f"{rid}: {r['finish_reason']} after {r['output_tokens']} tokens, want length after {len(want)}", job.log)
            if r["output_ids"] != want:
                fail(f"{rid}: tokens {r['output_ids']} differ from the reference {want}", job.log)
            if not 0 < r["ttft_s"] <= r["latency_s"] < elapsed:
                fail(f"{rid}: ttft_s {r['ttft_s']} and latency_s {r['latency_s']} are not "
                     f"0 < ttft <= latency < the job's {elapsed:.1f} s", job.log)
            if rid in expected_text and r["text"] != expected_text[rid]:
                fail(f"{rid}: text {r['text']!r} differs from decode() {expected_text[rid]!r}", job.log)
            used.add(r["replica"])
        if used != set(range(replicas)):
            fail(f"requests went to replicas {sorted(used)}, want all of 0..{replicas - 1}", job.log)
        text = job.text()
        for w in range(1, tp * replicas + 1):
            if f"[worker {w}] [info] shutdown" not in text:
                fail(f"worker {w} did not log its shutdown", job.log)
        print(f"ok: {len(got)} requests over {replicas} replica(s) x tp {tp} match the reference; "
              f"job took {elapsed:.2f} s")
    finally:
        job.kill()


# Far more work than any machine finishes in the few seconds a scenario lasts: the CI machine ran
# 64 x 220 tokens in 0.8 s, so a fixed small workload made the drain test depend on speed.
LONG_REQUESTS = 1024


def long_running_job(args, workdir, name, runtime=None, keep_running=False):
    model = make_tiny_model(args, workdir)
    requests = os.path.join(workdir, "requests.jsonl")
    make_requests(args, requests, LONG_REQUESTS, 220)
    config = os.path.join(workdir, "service.toml")
    sections = {"kv": {"num_blocks": 64, "block_size": 16},
                "scheduler": {"max_num_seqs": 1, "max_num_batched_tokens": 64, "max_model_len": 256}}
    if runtime:
        sections["runtime"] = runtime
    write_config(config, model, 2, **sections)
    output = os.path.join(workdir, "outputs.jsonl")
    extra = ["--keep-running"] if keep_running else []
    job = Job(args, workdir, name, ["--config", config, "--requests", requests, "--output", output] + extra, 4)
    job.wait_for(rf"serving: {LONG_REQUESTS} request", 30)
    # Mid-run: 1024 requests x 220 tokens, one at a time per replica, take about 110000 steps per
    # replica (over ten seconds at the 17000 tokens/s the CI machine reached).
    time.sleep(0.5)
    return job, output


def scenario_kill(args, workdir):
    job, output = long_running_job(args, workdir, "kill", keep_running=True)
    try:
        pids = job.rank_pids()
        victim = 3  # replica 1, tp rank 0
        if len(read_jsonl(output)) == LONG_REQUESTS:
            fail("the requests finished before the kill; the test needs a longer workload", job.log)
        t0 = time.monotonic()
        os.kill(pids[victim], signal.SIGKILL)
        rc = job.wait(20)
        elapsed = time.monotonic() - t0
        if rc is None:
            fail(f"the job still runs {elapsed:.1f} s after world rank {victim} was killed", job.log)
        if rc == 0:
            fail("mpirun exited 0 although a rank was killed", job.log)
        if elapsed > 10:
            fail(f"the job took {elapsed:.1f} s (> 10 s) to end after the kill", job.log)
        text = job.text()
        if not re.search(rf"process rank {victim} .*exited on signal 9", text):
            fail(f"no message naming the dead rank {victim}", job.log)
        time.sleep(0.2)
        survivors = [r for r, p in pids.items() if alive(p)]
        if survivors:
            fail(f"ranks {survivors} are still alive after the job ended", job.log)
        print(f"ok: killed world rank {victim} (pid {pids[victim]}); job ended in {elapsed:.2f} s "
              f"with status {rc} and mpirun's message naming the rank")
    finally:
        job.kill()


def scenario_hang(args, workdir):
    job, output = long_running_job(args, workdir, "hang", runtime={"step_timeout_s": 2.0})
    try:
        pids = job.rank_pids()
        victim = 4  # replica 1, tp rank 1: its peer waits in an all-reduce, the coordinator for a result
        if len(read_jsonl(output)) == LONG_REQUESTS:
            fail("the requests finished before the stop; the test needs a longer workload", job.log)
        t0 = time.monotonic()
        os.kill(pids[victim], signal.SIGSTOP)
        rc = job.wait(20)
        elapsed = time.monotonic() - t0
        if rc is None:
            fail(f"the job still runs {elapsed:.1f} s after world rank {victim} was stopped", job.log)
        if rc == 0 or elapsed > 10:
            fail(f"the job ended with status {rc} after {elapsed:.1f} s; want non-zero within 10 s", job.log)
        if not re.search(r"replica 1 \(world ranks 3-4\) sent no result for step \d+ within", job.text()):
            fail("no coordinator message naming the silent replica", job.log)
        time.sleep(0.2)
        survivors = [r for r, p in pids.items() if alive(p)]
        if survivors:
            fail(f"ranks {survivors} are still alive after the job ended", job.log)
        print(f"ok: stopped world rank {victim}; the step timeout ended the job in {elapsed:.2f} s")
    finally:
        job.kill()


def scenario_sigterm(args, workdir):
    grace = 0.5
    job, output = long_running_job(args, workdir, "sigterm", runtime={"shutdown_grace_s": grace})
    try:
        pids = job.rank_pids()
        if len(read_jsonl(output)) == LONG_REQUESTS:
            fail("the requests finished before the signal; the test needs a longer workload", job.log)
        t0 = time.monotonic()
        os.kill(pids[0], signal.SIGTERM)
        rc = job.wait(20)
        elapsed = time.monotonic() - t0
        if rc is None:
            fail(f"the job still runs {elapsed:.1f} s after SIGTERM", job.log)
        if rc != 0:
            fail(f"mpirun exited {rc} after SIGTERM; every rank must exit 0", job.log)
        if elapsed > grace + 5:
            fail(f"the drain took {elapsed:.1f} s (grace {grace} s)", job.log)
        text = job.text()
        for needle in ["received SIGTERM: draining", "cancelling the running requests", "drained:",
                       "coordinator exits 0"]:
            if needle not in text:
                fail(f"log lacks '{needle}'", job.log)
        for w in range(1, 5):
            if f"[worker {w}] [info] shutdown" not in text:
                fail(f"worker {w} did not log its shutdown", job.log)
        records = read_jsonl(output)
        reasons = {}
        for r in records:
            reasons[r["finish_reason"]] = reasons.get(r["finish_reason"], 0) + 1
        if len(records) != LONG_REQUESTS or set(reasons) - {"length", "cancelled", "rejected:shutting down"}:
            fail(f"{len(records)} records with reasons {reasons}; want {LONG_REQUESTS} finished or cancelled", job.log)
        if reasons.get("cancelled", 0) == 0:
            fail("nothing was cancelled: the workload ended before the grace period did", job.log)
        print(f"ok: SIGTERM -> drained in {elapsed:.2f} s, every rank exited 0; records {reasons}")
    finally:
        job.kill()


def scenario_config_error(args, workdir):
    model = make_tiny_model(args, workdir)
    config = os.path.join(workdir, "service.toml")
    write_config(config, model, 3)  # 3 workers: the world fits, but the tiny model has 4 heads
    job = Job(args, workdir, "config_error", ["--config", config], 3)
    try:
        rc = job.wait(20)
        elapsed = time.monotonic() - job.start
        if rc is None:
            fail("the job did not end within 20 s", job.log)
        if rc == 0:
            fail("mpirun exited 0 for an invalid configuration", job.log)
        if "configuration error: tp = 3 does not divide num_attention_heads = 4" not in job.text():
            fail("no message naming the setting", job.log)
        print(f"ok: invalid tp refused with a message naming it; job ended in {elapsed:.2f} s (status {rc})")
    finally:
        job.kill()


def scenario_startup_error(args, workdir):
    model = make_tiny_model(args, workdir)
    config = os.path.join(workdir, "service.toml")
    # 100 bytes of KV per rank: every worker fails to size its pool and reports it.
    write_config(config, model, 2, kv={"memory_bytes": 100})
    job = Job(args, workdir, "startup_error", ["--config", config], 4)
    try:
        rc = job.wait(20)
        elapsed = time.monotonic() - job.start
        if rc is None:
            fail("the job did not end within 20 s", job.log)
        if rc == 0:
            fail("mpirun exited 0 although start-up failed", job.log)
        text = job.text()
        if not re.search(r"start-up failed: start-up: world rank \d \(replica \d, tp rank \d of 2\) failed: "
                         r"KV pool: kv.memory_bytes = 100 leaves room for no block", text):
            fail("no coordinator message naming the failed rank and the setting", job.log)
        if "MPI_ABORT" in text:
            fail("start-up failure ended in MPI_Abort; want Abort messages and a clean exit", job.log)
        print(f"ok: start-up failure reported by rank and setting; job ended in {elapsed:.2f} s (status {rc})")
    finally:
        job.kill()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["serve", "kill", "hang", "sigterm", "config-error",
                                        "startup-error"])
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--mpiexec-flags", default="")
    p.add_argument("--coordinator", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--fixture-tool", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--fixture", default="")
    args = p.parse_args()
    args.mpiexec_flags = cmake_list(args.mpiexec_flags)
    os.makedirs(args.workdir, exist_ok=True)
    {"serve": scenario_serve, "kill": scenario_kill, "hang": scenario_hang,
     "sigterm": scenario_sigterm, "config-error": scenario_config_error,
     "startup-error": scenario_startup_error}[args.scenario](args, args.workdir)


if __name__ == "__main__":
    main()
