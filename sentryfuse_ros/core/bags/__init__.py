"""rosbag2 files without ROS: reading (any storage, metadata version, split bags), the message
types (standard and this package's, registered from their definitions), and writing.

May import: core.errors, core.config, core.data.
"""
