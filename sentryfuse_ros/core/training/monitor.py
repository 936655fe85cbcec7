"""Seeing modality imbalance while training: probes, tokenizer gradient norms, a progress plot.

Every ``checkpoint_every`` steps :class:`TrainingMonitor` records one row

    {'step': s, 'subsets': {subset: val accuracy}, 'probe': {modality: val accuracy with it alone},
     'grad_norm': {modality: mean L2 norm of its tokenizer's gradient over the steps it was live},
     'ogm_coeff': {modality: mean OGM-GE coefficient} (only with OGM-GE on)}

logs it in one line, and keeps the rows for the checkpoint metadata (``training.progress``) and for
:func:`plot_progress`, which draws accuracy per subset over steps into a PNG beside the checkpoint.
A starved modality shows as a probe near chance with a tokenizer gradient far below the others'.
"""
import pathlib
from typing import Any, Callable, Dict, List, Optional, Sequence

from sentryfuse_ros.core.training.recipe import autocast_context


class TrainingMonitor:
    """Accumulates per-step gradient norms and takes the validation probes at each checkpoint step.

    Args:
        modalities: the model's modalities.
        state: :meth:`state` of an earlier sitting of a resumed run (its rows and running sums continue).
    """

    def __init__(self, modalities: Sequence[str], state: Optional[Dict[str, Any]] = None):
        self.modalities = tuple(modalities)
        self._reset()
        state = state or {}
        self.history: List[Dict[str, Any]] = list(state.get('history', ()))
        self._sums.update(state.get('sums', {}))
        self._counts.update(state.get('counts', {}))

    def state(self) -> Dict[str, Any]:
        """Plain data for the resumable state file."""
        return {'history': self.history, 'sums': self._sums, 'counts': self._counts}

    def _reset(self) -> None:
        self._sums = {k: {m: 0.0 for m in self.modalities} for k in ('grad_norm', 'ogm_coeff')}
        self._counts = {k: {m: 0 for m in self.modalities} for k in ('grad_norm', 'ogm_coeff')}

    def record_step(self, grad_norms: Dict[str, float], coefficients: Dict[str, float]) -> None:
        """Fold one step's tokenizer gradient norms and OGM coefficients (live modalities only) in."""
        for key, values in (('grad_norm', grad_norms), ('ogm_coeff', coefficients)):
            for m, v in values.items():
                self._sums[key][m] += v
                self._counts[key][m] += 1

    def checkpoint(self, step: int, model, gate, source, *, batch: int, autocast: str, device,
                   log: Callable[[str], None]) -> Dict[str, Any]:
        """Probe the validation set (every subset, dense), close the gradient averages, log and keep the row."""
        with autocast_context(autocast, device):
            subsets = source.validate(model, gate, batch=batch, budgets=(1.0,)).get('1.00', {})
        row: Dict[str, Any] = {'step': step, 'subsets': subsets,
                               'probe': {m: subsets[m] for m in self.modalities if m in subsets}}
        for key in ('grad_norm', 'ogm_coeff'):
            counts = self._counts[key]
            if any(counts.values()):
                row[key] = {m: round(self._sums[key][m] / counts[m], 6) for m in self.modalities if counts[m]}
        self._reset()
        self.history.append(row)
        log(format_row(row))
        return row


def format_row(row: Dict[str, Any]) -> str:
    """One log line: probes, all-modality accuracy, gradient norms (and OGM coefficients)."""
    parts = [f'step {row["step"]}: probe ' + ', '.join(f'{m} {v:.3f}' for m, v in row['probe'].items())]
    full = max(row['subsets'], key=lambda k: k.count('+'), default=None)
    if full is not None:
        parts.append(f'{full} {row["subsets"][full]:.3f}')
    if 'grad_norm' in row:
        parts.append('tokenizer grad norm ' + ', '.join(f'{m} {v:.3g}' for m, v in row['grad_norm'].items()))
    if 'ogm_coeff' in row:
        parts.append('OGM k ' + ', '.join(f'{m} {v:.2f}' for m, v in row['ogm_coeff'].items()))
    return '; '.join(parts)


def progress_plot_path(out) -> pathlib.Path:
    """The progress plot kept next to the checkpoint ``out``: <out stem>.progress.png."""
    out = pathlib.Path(out)
    return out.with_name(out.stem + '.progress.png')


def plot_progress(history: Sequence[Dict[str, Any]], path, *, title: str = '') -> pathlib.Path:
    """Validation accuracy per modality subset over steps (left) and tokenizer gradient norms (right)."""
    import matplotlib  # noqa: PLC0415  (only training draws plots)
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: PLC0415
    steps = [r['step'] for r in history]
    fig, (ax, gx) = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({k for r in history for k in r['subsets']}, key=lambda k: (k.count('+'), k))
    for name in names:
        style = '-' if '+' not in name else ('--' if name.count('+') == 1 else '-')
        ax.plot(steps, [r['subsets'].get(name, float('nan')) for r in history], style, marker='.',
                linewidth=2.5 if '+' not in name or name.count('+') > 1 else 1.2, label=name)
    ax.set(xlabel='step', ylabel='val accuracy (dense)', ylim=(0, 1.02), title=title or 'accuracy per subset')
    ax.legend(fontsize=7, ncol=2)
    for m in sorted({m for r in history for m in r.get('grad_norm', {})}):
        gx.plot(steps, [r.get('grad_norm', {}).get(m, float('nan')) for r in history], marker='.', label=m)
    gx.set(xlabel='step', ylabel='tokenizer gradient L2 norm', yscale='log', title='gradient reaching each tokenizer')
    if gx.lines:
        gx.legend(fontsize=7)
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
