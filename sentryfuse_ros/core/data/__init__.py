"""Data in model form: synthetic tri-modal scenes, tensor datasets, AV-MNIST, band-limited
resampling, and the sensor-array -> model-input preprocessing shared by training and the robot.

May import: core.errors, core.config (numpy, OpenCV; no torch model code).
"""
