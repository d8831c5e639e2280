#!/usr/bin/env bash
# The whole test suite from a clean clone: install what is missing, build, run CTest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${BUILD_DIR:-$root/build}
# GPU tests carry the label `gpu` and skip themselves on a machine without one.
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 600 "$@"
# Reliability stages (docs/RELIABILITY.md): every fuzz target for a bounded time under ASan +
# UBSan, then the ASan + UBSan and the TSan builds of the coordinator-side tests. Only for the whole suite (no
# ctest arguments); SHARDSERVE_RELIABILITY=0 skips them.
if [ $# -eq 0 ] && [ "${SHARDSERVE_RELIABILITY:-1}" != 0 ]; then
  "$root/scripts/fuzz.sh"
  "$root/scripts/sanitize.sh" address
  "$root/scripts/sanitize.sh" thread
fi
