"""rosbag2 files without ROS: reading (any storage, metadata version, split), message types,
writing, simulated bags from scenarios, offline replay through the runtime, and its report; labelled
bags -> training datasets through the same replay loop (dataset.py).

May import: core.errors, core.config, core.data, core.runtime (not core.bench).
"""
