"""config/fastdds_large_messages.xml: Fast DDS loads it without an error, the participant of a
process that uses it gets the profile's shared-memory segment (the defaults' is 512 KiB), and its
publisher delivers a KITTI-size image to this process. Delivery rates: scripts/bench_dds_transport.py."""
import os
import pathlib
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import domain_for

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROFILE = ROOT / 'config' / 'fastdds_large_messages.xml'
VARIABLES = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')
SHAPE = (375, 1242, 3)  # KITTI camera, rgb8: 1.4 MB

# argv: domain id, 'probe' (report the segment and exit) or 'serve' (also publish until stdin closes)
PUBLISHER = """
import os, re, select, sys
import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from sentryfuse_ros import msg_arrays as conv
from sentryfuse_ros.nodes import common

def own_segment_bytes():
    # the largest Fast DDS shared-memory segment this process maps (port queues excluded)
    names = set(re.findall(r'/dev/shm/(fastdds_[0-9a-f]+)\\s*$', open('/proc/self/maps').read(), re.M))
    return max((os.path.getsize('/dev/shm/' + n) for n in names), default=0)

ctx = rclpy.context.Context()
rclpy.init(context=ctx, domain_id=int(sys.argv[1]))
node = Node('profile_publisher', context=ctx)
pub = node.create_publisher(Image, '/camera/image_raw', common.qos_profile('reliable'))
print('SEGMENT', own_segment_bytes(), flush=True)
pixels = (np.arange(np.prod(%(shape)r)) %% 251).astype(np.uint8).reshape(%(shape)r)
msg = conv.array_to_image(pixels, encoding='rgb8')
while sys.argv[2] == 'serve' and not select.select([sys.stdin], [], [], 0.2)[0]:
    pub.publish(msg)
ctx.try_shutdown()
""" % {'shape': SHAPE}


def segment_size() -> int:
    ns = {'dds': 'http://www.eprosima.com'}
    shm = [d for d in ET.parse(PROFILE).getroot().iterfind('.//dds:transport_descriptor', ns)
           if d.findtext('dds:type', namespaces=ns) == 'SHM']
    assert len(shm) == 1, f'{PROFILE} has {len(shm)} SHM transport descriptors, expected 1'
    return int(shm[0].findtext('dds:segment_size', namespaces=ns))


def publisher(domain: int, mode: str, profile) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    if profile is not None:  # as the launch file sets it on Kilted (the wheels) and newer
        env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    return subprocess.Popen([sys.executable, '-c', PUBLISHER, str(domain), mode], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def segment_of(proc: subprocess.Popen) -> int:
    line = proc.stdout.readline()
    assert line.startswith('SEGMENT '), line + proc.stderr.read()
    return int(line.split()[1])


@pytest.mark.slow
def test_profile_parses_and_sizes_the_shared_memory_segment():
    size = segment_size()
    assert size >= 4 * 1_924_288, f'segment_size {size} holds < 4 KITTI clouds'
    segments = {}
    for name, profile in (('default', None), ('shipped', PROFILE)):
        proc = publisher(domain_for(19), 'probe', profile)
        segments[name] = segment_of(proc)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and 'Error' not in err, err
    assert segments['shipped'] >= size > segments['default'] > 0, segments


@pytest.mark.slow
def test_publisher_with_the_profile_delivers_a_kitti_frame(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    from sentryfuse_ros import msg_arrays as conv
    from sentryfuse_ros.nodes import common
    got = []
    node = Node('profile_subscriber', context=ros_context)
    node.create_subscription(Image, '/camera/image_raw', got.append, common.qos_profile('reliable'))
    proc = publisher(ros_context.get_domain_id(), 'serve', PROFILE)
    try:
        assert segment_of(proc) >= segment_size()
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        end = time.monotonic() + 30.0
        while not got and time.monotonic() < end and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        _, err = proc.communicate(input='stop\n', timeout=60)
    assert got, f'no image within 30 s; publisher stderr: {err}'
    expected = (np.arange(np.prod(SHAPE)) % 251).astype(np.uint8).reshape(SHAPE)
    np.testing.assert_array_equal(conv.image_to_array(got[0]), expected)
    assert 'Error' not in err, err
