"""Trained on bags vs trained on the same scenes in memory: does the bag pipeline cost accuracy?

Given a bag dataset built by `sentryfuse dataset` from simulated bags (`sentryfuse simulate-bag --seed S`,
bag folder names ending in ``_s<S>``), this renders the *same* scenes at the *same* instants straight
from the simulator (all three modalities, no messages, no health monitor, no staleness, no dropout)
and trains the same recipe on both. Both models are then scored the way they are deployed: offline
replay of held-out bags (health, freshness, dropouts, the node's converters), plus on the held-out
scenes rendered in memory.

    python scripts/bench_train_on_bags.py --data DS --heldout BAG... --config config/train_sim.yaml \
        --seeds 0 1 --out runs/bags_vs_memory.json

Training runs at 1 thread; the table goes to stdout, everything to --out (JSON).
"""
import argparse
import dataclasses
import json
import pathlib
import re
import sys
import time

import numpy as np
import torch

from sentryfuse_ros.core.replay.replay import OfflineReplay, load_replay_config
from sentryfuse_ros.core.sim.simulate import SimBagConfig
from sentryfuse_ros.core.data import preprocess as pp
from sentryfuse_ros.core.data.bagdataset import BagDataset
from sentryfuse_ros.core.data.datasets import MultimodalTensors
from sentryfuse_ros.core.data.scenes import SCENE_PRESETS, SceneStream
from sentryfuse_ros.core.runtime.engine import PerceptionEngine
from sentryfuse_ros.core.training.bagsource import BagBatches
from sentryfuse_ros.core.training.train import accuracy, load_train_config, train
from sentryfuse_ros.msg_arrays.modality_inputs import engine_converters

ROOT = pathlib.Path(__file__).resolve().parents[1]


def bag_seed(name: str) -> int:
    match = re.search(r'_s(\d+)$', name)
    if not match:
        raise SystemExit(f'bag {name!r}: expected a folder name ending in _s<seed> (simulate-bag --seed)')
    return int(match.group(1))


def render(seed: int, times, pre: pp.PreprocessConfig, sim: SimBagConfig = SimBagConfig()):
    """Preprocessed (camera, lidar, audio) and labels of the simulator's scenes at ``times`` (s)."""
    scene_cfg = dataclasses.replace(SCENE_PRESETS[sim.preset], image_size=sim.image_size,
                                    lidar_points=sim.lidar_points)
    stream = SceneStream(scene_cfg, seed=seed, scene_duration_s=sim.scene_duration_s)
    out = {'camera': [], 'lidar': [], 'audio': []}
    labels = []
    a = pre.audio_samples
    for t in times:
        out['camera'].append(pp.preprocess_camera(stream.camera(t), pre))
        out['lidar'].append(pp.preprocess_lidar(stream.lidar(t), pre))
        start = max(0.0, t - a / scene_cfg.audio_rate)
        pcm = stream.audio_chunk(start, int(round((t - start) * scene_cfg.audio_rate)))  # (L,)
        out['audio'].append(pp.preprocess_audio(pcm, scene_cfg.audio_rate, pre))
        labels.append(stream.scene_at(t).label)
    return {m: np.stack(x) for m, x in out.items()}, labels


def in_memory(ds: BagDataset, names, pre) -> MultimodalTensors:
    """The dataset's samples of bags ``names`` re-rendered in memory (same seeds, same instants)."""
    ids = {c: i for i, c in enumerate(ds.class_names)}
    parts, labels = {'camera': [], 'lidar': [], 'audio': []}, []
    for entry in ds.manifest['bags']:
        if entry['name'] not in names:
            continue
        t = np.fromfile(ds.path / entry['shard'] / 't.f64')
        arrays, lab = render(bag_seed(entry['name']), t, pre)
        for m in parts:
            parts[m].append(arrays[m])
        labels += [ids[x] for x in lab]
    return MultimodalTensors({m: torch.from_numpy(np.concatenate(x)) for m, x in parts.items()},
                             torch.tensor(labels), ds.class_names)


def heldout_memory(bags, class_names, pre, rate: float = 10.0) -> MultimodalTensors:
    ids = {c: i for i, c in enumerate(class_names)}
    parts, labels = {'camera': [], 'lidar': [], 'audio': []}, []
    for bag in bags:
        sim = SimBagConfig()
        times = np.arange(1, int(60 * rate)) / rate
        # the same transition rule as the replay: 1 s after a scene change is not scored
        keep = np.array([t % sim.scene_duration_s >= 1.0 or t < sim.scene_duration_s for t in times])
        arrays, lab = render(bag_seed(pathlib.Path(bag).name), times[keep], pre)
        for m in parts:
            parts[m].append(arrays[m])
        labels += [ids[x] for x in lab]
    return MultimodalTensors({m: torch.from_numpy(np.concatenate(x)) for m, x in parts.items()},
                             torch.tensor(labels), class_names)


def replay_accuracy(result, bags) -> float:
    model, gate = result.model, result.gate
    config = load_replay_config(ROOT / 'config' / 'replay.yaml')
    correct = total = 0
    for bag in bags:
        engine = PerceptionEngine(model, gate.scores, config.engine)
        with torch.inference_mode():
            records = OfflineReplay(engine, config, engine_converters).run(bag).records
        scored = [r for r in records if r['truth'] is not None]
        correct += sum(r['label'] == r['truth'] for r in scored)
        total += len(scored)
    return correct / total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', required=True)
    parser.add_argument('--heldout', nargs='+', required=True)
    parser.add_argument('--config', default=str(ROOT / 'config' / 'train_sim.yaml'))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--steps', type=int, default=None)
    parser.add_argument('--out', required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = load_train_config(args.config)
    if args.steps:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=args.steps))
    ds = BagDataset(args.data)
    ds.check_preprocess(cfg.preprocess)
    t0 = time.perf_counter()
    memory_train = in_memory(ds, set(ds.bag_names), cfg.preprocess)
    memory_test = heldout_memory(args.heldout, ds.class_names, cfg.preprocess)
    print(f'rendered {len(memory_train)} training scenes-instants and {len(memory_test)} held-out ones in memory '
          f'in {time.perf_counter() - t0:.0f} s', file=sys.stderr)
    rows = []
    for seed in args.seeds:
        run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
        for kind in ('bags', 'memory'):
            t1 = time.perf_counter()
            out = pathlib.Path(args.out).with_suffix('') / f'{kind}_seed{seed}.pt'
            if kind == 'bags':
                source = BagBatches(ds, cfg.model.modalities, [], batch_size=cfg.train.batch_size, seed=seed)
                result = train(run_cfg, out, progress=False, data=source, log=lambda s: None)
            else:
                result = train(run_cfg, out, progress=False, data=(memory_train, memory_test),
                               log=lambda s: None)
            row = {'trained_on': kind, 'seed': seed, 'train_s': round(time.perf_counter() - t1, 1),
                   'replay_heldout': round(replay_accuracy(result, args.heldout), 4),
                   'memory_heldout_all': round(accuracy(result.model, memory_test, cfg.model.modalities), 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for kind in ('bags', 'memory'):
        for key in ('replay_heldout', 'memory_heldout_all'):
            vals = [r[key] for r in rows if r['trained_on'] == kind]
            summary[f'{kind}.{key}'] = {'mean': round(float(np.mean(vals)), 4),
                                        'min': min(vals), 'max': max(vals)}
    pathlib.Path(args.out).write_text(json.dumps({'rows': rows, 'summary': summary,
                                                  'train_samples': len(memory_train),
                                                  'heldout': [str(b) for b in args.heldout],
                                                  'steps': cfg.train.steps}, indent=1))
    print(f"{'trained on':<12} {'replay of held-out bags':>24} {'held-out scenes in memory':>26}")
    for kind in ('bags', 'memory'):
        a, b = summary[f'{kind}.replay_heldout'], summary[f'{kind}.memory_heldout_all']
        print(f"{kind:<12} {a['mean']:>10.4f} [{a['min']:.4f}, {a['max']:.4f}] "
              f"{b['mean']:>12.4f} [{b['min']:.4f}, {b['max']:.4f}]")
    return 0


if __name__ == '__main__':
    sys.exit(main())
