#!/usr/bin/env bash
# Robot model, after bench/int8/export.sh W: int8 accuracy on 600 fresh scenes per subset x budget (beside eager
# fp32 on the same scenes, pinned to CPU 0) beside the runtime bench (1 thread pinned to CPU 1, interleaved) with
# int8 rows, run at the same time.
# bash bench/int8/measure.sh /tmp/int8w
set -e
W=${1:?work folder}
. .venv/bin/activate && . install/local_setup.bash
set -u
{ date; uptime; grep -m1 'model name' /proc/cpuinfo; nproc; } > bench/int8/machine.txt
taskset -c 0 nice -n 5 python -m sentryfuse_ros.cli evaluate --checkpoint models/sentryfuse_robot.pt --seed 2026 --n 600 \
  --budgets 1.0 0.5 --backend onnxruntime --precision int8 --onnx-dir "$W/robot_int8" \
  --out bench/int8/evaluate_int8.json > bench/int8/evaluate_int8.txt 2> bench/int8/evaluate_int8.err &
EVAL=$!
taskset -c 1 nice -n 5 python scripts/bench_runtimes.py --checkpoint models/sentryfuse_robot.pt \
  --fp32-dir "$W/robot_fp32" --int8-dir "$W/robot_int8" --warmup 5 --repeats 40 \
  --out bench/int8/bench_runtimes_robot.json > bench/int8/bench_runtimes_robot.txt 2> bench/int8/bench_runtimes_robot.err
{ date; uptime; } >> bench/int8/machine.txt
wait $EVAL
{ date; uptime; } >> bench/int8/machine.txt
