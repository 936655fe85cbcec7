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
