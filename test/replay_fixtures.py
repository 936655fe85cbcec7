"""Shared helpers of the replay tests: the checkpoint, simulated bags, a KITTI-based bag."""
import pathlib

import cv2
import numpy as np

from sentryfuse_ros.core.bags.types import make_image, make_pointcloud2, make_typestore
from sentryfuse_ros.core.bags.writer import BagSink
from sentryfuse_ros.core.sim.scenario import Scenario
from sentryfuse_ros.core.sim.simulate import SimBagConfig, simulate_bag

SIM = SimBagConfig(scene_duration_s=2.0, lidar_points=1024, image_size=64)  # small and fast


def sim_bag(path, *, duration: float = 4.0, storage: str = 'mcap', scenario: Scenario = Scenario(),
            config: SimBagConfig = SIM) -> pathlib.Path:
    simulate_bag(path, scenario, storage=storage, duration=duration, config=config)
    return pathlib.Path(path)


def write_kitti_bag(path, kitti: pathlib.Path, *, seconds: float = 2.0, rate: float = 10.0,
                    storage: str = 'mcap', start_s: float = 1.6e9) -> int:
    """The 3 real KITTI camera + lidar frames, repeated at ``rate`` Hz for ``seconds``; returns frames."""
    store = make_typestore()
    frames = []
    for name in ('000000', '000001', '000002'):
        bgr = cv2.imread(str(kitti / 'image_2' / f'{name}.png'), cv2.IMREAD_COLOR)   # (375, 1242, 3)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        pts = np.fromfile(kitti / 'velodyne' / f'{name}.bin', dtype='<f4').reshape(-1, 4)  # (N, 4)
        frames.append((rgb, pts))
    n = int(round(seconds * rate))
    with BagSink(path, storage=storage, typestore=store) as sink:
        for k in range(n):
            t_ns = int(start_s * 1e9) + int(k * 1e9 / rate)
            rgb, pts = frames[k % 3]
            sink.write('/kitti/camera/image_raw', t_ns + 1_000_000, make_image(store, rgb, t_ns))
            sink.write('/kitti/velodyne_points', t_ns + 2_000_000, make_pointcloud2(store, pts, t_ns, 'velodyne'))
    return n


def dashing_bag(src, dst) -> pathlib.Path:
    """A copy of the sqlite3 bag ``src`` as Dashing wrote it and `ros2 bag reindex` indexed it: type
    names ``pkg/Type`` (no ``/msg/``), the Dashing table layout (topics, messages), metadata version 4."""
    import sqlite3

    import yaml

    src, dst = pathlib.Path(src), pathlib.Path(dst)
    dst.mkdir(parents=True)
    db = dst / f'{dst.name}_0.db3'
    old = sqlite3.connect(next(src.glob('*.db3')))
    new = sqlite3.connect(db)
    new.execute('CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, '
                'serialization_format TEXT NOT NULL)')
    new.execute('CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, '
                'timestamp INTEGER NOT NULL, data BLOB NOT NULL)')
    for row in old.execute('SELECT id, name, type, serialization_format FROM topics'):
        new.execute('INSERT INTO topics VALUES (?, ?, ?, ?)', (row[0], row[1], row[2].replace('/msg/', '/'), row[3]))
    new.executemany('INSERT INTO messages VALUES (?, ?, ?, ?)', old.execute('SELECT * FROM messages'))
    new.commit()
    new.close()
    old.close()
    meta = yaml.safe_load((src / 'metadata.yaml').read_text())
    info = meta['rosbag2_bagfile_information']
    info['version'] = 4
    info['relative_file_paths'] = [db.name]
    for key in ('files', 'custom_data', 'ros_distro'):
        info.pop(key, None)
    for entry in info['topics_with_message_count']:
        topic = entry['topic_metadata']
        topic['type'] = topic['type'].replace('/msg/', '/')
        topic.pop('type_description_hash', None)
        topic['offered_qos_profiles'] = ''
    (dst / 'metadata.yaml').write_text(yaml.safe_dump(meta))
    return dst
