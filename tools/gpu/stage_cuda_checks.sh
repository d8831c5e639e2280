#!/usr/bin/env bash
# Here (the CPU machine): build the CUDA test binaries and the kernel benchmark for sm_90a and
# stage them, with the shared libraries the GPU image lacks, in .carry-cuda/ (ignored by git through
# .git/info/exclude) for one device run:
#
#   tools/gpu/stage_cuda_checks.sh [build-dir]
#   then the device tool's run with carry [".carry-cuda"] and command
#   "bash tools/gpu/run_cuda_checks.sh"
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-cuda}
cd "$root"
grep -qx '/.carry-cuda/' .git/info/exclude || echo '/.carry-cuda/' >> .git/info/exclude
cmake -S "$root" -B "$build" -G Ninja >/dev/null
cmake --build "$build" --target cuda_kernels_test cuda_runner_test kernel_bench -j"$(nproc)"
rm -rf .carry-cuda && mkdir -p .carry-cuda/bin .carry-cuda/lib
for b in tests/cuda/cuda_kernels_test tests/cuda/cuda_runner_test bench/kernels/kernel_bench; do
  strip -o ".carry-cuda/bin/$(basename "$b")" "$build/$b"
done
/work/shared/device/pack-runtime.sh .carry-cuda/lib .carry-cuda/bin/* >/dev/null
# The fixtures travel with the tree when they are committed; say what is there.
ls tests/fixtures > .carry-cuda/fixtures.txt
du -sh .carry-cuda
