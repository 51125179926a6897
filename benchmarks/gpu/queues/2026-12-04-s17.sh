#!/usr/bin/env bash
# Session 17's device call, the same in every call of the batch: `Q=SECONDS bash benchmarks/gpu/queues/2026-12-04-s17.sh`
# (the first call carries .whl and .gpu/fox, the second .gpu/lego). Installs once, starts the GPU tests once (in
# their own session, so they outlive the call that started them), then runs the queue for Q seconds and brings
# back runs.jsonl, logs.tgz, the tests' log and the files.
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 SAVE_EVERY=100000 OMP_NUM_THREADS=4 HOLD=1540 MAX_RUNS=5
[ -d /tmp/site/shacira_nerf ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target /tmp/site .whl/*.whl
bash benchmarks/gpu/bg.sh setup
if [ ! -e /tmp/bench/gpu_tests.started ]; then
  touch /tmp/bench/gpu_tests.started
  setsid nohup bash -c 'nvidia-smi -L; python3 -c "import torch; print(torch.__version__)";
    python3 -P -m pytest -q -p no:cacheprovider tests/test_step_graph.py tests/test_lookup.py --tb=short -W ignore' \
    >/tmp/bench/out/gpu_tests.log 2>&1 </dev/null &
fi
files=(gpu_tests.log)
for n in fox_shacira_10k_graph fox_shacira_10k_eager fox_shacira_10k_l3e-3_graph shacira_20k_l2e-3 \
  shacira_20k_l1e-3_t17 shacira_20k_l3e-3_t17 shacira_20k_l1e-3_t16; do files+=("$n.shac"); done
bash benchmarks/gpu/bg.sh queue "${Q:?seconds}" benchmarks/gpu/queues/2026-12-04-s17.txt "${files[@]}"
