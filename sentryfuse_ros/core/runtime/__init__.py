"""What runs on the robot, without ROS: the perception engine (newest sample per modality,
sub-network per live set and budget), the sensor-health logic, and latency statistics.

May import: everything above except core.bags and core.bench.
"""
