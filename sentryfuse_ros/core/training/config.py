"""Training configuration: the frozen dataclasses of a training YAML (gate, data, optimisation,
file) and their loader."""
import dataclasses

from sentryfuse_ros.core.config import check, load_yaml
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.data.scenes import SceneConfig
from sentryfuse_ros.core.model.config import ModelConfig
from sentryfuse_ros.core.pruning.gate import SALIENCY_KINDS
from sentryfuse_ros.core.training.curriculum import CurriculumConfig

RECIPES = ('pruned_steps', 'sandwich')
AUTOCASTS = ('none', 'bf16')


@dataclasses.dataclass(frozen=True)
class GateTrainConfig:
    saliency: str = 'taylor'        # taylor: mean_n |dL_n/dg|; fisher: sum_n (dL_n/dg)^2 (both on per-sample gates)
    ema_decay: float = 0.9          # teacher EMA decay per update of a subset's row
    align_weight: float = 1.0       # lambda in total = task + lambda * align
    align_temperature: float = 0.5  # tau of the teacher distribution t^(1/tau) (smaller = sharper)
    gate_lr: float = 0.05           # AdamW learning rate of the SentryGate table (no weight decay)
    prune_prob: float = 0.5         # probability per step of training the gate-chosen sub-network
    prune_min_budget: float = 0.4   # sampled budgets are uniform in [prune_min_budget, 1]
    prune_start_frac: float = 0.3   # no pruned steps before this fraction of the run (teacher warms up)
    recipe: str = 'pruned_steps'    # pruned_steps: a gate-chosen sub-network on prune_prob of the steps;
                                    # sandwich: after prune_start_frac, every step trains the full network,
                                    # the smallest budget and a random one, distilling the full logits
    distill_weight: float = 1.0     # sandwich: weight of the in-place distillation KL of each sub-network

    def __post_init__(self):
        check(self.saliency in SALIENCY_KINDS, 'saliency', self.saliency, f'one of {SALIENCY_KINDS}')
        check(0.0 <= self.ema_decay < 1.0, 'ema_decay', self.ema_decay, 'a number in [0, 1)')
        check(self.align_weight >= 0, 'align_weight', self.align_weight, 'a weight >= 0')
        check(self.align_temperature > 0, 'align_temperature', self.align_temperature, 'a temperature > 0')
        check(self.gate_lr > 0, 'gate_lr', self.gate_lr, 'a learning rate > 0')
        check(0.0 <= self.prune_prob <= 1.0, 'prune_prob', self.prune_prob, 'a probability in [0, 1]')
        check(0.0 < self.prune_min_budget <= 1.0, 'prune_min_budget', self.prune_min_budget, 'a budget in (0, 1]')
        check(0.0 <= self.prune_start_frac <= 1.0, 'prune_start_frac', self.prune_start_frac, 'a fraction in [0, 1]')
        check(self.recipe in RECIPES, 'recipe', self.recipe, f'one of {RECIPES}')
        check(self.distill_weight >= 0, 'distill_weight', self.distill_weight, 'a weight >= 0')


@dataclasses.dataclass(frozen=True)
class DataConfig:
    scene: SceneConfig = SceneConfig()  # what the synthetic scenes look like (classes = scene.num_classes)
    train_size: int = 4000              # training scenes
    val_size: int = 600                 # validation scenes (reported per subset in the checkpoint)
    seed: int = 0                       # training-set seed; the validation set uses seed + 1
    cache_dir: str = ''                 # folder caching rendered datasets ('' = no cache)
    half_storage: bool = False          # keep the rendered inputs as float16 in memory (halves RAM; batches are
                                        # converted back to float32)

    def __post_init__(self):
        check(isinstance(self.scene, SceneConfig), 'scene', self.scene, 'a SceneConfig mapping')
        for key in ('train_size', 'val_size'):
            check(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key, getattr(self, key),
                  'a positive int')
        check(isinstance(self.seed, int), 'seed', self.seed, 'an int')


@dataclasses.dataclass(frozen=True)
class BalanceConfig:
    """Modality balancing (core/training/balance.py); every method is off by default."""
    aux_weight: float = 0.0        # per-modality auxiliary heads: weight of the mean cross-entropy of a linear head on
                                   # each live modality's pooled encoder tokens (0 = off; the heads are dropped at
                                   # deployment: not in the checkpoint's model, no inference FLOPs)
    ogm_alpha: float = 0.0         # OGM-GE (Peng et al., CVPR 2022): alpha of the modulation coefficient
                                   # 1 - tanh(alpha * relu(ratio - 1)) on the dominant modality's encoder gradient
                                   # (0 = off); ratio = its confidence over the mean of the other live ones'
    ogm_noise: float = 1.0         # OGM-GE's generalization enhancement: Gaussian noise of this many times each
                                   # modulated gradient's std is added (0 = plain OGM)
    ogm_end_frac: float = 1.0      # OGM-GE modulates up to this fraction of the run (the paper stops it early)

    def __post_init__(self):
        check(self.aux_weight >= 0, 'aux_weight', self.aux_weight, 'a weight >= 0')
        check(self.ogm_alpha >= 0, 'ogm_alpha', self.ogm_alpha, 'an alpha >= 0')
        check(self.ogm_noise >= 0, 'ogm_noise', self.ogm_noise, 'a noise scale >= 0')
        check(0.0 <= self.ogm_end_frac <= 1.0, 'ogm_end_frac', self.ogm_end_frac, 'a fraction in [0, 1]')

    @property
    def heads(self) -> bool:
        """Whether the run keeps per-modality heads (the auxiliary loss, or OGM-GE's confidence)."""
        return self.aux_weight > 0 or self.ogm_alpha > 0


CHECKPOINT_DTYPES = ('float32', 'float16')


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500                  # optimizer steps
    batch_size: int = 64               # scenes per step
    lr: float = 2e-3                   # AdamW peak learning rate of the backbone
    weight_decay: float = 0.05         # AdamW weight decay of the backbone
    warmup_steps: int = 100            # linear warm-up, then cosine decay to min_lr_frac * lr
    min_lr_frac: float = 0.05          # final learning rate as a fraction of the peak
    grad_clip: float = 1.0             # max global grad norm (0 = no clipping)
    seed: int = 0                      # seeds model init, batch order, curriculum and budget draws
    checkpoint_every: int = 250        # steps between resumable state files
    eval_batch: int = 256              # batch size of the validation passes
    curriculum: CurriculumConfig = CurriculumConfig()  # modality-dropout schedule
    gate: GateTrainConfig = GateTrainConfig()          # SentryGate / saliency / pruned-step settings
    autocast: str = 'none'             # 'bf16': forward passes under torch.autocast bfloat16 (AMX on CPU); 'none': fp32
    balance: BalanceConfig = BalanceConfig()  # modality balancing (auxiliary heads, OGM-GE); off by default
    checkpoint_dtype: str = 'float32'  # the checkpoint's stored weights: float16 halves the file (loaded into fp32)

    def __post_init__(self):
        for key in ('steps', 'batch_size', 'checkpoint_every', 'eval_batch'):
            check(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key, getattr(self, key),
                  'a positive int')
        check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, 'warmup_steps', self.warmup_steps,
              'an int >= 0')
        check(self.lr > 0, 'lr', self.lr, 'a learning rate > 0')
        check(self.weight_decay >= 0, 'weight_decay', self.weight_decay, 'a value >= 0')
        check(0.0 <= self.min_lr_frac <= 1.0, 'min_lr_frac', self.min_lr_frac, 'a fraction in [0, 1]')
        check(self.grad_clip >= 0, 'grad_clip', self.grad_clip, 'a norm >= 0')
        check(isinstance(self.seed, int), 'seed', self.seed, 'an int')
        check(self.autocast in AUTOCASTS, 'autocast', self.autocast, f'one of {AUTOCASTS}')
        check(self.checkpoint_dtype in CHECKPOINT_DTYPES, 'checkpoint_dtype', self.checkpoint_dtype,
              f'one of {CHECKPOINT_DTYPES}')


@dataclasses.dataclass(frozen=True)
class TrainFileConfig:
    model: ModelConfig = ModelConfig()                 # architecture (core/model/config.py)
    preprocess: PreprocessConfig = PreprocessConfig()  # input geometry (core/data/preprocess.py)
    data: DataConfig = DataConfig()                    # synthetic scenes and dataset sizes
    train: TrainConfig = TrainConfig()                 # optimisation, curriculum and gate settings


def load_train_config(path) -> TrainFileConfig:
    """The training YAML (sections model, preprocess, data, train); unknown keys are rejected."""
    return load_yaml(TrainFileConfig, path)
