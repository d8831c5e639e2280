#!/usr/bin/env bash
# On the GPU machine (the device tool's `run`, carry [".carry-cuda"], staged by
# tools/gpu/stage_cuda_checks.sh; run from the sent checkout's root): the GPU tests, the
# LLaMA-70B W4 benchmark, compute-sanitizer memcheck and racecheck on the kernel tests.
# At most 8 files to $OUT; a short summary is printed last.
#   bash .carry-cuda/run_cuda_checks.sh [kernel_bench | ncu | profile | steps | quantize]
#   (kernel_bench: also the 8B op benchmark; ncu: Nsight Compute counters and per-instruction stalls of the W4
#   decode kernel or NCU_KERNEL, last, in place of the sanitizers; profile: only the kernel
#   tests, then the same counters for each KERNEL:ROWS of NCU_PROFILES (default: the tiled
#   kernel at 16, 64 and 256 rows, the decode kernel at 1) on the gate_up projection of a 70B
#   layer, their per-instruction tables in profiles.tgz; steps: only the kernel tests, then each
#   kernel's launches and mean time over whole decode steps at STEP_BATCHES; quantize: only
#   the GPU quantizer's test, memcheck and benchmark, and the quantize tool on the demo model
#   with --device cpu and cuda compared, into quantize.log, and nothing else)
# Environment: SERVICE=0 skips the served binaries' checks, SERVING_REQUESTS=0 the serving
# benchmark (a kernel-only run); MEMCHECK_FILTER / RACECHECK_FILTER pick the sanitizer tests;
# NCU_KERNEL (a regex, default w4_decode_kernel; w4_tc_kernel: the tiled kernel) the ncu mode's.
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

# Nsight Compute on one launch of `llama70b_bench ARGS...`: the (SKIP + 1)th of the kernels whose
# demangled name matches REGEX, with its sections and every SASS instruction's stall samples.
# Details go to ncu.log; tools/gpu/ncu_source_profile.py condenses the instructions per UNITS
# of work into TSV and a summary (/tmp/profiles/NAME.txt, also appended to ncu.log).
#   ncu_profile NAME REGEX SKIP UNITS TSV LIMIT_S ARGS...
ncu_profile() {
  local name=$1 regex=$2 skip=$3 units=$4 tsv=$5 limit=$6 rep=/tmp/profiles/$1
  shift 6
  mkdir -p /tmp/profiles
  timeout "$limit" ncu --clock-control none --kernel-name-base demangled -k "regex:$regex" \
    --launch-skip "$skip" --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section InstructionStats \
    --section ComputeWorkloadAnalysis --section LaunchStats --section SourceCounters \
    -o "$rep" "$bin/llama70b_bench" "$@" >> "$out/ncu.log" 2>&1
  status "ncu $name" $?
  ncu -i "$rep.ncu-rep" --page details >> "$out/ncu.log" 2>&1
  ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "$rep.csv" 2>&1
  python3 tools/gpu/ncu_source_profile.py "$rep.csv" --units "$units" --tsv "$tsv" > "$rep.txt" 2>&1
  status "profile $name" $?
  cat "$rep.txt" >> "$out/ncu.log"
}

if [ "${1:-}" = profile ]; then
  # About 40 s per profile: the benchmark's ceilings and its TP 1 layer table at those rows
  # alone (--layers-only --batches), the kernel's 7th launch (the second warm-up's gate_up,
  # 57344 x 8192: 458752 code tiles) replayed by Nsight Compute.
  timeout 120 "$bin/cuda_kernels_test" > "$out/kernels_test.log" 2>&1; status kernels_test $?
  for spec in ${NCU_PROFILES:-w4_tc_kernel:16 w4_tc_kernel:64 w4_tc_kernel:256 w4_decode_kernel:1}; do
    # KERNEL: a regex on the demangled name, written without spaces (ncu prints template
    # arguments as '(int)1, (int)16, (bool)1': w4_tc_kernel<.int.1,..int.16,..bool.1).
    kernel=${spec%%:*}; rows=${spec##*:}; name=${kernel//[^A-Za-z0-9_]/_}_$rows
    # Units: code tiles x the CTAs along the batch that each convert them (the tiled and wgmma
    # kernels' CTAs hold 16, 32, 64 or 128 rows; the decode kernel's warp 8 or 16).
    blocks=1
    [[ $kernel == w4_tc_kernel* || $kernel == w4_wgmma_kernel* ]] && [ "$rows" -gt 64 ] &&
      blocks=$(( (rows + 127) / 128 ))
    echo "==== $name (units: $blocks x 458752 tiles)" >> "$out/ncu.log"
    ncu_profile "$name" "$kernel" 6 $(( blocks * 458752 )) "/tmp/profiles/$name.tsv" 150 \
      /tmp/profile.json --layers-only --batches "$rows"
  done
  (cd /tmp/profiles && tar czf "$out/profiles.tgz" ./*.tsv)
  echo "==== summary"; cat "$sum"
  echo "==== kernels_test"; grep -E "^\[  (PASSED|FAILED) |Failure" "$out/kernels_test.log" | head
  echo "==== ncu"; grep -E "^==== |^\| |instructions per unit|Duration|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Block Limit|Compute \(SM\) Throughput|Tensor|stall_|Waves Per SM" "$out/ncu.log" | grep -v "^| 1 | .* | bf16\|^| ---" | head -150
  exit 0
fi

if [ "${1:-}" = steps ]; then
  # Where a whole decode step's time goes: Nsight Compute's per-kernel summary (launches, mean
  # duration) over the first 4000 kernels of `llama70b_bench --steps-only` at each batch of
  # STEP_BATCHES (default 1 and 256): the random weights' fill kernels, then about three eager
  # steps of the 70B model, in steps.log (the kernel tests first, as the other modes do).
  timeout 120 "$bin/cuda_kernels_test" > "$out/kernels_test.log" 2>&1; status kernels_test $?
  for b in ${STEP_BATCHES:-1 256}; do
    echo "==== batch $b" >> "$out/steps.log"
    timeout 300 ncu --clock-control none --metrics gpu__time_duration.sum --launch-count 4000 \
      --print-summary per-kernel "$bin/llama70b_bench" /tmp/steps.json --steps-only --batches "$b" \
      >> "$out/steps.log" 2>&1
    status "ncu steps $b" $?
  done
  echo "==== summary"; cat "$sum"
  exit 0
fi

if [ "${1:-}" = quantize ]; then
  # The GPU quantizer alone (docs/quantization.md, "GPU"): its test, under memcheck, CPU vs GPU
  # seconds per step, then the tool on kjv-llama with each device, reports and codes compared;
  # nothing else runs in this mode (about 4 minutes).
  # Calibration text for timing only: the held-out text repeated (the committed calibration
  # text is made by tools/quantize/make_calibration.py from a corpus not in the checkout).
  for _ in 1 2 3 4 5; do cat models/eval/heldout.txt; done > /tmp/calib.txt
  # cuSOLVER, cuSPARSE, nvJitLink are not carried (stage_cuda_checks.sh): where the loader does
  # not find them, take them from the image's CUDA wheels (nvidia-cusolver, ...).
  if ldd "$bin/quantize" | grep -q "not found"; then
    for l in libcusolver.so.12 libcusparse.so.12 libnvJitLink.so.13; do
      d=$(find / -xdev -name "$l" -not -path "/proc/*" 2>/dev/null | head -1)
      [ -n "$d" ] && LD_LIBRARY_PATH=$(dirname "$d"):$LD_LIBRARY_PATH && export LD_LIBRARY_PATH
    done
  fi
  ldd "$bin/quantize" | grep -E "cusolver|cusparse|nvJitLink|not found" > "$out/quantize.log"
  { timeout 60 "$bin/quant_cuda_numerics_test"; echo "quant_cuda_numerics_test exit $?"
    timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/quant_cuda_numerics_test"
    echo "quant_cuda_numerics_memcheck exit $?"
    timeout 120 "$bin/quantize_bench" --rows 65536
    timeout 150 "$bin/quantize_bench" --no-cpu --rows 16384 \
      --shapes 10240:8192,8192:8192,57344:8192,8192:28672; echo "quantize_bench exit $?"
    for m in gptq awq; do
      extra=(); [ $m = gptq ] && extra=(--desc-act)
      for d in cpu cuda; do
        timeout 90 "$bin/quantize" --model models/kjv-llama --out /tmp/q-$m-$d --method $m \
          "${extra[@]}" --calib /tmp/calib.txt --device $d --report /tmp/q-$m-$d.json 2>/dev/null
        echo "quantize $m --device $d exit $?"
      done
      python3 tools/quantize/compare_checkpoints.py /tmp/q-$m-cpu /tmp/q-$m-cuda
      python3 - "$m" <<'PY'
import json, sys
m = sys.argv[1]
r = {d: json.load(open(f"/tmp/q-{m}-{d}.json")) for d in ("cpu", "cuda")}
print(m, "seconds cpu %.1f cuda %.1f; numerics cpu %.2f cuda %.2f" % tuple(
    r[d][k] for k in ("seconds", "numerics_seconds") for d in ("cpu", "cuda")))
for lc, lg in zip(r["cpu"]["layers"], r["cuda"]["layers"]):
    stages = [s for s in lc if isinstance(lc[s], dict)]
    print(" layer %d numerics s cpu %.2f cuda %.2f |" % (lc["layer"], lc["numerics_seconds"],
          lg["numerics_seconds"]), " ".join("%s %s" % (s, {k: (round(lc[s][k], 6), round(lg[s][k], 6))
          for k in ("loss", "alpha", "mse") if k in lc[s]}) for s in stages))
PY
    done; } >> "$out/quantize.log" 2>&1
  status quantize "$(grep -c 'exit 0$' "$out/quantize.log") of 7 passed"
  echo "==== summary"; cat "$sum"
  echo "==== quantize"; grep -vE "^\[ (RUN|  OK) |^\s*$" "$out/quantize.log" | tail -120
  exit 0
fi

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
# its ceilings from the benchmark JSON just written; table and result into bench.log. 400
# requests take about 160 s; 1000 did not finish in 310 s (run 25).
if [ "${SERVING_REQUESTS:-400}" != 0 ]; then
timeout "${SERVING_TIMEOUT:-330}" python3 bench/serving/serving_bench.py --coordinator "$bin/coordinator" \
  --worker "$bin/worker" --workdir /tmp/serving --requests "${SERVING_REQUESTS:-400}" \
  --timeout "$(( ${SERVING_TIMEOUT:-330} - 20 ))" --merge-into "$out/llama70b-h200-tp1.json" \
  --md /tmp/serving/serving.md >> "$out/bench.log" 2>&1; status serving $?
fi
cat /tmp/serving/serving.md >> "$out/bench.log" 2>/dev/null
grep -E "KV pool|error|failed|graphs|replica 0:" /tmp/serving/serving.log 2>/dev/null | tail -12 >> "$out/bench.log"
if [ "${1:-}" = ncu ]; then
  # Hardware counters of the W4 decode kernel (or NCU_KERNEL) at batch 1: the benchmark's fifth
  # launch of it, the qkv projection of a 70B layer (10240 x 8192: 81920 code tiles), with the
  # per-instruction stall samples condensed by tools/gpu/ncu_source_profile.py (its summary appended to ncu.log,
  # every instruction in decode_profile.tsv).
  ncu_profile decode "${NCU_KERNEL:-w4_decode_kernel}" 4 81920 "$out/decode_profile.tsv" 100 \
    /tmp/ncu_bench.json
fi
if [ "${1:-}" = kernel_bench ]; then
  # Its TSV goes into bench.log: a ninth file would not come back.
  timeout 90 "$bin/kernel_bench" /tmp/kernel_bench.tsv >> "$out/bench.log" 2>&1; status kernel_bench $?
  { echo "---- kernel_bench.tsv"; cat /tmp/kernel_bench.tsv; } >> "$out/bench.log" 2>&1
fi
# The sanitizers (not in the ncu mode: its two files take their places under the device tool's
# 8-file limit). Racecheck leaves out SampleRowsMatchesCpuSampleToken: 50 s under it, which ran
# the step past its limit in run 25.
if [ "${1:-}" != ncu ]; then
timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/cuda_kernels_test" \
  --gtest_filter="${MEMCHECK_FILTER:-*QuantGemm*:CudaSampling*:CudaLogSoftmax*}" > "$out/memcheck.log" 2>&1; status memcheck $?
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 "$bin/cuda_kernels_test" \
  --gtest_filter="${RACECHECK_FILTER:-*QuantGemm.Decode*:CudaSampling*:CudaLogSoftmax*:-CudaSampling.SampleRowsMatchesCpuSampleToken}" > "$out/racecheck.log" 2>&1; status racecheck $?
fi

echo "==== summary"; cat "$sum"
for f in kernels_test runner_test; do
  echo "==== $f"; grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|Failure|error|divergence|greedy|worst|fallback|exit" "$out/$f.log" | head -50
done
echo "==== service"; grep -E "exit|ok:|FAIL|Failure|divergence|equal|error|shares a GPU" "$out/service.log" | head -40
for f in memcheck racecheck; do [ -f "$out/$f.log" ] || continue; echo "==== $f"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" "$out/$f.log" | tail -4; done
echo "==== bench"; grep -vE "^\s*$" "$out/bench.log" | tail -80
if [ -f "$out/ncu.log" ]; then
  echo "==== ncu"; head -30 /tmp/profiles/decode.txt; grep -E "w4_decode_kernel|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Warp Cycles Per Issued|Issued Warp|No Eligible|Block Limit|Compute \(SM\)|L1/TEX Hit|L2 Hit|Stall|long_scoreboard|Waves Per SM" "$out/ncu.log" | head -70
fi
