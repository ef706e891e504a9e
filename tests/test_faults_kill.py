"""Fault injection with real processes: kill -9 twenty times, SIGTERM under torchrun, a disk that fills up.

Every interrupted run is continued with ``--auto_resume`` and must end with weights bit-identical to those of an
uninterrupted run of the same seed. The runs use one training iteration per epoch (4 windows, batch 4) and a
checkpoint every iteration, so that every checkpoint is an epoch boundary, where a resume is exact.

Each test prints its figures (run pytest with ``-s`` to see them).
"""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train import load, make_data, make_options, write_options
from test_train_dist import REPO, TORCHRUN, env

from sdsd.errors import UserError
from sdsd.training import train
from sdsd.training.checkpoint import all_files_loadable, check_pair, state_iterations
from sdsd.training.experiment import LOCK_NAME

pytestmark = pytest.mark.soak  # the whole file runs in `make soak`


def one_iteration_per_epoch(root, name, niter, **train_opts):
    """Scene pair1 (4 frames = 4 windows) trains, pair2 is held out; batch 4; a checkpoint every iteration."""
    if not os.path.isdir(os.path.join(root, "data")):
        make_data(root, scenes=2, frames=4)
    opt = make_options(root, name=name, niter=niter, **train_opts)
    opt["datasets"].pop("val")
    opt["datasets"]["train"]["testing_dir"] = "pair2"
    opt["use_tb_logger"] = False
    opt["logger"].update(print_freq=10, save_checkpoint_freq=1)
    return opt


def temps(folder):
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if ".tmp" in f]


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def identical(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def check_consistent(exp):
    """Every final file loads, every state has loadable weights: nothing partial at any kill."""
    assert all_files_loadable(str(exp)) == []
    for it in state_iterations(str(exp)):
        assert check_pair(str(exp), it) is None, check_pair(str(exp), it)


def wait_until(condition, proc, timeout):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.0005)
    return True


def newest_state(exp):
    its = state_iterations(str(exp))
    return its[-1] if its else 0


def test_kill9_twenty_times_then_auto_resume_equals_uninterrupted(tmp_path):
    # Long enough that twenty kills come before the end on a fast CPU too (60 ended before kill 16 on an
    # AVX-512 machine, 2026-12-03).
    niter = 300
    opt = one_iteration_per_epoch(tmp_path, "whole", niter, keep_last=2)
    reference = weights(train(load(tmp_path, opt), progress=False)["latest_G"])

    opt["name"] = "killed"
    path = write_options(tmp_path, opt, "killed.yml")
    exp = tmp_path / "experiments" / "killed"
    cmd = [sys.executable, "train.py", "-opt", path, "--auto_resume"]
    rng = random.Random(16)
    moments = ["anytime"] * 4 + ["after_progress"] * 8 + ["in_write"] * 8  # 20 kills
    rng.shuffle(moments)
    kills, in_write, before_first, started = 0, 0, 0, time.monotonic()
    for moment in moments:
        seen, old_temps = newest_state(exp), set(temps(exp))
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            if moment == "anytime":  # includes start-up, before any checkpoint of this attempt
                wait_until(lambda: False, proc, rng.uniform(0.0, 5.0))
            else:
                wait_until(lambda seen=seen: newest_state(exp) > seen, proc, 120)
                if moment == "after_progress":
                    wait_until(lambda: False, proc, rng.uniform(0.0, 0.8))
                else:  # the instant a checkpoint file is being written
                    wait_until(lambda: temps(exp / "models") or temps(exp / "training_state"), proc, 5)
            alive = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert alive, f"the run ended before kill {kills + 1}: {err[-2000:]}"
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        kills += 1
        in_write += bool(set(temps(exp)) - old_temps)  # this kill interrupted a write
        before_first += newest_state(exp) == 0
        check_consistent(exp)

    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    check_consistent(exp)
    assert temps(exp) == [] and not (exp / LOCK_NAME).exists()  # the left-over temporary files were cleared
    assert identical(weights(exp / "models" / "latest_G.pth"), reference)
    print(f"\nkill -9: {kills} kills survived ({in_write} inside a checkpoint write, {before_first} before the first "
          f"checkpoint), 1 of 1 runs ends with weights identical to the uninterrupted run "
          f"({time.monotonic() - started:.0f} s)")


def test_sigterm_under_torchrun_two_processes(tmp_path):
    niter = 24
    opt = one_iteration_per_epoch(tmp_path, "whole", niter)
    base = [*TORCHRUN, "--standalone", "--nproc_per_node", "2"]

    def launch(name, *extra):
        path = write_options(tmp_path, {**opt, "name": name}, f"{name}.yml")
        return subprocess.Popen([*base, "train.py", "-opt", path, *extra], cwd=REPO, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)

    whole = launch("whole")
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err[-3000:]
    reference = weights(tmp_path / "experiments" / "whole" / "models" / "latest_G.pth")

    exp = tmp_path / "experiments" / "termed"
    rng = random.Random(8)
    terms, in_write = 0, 0
    for target in ("agent", "rank0-in-write", "agent"):
        seen = newest_state(exp)
        agent = launch("termed", "--auto_resume")
        try:
            assert wait_until(lambda seen=seen: newest_state(exp) > seen, agent, 300), agent.stderr.read()[-3000:]
            pid = agent.pid
            if target == "agent":  # torchrun forwards SIGTERM to its workers
                wait_until(lambda: False, agent, rng.uniform(0.0, 1.0))
            else:  # what torchrun sends the surviving workers when one fails
                workers = [int(p) for p in open(f"/proc/{agent.pid}/task/{agent.pid}/children").read().split()]
                rank0 = [p for p in workers if "LOCAL_RANK=0\0" in open(f"/proc/{p}/environ").read()]
                pid = rank0[0]
                in_write += wait_until(lambda: temps(exp / "models") or temps(exp / "training_state"), agent, 5)
            assert agent.poll() is None
            os.kill(pid, signal.SIGTERM)
            _, err = agent.communicate(timeout=120)
        finally:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        assert agent.returncode != 0, err[-3000:]
        terms += 1
        # SIGTERM unwinds like Ctrl-C: no temporary file and no lock is left behind (before: both were).
        assert temps(exp) == [] and not (exp / LOCK_NAME).exists(), err[-3000:]
        check_consistent(exp)

    final = launch("termed", "--auto_resume")
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-3000:]
    check_consistent(exp)
    assert identical(weights(exp / "models" / "latest_G.pth"), reference)
    print(f"\nSIGTERM under torchrun (2 processes): {terms} terminations survived ({in_write} aimed at a write), final "
          "weights identical to the uninterrupted 2-process run")


def _unshare_works(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                              capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_disk_full_during_a_checkpoint_write(tmp_path):
    """A real full disk: the experiments folder is a tmpfs (in a private mount namespace) that holds one checkpoint
    and the weights of a second, but not its training state."""
    if shutil.which("unshare") is None or not _unshare_works(tmp_path):
        pytest.skip("needs `unshare -m` and tmpfs mounts (root or user namespaces)")
    opt = one_iteration_per_epoch(tmp_path, "probe", 1)
    out = train(load(tmp_path, opt), progress=False)
    models = tmp_path / "experiments" / "probe"
    w = os.path.getsize(models / "models" / "1_G.pth")
    s = os.path.getsize(models / "training_state" / "1.state")
    size_kib = (2 * w + s + s // 2) // 1024
    shutil.rmtree(tmp_path / "experiments")
    assert out["iteration"] == 1

    opt["name"] = "full"
    path = write_options(tmp_path, opt, "full.yml")
    experiments, after = tmp_path / "experiments", tmp_path / "after"
    experiments.mkdir()
    script = (f"mount -t tmpfs -o size={size_kib}k tmpfs {experiments} && "
              f"{sys.executable} train.py -opt {path} --set train.niter=3; rc=$?; "
              f"cp -a {experiments} {after}; exit $rc")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert last.startswith(f"error: could not write the checkpoint of iteration 2 in {experiments}/full: "), last
    assert f"the last checkpoint, {experiments}/full/training_state/1.state, is intact" in last
    exp = after / "full"
    assert sorted(os.listdir(exp / "training_state")) == ["1.state"]
    # The weights of 2 (and their statistics sidecar) without their state were removed.
    assert sorted(os.listdir(exp / "models")) == ["1_G.json", "1_G.pth"]
    assert temps(exp) == [] and not (exp / LOCK_NAME).exists()
    check_consistent(exp)
    resumed = train(load(tmp_path, opt, [f"path.experiments_root={exp}", "train.niter=2"]), auto_resume=True,
                    progress=False)
    assert f"resumed from {exp}/training_state/1.state" in open(resumed["log_file"]).read()
    print(f"\ndisk full: {last}")


def test_enospc_on_write_simulated(tmp_path, monkeypatch):
    """The same without a real small disk: the write of training_state/2.state fails with ENOSPC half-way."""
    opt = one_iteration_per_epoch(tmp_path, "tiny", 3)
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and ".2.state." in os.path.basename(f):
            with open(f, "wb") as handle:
                handle.write(b"PK\x03\x04 half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(UserError, match=r"could not write the checkpoint of iteration 2 in .*: No space left on device "
                                        r"\(errno ENOSPC\).*1.state, is intact") as err:
        train(load(tmp_path, opt), progress=False)
    assert "\n" not in str(err.value)
    exp = tmp_path / "experiments" / "tiny"
    assert sorted(os.listdir(exp / "training_state")) == ["1.state"]
    assert sorted(os.listdir(exp / "models")) == ["1_G.json", "1_G.pth"]
    assert temps(exp) == [] and not (exp / LOCK_NAME).exists()
    check_consistent(exp)
