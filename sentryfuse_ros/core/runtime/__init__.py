"""What runs on the robot, without ROS: the perception engine (its input stage in inputs.py: newest
sample per modality, freshness, preprocessing; sub-network per live set and budget), the
sensor-health logic, latency statistics, and the deployment runtimes: the device/precision/backend
choice, ONNX export with its manifest, the runner sets (eager torch, onnxruntime sessions) and
accuracy under a runtime.

May import: everything above except core.bags and core.bench.
"""
