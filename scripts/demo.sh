#!/usr/bin/env bash
# The demo from a clean clone: install what is missing, build, launch the CPU cluster under
# mpirun with the bundled model (trained on the King James Bible, models/kjv-llama) and stream
# one completion from it over ZeroMQ.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${BUILD_DIR:-$root/build}
# The real service: mpirun starts the coordinator (ZeroMQ front end) and a worker rank; the job
# streams over ZeroMQ; SIGTERM drains and every rank exits 0.
BUILD_DIR="$build" exec "$root/client/demo_service.sh" "${1:-And God said unto Moses,}"
