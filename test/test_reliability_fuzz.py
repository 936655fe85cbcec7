"""Hypothesis fuzz of every file format the project reads, with sizes and values from hostile ranges:
checkpoint, ONNX export manifest, bag-dataset manifest and shards, bag metadata and messages.

Each format's search runs in a child process (``python -c``) whose peak RSS (ru_maxrss) and wall time
are measured: every example must end in the format's own clear error (a SentryFuseError naming the
value) or a result that passes the reader's checks, the whole search must stay under MAX_RSS_MB and
MAX_WALL_S. The ``fuzz_*`` functions are the searches (not collected by pytest: the child calls one).
"""
import dataclasses
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SIM_CHECKPOINT = ROOT / 'models' / 'sentryfuse_sim.pt'
MAX_RSS_MB = 1024       # peak resident memory of a whole search [MiB]
MAX_WALL_S = 420.0      # wall time of a whole search on a loaded 2-core box [s]
EXAMPLES = {'fuzz_checkpoint': 40, 'fuzz_onnx_manifest': 200, 'fuzz_dataset': 60, 'fuzz_bag': 60}  # per format

# hostile integers: zero, negatives, the int32/int64 edges, sizes far past any real file
HOSTILE_INTS = [0, 1, -1, 7, 255, 4096, 10**6, 2**31 - 1, 2**31, 2**32, 2**53, 2**62, 2**63 - 1, -2**63]
HOSTILE_FLOATS = [0.0, -0.0, -1.0, 1e-300, 1e308, float('nan'), float('inf'), -float('inf'), 0.5, 1.0]


def _settings(name: str):
    from hypothesis import HealthCheck, settings
    return settings(max_examples=EXAMPLES[name], deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _hostile_value():
    from hypothesis import strategies as st
    return st.one_of(st.sampled_from(HOSTILE_INTS), st.sampled_from(HOSTILE_FLOATS),
                     st.integers(-2**64, 2**64), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(['', '../x', '/etc/passwd', 'a/b', '..', 'x' * 300, None, True, [], {}]),
                     st.lists(st.sampled_from(HOSTILE_INTS), max_size=5))


def _expect_clear(call, kinds):
    """Run ``call``; an exception must be one of ``kinds`` (the format's named errors) with a message."""
    try:
        return call()
    except kinds as exc:
        assert str(exc), f'{type(exc).__name__} without a message'
        return None


# ---- checkpoint -----------------------------------------------------------------------------------

CONFIG_KEYS = [('model', 'dim'), ('model', 'depth'), ('model', 'num_heads'), ('model', 'num_kv_heads'),
               ('model', 'ffn_dim'), ('model', 'ffn_block'), ('model', 'n_fft'), ('model', 'n_mels'),
               ('model', 'hop'), ('model', 'head_dim'), ('model', 'num_fusion_tokens'), ('model', 'image_patch'),
               ('preprocess', 'image_size'), ('preprocess', 'image_width'), ('preprocess', 'bev_size'),
               ('preprocess', 'audio_samples'), ('preprocess', 'audio_rate'), ('preprocess', 'bev_range_m')]


def fuzz_checkpoint():
    import torch
    from hypothesis import example, given, strategies as st

    from sentryfuse_ros.core.errors import CheckpointError
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse

    base = torch.load(SIM_CHECKPOINT, map_location='cpu', weights_only=True)
    names = sorted(base['state_dict'])
    work = pathlib.Path(tempfile.mkdtemp())

    @_settings('fuzz_checkpoint')
    @example(edits=[(('model', 'dim'), 4096)], tensor='cls', shape=[], replace=False, compress=False)  # the 2.1 GB case
    @given(edits=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), _hostile_value()), max_size=3),
           tensor=st.sampled_from(names), shape=st.lists(st.sampled_from([0, 1, 3, 7, 64]), max_size=4),
           replace=st.booleans(), compress=st.booleans())
    def search(edits, tensor, shape, replace, compress):
        data = dict(base, config=json.loads(json.dumps(base['config'])), state_dict=dict(base['state_dict']))
        for (section, key), value in edits:
            data['config'][section][key] = value
        if replace:
            data['state_dict'][tensor] = torch.zeros(shape)
        path = work / 'c.pt'
        torch.save(data, path)
        if compress:
            _recompress(path)
        _expect_clear(lambda: load_sentryfuse(path), CheckpointError)

    search()


def _recompress(path: pathlib.Path) -> None:
    """Rewrite a torch zip with every record deflated (torch.save stores them uncompressed)."""
    with zipfile.ZipFile(path) as src:
        records = [(info.filename, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED) as dst:
        for name, blob in records:
            dst.writestr(name, blob)


# ---- ONNX export manifest ---------------------------------------------------------------------------

def valid_manifest(folder: pathlib.Path) -> dict:
    from sentryfuse_ros.core.config import to_dict
    from sentryfuse_ros.core.data.preprocess import PreprocessConfig

    pre = PreprocessConfig()
    (folder / 'audio@1.00.onnx').write_bytes(b'graph')
    return {'format': 'sentryfuse-onnx', 'version': 1, 'checkpoint': 'm.pt', 'checkpoint_sha256': '0' * 64,
            'class_names': ['a', 'b'], 'modalities': ['camera', 'lidar', 'audio'], 'preprocess': to_dict(pre),
            'batch': 1, 'subnetworks': [{'key': 'audio@1.00', 'subset': ['audio'], 'budget': 1.0,
                                         'file': 'audio@1.00.onnx', 'gflops': 0.01, 'params': 100,
                                         'inputs': [{'name': 'audio', 'shape': [1, pre.audio_samples]}],
                                         'max_abs_diff': 0.0}]}


MANIFEST_PATHS = [('class_names',), ('modalities',), ('checkpoint_sha256',), ('batch',), ('subnetworks',),
                  ('preprocess', 'audio_samples'), ('preprocess', 'image_size'), ('preprocess', 'bev_range_m'),
                  ('subnetworks', 0, 'budget'), ('subnetworks', 0, 'file'), ('subnetworks', 0, 'gflops'),
                  ('subnetworks', 0, 'params'), ('subnetworks', 0, 'subset'), ('subnetworks', 0, 'max_abs_diff'),
                  ('subnetworks', 0, 'inputs', 0, 'shape'), ('subnetworks', 0, 'inputs', 0, 'name'),
                  ('subnetworks', 0, 'inputs', 0, 'shape', 1), ('subnetworks', 0, 'precision')]


def _set(data, path, value) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def fuzz_onnx_manifest():
    from hypothesis import given, strategies as st

    from sentryfuse_ros.core.errors import ExportError
    from sentryfuse_ros.core.runtime.export import load_manifest

    folder = pathlib.Path(tempfile.mkdtemp())

    @_settings('fuzz_onnx_manifest')
    @given(edits=st.lists(st.tuples(st.sampled_from(MANIFEST_PATHS), _hostile_value()), min_size=1, max_size=3))
    def search(edits):
        data = valid_manifest(folder)
        for path, value in edits:
            try:
                _set(data, path, value)
            except (KeyError, IndexError, TypeError):
                pass  # an earlier edit replaced the container: the manifest is hostile already
        (folder / 'manifest.json').write_text(json.dumps(data))
        manifest = _expect_clear(lambda: load_manifest(folder), ExportError)
        if manifest is not None:  # accepted: every value the runtime uses is sane
            for sub in manifest.subnetworks:
                assert 0 < sub.budget <= 1 and math.isfinite(sub.gflops) and sub.gflops >= 0
                assert (folder / sub.file).resolve().parent == folder.resolve()
                assert all(math.prod(shape) <= 10**7 for _, shape in sub.inputs)

    search()


# ---- bag-dataset manifest and shards ------------------------------------------------------------------

def fuzz_dataset():
    from hypothesis import given, strategies as st

    from sentryfuse_ros.core.data.bagdataset import BagDataset
    from sentryfuse_ros.core.data.preprocess import PreprocessConfig
    from sentryfuse_ros.core.errors import DataError
    from bag_training_fixtures import write_dataset

    work = pathlib.Path(tempfile.mkdtemp())
    pre = PreprocessConfig(image_size=8, bev_size=8, audio_samples=256)
    template = write_dataset(work / 'template', [[('camera', 'lidar', 'audio')] * 3] * 2, pre=pre)
    fields = [('samples',), ('shard',), ('name',)]
    top = [('class_names',), ('modalities',), ('shapes', 'camera'), ('preprocess', 'image_size'), ('bags',)]
    files = ['camera.f16', 'lidar.f16', 'audio.f16', 'present.u8', 't.f64', 'labels.json']

    @_settings('fuzz_dataset')
    @given(entry=st.lists(st.tuples(st.sampled_from(fields), _hostile_value()), max_size=2),
           head=st.lists(st.tuples(st.sampled_from(top), _hostile_value()), max_size=2),
           file=st.sampled_from(files), damage=st.sampled_from(['none', 'truncate', 'grow', 'nan', 'binary']))
    def search(entry, head, file, damage):
        ds = work / 'ds'
        shutil.rmtree(ds, ignore_errors=True)
        shutil.copytree(template, ds)
        data = json.loads((ds / 'manifest.json').read_text())
        for (key,), value in entry:
            data['bags'][0][key] = value
        for path, value in head:
            try:
                _set(data, path, value)
            except (KeyError, IndexError, TypeError):
                pass
        (ds / 'manifest.json').write_text(json.dumps(data))
        _damage(ds / 'shard-0000' / file, damage)
        dataset = _expect_clear(lambda: BagDataset(ds), DataError)
        if dataset is not None and len(dataset):
            arrays = _expect_clear(lambda: dataset.inputs(np.arange(len(dataset)), dataset.modalities), DataError)
            assert arrays is None or all(np.isfinite(x).all() for x in arrays.values())

    search()


def _damage(path: pathlib.Path, how: str) -> None:
    blob = path.read_bytes()
    if how == 'truncate':
        path.write_bytes(blob[:len(blob) // 2])
    elif how == 'grow':
        path.write_bytes(blob + b'\0' * 4096)
    elif how == 'nan' and path.suffix == '.f16':
        x = np.frombuffer(blob, '<f2').copy()
        x[::7] = np.nan
        path.write_bytes(x.tobytes())
    elif how == 'binary':
        path.write_bytes(b'\xff\xfe\x00' * (len(blob) // 3 + 1))


# ---- bag metadata and messages ---------------------------------------------------------------------------

def fuzz_bag():
    import yaml
    from hypothesis import given, strategies as st

    from sentryfuse_ros.core.bags.reader import BagSource, iter_messages
    from sentryfuse_ros.core.bags.types import make_image, make_pointcloud2, make_typestore
    from sentryfuse_ros.core.bags.writer import BagSink
    from sentryfuse_ros.core.errors import SentryFuseError
    from sentryfuse_ros.msg_arrays.modality_inputs import engine_converters

    store = make_typestore()
    work = pathlib.Path(tempfile.mkdtemp())
    u32 = st.one_of(st.sampled_from([0, 1, 7, 4096, 65535, 2**31 - 1, 2**32 - 1]), st.integers(0, 2**32 - 1))
    meta_keys = [('duration', 'nanoseconds'), ('starting_time', 'nanoseconds_since_epoch'), ('message_count',)]

    @_settings('fuzz_bag')
    @given(width=u32, height=u32, step=u32, png_w=u32, png_h=u32, cloud_w=u32, point_step=u32,
           meta=st.lists(st.tuples(st.sampled_from(meta_keys), _hostile_value()), max_size=2),
           storage=st.sampled_from(['mcap', 'sqlite3']))
    def search(width, height, step, png_w, png_h, cloud_w, point_step, meta, storage):
        bag = work / 'bag'
        shutil.rmtree(bag, ignore_errors=True)
        t0 = 1_700_000_000 * 10**9
        image = dataclasses.replace(make_image(store, np.zeros((4, 4, 3), np.uint8), t0),
                                    width=width, height=height, step=step)
        png = store.types['sensor_msgs/msg/CompressedImage'](
            header=image.header, format='png', data=np.frombuffer(_png_header(png_w, png_h), np.uint8))
        cloud = dataclasses.replace(make_pointcloud2(store, np.zeros((8, 4), np.float32), t0),
                                    width=cloud_w, point_step=point_step)
        with BagSink(bag, storage=storage, typestore=store) as sink:
            sink.write('/camera/image_raw', t0, image)
            sink.write('/camera/compressed', t0 + 1000, png)
            sink.write('/lidar/points', t0 + 2000, cloud)
        path = bag / 'metadata.yaml'
        doc = yaml.safe_load(path.read_text())
        for keys, value in meta:
            _set(doc['rosbag2_bagfile_information'], keys, value)
        path.write_text(yaml.safe_dump(doc))
        convert = engine_converters({'lidar': 'sensor_msgs/msg/PointCloud2'}, 8000)

        def read():
            with BagSource(bag) as src:
                held = [t for t, *_ in src.raw_messages()]
                # what the reader reports is what the files hold: a loop over [start_ns, end_ns) is bounded
                assert src.start_ns <= min(held) and src.end_ns - max(held) <= 1.5e9, (src.start_ns, src.end_ns)
                for bm in iter_messages(src):
                    if bm.msg is not None and bm.modality in convert:
                        _expect_clear(lambda: convert[bm.modality](bm.msg), SentryFuseError)
                for _t, topic, msgtype, raw in src.raw_messages(['/camera/compressed']):
                    msg = src.deserialize(raw, msgtype)
                    _expect_clear(lambda: convert['camera'](msg), SentryFuseError)
        _expect_clear(read, SentryFuseError)

    search()


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring ``width`` x ``height``, then garbage (a decoder would allocate first)."""
    import struct
    import zlib
    ihdr = struct.pack('>II', width, height) + bytes([8, 2, 0, 0, 0])
    chunk = struct.pack('>I', 13) + b'IHDR' + ihdr + struct.pack('>I', zlib.crc32(b'IHDR' + ihdr))
    return b'\x89PNG\r\n\x1a\n' + chunk + b'\0' * 64


# ---- the bounded runs -----------------------------------------------------------------------------------

CHILD = '''
import sys, time
sys.path.insert(0, {here!r})
import test_reliability_fuzz as fuzz
t0 = time.monotonic()
getattr(fuzz, {name!r})()
print('FUZZ_DONE rss_mb=%.0f wall_s=%.1f' % (fuzz.peak_rss_mb(), time.monotonic() - t0))
'''


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM) [MiB]; unlike ru_maxrss, it does not carry the parent's
    peak over a fork and exec."""
    for line in pathlib.Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) / 1024
    raise AssertionError('no VmHWM in /proc/self/status')


@pytest.mark.slow
@pytest.mark.parametrize('name', ['fuzz_checkpoint', 'fuzz_onnx_manifest', 'fuzz_dataset', 'fuzz_bag'])
def test_hostile_files_give_clear_errors_in_bounded_memory_and_time(name):
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, '-c', CHILD.format(here=str(HERE), name=name)],
                              capture_output=True, text=True, timeout=MAX_WALL_S, cwd=str(ROOT),
                              env=dict(os.environ, OMP_NUM_THREADS='1'))
    except subprocess.TimeoutExpired:
        pytest.fail(f'{name}: the search ran past {MAX_WALL_S} s')
    wall = time.monotonic() - t0
    assert proc.returncode == 0, f'{name}: rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
    line = next(s for s in proc.stdout.splitlines() if s.startswith('FUZZ_DONE'))
    rss = float(line.split('rss_mb=')[1].split()[0])
    print(f'{name}: {EXAMPLES[name]} examples, peak RSS {rss:.0f} MiB, {wall:.1f} s')
    assert rss < MAX_RSS_MB, f'{name}: peak RSS {rss:.0f} MiB: expected < {MAX_RSS_MB} MiB'
