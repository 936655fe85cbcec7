"""pip install -e . gives the ROS-free core and the `sentryfuse` CLI without a colcon build.

The ROS 2 package itself (interfaces + nodes) is built by colcon from CMakeLists.txt/package.xml.
"""
import glob

from setuptools import find_packages, setup

setup(
    name='sentryfuse_ros',
    version='0.1.0',
    description='SentryFuse: zero-shot modality-conditioned pruning for multimodal perception on ROS 2',
    packages=find_packages(include=['sentryfuse_ros', 'sentryfuse_ros.*']),
    python_requires='>=3.10',
    install_requires=['torch', 'numpy', 'pyyaml', 'opencv-python-headless', 'rosbags', 'soxr'],
    # the .msg definitions, so the bag layer can register our types without a colcon build
    data_files=[('share/sentryfuse_ros/msg', sorted(glob.glob('msg/*.msg')))],
    entry_points={'console_scripts': ['sentryfuse = sentryfuse_ros.cli:main']},
    license='Apache-2.0',
)
