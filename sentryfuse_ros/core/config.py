"""One loader for every frozen-dataclass config: YAML/dict in, validated dataclass out.

Unknown keys are rejected with their name; nested dataclass fields are built recursively;
tuples are accepted from YAML lists. Values are validated by each dataclass's
``__post_init__``, which raises :class:`ConfigError` naming the key and the value.
"""
import dataclasses
import pathlib
import typing
from typing import Any, Mapping, Type, TypeVar

import yaml

from sentryfuse_ros.core.errors import ConfigError

T = TypeVar('T')


def from_dict(cls: Type[T], data: Mapping[str, Any], where: str = '') -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys.

    Args:
        cls: a (frozen) dataclass type.
        data: the mapping, e.g. parsed YAML.
        where: dotted prefix used in error messages for nested configs.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f'{where or cls.__name__}: expected a mapping, got {type(data).__name__} {data!r}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f'{where or cls.__name__}: unknown key(s) {unknown}; expected some of {sorted(fields)}')
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f'{where}.{name}' if where else name
        kwargs[name] = _coerce(hints.get(name), value, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f'{where or cls.__name__}: {exc}') from exc


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f'{key}: expected a mapping, got {type(value).__name__} {value!r}')
        return from_dict(hint, value, key)
    origin = typing.get_origin(hint)
    if (hint is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def to_dict(config: Any) -> dict:
    """The plain-data form of a dataclass config (tuples become lists), for YAML/checkpoints."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    return plain(config)


def read_yaml(path: 'str | pathlib.Path', what: str) -> Any:
    """Parsed YAML of ``path`` ({} for an empty file); ConfigError "<what> '<path>' ..." otherwise."""
    path = pathlib.Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f'{what} {str(path)!r} does not exist') from exc
    except IsADirectoryError as exc:
        raise ConfigError(f'{what} {str(path)!r} is a folder: expected a YAML file') from exc
    except UnicodeDecodeError as exc:  # a binary file
        raise ConfigError(f'{what} {str(path)!r} is not UTF-8 text (byte {exc.start}): expected a YAML file') from None
    except yaml.YAMLError as exc:
        raise ConfigError(f'{what} {str(path)!r} is not valid YAML: {" ".join(str(exc).split())}') from exc


def load_yaml(cls: Type[T], path: 'str | pathlib.Path', section: str = '') -> T:
    """Load ``cls`` from a YAML file (optionally from one top-level ``section`` of it)."""
    path = pathlib.Path(path)
    data = read_yaml(path, 'config file')
    if section:
        if not isinstance(data, Mapping) or section not in data:
            raise ConfigError(f'config file {str(path)!r} has no top-level key {section!r}')
        data = data[section]
    return from_dict(cls, data or {}, where=section)


def check(condition: bool, key: str, value: Any, expected: str) -> None:
    """Raise ConfigError('<key>=<value>: expected <expected>') unless ``condition``."""
    if not condition:
        raise ConfigError(f'{key}={value!r}: expected {expected}')
