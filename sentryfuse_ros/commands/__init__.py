"""Subcommands of the `sentryfuse` CLI, one module each.

Every module here defines ``register(subparsers)``, which adds its parser and sets
``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
"""
import importlib
import pkgutil


def _discover():
    registry = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f'{__name__}.{info.name}')
        registry.append(module.register)
    return tuple(registry)


REGISTRY = _discover()
