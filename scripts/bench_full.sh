#!/usr/bin/env bash
# The full pruning grid (config/bench.yaml, section full) on a shared CPU machine: sharded, resumable,
# over as many sittings as it takes. Each sitting runs the next PARALLEL unfinished shards in the
# background at nice 10; a shard that was stopped resumes from its JSON (--resume: finished cells are
# kept, cached checkpoints are not retrained). When every shard is finished it merges them.
#
#   bash scripts/bench_full.sh start     # start (or resume) the next PARALLEL unfinished shards, background
#   bash scripts/bench_full.sh status    # per shard: finished / running / cells so far
#   bash scripts/bench_full.sh merge     # merge every shard of every phase into $OUT/grid_full.json.gz
#
# Phases: PHASE=a (default) runs seeds 0-2 of every model job, PHASE=b seeds 3-4 (the same config; shards of a
# phase are numbered within it), so the three-seed grid is complete first and the last two seeds follow.
# Env: PHASE (a | b | all), N (shards of the phase, default 18 / 12 / 30), PARALLEL (default 2, the cores), OUT (default
# bench/issue20), DATA_ROOT (AV-MNIST: mnist/ and fsdd/recordings/, default ../shared/data).
# Stop a sitting: kill -- -$(cat $OUT/shard_PHASE_I.pid) for each running shard (it resumes on the next start).
set -u
PARALLEL=${PARALLEL:-2}; OUT=${OUT:-bench/issue20}; DATA_ROOT=${DATA_ROOT:-../shared/data}
PHASE=${PHASE:-a}
case "$PHASE" in  # shards of about two model jobs (~2.5 CPU hours) each
  a) MODELS=('*/*/s0' '*/*/s1' '*/*/s2'); N=${N:-18} ;;
  b) MODELS=('*/*/s3' '*/*/s4'); N=${N:-12} ;;
  all) MODELS=('*'); N=${N:-30} ;;
  *) echo "PHASE=$PHASE: expected a, b or all"; exit 2 ;;
esac
CACHE=$OUT/.bench_cache
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
BENCH=(python -m sentryfuse_ros.cli bench --config config/bench.yaml --data-root "$DATA_ROOT" --cache-dir "$CACHE"
       --threads 1 --models "${MODELS[@]}")

S="$OUT/shard_${PHASE}"  # this phase's shard files: ${S}_I.json, .log, .pid, .done
finished() { [ -f "${S}_$1.done" ]; }
running() { [ -f "${S}_$1.pid" ] && kill -0 "$(cat "${S}_$1.pid")" 2>/dev/null; }

case "${1:-status}" in
  start)
    if [ ! -f "$OUT/data.done" ]; then  # render the synthetic datasets once, so shards only read the cache
      nice -n 10 python -m sentryfuse_ros.cli bench --config config/bench.yaml --data-root "$DATA_ROOT" \
        --cache-dir "$CACHE" --out "$OUT/prep.json" --prepare-data && touch "$OUT/data.done" || exit 1
    fi
    started=0
    for ((i = 0; i < N && started < PARALLEL; i++)); do
      finished "$i" && continue
      running "$i" && { started=$((started + 1)); continue; }
      setsid bash -c 'nice -n 10 "$@" >> "$0.log" 2>&1 && touch "$0.done"' "${S}_$i" \
        "${BENCH[@]}" --out "${S}_$i.json" --shard "$i/$N" --resume < /dev/null > /dev/null 2>&1 &
      echo $! > "${S}_$i.pid"
      echo "phase $PHASE shard $i/$N started (pid $(cat "${S}_$i.pid"), log ${S}_$i.log)"
      started=$((started + 1))
    done
    [ "$started" -eq 0 ] && echo "phase $PHASE: every shard is finished (next: PHASE=b ... start, or merge)" ;;
  status)
    for ((i = 0; i < N; i++)); do
      state=pending; finished "$i" && state=finished; running "$i" && state=running
      cells=$(python -c "import json,sys; print(len(json.load(open(sys.argv[1]))['records']))" "${S}_$i.json" \
              2>/dev/null || echo 0)
      echo "phase $PHASE shard $i/$N: $state, $cells cells; $(tail -n 1 "${S}_$i.log" 2>/dev/null)"
    done ;;
  merge)
    for ((i = 0; i < N; i++)); do finished "$i" || { echo "phase $PHASE shard $i/$N is not finished"; exit 1; }; done
    [ "$PHASE" = b ] || [ "$PHASE" = all ] || echo "note: merging phase $PHASE's shards only if phase b has not run"
    python -m sentryfuse_ros.cli bench-merge "$OUT"/shard_*_*.json --out "$OUT/grid_full.json" &&
      gzip -f "$OUT/grid_full.json" && echo "wrote $OUT/grid_full.json.gz" ;;
  *) echo "usage: bash scripts/bench_full.sh start|status|merge"; exit 2 ;;
esac
