"""torchrun on the CPU: 2 processes with the global batch split in two equal 1 process with the whole batch."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from test_train import load, make_options, write_options

from sdsd.training import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def env():
    out = dict(os.environ, OMP_NUM_THREADS="1")
    out.pop("WORLD_SIZE", None)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, cwd=REPO, timeout=240):
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def log_text(exp):
    return "".join(open(os.path.join(exp, f)).read() for f in sorted(os.listdir(exp)) if f.endswith(".log"))


@pytest.mark.soak  # multi-process: `make soak`
def test_torchrun_two_processes_equal_one_process(tmp_path):
    opt = make_options(tmp_path, name="ddp", niter=3)
    opt["datasets"].pop("val")
    path = write_options(tmp_path, opt)
    run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "train.py", "-opt", path])
    exp = tmp_path / "experiments" / "ddp"
    log = log_text(exp)
    assert "world size 2" in log and "batch 2 per process (global 4)" in log
    assert "weights identical on all 2 ranks" in log

    single = train(load(tmp_path, {**opt, "name": "single"}), progress=False)
    a = torch.load(exp / "models" / "latest_G.pth", weights_only=True)
    b = torch.load(single["latest_G"], weights_only=True)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert set(a) == set(b)
