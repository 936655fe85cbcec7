import itertools

import pytest
import torch

from sentryfuse_ros.core.model.backbone import SentryFuseModel, UnitGates
from sentryfuse_ros.core.errors import ModelError
from sentryfuse_ros.core.model.flops import count_flops
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig
from sentryfuse_ros.core.pruning.prune import total_macs

torch.set_num_threads(1)
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)]
PRE = PreprocessConfig(image_size=16, bev_size=16, audio_samples=1024)


def tiny(backbone='early', attention='sentry', **kw):
    model = dict(backbone=backbone, attention=attention, dim=16, depth=3, num_heads=4, num_kv_heads=2, ffn_dim=32,
                 ffn_block=8, mid_layers=1, num_fusion_tokens=2, image_patch=8, bev_patch=8, n_fft=128, hop=64,
                 n_mels=8, audio_patch_frames=4)
    model.update(kw)
    torch.manual_seed(0)
    return SentryFuseModel(SentryFuseConfig(model=ModelConfig(**model), preprocess=PRE,
                                            class_names=('a', 'b', 'c', 'd'))).eval()


MODELS = {(b, a): tiny(b, a) for b in ('early', 'mid', 'bottleneck') for a in ('dense', 'sentry')}


@pytest.mark.parametrize('backbone', ['early', 'mid', 'bottleneck'])
@pytest.mark.parametrize('attention', ['dense', 'sentry'])
@pytest.mark.parametrize('live', SUBSETS, ids='+'.join)
def test_shapes_and_finite(backbone, attention, live):
    model = MODELS[(backbone, attention)]
    out = model(model.example_inputs(live, batch=2, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize('backbone, n_blocks', [('early', 3), ('mid', 3 * 1 + 2), ('bottleneck', 3 * 1 + 2 * 3)])
def test_block_order_and_layout(backbone, n_blocks):
    model = MODELS[(backbone, 'sentry')]
    assert len(model.blocks()) == n_blocks == len(model.unit_layout())
    assert model.unit_layout() == [(2, 4)] * n_blocks
    assert [b.index for b in model.blocks()] == list(range(n_blocks))
    mods = model.block_modalities()
    if backbone == 'mid':
        assert mods == ['camera', 'lidar', 'audio', None, None]
    if backbone == 'bottleneck':
        assert mods == ['camera', 'lidar', 'audio'] + ['camera', 'lidar', 'audio'] * 2


def _tokens_seen(model, inputs):
    seen = []
    hooks = [b.register_forward_pre_hook(lambda mod, args: seen.append((mod.index, args[0].shape[1])))
             for b in model.blocks()]
    model(inputs)
    for h in hooks:
        h.remove()
    return dict(seen)


def test_absent_modalities_produce_no_tokens_early():
    model = MODELS[('early', 'sentry')]
    n = model.num_tokens  # camera 4, lidar 4, audio 17 // 4 = 4
    for live in SUBSETS:
        seen = _tokens_seen(model, model.example_inputs(live))
        assert seen[0] == 1 + 2 + sum(n[m] for m in live)  # CLS + 2 global tokens + live tokens only


@pytest.mark.parametrize('backbone', ['mid', 'bottleneck'])
def test_absent_modality_blocks_are_skipped(backbone):
    model = MODELS[(backbone, 'sentry')]
    seen = _tokens_seen(model, model.example_inputs(('lidar',)))
    mods = model.block_modalities()
    ran = {i for i in seen}
    assert ran == {i for i, m in enumerate(mods) if m in (None, 'lidar')}


@pytest.mark.parametrize('backbone', ['early', 'mid', 'bottleneck'])
def test_flops_drop_with_absent_modalities(backbone):
    model = MODELS[(backbone, 'sentry')]
    flops = {live: count_flops(model, model.example_inputs(live)) for live in SUBSETS}
    for live in SUBSETS:
        assert flops[live] == 2 * total_macs(model, live)
        for bigger in SUBSETS:
            if set(live) < set(bigger):
                assert flops[live] < flops[bigger]


@pytest.mark.parametrize('backbone', ['early', 'mid', 'bottleneck'])
def test_sentry_flops_below_dense(backbone):
    dense, sentry = MODELS[(backbone, 'dense')], MODELS[(backbone, 'sentry')]
    x = dense.example_inputs(MODALITIES)
    assert count_flops(sentry, x) < count_flops(dense, x)


def test_gates_change_output_and_per_sample_rows_match():
    model = MODELS[('mid', 'sentry')]
    x = model.example_inputs(MODALITIES, batch=2, generator=torch.Generator().manual_seed(3))
    ones = [UnitGates(torch.ones(g), torch.ones(nf)) for g, nf in model.unit_layout()]
    assert torch.allclose(model(x, gates=ones), model(x), atol=1e-6)
    half = [UnitGates(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0, 1.0, 0.0])) for _ in model.unit_layout()]
    per = [UnitGates(torch.stack([h.attn, torch.ones(2)]), torch.stack([h.ffn, torch.ones(4)])) for h in half]
    out_half, out_per = model(x, gates=half), model(x, gates=per)
    assert not torch.allclose(out_half, model(x), atol=1e-4)
    assert torch.allclose(out_per[0], out_half[0], atol=1e-5) and torch.allclose(out_per[1], model(x)[1], atol=1e-5)


def test_input_errors():
    model = MODELS[('early', 'sentry')]
    with pytest.raises(ModelError, match=r'expected a non-empty dict'):
        model({})
    with pytest.raises(ModelError, match=r"live modalities \['radar'\]: expected a non-empty subset"):
        model({'radar': torch.zeros(1, 3)})
    x = model.example_inputs(('camera', 'audio'))
    x['audio'] = torch.zeros(2, 1024)
    with pytest.raises(ModelError, match=r"different batch sizes \{'camera': 1, 'audio': 2\}"):
        model(x)
    with pytest.raises(ModelError, match=r'gates for 1 blocks: expected 3'):
        model(model.example_inputs(('camera',)), gates=[UnitGates(torch.ones(2), torch.ones(4))])


def test_model_with_two_modalities_rejects_the_third():
    model = tiny('early', 'sentry', modalities=('camera', 'audio'))
    assert set(model.tokenizers) == {'camera', 'audio'}
    with pytest.raises(ModelError, match=r"\['lidar'\]: expected a non-empty subset of \['camera', 'audio'\]"):
        model({'lidar': torch.zeros(1, 3, 16, 16)})


def test_input_norm_statistics_carry_into_sliced_and_shared_sub_networks():
    """The robot model standardises camera/lidar inputs; every sub-network the engine builds must too."""
    from sentryfuse_ros.core.pruning.prune import select_units, slice_model, unit_costs
    model = tiny('mid', input_norm=True)
    for m in ('camera', 'lidar'):
        model.tokenizers[m].set_input_norm(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.25, 2.0]))
    live = ('camera', 'lidar')
    x = model.example_inputs(live, batch=2, generator=torch.Generator().manual_seed(1))
    plain = tiny('mid')
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.endswith(('in_mean', 'in_std'))})
    assert not torch.allclose(model(x), plain(x))  # the statistics are in effect
    scores = [(torch.arange(a, dtype=torch.float32), torch.arange(f, dtype=torch.float32))
              for a, f in model.unit_layout()]
    masks = select_units(scores, unit_costs(model, live), 1.0)
    for share in (False, True):
        sliced = slice_model(model, masks, share=share).eval()
        assert torch.allclose(sliced(x), model(x), atol=1e-5)
