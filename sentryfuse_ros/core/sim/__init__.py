"""The simulated robot without ROS: scene sources (what each sensor shows at time t), scripted
scenarios (drop/restore a stream, set the battery) and simulated bags recorded from them.

May import: core.errors, core.config, core.data, core.bags.
"""
