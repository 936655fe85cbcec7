"""core/config.py: the one loader for frozen-dataclass configs."""
import dataclasses

import pytest

from sentryfuse_ros.core.config import check, from_dict, load_yaml, read_yaml, to_dict
from sentryfuse_ros.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner:
    rate: float = 1.0     # [Hz]
    span: tuple = (0, 1)  # [min, max]

    def __post_init__(self):
        check(self.rate > 0, 'rate', self.rate, 'a positive rate [Hz]')


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = 'x'
    inner: Inner = Inner()


def test_from_dict_builds_nested_configs_and_coerces_types():
    cfg = from_dict(Outer, {'name': 'y', 'inner': {'rate': 3, 'span': [2, 5]}})
    assert cfg == Outer('y', Inner(3.0, (2, 5)))
    assert isinstance(cfg.inner.rate, float) and isinstance(cfg.inner.span, tuple)
    assert from_dict(Outer, to_dict(cfg)) == cfg  # round trip through plain data
    assert to_dict(cfg) == {'name': 'y', 'inner': {'rate': 3.0, 'span': [2, 5]}}


@pytest.mark.parametrize('data, message', [
    ({'nmae': 'y'}, r"Outer: unknown key\(s\) \['nmae'\]; expected some of \['inner', 'name'\]"),
    ({'inner': {'rate': -1.0}}, r'rate=-1.0: expected a positive rate \[Hz\]'),
    ({'inner': {'rat': 1.0}}, r"inner: unknown key\(s\) \['rat'\]"),
    ({'inner': [1, 2]}, r'inner: expected a mapping, got list'),
])
def test_from_dict_errors_name_the_key_and_value(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_yaml_files(tmp_path):
    (tmp_path / 'ok.yaml').write_text('outer:\n  name: z\n  inner: {rate: 2.5}\n')
    assert load_yaml(Outer, tmp_path / 'ok.yaml', section='outer') == Outer('z', Inner(2.5))
    (tmp_path / 'empty.yaml').write_text('')
    assert read_yaml(tmp_path / 'empty.yaml', 'thing') == {}
    with pytest.raises(ConfigError, match=r"config file '.*ok.yaml' has no top-level key 'nope'"):
        load_yaml(Outer, tmp_path / 'ok.yaml', section='nope')
    with pytest.raises(ConfigError, match=r"my file '.*missing.yaml' does not exist"):
        read_yaml(tmp_path / 'missing.yaml', 'my file')
    (tmp_path / 'bad.yaml').write_text('a: [1, 2\n')
    with pytest.raises(ConfigError, match=r"config file '.*bad.yaml' is not valid YAML"):
        load_yaml(Outer, tmp_path / 'bad.yaml')
