"""What runs on the robot, without ROS: the perception engine (its input stage in inputs.py: newest
sample per modality, freshness, preprocessing; sub-network per live set and budget), the
sensor-health logic, latency statistics, and the deployment runtimes: the device/precision/backend
choice, ONNX export with its manifest and the runner sets (eager torch, onnxruntime sessions).
It loads its model through core.pruning.checkpoint and never depends on training.

May import: core.errors, core.config, core.data, core.model, core.pruning.
"""
