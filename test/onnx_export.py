"""One ONNX export of the test checkpoint per session: every modality subset at budgets 1.0 and 0.5.

Exporting is the slow part of the runtime tests (the dynamo exporter traces each of the 14
sub-networks: about 50 s of CPU, 1-2 min on a loaded 2-core box), so test modules share it through
:func:`export_dir`, cached in the session's base temp folder.
"""
import pathlib

BUDGETS = (1.0, 0.5)


def export_dir(tmp_path_factory, checkpoint: pathlib.Path) -> pathlib.Path:
    """The folder of ``sentryfuse export`` for ``checkpoint`` (all subsets x BUDGETS), made once."""
    out = tmp_path_factory.getbasetemp() / 'onnx_export'
    if (out / 'manifest.json').is_file():
        return out
    import torch

    from sentryfuse_ros.core.runtime.export import export_checkpoint
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        export_checkpoint(checkpoint, out, budgets=BUDGETS)
    finally:
        torch.set_num_threads(threads)
    return out
