#!/usr/bin/env bash
# Session 18's device call, the same in every call of the batch (carry .whl and .gpu):
# `CALL=SECONDS bash benchmarks/gpu/queues/2026-12-08-s18.sh`. The first call installs, runs the GPU tests (CUDA graphs, lookup, SGA kernel) alone on the
# GPU in its foreground (session 17 ran them beside five trainings and nerfstudio's Trainer test failed in its first
# capture), then starts the queue; every call watches it until CALL seconds (less a margin) have passed since it began, and brings back runs.jsonl, logs.tgz and the
# files.
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 SAVE_EVERY=100000 OMP_NUM_THREADS=${OMP_NUM_THREADS:-5} HOLD=${HOLD:-1000} MAX_RUNS=${MAX_RUNS:-3}
[ -d /tmp/site/shacira_nerf ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl
if [ ! -e /tmp/gpu_tests.done ]; then
  touch /tmp/gpu_tests.done
  { nvidia-smi -L; python3 -c "import torch, inspect; print(torch.__version__, inspect.signature(torch.cuda.make_graphed_callables))"
    timeout 240 python3 -P -m pytest -q -p no:cacheprovider tests/test_step_graph.py tests/test_lookup.py --tb=short -W ignore
    timeout 120 python3 -P benchmarks/gpu/capture_mode_ab.py
  } >"$OUT/gpu_tests.log" 2>&1
  tail -3 "$OUT/gpu_tests.log"
fi
bash benchmarks/gpu/bg.sh setup
files=()
for n in shacira_20k_l1e-3_t14 shacira_20k_l1e-3_t15_p14 shacira_20k_l1e-3_t14_p14 \
  shacira_20k_l1e-3_t18; do files+=("$n.shac"); done
bash benchmarks/gpu/bg.sh queue $(( ${CALL:?seconds this call may take} - SECONDS - 25 )) benchmarks/gpu/queues/2026-12-08-s18.txt "${files[@]}"
