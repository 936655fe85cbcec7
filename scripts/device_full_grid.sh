#!/usr/bin/env bash
# Full pruning grid on a many-core machine in one command: N parallel CPU shards, then one merged JSON.
#   PYTHONPATH=. bash scripts/device_full_grid.sh DATA_DIR OUT [N] [extra `sentryfuse bench` args...]
# DATA_DIR holds mnist/ and fsdd/recordings/ (AV-MNIST). Writes OUT/grid.json (merged records + meta,
# per-shard wall times and errors) and OUT/logs.tar.gz (one log and one JSON per shard).
# Env: LIMIT_S (per-shard timeout, default 450), PYTHON (default python3), DEVICE (default cpu).
set -u
DATA_DIR=${1:?DATA_DIR}; OUT=${2:?OUT}; N=${3:-15}; shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
LIMIT_S=${LIMIT_S:-450}; PY=${PYTHON:-python3}; DEVICE=${DEVICE:-cpu}
WORK=$(mktemp -d /tmp/sentryfuse_grid.XXXXXX)
CACHE=$WORK/cache; mkdir -p "$OUT" "$WORK/shards" "$CACHE"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
BENCH=("$PY" -m sentryfuse_ros.cli bench --data-root "$DATA_DIR" --cache-dir "$CACHE" --threads 1 "${EXTRA[@]}")
T0=$(date +%s)
echo "grid: $N shards, limit ${LIMIT_S}s each, data $DATA_DIR, work $WORK, $(getconf _NPROCESSORS_ONLN) cores, $("$PY" -c 'import torch,sys; print("python", sys.version.split()[0], "torch", torch.__version__)')"
# render the synthetic datasets once (one process per dataset), so the shards only read the cache
# (a dataset outside the grid, e.g. sim10_hard with --quick, just logs "no grid model matches")
for ds in sim6 sim6_solo sim10_hard; do
  timeout 120 "${BENCH[@]}" --out "$WORK/prep.json" --prepare-data --models "$ds/*" \
    > "$WORK/shards/prepare_$ds.log" 2>&1 &
done
wait
echo "[$(( $(date +%s) - T0 ))s] data ready: $(ls "$CACHE/data" 2>/dev/null | wc -l) cached splits"
for ((i = 0; i < N; i++)); do
  timeout -k 10 "$LIMIT_S" "${BENCH[@]}" --out "$WORK/shards/shard_$i.json" --device "$DEVICE" --shard "$i/$N" \
    > "$WORK/shards/shard_$i.log" 2>&1 &
  PIDS[$i]=$!
done
# progress: every 30 s, how many shards run and how many models are done
last=-30
while true; do
  running=0
  for ((i = 0; i < N; i++)); do kill -0 "${PIDS[$i]}" 2>/dev/null && running=$((running + 1)); done
  now=$(( $(date +%s) - T0 ))
  [ "$running" -gt 0 ] && [ $(( now - last )) -lt 30 ] && { sleep 5; continue; }
  last=$now
  echo "[${now}s] $running/$N shards running; done models: $(grep -h '\] .* done,' "$WORK"/shards/shard_*.log 2>/dev/null | wc -l); errors: $(grep -h '^ERROR' "$WORK"/shards/shard_*.log 2>/dev/null | wc -l)"
  [ "$running" -eq 0 ] && break
  sleep 5
done
for ((i = 0; i < N; i++)); do
  wait "${PIDS[$i]}"; rc=$?
  echo "shard $i/$N: rc $rc; $(tail -n 1 "$WORK/shards/shard_$i.log")"
done
"$PY" -m sentryfuse_ros.cli bench-merge --allow-missing "$WORK"/shards/shard_*.json --out "$OUT/grid.json"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" shards
echo "[$(( $(date +%s) - T0 ))s] wrote $OUT/grid.json ($(du -k "$OUT/grid.json" | cut -f1) KB) and $OUT/logs.tar.gz"
