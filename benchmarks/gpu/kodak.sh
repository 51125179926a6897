#!/usr/bin/env bash
# On the GPU machine (one H200, one `run` call of at most 10 minutes): image mode on Kodak (24 images x 4 rate
# weights, JPEG/WebP at matched bpp) and the appendix's sensitivity analysis on kodim23, in one Python process.
# Run from the repository root with carry [".gpu", ".whl"]: .gpu/kodak holds kodim01.png ... kodim24.png, .whl the
# constriction wheel (cp312; the machine has torch, numpy, pillow, matplotlib, jaxtyping, rich). Usage:
#   bash benchmarks/gpu/kodak.sh [KODAK_STEPS] [SENSITIVITY_STEPS] [extra image_kodak.py flags...]
# Writes into $OUT: image_kodak.jsonl (one line per measurement, written as it happens), image_kodak.png,
# image_kodak_sensitivity.png and kodak.log (progress lines with seconds, so a run cut short still shows its speed).
# LIMIT (seconds, default 520) stops Python before the call's own limit; the Kodak plot is written before the
# sensitivity part starts.
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
kodak_steps=${1:-6000}; sens_steps=${2:-4000}; shift $(( $# < 2 ? $# : 2 ))
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/constriction-*.whl \
  >"$out/kodak.log" 2>&1 || { echo "constriction install failed"; cat "$out/kodak.log"; exit 1; }
export PYTHONPATH=$PWD:/tmp/site  # this tree first: a shacira wheel installed in /tmp/site may be older
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader >>"$out/kodak.log" 2>&1
timeout "${LIMIT:-520}" python3 benchmarks/image_kodak.py "${KODAK_DIR:-.gpu/kodak}" --sensitivity "${KODAK_DIR:-.gpu/kodak}/kodim23.png" \
  --steps "$kodak_steps" --sensitivity-steps "$sens_steps" --device cuda --out-dir "$out" "$@" 2>&1 | tee -a "$out/kodak.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/kodak.log"
