"""SentryGate: subsets, multilinear scores, saliency teacher, listwise alignment loss."""
import pytest
import torch
import torch.nn as nn

from sentryfuse_ros.core.errors import ConfigError, PruningError
from sentryfuse_ros.core.pruning.gate import (SaliencyTeacher, SentryGate, alignment_loss, listwise_kl, modality_subsets,
                                      ones_gates, read_saliency, subset_index)

MODS3 = ('camera', 'lidar', 'audio')


class TinyGated(nn.Module):
    """Stand-in with the backbone's gate contract: forward(inputs, gates) and unit_layout().

    Each block: G 'attention' units (Linear C->C each, output scaled by its gate) and NF FFN
    channel blocks (hidden channels scaled per block by their gate), both residual.
    """

    def __init__(self, mods=MODS3, c=8, layout=((2, 3), (3, 2)), classes=3):
        super().__init__()
        self.mods = mods
        self.enc = nn.ModuleDict({m: nn.Linear(4, c) for m in mods})
        self.units = nn.ModuleList([nn.ModuleList([nn.Linear(c, c) for _ in range(g)]) for g, _ in layout])
        self.ffn_in = nn.ModuleList([nn.Linear(c, 4 * nf) for _, nf in layout])
        self.ffn_out = nn.ModuleList([nn.Linear(4 * nf, c) for _, nf in layout])
        self.head = nn.Linear(c, classes)
        self.layout = tuple(layout)

    def unit_layout(self):
        return list(self.layout)

    def forward(self, inputs, gates=None):
        x = sum(self.enc[m](v) for m, v in inputs.items())  # (B, C)
        for i, (g, nf) in enumerate(self.layout):
            ga, gf = gates[i] if gates is not None else (torch.ones(g), torch.ones(nf))
            ga = ga if ga.dim() == 2 else ga.unsqueeze(0)  # (B|1, G)
            gf = gf if gf.dim() == 2 else gf.unsqueeze(0)  # (B|1, NF)
            x = x + sum(u(x) * ga[:, j:j + 1] for j, u in enumerate(self.units[i]))
            h = torch.relu(self.ffn_in[i](x)).unflatten(-1, (nf, 4)) * gf.unsqueeze(-1)  # (B, NF, 4)
            x = x + self.ffn_out[i](h.flatten(-2))
        return self.head(x)


def _batch(mods=MODS3, b=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, 4, generator=gen) for m in mods}, torch.randint(0, 3, (b,), generator=gen)


@pytest.mark.parametrize('mods, n', [(MODS3, 7), (('camera', 'audio'), 3), (('lidar',), 1)])
def test_subsets_and_index(mods, n):
    subsets = modality_subsets(mods)
    assert len(subsets) == n == 2 ** len(mods) - 1
    assert len(set(subsets)) == n and subsets[-1] == mods
    for k, s in enumerate(subsets):
        assert subset_index(s, mods) == k
        assert subset_index(tuple(reversed(s)), mods) == k  # order of live does not matter


@pytest.mark.parametrize('live, match', [((), 'at least one live modality'),
                                          (('camera', 'sonar'), r"unknown modality \['sonar'\]")])
def test_subset_index_errors(live, match):
    with pytest.raises(PruningError, match=match):
        subset_index(live, MODS3)


def test_layout_and_modality_errors():
    with pytest.raises(ConfigError, match='layout='):
        SentryGate(modalities=MODS3, layout=[(0, 2)])
    with pytest.raises(ConfigError, match='distinct names'):
        SentryGate(modalities=('camera', 'camera'), layout=[(2, 2)])


def test_multilinear_scores_share_single_modality_terms():
    gate = SentryGate(modalities=MODS3, layout=[(2, 3)])
    with torch.no_grad():
        gate.attn[0][subset_index(('camera',), MODS3)] = torch.tensor([1.0, 0.0])
        gate.attn[0][subset_index(('camera', 'lidar'), MODS3)] = torch.tensor([0.0, 5.0])
    assert torch.equal(gate.scores(('camera',))[0][0], torch.tensor([1.0, 0.0]))
    assert torch.equal(gate.scores(('lidar', 'camera'))[0][0], torch.tensor([1.0, 5.0]))
    assert torch.equal(gate.scores(MODS3)[0][0], torch.tensor([1.0, 5.0]))
    assert torch.equal(gate.scores(('lidar',))[0][0], torch.zeros(2))
    s = gate.scores(MODS3)
    assert [(a.shape, f.shape) for a, f in s] == [(torch.Size([2]), torch.Size([3]))]
    assert not s[0][0].requires_grad
    table = gate.table()
    assert table[0][0].shape == (7, 2) and table[0][1].shape == (7, 3)


@pytest.mark.parametrize('kind, per_sample', [('taylor', False), ('taylor', True), ('fisher', True)])
def test_teacher_zero_unit_gets_zero_saliency_and_ranks_lowest(kind, per_sample):
    torch.manual_seed(0)
    model = TinyGated()
    with torch.no_grad():  # attention unit 1 of block 0 and FFN block 2 of block 0 output nothing
        model.units[0][1].weight.zero_()
        model.units[0][1].bias.zero_()
        model.ffn_in[0].weight[8:12].zero_()
        model.ffn_in[0].bias[8:12].zero_()
    x, y = _batch()
    gates = ones_gates(model.unit_layout(), device=torch.device('cpu'), batch_size=16 if per_sample else None)
    loss = nn.functional.cross_entropy(model(x, gates), y)
    loss.backward()
    sal = read_saliency(gates, kind=kind)
    attn0, ffn0 = sal[0]
    assert attn0[1] == 0 and attn0[0] > 0
    assert ffn0[2] == 0 and int(ffn0.argmin()) == 2 and bool((ffn0[:2] > 0).all())
    teacher = SaliencyTeacher(modalities=MODS3, layout=model.unit_layout())
    teacher.update(MODS3, sal)
    t = teacher.teacher(MODS3)
    assert int(t[0][0].argmin()) == 1 and int(t[0][1].argmin()) == 2
    for a, f in t:  # normalised per block and unit kind: mean 1
        assert a.mean().item() == pytest.approx(1.0) and f.mean().item() == pytest.approx(1.0)
    assert teacher.teacher(('camera',)) is None


def test_teacher_taylor_matches_gate_gradient_definition():
    torch.manual_seed(1)
    model = TinyGated()
    x, y = _batch()
    gates = ones_gates(model.unit_layout(), device=torch.device('cpu'))
    nn.functional.cross_entropy(model(x, gates), y).backward()
    sal = read_saliency(gates)
    # finite difference of the loss in gate (block 1, attn unit 2) at 1
    with torch.no_grad():
        def loss_at(v):
            g = [(a.detach().clone(), f.detach().clone()) for a, f in gates]
            g[1][0][2] = v
            return nn.functional.cross_entropy(model(x, g), y).item()
        fd = (loss_at(1 + 1e-3) - loss_at(1 - 1e-3)) / 2e-3
    assert sal[1][0][2].item() == pytest.approx(abs(fd), rel=1e-2, abs=1e-6)


def test_teacher_ema_and_errors():
    teacher = SaliencyTeacher(modalities=MODS3, layout=[(2, 2)], decay=0.5)
    teacher.update(('camera',), [(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))])
    teacher.update(('camera',), [(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 2.0]))])
    assert torch.allclose(teacher.teacher(('camera',))[0][0], torch.tensor([1.0, 1.0]))
    assert teacher.seen().tolist() == [True] + [False] * 6
    with pytest.raises(PruningError, match='saliency has 2 blocks; the teacher expects 1'):
        teacher.update(MODS3, [(torch.ones(2), torch.ones(2))] * 2)
    with pytest.raises(ConfigError, match='ema_decay=1.0'):
        SaliencyTeacher(modalities=MODS3, layout=[(2, 2)], decay=1.0)
    with pytest.raises(ConfigError, match="saliency='l2'"):
        read_saliency([], kind='l2')
    g = ones_gates([(2, 2)], device=torch.device('cpu'))
    with pytest.raises(PruningError, match='block 0 attn gate has no gradient'):
        read_saliency(g)
    g[0][0].sum().backward()
    g[0][1].sum().backward()
    with pytest.raises(PruningError, match='fisher needs per-sample gates'):
        read_saliency(g, kind='fisher')


@pytest.mark.parametrize('tau', [0.5, 1.0, 2.0])
def test_listwise_kl_zero_at_match_scale_free_positive_otherwise(tau):
    teacher = torch.tensor([[0.5, 2.0, 1.0, 0.1], [3.0, 0.0, 1.0, 1.0]])
    matching = torch.where(teacher > 0, teacher.clamp_min(1e-12).log() / tau, torch.full_like(teacher, -30.0)) + 4.0
    assert listwise_kl(matching, teacher, temperature=tau).item() == pytest.approx(0.0, abs=1e-6)
    scores = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    base = listwise_kl(scores, teacher, temperature=tau)
    assert base.item() > 1e-3
    for c in (1e-3, 7.0, 1e4):
        assert listwise_kl(scores, c * teacher, temperature=tau).item() == pytest.approx(base.item(), rel=1e-5)
    reversed_ = -matching.clamp_min(-10)
    assert listwise_kl(reversed_, teacher, temperature=tau).item() > 0.1


def test_listwise_kl_gradient_moves_scores_toward_teacher():
    teacher = torch.tensor([0.1, 1.0, 3.0, 0.5])
    scores = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([scores], lr=1.0)
    losses = []
    for _ in range(200):
        opt.zero_grad()
        loss = listwise_kl(scores, teacher)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 < losses[0]
    assert scores.argsort().tolist() == teacher.argsort().tolist()


def test_listwise_kl_errors():
    with pytest.raises(PruningError, match=r'scores shape \(3,\) != teacher shape \(4,\)'):
        listwise_kl(torch.zeros(3), torch.ones(4))
    with pytest.raises(ConfigError, match='align_temperature=0'):
        listwise_kl(torch.zeros(3), torch.ones(3), temperature=0)


def test_alignment_loss_trains_only_the_gate_and_learns_each_subset_ranking():
    layout = [(2, 3), (3, 2)]
    gate = SentryGate(modalities=MODS3, layout=layout)
    teacher = SaliencyTeacher(modalities=MODS3, layout=layout)
    assert alignment_loss(gate, teacher).item() == 0.0
    gen = torch.Generator().manual_seed(3)
    targets = {}
    for live in (('camera',), ('lidar', 'audio'), MODS3):
        targets[live] = [(torch.rand(g, generator=gen) + 0.01, torch.rand(f, generator=gen) + 0.01) for g, f in layout]
        teacher.update(live, targets[live])
    opt = torch.optim.Adam(gate.parameters(), lr=0.1)
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss = alignment_loss(gate, teacher, temperature=0.5)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.01 * first
    for live, t in targets.items():
        for (sa, sf), (ta, tf) in zip(gate.scores(live), t):
            assert sa.argsort().tolist() == ta.argsort().tolist()
            assert sf.argsort().tolist() == tf.argsort().tolist()
    assert all(b.grad is None for b in teacher.buffers())


@pytest.mark.parametrize('backbone', ['early', 'mid', 'bottleneck'])
def test_teacher_on_the_real_model_zeroed_units_rank_lowest(backbone):
    from sentryfuse_ros.core.model.backbone import SentryFuseModel
    from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
    from sentryfuse_ros.core.data.preprocess import PreprocessConfig
    torch.manual_seed(0)
    cfg = SentryFuseConfig(
        model=ModelConfig(backbone=backbone, dim=16, depth=3, mid_layers=1, num_heads=4, num_kv_heads=2, ffn_dim=32,
                          ffn_block=8, num_fusion_tokens=2, n_fft=128, hop=128, n_mels=8),
        preprocess=PreprocessConfig(image_size=16, bev_size=16, audio_samples=2048), class_names=('a', 'b', 'c'))
    model = SentryFuseModel(cfg)
    blk = model.blocks()[-1]  # a block every live set runs
    d = blk.attn.head_dim
    with torch.no_grad():  # KV group 1 has zero values; FFN block 3 has zero pre-activations (GELU(0) = 0)
        blk.attn.v.weight[d:2 * d].zero_()
        blk.attn.v.bias[d:2 * d].zero_()
        blk.ffn.fc1.weight[24:32].zero_()
        blk.ffn.fc1.bias[24:32].zero_()
    x = model.example_inputs(MODS3, batch=6, generator=torch.Generator().manual_seed(1))
    gates = ones_gates(model.unit_layout(), device=torch.device('cpu'))
    nn.functional.cross_entropy(model(x, gates), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    attn, ffn = read_saliency(gates)[-1]
    assert attn[1] == 0 and attn[0] > 0
    assert ffn[3] == 0 and int(ffn.argmin()) == 3 and bool((ffn[:3] > 0).all())


def test_read_saliency_skipped_blocks_give_zero_only_when_asked():
    a = torch.ones(2, requires_grad=True)
    f = torch.ones(3, requires_grad=True)
    (a.sum() * 2).backward()  # f took no part: like a block of an absent modality
    with pytest.raises(PruningError, match='block 0 ffn gate has no gradient'):
        read_saliency([(a, f)])
    (sa, sf), = read_saliency([(a, f)], skipped_blocks_zero=True)
    assert torch.equal(sa, torch.full((2,), 2.0)) and torch.equal(sf, torch.zeros(3))


def test_calibrated_scores_are_comparable_across_blocks():
    """scores = raw saliency scale of (subset, block, kind) x U x softmax(tau * logits); uncalibrated = logits."""
    layout = [(2, 3), (2, 3)]
    gate = SentryGate(modalities=('camera', 'audio'), layout=layout)
    with torch.no_grad():
        gate.attn[0][2].copy_(torch.tensor([1.0, -1.0]))  # subset row 2 = camera+audio
    raw = gate.scores(('camera', 'audio'))
    assert torch.equal(raw[0][0], torch.tensor([1.0, -1.0]))  # uncalibrated: the logits
    teacher = SaliencyTeacher(modalities=('camera', 'audio'), layout=layout, decay=0.0)
    big, small = torch.tensor([4.0, 2.0]), torch.tensor([0.04, 0.02])
    teacher.update(('camera', 'audio'), [(big, torch.ones(3)), (small, torch.ones(3))])
    gate.calibrate(teacher, temperature=0.5)
    (a0, _), (a1, _) = gate.scores(('audio', 'camera'))
    assert torch.allclose(a0, 3.0 * 2 * torch.softmax(torch.tensor([0.5, -0.5]), 0))
    assert torch.allclose(a1, 0.03 * 2 * torch.softmax(torch.zeros(2), 0))
    assert a1.max() < a0.min()  # the low-saliency block's units rank below the high one's
    # a gate saved before calibration existed still loads (uncalibrated)
    old = {k: v for k, v in gate.state_dict().items() if not k.endswith(('_scale', 'temperature'))}
    fresh = SentryGate(modalities=('camera', 'audio'), layout=layout)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.scores(('camera', 'audio'))[0][0], torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize('backbone', ['mid', 'bottleneck'])
def test_calibrated_gate_scores_skipped_blocks_zero_and_keeps_the_live_choice(backbone):
    """Issue 10: a block the live subset skips gets scale 0 from the teacher; a calibrated gate must score
    its units 0 (not raw logits), and the live blocks' masks equal a search without the skipped rows."""
    from sentryfuse_ros.core.data.preprocess import PreprocessConfig
    from sentryfuse_ros.core.model.backbone import SentryFuseModel
    from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
    from sentryfuse_ros.core.pruning.prune import select_units, unit_costs
    torch.manual_seed(0)
    model = SentryFuseModel(SentryFuseConfig(
        model=ModelConfig(backbone=backbone, dim=16, depth=3, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8,
                          mid_layers=1, num_fusion_tokens=2, image_patch=8, bev_patch=8, n_fft=128, hop=64, n_mels=8,
                          audio_patch_frames=4),
        preprocess=PreprocessConfig(image_size=16, bev_size=16, audio_samples=1024), class_names=('a', 'b')))
    layout = model.unit_layout()
    gate = SentryGate(modalities=model.modalities, layout=layout)
    teacher = SaliencyTeacher(modalities=model.modalities, layout=layout, decay=0.0)
    live = ('camera', 'audio')
    costs = unit_costs(model, live)
    skipped = [i for i, (a, f) in enumerate(costs) if float(a.sum() + f.sum()) == 0]
    assert skipped
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in gate.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 3)
    sal = [(torch.zeros(g), torch.zeros(f)) if i in skipped else (torch.rand(g, generator=gen) + 0.1,
                                                                   torch.rand(f, generator=gen) + 0.1)
           for i, (g, f) in enumerate(layout)]
    teacher.update(live, sal)
    gate.calibrate(teacher, temperature=0.5)
    scores = gate.scores(live)
    for i in skipped:
        assert torch.equal(scores[i][0], torch.zeros(layout[i][0])) and torch.equal(scores[i][1], torch.zeros(layout[i][1]))
    assert all(bool((a >= 0).all() and (f >= 0).all()) for a, f in scores)
    keep = [i for i in range(len(layout)) if i not in skipped]
    for budget in (0.7, 0.4):
        masks = select_units(scores, costs, budget)
        alone = select_units([scores[i] for i in keep], [costs[i] for i in keep], budget)
        assert all(torch.equal(masks[i][0], a) and torch.equal(masks[i][1], f) for i, (a, f) in zip(keep, alone))


def test_teacher_probe_reads_per_sample_taylor_like_the_baseline():
    """Issue 10: training's probe (per-sample gates, mean loss) gives mean_n |dL_n/dg| / B, the Taylor
    baseline's quantity up to one constant; shared gates would give |mean_n dL_n/dg| instead."""
    torch.manual_seed(2)
    model = TinyGated()
    x, y = _batch()
    b = int(y.shape[0])
    gates = ones_gates(model.unit_layout(), device=torch.device('cpu'), batch_size=b)
    nn.functional.cross_entropy(model(x, gates), y).backward()
    sal = read_saliency(gates, kind='taylor')
    per_sample = []
    for n in range(b):
        g = ones_gates(model.unit_layout(), device=torch.device('cpu'))
        nn.functional.cross_entropy(model({k: v[n:n + 1] for k, v in x.items()} if isinstance(x, dict) else x[n:n + 1], g),
                                    y[n:n + 1]).backward()
        per_sample.append([(a.grad.clone(), f.grad.clone()) for a, f in g])
    for i, (a, f) in enumerate(sal):
        want_a = torch.stack([p[i][0] for p in per_sample]).abs().mean(0) / b
        want_f = torch.stack([p[i][1] for p in per_sample]).abs().mean(0) / b
        assert torch.allclose(a, want_a, rtol=1e-4, atol=1e-9) and torch.allclose(f, want_f, rtol=1e-4, atol=1e-9)
    shared = ones_gates(model.unit_layout(), device=torch.device('cpu'))
    nn.functional.cross_entropy(model(x, shared), y).backward()
    assert not torch.allclose(read_saliency(shared)[0][0], sal[0][0] * b)  # a different quantity
