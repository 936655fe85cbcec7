import torch
import torch.nn.functional as F
from torch import nn

from sentryfuse_ros.core.model.flops import count_flops, count_params, measure_latency_ms, peak_memory_mb

torch.set_num_threads(1)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 6)

    def forward(self, inputs):
        q = self.lin(inputs['x'])                             # (2, 5, 6)
        q = q.view(2, 5, 2, 3).transpose(1, 2)                # (2, 2, 5, 3)
        return F.scaled_dot_product_attention(q, q, q)


def test_counts_linear_and_cpu_attention():
    flops = count_flops(Toy(), {'x': torch.randn(2, 5, 8)})
    linear = 2 * 2 * 5 * 8 * 6
    attention = 2 * (2 * 2 * 2 * 5 * 5 * 3)  # 2 flops per MAC; MACs: QK^T and AV over (B=2, H=2, 5x5, D=3)
    assert flops == linear + attention


def test_params_latency_memory():
    model = Toy()
    assert count_params(model) == 8 * 6 + 6
    x = {'x': torch.randn(2, 5, 8)}
    assert measure_latency_ms(model, x, repeats=3, warmup=1) > 0
    big = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 256))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = big

        def forward(self, inputs):
            return self.net(inputs['x'])

    w = Wrap()
    weights_mb = count_params(w) * 4 / 2 ** 20
    small = peak_memory_mb(w, {'x': torch.randn(1, 256)})
    large = peak_memory_mb(w, {'x': torch.randn(512, 256)})
    assert weights_mb <= small < weights_mb + 0.5
    assert large - small > 512 * 2048 * 4 / 2 ** 20 * 0.9  # the (512, 2048) hidden activation is seen
