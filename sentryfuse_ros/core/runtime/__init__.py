"""What runs on the robot, without ROS: the perception engine (its input stage in inputs.py: newest
sample per modality, freshness, preprocessing; sub-network per live set and budget), the sensor-health logic, and latency statistics.

May import: everything above except core.bags and core.bench.
"""
