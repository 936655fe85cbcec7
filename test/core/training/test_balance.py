"""Modality balancing on a tiny model: OGM-GE scales the dominant encoder's gradient down (plus its noise),
the auxiliary heads give every encoder a gradient of its own, and neither reaches the checkpoint."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.model.config import SentryFuseConfig
from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
from sentryfuse_ros.core.training.balance import (Balancer, encoder_parameters, ogm_coefficients,
                                                  tokenizer_grad_norms)
from sentryfuse_ros.core.training.config import BalanceConfig
from sentryfuse_ros.core.training.train import train

from test_train import TINY

ALL = ('camera', 'lidar', 'audio')


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _model(backbone='early', seed=0):
    torch.manual_seed(seed)
    m = dataclasses.replace(TINY.model, backbone=backbone, mid_layers=1)
    return SentryFuseModel(SentryFuseConfig(model=m, preprocess=TINY.preprocess, class_names=tuple('abcdef')))


def _backward(model, balancer, labels, live=ALL):
    """One forward/backward of fused CE (+ the balancer's heads loss); the encoder grads {modality: [tensors]}."""
    inputs = model.example_inputs(live, batch=len(labels), generator=torch.Generator().manual_seed(1))
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(inputs), labels)
    if balancer is not None:
        balancer.zero_grad(set_to_none=True)
        loss = loss + balancer.loss(live, labels)
    loss.backward()
    return {m: [p.grad.clone() for p in encoder_parameters(model, m) if p.grad is not None] for m in live}


def _make_camera_dominant(balancer, labels):
    """Camera's head confidently right on every sample, the others' heads uniform (weights zeroed)."""
    with torch.no_grad():
        for m, head in balancer.heads.heads.items():
            lin = head[1]
            lin.weight.zero_()
            lin.bias.zero_()
            if m == 'camera':
                lin.bias[int(labels[0])] = 8.0


@pytest.mark.parametrize('backbone', ['early', 'mid', 'bottleneck'])
def test_ogm_scales_down_the_dominant_modality_encoder_gradient(backbone):
    model = _model(backbone)
    labels = torch.zeros(8, dtype=torch.long)
    bal = Balancer(BalanceConfig(ogm_alpha=1.0, ogm_noise=0.0), model, total_steps=10)
    _make_camera_dominant(bal, labels)
    before = _backward(model, bal, labels)
    s = bal.confidences(labels)
    assert s['camera'] > 7.9 and abs(s['lidar'] - 8 / 6) < 1e-4 and abs(s['audio'] - 8 / 6) < 1e-4
    bal.modulate(0, labels)
    ratio = s['camera'] / ((s['lidar'] + s['audio']) / 2)
    k = 1 - torch.tanh(torch.tensor(ratio - 1.0)).item()
    assert bal.coefficients['camera'] == pytest.approx(k) and k < 0.01
    assert bal.coefficients['lidar'] == bal.coefficients['audio'] == 1.0
    after = {m: [p.grad for p in encoder_parameters(model, m) if p.grad is not None] for m in ALL}
    for g0, g1 in zip(before['camera'], after['camera']):
        assert torch.allclose(g1, g0 * k)
    for m in ('lidar', 'audio'):  # the non-dominant encoders keep their gradient
        assert all(torch.equal(g0, g1) for g0, g1 in zip(before[m], after[m]))
    # the unimodal blocks of mid/bottleneck belong to the encoder too
    assert len(encoder_parameters(model, 'camera')) > len(list(model.tokenizers['camera'].parameters())) \
        or backbone == 'early'


def test_ogm_ge_adds_gaussian_noise_of_the_gradient_std():
    model = _model()
    labels = torch.zeros(8, dtype=torch.long)
    bal = Balancer(BalanceConfig(ogm_alpha=1.0, ogm_noise=1.0), model, total_steps=10)
    _make_camera_dominant(bal, labels)
    before = _backward(model, bal, labels)
    torch.manual_seed(0)
    bal.modulate(0, labels)
    proj = model.tokenizers['lidar'].proj.weight  # k = 1 for lidar: what changed is the noise alone
    g0 = before['lidar'][[p is proj for p in encoder_parameters(model, 'lidar')].index(True)]
    noise = proj.grad - g0
    assert 0.8 < float(noise.std() / g0.std()) < 1.2 and abs(float(noise.mean())) < 0.1 * float(g0.std())
    # past ogm_end_frac nothing is modulated
    late = Balancer(BalanceConfig(ogm_alpha=1.0, ogm_end_frac=0.5), model, total_steps=10)
    _make_camera_dominant(late, labels)
    again = _backward(model, late, labels)
    late.modulate(5, labels)
    assert late.coefficients == {}
    assert torch.equal(model.tokenizers['camera'].proj.weight.grad,
                       again['camera'][[p is model.tokenizers['camera'].proj.weight
                                        for p in encoder_parameters(model, 'camera')].index(True)])


def test_ogm_coefficients_follow_the_paper():
    assert ogm_coefficients({'camera': 4.0}, 1.0) == {'camera': 1.0}  # one live modality: nothing to balance
    k = ogm_coefficients({'camera': 6.0, 'audio': 2.0}, 0.5)
    assert k['audio'] == 1.0 and k['camera'] == pytest.approx(1 - torch.tanh(torch.tensor(0.5 * 2.0)).item())
    assert ogm_coefficients({'camera': 3.0, 'audio': 3.0}, 2.0) == {'camera': 1.0, 'audio': 1.0}


def test_aux_heads_give_each_encoder_its_own_gradient():
    """With the fused classifier's weights zeroed, the fused loss sends no gradient to the encoders;
    the auxiliary heads' loss does, to every live one; without aux_weight the heads only measure."""
    model = _model()
    with torch.no_grad():
        model.head.weight.zero_()
    labels = torch.arange(8) % 6
    plain = _backward(model, None, labels)
    assert all(float(sum(g.abs().sum() for g in gs)) == 0 for gs in plain.values())
    aux = _backward(model, Balancer(BalanceConfig(aux_weight=1.0), model, total_steps=10), labels)
    assert all(float(sum(g.abs().sum() for g in gs)) > 0 for gs in aux.values())
    probe_only = _backward(model, Balancer(BalanceConfig(ogm_alpha=1.0), model, total_steps=10), labels)
    assert all(float(sum(g.abs().sum() for g in gs)) == 0 for gs in probe_only.values())
    assert set(tokenizer_grad_norms(model, ('camera', 'audio'))) == {'camera', 'audio'}


def test_training_with_balancing_keeps_the_heads_out_of_the_checkpoint(tmp_path):
    quiet = dict(progress=False, log=lambda s: None)
    base = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, steps=12, checkpoint_every=6))
    both = dataclasses.replace(base, train=dataclasses.replace(
        base.train, balance=BalanceConfig(aux_weight=0.5, ogm_alpha=0.5)))
    plain = train(base, tmp_path / 'plain.pt', **quiet)
    balanced = train(both, tmp_path / 'both.pt', **quiet)
    model, _, meta = load_sentryfuse(tmp_path / 'both.pt')
    assert set(model.state_dict()) == set(plain.model.state_dict())  # the same deployed model, no heads
    assert 'balance' not in meta and meta['training']['train_config']['train']['balance']['aux_weight'] == 0.5
    assert all(set(r['ogm_coeff']) == set(ALL) for r in meta['training']['progress'])
    assert any(not torch.equal(a, b) for a, b in zip(plain.model.parameters(), balanced.model.parameters()))


def test_resume_with_balancing_is_bit_exact(tmp_path):
    from sentryfuse_ros.core.training.train import TrainingRun
    cfg = dataclasses.replace(TINY, train=dataclasses.replace(
        TINY.train, steps=16, checkpoint_every=8, balance=BalanceConfig(aux_weight=0.5, ogm_alpha=0.5, ogm_noise=0.0),
        gate=dataclasses.replace(TINY.train.gate, prune_start_frac=0.2)))
    quiet = dict(progress=False, log=lambda s: None)
    whole = train(cfg, tmp_path / 'whole.pt', **quiet)
    TrainingRun(cfg, tmp_path / 'part.pt', **quiet).advance(5)
    resumed = train(cfg, tmp_path / 'part.pt', resume=True, **quiet)
    for (k, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r['step'] for r in resumed.meta['progress']] == [8, 16]
    assert resumed.meta['progress'] == whole.meta['progress']


@pytest.mark.parametrize('key, value, match', [
    ('aux_weight', -1.0, r'aux_weight=-1\.0: expected a weight >= 0'),
    ('ogm_alpha', -0.1, r'ogm_alpha=-0\.1: expected an alpha >= 0'),
    ('ogm_noise', -1.0, r'ogm_noise=-1\.0: expected a noise scale >= 0'),
    ('ogm_end_frac', 1.5, r'ogm_end_frac=1\.5: expected a fraction in \[0, 1\]'),
])
def test_bad_balance_settings_are_rejected(key, value, match):
    with pytest.raises(ConfigError, match=match):
        BalanceConfig(**{key: value})
