"""Model presets and the lifted geometry limits: non-square camera and BEV, position-embedding
interpolation, mel range, head dim independent of dim / heads."""
import dataclasses

import pytest
import torch

from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.errors import ConfigError, ModelError
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
from sentryfuse_ros.core.model.flops import count_flops
from sentryfuse_ros.core.model.melspec import mel_filterbank
from sentryfuse_ros.core.model.presets import MODEL_PRESETS, preset_config
from sentryfuse_ros.core.model.tokenizers import PatchTokenizer, resize_pos_embed
from sentryfuse_ros.core.pruning.prune import total_macs

NAMES = ('a', 'b', 'c')
ALL = ('camera', 'lidar', 'audio')


def _run(cfg: SentryFuseConfig, live=ALL, batch=2):
    torch.manual_seed(0)
    model = SentryFuseModel(cfg).eval()
    with torch.no_grad():
        out = model(model.example_inputs(live, batch=batch, generator=torch.Generator().manual_seed(0)))
    return model, out


@pytest.mark.parametrize('image, bev', [((32, 64), (32, 32)), ((16, 48), (24, 40)), ((32, 32), (16, 48))])
@pytest.mark.parametrize('backbone', ['early', 'bottleneck'])
def test_non_square_camera_and_bev_build_and_run(image, bev, backbone):
    pre = PreprocessConfig(image_size=image[0], image_width=image[1], bev_size=bev[0], bev_width=bev[1],
                           bev_x_range_m=(0.0, 20.0), audio_samples=4000)
    cfg = SentryFuseConfig(model=ModelConfig(dim=32, depth=2, num_heads=4, num_kv_heads=2, ffn_dim=64, backbone=backbone,
                                             mid_layers=1),
                           preprocess=pre, class_names=NAMES)
    model, out = _run(cfg)
    assert model.num_tokens['camera'] == (image[0] // 8) * (image[1] // 8)
    assert model.num_tokens['lidar'] == (bev[0] // 8) * (bev[1] // 8)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    x = model.example_inputs(('camera',))
    assert x['camera'].shape == (1, 3) + image
    with pytest.raises(ModelError, match=r'camera input shape \(1, 3, 8, 8\)'):
        model({'camera': torch.zeros(1, 3, 8, 8)})


@pytest.mark.parametrize('name, gflops', [('tiny', (0.01, 0.02)), ('robot', (4.0, 8.0))])
def test_presets_build_run_and_have_the_stated_cost(name, gflops):
    cfg = preset_config(name, NAMES)
    model, out = _run(cfg, batch=1)
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    flops = count_flops(model, model.example_inputs(ALL))
    assert gflops[0] <= flops / 1e9 <= gflops[1]
    assert flops == pytest.approx(2 * total_macs(model, ALL), rel=1e-6)


def test_robot_preset_geometry():
    model_cfg, pre = MODEL_PRESETS['robot']
    assert pre.image_hw == (128, 416) and 3.0 < 416 / 128 < 3.4   # KITTI aspect (1242 x 375 = 3.3)
    assert pre.bev_x_range == (0.0, 70.4) and pre.bev_hw == (128, 144)  # forward-only grid
    assert (model_cfg.dim, model_cfg.num_heads, model_cfg.num_kv_heads, model_cfg.attn_head_dim) == (384, 6, 2, 64)
    assert model_cfg.ffn_dim == 4 * model_cfg.dim and model_cfg.ffn_block == 64 and 6 <= model_cfg.depth <= 8
    assert pre.audio_rate == pre.audio_samples == 16000


def test_unknown_preset_is_named():
    with pytest.raises(ConfigError, match=r"model preset 'huge': expected one of \['robot', 'tiny'\]"):
        preset_config('huge', NAMES)


def test_head_dim_independent_of_dim_and_heads():
    cfg = SentryFuseConfig(model=ModelConfig(dim=48, num_heads=4, num_kv_heads=2, head_dim=20, ffn_dim=64),
                           class_names=NAMES)
    model, out = _run(cfg)
    attn = model.blocks()[0].attn
    assert attn.head_dim == 20 and attn.q.out_features == 80 and attn.k.out_features == 40
    assert torch.isfinite(out).all()
    assert ModelConfig(dim=48, num_heads=4).attn_head_dim == 12
    with pytest.raises(ConfigError, match=r'num_heads=5, num_kv_heads=1, dim=48'):
        ModelConfig(dim=48, num_heads=5, num_kv_heads=1)
    ModelConfig(dim=48, num_heads=5, num_kv_heads=1, head_dim=16)  # an explicit head dim lifts dim % heads


def test_mel_range_moves_the_filterbank_and_is_validated():
    fb = mel_filterbank(n_fft=512, n_mels=16, sample_rate=16000, f_min=300.0, f_max=4000.0)  # (M, K)
    freqs = torch.linspace(0, 8000, 257)
    used = freqs[(fb > 0).any(dim=0)]
    assert used.min() > 290 and used.max() < 4010
    cfg = SentryFuseConfig(model=ModelConfig(mel_f_min=100.0, mel_f_max=3000.0), class_names=NAMES)
    model, out = _run(cfg, live=('audio',))
    assert torch.isfinite(out).all()
    with pytest.raises(ConfigError, match=r'model.mel_f_max=5000.0: expected <= Nyquist 4000.0 Hz'):
        SentryFuseConfig(model=ModelConfig(mel_f_max=5000.0), class_names=NAMES)
    with pytest.raises(ConfigError, match=r'mel_f_max=100.0: expected 0 \(Nyquist\) or a frequency > mel_f_min=200.0'):
        ModelConfig(mel_f_min=200.0, mel_f_max=100.0)


def test_position_embeddings_are_interpolated_when_loading_another_grid():
    small = PatchTokenizer(name='camera', in_chans=3, size=(16, 32), patch=8, dim=4)   # 2 x 4 grid
    big = PatchTokenizer(name='camera', in_chans=3, size=(32, 64), patch=8, dim=4)     # 4 x 8 grid
    with torch.no_grad():
        small.pos.copy_(torch.arange(8, dtype=torch.float32)[:, None].expand(8, 4) / 8)  # (N, C) smooth ramp
    big.load_state_dict(small.state_dict())
    assert big.pos.shape == (32, 4) and tuple(big.pos_grid.tolist()) == (4, 8)
    grid = big.pos[:, 0].reshape(4, 8)
    assert torch.all(grid[:, 1:].mean(0) >= grid[:, :-1].mean(0) - 1e-6)  # the left-to-right ramp survives
    same = resize_pos_embed(small.pos.detach(), (2, 4), (2, 4))
    assert torch.equal(same, small.pos.detach())
    # a state dict from before non-square inputs (no pos_grid; square) loads too
    old = {k: v for k, v in PatchTokenizer(name='lidar', in_chans=3, size=16, patch=8, dim=4).state_dict().items()
           if k != 'pos_grid'}
    wide = PatchTokenizer(name='lidar', in_chans=3, size=(16, 24), patch=8, dim=4)
    wide.load_state_dict(old)
    assert wide.pos.shape == (6, 4)


def test_whole_model_loads_a_checkpoint_trained_at_another_camera_size():
    base = preset_config('tiny', NAMES)
    wider = dataclasses.replace(base, preprocess=dataclasses.replace(base.preprocess, image_width=64))
    src = SentryFuseModel(base)
    dst = SentryFuseModel(wider)
    dst.load_state_dict(src.state_dict())
    assert torch.equal(dst.tokenizers['camera'].proj.weight, src.tokenizers['camera'].proj.weight)
    assert dst.tokenizers['camera'].pos.shape == (4 * 8, 64)
