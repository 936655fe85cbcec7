"""Synthetic scenes: determinism, shapes, the pair-confusion design, and the streaming view."""
import dataclasses
import itertools

import numpy as np
import pytest
import torch

from sentryfuse_ros.core.data import scenes
from sentryfuse_ros.core.data.datasets import render_sample
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.data.preprocess import PreprocessConfig

TINY = scenes.SceneConfig(image_size=32, lidar_points=256, audio_duration_s=0.25)
TINY_HARD = dataclasses.replace(scenes.SCENE_PRESETS['sim10_hard'], image_size=32, lidar_points=256,
                                audio_duration_s=0.25)
CLEAN = dataclasses.replace(TINY, difficulty=0.0)


@pytest.mark.parametrize('cfg', [TINY, TINY_HARD, scenes.SCENE_PRESETS['sim6']], ids=['tiny', 'tiny_hard', 'sim6'])
def test_render_shapes_dtypes_ranges(cfg):
    scene = scenes.sample_scene(np.random.default_rng(0), cfg)
    out = scenes.render(scene, cfg)
    assert out['camera'].shape == (cfg.image_size, cfg.image_size, 3) and out['camera'].dtype == np.uint8
    assert out['lidar'].shape == (cfg.lidar_points, 4) and out['lidar'].dtype == np.float32
    assert np.isfinite(out['lidar']).all()
    assert np.abs(out['lidar'][:, :2]).max() < cfg.lidar_range_m + 3
    assert 0 <= out['lidar'][:, 3].min() and out['lidar'][:, 3].max() <= 1
    assert out['audio'].shape == (int(cfg.audio_duration_s * cfg.audio_rate),) and out['audio'].dtype == np.float32
    assert np.abs(out['audio']).max() <= 1 and out['audio'].std() > 0.01


def test_deterministic_by_seed():
    a = scenes.sample_scene(np.random.default_rng(7), TINY)
    b = scenes.sample_scene(np.random.default_rng(7), TINY)
    c = scenes.sample_scene(np.random.default_rng(8), TINY)
    assert a == b and a != c
    ra, rb = scenes.render(a, TINY), scenes.render(b, TINY)
    for m in ra:
        np.testing.assert_array_equal(ra[m], rb[m])
    # another frame of the same scene: new sensor noise, same content on average
    f1 = scenes.render_camera(a, TINY, frame=1).astype(np.float32)
    f0 = ra['camera'].astype(np.float32)
    assert not np.array_equal(f0, f1) and abs(f0.mean() - f1.mean()) < 3


def test_class_names_and_pairs():
    assert scenes.class_names(TINY) == ('person', 'cyclist', 'car', 'dog', 'delivery_robot', 'drone')
    pairs = scenes.confused_pairs(scenes.SceneConfig())
    assert pairs == {'camera': [(0, 1), (2, 3), (4, 5)], 'lidar': [(0, 5), (1, 2), (3, 4)],
                     'audio': [(0, 3), (1, 4), (2, 5)]}


@pytest.mark.parametrize('k', [4, 6, 8, 10, 12])
def test_any_two_modalities_resolve_every_class(k):
    attrs = [scenes.attributes(c, k) for c in range(k)]
    for m in ('camera', 'lidar', 'audio'):
        assert len({a[m] for a in attrs}) == k // 2  # each modality alone: exactly pairs
    for m1, m2 in itertools.combinations(('camera', 'lidar', 'audio'), 2):
        assert len({(a[m1], a[m2]) for a in attrs}) == k


@pytest.mark.parametrize('cfg', [CLEAN, dataclasses.replace(TINY_HARD, difficulty=0.0)], ids=['6', '10'])
def test_each_modality_renders_exactly_its_attribute(cfg):
    """Noise-free, same nuisance: two classes render identically in a modality iff they share its template."""
    base = scenes.sample_scene(np.random.default_rng(3), cfg, class_id=0)
    renders = {c: scenes.render(dataclasses.replace(base, class_id=c), cfg) for c in range(cfg.num_classes)}
    for m in ('camera', 'lidar', 'audio'):
        for a, b in itertools.combinations(range(cfg.num_classes), 2):
            same = scenes.attributes(a, cfg.num_classes)[m] == scenes.attributes(b, cfg.num_classes)[m]
            assert np.array_equal(renders[a][m], renders[b][m]) == same, (m, a, b)


def _features(modality, x):
    if modality == 'audio':  # magnitude spectrum of 50 ms frames, averaged, 50 bands
        spec = torch.fft.rfft(x.view(len(x), -1, 400), dim=-1).abs().mean(1)[:, :200]
        return torch.log1p(10 * spec.reshape(len(x), 50, 4).mean(-1))
    if modality == 'lidar':  # position-invariant: the 24 largest cells of each BEV channel
        return torch.topk(x.flatten(2), 24, dim=2).values.flatten(1)
    return torch.nn.functional.avg_pool2d(x, 2).flatten(1)


@pytest.mark.slow
def test_single_modality_confuses_the_designed_pairs():
    torch.manual_seed(0)
    cfg, pre, n, n_train = scenes.SceneConfig(), PreprocessConfig(image_size=16, bev_size=16), 480, 360
    samples = [render_sample(cfg, pre, 11, i) for i in range(n)]
    y = torch.tensor([s[1] for s in samples])
    for m in ('camera', 'lidar', 'audio'):
        x = _features(m, torch.from_numpy(np.stack([s[0][m] for s in samples])))
        x = (x - x[:n_train].mean(0)) / (x[:n_train].std(0) + 1e-3)
        lin = torch.nn.Linear(x.shape[1], cfg.num_classes)
        opt = torch.optim.Adam(lin.parameters(), lr=0.01)
        for _ in range(150):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(lin(x[:n_train]), y[:n_train]).backward()
            opt.step()
        pred = lin(x[n_train:]).argmax(1)
        truth = y[n_train:]
        pair = {c: [b for p in scenes.confused_pairs(cfg)[m] for b in p if c in p and b != c][0] for c in range(6)}
        partner = torch.tensor([pair[int(c)] for c in truth])
        right, in_pair = (pred == truth).float().mean(), (pred == partner).float().mean()
        other = 1 - right - in_pair
        assert right + in_pair > 0.75, m          # the attribute itself is readable ...
        assert in_pair > 0.25 and in_pair > 3 * other / 4, m  # ... but its pair partner is a coin flip
        assert right < 0.7, m                      # so one modality alone stays far from solved


def test_stream_audio_is_continuous_across_frames_and_scenes():
    cfg = dataclasses.replace(CLEAN, clutter_max=2)
    stream = scenes.SceneStream(cfg, seed=5, scene_duration_s=0.5)
    frame = 160  # 20 ms at 8 kHz
    chunks = np.concatenate([stream.audio_chunk(i * 0.02, frame) for i in range(50)])  # 1 s: two scenes
    np.testing.assert_allclose(chunks, stream.audio_chunk(0.0, 50 * frame), atol=1e-6)
    first, second = stream.scene_at(0.1), stream.scene_at(0.6)
    assert stream.scene_at(0.49) == first and first != second
    np.testing.assert_allclose(chunks[:4000], scenes.render_audio(first, cfg, 0, 4000), atol=1e-6)
    np.testing.assert_allclose(chunks[4000:], scenes.render_audio(second, cfg, 0, 4000), atol=1e-6)


def test_stream_frames_follow_the_current_scene():
    stream = scenes.SceneStream(TINY, seed=1, scene_duration_s=2.0)
    a, b = stream.camera(0.1), stream.camera(0.2)
    assert a.shape == (32, 32, 3) and not np.array_equal(a, b)
    assert stream.lidar(0.1).shape == (256, 4)
    assert stream.scene_index(2.5) == 1


@pytest.mark.parametrize('kwargs, match', [
    ({'num_classes': 5}, 'num_classes=5'),
    ({'num_classes': 14}, 'num_classes=14'),
    ({'distance_range_m': (8.0, 4.0)}, 'distance_range_m'),
    ({'lidar_range_m': 5.0}, 'lidar_range_m=5.0'),
    ({'difficulty': -1.0}, 'difficulty=-1.0'),
    ({'audio_rate': 2000}, 'audio_rate=2000'),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        scenes.SceneConfig(**kwargs)


def test_scene_and_stream_errors():
    with pytest.raises(ConfigError, match='class_id=6'):
        scenes.sample_scene(np.random.default_rng(0), TINY, class_id=6)
    with pytest.raises(ConfigError, match='scene_duration_s=0'):
        scenes.SceneStream(TINY, seed=0, scene_duration_s=0)


def test_robot_scenes_render_at_the_robot_resolution_with_beam_rings():
    cfg = scenes.SCENE_PRESETS['robot6']
    scene = scenes.sample_scene(np.random.default_rng(0), cfg, class_id=2)
    out = scenes.render(scene, cfg)
    assert out['camera'].shape == (128, 416, 3) and out['camera'].dtype == np.uint8
    assert out['lidar'].shape == (16384, 4) and out['audio'].shape == (16000,)
    empty = {}
    for beams in (64, 0):  # the fraction of empty 25 cm radius bins among ground returns
        c = dataclasses.replace(cfg, lidar_beams=beams)
        cloud = scenes.render_lidar(scene, c)
        ground = cloud[np.abs(cloud[:, 2] + c.lidar_height_m) < 0.2]  # (M, 4)
        hist, _ = np.histogram(np.hypot(ground[:, 0], ground[:, 1]), bins=np.arange(0.0, 46.0, 0.25))
        empty[beams] = (hist == 0).mean()
    assert empty[64] > empty[0] + 0.2  # beam rings leave gaps between them; uniform radii do not


def test_sim6_solo_makes_every_modality_alone_informative():
    """The benchmark's sim6_solo preset: each class has its own template in every modality (noise-free, two
    classes never render alike in any modality), unlike sim6 where each template is shared by two classes."""
    cfg = dataclasses.replace(scenes.SCENE_PRESETS['sim6_solo'], image_size=32, lidar_points=256,
                              audio_duration_s=0.25, difficulty=0.0)
    assert cfg.attribute_code == 'identity' and scenes.SCENE_PRESETS['sim6'].attribute_code == 'pairs'
    assert all(len(g) == 1 for groups in scenes.confused_pairs(cfg).values() for g in groups)
    base = scenes.sample_scene(np.random.default_rng(3), cfg, class_id=0)
    renders = {c: scenes.render(dataclasses.replace(base, class_id=c), cfg) for c in range(cfg.num_classes)}
    for m in ('camera', 'lidar', 'audio'):
        for a, b in itertools.combinations(range(cfg.num_classes), 2):
            assert not np.array_equal(renders[a][m], renders[b][m]), (m, a, b)


def test_identity_code_needs_one_template_per_class():
    with pytest.raises(ConfigError, match="num_classes=10: expected at most 6 with attribute_code 'identity'"):
        scenes.SceneConfig(num_classes=10, attribute_code='identity')
    with pytest.raises(ConfigError, match="attribute_code='solo': expected 'pairs' or 'identity'"):
        scenes.SceneConfig(attribute_code='solo')
