"""SIGTERM handled like Ctrl-C, so that a terminated run unwinds (removing its temporary files) as an interrupted one.

``torchrun`` stops the surviving workers of a failed group with SIGTERM, and so do job schedulers and ``kill``. By
default SIGTERM ends a Python process at once: ``finally`` blocks and ``except BaseException`` clean-ups do not run,
so an atomic write in progress leaves its hidden temporary file behind. Inside :func:`sigterm_as_interrupt` SIGTERM
raises :class:`Terminated` (a :class:`KeyboardInterrupt`) instead, which takes exactly the path of Ctrl-C: the
temporary file of an interrupted atomic write is removed, the loggers are closed, and ``cli_main`` prints
``interrupted`` and exits with status 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM inside :func:`sigterm_as_interrupt`."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum, frame):  # noqa: ARG001 - the signal-handler signature
    raise Terminated(signum)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; the old handler is restored after.

    A no-op outside the main thread (Python only lets the main thread install signal handlers) and when SIGTERM is
    ignored (``SIG_IGN``: whoever started us asked for it to be ignored).

    Example::

        with sigterm_as_interrupt():
            train(opt)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
