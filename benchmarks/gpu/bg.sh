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
#   bash benchmarks/gpu/bg.sh queue SECONDS QUEUE [FILES...]   like watch, but while it waits it also starts the
#                                                        runs of the file QUEUE, in order, as slots free: the same
#                                                        command in every call of a session keeps the GPU full.
# A QUEUE line is `[VAR=value ...] q EST NAME SCENE METHOD ITERS [ns-train args]` (bash; # comments). A run starts
# once: when fewer than MAX_RUNS (default 3) runs are going, its SCENE is under /tmp/bench/data (a later call may
# carry it), and EST seconds from now (train, evaluate, export) end before the machine's deadline: HOLD seconds
# (default 1560) after its first `setup`, since a machine is given back 30 minutes after it was started. Every start
# happens in a call's foreground (see below), and nothing is started that the machine would not live to finish.
set -uo pipefail
root=/tmp/bench
start_run() {  # NAME SCENE METHOD ITERS [ns-train args]: one run in its own process session
  local name=$1 scene=$2; shift 2
  local pin=(); [ -n "${CPUS:-}" ] && command -v taskset >/dev/null && pin=(taskset -c "$CPUS")  # e.g. CPUS=0-3
  TRAIN_ONLY=$((1 - ${IN_PROCESS:-1})) IN_PROCESS=${IN_PROCESS:-1} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} BENCH_OUT=$root/out setsid nohup "${pin[@]}" bash $root/bin/train_eval.sh \
    "$root/data/$scene" "$name" "$@" >"$root/out/$name.stdout" 2>&1 </dev/null &
  echo "started $name (pid $!)"
}
busy() { pgrep -f "$root/bin/train_eval.sh" >/dev/null || pgrep -f "benchmarks/image_kodak.py" >/dev/null; }
q() {  # one QUEUE line (queue, above): start the run if it has not been and it can be now
  local est=$1 name=$2 scene=$3
  [ "$started" = 1 ] && return 0  # one start a pass: the next pass counts it among the runs going
  [ -e "$root/out/$name.queued" ] && return 0
  [ -d "$root/data/$scene" ] || return 0
  [ "$(pgrep -fc "$root/bin/train_eval.sh")" -lt "${MAX_RUNS:-3}" ] || return 0
  if [ $(($(date +%s) + est)) -gt "$deadline" ]; then
    [ -e "$root/out/$name.late" ] || { echo "not starting $name: ${est} s from now is past the machine's deadline"; touch "$root/out/$name.late"; }
    return 0
  fi
  touch "$root/out/$name.queued"; shift; start_run "$@"; started=1
}
case "${1:?setup|start|finish|watch|queue|stop|kodak}" in
setup)
  mkdir -p $root/bin $root/out $root/data
  [ -f $root/t0 ] || date +%s >$root/t0  # the machine's first setup: the queue's deadline counts from here
  cp -n benchmarks/gpu/*.sh benchmarks/gpu/*.py $root/bin/  # -n: a later call never rewrites the scripts runs are reading
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
  shift; start_run "$@" ;;
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
watch|queue)
  mode=$1; end=$((SECONDS + ${2:?SECONDS})); shift 2
  [ -d $root/out ] || { echo "error: $root/out: no runs on this machine (a fresh one: the machine that ran them was given back)"; exit 2; }
  if [ "$mode" = queue ]; then
    queue=${1:?QUEUE}; shift; [ -f "$queue" ] || { echo "error: $queue: no such queue file"; exit 2; }
    deadline=$(($(cat $root/t0) + ${HOLD:-1560}))
    while [ $SECONDS -lt $end ]; do
      started=0; source "$queue"
      [ $started = 1 ] && sleep 5 && continue  # a slot may still be free for the next line
      busy || break; sleep 15
    done
  else
    while [ $SECONDS -lt $end ] && busy; do sleep 15; done
  fi
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
