"""The ROS-free core: everything that is the method, with no ROS in it.

Layers, each importing only those above it (no cycles): ``errors``/``config`` -> ``data`` ->
``bags`` -> ``model`` -> ``pruning`` -> ``training`` -> ``runtime`` -> ``sim`` -> ``replay``;
``bench`` sits beside ``runtime`` on ``training``. Nothing under this package may import rclpy or
ROS message modules (test/core/test_no_ros.py).
"""
