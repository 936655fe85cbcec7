"""Hostile files through the real entry points: the `sentryfuse` commands as subprocesses (peak RSS
measured in the child) and the perception node over DDS.

- sizes a small file declares (class 2): a checkpoint with compressed records, one whose config asks for
  dim 4096, a bag whose metadata claims 1e18 ns: refused at once, in bounded memory and time;
- manifests and datasets (class 3): export manifests with NaN/huge/negative budgets, a gigantic input
  shape or a file outside the folder; datasets with a shard outside the folder or NaN inputs;
- every subcommand given a bad input exits non-zero with one line naming the value and leaves no output;
- export into a read-only folder or onto a full disk, replay --labels with a binary file or an extra
  column, and a refused checkpoint's message without torch's weights_only=False advice.
"""
import errno
import json
import math
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
SIM = ROOT / 'models' / 'sentryfuse_sim.pt'
MAX_RSS_MB = 1024
CHILD = ('import sys\n'
         'sys.path.insert(0, sys.argv.pop(1))\n'
         'from sentryfuse_ros.cli import main\n'
         'from test_reliability_fuzz import peak_rss_mb\n'
         'try:\n'
         '    rc = main(sys.argv[1:])\n'
         'finally:\n'
         '    sys.stderr.write("\\nPEAK_RSS_MB %.0f\\n" % peak_rss_mb())\n'
         'sys.exit(rc)\n')

pytestmark = pytest.mark.slow


def sentryfuse(*args, timeout: float = 180.0, cwd=None):
    """(returncode, stdout, stderr without the RSS line, peak RSS MiB) of `sentryfuse ARGS` in a child."""
    try:
        proc = subprocess.run([sys.executable, '-c', CHILD, str(HERE), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, cwd=str(cwd or ROOT), env=dict(os.environ, OMP_NUM_THREADS='1'))
    except subprocess.TimeoutExpired:
        pytest.fail(f'sentryfuse {" ".join(map(str, args))} ran past {timeout} s')
    lines = proc.stderr.rstrip().splitlines()
    rss = float(lines[-1].split()[1]) if lines and lines[-1].startswith('PEAK_RSS_MB') else math.nan
    return proc.returncode, proc.stdout, '\n'.join(lines[:-1]).strip(), rss


def one_error_line(stderr: str, command: str) -> str:
    """The command's one error line (the last line of stderr), checked: no traceback."""
    assert 'Traceback' not in stderr, stderr[-3000:]
    last = stderr.splitlines()[-1] if stderr else ''
    assert last.startswith(f'sentryfuse {command}: error: '), stderr[-3000:]
    return last


# ---- hostile files -------------------------------------------------------------------------------------

def deflated_checkpoint(dst: pathlib.Path) -> pathlib.Path:
    """The shipped sim checkpoint with every zip record deflated (torch.save stores them uncompressed;
    a compressed record can expand to any size: 2 MB of deflated zeros are gigabytes)."""
    with zipfile.ZipFile(SIM) as src, zipfile.ZipFile(dst, 'w', compression=zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info))
    return dst


def wide_checkpoint(dst: pathlib.Path, dim: int = 4096) -> pathlib.Path:
    """The sim checkpoint (650 KB) whose config says ``dim``: the weights stay the small ones."""
    import torch
    data = torch.load(SIM, map_location='cpu', weights_only=True)
    data['config']['model']['dim'] = dim
    data['config']['model']['ffn_dim'] = 4 * dim
    torch.save(data, dst)
    return dst


def tampered_bag(dst: pathlib.Path, duration_ns: int = 10**18) -> pathlib.Path:
    """A short simulated bag whose metadata.yaml claims ``duration_ns``."""
    from replay_fixtures import sim_bag
    bag = sim_bag(dst, duration=1.0)
    path = bag / 'metadata.yaml'
    doc = yaml.safe_load(path.read_text())
    doc['rosbag2_bagfile_information']['duration']['nanoseconds'] = duration_ns
    path.write_text(yaml.safe_dump(doc))
    return bag


# ---- class 2: sizes declared by a file ---------------------------------------------------------------------

def test_checkpoint_with_compressed_records_is_refused_in_bounded_memory(tmp_path):
    # main: loaded (a 2 MB checkpoint of compressed zeros took the node to 2.3 GB before it was refused)
    bad = deflated_checkpoint(tmp_path / 'deflated.pt')
    rc, _out, err, rss = sentryfuse('export', '--checkpoint', bad, '--out', tmp_path / 'x', '--subsets', 'audio',
                                    '--budgets', '1.0')
    line = one_error_line(err, 'export')
    assert rc == 2 and 'holds compressed records' in line and str(bad) in line
    assert not (tmp_path / 'x').exists() and rss < MAX_RSS_MB


def test_checkpoint_whose_config_says_dim_4096_is_refused_before_building_the_model(tmp_path):
    # main: a 650 KB checkpoint whose config says dim 4096 built a 2.1 GB model, then refused its weights
    bad = wide_checkpoint(tmp_path / 'wide.pt')
    rc, _out, err, rss = sentryfuse('evaluate', '--checkpoint', bad, '--seed', 5, '--n', 8, '--out',
                                    tmp_path / 'e.json', '--repeats', 1)
    line = one_error_line(err, 'evaluate')
    assert rc == 2 and str(bad) in line and ('parameter elements' in line or 'size mismatch' in line), line
    assert rss < MAX_RSS_MB, f'peak RSS {rss:.0f} MiB'
    assert not (tmp_path / 'e.json').exists()


@pytest.mark.parametrize('command', ['replay', 'dataset'])
def test_bag_claiming_a_duration_of_1e18_ns_is_refused_at_once(tmp_path, command):
    # main: `replay` and `dataset` ran without end (4.8 GB after 300 s)
    bag = tampered_bag(tmp_path / 'bag')
    out = tmp_path / 'out'
    rc, _out, err, rss = sentryfuse(command, bag, '--out', out, '--no-progress', timeout=120)
    line = one_error_line(err, command)
    assert rc != 0 and 'duration [ns] 1000000000000000000' in line, line
    assert not out.exists() and not out.with_name('out.partial').exists() and rss < MAX_RSS_MB


# ---- class 3: manifests and datasets ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def audio_export(tmp_path_factory):
    """One real export of the sim checkpoint: the audio sub-network at budget 1.0."""
    from sentryfuse_ros.core.runtime.export import export_checkpoint
    out = tmp_path_factory.mktemp('onnx') / 'export'
    export_checkpoint(SIM, out, budgets=(1.0,), subsets=['audio'], samples=1)
    return out


MANIFEST_TAMPERING = {
    'budget NaN': (('budget',), float('nan'), r'subnetworks\[0\].budget=nan: expected a finite number in \(0.0, 1.0\]'),
    'budget 1e308': (('budget',), 1e308, r'subnetworks\[0\].budget=1e\+308'),
    'budget -1': (('budget',), -1, r'subnetworks\[0\].budget=-1'),
    'shape 1024^3': (('inputs', 0, 'shape'), [1, 1024, 1024, 1024], r"subnetworks\[0\].inputs\[0\]=\('audio', \[1, 1024"),
    'file ../': (('file',), '../outside.onnx', r"subnetworks\[0\].file='../outside.onnx': expected a plain name"),
    'file absolute': (('file',), '/tmp/outside.onnx', r"subnetworks\[0\].file='/tmp/outside.onnx'"),
}


@pytest.mark.parametrize('case', sorted(MANIFEST_TAMPERING))
def test_tampered_export_manifest_is_refused_by_the_perception_node(ros_context, audio_export, tmp_path, case):
    # main: budget NaN / 1e308 / -1 were published as such with status OK; the shape allocated 4.4 GB;
    # a file outside the folder was loaded and run
    import re

    sys.path.insert(0, str(HERE / 'nodes'))  # the perception harness of test/nodes/test_perception.py
    from test_perception import Harness, perception_overrides
    path, value, match = MANIFEST_TAMPERING[case]
    folder = tmp_path / 'export'
    shutil.copytree(audio_export, folder)
    shutil.copy(folder / 'audio@1.00.onnx', tmp_path / 'outside.onnx')
    data = json.loads((folder / 'manifest.json').read_text())
    target = data['subnetworks'][0]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (folder / 'manifest.json').write_text(json.dumps(data))
    h = Harness(ros_context, perception_overrides(SIM, backend='onnxruntime', onnx_dir=str(folder), prebuild=False))
    try:
        h.stream('audio')
        h.spin_for(1.5)
        assert h.perception.engine is None and re.search(match, h.perception.model_error), h.perception.model_error
        assert h.predictions == []
    finally:
        h.close()


def _dataset_and_config(tmp_path):
    from bag_training_fixtures import tiny_config, write_config, write_dataset
    cfg = tiny_config()
    ds = write_dataset(tmp_path / 'ds', [[('camera', 'lidar', 'audio')] * 8] * 3, pre=cfg.preprocess)
    return ds, write_config(tmp_path / 'train.yaml', cfg)


def test_dataset_with_a_shard_outside_its_folder_is_refused_by_train(tmp_path):
    # main: the shard path outside the dataset was read and trained on
    ds, cfg = _dataset_and_config(tmp_path)
    shutil.move(str(ds / 'shard-0001'), str(tmp_path / 'elsewhere'))
    data = json.loads((ds / 'manifest.json').read_text())
    data['bags'][1]['shard'] = '../elsewhere'
    (ds / 'manifest.json').write_text(json.dumps(data))
    out = tmp_path / 'm.pt'
    rc, _out, err, _rss = sentryfuse('train', '--config', cfg, '--data', ds, '--out', out, '--no-progress')
    line = one_error_line(err, 'train')
    assert rc == 2 and "bags[1].shard='../elsewhere'" in line and not out.exists(), line


def test_dataset_with_nan_inputs_is_refused_and_no_checkpoint_is_written(tmp_path):
    # main: rc 0 and a checkpoint of NaN weights
    ds, cfg = _dataset_and_config(tmp_path)
    for shard in ('shard-0000', 'shard-0001', 'shard-0002'):
        camera = ds / shard / 'camera.f16'
        x = np.fromfile(camera, '<f2')
        x[::5] = np.nan
        x.tofile(camera)
    out = tmp_path / 'm.pt'
    rc, _out, err, _rss = sentryfuse('train', '--config', cfg, '--data', ds, '--out', out, '--no-progress')
    line = one_error_line(err, 'train')
    assert rc == 2 and 'NaN/inf values' in line and not out.exists(), line


# ---- every subcommand, a bad input: non-zero, one line naming it, no output ---------------------------------

def _binary(path: pathlib.Path) -> pathlib.Path:
    path.write_bytes(bytes(range(256)) * 64)
    return path


def sweep_cases(tmp: pathlib.Path):
    """{subcommand: (argv, the value the error must name, outputs that must not exist)}."""
    junk = _binary(tmp / 'junk.bin')
    yaml_junk = _binary(tmp / 'junk.yaml')
    bag = tampered_bag(tmp / 'bag')
    ckpt = deflated_checkpoint(tmp / 'deflated.pt')
    o = tmp / 'out'
    return {
        'bench': (['bench', '--config', yaml_junk, '--out', o / 'b.json'], str(yaml_junk), [o]),
        'bench-merge': (['bench-merge', junk, '--out', o / 'm.json'], str(junk), [o]),
        'bench-report': (['bench-report', '--in', junk, '--out-dir', o], str(junk), [o]),
        'dataset': (['dataset', bag, '--out', o, '--no-progress'], str(bag), [o, tmp / 'out.partial']),
        'demo': (['demo', '--params', yaml_junk, '--duration', 1, '--quiet'], str(yaml_junk), []),
        'evaluate': (['evaluate', '--checkpoint', ckpt, '--seed', 3, '--out', o / 'e.json'], str(ckpt), [o]),
        'export': (['export', '--checkpoint', ckpt, '--out', o], str(ckpt), [o]),
        'replay': (['replay', bag, '--out', o, '--no-progress'], str(bag), [o, tmp / 'out.partial']),
        'run': (['run', '--params', yaml_junk, '--duration', 1], str(yaml_junk), []),
        'simulate-bag': (['simulate-bag', o, '--scenario', yaml_junk, '--no-progress'], str(yaml_junk),
                         [o, tmp / 'out.partial']),
        'train': (['train', '--config', yaml_junk, '--out', o / 'm.pt'], str(yaml_junk), [o]),
    }


def test_every_subcommand_given_a_bad_input_exits_non_zero_with_one_line_and_no_output(tmp_path):
    from sentryfuse_ros.cli import build_parser
    parser = build_parser()
    registered = set(next(a for a in parser._actions if a.dest == 'command').choices)  # noqa: SLF001
    cases = sweep_cases(tmp_path)
    assert set(cases) == registered, f'subcommands without a sweep case: {sorted(registered - set(cases))}'
    failures = []
    for command, (argv, value, outputs) in sorted(cases.items()):
        rc, _out, err, _rss = sentryfuse(*argv, timeout=120)
        last = err.splitlines()[-1] if err else ''
        ok = (rc != 0 and 'Traceback' not in err and last.startswith(f'sentryfuse {command}: error: ')
              and value in last and not any(p.exists() for p in outputs))
        if not ok:
            failures.append(f'{command}: rc {rc}, last line {last!r}, outputs {[str(p) for p in outputs if p.exists()]}'
                            f'\n{err[-1500:]}')
    assert not failures, '\n\n'.join(failures)


def test_argparse_errors_are_one_line():
    rc, _out, err, _rss = sentryfuse('export', '--checkpoint')
    assert rc == 2 and err.count('\n') == 0 and 'sentryfuse export: error: argument --checkpoint' in err, err


# ---- the "also" list ------------------------------------------------------------------------------------------

def test_export_into_a_read_only_folder_is_one_error_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip('root writes into read-only folders; see test_export_onto_a_full_disk for the OSError path')
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        rc, _out, err, _rss = sentryfuse('export', '--checkpoint', SIM, '--out', folder / 'x', '--subsets', 'audio',
                                         '--budgets', '1.0')
    finally:
        folder.chmod(stat.S_IRWXU)
    line = one_error_line(err, 'export')
    assert rc == 2 and 'cannot write the export to' in line and 'Permission denied' in line


def test_export_into_a_file_path_is_one_error_line(tmp_path):
    # the same OSError path a read-only folder takes (this box runs as root, which writes anywhere)
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    rc, _out, err, _rss = sentryfuse('export', '--checkpoint', SIM, '--out', blocker / 'x', '--subsets', 'audio',
                                     '--budgets', '1.0')
    line = one_error_line(err, 'export')
    assert rc == 2 and 'cannot write the export to' in line and str(blocker / 'x') in line, line


def test_export_onto_a_full_disk_leaves_no_graph_without_a_manifest(tmp_path, monkeypatch, capsys):
    # main: a full disk while writing manifest.json left the graphs without a manifest (and a traceback)
    from sentryfuse_ros import cli
    real = pathlib.Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name == 'manifest.json':
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, 'write_text', full_disk)
    out = tmp_path / 'x'
    rc = cli.main(['export', '--checkpoint', str(SIM), '--out', str(out), '--subsets', 'audio', '--budgets', '1.0',
                   '--samples', '1'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith('sentryfuse export: error: cannot write the export to') \
        and 'No space left on device' in err[-1], err
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize('content, match', [
    (bytes(range(256)) * 8, 'is not UTF-8 text'),
    (b't,label\n0.5,person,extra\n', r"line 2 \['0.5', 'person', 'extra'\]: expected exactly t,label"),
])
def test_replay_labels_binary_or_extra_column_is_one_error_line(tmp_path, content, match):
    # main: a binary file gave a UnicodeDecodeError traceback; an extra column was accepted
    import re

    from replay_fixtures import sim_bag
    bag = sim_bag(tmp_path / 'bag', duration=1.0)
    labels = tmp_path / 'labels.csv'
    labels.write_bytes(content)
    out = tmp_path / 'report'
    rc, _out, err, _rss = sentryfuse('replay', bag, '--labels', labels, '--out', out, '--no-progress', '--no-plots')
    line = one_error_line(err, 'replay')
    assert rc == 2 and re.search(match, line) and str(labels) in line and not out.exists(), line


class Payload:
    """A Python object inside a checkpoint: what the restricted unpickler must refuse."""


def test_refused_checkpoint_does_not_quote_the_weights_only_false_advice(tmp_path):
    import torch

    data = torch.load(SIM, map_location='cpu', weights_only=True)
    data['extra'] = Payload()
    bad = tmp_path / 'pickled.pt'
    torch.save(data, bad)
    rc, _out, err, _rss = sentryfuse('export', '--checkpoint', bad, '--out', tmp_path / 'x')
    line = one_error_line(err, 'export')
    assert rc == 2 and 'weights_only' not in line and 'Weights only load failed' not in line, line
    assert 'holds a Python object other than tensors and plain data' in line and 'Payload' in line, line
