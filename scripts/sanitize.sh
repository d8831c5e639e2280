#!/usr/bin/env bash
# A sanitizer build of the CPU path (CUDA off) and the tests that exercise the coordinator side:
#   scripts/sanitize.sh [address|thread]
# address (default): ASan + UBSan (UBSan fatal) in build-asan/: the unit tests of the protocol,
#   validation, front end, gateway mapping, codec, tokenizers, config/safetensors and scheduler,
#   the fuzz regression replays, and the end-to-end tests over real sockets (the Python and
#   llmctl clients against llm-local, the gateway with curl).
# thread: TSan in build-tsan/: the front end's threads (api_front_end_test) and the gateway's
#   (gateway.curl_sse); libzmq's internal accesses suppressed (scripts/tsan.supp says why) and
#   OpenMP at one thread (libgomp is not instrumented either).
# Only these targets are built, to keep CI inside its budget (docs/RELIABILITY.md has the times).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kind=${1:-address}
case "$kind" in
  address)
    build=${ASAN_BUILD_DIR:-$root/build-asan}
    sanitize=address,undefined
    unit=(api/api_unit_test api/api_front_end_test gateway/gateway_unit_test comm/codec_test
          tokenizer/tokenizer_test model/model_config_test model/safetensors_test
          scheduler/scheduler_unit_tests scheduler/scheduler_property_tests)
    e2e='^(fuzz\.replay\..*|api\.clients_python|api\.clients_llmctl|gateway\.curl_sse)$'
    extra=(llm-local llmctl gateway protocol_fuzz_replay codec_fuzz_replay openai_fuzz_replay
           safetensors_fuzz_replay model_config_fuzz_replay tokenizer_json_fuzz_replay
           tokenize_fuzz_replay)
    ;;
  thread)
    build=${TSAN_BUILD_DIR:-$root/build-tsan}
    sanitize=thread
    unit=(api/api_front_end_test)
    e2e='^gateway\.curl_sse$'
    extra=(llm-local llmctl gateway)
    # The forward pass's OpenMP team joins in libgomp, which is not built with TSan: every read of
    # a matmul's output after the parallel region is reported as a race. One OpenMP thread runs
    # the regions in the engine thread itself; the threads under test (front end, engine, ZeroMQ
    # I/O, the gateway's HTTP and backend threads) are unchanged.
    export OMP_NUM_THREADS=1
    ;;
  *) echo "usage: sanitize.sh [address|thread]"; exit 2 ;;
esac
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHARDSERVE_ENABLE_CUDA=OFF \
  -DSHARDSERVE_SANITIZE="$sanitize" >/dev/null
targets=("${extra[@]}")
for u in "${unit[@]}"; do targets+=("$(basename "$u")"); done
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# libzmq (not instrumented) synchronises where TSan cannot see: scripts/tsan.supp says why.
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/tsan.supp}
failed=()
for u in "${unit[@]}"; do
  echo "sanitize.sh ($kind): $u"
  "$build/tests/$u" --gtest_brief=1 || failed+=("$u")
done
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 600 -R "$e2e" || failed+=("ctest $e2e")
if [ ${#failed[@]} -gt 0 ]; then
  echo "sanitize.sh ($kind): FAILED: ${failed[*]}"
  exit 1
fi
echo "sanitize.sh ($kind): clean"
