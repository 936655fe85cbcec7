"""Shared helpers of the train-on-bags tests: a tiny training config and small synthetic bag datasets."""
import dataclasses
import pathlib

import numpy as np
import yaml

from sentryfuse_ros.core.config import to_dict
from sentryfuse_ros.core.data.bagdataset import ShardWriter, preprocess_dict, preprocess_hash, sample_shapes
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig
from sentryfuse_ros.core.training.train import load_train_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(**train):
    """config/train_sim.yaml's preprocessing with a small model and a short run (seconds on one core)."""
    cfg = load_train_config(ROOT / 'config' / 'train_sim.yaml')
    model = dataclasses.replace(cfg.model, dim=32, depth=2, num_heads=4, num_kv_heads=2, ffn_dim=64)
    settings = dict(steps=6, batch_size=8, warmup_steps=1, checkpoint_every=1000, eval_batch=64)
    settings.update(train)
    return dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, **settings))


def write_config(path, cfg) -> pathlib.Path:
    path = pathlib.Path(path)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def write_dataset(path, bags, *, pre: PreprocessConfig = PreprocessConfig(), classes=('a', 'b', 'c'),
                  seed: int = 0) -> pathlib.Path:
    """A dataset folder in the `sentryfuse dataset` format without bags.

    Args:
        bags: per bag a list of modality tuples, one per sample (e.g. [('camera', 'lidar', 'audio')] * 10).
    Samples carry class-dependent means so a model can learn them; sample j of bag b is labelled
    classes[(b + j) % len(classes)].
    """
    import json
    path = pathlib.Path(path)
    rng = np.random.default_rng(seed)
    shapes = sample_shapes(pre)
    entries = []
    for b, samples in enumerate(bags):
        shard = f'shard-{b:04d}'
        writer = ShardWriter(path / shard, MODALITIES, shapes)
        for j, mods in enumerate(samples):
            k = (b + j) % len(classes)
            arrays = {m: (rng.normal(0.5 * k, 1.0, shapes[m])).astype(np.float32) for m in mods}
            writer.append(arrays, 0.1 * j, classes[k])
        writer.close()
        entries.append({'name': f'bag{b}', 'shard': shard, 'samples': len(samples)})
    manifest = {'format': 'sentryfuse-bag-dataset', 'version': 1, 'class_names': list(classes),
                'modalities': list(MODALITIES), 'preprocess': preprocess_dict(pre),
                'preprocess_hash': preprocess_hash(pre), 'shapes': {m: list(s) for m, s in shapes.items()},
                'dtype': 'float16', 'samples': sum(len(s) for s in bags), 'bags': entries, 'skipped': []}
    (path / 'manifest.json').write_text(json.dumps(manifest))
    return path


def ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    """One rank of a gloo run of `train` on ``data``: saves its weights, teacher, gate and the sample
    indices it took at every step to ``out``/rank{rank}.pt (torch.multiprocessing.spawn target)."""
    import os

    import torch

    from sentryfuse_ros.core.data.bagdataset import BagDataset
    from sentryfuse_ros.core.training import distributed
    from sentryfuse_ros.core.training.bagsource import BagBatches
    from sentryfuse_ros.core.training.train import train

    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = tiny_config(steps=8, batch_size=8)
    ctx = distributed.init_distributed(rank, world, rank, 'cpu') if world > 1 else None
    seen = []

    class Recording(BagBatches):
        def batch(self, step, draw, device):
            seen.append(self.indices(step)[1].tolist())
            return super().batch(step, draw, device)

    try:
        source = Recording(BagDataset(data), cfg.model.modalities, ['bag2'], batch_size=8, seed=0,
                           rank=rank, world_size=world)
        result = train(cfg, pathlib.Path(out) / f'model{world}.pt', progress=False, log=lambda s: None,
                       data=source, dist=ctx)
    finally:
        distributed.shutdown()
    torch.save({'model': result.model.state_dict(), 'teacher': result.teacher.state_dict(),
                'gate': result.gate.state_dict(), 'seen': seen, 'steps_per_epoch': source.steps_per_epoch,
                'train_index': source.train_index.tolist()},
               pathlib.Path(out) / f'world{world}_rank{rank}.pt')
