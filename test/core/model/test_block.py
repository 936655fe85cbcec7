import pytest
import torch

from sentryfuse_ros.core.model.attend import Segments
from sentryfuse_ros.core.model.block import FeedForward, FusionBlock, UnitGates
from sentryfuse_ros.core.errors import ModelError, PruningError

torch.set_num_threads(1)
SEG = Segments(10, (0, 1), ((1, 5), (5, 10)))


def test_ffn_gates_zero_whole_channel_blocks():
    torch.manual_seed(0)
    ffn = FeedForward(dim=8, hidden=16, block=4)
    x = torch.randn(2, 5, 8)
    gate = torch.tensor([1.0, 0.0, 1.0, 0.0])
    h = ffn.act(ffn.fc1(x)) * gate.repeat_interleave(4)
    assert torch.allclose(ffn(x, gate), ffn.fc2(h), atol=1e-6)
    with pytest.raises(ModelError, match=r'ffn gate shape \(3,\): expected \(4,\) or \(2, 4\)'):
        ffn(x, torch.ones(3))


@pytest.mark.parametrize('attention', ['dense', 'sentry'])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_sliced_block_equals_gated_block(attention, seed):
    torch.manual_seed(seed)
    blk = FusionBlock(dim=16, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8, attention=attention).eval()
    g, nf = blk.unit_layout()
    assert (g, nf) == ((4 if attention == 'dense' else 2), 4)
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(g, generator=gen) < 0.5
    f = torch.rand(nf, generator=gen) < 0.5
    a[0] = f[-1] = True
    x = torch.randn(3, 10, 16)
    gated = blk(x, SEG, UnitGates(a.float(), f.float()))
    import copy
    sliced = copy.deepcopy(blk).slice_(a, f)
    assert sliced.unit_layout() == (int(a.sum()), int(f.sum()))
    assert torch.allclose(sliced(x, SEG), gated, atol=1e-5)


def test_per_sample_gates_match_shared_gates():
    torch.manual_seed(0)
    blk = FusionBlock(dim=16, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8).eval()
    x = torch.randn(2, 10, 16)
    ga, gf = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 0.5])
    shared = blk(x, SEG, UnitGates(ga, gf))
    per = blk(x, SEG, UnitGates(torch.stack([ga, torch.ones(2)]), torch.stack([gf, torch.ones(4)])))
    assert torch.allclose(per[0], shared[0], atol=1e-6)
    assert torch.allclose(per[1], blk(x, SEG)[1], atol=1e-6)


def test_gates_receive_gradients():
    torch.manual_seed(0)
    blk = FusionBlock(dim=16, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8)
    gates = UnitGates(torch.ones(2, requires_grad=True), torch.ones(4, requires_grad=True))
    blk(torch.randn(2, 10, 16), SEG, gates).square().sum().backward()
    assert gates.attn.grad.shape == (2,) and gates.ffn.grad.shape == (4,)
    assert bool((gates.attn.grad.abs() > 0).all()) and bool((gates.ffn.grad.abs() > 0).all())


def test_errors():
    with pytest.raises(ModelError, match=r"attention='flash': expected dense or sentry"):
        FusionBlock(dim=16, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8, attention='flash')
    with pytest.raises(ModelError, match=r'ffn_dim=30, ffn_block=8'):
        FeedForward(dim=8, hidden=30, block=8)
    blk = FusionBlock(dim=16, num_heads=4, num_kv_heads=2, ffn_dim=32, ffn_block=8)
    with pytest.raises(PruningError, match=r'ffn blocks mask has 3 entries: expected 4'):
        blk.slice_(torch.tensor([True, True]), torch.tensor([True, False, True]))
