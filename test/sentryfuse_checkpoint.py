"""The checkpoint the perception tests run: the shipped model, or a tiny one trained once per session.

Test modules define a session fixture that calls :func:`checkpoint_path`; the tiny model is
cached in the session's base temp folder, so two modules (and their fixtures) train it once.
"""
import dataclasses
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHIPPED = ROOT / 'models' / 'sentryfuse_sim.pt'
TRAIN_CONFIG = ROOT / 'config' / 'train_sim.yaml'


def checkpoint_path(tmp_path_factory) -> pathlib.Path:
    """models/sentryfuse_sim.pt when present; else a tiny model trained from config/train_sim.yaml
    (same architecture and preprocessing, 96 scenes, 8 steps: a few seconds on one core)."""
    if SHIPPED.is_file():
        return SHIPPED
    out = tmp_path_factory.getbasetemp() / 'sentryfuse_checkpoint' / 'tiny.pt'
    if out.is_file():
        return out
    import torch

    from sentryfuse_ros.core.training.train import load_train_config, train

    cfg = load_train_config(TRAIN_CONFIG)
    cfg = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, train_size=96, val_size=32, cache_dir=''),
        train=dataclasses.replace(cfg.train, steps=8, batch_size=16, warmup_steps=2,
                                  checkpoint_every=1000, eval_batch=32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        train(cfg, out, progress=False, log=lambda s: None, command='test fixture')
    finally:
        torch.set_num_threads(threads)
    return out


def nan_checkpoint(src: pathlib.Path, dst: pathlib.Path, part: str) -> pathlib.Path:
    """A copy of the checkpoint ``src`` whose ``part`` ('weights' or 'gate') is all NaN, at ``dst``."""
    import torch

    data = torch.load(src, map_location='cpu', weights_only=True)
    key = {'weights': 'state_dict', 'gate': 'gate'}[part]
    data[key] = {k: torch.full_like(v, float('nan')) if v.is_floating_point() else v
                 for k, v in data[key].items()}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, dst)
    return dst
