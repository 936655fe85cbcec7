"""Offline evaluation on fresh synthetic scenes: accuracy per modality subset x budget with
FLOPs, parameters, memory and latency of each sub-network (evaluate.py), and the same accuracy
under a deployment runtime (eager bf16, onnxruntime: accuracy.py).

May import: core.errors, core.config, core.data, core.model, core.pruning, core.training, core.runtime.
"""
