#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan) into build-fuzz/ (override with
# FUZZ_BUILD_DIR) and fuzzes each for FUZZ_SECONDS (default 25) from its committed seed corpus
# and regression inputs. New interesting inputs go to build-fuzz/fuzz-work/<target>/ (not the
# source tree); a crash stops with its input in build-fuzz/fuzz-artifacts/<target>/: fix the bug
# and commit the input as tests/fuzz/regressions/<target>/<name> (the normal build replays it).
#   scripts/fuzz.sh [target ...]     (default: every target with a corpus folder)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${FUZZ_SECONDS:-25}
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (scripts/install-deps.sh installs clang)"; exit 1; }
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHARDSERVE_ENABLE_CUDA=OFF \
  -DSHARDSERVE_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "$build" -j"$(nproc)" --target fuzzers
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for d in "$root"/tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
for t in "${targets[@]}"; do
  work=$build/fuzz-work/$t
  artifacts=$build/fuzz-artifacts/$t
  mkdir -p "$work" "$artifacts"
  inputs=("$root/tests/fuzz/corpus/$t")
  [ -d "$root/tests/fuzz/regressions/$t" ] && inputs+=("$root/tests/fuzz/regressions/$t")
  echo "fuzz.sh: $t for ${seconds} s"
  start=$(date +%s)
  # -seed: the same mutations on every run (a CI failure reproduces); -timeout: an input slower than 10 s is a finding (a hang); -rss_limit_mb bounds memory.
  "$build/tests/fuzz/${t}_fuzz" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$work" "${inputs[@]}" \
    >"$build/fuzz-$t.log" 2>&1 || {
      tail -60 "$build/fuzz-$t.log"
      echo "fuzz.sh: $t FAILED; the input is in $artifacts/"
      exit 1
    }
  echo "fuzz.sh: $t clean: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$build/fuzz-$t.log" | grep -o '[0-9]*$') runs in $(( $(date +%s) - start )) s"
done
