"""What the grid is: methods, datasets, its config section, conditions and cells, model jobs."""
import dataclasses
from typing import List, Sequence, Tuple

from sentryfuse_ros.core.config import check, load_yaml
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.data.scenes import SCENE_PRESETS
from sentryfuse_ros.core.model.config import BACKBONES, ModelConfig
from sentryfuse_ros.core.pruning.gate import modality_subsets
from sentryfuse_ros.core.training import train as tr

BASELINES = ('random', 'magnitude_l1', 'magnitude_l2', 'taylor', 'fisher', 'kwon', 'kwon_tuned', 'flap')
ORACLES = ('taylor_recal',)
GATE_METHODS = ('sentrygate', 'gate_uncond', 'gate_noalign')
DENSE_METHODS = ('dense', 'dense_nocurr')
METHODS = BASELINES + ORACLES + GATE_METHODS + DENSE_METHODS
DATASETS = tuple(SCENE_PRESETS) + ('avmnist',)
RECORD_KEYS = ('model', 'backbone', 'dataset', 'condition', 'ratio', 'method', 'seed', 'accuracy', 'gflops',
               'params', 'latency_ms', 'peak_mem_mb', 'n_classes', 'protocol', 'calibration', 'tuning_data', 'mask')
# protocol of a record: 'P0' (deployed static: a baseline's masks solved once with every sensor, that one
# model run on every live set; SentryGate re-pruned per live set at the static model's realised FLOPs) or
# 'P1P2' (masks re-solved per live set: protocols P1 and P2 read the same records)
RECORD_PROTOCOLS = ('P0', 'P1P2')
PROTOCOL_NAMES = ('P0', 'P1', 'P2')
P0_MODELS = ('conventional', 'conventional_nocurr')  # the models a user of a static pruner deploys
P0_METHODS = BASELINES                                # what P0 prunes them with (taylor_recal is per live set)
# the baseline each protocol's headline compares with, fixed before the run (P0/P1 'model/method', P2 'method');
# default: the held-out picks most often chosen in the previous full grid (bench/bench_report.md)
DEFAULT_HEADLINE = {'P0': 'conventional/kwon_tuned', 'P1': 'conventional/kwon_tuned', 'P2': 'taylor'}
# the trained models a grid job can evaluate (protocol P1 compares SentryGate on 'sentryfuse' with the
# baselines on the conventional ones; protocol P2 runs every criterion on 'sentryfuse'):
#   sentryfuse           SentryGate + alignment + pruned training steps + the modality-dropout curriculum
#   conventional         the same architecture, data and steps; no gate, no pruned steps; with the curriculum
#   conventional_nocurr  as conventional, without the curriculum (all modalities on every step)
#   sentryfuse_sandwich  the alternative SentryFuse recipe: dense steps with the curriculum for 60% of the run,
#                        then the sandwich rule with in-place distillation (train.py recipe: sandwich)
MODELS = ('sentryfuse', 'conventional', 'conventional_nocurr', 'sentryfuse_sandwich')
SANDWICH_METHODS = ('sentrygate', 'gate_uncond', 'dense')  # what the recipe ablation model runs
CONVENTIONAL_METHODS = BASELINES + ORACLES + ('dense',)  # what a model without a trained gate can run
VARIANT_OF = {'gate_noalign': 'noalign', 'dense_nocurr': 'nocurr'}  # methods needing another checkpoint


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    backbones: tuple = BACKBONES                    # fusion backbones to train
    datasets: tuple = DATASETS                      # scene presets (core/data/scenes.py) and/or 'avmnist'
    seeds: tuple = (0, 1, 2, 3, 4)                  # training seeds (model init, batch order, curriculum)
    ratios: tuple = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # fractions of prunable MACs removed
                                                    # (keep_fraction = 1 - ratio)
    methods: tuple = METHODS                        # which rows to compute (module docstring)
    models: tuple = ('sentryfuse',)                 # trained models per job (MODELS); conventional ones run the
                                                    # baselines, the oracle and dense only
    kwon_samples: int = 2048                        # kwon / kwon_tuned: calibration samples of the Fisher, the mask
                                                    # search and the least-squares tuning (Kwon et al.: 2,048)
    flap_samples: int = 1024                        # flap: calibration samples of the fluctuation statistics and the
                                                    # bias compensation (An et al.: 1,024)
    headline: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_HEADLINE))  # per protocol, the
                                                    # baseline fixed in advance for the headline (P0/P1 model/method)
    conditions: str = 'all_subsets'                 # 'main' (all + each single modality missing) | 'all_subsets'
    ablation_seeds: tuple = (0,)                    # seeds that also train the noalign / nocurr variants
    latency_seeds: tuple = (0,)                     # seeds whose cells get latency and peak memory
    latency_repeats: int = 10                       # timed batch-1 forward passes per latency cell
    train_size: int = 4000                          # synthetic training scenes (avmnist: its train speakers)
    val_size: int = 500                             # synthetic validation scenes (reported in the checkpoint)
    test_size: int = 500                            # synthetic test scenes (avmnist: its test speaker, 500 clips)
    data_seed: int = 0                              # dataset seed (train = s, val = s + 1, test = s + 1000)
    scene_overrides: dict = dataclasses.field(default_factory=dict)  # {preset: {SceneConfig field: value}}
    calib_batches: int = 4                          # calibration batches for taylor / fisher / kwon / recal
    calib_batch_size: int = 32                      # samples per calibration batch (from the training split)
    eval_batch: int = 250                           # test batch size
    avmnist_root: str = '../shared/data'            # folder with mnist/ and fsdd/recordings/ (CLI: relative to the repo root)
    model: ModelConfig = ModelConfig()              # architecture; backbone and modalities set per cell
    preprocess: PreprocessConfig = PreprocessConfig()  # input geometry
    train: tr.TrainConfig = tr.TrainConfig()        # optimisation; seed set per cell

    def __post_init__(self):
        for key in ('backbones', 'datasets', 'seeds', 'ratios', 'methods', 'models', 'ablation_seeds',
                    'latency_seeds'):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        check(len(self.backbones) > 0 and set(self.backbones) <= set(BACKBONES), 'backbones', self.backbones,
              f'a non-empty subset of {BACKBONES}')
        check(len(self.datasets) > 0 and set(self.datasets) <= set(DATASETS), 'datasets', self.datasets,
              f'a non-empty subset of {DATASETS}')
        check(len(self.seeds) > 0 and all(isinstance(s, int) for s in self.seeds), 'seeds', self.seeds,
              'a non-empty list of ints')
        check(len(self.ratios) > 0 and all(isinstance(r, (int, float)) and 0.0 < r < 1.0 for r in self.ratios),
              'ratios', self.ratios, 'a non-empty list of fractions in (0, 1)')
        check(len(self.methods) > 0 and set(self.methods) <= set(METHODS), 'methods', self.methods,
              f'a non-empty subset of {METHODS}')
        check(len(self.models) > 0 and set(self.models) <= set(MODELS) and 'sentryfuse' in self.models, 'models',
              self.models, f"a subset of {MODELS} holding 'sentryfuse'")
        _check_headline(self.headline)
        check(self.conditions in ('main', 'all_subsets'), 'conditions', self.conditions, "'main' or 'all_subsets'")
        check(set(self.scene_overrides) <= set(SCENE_PRESETS), 'scene_overrides', self.scene_overrides,
              f'keys from {tuple(SCENE_PRESETS)}')
        for key in ('train_size', 'val_size', 'test_size', 'calib_batches', 'calib_batch_size', 'eval_batch',
                    'latency_repeats', 'kwon_samples', 'flap_samples'):
            check(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key, getattr(self, key),
                  'a positive int')


def _check_headline(headline: dict) -> None:
    """Every protocol named once, P0/P1 as 'model/method' on a conventional model, P2 as a baseline."""
    check(isinstance(headline, dict) and set(headline) == set(PROTOCOL_NAMES), 'headline', headline,
          f'a mapping with exactly the keys {PROTOCOL_NAMES}')
    for proto in ('P0', 'P1'):
        model, _, method = str(headline[proto]).partition('/')
        check(model in P0_MODELS and method in BASELINES, f'headline.{proto}', headline[proto],
              f"'model/method' with model in {P0_MODELS} and method in {BASELINES}")
    check(headline['P2'] in BASELINES, 'headline.P2', headline['P2'], f'one of {BASELINES}')


def load_bench_config(path, section: str) -> BenchConfig:
    """One section ('quick' or 'full') of the bench YAML."""
    return load_yaml(BenchConfig, path, section=section)


def conditions_for(modalities: Sequence[str], which: str) -> List[Tuple[str, ...]]:
    """Live sets: all modalities, then each single modality missing, then (all_subsets) the rest."""
    mods = tuple(modalities)
    main = [mods] + [tuple(m for m in mods if m != gone) for gone in mods if len(mods) > 1]
    if which == 'main':
        return main
    rest = [s for s in reversed(modality_subsets(mods)) if s not in main]
    return main + rest


def condition_name(live: Sequence[str]) -> str:
    return '+'.join(live)


def _cells(cfg: BenchConfig, modalities: Sequence[str], seed: int,
           model: str = 'sentryfuse') -> List[Tuple[Tuple[str, ...], float, str]]:
    """(live, ratio, method) of one trained model; dense rows only at ratio 0, variants only on ablation seeds,
    conventional models only the methods that need no trained gate."""
    out = []
    allowed = {'sentryfuse': METHODS, 'sentryfuse_sandwich': SANDWICH_METHODS}.get(model, CONVENTIONAL_METHODS)
    methods = [m for m in cfg.methods if m in allowed]
    for live in conditions_for(modalities, cfg.conditions):
        for method in methods:
            if method in VARIANT_OF and seed not in cfg.ablation_seeds:
                continue
            for ratio in ((0.0,) if method in DENSE_METHODS else cfg.ratios):
                out.append((live, float(ratio), method))
    return out


def p0_cells(cfg: BenchConfig, modalities: Sequence[str]) -> List[Tuple[str, float, str]]:
    """(model, ratio, method) of protocol P0's static models: each is pruned once and run on every live set."""
    return [(model, float(ratio), method) for model in cfg.models if model in P0_MODELS
            for method in cfg.methods if method in P0_METHODS for ratio in cfg.ratios]


def model_jobs(cfg: BenchConfig) -> List[Tuple[str, str, int]]:
    """(dataset, backbone, seed) of every grid model, in run order."""
    return [(d, b, s) for d in cfg.datasets for b in cfg.backbones for s in cfg.seeds]


def model_name(job: Tuple[str, str, int]) -> str:
    return f'{job[0]}/{job[1]}/s{job[2]}'
