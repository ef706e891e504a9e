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
