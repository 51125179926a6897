#!/usr/bin/env bash
# On the GPU machine: train one run on a Blender scene, evaluate it on all test views, measure its size,
# and append one JSON summary line to $OUT/runs.jsonl. Run from the repository root after installing the
# wheels (benchmarks/README.md). Usage:
#   bash benchmarks/gpu/train_eval.sh DATA NAME METHOD ITERS [extra ns-train args...]
# METHOD is nerfacto or shacira. nerfacto runs through ns_offline.py (stock nerfacto builds LPIPS, which
# downloads AlexNet); shacira runs through plain ns-train (the plugin is offline-safe by itself).
set -uo pipefail
data=${1:?DATA}; name=${2:?NAME}; method=${3:?METHOD}; iters=${4:?ITERS}; shift 4
out=${OUT:-gpu-out}; mkdir -p "$out"
bin=/tmp/site/bin
exp=$(basename "$data"); run=/tmp/ns-runs/$exp/$method/$name
log=$out/$name.log
export PYTHONUNBUFFERED=1
blender=(--pipeline.model.background-color white --pipeline.model.proposal-initial-sampler uniform
  --pipeline.model.near-plane 2. --pipeline.model.far-plane 6. --pipeline.model.camera-optimizer.mode off
  --pipeline.model.use-average-appearance-embedding False --pipeline.model.distortion-loss-mult 0
  --pipeline.model.disable-scene-contraction True)
# BLENDER_FLAGS=0 keeps nerfacto's defaults (scene contraction, ...): with the Blender flags, nerfstudio's torch hash
# grid runs ~1 s/step on an H200 (points outside the box all gather row 0 and index_put's backward serialises).
[ "${BLENDER_FLAGS:-1}" = 0 ] && blender=()
if [ "$method" = nerfacto ]; then train=(python3 .gpu/bin/ns_offline.py train); evalc=(python3 .gpu/bin/ns_offline.py eval)
else train=(python3 "$bin/ns-train"); evalc=(python3 "$bin/ns-eval"); fi
cmd=("${train[@]}" "$method" --data "$data" --max-num-iterations "$iters" --vis tensorboard
  --viewer.quit-on-train-completion True --output-dir /tmp/ns-runs --experiment-name "$exp" --timestamp "$name"
  --steps-per-save 100000 --steps-per-eval-batch 100000 --steps-per-eval-image 100000
  --steps-per-eval-all-images 1000000 "${blender[@]}" "$@" blender-data)
t0=$(date +%s.%N)
if [ -f "$run/nerfstudio_models/step-$(printf %09d $((iters - 1))).ckpt" ]; then echo "[$name] already trained" >>"$log"
else "${cmd[@]}" >>"$log" 2>&1 || { echo "[$name] training failed" | tee -a "$log"; exit 1; }; fi
t1=$(date +%s.%N)
if [ "${EVAL:-1}" = 0 ]; then echo '{"results": {"psnr": null, "ssim": null}}' >"$out/$name.eval.json"
else "${evalc[@]}" --load-config "$run/config.yml" --output-path "$out/$name.eval.json" >>"$log" 2>&1; fi
if [ "$method" = shacira ]; then
  python3 "$bin/shacira" export --load-config "$run/config.yml" --output-path "$out/$name.shac" >>"$log" 2>&1
  python3 "$bin/shacira" info "$out/$name.shac" --json >"$out/$name.info.json" 2>>"$log"
fi
python3 - "$run" "$out" "$name" "$method" "$iters" "$t0" "$t1" "${cmd[*]}" <<'PY' >>"$out/runs.jsonl"
import json, sys, glob, os, torch
run, out, name, method, iters, t0, t1, command = sys.argv[1:]
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(run, size_guidance={"scalars": 0}); acc.Reload()
it = [e for e in acc.Scalars("Train Iter (time)")]
last = it[-1].step
steady = sorted(e.value for e in it if e.step >= 0.2 * last)
total = [e.value for e in acc.Scalars("Train Total (time)")] if "Train Total (time)" in acc.Tags()["scalars"] else []
ev = json.load(open(f"{out}/{name}.eval.json"))["results"]
row = {"name": name, "method": method, "iterations": int(iters), "psnr": ev["psnr"], "ssim": ev["ssim"],
       "lpips": ev.get("lpips"), "seconds_per_iter": steady[len(steady) // 2],
       "train_seconds": (total[-1] if total else float(t1) - float(t0)), "command": command,
       "gpu": torch.cuda.get_device_name(0), "eval": ev}
ck = sorted(glob.glob(f"{run}/nerfstudio_models/*.ckpt"))[-1]
sd = torch.load(ck, map_location="cpu", weights_only=False)["pipeline"]
if method == "nerfacto":
    n = sum(v.numel() for k, v in sd.items() if k.startswith(("_model.field.", "_model.proposal_networks.")) and v.is_floating_point())
    row["size_bytes_fp32"], row["size_bytes"] = 4 * n, 2 * n
else:
    info = json.load(open(f"{out}/{name}.info.json"))
    row["size_bytes"] = info["total_bytes"]
    row["estimate_MB"] = (info.get("estimate") or {}).get("size_MB")
    row["bits_per_latent"] = info["bits_per_latent"]
print(json.dumps(row))
PY
echo "[$name] done: $(tail -1 "$out/runs.jsonl" | cut -c1-300)"
