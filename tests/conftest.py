"""Test-suite settings.

The tests use tiny networks, where one thread is as fast as two; more threads than free cores make oneDNN's
spinning workers collide (measured: 20x slower on a loaded 2-core machine). Subprocesses inherit the setting.
"""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Exported models and remembered runtime choices go to a fresh folder for the session, never the user's
# ~/.cache/sdsd: what a test measures must not depend on what an earlier run left there.
os.environ["SDSD_CACHE"] = tempfile.mkdtemp(prefix="sdsd-test-cache-")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


import signal  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_sigchld_handler_between_tests():
    """Put SIGCHLD back to its default after each test.

    A DataLoader with worker processes installs a Python SIGCHLD handler in this process (once per process,
    ``torch.utils.data._utils.signal_handling``). From then on every child that exits — and the suite starts
    hundreds of subprocesses — is delivered as a signal with a handler frame; after a few hundred tests the
    kernel could no longer set up that frame and the whole pytest process died with a SIGSEGV (``si_code``
    SI_KERNEL, in ``waitpid`` of an unrelated subprocess test), in 3 of 5 full runs on 2026-12-03. The next
    DataLoader that needs the handler installs it again.
    """
    yield
    if signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, None):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        from torch.utils.data._utils import signal_handling

        signal_handling._SIGCHLD_handler_set = False
