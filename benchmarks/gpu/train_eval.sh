#!/usr/bin/env bash
# On the GPU machine: train one run, evaluate it on all test views, measure its size, and append one JSON summary
# line to $BENCH_OUT/runs.jsonl. Usage (after installing the wheels, benchmarks/README.md):
#   bash benchmarks/gpu/train_eval.sh DATA NAME METHOD ITERS [extra ns-train args...]
# DATA: a Blender scene (transforms_train.json: blender-data with nerfstudio's Blender benchmark flags, unless
# BLENDER_FLAGS=0) or a nerfstudio-data folder (transforms.json, e.g. ns-process-data output; nerfacto's defaults).
# METHOD: nerfacto or shacira; both run through ns_bench.py (offline LPIPS, checkpoint reload, nerfacto's torch
# grid gathering with index_select: see that file).
# Resume: if the run folder already holds a checkpoint short of ITERS, training continues from it (--load-dir);
# if it holds the final one, training is skipped. Checkpoints are saved every SAVE_EVERY (default 500) steps.
# TRAIN_ONLY=1: train (or resume) and stop; the same command without it then evaluates, exports and summarises.
# IN_PROCESS=1 (a fresh run): train, evaluate, export and summarise in one process (ns_bench.py run).
# PARSER_ARGS: options of the dataparser, placed after its subcommand (where tyro wants them), e.g.
# PARSER_ARGS="--eval-mode interval --eval-interval 8" for a real held-out split of a nerfstudio-data capture.
set -uo pipefail
data=${1:?DATA}; name=${2:?NAME}; method=${3:?METHOD}; iters=${4:?ITERS}; shift 4
here=$(cd "$(dirname "$0")" && pwd)
out=${BENCH_OUT:-${OUT:-gpu-out}}; mkdir -p "$out"
runs=${RUNS_DIR:-/tmp/ns-runs}
bin=${SITE_BIN:-/tmp/site/bin}
exp=$(basename "$data"); run=$runs/$exp/$method/$name; models=$run/nerfstudio_models
log=$out/$name.log
export PYTHONUNBUFFERED=1
if [ -f "$data/transforms_train.json" ]; then
  parser=blender-data
  flags=(--pipeline.model.background-color white --pipeline.model.proposal-initial-sampler uniform
    --pipeline.model.near-plane 2. --pipeline.model.far-plane 6. --pipeline.model.camera-optimizer.mode off
    --pipeline.model.use-average-appearance-embedding False --pipeline.model.distortion-loss-mult 0
    --pipeline.model.disable-scene-contraction True)
  [ "${BLENDER_FLAGS:-1}" = 0 ] && flags=()
else
  parser=nerfstudio-data; flags=()
fi
read -r -a parser_args <<<"${PARSER_ARGS:-}"
parser=("$parser" "${parser_args[@]}")
args=("$method" --data "$data" --max-num-iterations "$iters" --vis tensorboard
  --viewer.quit-on-train-completion True --output-dir "$runs" --experiment-name "$exp" --timestamp "$name"
  --steps-per-save "${SAVE_EVERY:-500}" --steps-per-eval-batch 100000 --steps-per-eval-image 100000
  --steps-per-eval-all-images 1000000 "${flags[@]}" "$@")  # the dataparser subcommand goes last, after --load-dir
cmd=(python3 "$here/ns_bench.py" train "${args[@]}")
final=$models/step-$(printf %09d $((iters - 1))).ckpt
if [ "${IN_PROCESS:-0}" = 1 ] && ! ls "$models"/step-*.ckpt >/dev/null 2>&1; then
  # A fresh run, trained, evaluated, exported and summarised in one process (ns_bench.py run): nothing is started
  # after training, so it also works as a background job (see bg.sh).
  python3 "$here/ns_bench.py" run "$out" "$name" "${args[@]}" "${parser[@]}" >>"$log" 2>&1 \
    || { echo "[$name] failed" | tee -a "$log"; exit 1; }
  exit 0
fi
t0=$(date +%s.%N)
if [ -f "$final" ]; then echo "[$name] already trained" >>"$log"
else
  resume=()
  if ls "$models"/step-*.ckpt >/dev/null 2>&1; then
    # nerfstudio continues at the checkpoint's step + 1 and then runs --max-num-iterations *more* steps: ask for
    # the remainder, so that a resumed run ends at the same step (and final checkpoint) as an uninterrupted one.
    last=$(ls "$models" | tail -1 | sed -E 's/step-0*([0-9]+)\.ckpt/\1/')
    resume=(--load-dir "$models" --max-num-iterations $((iters - ${last:-0} - 1)))
    echo "[$name] resuming from $(ls "$models" | tail -1)" >>"$log"
  fi
  "${cmd[@]}" "${resume[@]}" "${parser[@]}" >>"$log" 2>&1 || { echo "[$name] training failed" | tee -a "$log"; exit 1; }
fi
t1=$(date +%s.%N)
if [ "${TRAIN_ONLY:-0}" = 1 ]; then
  # A process started after the device call that launched this script has returned cannot load torch (oneMKL
  # fails): a background run stops here, and the same command in the foreground of a later call evaluates it.
  echo "[$name] trained; evaluate with the same command in the foreground (bg.sh finish)" | tee -a "$log"; exit 0
fi
if [ "${EVAL:-1}" = 0 ]; then echo '{"results": {"psnr": null, "ssim": null}}' >"$out/$name.eval.json"
else
  # Evaluations of runs sharing the GPU can run out of its memory at once: retry after a pause (EVAL_TRIES, default 3).
  for try in $(seq "${EVAL_TRIES:-3}"); do
    python3 "$here/ns_bench.py" eval --load-config "$run/config.yml" --output-path "$out/$name.eval.json" >>"$log" 2>&1 && break
    echo "[$name] eval attempt $try failed" >>"$log"; rm -f "$out/$name.eval.json"; sleep 60
  done
  [ -f "$out/$name.eval.json" ] || { echo "[$name] eval failed" | tee -a "$log"; exit 1; }
fi
if [ "${method#shacira}" != "$method" ]; then  # shacira and shacira-tiny
  python3 "$bin/shacira" export --load-config "$run/config.yml" --output-path "$out/$name.shac" >>"$log" 2>&1
  python3 "$bin/shacira" info "$out/$name.shac" --json >"$out/$name.info.json" 2>>"$log"
fi
python3 "$here/summary.py" "$run" "$out" "$name" "$method" "$iters" "$t0" "$t1" "${cmd[*]} ${parser[*]}" >>"$out/runs.jsonl"
echo "[$name] done: $(tail -1 "$out/runs.jsonl" | cut -c1-300)"
