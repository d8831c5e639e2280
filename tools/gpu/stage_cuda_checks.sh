#!/usr/bin/env bash
# Here (the CPU machine): build the CUDA test binaries and the benchmarks for sm_90a and stage
# them, with the shared libraries the GPU image lacks and the GPU-side script, in
# <carry-root>/.carry-cuda/ (ignored through the common .git/info/exclude) for one device run:
#
#   tools/gpu/stage_cuda_checks.sh [build-dir] [carry-root]
#   then the device tool's run with carry [".carry-cuda"] and command
#   "bash .carry-cuda/run_cuda_checks.sh"
#
# carry-root: the checkout the device tool sends (the session's, e.g. /work/main, when this runs
# in a helper's worktree: the tool sends that checkout, never the worktree); default: this one.
# The GPU side reads the fixtures and the demo model from that checkout's tests/fixtures and
# models/.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-cuda}
carry_root=${2:-$root}
cd "$root"
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qx '/.carry-cuda/' "$exclude" || echo '/.carry-cuda/' >> "$exclude"
cmake -S "$root" -B "$build" -G Ninja >/dev/null
# The served binaries (coordinator, worker and the GPU module the worker loads from its own
# directory) and the two-rank collective tests travel too: the service runs there under mpirun.
bins=(cuda_kernels_test cuda_runner_test cuda_quant_runner_test kernel_bench llama70b_bench
      coordinator worker shardserve_worker_gpu host_staged_collective_test nccl_collective_test
      quant_cuda_numerics_test quantize_bench quantize)
cmake --build "$build" --target "${bins[@]}" -j"$(nproc)"
dest=$carry_root/.carry-cuda
rm -rf "$dest" && mkdir -p "$dest/bin" "$dest/lib"
for b in tests/cuda/cuda_kernels_test tests/cuda/cuda_runner_test tests/cuda/cuda_quant_runner_test \
         bench/kernels/kernel_bench bench/kernels/llama70b_bench coordinator/runtime/coordinator \
         worker/worker worker/libshardserve_worker_gpu.so \
         tests/comm/host_staged_collective_test tests/comm/nccl_collective_test \
         tests/quant/quant_cuda_numerics_test bench/quantize/quantize_bench tools/quantize/quantize; do
  # --strip-unneeded keeps .dynsym: the module resolves its shardserve symbols against the
  # worker's exported ones.
  strip --strip-unneeded -o "$dest/bin/$(basename "$b")" "$build/$b"
done
/work/shared/device/pack-runtime.sh "$dest/lib" "$dest"/bin/* >/dev/null
# The quantizer's cuSOLVER and what it needs (cuSPARSE, nvJitLink) are 400 MB, over the carry
# limit, and CUDA runtime libraries the GPU image has (run_cuda_checks.sh quantize finds them
# there if the loader does not): never carried.
rm -f "$dest"/lib/libcusolver*.so* "$dest"/lib/libcusparse*.so* "$dest"/lib/libnvJitLink*.so*
cp tools/gpu/run_cuda_checks.sh "$dest/"
ls "$carry_root/tests/fixtures" "$carry_root/models" > "$dest/data.txt"
du -sh "$dest"
