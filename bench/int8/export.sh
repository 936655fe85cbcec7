#!/usr/bin/env bash
# Robot model: fp32 and int8 exports of every subset at budgets 1.0 and 0.5 (graphs outside the repo).
# bash bench/int8/export.sh /tmp/int8w   (logs to bench/int8/)
set -eu
W=${1:?work folder}; mkdir -p "$W"
. .venv/bin/activate
/usr/bin/time -v nice -n 5 python -m sentryfuse_ros.cli export --checkpoint models/sentryfuse_robot.pt --out "$W/robot_fp32" \
  --budgets 1.0 0.5 > bench/int8/export_fp32.log 2>&1
/usr/bin/time -v nice -n 5 python -m sentryfuse_ros.cli export --checkpoint models/sentryfuse_robot.pt --out "$W/robot_int8" \
  --budgets 1.0 0.5 --precision int8 > bench/int8/export_int8.log 2>&1
cp "$W/robot_int8/manifest.json" bench/int8/robot_int8_manifest.json
