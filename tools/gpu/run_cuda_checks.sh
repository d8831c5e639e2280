#!/usr/bin/env bash
# On the GPU machine (the device tool's `run`, carry [".carry-cuda"], staged by
# tools/gpu/stage_cuda_checks.sh): the GPU tests, compute-sanitizer memcheck and racecheck on
# the kernel tests, and the kernel benchmark. Logs go to $OUT (7 files: the tool returns 8 at
# most); a short summary is printed last.
set -uo pipefail
out=${OUT:-/tmp/cuda_checks}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/.carry-cuda/lib:${LD_LIBRARY_PATH:-}
export SHARDSERVE_FIXTURES_DIR=$PWD/tests/fixtures
export NCCL_NVLS_ENABLE=0
bin=$PWD/.carry-cuda/bin
status() { echo "$1: exit $2" >> "$out/summary.txt"; }
: > "$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv;
  nvcc --version 2>/dev/null | tail -1; compute-sanitizer --version 2>/dev/null | head -2; } \
  > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

# Inner limits add up to 9 minutes, under the device tool's 10 per command.
timeout 60 "$bin/cuda_kernels_test" > "$out/kernels_test.log" 2>&1; status kernels_test $?
timeout 120 "$bin/cuda_runner_test" > "$out/runner_test.log" 2>&1; status runner_test $?
timeout 90 "$bin/kernel_bench" "$out/bench.tsv" > "$out/bench.log" 2>&1; status kernel_bench $?
# The sanitizers on our kernels; cuBLAS's GEMM test is left to memcheck alone.
timeout 135 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/cuda_kernels_test" \
  > "$out/memcheck.log" 2>&1; status memcheck $?
timeout 135 compute-sanitizer --tool racecheck --error-exitcode 9 "$bin/cuda_kernels_test" \
  --gtest_filter=-*Gemm* > "$out/racecheck.log" 2>&1; status racecheck $?

echo "==== summary"; cat "$out/summary.txt"
for f in kernels_test runner_test; do
  echo "==== $f"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|Failure|error|divergence|greedy|worst|memory:|attention heads|out-of-memory" "$out/$f.log" | head -60
done
for f in memcheck racecheck; do echo "==== $f"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$out/$f.log" | tail -4; done
echo "==== bench"; sed -n '/copy roofline/,$p' "$out/bench.log"
