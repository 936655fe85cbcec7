"""Named model presets: ``tiny`` (the CI / quick-test model) and ``robot`` (real sensor geometry).

``robot`` is sized so that pruning pays on a CPU: ViT-S width (dim 384, 6 query / 2 KV heads of 64,
FFN 4x in 24 blocks of 64), depth 6, about 6 GFLOPs at batch 1 with all three modalities:

- camera: KITTI aspect (1242x375 is 3.3:1) -> 128 x 416 input, 16 px patches -> 8 x 26 = 208 tokens;
- lidar: forward BEV over KITTI's usual range x in [0, 70.4) m, y in [-40, 40) m at ~0.55 m cells
  -> 128 x 144 grid, 16-cell patches -> 8 x 9 = 72 tokens;
- audio: 1 s at 16 kHz, 512-point STFT, hop 160 (10 ms), 64 mels over 50 Hz-8 kHz, 4 frames per
  token -> 25 tokens.
"""
import dataclasses
from typing import Dict, Sequence, Tuple

from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig

MODEL_PRESETS: Dict[str, Tuple[ModelConfig, PreprocessConfig]] = {
    'tiny': (ModelConfig(dim=64, depth=4, num_heads=8, num_kv_heads=4, ffn_dim=128, ffn_block=16,
                         num_fusion_tokens=4, image_patch=8, bev_patch=8, n_fft=256, hop=128, n_mels=32,
                         audio_patch_frames=4),
             PreprocessConfig(image_size=32, bev_size=32, bev_range_m=16.0, audio_rate=8000, audio_samples=8000)),
    'robot': (ModelConfig(dim=384, depth=6, num_heads=6, num_kv_heads=2, head_dim=64, ffn_dim=1536, ffn_block=64,
                          num_fusion_tokens=4, image_patch=16, bev_patch=16, n_fft=512, hop=160, n_mels=64,
                          audio_patch_frames=4, mel_f_min=50.0, mel_f_max=8000.0),
              PreprocessConfig(image_size=128, image_width=416, bev_size=128, bev_width=144, bev_range_m=40.0,
                               bev_x_range_m=(0.0, 70.4), bev_z_range_m=(-2.5, 1.5), audio_rate=16000,
                               audio_samples=16000)),
}


def preset_config(name: str, class_names: Sequence[str], **model_overrides) -> SentryFuseConfig:
    """The SentryFuseConfig of preset ``name`` with these classes (and optional ModelConfig overrides).

    Args:
        name: 'tiny' or 'robot'.
        class_names: output classes.
        model_overrides: ModelConfig fields to change (e.g. depth=8, attention='dense').
    """
    if name not in MODEL_PRESETS:
        raise ConfigError(f'model preset {name!r}: expected one of {sorted(MODEL_PRESETS)}')
    model, pre = MODEL_PRESETS[name]
    return SentryFuseConfig(model=dataclasses.replace(model, **model_overrides), preprocess=pre,
                            class_names=tuple(class_names))
