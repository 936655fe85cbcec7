"""Modality-dropout curriculum: phases, ramp, subset coverage, config errors."""
import collections

import numpy as np
import pytest

from sentryfuse_ros.core.config import from_dict
from sentryfuse_ros.core.training.curriculum import Curriculum, CurriculumConfig
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.pruning.gate import modality_subsets

MODS3 = ('camera', 'lidar', 'audio')


@pytest.mark.parametrize('mods', [MODS3, ('camera', 'audio')])
def test_phases_in_order(mods):
    cur = Curriculum(CurriculumConfig(phase1_frac=0.2, phase2_frac=0.3, drop_p_max=0.6, full_p=0.0),
                     modalities=mods, total_steps=1000)
    rng = np.random.default_rng(0)
    # phase 1: always everything
    assert [cur.phase(s) for s in (0, 199, 200, 499, 500, 999)] == [1, 1, 2, 2, 3, 3]
    assert all(cur.sample(s, rng) == mods for s in range(200))
    # phase 2: drop probability ramps from ~0 to p_max; early steps nearly always full, late ones often not
    assert cur.drop_probability(200) < 0.01 and cur.drop_probability(499) == pytest.approx(0.6)
    early = sum(cur.sample(200 + s % 10, rng) == mods for s in range(400)) / 400
    late = sum(cur.sample(490 + s % 10, rng) == mods for s in range(400)) / 400
    assert early > 0.95 and late < early - 0.3
    # phase 3: every non-empty subset, roughly uniformly, never an empty one
    counts = collections.Counter(cur.sample(600, rng) for _ in range(3500))
    assert set(counts) == set(modality_subsets(mods))
    expected = 3500 / (2 ** len(mods) - 1)
    assert all(abs(c - expected) < 0.25 * expected for c in counts.values())


@pytest.mark.parametrize('mods', [MODS3, ('camera', 'audio')])
def test_unimodal_warmup_takes_each_modality_alone_in_turn_then_shifts_the_phases(mods):
    cfg = CurriculumConfig(unimodal_frac=0.3, phase1_frac=0.2, phase2_frac=0.3, full_p=0.0)
    cur = Curriculum(cfg, modalities=mods, total_steps=1000)
    rng = np.random.default_rng(0)
    assert [cur.phase(s) for s in (0, 299, 300, 499, 500, 799, 800, 999)] == [0, 0, 1, 1, 2, 2, 3, 3]
    warm = [cur.sample(s, rng) for s in range(300)]
    assert all(len(w) == 1 for w in warm)
    counts = collections.Counter(w[0] for w in warm)
    assert set(counts) == set(mods) and max(counts.values()) - min(counts.values()) <= 1  # in turn: balanced
    assert warm[:len(mods)] == [(m,) for m in mods]
    assert all(cur.sample(s, rng) == mods for s in range(300, 500))  # phase 1 after the warm-up
    # the warm-up draws nothing from rng: the later phases see the same random stream as without it
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for s in range(300):
        cur.sample(s, a)
    assert a.random() == b.random()


def test_full_p_mixes_in_the_full_set():
    cur = Curriculum(CurriculumConfig(phase1_frac=0.0, phase2_frac=0.0, full_p=0.5), modalities=MODS3, total_steps=10)
    rng = np.random.default_rng(1)
    frac = sum(cur.sample(5, rng) == MODS3 for _ in range(2000)) / 2000
    assert 0.5 < frac < 0.65  # 0.5 + 0.5/7


def test_same_seed_same_draws():
    cur = Curriculum(CurriculumConfig(), modalities=MODS3, total_steps=100)
    a = [cur.sample(s, np.random.default_rng(7)) for s in range(100)]
    b = [cur.sample(s, np.random.default_rng(7)) for s in range(100)]
    assert a == b


@pytest.mark.parametrize('data, match', [
    ({'phase1_frac': 1.5}, r'phase1_frac=1\.5'),
    ({'phase1_frac': 0.6, 'phase2_frac': 0.6}, r'phase2_frac=0\.6: expected unimodal_frac \+ phase1_frac \+ phase2_frac <= 1'),
    ({'drop_p_max': 1.0}, r'drop_p_max=1\.0'),
    ({'unimodal_frac': -0.1}, r'unimodal_frac=-0\.1'),
    ({'unimodal_frac': 0.5, 'phase1_frac': 0.4, 'phase2_frac': 0.3}, r'phase2_frac=0\.3: expected unimodal_frac'),
    ({'warmup': 3}, r"unknown key\(s\) \['warmup'\]"),
])
def test_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(CurriculumConfig, data)


def test_bad_total_steps():
    with pytest.raises(ConfigError, match='total_steps=0'):
        Curriculum(CurriculumConfig(), modalities=MODS3, total_steps=0)
