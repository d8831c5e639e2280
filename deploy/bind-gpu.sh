#!/bin/sh
# bind-gpu.sh G COMMAND...: runs one worker rank on its own GPU (docs/deploy.md). Open MPI numbers
# the ranks of one host 0..n-1 (OMPI_COMM_WORLD_LOCAL_RANK, counting every app context of the
# job); on the coordinator's host the coordinator holds the first local rank(s), seen as a local
# size above G. The rank's GPU is its local rank past those, and CUDA_VISIBLE_DEVICES makes it the
# process's device 0. Under Slurm's srun the same comes from SLURM_LOCALID / SLURM_NTASKS_PER_NODE.
set -eu
[ $# -ge 2 ] || { echo "usage: bind-gpu.sh GPUS_PER_NODE COMMAND [ARGS...]" >&2; exit 2; }
gpus=$1
shift
local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-}}
local_size=${OMPI_COMM_WORLD_LOCAL_SIZE:-${SLURM_NTASKS_PER_NODE:-}}
if [ -z "$local_rank" ] || [ -z "$local_size" ]; then
  echo "bind-gpu.sh: no local rank (OMPI_COMM_WORLD_LOCAL_RANK / SLURM_LOCALID): run it under mpirun or srun" >&2
  exit 2
fi
offset=0
[ "$local_size" -le "$gpus" ] || offset=$((local_size - gpus))
gpu=$((local_rank - offset))
if [ "$gpu" -lt 0 ] || [ "$gpu" -ge "$gpus" ]; then
  echo "bind-gpu.sh: local rank $local_rank of $local_size has no GPU of $gpus (is the hostfile's slot count right?)" >&2
  exit 2
fi
# NCCL picks the NIC nearest the GPU itself; only the device is chosen here.
CUDA_VISIBLE_DEVICES=$gpu
export CUDA_VISIBLE_DEVICES
exec "$@"
