#!/usr/bin/env bash
# The service demo: mpirun launches the CPU cluster (the coordinator serving the ZeroMQ job API,
# world rank 0, and one worker rank) with the demo model; a job submitted over ZeroMQ with
# `llmctl stream` streams its completion to the terminal; the coordinator's Prometheus endpoint
# counts it; then the coordinator is sent SIGTERM, drains, tells the worker to exit, and the job
# ends with every rank's exit status 0.
#   client/demo_service.sh ["prompt"]        (BUILD_DIR: the build folder, default ./build;
#                                             METRICS_PORT: the coordinator's metrics port, worker
#                                             rank w uses it + w; default 9090, 0: off)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
model=${MODEL:-$root/models/kjv-llama}
prompt=${1:-And God said unto Moses,}
mpi_flags=()
if mpiexec --version 2>&1 | grep -q "Open MPI\|OpenRTE"; then mpi_flags=(--oversubscribe --allow-run-as-root); fi
log=$(mktemp -t shardserve-demo.XXXXXX.log)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} setsid mpiexec "${mpi_flags[@]}" \
  -np 1 "$build/coordinator/runtime/coordinator" --model "$model" --listen tcp://127.0.0.1:* \
  --kv-num-blocks 512 --shutdown-grace 5 --metrics-port "${METRICS_PORT:-9090}" \
  : -np 1 "$build/worker/worker" >"$log" 2>&1 &
job=$!
trap 'kill -KILL -- -$job 2>/dev/null || true; rm -f "$log"' EXIT
endpoint=""
for _ in $(seq 1 600); do
  endpoint=$(sed -n 's/^listening on \(tcp:[^ ]*\).*/\1/p' "$log" | head -n1)
  [ -n "$endpoint" ] && break
  if ! kill -0 "$job" 2>/dev/null; then cat "$log"; echo "demo: the service did not start" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$endpoint" ] || { cat "$log"; echo "demo: no endpoint after 60 s" >&2; exit 1; }
echo "[service on $endpoint: mpirun -np 1 coordinator : -np 1 worker, model $(basename "$model")]" >&2
printf '%s' "$prompt"
"$build/client/llmctl" --endpoint "$endpoint" stream --prompt "$prompt" --max-tokens 64 \
  --temperature 0.8 --top-p 0.95 --top-k 50 --seed 1
"$build/client/llmctl" --endpoint "$endpoint" status | head -n 3 >&2
metrics=$(sed -n 's/.*metrics: \(http:[^ ]*\).*/\1/p' "$log" | head -n1)
if [ -n "$metrics" ] && command -v curl >/dev/null; then
  echo "[$metrics:]" >&2
  curl -fsS "$metrics" | grep -E '^shardserve_(requests_finished_total|generation_tokens_total)\{' \
    | grep -v ' 0$' >&2 || true
fi
pid=$(sed -n 's/.*coordinator (pid \([0-9]*\)).*/\1/p' "$log" | head -n1)
kill -TERM "$pid"  # as a service manager stops it
rc=0
wait "$job" || rc=$?
trap 'rm -f "$log"' EXIT
echo "[SIGTERM to the coordinator: drained, workers told to exit; mpirun exited $rc]" >&2
exit $rc
