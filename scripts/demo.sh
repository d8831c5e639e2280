#!/usr/bin/env bash
# The demo from a clean clone: install what is missing, build, and let the bundled model
# (trained on the King James Bible, models/kjv-llama) complete a prompt on the CPU.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${BUILD_DIR:-$root/build}
"$build/tools/generate/generate" --model "$root/models/kjv-llama" \
  --prompt "${1:-And God said unto Moses,}" --max-tokens 64 \
  --temperature 0.8 --top-p 0.95 --top-k 50 --seed 1 --stats
