"""The ROS-free core: model, pruning, health logic, data, training, evaluation.

Nothing under this package may import rclpy or ROS message modules.
"""
