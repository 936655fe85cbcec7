#!/usr/bin/env bash
# The GPU checks of the deployment runtimes, for a session that is lent a CUDA machine (one short run):
#   bash scripts/device_check_runtimes.sh OUT
# 1. the perception node on CUDA at fp16 and fp32 over real DDS (test_device_cuda_runs_on_the_gpu);
# 2. accuracy per subset x budget on the GPU at fp16 and bf16 against eager CPU fp32 (sentryfuse evaluate);
# 3. onnxruntime's providers there, and the TensorRT / CUDA provider path when onnxruntime-gpu is installed.
# Needs the venv and install/ of `make setup` (carry .venv and install). Writes OUT/*.json and OUT/log.txt.
set -u
OUT=${1:?OUT}; mkdir -p "$OUT"
. .venv/bin/activate && . install/local_setup.bash
export SENTRYFUSE_TEST_DOMAINS=${SENTRYFUSE_TEST_DOMAINS:-100:20} PYTHONUNBUFFERED=1
CKPT=models/sentryfuse_sim.pt
{
  python -c 'import torch, onnxruntime as ort; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "| onnxruntime", ort.__version__, ort.get_available_providers())'
  timeout 300 python -m pytest -q -p no:cacheprovider test/nodes/test_perception_runtime.py -k "gpu or cuda" -rs
  for p in fp16 bf16; do
    timeout 300 python -m sentryfuse_ros.cli evaluate --checkpoint "$CKPT" --seed 1000 --n 1000 --budgets 1.0 0.5 \
      --device cuda --precision "$p" --out "$OUT/acc_cuda_$p.json" | tail -3
  done
  if python -c 'import onnxruntime as o, sys; sys.exit(0 if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(o.get_available_providers()) else 1)'; then
    timeout 400 python -m sentryfuse_ros.cli export --checkpoint "$CKPT" --out "$OUT/onnx" --budgets 1.0 0.5
    for p in fp32 fp16; do
      timeout 300 python -m sentryfuse_ros.cli evaluate --checkpoint "$CKPT" --seed 1000 --n 1000 --budgets 1.0 0.5 \
        --device cuda --precision "$p" --backend onnxruntime --onnx-dir "$OUT/onnx" --out "$OUT/acc_ort_cuda_$p.json" | tail -3
    done
  else
    echo "onnxruntime has no CUDA/TensorRT provider here: the onnxruntime GPU path was not run"
  fi
} 2>&1 | tee "$OUT/log.txt"
