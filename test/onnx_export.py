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


INT8_SUBSETS = ('camera', 'lidar+audio')   # a single-sensor subset and one with the log-mel front end
INT8_CHECK_SAMPLES = 100


def int8_export_dir(tmp_path_factory, checkpoint: pathlib.Path) -> pathlib.Path:
    """The folder of `sentryfuse export --precision int8` for ``checkpoint`` (INT8_SUBSETS x BUDGETS), made once.

    Made through the command line; its stdout is kept in ``cli_output.txt`` beside the folder.
    """
    out = tmp_path_factory.getbasetemp() / 'onnx_export_int8'
    if (out / 'manifest.json').is_file():
        return out
    import contextlib
    import io

    import torch

    from sentryfuse_ros import cli
    threads = torch.get_num_threads()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            code = cli.main(['export', '--checkpoint', str(checkpoint), '--out', str(out), '--precision', 'int8',
                             '--subsets', *INT8_SUBSETS, '--budgets', *map(str, BUDGETS),
                             '--check-samples', str(INT8_CHECK_SAMPLES)])
    finally:
        torch.set_num_threads(threads)
    (out.parent / 'cli_output.txt').write_text(printed.getvalue())
    if code != 0:
        raise RuntimeError(f'sentryfuse export --precision int8 exited {code}: {printed.getvalue()}')
    return out
