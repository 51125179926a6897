#!/usr/bin/env bash
# On the GPU machine: image mode on Kodak (24 images x 4 rate weights, JPEG/WebP at matched bpp) and the appendix's
# sensitivity analysis on kodim23, in one Python process, every fit on whole-image steps.
# Run from the repository root with carry [".kodak", ".whl"]: .kodak holds kodim01.png ... kodim24.png, .whl the
# constriction wheel (cp312; the machine has torch, numpy, pillow, matplotlib, jaxtyping, rich). Usage:
#   bash benchmarks/gpu/kodak.sh [image_kodak.py flags...]      default: --time-budget 600 --sensitivity-time-budget 240
# With time budgets the step counts come from a short timed probe of each batch (printed, and recorded with every
# result). Writes into $OUT: image_kodak.jsonl (one line per measurement, written as it happens), image_kodak.png,
# image_kodak_sensitivity.png and kodak.log. LIMIT (seconds, default 1500) stops Python regardless.
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
[ $# -gt 0 ] || set -- --time-budget 600 --sensitivity-time-budget 240
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/constriction-*.whl \
  >"$out/kodak.log" 2>&1 || { echo "constriction install failed"; cat "$out/kodak.log"; exit 1; }
export PYTHONPATH=$PWD:/tmp/site  # this tree first: a shacira wheel installed in /tmp/site may be older
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader >>"$out/kodak.log" 2>&1
timeout "${LIMIT:-1500}" python3 benchmarks/image_kodak.py "${KODAK_DIR:-.kodak}" --sensitivity "${KODAK_DIR:-.kodak}/kodim23.png" \
  --device cuda --out-dir "$out" "$@" 2>&1 | tee -a "$out/kodak.log"
echo "exit ${PIPESTATUS[0]}" | tee -a "$out/kodak.log"
