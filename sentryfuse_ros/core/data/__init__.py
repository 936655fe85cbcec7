"""Data in model form: synthetic tri-modal scenes, tensor datasets, AV-MNIST, band-limited
resampling, the sensor-array -> model-input preprocessing shared by training and the robot, and the
on-disk format of datasets built from bags (bagdataset.py).

May import: core.errors, core.config (numpy, OpenCV; no torch model code).
"""
