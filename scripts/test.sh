#!/usr/bin/env bash
# The whole test suite from a clean clone: install what is missing, build, run CTest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${BUILD_DIR:-$root/build}
# GPU tests carry the label `gpu` and skip themselves on a machine without one.
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 600 "$@"
