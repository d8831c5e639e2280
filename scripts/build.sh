#!/usr/bin/env bash
# Configures and builds into build/ (override with BUILD_DIR). CUDA code is compiled when nvcc
# is found (for sm_90a only); without it the CPU path builds alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build "$build" -j"$(nproc)"
