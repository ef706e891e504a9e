"""Test-suite settings.

The tests use tiny networks, where one thread is as fast as two; more threads than free cores make oneDNN's
spinning workers collide (measured: 20x slower on a loaded 2-core machine). Subprocesses inherit the setting.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
