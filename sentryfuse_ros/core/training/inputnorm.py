"""Per-channel input statistics for the tokenizers built with ``input_norm`` (measured once, before step 0).

Shapes: B batch, C input channels, H x W the camera image or lidar BEV grid.
"""
from typing import Dict, Iterable

import torch

from sentryfuse_ros.core.errors import DataError


def fit_input_norm(model, batches: Iterable[Dict[str, torch.Tensor]]) -> Dict[str, Dict[str, list]]:
    """Set every ``input_norm`` tokenizer's mean/std from ``batches`` ({modality: (B, C, H, W)}); returns them.

    Statistics are accumulated in float64 over every sample and cell of the batches (a modality absent from
    a batch is skipped). A modality with a normalising tokenizer that no batch holds raises DataError.
    """
    targets = {m: tok for m, tok in model.tokenizers.items() if getattr(tok, 'input_norm', False)}
    if not targets:
        return {}
    acc = {m: [0.0, None, None] for m in targets}  # count, sum (C,), sum of squares (C,)
    for inputs in batches:
        for m in targets:
            if m not in inputs:
                continue
            x = inputs[m].detach().to('cpu', torch.float64)  # (B, C, H, W)
            x = x.transpose(0, 1).reshape(x.shape[1], -1)   # (C, B*H*W)
            a = acc[m]
            a[0] += x.shape[1]
            a[1] = x.sum(1) if a[1] is None else a[1] + x.sum(1)
            a[2] = (x * x).sum(1) if a[2] is None else a[2] + (x * x).sum(1)
    out = {}
    for m, (n, s, ss) in acc.items():
        if not n:
            raise DataError(f'input_norm: no {m} samples to measure its statistics on')
        mean = s / n
        std = (ss / n - mean * mean).clamp_min(0.0).sqrt()
        targets[m].set_input_norm(mean.float(), std.float())
        out[m] = {'mean': [round(float(v), 6) for v in mean], 'std': [round(float(v), 6) for v in std]}
    return out
