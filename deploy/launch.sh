#!/usr/bin/env bash
# Launches a shardserve job across hosts with Open MPI's mpirun (docs/deploy.md): world rank 0,
# the coordinator with the ZeroMQ front end, on the first host of the hostfile; replicas x tp
# worker ranks after it, one per GPU, a tensor-parallel group never split across hosts.
#
#   deploy/launch.sh --hostfile hosts --gpus-per-node 8 --tp 4 --replicas 4 \
#       --model /models/llama-3-70b --config /etc/shardserve/service.toml
#
# The hostfile is Open MPI's: one host per line (`slots=` and comments are ignored; the slots
# come from --gpus-per-node, plus one on the first host for the coordinator). Ranks are placed
# by slot in hostfile order, so worker world rank w runs on host (w - 1) / gpus-per-node and
# takes GPU (w - 1) % gpus-per-node of it; deploy/bind-gpu.sh sets CUDA_VISIBLE_DEVICES from
# the local rank. Everything else (ports, KV, scheduler, CURVE keys) is the service config's.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage() {
  cat <<'EOF'
usage: deploy/launch.sh --hostfile FILE --gpus-per-node G --tp T --model DIR [options] [-- mpirun args]
  --replicas R           replicas (default: every GPU of the hostfile / T)
  --config FILE          service configuration (TOML); ports, KV, scheduler, [security]
  --bin DIR              where coordinator and worker are
                         (default: $SHARDSERVE_BIN, else build/ beside deploy/, else /usr/lib/shardserve/bin)
  --coordinator EXE      the coordinator executable (default: found under --bin)
  --worker EXE           the worker executable (default: found under --bin)
  --network ib|sockets   NCCL over InfiniBand (default) or TCP sockets
  --iface IF             network interface (or CIDR for Open MPI) for MPI and NCCL bootstrap traffic
  --nvls on|off          NVLink SHARP multicast (NCCL_NVLS_ENABLE); default off
  --cpu                  no GPUs: ranks on the CPU (the demo; GPU binding skipped)
  --agent CMD            Open MPI's remote agent (plm_rsh_agent), default ssh
  --targets DIR          write Prometheus file_sd targets for this job into DIR
  --host-address H=ADDR  the address Prometheus reaches host H at (repeatable; default H)
  --dry-run              print the mpirun command instead of running it
EOF
}

hostfile="" gpus="" tp="" replicas="" model="" config="" bin="${SHARDSERVE_BIN:-}" coordinator="" worker=""
network=ib iface="" nvls=off cpu=0 agent="" targets="" dry_run=0
declare -A address=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) hostfile=$2; shift 2 ;;
    --gpus-per-node) gpus=$2; shift 2 ;;
    --tp) tp=$2; shift 2 ;;
    --replicas) replicas=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --coordinator) coordinator=$2; shift 2 ;;
    --worker) worker=$2; shift 2 ;;
    --network) network=$2; shift 2 ;;
    --iface) iface=$2; shift 2 ;;
    --nvls) nvls=$2; shift 2 ;;
    --cpu) cpu=1; shift ;;
    --agent) agent=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --host-address) address[${2%%=*}]=${2#*=}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "launch.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "launch.sh: $*" >&2; exit 2; }
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
[ -n "$hostfile" ] || die "--hostfile is required"
[ -r "$hostfile" ] || die "--hostfile $hostfile cannot be read"
is_count "${gpus:-x}" || die "--gpus-per-node must be a positive integer, got '${gpus}'"
is_count "${tp:-x}" || die "--tp must be a positive integer, got '${tp}'"
[ -n "$model" ] || die "--model is required"
[ -d "$model" ] || die "--model $model is not a directory (it must be the same path on every host)"
[ -z "$config" ] || [ -r "$config" ] || die "--config $config cannot be read"
case "$network" in ib|sockets) ;; *) die "--network must be ib or sockets, got '$network'" ;; esac
case "$nvls" in on|off) ;; *) die "--nvls must be on or off, got '$nvls'" ;; esac
# A tensor-parallel group stays on one host (its all-reduces want NVLink, not the network).
[ $((gpus % tp)) -eq 0 ] || die "--tp $tp does not divide --gpus-per-node $gpus: a TP group must not span hosts"

hosts=()
while read -r name _; do
  case "$name" in ''|'#'*) continue ;; esac
  hosts+=("$name")
done <"$hostfile"
[ ${#hosts[@]} -ge 1 ] || die "--hostfile $hostfile lists no host"
capacity=$(( ${#hosts[@]} * gpus / tp ))
[ -n "$replicas" ] || replicas=$capacity
is_count "$replicas" || die "--replicas must be a positive integer, got '$replicas'"
[ "$replicas" -le "$capacity" ] ||
  die "--replicas $replicas x --tp $tp needs $((replicas * tp)) GPUs; ${#hosts[@]} host(s) x $gpus have $((${#hosts[@]} * gpus))"
workers=$((replicas * tp))
used_hosts=$(( (workers + gpus - 1) / gpus ))

if [ -z "$bin" ]; then
  if [ -x "$here/../build/worker/worker" ]; then bin=$here/../build; else bin=/usr/lib/shardserve/bin; fi
fi
find_exe() {  # a build tree keeps executables in subfolders, an install in one
  local name=$1 dir
  for dir in "$bin" "$bin/coordinator/runtime" "$bin/worker"; do
    if [ -x "$dir/$name" ]; then echo "$dir/$name"; return 0; fi
  done
  return 1
}
[ -n "$coordinator" ] || coordinator=$(find_exe coordinator) || die "no coordinator under --bin $bin"
[ -n "$worker" ] || worker=$(find_exe worker) || die "no worker under --bin $bin"
[ -x "$coordinator" ] || die "--coordinator $coordinator is not executable"
[ -x "$worker" ] || die "--worker $worker is not executable"

# Open MPI's hostfile for this job: the coordinator's slot first, then one slot per GPU.
job_hostfile=$(mktemp "${TMPDIR:-/tmp}/shardserve-hosts.XXXXXX")
trap 'rm -f "$job_hostfile"' EXIT
for i in $(seq 0 $((used_hosts - 1))); do
  slots=$gpus
  [ "$i" -eq 0 ] && slots=$((gpus + 1))
  echo "${hosts[$i]} slots=$slots max_slots=$slots" >>"$job_hostfile"
done

# One value of the config: toml_value TABLE KEY DEFAULT (plain numbers only; enough for the
# ports and the grace period, which the coordinator validates properly).
toml_value() {
  local v=""
  [ -z "$config" ] || v=$(awk -F= -v t="[$1]" -v k="$2" '
    /^[[:space:]]*\[/ { s = $0; gsub(/[[:space:]]|#.*/, "", s); next }
    { key = $1; gsub(/[[:space:]]/, "", key) }
    s == t && key == k { val = $2; sub(/#.*/, "", val); gsub(/[^0-9.]/, "", val); print val }' "$config")
  echo "${v:-$3}"
}
metrics_port=$(toml_value ports metrics 9090)
grace=$(toml_value runtime shutdown_grace_s 30)
if [ -n "$targets" ]; then
  mkdir -p "$targets"
  [ "$metrics_port" -ne 0 ] || die "--targets: ports.metrics = 0 turns the metrics endpoints off"
  h0=${hosts[0]}
  printf -- '- targets: ["%s:%d"]\n  labels:\n    job_hosts: "%s"\n' \
    "${address[$h0]:-$h0}" "$metrics_port" "${hosts[*]:0:$used_hosts}" >"$targets/coordinator-shardserve.yml"
  {
    for w in $(seq 1 "$workers"); do
      h=${hosts[$(( (w - 1) / gpus ))]}
      printf -- '- targets: ["%s:%d"]\n  labels:\n    host: "%s"\n' "${address[$h]:-$h}" $((metrics_port + w)) "$h"
    done
  } >"$targets/workers-shardserve.yml"
fi

# MPI and NCCL environment (docs/deploy.md, "Network"). Exported with -x to every rank.
mca=(--mca btl "self,vader,tcp")  # MPI carries control messages; NCCL the tensors
envs=(OMP_NUM_THREADS NCCL_NVLS_ENABLE NCCL_IB_DISABLE)
NCCL_NVLS_ENABLE=0
[ "$nvls" = off ] || NCCL_NVLS_ENABLE=1
NCCL_IB_DISABLE=1
[ "$network" = sockets ] || NCCL_IB_DISABLE=0
export NCCL_NVLS_ENABLE NCCL_IB_DISABLE
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -n "$iface" ]; then
  mca+=(--mca oob_tcp_if_include "$iface" --mca btl_tcp_if_include "$iface")
  if [[ "$iface" != */* ]]; then
    export NCCL_SOCKET_IFNAME=$iface
    envs+=(NCCL_SOCKET_IFNAME)
  fi
fi
for v in NCCL_IB_HCA NCCL_DEBUG NCCL_NET_GDR_LEVEL NCCL_CROSS_NIC SHARDSERVE_CURVE_SERVER_KEY_FILE; do
  if [ -n "${!v:-}" ]; then envs+=("$v"); fi
done
[ -z "$agent" ] || mca+=(--mca plm_rsh_agent "$agent")
# SIGTERM to mpirun reaches every rank, then SIGKILL after odls_base_sigkill_timeout (1 s by
# default): give the coordinator's drain its grace period and some margin.
mca+=(--mca odls_base_sigkill_timeout "$(( ${grace%.*} + 15 ))")
# Failover (docs/RELIABILITY.md "Faults"): with more than one replica the job must outlive a dead
# rank, so that the coordinator moves that replica's requests to the others. Open MPI 4.1 ends the
# whole job at a rank's death unless told not to; the coordinator then kills the failed replica's
# ranks on its own host (others are told to exit), and after a coordinator's death the workers
# exit on their own after runtime.coordinator_timeout_s.
[ "$replicas" -le 1 ] || mca+=(--enable-recovery --mca orte_abort_on_non_zero_status 0)
xs=()
for v in "${envs[@]}"; do xs+=(-x "$v"); done
[ "$(id -u)" -ne 0 ] || mca+=(--allow-run-as-root)

worker_cmd=("$worker")
[ "$cpu" -eq 1 ] || worker_cmd=("$here/bind-gpu.sh" "$gpus" "$worker")
coordinator_args=(--model "$model" --tp "$tp" --replicas "$replicas")
[ -z "$config" ] || coordinator_args=(--config "$config" "${coordinator_args[@]}")

cmd=(mpirun --hostfile "$job_hostfile" --map-by slot --bind-to none "${mca[@]}" "${xs[@]}" "${extra[@]}"
     -np 1 "$coordinator" "${coordinator_args[@]}"
     : -np "$workers" "${worker_cmd[@]}")
echo "launch.sh: $replicas replica(s) x tp $tp on ${used_hosts} host(s) (${hosts[*]:0:$used_hosts}); coordinator on ${hosts[0]}" >&2
if [ "$dry_run" -eq 1 ]; then
  sed 's/^/launch.sh: hostfile: /' "$job_hostfile" >&2
  printf 'launch.sh: environment passed to every rank:' >&2
  for v in "${envs[@]}"; do printf ' %s=%s' "$v" "${!v}" >&2; done
  echo >&2
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
# SIGTERM/SIGINT starts the coordinator's drain (docs/runtime.md): no new requests, live ones
# get runtime.shutdown_grace_s, the workers are told to exit, every rank exits 0. A coordinator
# on this host is mpirun's own child and is signalled directly; otherwise mpirun forwards the
# signal to every rank (the workers wait for the coordinator's word), and then exits 1 even when
# every rank exits 0 (Open MPI counts a signalled job as failed: the log has the ranks' word).
"${cmd[@]}" &
pid=$!
signals=0
# shellcheck disable=SC2317  # called by the trap below
on_signal() {
  signals=$((signals + 1))
  local local_coordinator
  local_coordinator=$(pgrep -P "$pid" -x "$(basename "$coordinator" | cut -c1-15)" || true)
  if [ "$signals" -eq 1 ] && [ -n "$local_coordinator" ]; then
    echo "launch.sh: draining: SIGTERM to the coordinator (pid $local_coordinator)" >&2
    kill -TERM "$local_coordinator" 2>/dev/null || true
  else
    echo "launch.sh: SIGTERM to mpirun (forwarded to every rank)" >&2
    kill -TERM "$pid" 2>/dev/null || true
  fi
}
trap on_signal TERM INT
status=0
# A signal interrupts wait; wait again until mpirun itself has exited.
while :; do
  wait "$pid" && status=0 || status=$?
  kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
