"""Benchmark grid: config, conditions, the quick grid end to end (sanity, resume), report generation."""
import json
import math
import pathlib

import pytest
import torch

from bench_fixtures import tiny_model_and_gate
from sentryfuse_ros.cli import main as cli_main
from sentryfuse_ros.core.bench import grid as bench
from sentryfuse_ros.core.bench.plots import compare, headline, render_markdown, write_report
from sentryfuse_ros.core.errors import ConfigError, DataError
from sentryfuse_ros.core.pruning.prune import slice_model

ROOT = pathlib.Path(__file__).resolve().parents[3]


@pytest.mark.parametrize('mods, which, expected', [
    (('camera', 'lidar', 'audio'), 'main',
     [('camera', 'lidar', 'audio'), ('lidar', 'audio'), ('camera', 'audio'), ('camera', 'lidar')]),
    (('camera', 'audio'), 'main', [('camera', 'audio'), ('audio',), ('camera',)]),
    (('camera', 'audio'), 'all_subsets', [('camera', 'audio'), ('audio',), ('camera',)]),
])
def test_conditions(mods, which, expected):
    assert bench.conditions_for(mods, which) == expected


def test_all_subsets_appends_the_rest():
    conds = bench.conditions_for(('camera', 'lidar', 'audio'), 'all_subsets')
    assert len(conds) == 7 == len(set(conds)) and conds[:4] == bench.conditions_for(('camera', 'lidar', 'audio'), 'main')


@pytest.mark.parametrize('key, value, match', [
    ('methods', ['sentrygate', 'magic'], 'methods='),
    ('ratios', [0.0, 0.5], 'ratios='),
    ('datasets', ['imagenet'], 'datasets='),
    ('conditions', 'some', 'conditions='),
    ('test_size', 0, 'test_size='),
])
def test_config_errors(key, value, match):
    with pytest.raises(ConfigError, match=match):
        bench.BenchConfig(**{key: value})


@pytest.mark.parametrize('name', ['bench_issue10.yaml', 'bench_issue10_sandwich.yaml'])
def test_issue10_grid_configs_load(name):
    cfg = bench.load_bench_config(ROOT / 'config' / name, 'full')
    assert 'kwon_tuned' in cfg.methods and {'sentryfuse', 'conventional'} <= set(cfg.models)


def test_config_file_sections_load():
    for section in ('quick', 'full'):
        cfg = bench.load_bench_config(ROOT / 'config' / 'bench.yaml', section)
        assert cfg.train.steps >= 1 and set(cfg.methods) <= set(bench.METHODS)
    with pytest.raises(ConfigError, match="no top-level key 'medium'"):
        bench.load_bench_config(ROOT / 'config' / 'bench.yaml', 'medium')


def _tiny():
    return tiny_model_and_gate()


@pytest.mark.parametrize('method', [m for m in bench.METHODS if m not in bench.DENSE_METHODS])
def test_every_method_gives_sliceable_masks_within_budget(method):
    model, gate = _tiny()
    calib = [(model.example_inputs(('camera', 'audio'), batch=4), torch.tensor([0, 1, 0, 1]))]
    scorer = bench.MethodScorer(model, gate, {'calib': calib}, seed=0, variants={'noalign': (model, gate)})
    full = bench.evaluate_cell(model, None, _test_set(model), ('camera',), batch=8, latency_repeats=None)
    for budget in (0.7, 0.4):
        masks, score_ms = scorer.masks(method, ('camera',), budget)
        slice_model(model, masks)
        timed = budget == 0.4 and method == 'sentrygate'  # the profiler-based memory probe is slow-ish
        cell = bench.evaluate_cell(scorer.model_for(method, ('camera',), budget), masks, _test_set(model), ('camera',), batch=8,
                                   latency_repeats=1 if timed else None)
        assert 0.0 <= cell['accuracy'] <= 1.0 and cell['gflops'] < full['gflops'] and score_ms >= 0
        assert (cell['latency_ms'] is not None and cell['latency_ms'] > 0 and cell['peak_mem_mb'] > 0) == timed


def _test_set(model):
    from sentryfuse_ros.core.data.datasets import MultimodalTensors
    x = model.example_inputs(model.modalities, batch=10, generator=torch.Generator().manual_seed(1))
    return MultimodalTensors(x, torch.arange(10) % 2, ('a', 'b'))


@pytest.mark.slow
def test_quick_grid_end_to_end_and_resume(tmp_path, capsys):
    out, cache = tmp_path / 'q.json', tmp_path / 'cache'
    args = ['bench', '--quick', '--config', str(ROOT / 'config' / 'bench.yaml'), '--out', str(out),
            '--cache-dir', str(cache)]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(' ')[0] for line in printed[-3:]] == ['P0', 'P1', 'P2']
    assert all('SMOKE RUN' in x and 'SentryGate vs' in x and '(fixed in advance)' in x for x in printed[-3:])
    data = json.loads(out.read_text())
    recs = data['records']
    cfg = bench.load_bench_config(ROOT / 'config' / 'bench.yaml', 'quick')
    assert cfg.models == ('sentryfuse', 'conventional', 'conventional_nocurr')
    pruned = [m for m in cfg.methods if m not in bench.DENSE_METHODS]
    conv = [m for m in pruned if m in bench.CONVENTIONAL_METHODS]
    p0 = [m for m in pruned if m in bench.P0_METHODS]
    live = [r for r in recs if r['protocol'] == 'P1P2']
    assert len(live) == 4 * (len(cfg.ratios) * len(pruned) + 1) + 2 * 4 * (len(cfg.ratios) * len(conv) + 1)
    assert len(recs) - len(live) == 2 * len(p0) * len(cfg.ratios) * 4 * 2  # P0: static + matched, 4 live sets
    assert {r['method'] for r in live if r['model'] == 'conventional'} == set(conv) | {'dense'}
    for r in recs:
        assert set(bench.RECORD_KEYS) <= set(r) and r['model'] in bench.MODELS and r['n_classes'] == 6
        assert 0.0 <= r['accuracy'] <= 1.0 and r['gflops'] > 0 and r['params'] > 0
        assert r['calibration'] in ('static', 'per_live_set') and r['tuning_data'] in (
            'none', 'all_sensors', 'live_sensors')
        if r['protocol'] == 'P1P2':
            assert all(math.isfinite(r[k]) for k in ('accuracy', 'gflops', 'latency_ms', 'peak_mem_mb'))
        elif r['method'] == 'sentrygate':
            assert r['flops_matched'] and abs(r['flops_gap']) <= 0.03
    for which in cfg.models:
        for cond in {r['condition'] for r in live}:
            for m in {r['method'] for r in live if r['model'] == which} - set(bench.DENSE_METHODS):
                g = {r['ratio']: r['gflops'] for r in live
                     if r['model'] == which and r['condition'] == cond and r['method'] == m}
                dense = [r['gflops'] for r in live if r['model'] == which and r['condition'] == cond
                         and r['method'] == 'dense'][0]
                ratios = sorted(g)
                assert all(g[a] > g[b] for a, b in zip(ratios, ratios[1:])) and g[ratios[0]] < dense
    # resume: drop two cells, they come back identical; nothing is retrained
    kept = recs[2:]
    bench.write_results(out, data['meta'], kept)
    assert cli_main(args + ['--resume']) == 0
    again = json.loads(out.read_text())['records']
    assert len(again) == len(recs)
    by_key = {bench.cell_key(r): r['accuracy'] for r in again}
    assert all(by_key[bench.cell_key(r)] == r['accuracy'] for r in recs)
    report = tmp_path / 'report'
    assert cli_main(['bench-report', '--in', str(out), '--out-dir', str(report)]) == 0
    assert (report / 'bench_report.md').is_file() and list(report.glob('*.png'))
    text = (report / 'bench_report.md').read_text()
    assert '**SMOKE RUN' in text and '#### P0 (deployed static' in text and '### Decomposition' in text


def _synthetic_records():
    recs = []
    for seed in (0, 1):
        for cond in ('camera+audio', 'camera'):
            for ratio in (0.3, 0.5):
                accs = {'random': 0.4, 'magnitude_l1': 0.5, 'taylor': 0.45 + 0.01 * seed, 'sentrygate': 0.6,
                        'taylor_recal': 0.55}
                if cond == 'camera':
                    accs['sentrygate'] = 0.4  # loses to magnitude_l1 under dropout
                for m, a in accs.items():
                    recs.append({'backbone': 'early', 'dataset': 'avmnist', 'condition': cond, 'ratio': ratio,
                                 'method': m, 'seed': seed, 'accuracy': a, 'gflops': 0.01 * (1 - ratio),
                                 'params': 1000, 'latency_ms': 1.0, 'peak_mem_mb': 0.5, 'score_ms': 0.0})
            recs.append({'backbone': 'early', 'dataset': 'avmnist', 'condition': cond, 'ratio': 0.0,
                         'method': 'dense', 'seed': seed, 'accuracy': 0.7, 'gflops': 0.01, 'params': 2000,
                         'latency_ms': None, 'peak_mem_mb': None, 'score_ms': 0.0})
    return recs


def test_compare_and_headline_on_known_numbers():
    rows = compare(_synthetic_records())
    assert len(rows) == 4 and all(r['best_baseline'] == 'magnitude_l1' for r in rows)
    h = headline(rows)
    assert h['all_present']['mean_gain'] == pytest.approx(0.2)   # 0.6 vs 0.5
    assert h['dropout']['mean_gain'] == pytest.approx(-0.2)      # 0.4 vs 0.5
    assert h['overall']['mean_gain'] == pytest.approx(0.0)
    assert (h['overall']['wins'], h['dropout']['wins']) == (2, 0)


def test_report_markdown_and_plots(tmp_path):
    data = {'meta': {'command': 'sentryfuse bench', 'date': 'today'}, 'records': _synthetic_records()}
    path = write_report(data, tmp_path, title='T', source='x.json')
    text = path.read_text()
    assert '+20.0%' in text and '-20.0%' in text and '| under modality dropout | 2 |' in text
    assert (tmp_path / 'acc_vs_ratio_avmnist_early.png').stat().st_size > 1000
    assert '![acc_vs_ratio_avmnist_early](acc_vs_ratio_avmnist_early.png)' in text
    with pytest.raises(DataError, match='no records'):
        render_markdown({'meta': {}, 'records': []}, [], 'T')


def test_read_results_errors(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text('{"records": 3}')
    with pytest.raises(DataError, match='expected'):
        bench.read_results(bad)
    with pytest.raises(DataError, match='unreadable'):
        bench.read_results(tmp_path / 'missing.json')


@pytest.mark.parametrize('text, expected', [('0/1', (0, 1)), ('14/15', (14, 15))])
def test_parse_shard(text, expected):
    assert bench.parse_shard(text) == expected


@pytest.mark.parametrize('text', ['15/15', '1', 'a/b', '-1/3', '2/0'])
def test_parse_shard_errors(text):
    with pytest.raises(ConfigError, match='shard='):
        bench.parse_shard(text)


@pytest.mark.parametrize('n', [1, 2, 7, 15])
def test_shards_are_disjoint_cover_the_grid_and_balance_trainings(n):
    cfg = bench.load_bench_config(ROOT / 'config' / 'bench.yaml', 'full')
    parts = [bench.select_jobs(cfg, shard=(i, n)) for i in range(n)]
    flat = [j for p in parts for j in p]
    assert sorted(flat) == sorted(bench.model_jobs(cfg)) and len(flat) == len(set(flat))
    # per job: sentryfuse + conventional + conventional_nocurr, + noalign and nocurr on the ablation seed
    trainings = [sum(len(cfg.models) + 2 * (j[2] in cfg.ablation_seeds) for j in p) for p in parts]
    assert sum(trainings) == 12 * 5 + 48 * 3  # 4 datasets x 3 backbones, 5 seeds
    if n == 15:
        assert max(trainings) - min(trainings) <= 3


def test_models_filter():
    cfg = bench.load_bench_config(ROOT / 'config' / 'bench.yaml', 'full')
    jobs = bench.select_jobs(cfg, models=['sim6/*/s0', 'avmnist/mid/*'])
    assert sorted(map(bench.model_name, jobs)) == sorted(
        ['sim6/early/s0', 'sim6/mid/s0', 'sim6/bottleneck/s0'] + [f'avmnist/mid/s{s}' for s in range(5)])
    with pytest.raises(ConfigError, match="no grid model matches; names look like 'sim6/early/s0'"):
        bench.select_jobs(cfg, models=['imagenet/*'])


def _part(records, config='c', **meta):
    return {'meta': {'config': config, **meta}, 'records': records}


def test_merge_results():
    recs = _synthetic_records()
    a = _part(recs[:10], shard='0/2', wall_time_s=5.0, models={'x': 1}, errors=[{'model': 'x', 'error': 'E'}])
    b = _part(recs[8:], shard='1/2', wall_time_s=7.5, models={'y': 2})
    merged = bench.merge_results([a, b])
    assert [bench.cell_key(r) for r in merged['records']] == [bench.cell_key(r) for r in recs]
    m = merged['meta']
    assert m['models'] == {'x': 1, 'y': 2} and m['errors'] == [{'model': 'x', 'error': 'E'}]
    assert m['wall_time_s'] == 7.5 and [s['cells'] for s in m['shards']] == [10, len(recs) - 8]
    with pytest.raises(DataError, match='part 1 was run with another grid config'):
        bench.merge_results([a, _part([], config='other')])
    with pytest.raises(DataError, match='no bench results'):
        bench.merge_results([])


def test_bench_merge_cli(tmp_path):
    recs = _synthetic_records()
    bench.write_results(tmp_path / 'a.json', {'config': 'c', 'wall_time_s': 1.0}, recs[:5])
    bench.write_results(tmp_path / 'b.json', {'config': 'c', 'wall_time_s': 2.0}, recs[5:])
    out = tmp_path / 'all.json'
    args = ['bench-merge', str(tmp_path / 'a.json'), str(tmp_path / 'b.json'), str(tmp_path / 'gone.json'),
            '--out', str(out)]
    assert cli_main(args) == 2  # a missing part is an error unless --allow-missing
    assert cli_main(args + ['--allow-missing']) == 0
    assert len(bench.read_results(out)['records']) == len(recs)


def test_a_failing_model_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    cfg = bench.load_bench_config(ROOT / 'config' / 'bench.yaml', 'quick')
    cfg = bench.dataclasses.replace(cfg, datasets=('avmnist', 'sim6'), avmnist_root=str(tmp_path / 'nowhere'))
    seen = []
    real = bench._run_model

    def fake(cfg_, dataset, backbone, seed, *args):
        seen.append(dataset)
        if dataset == 'avmnist':
            return real(cfg_, dataset, backbone, seed, *args)  # the real DataError: no such folder
        records = args[2]
        records.append({'backbone': backbone, 'dataset': dataset, 'condition': 'camera', 'ratio': 0.0,
                        'method': 'dense', 'seed': seed})
        return 1

    monkeypatch.setattr(bench, '_run_model', fake)
    res = bench.run_bench(cfg, tmp_path / 'o.json', cache_dir=tmp_path / 'c', log=lambda s: None)
    assert seen == ['avmnist', 'sim6'] and len(res['records']) == 1
    (err,) = res['meta']['errors']
    assert err['model'] == 'avmnist/early/s0' and 'DataError' in err['error'] and '--data-root' in err['error']
    assert bench.read_results(tmp_path / 'o.json')['meta']['errors'] == res['meta']['errors']


def test_data_root_default_is_next_to_the_repo(tmp_path):
    from sentryfuse_ros.commands import bench as cmd
    assert cmd.data_root(None, '../shared/data') == (ROOT.parent / 'shared' / 'data').resolve()
    assert cmd.data_root(str(tmp_path), '../shared/data') == tmp_path.resolve()


def test_read_results_accepts_gzip(tmp_path):
    import gzip
    import json as _json
    payload = {'meta': {'x': 1}, 'records': [{'method': 'random'}]}
    (tmp_path / 'r.json.gz').write_bytes(gzip.compress(_json.dumps(payload).encode()))
    # a record from before issue 10 reads as the SentryFuse model's (every method pruned it)
    assert bench.read_results(tmp_path / 'r.json.gz') == {
        'meta': {'x': 1}, 'records': [{'method': 'random', 'model': 'sentryfuse', 'protocol': 'P1P2'}]}
    (tmp_path / 'bad.json.gz').write_bytes(b'not gzip')
    with pytest.raises(DataError, match=r"bench results .*bad.json.gz' are unreadable"):
        bench.read_results(tmp_path / 'bad.json.gz')
