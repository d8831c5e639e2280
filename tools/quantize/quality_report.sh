#!/usr/bin/env bash
# Reproduces the measurements of docs/quantization.md: quantizes models/kjv-llama with every
# method / format / bit width of the report, then measures each checkpoint's held-out
# perplexity with the project's CPU engine (the protocol of models/eval/perplexity.json: all 59
# windows of 256 tokens of models/eval/heldout.txt).
#
#   tools/quantize/quality_report.sh [BUILD_DIR] [OUT_DIR] [VARIANT ...]
#
# BUILD_DIR (default build) must hold tools/quantize/quantize and tools/perplexity/perplexity;
# OUT_DIR (default /tmp/kjv-quant) receives one checkpoint folder, quantize report and
# perplexity JSON per variant (checkpoints are not committed: a few MB each). Calibration text:
# tools/train/data/calibration.txt from tools/quantize/make_calibration.py (made when missing).
# Then `python3 tools/quantize/summarize.py OUT_DIR` prints the table and writes
# bench/results/quant-kjv-llama.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="${1:-build}"
OUT="${2:-/tmp/kjv-quant}"
shift $(( $# > 2 ? 2 : $# )) || true
MODEL="$ROOT/models/kjv-llama"
TEXT="$ROOT/models/eval/heldout.txt"
CALIB="$ROOT/tools/train/data/calibration.txt"
QUANTIZE="$BUILD/tools/quantize/quantize"
PPL="$BUILD/tools/perplexity/perplexity"
mkdir -p "$OUT"
[ -f "$CALIB" ] || python3 "$ROOT/tools/quantize/make_calibration.py" --out "$CALIB"

# name | quantize arguments (calibration: 128 windows of 512 tokens)
VARIANTS=(
  "rtn-gptq-w4g128|--method rtn --format gptq --bits 4 --group-size 128"
  "rtn-awq-w4g128|--method rtn --format awq --bits 4 --group-size 128"
  "awq-w4g128|--method awq --format awq --bits 4 --group-size 128"
  "gptq-w4g128|--method gptq --format gptq --bits 4 --group-size 128"
  "gptq-w4g128-descact|--method gptq --format gptq --bits 4 --group-size 128 --desc-act"
  "rtn-gptq-w4gall|--method rtn --format gptq --bits 4 --group-size -1"
  "gptq-w4gall-descact|--method gptq --format gptq --bits 4 --group-size -1 --desc-act"
  "rtn-gptq-w8g128|--method rtn --format gptq --bits 8 --group-size 128"
  "gptq-w8g128|--method gptq --format gptq --bits 8 --group-size 128"
)
want=("$@")
selected() {
  [ ${#want[@]} -eq 0 ] && return 0
  for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

if selected bf16; then
  echo "== bf16"
  "$PPL" --model "$MODEL" --text "$TEXT" --json "$OUT/bf16.perplexity.json"
fi
for v in "${VARIANTS[@]}"; do
  name="${v%%|*}"
  args="${v#*|}"
  selected "$name" || continue
  echo "== $name: quantize $args"
  # shellcheck disable=SC2086
  "$QUANTIZE" --model "$MODEL" --out "$OUT/$name" $args --calib "$CALIB" --calib-samples 128 \
    --seq-len 512 --report "$OUT/$name.quantize.json" 2> "$OUT/$name.progress.log"
  "$PPL" --model "$OUT/$name" --text "$TEXT" --json "$OUT/$name.perplexity.json"
done
