import pytest
import torch

from sentryfuse_ros.core.errors import ModelError
from sentryfuse_ros.core.model.config import ModelConfig
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.model.tokenizers import AudioTokenizer, PatchTokenizer, build_tokenizer

torch.set_num_threads(1)
PRE = PreprocessConfig(image_size=16, bev_size=24, audio_samples=1024)
CFG = ModelConfig(dim=16, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8, image_patch=8, bev_patch=8,
                  n_fft=128, hop=64, n_mels=8, audio_patch_frames=4)


@pytest.mark.parametrize('modality, x_shape, n', [
    ('camera', (2, 3, 16, 16), 4), ('lidar', (2, 3, 24, 24), 9), ('audio', (2, 1024), (1 + 1024 // 64) // 4)])
def test_tokens_shape_and_count(modality, x_shape, n):
    tok = build_tokenizer(modality, model_cfg=CFG, pre_cfg=PRE)
    out = tok(torch.randn(x_shape).clamp(-1, 1))
    assert out.shape == (2, n, 16) and tok.num_tokens == n and torch.isfinite(out).all()


def test_patch_tokens_depend_on_their_patch_only():
    tok = PatchTokenizer(name='camera', in_chans=3, size=16, patch=8, dim=16)
    x = torch.randn(1, 3, 16, 16)
    y = x.clone()
    y[:, :, :8, :8] += 1.0  # change the top-left patch only
    diff = (tok(x) - tok(y)).abs().sum(-1)[0]
    assert diff[0] > 0 and torch.all(diff[1:] == 0)


def test_audio_drops_trailing_frames():
    tok = AudioTokenizer(samples=1024, sample_rate=8000, n_fft=128, hop=64, n_mels=8, patch_frames=5, dim=16)
    assert tok.num_tokens == 17 // 5  # 17 frames -> 3 tokens, 2 frames dropped
    assert tok(torch.zeros(3, 1024)).shape == (3, 3, 16)


@pytest.mark.parametrize('modality, shape, match', [
    ('camera', (2, 3, 8, 8), r'camera input shape \(2, 3, 8, 8\): expected \(batch, 3, 16, 16\)'),
    ('lidar', (2, 24, 24), r'lidar input shape \(2, 24, 24\)'),
    ('audio', (2, 1000), r'audio input shape \(2, 1000\): expected \(batch, 1024\)'),
])
def test_wrong_input_shape_is_named(modality, shape, match):
    with pytest.raises(ModelError, match=match):
        build_tokenizer(modality, model_cfg=CFG, pre_cfg=PRE)(torch.zeros(shape))


def test_unknown_modality():
    with pytest.raises(ModelError, match=r"modality 'radar'"):
        build_tokenizer('radar', model_cfg=CFG, pre_cfg=PRE)


def test_input_norm_standardises_each_channel_and_round_trips_in_the_state_dict():
    torch.manual_seed(0)
    plain = PatchTokenizer(name='lidar', in_chans=3, size=(16, 24), patch=8, dim=12)
    normed = PatchTokenizer(name='lidar', in_chans=3, size=(16, 24), patch=8, dim=12, input_norm=True)
    normed.load_state_dict({**plain.state_dict(), 'in_mean': torch.zeros(3), 'in_std': torch.ones(3)})
    x = torch.rand(2, 3, 16, 24) * torch.tensor([0.1, 2.0, 5.0]).view(1, 3, 1, 1)
    assert torch.equal(normed(x), plain(x))  # identity until statistics are set
    mean, std = torch.tensor([0.05, 1.0, 2.5]), torch.tensor([0.03, 0.6, 1.5])
    normed.set_input_norm(mean, std)
    expected = plain((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))
    assert torch.allclose(normed(x), expected, atol=1e-6) and not torch.allclose(normed(x), plain(x))
    again = PatchTokenizer(name='lidar', in_chans=3, size=(16, 24), patch=8, dim=12, input_norm=True)
    again.load_state_dict(normed.state_dict())
    assert torch.equal(again(x), normed(x))
    assert 'in_mean' not in plain.state_dict()  # models without input_norm keep their old state dict


@pytest.mark.parametrize('mean, std, match', [
    (torch.zeros(2), torch.ones(3), r'statistics of 2/3 channels: expected 3'),
    (torch.tensor([0.0, float('nan'), 0.0]), torch.ones(3), r'mean=\[0\.0, nan, 0\.0\].*finite'),
])
def test_input_norm_statistics_are_checked(mean, std, match):
    tok = PatchTokenizer(name='camera', in_chans=3, size=16, patch=8, dim=8, input_norm=True)
    with pytest.raises(ModelError, match=match):
        tok.set_input_norm(mean, std)
    with pytest.raises(ModelError, match='built without input_norm'):
        PatchTokenizer(name='camera', in_chans=3, size=16, patch=8, dim=8).set_input_norm(torch.zeros(3), torch.ones(3))
