"""The body of the installed node executables (scripts/perception, ...): Ctrl-C (SIGINT) or SIGTERM
ends a node with exit 0 and no traceback at any moment, not only while it spins.

Start-up runs C++ that calls back into Python for seconds (``import torch``, ``rclpy.init``, node
construction, the perception node's prebuild). A KeyboardInterrupt raised there crosses a pybind11
boundary and can end the process in ``std::terminate`` (rc -6, "terminate called after throwing an
instance of 'pybind11::error_already_set'"); no ``except`` can catch that. So SIGINT never raises:
:class:`InterruptRecorder` only records the request, and the start-up path checks it at safe points
(after the import here, after ``rclpy.init`` and after the node's construction in
``common.run_node``) and returns 0. Once rclpy.init has run, rclpy's own SIGINT handler (which
chains to the recorder) shuts the context down, which ends the spin (ExternalShutdownException).

Only the standard library is imported here, so the recorder is in place before anything heavy loads.
"""
import importlib
import signal
import threading


class InterruptRecorder:
    """A SIGINT handler that records the request and raises nothing.

    Install it with :func:`interrupt_recorder`; ``requested`` turns True at the first SIGINT."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame) -> None:
        self.requested = True


def interrupt_recorder() -> InterruptRecorder:
    """The InterruptRecorder handling SIGINT and SIGTERM in this process, installed now if another
    handler (Python's default KeyboardInterrupt for SIGINT, the default "terminate" for SIGTERM,
    which ended a node still importing torch with -15) is in place. Outside the main thread, where
    no handler can be installed, a recorder that never fires is returned."""
    current = signal.getsignal(signal.SIGINT)
    if isinstance(current, InterruptRecorder):
        return current
    recorder = InterruptRecorder()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, recorder)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, recorder)
    return recorder


def run(module: str, args=None) -> int:
    """Import ``module`` and return ``module.main(args)``; a Ctrl-C anywhere (while importing,
    initialising, spinning or cleaning up, a second Ctrl-C included) returns 0."""
    try:
        stop = interrupt_recorder()
        main = importlib.import_module(module).main
        if stop.requested:
            return 0
        return main(args)
    except KeyboardInterrupt:  # a SIGINT between interpreter start and the recorder's installation
        return 0
    finally:
        _ignore_further_interrupts()


def _ignore_further_interrupts() -> None:
    """Stopping: a further Ctrl-C (a terminal's, then ros2 launch's) has nothing left to stop.
    A SIGINT already pending is raised on the way in when the default handler is still in
    place; retry until it is ignored."""
    while True:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        except KeyboardInterrupt:
            continue
