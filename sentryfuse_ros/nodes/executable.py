"""The body of the installed node executables (scripts/perception, ...): Ctrl-C ends a node with
exit 0 and no traceback at any moment, not only while it spins.

A node's module is imported inside the guard: the perception node imports torch for seconds,
and a Ctrl-C then used to print a KeyboardInterrupt traceback. Only the standard library is
imported here, so the guard is in place before anything heavy loads.
"""
import importlib
import signal


def run(module: str, args=None) -> int:
    """Import ``module`` and return ``module.main(args)``; a KeyboardInterrupt anywhere (while
    importing, initialising, spinning or cleaning up, a second Ctrl-C included) returns 0."""
    try:
        return importlib.import_module(module).main(args)
    except KeyboardInterrupt:
        return 0
    finally:
        _ignore_further_interrupts()


def _ignore_further_interrupts() -> None:
    """Stopping: a further Ctrl-C (a terminal's, then ros2 launch's) has nothing left to stop.
    A SIGINT already pending is raised on the way in; retry until it is ignored."""
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue
