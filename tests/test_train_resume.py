"""Faults: SIGKILL then --auto_resume, and torchrun --max-restarts resuming a killed worker by itself."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train import make_options, write_options
from test_train_dist import REPO, TORCHRUN, env, log_text

from sdsd.training.checkpoint import all_files_loadable


def wait_for(path, proc, timeout=180):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def options(tmp_path, name):
    opt = make_options(tmp_path, name=name, niter=12)
    opt["datasets"].pop("val")
    opt["logger"]["print_freq"] = 4
    return write_options(tmp_path, opt, f"{name}.yml")


@pytest.mark.soak
def test_sigkill_then_auto_resume_finishes(tmp_path):
    path = options(tmp_path, "killed")
    exp = tmp_path / "experiments" / "killed"
    cmd = [sys.executable, "train.py", "-opt", path]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(exp / "training_state" / "2.state", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not os.path.exists(exp / "models" / "latest_G.pth")

    done = subprocess.run([*cmd, "--auto_resume"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in log_text(exp)
    assert torch.load(exp / "training_state" / "12.state", weights_only=True)["iter"] == 12
    assert os.path.isfile(exp / "models" / "latest_G.pth")
    assert not [d for d in os.listdir(tmp_path / "experiments") if "archived" in d]  # resumed, not archived
    assert all_files_loadable(str(exp)) == []
    assert not [f for _, _, files in os.walk(exp) for f in files if f.endswith(".tmp.pth") or ".tmp." in f]


@pytest.mark.soak
def test_torchrun_restarts_a_killed_worker_which_resumes(tmp_path):
    path = options(tmp_path, "elastic")
    exp = tmp_path / "experiments" / "elastic"
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "1", "--max-restarts", "1", "train.py", "-opt", path]
    agent = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(exp / "training_state" / "2.state", agent)
        workers = children(agent.pid)
        assert workers, "torchrun has no worker process"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        _, err = agent.communicate(timeout=240)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err[-3000:]
    assert "resumed from" in log_text(exp)
    assert torch.load(exp / "training_state" / "12.state", weights_only=True)["iter"] == 12
    assert all_files_loadable(str(exp)) == []
