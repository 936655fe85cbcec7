"""Kwon et al. 2022 mask tuning: the least-squares solve, folding into weights, known answers on tiny models."""
import pytest
import torch

from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.errors import PruningError
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
from sentryfuse_ros.core.pruning.masktune import (apply_scales, execution_order, kwon_mask_tune, least_squares_scales,
                                                  tuned_model)
from sentryfuse_ros.core.pruning.prune import masks_to_gates, slice_model

torch.set_num_threads(1)
MODS = ('camera', 'audio')


def tiny(backbone='early'):
    torch.manual_seed(0)
    return SentryFuseModel(SentryFuseConfig(
        model=ModelConfig(backbone=backbone, modalities=MODS, dim=16, depth=2, num_heads=4, num_kv_heads=2,
                          ffn_dim=32, ffn_block=8, mid_layers=1, num_fusion_tokens=2, image_patch=8, n_fft=128,
                          hop=64, n_mels=8, audio_patch_frames=4),
        preprocess=PreprocessConfig(image_size=16, bev_size=16, audio_samples=1024), class_names=('a', 'b'))).eval()


def batches(model, n=2, b=6):
    return [(model.example_inputs(MODS, batch=b, generator=torch.Generator().manual_seed(10 + k)),
             torch.zeros(b, dtype=torch.long)) for k in range(n)]


def test_least_squares_matches_lstsq():
    gen = torch.Generator().manual_seed(0)
    a, r = torch.randn(200, 5, generator=gen, dtype=torch.float64), torch.randn(200, generator=gen, dtype=torch.float64)
    want = torch.linalg.lstsq(a, r[:, None]).solution[:, 0]
    assert torch.allclose(least_squares_scales(a.t() @ a, a.t() @ r, damp=0.0), want, atol=1e-10)
    with pytest.raises(PruningError, match=r'gram \(5, 4\)'):
        least_squares_scales(torch.zeros(5, 4), torch.zeros(5))


def test_apply_scales_equals_gated_forward():
    model = tiny('mid')
    gen = torch.Generator().manual_seed(3)
    scales = [(torch.rand(g, generator=gen) * 2, torch.rand(f, generator=gen) * 2) for g, f in model.unit_layout()]
    x = batches(model, 1)[0][0]
    folded = apply_scales(model, scales)
    assert torch.allclose(folded(x), model(x, masks_to_gates([(a, f) for a, f in scales])), atol=1e-5)
    assert not torch.allclose(folded(x), model(x), atol=1e-3)  # model itself untouched, scales matter


@pytest.mark.parametrize('backbone', ['early', 'mid', 'bottleneck'])
def test_duplicated_unit_pruned_gets_its_twin_scaled_by_two(backbone):
    """Known answer: FFN block 1 of the last block is a copy of block 0; pruning block 1 is undone exactly by
    m_0 = 2 (every other kept unit: m = 1), and the tuned, sliced model reproduces the full model."""
    model = tiny(backbone)
    x = batches(model, 1)[0][0]
    last = execution_order(model, x)[-1]
    ffn = model.blocks()[last].ffn
    b = ffn.block
    with torch.no_grad():
        ffn.fc1.weight[b:2 * b] = ffn.fc1.weight[:b]
        ffn.fc1.bias[b:2 * b] = ffn.fc1.bias[:b]
        ffn.fc2.weight[:, b:2 * b] = ffn.fc2.weight[:, :b]
    masks = [(torch.ones(g, dtype=torch.bool), torch.ones(f, dtype=torch.bool)) for g, f in model.unit_layout()]
    masks[last] = (masks[last][0], torch.tensor([True, False] + [True] * (model.unit_layout()[last][1] - 2)))
    tuned, scales = tuned_model(model, masks, batches(model), MODS, damp=0.0)
    want = torch.ones(model.unit_layout()[last][1])
    want[0], want[1] = 2.0, 0.0
    assert torch.allclose(scales[last][1], want, atol=1e-4)
    for i, (a, f) in enumerate(scales):
        assert torch.allclose(a, torch.ones_like(a), atol=1e-4)
        if i != last:
            assert torch.allclose(f, torch.ones_like(f), atol=1e-4)
    sliced = slice_model(tuned, masks)
    assert torch.allclose(sliced(x), model(x), atol=1e-4)
    untuned = slice_model(model, masks)
    assert not torch.allclose(untuned(x), model(x), atol=1e-3)


@pytest.mark.parametrize('backbone', ['early', 'bottleneck'])
def test_tuning_brings_the_pruned_model_closer_to_the_full_one(backbone):
    model = tiny(backbone)
    gen = torch.Generator().manual_seed(5)
    masks = []
    for g, f in model.unit_layout():
        a, ff = torch.rand(g, generator=gen) < 0.6, torch.rand(f, generator=gen) < 0.6
        a[0], ff[0] = True, True
        masks.append((a, ff))
    cal = batches(model, 3)
    tuned, scales = tuned_model(model, masks, cal, MODS)
    for (a, f), (ma, mf) in zip(scales, masks):
        assert bool((a[~ma] == 0).all() and (f[~mf] == 0).all())
    x = batches(model, 1)[0][0]  # the first calibration batch
    full = model(x)
    err_tuned = (slice_model(tuned, masks)(x) - full).pow(2).mean()
    err_plain = (slice_model(model, masks)(x) - full).pow(2).mean()
    assert err_tuned < err_plain


def test_mask_tune_errors():
    model = tiny()
    masks = [(torch.ones(g, dtype=torch.bool), torch.ones(f, dtype=torch.bool)) for g, f in model.unit_layout()]
    with pytest.raises(PruningError, match='masks for 1 blocks'):
        kwon_mask_tune(model, masks[:1], batches(model), MODS)
    with pytest.raises(PruningError, match=r"lacks live modalities \['audio'\]"):
        kwon_mask_tune(model, masks, [({'camera': batches(model)[0][0]['camera']}, torch.zeros(6))], MODS)
    with pytest.raises(PruningError, match='expected at least one batch'):
        kwon_mask_tune(model, masks, [], MODS)
