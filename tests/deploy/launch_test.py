#!/usr/bin/env python3
"""deploy/launch.sh and deploy/bind-gpu.sh without a cluster (CTest deploy.launch):
  - bad sizes are refused with messages naming the flag and the numbers (a TP that does not
    divide the GPUs per node, more replicas than the hosts hold, no model, an unknown network);
  - --dry-run on 3 hosts x 8 GPUs, TP=4, 5 replicas: one mpirun, coordinator first (-np 1), 20
    workers behind bind-gpu.sh 8, NVLS off and IB on unless asked, the interface on both Open MPI
    and NCCL, the drain-length kill timeout from the config;
  - --targets: the coordinator on host 1, worker rank w at ports.metrics + w on host (w-1)/8;
  - bind-gpu.sh: the GPU from the local rank, past the coordinator's slot on the first host,
    and a clear error without a local rank or past the GPUs.
"""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile

problems = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        problems.append(what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--worker", required=True)
    args = ap.parse_args()
    src = os.path.realpath(args.source_dir)
    launch = os.path.join(src, "deploy", "launch.sh")
    bind = os.path.join(src, "deploy", "bind-gpu.sh")
    model = os.path.join(src, "models", "kjv-llama")
    with tempfile.TemporaryDirectory() as tmp:
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("# three GPU nodes\nnode-a slots=8\nnode-b\n\nnode-c slots=2\n")
        config = os.path.join(tmp, "service.toml")
        with open(config, "w") as f:
            f.write('model = "x"\n[ports]\nzmq = 5555\nmetrics_host = "0.0.0.0"\nmetrics=9300  # spacing varies\n'
                    '[ runtime ]\nshutdown_grace_s = 45.0\n')
        base = [launch, "--hostfile", hosts, "--model", model, "--coordinator", args.coordinator,
                "--worker", args.worker]

        def run(*extra, env=None):
            r = subprocess.run(base + list(extra), capture_output=True, text=True, timeout=30,
                               env=dict(os.environ, **(env or {})))
            return r.returncode, r.stdout, r.stderr

        rc, _, err = run("--gpus-per-node", "8", "--tp", "3", "--dry-run")
        check(rc == 2 and "--tp 3 does not divide --gpus-per-node 8" in err, f"TP across hosts refused: {err.strip()}")
        rc, _, err = run("--gpus-per-node", "8", "--tp", "4", "--replicas", "7", "--dry-run")
        check(rc == 2 and "--replicas 7 x --tp 4 needs 28 GPUs; 3 host(s) x 8 have 24" in err,
              f"too many replicas refused: {err.strip()}")
        rc, _, err = run("--gpus-per-node", "8", "--tp", "4", "--network", "myrinet", "--dry-run")
        check(rc == 2 and "--network must be ib or sockets" in err, "unknown network refused")
        r = subprocess.run([launch, "--hostfile", hosts, "--gpus-per-node", "8", "--tp", "4"],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "--model is required" in r.stderr, "no model refused")

        targets = os.path.join(tmp, "targets")
        rc, out, err = run("--gpus-per-node", "8", "--tp", "4", "--replicas", "5", "--config", config,
                           "--iface", "ib0", "--targets", targets, "--host-address", "node-b=10.0.0.2",
                           "--dry-run", env={"NCCL_IB_HCA": "mlx5_0"})
        check(rc == 0, f"dry run: rc {rc} {err}")
        words = shlex.split(out)
        check(words[0] == "mpirun" and words.count(":") == 1, "one mpirun, two app contexts")
        colon = words.index(":")
        first, second = words[:colon], words[colon + 1:]
        np = first.index("-np")
        check(first[np + 1] == "1" and first[np + 2] == args.coordinator, "the coordinator first, one process")
        check(second[:4] == ["-np", "20", bind, "8"] and second[4] == args.worker,
              f"20 workers behind bind-gpu.sh 8: {second}")
        i = first.index("--tp")
        check(first[i + 1] == "4" and first[first.index("--replicas") + 1] == "5", "tp and replicas passed on")
        flat = " ".join(words)
        for frag in ("--mca oob_tcp_if_include ib0", "--mca btl_tcp_if_include ib0",
                     "-x NCCL_NVLS_ENABLE", "-x NCCL_IB_DISABLE", "-x NCCL_SOCKET_IFNAME",
                     "-x NCCL_IB_HCA", "--mca odls_base_sigkill_timeout 60", "--map-by slot"):
            check(frag in flat, f"mpirun line has {frag}")
        check("5 replica(s) x tp 4 on 3 host(s) (node-a node-b node-c); coordinator on node-a" in err,
              "the layout is reported")
        for line in ("hostfile: node-a slots=9 max_slots=9", "hostfile: node-b slots=8 max_slots=8",
                     "hostfile: node-c slots=8 max_slots=8"):
            check(line in err, f"the job's hostfile: {line}")
        for kv in ("NCCL_NVLS_ENABLE=0", "NCCL_IB_DISABLE=0", "NCCL_SOCKET_IFNAME=ib0", "NCCL_IB_HCA=mlx5_0"):
            check(kv in err, f"by default: {kv}")
        coord = open(os.path.join(targets, "coordinator-shardserve.yml")).read()
        check('"node-a:9300"' in coord, "coordinator target on the first host")
        workers = open(os.path.join(targets, "workers-shardserve.yml")).read()
        for w, host in ((1, "node-a"), (8, "node-a"), (9, "10.0.0.2"), (16, "10.0.0.2"), (17, "node-c"), (20, "node-c")):
            check(f'"{host}:{9300 + w}"' in workers, f"worker rank {w} target on {host}")
        check('"node-c:9321"' not in workers and workers.count("targets") == 20, "exactly 20 worker targets")
        rc, out, err = run("--gpus-per-node", "8", "--tp", "8", "--network", "sockets", "--nvls", "on",
                           "--iface", "10.0.0.0/24", "--dry-run")
        check(rc == 0 and "NCCL_NVLS_ENABLE=1" in err and "NCCL_IB_DISABLE=1" in err and
              "NCCL_SOCKET_IFNAME" not in err and "-np 24" in out and "oob_tcp_if_include 10.0.0.0/24" in out,
              "--network sockets --nvls on, a CIDR interface (Open MPI only), replicas from the hosts: 3 x 8")

    def bind_gpu(local_rank, local_size, gpus="8"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "SLURM_"))}
        if local_rank is not None:
            env.update(OMPI_COMM_WORLD_LOCAL_RANK=str(local_rank), OMPI_COMM_WORLD_LOCAL_SIZE=str(local_size))
        r = subprocess.run([bind, gpus, "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES"'], capture_output=True,
                           text=True, timeout=10, env=env)
        return r.returncode, r.stdout.strip(), r.stderr.strip()

    check(bind_gpu(1, 9) == (0, "0", ""), "first host: local rank 1 (after the coordinator) -> GPU 0")
    check(bind_gpu(8, 9) == (0, "7", ""), "first host: local rank 8 -> GPU 7")
    check(bind_gpu(0, 8) == (0, "0", "") and bind_gpu(7, 8) == (0, "7", ""), "other hosts: local rank = GPU")
    rc, _, err = bind_gpu(0, 9)
    check(rc == 2 and "local rank 0 of 9 has no GPU of 8" in err, f"the coordinator's slot has no GPU: {err}")
    rc, _, err = bind_gpu(None, None)
    check(rc == 2 and "run it under mpirun or srun" in err, "no local rank: a clear error")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
