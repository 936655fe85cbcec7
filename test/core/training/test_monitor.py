"""The training monitor: per-modality probes and tokenizer gradient norms every checkpoint_every steps, in the
log, the checkpoint metadata and a progress plot beside the checkpoint."""
import dataclasses

import pytest
import torch

from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
from sentryfuse_ros.core.training.monitor import format_row, plot_progress, progress_plot_path
from sentryfuse_ros.core.training.train import train

from test_train import TINY

ALL = ('camera', 'lidar', 'audio')


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_probes_and_grad_norms_are_logged_and_stored(tmp_path):
    cfg = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=20, checkpoint_every=10))
    logs = []
    result = train(cfg, tmp_path / 'm.pt', progress=False, log=logs.append)
    _, _, meta = load_sentryfuse(tmp_path / 'm.pt')
    rows = meta['training']['progress']
    assert rows == result.meta['progress'] and [r['step'] for r in rows] == [10, 20]
    for r in rows:
        assert set(r['probe']) == set(ALL) and len(r['subsets']) == 7
        assert all(r['probe'][m] == r['subsets'][m] for m in ALL)  # a probe is the model run with m alone
        assert set(r['grad_norm']) == set(ALL) and all(v > 0 for v in r['grad_norm'].values())
        assert 'ogm_coeff' not in r  # OGM-GE is off
    # the last probe is the final model's dense validation accuracy
    assert rows[-1]['subsets'] == meta['training']['val_accuracy']['1.00']
    lines = [line for line in logs if line.startswith('step ')]
    assert len(lines) == 2 and lines[0] == format_row(rows[0])
    assert 'probe camera' in lines[0] and 'tokenizer grad norm camera' in lines[0]
    png = progress_plot_path(tmp_path / 'm.pt')
    assert png.name == 'm.progress.png' and png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_grad_norms_average_only_the_steps_a_modality_was_live(tmp_path):
    from sentryfuse_ros.core.training.monitor import TrainingMonitor
    mon = TrainingMonitor(ALL)
    mon.record_step({'camera': 1.0, 'lidar': 3.0}, {})
    mon.record_step({'camera': 3.0}, {'camera': 0.5})

    class Source:
        def validate(self, model, gate, *, batch, budgets):
            return {'1.00': {'camera': 0.5, 'lidar': 0.25, 'audio': 0.2, 'camera+lidar+audio': 0.9}}
    row = mon.checkpoint(2, None, None, Source(), batch=4, autocast='none', device='cpu', log=lambda s: None)
    assert row['grad_norm'] == {'camera': 2.0, 'lidar': 3.0} and row['ogm_coeff'] == {'camera': 0.5}
    assert format_row(row).startswith('step 2: probe camera 0.500, lidar 0.250, audio 0.200; camera+lidar+audio 0.900')
    assert plot_progress([row], tmp_path / 'p.png').is_file()
