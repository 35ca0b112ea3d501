#!/usr/bin/env bash
# The prepared GPU check as one command: install the wheels brought along, run
# benchmarks/gpu_check.py inside 6 minutes, keep its report and its whole log in OUT_DIR.
#
#   benchmarks/gpu_check.sh OUT_DIR              # on the GPU machine (benchmarks/README.md)
#   benchmarks/gpu_check.sh OUT_DIR --cpu-smoke  # the same command at toy sizes on a CPU (CI)
#
# Wheels: every *.whl in $WHEELS (default .whl/, git-ignored) is installed with
# `pip install --no-index --no-deps` into a temporary folder put first on PYTHONPATH; our GPU
# machine lacks only torchattacks 3.5.1. PYTHON picks the interpreter (default python3).
set -euo pipefail
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [--cpu-smoke] [more gpu_check.py options]}
shift
python=${PYTHON:-python3}
wheels=${WHEELS:-.whl}
cd "$(dirname "$0")/.."
mkdir -p "$out"
log="$out/gpu_check.log"
: >"$log"
if compgen -G "$wheels/*.whl" >/dev/null; then
    site=$(mktemp -d)
    trap 'rm -rf "$site"' EXIT
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl 2>&1 | tee -a "$log"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "installed from $wheels: $(cd "$wheels" && ls ./*.whl | xargs -n1 basename | tr '\n' ' ')" | tee -a "$log"
fi
# 300 s for the sections, the rest of the 6 minutes for start-up and the last section's overrun.
PYTHONUNBUFFERED=1 timeout --kill-after=10 350 "$python" benchmarks/gpu_check.py --budget 300 --out "$out/GPU.md" "$@" 2>&1 | tee -a "$log"
