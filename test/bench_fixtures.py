"""A tiny camera + audio model with a random SentryGate, for the bench and pruning tests (no training)."""
import torch

from sentryfuse_ros.core.data.preprocess import PreprocessConfig
from sentryfuse_ros.core.model.backbone import SentryFuseModel
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig
from sentryfuse_ros.core.pruning.gate import SentryGate


def tiny_model_and_gate(seed: int = 0, **model_kwargs):
    """(model in eval mode, gate with N(0, 1) weights); ``model_kwargs`` override the ModelConfig fields."""
    torch.manual_seed(seed)
    fields = dict(modalities=('camera', 'audio'), dim=16, depth=2, num_heads=4, num_kv_heads=2, ffn_dim=32,
                  ffn_block=8, num_fusion_tokens=2, n_fft=128, hop=64, n_mels=16)
    m = ModelConfig(**{**fields, **model_kwargs})
    pre = PreprocessConfig(image_size=16, bev_size=16, audio_samples=1024)
    model = SentryFuseModel(SentryFuseConfig(model=m, preprocess=pre, class_names=('a', 'b'))).eval()
    gate = SentryGate(modalities=model.modalities, layout=model.unit_layout())
    with torch.no_grad():
        for p in gate.parameters():
            p.normal_()
    return model, gate
