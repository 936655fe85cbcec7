import pytest

from sentryfuse_ros.core.config import from_dict
from sentryfuse_ros.core.errors import ConfigError
from sentryfuse_ros.core.model.config import ModelConfig, SentryFuseConfig, config_from_dict, config_to_dict
from sentryfuse_ros.core.data.preprocess import PreprocessConfig

NAMES = ('a', 'b', 'c')


def test_defaults_are_the_small_model():
    m = ModelConfig()
    assert (m.dim, m.depth, m.num_heads, m.num_kv_heads, m.ffn_dim) == (64, 4, 4, 2, 128)
    assert m.kv_heads == 2 and m.attn_head_dim == 16
    assert ModelConfig(attention='dense').kv_heads == 4  # dense: one KV head per query head


@pytest.mark.parametrize('heads, kv, dim', [(4, 3, 64), (6, 4, 60), (3, 1, 64)])
def test_gqa_grouping_is_validated_naming_both_values(heads, kv, dim):
    with pytest.raises(ConfigError, match=rf'num_heads={heads}, num_kv_heads={kv}.*num_heads % num_kv_heads'):
        ModelConfig(num_heads=heads, num_kv_heads=kv, dim=dim)


@pytest.mark.parametrize('kwargs, match', [
    ({'backbone': 'late'}, r"backbone='late': expected one of"),
    ({'attention': 'flash'}, r"attention='flash'"),
    ({'ffn_block': 48}, r'ffn_block=48: expected a divisor of ffn_dim=128'),
    ({'backbone': 'mid', 'mid_layers': 4}, r'mid_layers=4: expected an int in \[0, depth=4\)'),
    ({'backbone': 'bottleneck', 'num_fusion_tokens': 0}, r'num_fusion_tokens=0: expected >= 1'),
    ({'modalities': ('camera', 'radar')}, r"modalities=\('camera', 'radar'\)"),
    ({'modalities': ()}, r'modalities=\(\)'),
    ({'dim': 0}, r'dim=0: expected a positive int'),
    ({'dropout': 1.0}, r'dropout=1.0'),
    ({'hop': 512}, r'hop=512: expected <= n_fft=256'),
])
def test_invalid_model_values_name_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)


def test_modalities_are_put_in_canonical_order():
    assert ModelConfig(modalities=('audio', 'camera')).modalities == ('camera', 'audio')


@pytest.mark.parametrize('model, pre, match', [
    (ModelConfig(image_patch=5), PreprocessConfig(), r'model.image_patch=5: expected a divisor of preprocess.image_size=32'),
    (ModelConfig(bev_patch=7), PreprocessConfig(), r'model.bev_patch=7'),
    (ModelConfig(audio_patch_frames=100), PreprocessConfig(), r'model.audio_patch_frames=100: expected <= the 63 STFT'),
])
def test_geometry_must_match_preprocessing(model, pre, match):
    with pytest.raises(ConfigError, match=match):
        SentryFuseConfig(model=model, preprocess=pre, class_names=NAMES)


def test_class_names_validated():
    with pytest.raises(ConfigError, match=r"class_names=\('a',\): expected at least 2"):
        SentryFuseConfig(class_names=('a',))
    with pytest.raises(ConfigError, match=r'class_names.*distinct'):
        SentryFuseConfig(class_names=('a', 'a'))


def test_round_trip_through_plain_dict():
    cfg = SentryFuseConfig(model=ModelConfig(backbone='bottleneck', modalities=('lidar', 'audio')),
                           preprocess=PreprocessConfig(image_size=16), class_names=NAMES)
    data = config_to_dict(cfg)
    assert data['model']['modalities'] == ['lidar', 'audio'] and data['class_names'] == list(NAMES)
    assert config_from_dict(data) == cfg


def test_unknown_nested_key_rejected():
    with pytest.raises(ConfigError, match=r'model: unknown key\(s\) \[\'width\'\]'):
        from_dict(SentryFuseConfig, {'model': {'width': 3}, 'class_names': ['a', 'b']})
