"""The original launch command (torch.distributed.launch --launcher pytorch) and two torchrun "nodes" on one host."""

import os
import subprocess
import sys

import pytest
from test_train import make_options, write_options
from test_train_dist import REPO, TORCHRUN, env, free_port, log_text, run


@pytest.mark.soak  # multi-process: `make soak`
def test_legacy_launch_command_runs_on_cpu(tmp_path):
    opt = make_options(tmp_path, name="legacy", niter=2)
    opt["datasets"].pop("val")
    path = write_options(tmp_path, opt)
    run([sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node", "1", "--master_port",
         str(free_port()), "train.py", "-opt", path, "--launcher", "pytorch"])
    exp = tmp_path / "experiments" / "legacy"
    assert os.path.isfile(exp / "models" / "latest_G.pth") and "world size 1" in log_text(exp)


@pytest.mark.soak
def test_two_nodes_rendezvous_on_localhost(tmp_path):
    opt = make_options(tmp_path, name="nodes", niter=2)
    opt["datasets"].pop("val")
    path = write_options(tmp_path, opt)
    port = free_port()
    cmd = [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
           f"127.0.0.1:{port}", "--rdzv-id", "sdsd-test", "train.py", "-opt", path]
    nodes = [subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outputs = [node.communicate(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    log = log_text(tmp_path / "experiments" / "nodes")
    assert "world size 2" in log and "weights identical on all 2 ranks" in log
