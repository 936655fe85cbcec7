"""The model's frozen config, and the one config a checkpoint stores (model + preprocessing + classes)."""
import dataclasses
from typing import Any, Mapping

from sentryfuse_ros.core.config import check, from_dict, to_dict
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.data.preprocess import MODALITIES, PreprocessConfig, check_preprocess_limits
from sentryfuse_ros.core.limits import DEFAULT_LIMITS, ReadLimits, over

BACKBONES = ('early', 'mid', 'bottleneck')
ATTENTIONS = ('dense', 'sentry')


def _pos_int(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    modalities: tuple = MODALITIES  # modalities the model has tokenizers for, a subset of MODALITIES
    backbone: str = 'early'         # early (one stack over all tokens) | mid (per-modality then joint) | bottleneck (MBT)
    attention: str = 'sentry'       # dense (MHA, num_kv_heads forced = num_heads) | sentry (GQA + modality-block sparsity)
    dim: int = 64                   # token width C
    depth: int = 4                  # transformer layers in total (per-modality + joint/fusion)
    num_heads: int = 4              # query heads H
    num_kv_heads: int = 2           # key/value heads G for sentry attention (each shared by H/G query heads)
    ffn_dim: int = 128              # FFN hidden channels F per block
    ffn_block: int = 16             # FFN channels per prunable unit (ffn_dim % ffn_block == 0)
    mid_layers: int = 2             # mid/bottleneck: per-modality layers before fusion (< depth)
    num_fusion_tokens: int = 4      # bottleneck (MBT) fusion tokens; also the extra global tokens of early/mid
    image_patch: int = 8            # camera patch side [pixels]; image_size % image_patch == 0
    bev_patch: int = 8              # lidar BEV patch side [cells]; bev_size % bev_patch == 0
    n_fft: int = 256                # audio STFT size [samples]
    hop: int = 128                  # audio STFT hop [samples]
    n_mels: int = 32                # mel bands
    audio_patch_frames: int = 4     # STFT frames per audio token (trailing frames that do not fill a token are dropped)
    dropout: float = 0.0            # dropout on attention and FFN outputs during training
    head_dim: int = 0               # per-head width D (0 = dim // num_heads); H * D need not equal dim
    mel_f_min: float = 0.0          # lowest mel band edge [Hz]
    mel_f_max: float = 0.0          # highest mel band edge [Hz] (0 = Nyquist of the audio rate)
    input_norm: bool = False        # camera/lidar inputs standardised per channel by training-set statistics
                                    # (measured at the start of training, stored in the checkpoint)

    def __post_init__(self):
        mods = tuple(self.modalities)
        check(len(mods) >= 1 and len(set(mods)) == len(mods) and all(m in MODALITIES for m in mods),
              'modalities', self.modalities, f'distinct names from {MODALITIES}')
        object.__setattr__(self, 'modalities', tuple(m for m in MODALITIES if m in mods))
        check(self.backbone in BACKBONES, 'backbone', self.backbone, f'one of {BACKBONES}')
        check(self.attention in ATTENTIONS, 'attention', self.attention, f'one of {ATTENTIONS}')
        for key in ('dim', 'depth', 'num_heads', 'num_kv_heads', 'ffn_dim', 'ffn_block', 'image_patch',
                    'bev_patch', 'n_fft', 'hop', 'n_mels', 'audio_patch_frames'):
            check(_pos_int(getattr(self, key)), key, getattr(self, key), 'a positive int')
        check(_pos_int(self.head_dim, 0), 'head_dim', self.head_dim, 'an int >= 0 (0 = dim // num_heads)')
        if self.num_heads % self.num_kv_heads or (self.head_dim == 0 and self.dim % self.num_heads):
            raise ConfigError(
                f'num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, dim={self.dim}: grouped-query '
                'attention needs num_heads % num_kv_heads == 0 and dim % num_heads == 0 (or an explicit head_dim)')
        check(isinstance(self.mel_f_min, (int, float)) and self.mel_f_min >= 0, 'mel_f_min', self.mel_f_min,
              'a frequency >= 0 [Hz]')
        check(isinstance(self.mel_f_max, (int, float)) and (self.mel_f_max == 0 or self.mel_f_max > self.mel_f_min),
              'mel_f_max', self.mel_f_max, f'0 (Nyquist) or a frequency > mel_f_min={self.mel_f_min} [Hz]')
        check(self.ffn_dim % self.ffn_block == 0, 'ffn_block', self.ffn_block,
              f'a divisor of ffn_dim={self.ffn_dim}')
        check(_pos_int(self.num_fusion_tokens, 0), 'num_fusion_tokens', self.num_fusion_tokens, 'an int >= 0')
        if self.backbone == 'bottleneck':
            check(self.num_fusion_tokens >= 1, 'num_fusion_tokens', self.num_fusion_tokens,
                  '>= 1 for the bottleneck backbone')
        if self.backbone in ('mid', 'bottleneck'):
            check(_pos_int(self.mid_layers, 0) and self.mid_layers < self.depth, 'mid_layers', self.mid_layers,
                  f'an int in [0, depth={self.depth}) for the {self.backbone} backbone')
        check(self.n_fft >= 16 and self.hop <= self.n_fft, 'hop', self.hop, f'<= n_fft={self.n_fft} (n_fft >= 16)')
        check(0.0 <= self.dropout < 1.0, 'dropout', self.dropout, 'a probability in [0, 1)')
        check(isinstance(self.input_norm, bool), 'input_norm', self.input_norm, 'true or false')

    @property
    def attn_head_dim(self) -> int:
        """Per-head width D in effect: head_dim, or dim // num_heads when head_dim is 0."""
        return self.head_dim or self.dim // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Effective key/value heads: num_heads for dense attention, num_kv_heads for sentry."""
        return self.num_heads if self.attention == 'dense' else self.num_kv_heads


@dataclasses.dataclass(frozen=True)
class SentryFuseConfig:
    model: ModelConfig = ModelConfig()              # network architecture
    preprocess: PreprocessConfig = PreprocessConfig()  # input geometry (shared with core/data/preprocess.py)
    class_names: tuple = ()                          # output classes, index = logit index

    def __post_init__(self):
        check(isinstance(self.model, ModelConfig), 'model', self.model, 'a ModelConfig')
        check(isinstance(self.preprocess, PreprocessConfig), 'preprocess', self.preprocess, 'a PreprocessConfig')
        names = tuple(self.class_names)
        check(len(names) >= 2 and all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names),
              'class_names', self.class_names, 'at least 2 distinct non-empty strings')
        object.__setattr__(self, 'class_names', names)
        pre, m = self.preprocess, self.model
        check(pre.image_hw[0] % m.image_patch == 0 and pre.image_hw[1] % m.image_patch == 0, 'model.image_patch',
              m.image_patch, f'a divisor of preprocess.image_size={pre.image_hw[0]} and of the image width {pre.image_hw[1]}')
        check(pre.bev_hw[0] % m.bev_patch == 0 and pre.bev_hw[1] % m.bev_patch == 0, 'model.bev_patch', m.bev_patch,
              f'a divisor of preprocess.bev_size={pre.bev_hw[0]} and of the BEV width {pre.bev_hw[1]}')
        nyquist = pre.audio_rate / 2.0
        check(m.mel_f_max <= nyquist and m.mel_f_min < (m.mel_f_max or nyquist), 'model.mel_f_max', m.mel_f_max,
              f'<= Nyquist {nyquist} Hz of preprocess.audio_rate={pre.audio_rate} and > mel_f_min={m.mel_f_min}')
        frames = 1 + pre.audio_samples // m.hop
        check(frames >= m.audio_patch_frames, 'model.audio_patch_frames', m.audio_patch_frames,
              f'<= the {frames} STFT frames of preprocess.audio_samples={pre.audio_samples} at hop={m.hop}')
        check(m.n_fft <= pre.audio_samples, 'model.n_fft', m.n_fft,
              f'<= preprocess.audio_samples={pre.audio_samples}')

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def token_count(cfg: SentryFuseConfig) -> int:
    """Tokens of one forward pass with every modality present (patches, audio tokens, globals, CLS)."""
    pre, m = cfg.preprocess, cfg.model
    (s, sw), (g, gw) = pre.image_hw, pre.bev_hw
    per = {'camera': (s // m.image_patch) * (sw // m.image_patch), 'lidar': (g // m.bev_patch) * (gw // m.bev_patch),
           'audio': (1 + pre.audio_samples // m.hop) // m.audio_patch_frames}
    return sum(per[x] for x in m.modalities) + m.num_fusion_tokens + len(m.modalities) + 1


def check_config_limits(cfg: SentryFuseConfig, limits: ReadLimits = DEFAULT_LIMITS) -> None:
    """ConfigError naming the first size of ``cfg`` (as a file declared it) above ``limits``.

    Checked before any model is built: a few hundred bytes of config can ask for gigabytes of weights.
    """
    m = cfg.model
    sizes = (('dim', m.dim, limits.max_dim), ('head_dim', m.head_dim, limits.max_dim),
             ('depth', m.depth, limits.max_depth), ('num_heads', m.num_heads, limits.max_heads),
             ('ffn_dim', m.ffn_dim, limits.max_ffn_dim), ('n_fft', m.n_fft, limits.max_audio_bins),
             ('n_mels', m.n_mels, limits.max_audio_bins), ('num_fusion_tokens', m.num_fusion_tokens, limits.max_tokens))
    for key, value, limit in sizes:
        if over(value, limit):
            raise ConfigError(f'model.{key}={value!r}: expected at most {limit} (ReadLimits)')
    check_preprocess_limits(cfg.preprocess, limits)
    if len(cfg.class_names) > limits.max_classes:
        raise ConfigError(f'class_names lists {len(cfg.class_names)} classes: expected at most {limits.max_classes}')
    tokens = token_count(cfg)
    if tokens > limits.max_tokens:
        raise ConfigError(f'the config makes {tokens} tokens per forward pass (preprocess sizes / patch sizes): '
                          f'expected at most {limits.max_tokens} (ReadLimits.max_tokens)')


def config_from_dict(data: Mapping[str, Any]) -> SentryFuseConfig:
    """SentryFuseConfig from its plain-dict form (YAML section or checkpoint); raises ConfigError."""
    cfg = from_dict(SentryFuseConfig, data)
    # config.from_dict turns YAML lists into tuples only for `Tuple[...]` hints, not bare `tuple`
    # (e.g. PreprocessConfig.bev_z_range_m); normalise so a round-tripped config compares equal.
    pre = cfg.preprocess
    lists = {f.name: tuple(getattr(pre, f.name)) for f in dataclasses.fields(pre) if isinstance(getattr(pre, f.name), list)}
    return dataclasses.replace(cfg, preprocess=dataclasses.replace(pre, **lists)) if lists else cfg


def config_to_dict(cfg: SentryFuseConfig) -> dict:
    """Plain-dict form (lists, str, numbers) for YAML and weights_only checkpoints."""
    return to_dict(cfg)
