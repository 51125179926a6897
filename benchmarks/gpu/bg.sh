#!/usr/bin/env bash
# Runs that outlast one device call: start train_eval.sh runs in the background (their own process sessions, so
# they survive the call that started them while the machine stays warm), then watch them from later calls.
# Everything lives under /tmp/bench on the GPU machine ($OUT is emptied before every call):
#   bash benchmarks/gpu/bg.sh setup                      copy the scripts and .gpu/* scenes to /tmp/bench (and
#                                                        <scene>_val for a scene with a val_subset.py subset)
#   bash benchmarks/gpu/bg.sh start NAME SCENE METHOD ITERS [ns-train args]   SCENE: a folder name under .gpu
#   bash benchmarks/gpu/bg.sh finish NAME SCENE METHOD ITERS [ns-train args]  in the FOREGROUND of a later call:
#                                                        evaluate, export and summarise a run that `start` trained
#   bash benchmarks/gpu/bg.sh stop NAME                  end one run (its training or evaluation)
# A process that a background job starts after the call that launched it has returned cannot load torch (oneMKL
# fails; 12 evaluations of 12 died so): `start` trains, evaluates, exports and summarises a fresh run in one process
# (ns_bench.py run), which starts no other; `finish` (in a call's foreground) is for a run trained with IN_PROCESS=0
# (train only) or resumed.
#   bash benchmarks/gpu/bg.sh kodak [image_kodak.py flags]   gpu/kodak.sh in the background, from a copy of this
#                                                        tree and .kodak/ (carry it) under /tmp/bench
# CPUS=0-3 pins a run to those cores (taskset), for runs sharing one GPU: the step is bound by the host.
# PARSER_ARGS="--eval-mode interval --eval-interval 8" passes dataparser options through (train_eval.sh).
# Each background run is limited to OMP_NUM_THREADS threads (default 4): three nerfacto runs left at torch's default
# (16 threads each) saturated the 16 cores (load 48, 350 ms/step each against 45 ms alone) while the GPU sat at 1%.
#   bash benchmarks/gpu/bg.sh watch SECONDS [FILES...]   wait until all runs end or SECONDS pass; progress table;
#                                                        runs.jsonl, logs.tgz and FILES (from /tmp/bench/out) to $OUT
#                                                        exit 3: runs still going; 2: no runs on this machine
set -uo pipefail
root=/tmp/bench
case "${1:?setup|start|finish|watch|stop|kodak}" in
setup)
  mkdir -p $root/bin $root/out $root/data
  cp benchmarks/gpu/*.sh benchmarks/gpu/*.py $root/bin/
  for d in .gpu/*/; do [ -e "$d/transforms.json" ] || [ -e "$d/transforms_train.json" ] || continue
    [ -d "$root/data/$(basename "$d")" ] || cp -r "$d" "$root/data/"; done
  # A scene with a validation subset (val_subset.py) also becomes <scene>_val, whose test split is that subset: for
  # tuning. It links to the copy under $root, never to the carried tree, which the next call re-copies (two runs
  # that read images through links into it died when it was replaced under them).
  for d in "$root"/data/*/; do s=${d%/}; [ -f "$s/transforms_valsub.json" ] || continue; v=${s}_val; mkdir -p "$v"
    ln -sfn "$s/train" "$v/train"; ln -sfn "$s/val" "$v/val"; cp "$s/transforms_train.json" "$v/"
    cp "$s/transforms_valsub.json" "$v/transforms_test.json"; cp "$s/transforms_valsub.json" "$v/transforms_val.json"; done
  ls $root/data ;;
start)
  shift; name=$1; scene=$2; shift 2
  pin=(); [ -n "${CPUS:-}" ] && command -v taskset >/dev/null && pin=(taskset -c "$CPUS")  # e.g. CPUS=0-3
  TRAIN_ONLY=$((1 - ${IN_PROCESS:-1})) IN_PROCESS=${IN_PROCESS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} BENCH_OUT=$root/out setsid nohup "${pin[@]}" bash $root/bin/train_eval.sh \
    "$root/data/$scene" "$name" "$@" >"$root/out/$name.stdout" 2>&1 </dev/null &
  echo "started $name (pid $!)" ;;
finish)
  shift; name=$1; scene=$2; shift 2
  BENCH_OUT=$root/out bash $root/bin/train_eval.sh "$root/data/$scene" "$name" "$@" ;;
kodak)
  shift; mkdir -p $root/repo $root/kodak-out
  cp -r shacira_nerf benchmarks $root/repo/ && mkdir -p $root/repo/.gpu $root/repo/.whl && cp .whl/constriction-*.whl $root/repo/.whl/
  [ -d $root/repo/.kodak ] || cp -r .kodak $root/repo/.kodak
  cd $root/repo && OUT=$root/kodak-out LIMIT=${LIMIT:-1500} setsid nohup bash benchmarks/gpu/kodak.sh "$@" \
    >$root/kodak-out/kodak.stdout 2>&1 </dev/null &
  echo "started kodak (pid $!)" ;;
stop)
  # Patterns that match the run's processes but not this command's own shell (pkill -f would match "bg.sh stop NAME").
  pkill -f "train_eval.sh $root/data/[^ ]+ ${2:?NAME} " ; pkill -f -- "--timestamp $2 "; pkill -f -- "/$2/config.yml"
  sleep 1; pgrep -f -- "--timestamp $2 " >/dev/null && echo "$2 still running" || echo "stopped $2" ;;
watch)
  end=$((SECONDS + ${2:?SECONDS})); shift 2
  [ -d $root/out ] || { echo "error: $root/out: no runs on this machine (a fresh one: the machine that ran them was given back)"; exit 2; }
  busy() { pgrep -f "$root/bin/train_eval.sh" >/dev/null || pgrep -f "benchmarks/image_kodak.py" >/dev/null; }
  while [ $SECONDS -lt $end ] && busy; do sleep 15; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  for f in "$root"/out/*.log; do
    [ -e "$f" ] || continue
    step=$(grep -aE '^[0-9]+ \([0-9.]+%\)' "$f" | tail -1 | tr -s ' ' | cut -c1-90)
    end_line=$(grep -aE 'done:|failed|resuming' "$f" | tail -1 | cut -c1-160)
    echo "$(basename "$f" .log): ${step:-no step yet} ${end_line}"
  done
  [ -f $root/kodak-out/kodak.log ] && echo "kodak: $(grep -aE 'step|group|wrote|exit' $root/kodak-out/kodak.log | tail -3 | cut -c1-200)"
  rc=0; busy && rc=3  # 3: runs still going (the next watch must follow within the 30-second warm window)
  [ $rc = 3 ] && echo "STILL RUNNING" || echo "ALL ENDED"
  [ -n "${OUT:-}" ] || exit $rc
  [ -f $root/out/runs.jsonl ] && cp $root/out/runs.jsonl "$OUT/"
  tar czf "$OUT/logs.tgz" -C $root/out --exclude='*.shac' .
  for f in "$@"; do [ -f "$root/out/$f" ] && cp "$root/out/$f" "$OUT/"; done
  if [ -d $root/kodak-out ]; then tar czf "$OUT/kodak.tgz" -C $root/kodak-out .; fi
  exit $rc ;;
esac
