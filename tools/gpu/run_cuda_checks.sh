#!/usr/bin/env bash
# On the GPU machine (the device tool's `run`, carry [".carry-cuda"], staged by
# tools/gpu/stage_cuda_checks.sh; run from the sent checkout's root): the GPU tests, the
# LLaMA-70B W4 benchmark, compute-sanitizer memcheck and racecheck on the kernel tests.
# At most 8 files to $OUT; a short summary is printed last.
#   bash .carry-cuda/run_cuda_checks.sh [kernel_bench | ncu]   (kernel_bench: also the 8B op
#   benchmark; ncu: Nsight Compute counters of the W4 decode kernel, last)
# Environment: SERVICE=0 skips the served binaries' checks, SERVING_REQUESTS=0 the serving
# benchmark (a kernel-only run); MEMCHECK_FILTER / RACECHECK_FILTER pick the sanitizer tests.
set -uo pipefail
out=${OUT:-/tmp/cuda_checks}
mkdir -p "$out"
carry=$PWD/.carry-cuda
export LD_LIBRARY_PATH=$carry/lib:${LD_LIBRARY_PATH:-}
export SHARDSERVE_FIXTURES_DIR=$PWD/tests/fixtures
export SHARDSERVE_MODELS_DIR=$PWD/models
export NCCL_NVLS_ENABLE=0
bin=$carry/bin
sum=$out/summary.txt
status() { echo "$1: exit $2" >> "$sum"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv;
  compute-sanitizer --version 2>/dev/null | head -2; } > "$sum" 2>&1
cat "$sum"

# Inner limits add up to under 7 minutes (the device tool allows 10 per command; a session's
# device time is often shorter): most important first.
timeout 120 "$bin/cuda_kernels_test" > "$out/kernels_test.log" 2>&1; status kernels_test $?
# The served binaries under mpirun: the collectives on device buffers (NCCL at one rank; two
# ranks sharing the GPU over host-staged MPI), then device = "cuda" through the whole service
# (tp 1 against the CPU reference, tp 2 on one GPU against tp 1).
mpi=(mpirun --oversubscribe --allow-run-as-root -x OMP_NUM_THREADS=1 -x LD_LIBRARY_PATH
     -x NCCL_NVLS_ENABLE=0 --mca btl_vader_single_copy_mechanism none)
export OMP_NUM_THREADS=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
if [ "${SERVICE:-1}" != 0 ]; then
{ timeout 40 "${mpi[@]}" -np 1 "$bin/nccl_collective_test"; echo "nccl_collective_np1 exit $?"
  timeout 40 "${mpi[@]}" -np 2 "$bin/host_staged_collective_test"; echo "host_staged_collective_np2 exit $?"
  timeout 150 python3 tests/runtime/run_speculative_test.py cuda-tp --mpiexec mpirun \
    "--mpiexec-flags=--oversubscribe;--allow-run-as-root" --coordinator "$bin/coordinator" \
    --worker "$bin/worker" --model models/kjv-llama --draft models/kjv-llama-draft \
    --workdir /tmp/cuda_tp; echo "cuda_tp2_one_gpu exit $?"
  for f in /tmp/cuda_tp/*.log; do echo "---- $f"; tail -25 "$f"; done; } > "$out/service.log" 2>&1
status service "$(grep -c ' exit 0$' "$out/service.log") of 3 passed"
fi
{ timeout 90 "$bin/cuda_quant_runner_test"; echo "quant_runner_test exit $?";
  timeout 120 "$bin/cuda_runner_test"; echo "runner_test exit $?"; } > "$out/runner_test.log" 2>&1
status runner_tests "$(grep -c 'test exit 0' "$out/runner_test.log") of 2 binaries passed"
timeout 180 "$bin/llama70b_bench" "$out/llama70b-h200-tp1.json" > "$out/bench.log" 2>&1
status llama70b_bench $?
# Issue 17 (d): the serving run through the coordinator on the 70B shape (random W4 weights),
# its ceilings from the benchmark JSON just written; table and result into bench.log.
if [ "${SERVING_REQUESTS:-1000}" != 0 ]; then
timeout "${SERVING_TIMEOUT:-330}" python3 bench/serving/serving_bench.py --coordinator "$bin/coordinator" \
  --worker "$bin/worker" --workdir /tmp/serving --requests "${SERVING_REQUESTS:-1000}" \
  --timeout "$(( ${SERVING_TIMEOUT:-330} - 20 ))" --merge-into "$out/llama70b-h200-tp1.json" \
  --md /tmp/serving/serving.md >> "$out/bench.log" 2>&1; status serving $?
fi
cat /tmp/serving/serving.md >> "$out/bench.log" 2>/dev/null
grep -E "KV pool|error|failed|graphs|replica 0:" /tmp/serving/serving.log 2>/dev/null | tail -12 >> "$out/bench.log"
if [ "${1:-}" = ncu ]; then
  # Hardware counters of the W4 decode kernel at batch 1 (70B TP-1 projections, timed runs).
  timeout 75 ncu --clock-control none -k regex:w4_mma_kernel --launch-skip 12 --launch-count 4 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
    --section MemoryWorkloadAnalysis "$bin/llama70b_bench" /tmp/ncu_bench.json > "$out/ncu.log" 2>&1
  status ncu $?
fi
if [ "${1:-}" = kernel_bench ]; then
  timeout 90 "$bin/kernel_bench" "$out/kernel_bench.tsv" >> "$out/bench.log" 2>&1; status kernel_bench $?
fi
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/cuda_kernels_test" \
  --gtest_filter="${MEMCHECK_FILTER:-*QuantGemm*:CudaSampling*:CudaLogSoftmax*}" > "$out/memcheck.log" 2>&1; status memcheck $?
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 "$bin/cuda_kernels_test" \
  --gtest_filter="${RACECHECK_FILTER:-*QuantGemm.Decode*:CudaSampling*:CudaLogSoftmax*}" > "$out/racecheck.log" 2>&1; status racecheck $?

echo "==== summary"; cat "$sum"
for f in kernels_test runner_test; do
  echo "==== $f"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|Failure|error|divergence|greedy|worst|fallback|exit" "$out/$f.log" | head -50
done
echo "==== service"; grep -E "exit|ok:|FAIL|Failure|divergence|equal|error|shares a GPU" "$out/service.log" | head -40
for f in memcheck racecheck; do echo "==== $f"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$out/$f.log" | tail -4; done
echo "==== bench"; grep -vE "^\s*$" "$out/bench.log" | tail -80
if [ -f "$out/ncu.log" ]; then
  echo "==== ncu"; grep -E "w4_mma_kernel|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Issued Warp|No Eligible|Block Limit|Compute \(SM\)|L1/TEX Hit|L2 Hit|Stall|long_scoreboard|Waves Per SM" "$out/ncu.log" | head -70
fi
