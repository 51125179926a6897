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
cmd=(python3 "$here/ns_bench.py" train "$method" --data "$data" --max-num-iterations "$iters" --vis tensorboard
  --viewer.quit-on-train-completion True --output-dir "$runs" --experiment-name "$exp" --timestamp "$name"
  --steps-per-save "${SAVE_EVERY:-500}" --steps-per-eval-batch 100000 --steps-per-eval-image 100000
  --steps-per-eval-all-images 1000000 "${flags[@]}" "$@")  # the dataparser subcommand goes last, after --load-dir
final=$models/step-$(printf %09d $((iters - 1))).ckpt
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
  "${cmd[@]}" "${resume[@]}" "$parser" >>"$log" 2>&1 || { echo "[$name] training failed" | tee -a "$log"; exit 1; }
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
python3 - "$run" "$out" "$name" "$method" "$iters" "$t0" "$t1" "${cmd[*]} $parser" <<'PY' >>"$out/runs.jsonl"
import glob, json, sys
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
run, out, name, method, iters, t0, t1, command = sys.argv[1:]
# Every resumed segment writes its own event file; read them all (steps do not overlap).
steps, totals = {}, []
for events in sorted(glob.glob(f"{run}/events.out.tfevents.*")):
    acc = EventAccumulator(events, size_guidance={"scalars": 0}); acc.Reload()
    tags = acc.Tags()["scalars"]
    if "Train Iter (time)" in tags:
        steps.update({e.step: e.value for e in acc.Scalars("Train Iter (time)")})
    if "Train Total (time)" in tags:
        totals += [e.value for e in acc.Scalars("Train Total (time)")]
last = max(steps)
steady = sorted(v for s, v in steps.items() if s >= 0.2 * last)
ev = json.load(open(f"{out}/{name}.eval.json"))["results"]
row = {"name": name, "method": method, "iterations": int(iters), "psnr": ev["psnr"], "ssim": ev["ssim"],
       "lpips": ev.get("lpips"), "seconds_per_iter": steady[len(steady) // 2],
       # each segment logs its own "Train Total"; without one, the wall clock of this call's training
       "train_seconds": sum(totals) if totals else float(t1) - float(t0),
       "segments": len(glob.glob(f"{run}/events.out.tfevents.*")), "command": command,
       "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "eval": ev}
ck = sorted(glob.glob(f"{run}/nerfstudio_models/*.ckpt"))[-1]
from shacira_nerf.checkpoints import allow_nerfstudio_checkpoints  # numpy scalars only; loading stays safe
allow_nerfstudio_checkpoints()
sd = torch.load(ck, map_location="cpu", weights_only=True)["pipeline"]
if method == "nerfacto":
    n = sum(v.numel() for k, v in sd.items()
            if k.startswith(("_model.field.", "_model.proposal_networks.")) and v.is_floating_point())
    row["size_bytes_fp32"], row["size_bytes"] = 4 * n, 2 * n
else:
    info = json.load(open(f"{out}/{name}.info.json"))
    row["size_bytes"] = info["total_bytes"]
    row["estimate_MB"] = (info.get("estimate") or {}).get("size_MB")
    row["bits_per_latent"] = info["bits_per_latent"]
print(json.dumps(row))
PY
echo "[$name] done: $(tail -1 "$out/runs.jsonl" | cut -c1-300)"
