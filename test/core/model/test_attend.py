import math

import pytest
import torch

from sentryfuse_ros.core.model.attend import DenseAttention, Segments, SentryAttend, attended_pairs, check_keep
from sentryfuse_ros.core.errors import ModelError, PruningError
from sentryfuse_ros.core.model.flops import count_flops

torch.set_num_threads(1)
# [2 global tokens | 5 camera | 4 lidar | 3 audio]
SEG = Segments(14, (0, 2), ((2, 7), (7, 11), (11, 14)))


def reference(attn, x, seg, sparse):
    """Masked dense computation: K/V heads repeated per query head, an explicit boolean mask."""
    b, t, _ = x.shape
    h, g, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = attn.q(x).view(b, t, h, d).transpose(1, 2)
    k = attn.k(x).view(b, t, g, d).transpose(1, 2).repeat_interleave(h // g, dim=1)
    v = attn.v(x).view(b, t, g, d).transpose(1, 2).repeat_interleave(h // g, dim=1)
    allowed = torch.ones(t, t, dtype=torch.bool)
    if sparse and len(seg.parts) > 1:
        allowed[:] = False
        gs, ge = seg.global_range
        allowed[gs:ge, :] = True
        for s, e in seg.parts:
            allowed[s:e, gs:ge] = True
            allowed[s:e, s:e] = True
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(~allowed, float('-inf'))
    out = scores.softmax(-1) @ v  # (B, H, T, D)
    return attn.o(out.transpose(1, 2).reshape(b, t, h * d)), allowed


@pytest.mark.parametrize('kind', ['dense', 'sentry'])
@pytest.mark.parametrize('seg', [SEG, Segments(6, (0, 1), ((1, 6),)), Segments(9, (0, 0), ((0, 4), (4, 9)))])
def test_matches_masked_reference(kind, seg):
    torch.manual_seed(0)
    attn = DenseAttention(dim=16, num_heads=4) if kind == 'dense' else SentryAttend(dim=16, num_heads=4, num_kv_heads=2)
    x = torch.randn(3, seg.num_tokens, 16)
    ref, allowed = reference(attn, x, seg, kind == 'sentry')
    assert torch.allclose(attn(x, seg), ref, atol=1e-5)
    assert int(allowed.sum()) == attended_pairs(seg, sparse=kind == 'sentry')


def test_sparsity_blocks_cross_modality_paths():
    torch.manual_seed(0)
    attn = SentryAttend(dim=16, num_heads=4, num_kv_heads=2)
    x = torch.randn(1, 14, 16)
    y = x.clone()
    y[:, 11:14] += 1.0  # perturb audio tokens only
    diff = (attn(x, SEG) - attn(y, SEG)).abs().sum(-1)[0]
    assert torch.all(diff[2:11] == 0)          # camera and lidar queries never see audio keys
    assert torch.all(diff[:2] > 0) and torch.all(diff[11:] > 0)


def test_sentry_has_fewer_flops_than_dense():
    torch.manual_seed(0)
    dense, sentry = DenseAttention(dim=32, num_heads=4), SentryAttend(dim=32, num_heads=4, num_kv_heads=2)
    seg = Segments(50, (0, 2), ((2, 18), (18, 34), (34, 50)))
    x = torch.randn(1, 50, 32)
    fd = count_flops(lambda inp: dense(inp, seg), x)
    fs = count_flops(lambda inp: sentry(inp, seg), x)
    assert fs < 0.75 * fd
    assert fd == 2 * int(dense.unit_macs(seg).sum()) and fs == 2 * int(sentry.unit_macs(seg).sum())


@pytest.mark.parametrize('per_sample', [False, True])
def test_gates_scale_whole_groups_and_slicing_matches(per_sample):
    torch.manual_seed(1)
    attn = SentryAttend(dim=24, num_heads=6, num_kv_heads=3)
    x = torch.randn(2, 14, 24)
    mask = torch.tensor([True, False, True])
    gate = mask.float().expand(2, 3) if per_sample else mask.float()
    gated = attn(x, SEG, gate)
    assert not torch.allclose(gated, attn(x, SEG), atol=1e-4)
    sliced = SentryAttend(dim=24, num_heads=6, num_kv_heads=3)
    sliced.load_state_dict(attn.state_dict())
    sliced.slice_(mask)
    assert (sliced.num_kv_heads, sliced.num_heads, sliced.head_dim, sliced.kept_groups) == (2, 4, 4, [0, 2])
    assert sliced.q.out_features == 16 and sliced.k.out_features == 8 and sliced.o.in_features == 16
    assert torch.allclose(sliced(x, SEG), gated, atol=1e-5)
    sliced.slice_(torch.tensor([1]))  # slicing again keeps original indices
    assert sliced.kept_groups == [2]


def test_gate_shape_and_token_count_checked():
    attn = SentryAttend(dim=16, num_heads=4, num_kv_heads=2)
    with pytest.raises(ModelError, match=r'attention gate shape \(4,\): expected \(2,\) or \(1, 2\)'):
        attn(torch.randn(1, 14, 16), SEG, torch.ones(4))
    with pytest.raises(ModelError, match=r'attention got 10 tokens but segments describe 14'):
        attn(torch.randn(1, 10, 16), SEG)


def test_invalid_grouping_and_keep():
    with pytest.raises(ModelError, match=r'num_heads=4, num_kv_heads=3'):
        SentryAttend(dim=16, num_heads=4, num_kv_heads=3)
    with pytest.raises(PruningError, match=r'at least one of 2 units must be kept'):
        check_keep(torch.tensor([False, False]), 2, 'attention groups')
    with pytest.raises(PruningError, match=r'indices \[0, 5\]: expected distinct indices in \[0, 2\)'):
        check_keep(torch.tensor([0, 5]), 2, 'attention groups')
