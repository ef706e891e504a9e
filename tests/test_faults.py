"""Fault paths of training and loading, one test per audited item (the kill/SIGTERM/ENOSPC runs: test_faults_kill).

Items: 1 experiment name, 2 keep_last with an older resume, 3 auto-resume only from complete loadable pairs,
4 non-strict loading, 7 scene names, 8 SIGTERM and stale temporary files, 10 the experiment lock, 11 the same failure
twice under torchrun restarts.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from test_train import load, make_options
from test_train_dist import REPO, TORCHRUN, env, log_text

import sdsd
from sdsd.archs import load_network, load_network_report
from sdsd.data import build_dataset
from sdsd.data.lmdb_backend import META_KEY
from sdsd.errors import UserError
from sdsd.evaluation.qualitative import output_paths
from sdsd.tools.make_lmdb import make_lmdb
from sdsd.training import train
from sdsd.training.checkpoint import all_files_loadable, find_latest_state
from sdsd.training.cli import RepeatedFailureError, check_repeated_failure, record_failure
from sdsd.training.experiment import LOCK_NAME, ExperimentLock
from sdsd.utils.io import remove_stale_temps


def quiet(tmp_path, name="tiny", niter=2, **train_opts):
    """Tiny options without validation or TensorBoard, a checkpoint every iteration."""
    opt = make_options(tmp_path, name=name, niter=niter, **train_opts)
    opt["datasets"].pop("val")
    opt["use_tb_logger"] = False
    opt["logger"]["save_checkpoint_freq"] = 1
    return opt


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def weights(folder):
    """The weight files of a models/ folder (each has a training-statistics sidecar ``<name>.json`` beside it)."""
    return [name for name in listing(folder) if not name.endswith(".json")]


# -- 1: the experiment name -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape", "/abs", "a\\b"])
def test_item1_name_must_be_one_folder_name(tmp_path, name):
    other = tmp_path / "experiments" / "other" / "models"
    other.mkdir(parents=True)
    (other / "5_G.pth").write_bytes(b"keep me")
    with pytest.raises(UserError, match=r": name is .*; allowed: one folder name without '/'") as err:
        train(load(tmp_path, quiet(tmp_path, name=name)), progress=False)
    assert "\n" not in str(err.value)
    # Before: name "" made <root>/experiments/ the experiment folder and archived it with every other experiment.
    assert listing(tmp_path / "experiments") == ["other"]
    assert (other / "5_G.pth").read_bytes() == b"keep me"


# -- 2: keep_last after resuming from an older state ---------------------------------------------------------------


def test_item2_resume_from_older_state_sets_newer_aside_and_keeps_what_it_writes(tmp_path):
    opt = quiet(tmp_path, niter=4)
    train(load(tmp_path, opt), progress=False)
    exp = tmp_path / "experiments" / "tiny"
    assert listing(exp / "training_state") == ["1.state", "2.state", "3.state", "4.state"]

    # Resume from 1 with keep_last 2, saving 2: before, pruning kept 3 and 4 and deleted the 2 it had just written
    # (and the 2 of the old line was overwritten); now 2, 3 and 4 of the old line are set aside first.
    out = train(load(tmp_path, opt, [f"path.resume_state={exp}/training_state/1.state", "train.niter=2",
                                     "train.keep_last=2"]), progress=False)
    assert listing(exp / "training_state") == ["1.state", "2.state"]
    assert weights(exp / "models") == ["1_G.pth", "2_G.pth", "latest_G.pth"]
    aside = [d for d in listing(exp) if d.startswith("set_aside_")]
    assert len(aside) == 1  # the abandoned line is kept, not deleted
    assert listing(exp / aside[0] / "training_state") == ["2.state", "3.state", "4.state"]
    assert weights(exp / aside[0] / "models") == ["2_G.pth", "3_G.pth", "4_G.pth"]
    assert listing(exp / aside[0] / "models") == ["2_G.json", "2_G.pth", "3_G.json", "3_G.pth", "4_G.json", "4_G.pth"]
    log = open(out["log_file"]).read()
    assert f"saved {exp}/training_state/2.state" in log and "moved the 6 newer weights/state files" in log
    assert all_files_loadable(str(exp)) == []

    # A later --auto_resume continues the new line (2), not the abandoned 4.
    again = train(load(tmp_path, opt, ["train.niter=3", "train.keep_last=2"]), auto_resume=True, progress=False)
    assert f"resumed from {exp}/training_state/2.state" in open(again["log_file"]).read()
    assert listing(exp / "training_state") == ["2.state", "3.state"]


# -- 3: --auto_resume picks the newest complete, loadable pair -----------------------------------------------------


def test_item3_auto_resume_skips_a_pair_with_corrupt_weights(tmp_path):
    opt = quiet(tmp_path, niter=3)
    train(load(tmp_path, opt), progress=False)
    exp = tmp_path / "experiments" / "tiny"
    (exp / "models" / "3_G.pth").write_bytes(b"\0" * 100)  # 3.state is fine, its weights are not
    assert find_latest_state(str(exp)) == str(exp / "training_state" / "2.state")
    out = train(load(tmp_path, opt, ["train.niter=4"]), auto_resume=True, progress=False)
    log = open(out["log_file"]).read()
    assert f"resumed from {exp}/training_state/2.state" in log
    assert out["iteration"] == 4
    aside = [d for d in listing(exp) if d.startswith("set_aside_")]
    assert all_files_loadable(str(exp)) == [str(exp / aside[0] / "models" / "3_G.pth")]  # kept as it was found


def test_item3_states_but_none_resumable_is_an_error_not_a_fresh_start(tmp_path):
    opt = quiet(tmp_path, niter=2)
    train(load(tmp_path, opt), progress=False)
    exp = tmp_path / "experiments" / "tiny"
    for it in (1, 2):
        (exp / "training_state" / f"{it}.state").write_bytes(b"truncated")
    with pytest.raises(UserError, match=r"--auto_resume: none of the 2 training states .* can be resumed") as err:
        train(load(tmp_path, opt), auto_resume=True, progress=False)
    assert "\n" not in str(err.value)
    # Before: the folder was archived and training restarted from iteration 0 with only warnings.
    assert listing(tmp_path / "experiments") == ["tiny"]
    assert weights(exp / "models") == ["1_G.pth", "2_G.pth", "latest_G.pth"]


def test_item3_no_state_at_all_starts_afresh_and_a_named_state_never_falls_back(tmp_path):
    opt = quiet(tmp_path, niter=2)
    exp = tmp_path / "experiments" / "tiny"
    (exp / "models").mkdir(parents=True)
    (exp / "train_0.log").write_text("killed before its first checkpoint\n")
    out = train(load(tmp_path, opt), auto_resume=True, progress=False)
    assert out["iteration"] == 2 and "resumed from" not in open(out["log_file"]).read()
    assert len([d for d in listing(tmp_path / "experiments") if d.startswith("tiny_archived_")]) == 1

    (exp / "models" / "2_G.pth").write_bytes(b"garbage")  # named explicitly: an error, no fall-back to 1
    with pytest.raises(UserError, match="2_G.pth: not a readable PyTorch checkpoint"):
        train(load(tmp_path, opt, [f"path.resume_state={exp}/training_state/2.state", "train.niter=3"]),
              progress=False)


# -- 4: non-strict loading of a checkpoint that matches nothing ----------------------------------------------------

TINY = {"nf": 8, "nframes": 5, "groups": 2, "front_RBs": 1, "back_RBs": 1}


def test_item4_non_strict_load_of_an_unrelated_checkpoint_fails(tmp_path):
    net = sdsd.build_network(TINY)
    n = len(net.state_dict())
    unrelated = tmp_path / "unrelated_G.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3), "head.bias": torch.zeros(3)}, unrelated)
    # Before: 108 keys missing, logged as a warning, and the random network was scored.
    with pytest.raises(UserError, match=rf"{n} of its {n} tensors are missing from the checkpoint \(first: "):
        load_network(net, str(unrelated), strict=False)

    from sdsd.inference import engine_from_options

    opt = {"network_G": TINY, "path": {"pretrain_model_G": str(unrelated), "strict_load": False}}
    with pytest.raises(UserError, match="are missing from the checkpoint"):
        engine_from_options(opt, torch.device("cpu"))

    extra = tmp_path / "extra_G.pth"
    torch.save({**net.state_dict(), "extra.weight": torch.zeros(1)}, extra)
    report = load_network_report(sdsd.build_network(TINY), str(extra), strict=False)
    assert report.counts() == {"loaded": n, "missing": 0, "unexpected": 1}
    with pytest.raises(UserError, match="1 unexpected keys, first: extra.weight"):
        load_network(sdsd.build_network(TINY), str(extra), strict=True)


# -- 7: scene names that would leave the results folder ------------------------------------------------------------


def test_item7_hostile_scene_names_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("GT", "input"):
        (tmp_path / sub / "a").mkdir(parents=True)
        for i in range(3):
            np.save(tmp_path / sub / "a" / f"{i:04d}.npy", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    roots = {}
    for sub in ("GT", "input"):
        roots[sub] = str(tmp_path / f"{sub}.lmdb")
        make_lmdb(str(tmp_path / sub), roots[sub], progress=False)
        env_ = lmdb.open(roots[sub], map_size=1 << 24)
        with env_.begin(write=True) as txn:
            meta = json.loads(bytes(txn.get(META_KEY)))
            meta["scenes"] = ["../../../../x"]
            meta["frames"] = {"../../../../x": meta["frames"]["a"]}
            txn.put(META_KEY, json.dumps(meta).encode())
        env_.close()
    block = {"mode": "video_samesize", "dataroot_GT": roots["GT"], "dataroot_LQ": roots["input"], "N_frames": 5,
             "padding": "new_info"}
    # Before: the dataset accepted it and qualitative_test.py wrote <results>/images/output/../../../../x.0-3.png.
    with pytest.raises(UserError, match=r"__meta__\): scene name '../../../../x' is not a plain folder name"):
        build_dataset(block, "test")
    for bad in ("../../x", "a/b", "..", "", "a\\b"):
        with pytest.raises(UserError, match="is not a plain folder name"):
            output_paths(str(tmp_path / "results"), bad, 0, 3)
    assert output_paths("r", "pair1", 0, 3)["output"] == os.path.join("r", "images", "output", "pair1.0-3.png")

    (tmp_path / "GT" / "b..c").mkdir()  # a folder listing is checked too
    (tmp_path / "input" / "b..c").mkdir()
    with pytest.raises(UserError, match=r"scene name 'b..c' is not a plain folder name"):
        build_dataset({**block, "dataroot_GT": str(tmp_path / "GT"), "dataroot_LQ": str(tmp_path / "input")}, "test")


# -- 8: SIGTERM like Ctrl-C, stale temporary files removed at start --------------------------------------------------


_SIGTERM_CHILD = """
import os, signal, time
from sdsd.utils.signals import Terminated, sigterm_as_interrupt
before = signal.getsignal(signal.SIGTERM)
try:
    with sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode
    print("no interrupt")
except KeyboardInterrupt as err:
    assert isinstance(err, Terminated) and err.signum == signal.SIGTERM, repr(err)
    assert signal.getsignal(signal.SIGTERM) is before
    print("interrupted, handler restored")
"""


def test_item8_sigterm_becomes_keyboard_interrupt_and_is_restored():
    # In a process of its own: signalling the pytest process itself was seen to kill it with a SIGSEGV late in a
    # full run (2026-12-04; not reproduced alone), which would hide every later result.
    done = subprocess.run([sys.executable, "-c", _SIGTERM_CHILD], capture_output=True, text=True, timeout=120,
                          env=env())
    assert done.returncode == 0 and done.stdout.strip() == "interrupted, handler restored", done.stderr[-2000:]


def test_item8_sigterm_to_train_py_cleans_up(tmp_path):
    """A real train.py gets SIGTERM while it writes checkpoints: exit 130, no temporary file and no lock remain."""
    from test_train import write_options

    opt = quiet(tmp_path, niter=400)
    path = write_options(tmp_path, opt)
    exp = tmp_path / "experiments" / "tiny"
    proc = subprocess.Popen([sys.executable, "train.py", "-opt", path], cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not os.path.exists(exp / "training_state" / "2.state"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.02)
        aim = time.monotonic() + 5
        while not [f for f in listing(exp / "models") if ".tmp" in f] and time.monotonic() < aim:
            time.sleep(0.0005)  # aim at a write in progress
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]  # before: killed by the signal (-15), its temporary file left behind
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    leftovers = [f for _, _, files in os.walk(exp) for f in files if ".tmp" in f or f == LOCK_NAME]
    assert leftovers == [] and all_files_loadable(str(exp)) == []


def test_item8_stale_temporary_files_are_removed_at_start(tmp_path):
    opt = quiet(tmp_path, niter=1)
    train(load(tmp_path, opt), progress=False)
    exp = tmp_path / "experiments" / "tiny"
    # Temporary files of a writer that died (a real process that has exited), as a kill -9 leaves them.
    made = subprocess.run([sys.executable, "-c", "import sys; from sdsd.utils.io import temp_path_for; "
                           "[print(temp_path_for(p)) for p in sys.argv[1:]]", str(exp / "models" / "2_G.pth"),
                           str(exp / "training_state" / "2.state")], check=True, capture_output=True, text=True)
    stale = [Path(line) for line in made.stdout.split()]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    # Files this program did not make survive, including ones named like the temporary files of older versions.
    mine = [exp / "models" / "notes.tmp", exp / "models" / ".hidden", exp / "training_state" / "x.tmp.state",
            exp / "models" / ".2_G.pth.k3j_x9a1.tmp.pth", exp / "training_state" / ".2.state.0abc_def.tmp.state"]
    for path in mine:
        path.write_text("not ours")
    out = train(load(tmp_path, opt, ["train.niter=2"]), auto_resume=True, progress=False)
    assert not any(p.exists() for p in stale)  # before: nothing ever removed them
    assert all(p.exists() for p in mine)
    assert "left by an interrupted write" in open(out["log_file"]).read()
    assert remove_stale_temps(str(exp / "nowhere")) == []


# -- 10: two runs with the same experiment name ---------------------------------------------------------------------


def test_item10_a_live_lock_stops_a_second_run(tmp_path):
    opt = quiet(tmp_path, niter=1)
    exp = tmp_path / "experiments" / "tiny"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from sdsd.training.experiment import ExperimentLock; "
         f"ExperimentLock({str(exp)!r}).acquire(); print('locked', flush=True); time.sleep(120)"],
        env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"is in use by another training run \(pid {holder.pid} on host "
                                            rf"{socket.gethostname()}") as err:
            train(load(tmp_path, opt), progress=False)
        assert "\n" not in str(err.value)
        assert listing(exp) == [LOCK_NAME]  # the second run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing (SIGKILL): its lock is taken over, with a warning; released at the end.
    out = train(load(tmp_path, opt), progress=False)
    assert out["iteration"] == 1 and not (exp / LOCK_NAME).exists()


def test_item10_stale_lock_taken_over_foreign_host_refused(tmp_path, caplog):
    folder = tmp_path / "exp"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (folder / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    with ExperimentLock(str(folder)) as lock:
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid() and lock.held
        with pytest.raises(UserError, match="in use by another training run"):
            ExperimentLock(str(folder)).acquire()  # a second lock in the same process conflicts too
    assert "taking over the stale lock" in caplog.text and not (folder / LOCK_NAME).exists()
    (folder / LOCK_NAME).write_text(json.dumps({"host": "elsewhere.example", "pid": 1}))
    with pytest.raises(UserError, match=r"locked by pid 1 on host elsewhere.example, which this host cannot check"):
        ExperimentLock(str(folder)).acquire()


# -- 11: the same failure twice under torchrun --max-restarts -----------------------------------------------------


def test_item11_records_compare_iteration_and_message(tmp_path, monkeypatch):
    exp = str(tmp_path)
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    for restart, it in ((0, 7), (1, 7)):
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(restart))
        record_failure(exp, 1, it, UserError("frame x.npy is corrupt"))
    check_repeated_failure(exp, 1)  # restart 1 has only one failure before it
    with pytest.raises(UserError, match=r"restart 2: the last two attempts failed the same way at iteration 7 "
                                        r"\(rank1: UserError: frame x.npy is corrupt\)"):
        check_repeated_failure(exp, 2)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    record_failure(exp, 1, 9, UserError("frame x.npy is corrupt"))  # a different place: restart again
    check_repeated_failure(exp, 3)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "3")
    record_failure(exp, 1, 9, UserError("frame x.npy is corrupt"))
    with pytest.raises(RepeatedFailureError, match="restart 4: .* at iteration 9") as err:
        check_repeated_failure(exp, 4)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "4")
    record_failure(exp, 0, None, err.value)  # the stop is recorded as such: every later restart stops too
    with pytest.raises(RepeatedFailureError, match="restart 5: .* at iteration 9"):
        check_repeated_failure(exp, 5)


@pytest.mark.soak  # multi-process: `make soak`
def test_item11_torchrun_stops_after_the_same_failure_twice(tmp_path):
    """A frame turns corrupt mid-run: attempt 0 fails, restart 1 resumes and fails at the same iteration, restart 2
    stops with one line instead of resuming again (before: every restart resumed and failed the same way)."""
    from test_train import write_options

    opt = quiet(tmp_path, niter=400)
    opt["datasets"]["train"]["batch_size"] = 16  # every window in every iteration (one iteration per epoch)
    path = write_options(tmp_path, opt)
    exp = tmp_path / "experiments" / "tiny"
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "1", "--max-restarts", "3", "train.py", "-opt", path]
    agent = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not os.path.exists(exp / "training_state" / "2.state"):
            assert agent.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        for sub in ("GT", "input"):  # the last frame of a training scene (not in the window read at start-up)
            with open(tmp_path / "data" / sub / "pair2" / "0005.npy", "wb") as f:
                f.write(b"\x93NUMPY garbage")
        _, err = agent.communicate(timeout=300)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode != 0
    assert "the last two attempts failed the same way at iteration" in err and "does not resume" in err
    assert log_text(exp).count("resumed from") == 1  # restart 1 resumed; restarts 2 and 3 did not
    records = json.loads((exp / ".failures" / "rank0.json").read_text())
    assert [r["restart"] for r in records] == [0, 1, 2, 3] and "stopped" in records[2] and "stopped" in records[3]
    assert records[0]["iteration"] == records[1]["iteration"] and records[0]["digest"] == records[1]["digest"]
