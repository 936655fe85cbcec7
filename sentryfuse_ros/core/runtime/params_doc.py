"""docs/parameters.md from the parameter schemas (core/runtime/params.py): every parameter of every node.

    python -m sentryfuse_ros.core.runtime.params_doc > docs/parameters.md

test/core/runtime/test_params.py checks that the committed file is current.
"""
import sys
from typing import List

from sentryfuse_ros.core.runtime import params

HEADER = """# Parameters of the SentryFuse nodes

Generated from `sentryfuse_ros/core/runtime/params.py` by
`python -m sentryfuse_ros.core.runtime.params_doc > docs/parameters.md` (a test checks it is current):
do not edit by hand. `config/perception.yaml` sets only what the deployment decides; every other
parameter has the default below. **settable**: `ros2 param set` changes it on the running node (an
invalid value is refused with its reason and changes nothing); **read-only**: fixed at start-up;
**while unconfigured**: perception is a lifecycle node, and what its configure step reads to load the
model can be set while it is unconfigured (`ros2 lifecycle set /perception cleanup` first when it is
configured), taking effect at the next `configure`. The
same checks run at start-up, where an invalid value is logged, reported on /diagnostics and replaced
by its default. Floats must be finite. An unknown parameter name in `sentryfuse run --set` or a
parameters file is refused, naming it.
"""


def _default(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value).replace("'", '')
    return _cell(text)


def _cell(text: str) -> str:
    return text.replace('|', '\\|')


def _when(spec: params.ParamSpec) -> str:
    if spec.unconfigured_only:
        return 'while unconfigured'
    return 'read-only' if spec.read_only else 'settable'


def node_table(node: str) -> List[str]:
    lines = [f'## {node}', '', '| parameter | default | valid values | at run time | description |',
             '|---|---|---|---|---|']
    for spec in params.node_schema(node):
        lines.append(f'| `{spec.name}` | `{_default(spec.default)}` | {_cell(spec.expected())} | '
                     f'{_when(spec)} | {_cell(spec.description)} |')
    if node == 'health_monitor':
        lines += ['', 'A modality named in `modalities` beyond camera, lidar and audio gets `<name>.topic` '
                  f'`/<name>` and the thresholds {params.OTHER_MONITOR}.']
    return lines + ['']


def render() -> str:
    lines = [HEADER]
    for node in params.NODES:
        lines += node_table(node)
    return '\n'.join(lines)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == '__main__':
    sys.exit(main())
