#!/usr/bin/env python3
"""device = "cuda" on a host without a GPU, in a CUDA build (whose worker loads the GPU runner
module, worker/gpu_backend.h), under mpirun, for CTest.

tp 2 on the demo model with the metrics endpoints on. Asserts:
  * every worker rank started its Prometheus endpoint (civetweb) and logged its URL: the worker of
    a CUDA build serves metrics (linked in, cuBLASLt's static TLS had made that impossible);
  * start-up fails with the coordinator naming a failed rank, device = "cuda", "no GPU found" and
    the host; no MPI_ABORT;
  * mpirun exits non-zero within 60 s and no process of its session (the ranks) survives it.
The job helpers (own session, bounded waits, killed on failure) are run_service_test.py's.
"""
import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from run_service_test import Job, fail, write_config  # noqa: E402
from service_testing import cmake_list, free_port_range  # noqa: E402


def session_members(sid):
    """Live (non-zombie) processes of session `sid`, as "pid command"."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue
        fields = rest.split()
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(f"{pid} {head.partition('(')[2]}")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--mpiexec-flags", default="")
    p.add_argument("--coordinator", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    args.mpiexec_flags = cmake_list(args.mpiexec_flags)
    # On a GPU host device = "cuda" is served, not refused: nothing to test there (77 = skipped).
    gpu = [d for d in ("/dev/nvidiactl", "/dev/nvidia0") if os.path.exists(d)]
    if gpu:
        print(f"skipped: this host has a GPU ({gpu[0]})")
        sys.exit(77)
    os.makedirs(args.workdir, exist_ok=True)
    tp = 2
    config = os.path.join(args.workdir, "cuda.toml")
    # One free range: metrics (coordinator base, worker w base + w), then ZeroMQ and HTTP.
    base = free_port_range(tp + 3)
    write_config(config, args.model, tp,
                 ports={"metrics": base, "zmq": base + tp + 1, "http": base + tp + 2})
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write('device = "cuda"\n' + text)
    job = Job(args, args.workdir, "device_refused", ["--config", config, "--prompt", "In the beginning"], tp)
    try:
        rc = job.wait(60)
        if rc is None:
            fail("the job did not end within 60 s", job.log)
        text = job.text()
        if rc == 0:
            fail("mpirun exited 0 although no rank has a GPU", job.log)
        for w in range(1, tp + 1):
            if not re.search(rf"\[worker {w}\] \[info\] metrics: http://127\.0\.0\.1:{base + w}/metrics", text):
                fail(f"worker rank {w} did not serve its metrics endpoint on port {base + w}", job.log)
        m = re.search(r"start-up failed: .*world rank (\d) .*failed: device = \"cuda\": no GPU found on "
                      r"host (\S+) \(world rank \d+; [^)]*\)", text)
        if not m:
            fail("no coordinator message naming the rank, device = \"cuda\", no GPU and the host", job.log)
        if "MPI_ABORT" in text:
            fail("the refusal ended in MPI_Abort; want a reported start-up failure", job.log)
        # mpirun ran in its own session (Job): every rank it started is in that session.
        sid = job.proc.pid
        deadline = time.monotonic() + 5
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = session_members(sid)
        if left:
            fail(f"processes of the job outlived mpirun: {left}", job.log)
        print(f"ok: device = \"cuda\" refused on host {m.group(2)} (world rank {m.group(1)} reported), "
              f"every worker served /metrics first, no process of the job left (status {rc})")
    finally:
        job.kill()


if __name__ == "__main__":
    main()
