#!/usr/bin/env bash
# The full pruning grid (config/bench.yaml, section full) on a shared CPU machine: sharded, resumable,
# over as many sittings as it takes. Each sitting runs the next PARALLEL unfinished shards in the
# background at nice 10; a shard that was stopped resumes from its JSON (--resume: finished cells are
# kept, cached checkpoints are not retrained). When every shard is finished it merges them.
#
#   bash scripts/bench_full.sh start     # start (or resume) the next PARALLEL unfinished shards, background
#   bash scripts/bench_full.sh status    # per shard: finished / running / cells so far
#   bash scripts/bench_full.sh merge     # merge every shard into $OUT/grid_full.json.gz (once all are done)
#
# Env: N (shards, default 24: one model job list per shard of ~2.5 CPU hours), PARALLEL (default 2, the
# cores), OUT (default bench/issue20), DATA_ROOT (AV-MNIST: mnist/ and fsdd/recordings/, default
# ../shared/data). Stop a sitting with: kill -- -$(cat $OUT/shard_I.pid) for each running shard I.
set -u
N=${N:-24}; PARALLEL=${PARALLEL:-2}; OUT=${OUT:-bench/issue20}; DATA_ROOT=${DATA_ROOT:-../shared/data}
CACHE=$OUT/.bench_cache
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
BENCH=(python -m sentryfuse_ros.cli bench --config config/bench.yaml --data-root "$DATA_ROOT" --cache-dir "$CACHE"
       --threads 1)

finished() { grep -q ' new cells, ' "$OUT/shard_$1.log" 2>/dev/null && [ -f "$OUT/shard_$1.done" ]; }
running() { [ -f "$OUT/shard_$1.pid" ] && kill -0 "$(cat "$OUT/shard_$1.pid")" 2>/dev/null; }

case "${1:-status}" in
  start)
    if [ ! -f "$OUT/data.done" ]; then  # render the synthetic datasets once, so shards only read the cache
      nice -n 10 "${BENCH[@]}" --out "$OUT/prep.json" --prepare-data && touch "$OUT/data.done" || exit 1
    fi
    started=0
    for ((i = 0; i < N && started < PARALLEL; i++)); do
      finished "$i" && continue
      running "$i" && { started=$((started + 1)); continue; }
      setsid bash -c "nice -n 10 ${BENCH[*]} --out $OUT/shard_$i.json --shard $i/$N --resume \
        >> $OUT/shard_$i.log 2>&1 && touch $OUT/shard_$i.done" < /dev/null > /dev/null 2>&1 &
      echo $! > "$OUT/shard_$i.pid"
      echo "shard $i/$N started (pid $(cat "$OUT/shard_$i.pid"), log $OUT/shard_$i.log)"
      started=$((started + 1))
    done
    [ "$started" -eq 0 ] && echo "every shard is finished: bash scripts/bench_full.sh merge" ;;
  status)
    for ((i = 0; i < N; i++)); do
      state=pending; finished "$i" && state=finished; running "$i" && state=running
      cells=$(python -c "import json,sys; print(len(json.load(open(sys.argv[1]))['records']))" "$OUT/shard_$i.json" \
              2>/dev/null || echo 0)
      echo "shard $i/$N: $state, $cells cells; $(tail -n 1 "$OUT/shard_$i.log" 2>/dev/null)"
    done ;;
  merge)
    for ((i = 0; i < N; i++)); do finished "$i" || { echo "shard $i/$N is not finished"; exit 1; }; done
    python -m sentryfuse_ros.cli bench-merge "$OUT"/shard_*.json --out "$OUT/grid_full.json" &&
      gzip -f "$OUT/grid_full.json" && echo "wrote $OUT/grid_full.json.gz" ;;
  *) echo "usage: bash scripts/bench_full.sh start|status|merge"; exit 2 ;;
esac
