"""``sdsd.enhance`` attacked as a hostile user would: outputs that alias their inputs through links, outputs the run
did not write, list files in other encodings, and whole archives under ``torchrun`` with unequal shares and a
worker killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_video import make_frames, make_video

from sdsd import archive as arc
from sdsd.archs import build_network
from sdsd.enhance import main
from sdsd.errors import UserError
from sdsd.video import read_frames

TINY = {"nf": 8, "nframes": 5, "groups": 2, "front_RBs": 1, "back_RBs": 1}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def clips(tmp_path):
    """Three short videos in ``clips/`` and two tiny checkpoints (different weights)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for k, n in enumerate((3, 4, 5)):
        make_video(str(folder / f"clip{k}.mp4"), make_frames(n, 32, 48, seed=k), audio=None)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"tiny{seed}_G.pth"
        torch.save(build_network(TINY).state_dict(), path)
        paths.append(str(path))
    return folder, paths


#: The runtime, fixed where a test is about the archive, not about the choice `auto` makes (tests/test_runtimes.py).
FIXED = ("--runtime", "torch", "--precision", "fp32")


def run(*argv: str) -> int:
    try:
        return main([*argv, "--device", "cpu", "--quiet"])
    except SystemExit as exc:  # cli_main turns a UserError into exit status 2
        return exc.code


def count(path) -> int:
    return sum(1 for _ in read_frames(str(path)))


def snapshot(folder) -> dict[str, bytes]:
    return {p: open(os.path.join(folder, p), "rb").read() for p in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, p))}


# -- 1. an output that is its own input -----------------------------------------------------------------------------


def test_output_through_a_symlink_to_the_input_is_refused(clips, tmp_path, capsys):
    folder, (model, _) = clips
    before = snapshot(folder)
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert run(str(folder / "clip0.mp4"), "-o", str(link / "clip0.mp4"), "--model", model) == 2
    assert "is the input" in capsys.readouterr().err
    hard = tmp_path / "hard.mp4"
    os.link(folder / "clip1.mp4", hard)
    assert run(str(hard), "-o", str(folder / "clip1.mp4"), "--model", model) == 2
    assert snapshot(folder) == before


def test_frame_folder_output_aliasing_or_holding_the_input_is_refused(clips, tmp_path, capsys):
    folder, (model, _) = clips
    frames = tmp_path / "work" / "frames"
    frames.mkdir(parents=True)
    for i, img in enumerate(make_frames(3, 32, 48)):
        import cv2

        cv2.imwrite(str(frames / f"{i:06d}.png"), img[:, :, ::-1])
    before = snapshot(frames)
    (tmp_path / "frames_link").symlink_to(frames)
    for out in (tmp_path / "frames_link", frames / "sub", tmp_path / "work"):
        assert run(str(frames), "-o", str(out), "--model", model) == 2, out
    err = capsys.readouterr().err
    assert "is the input" in err and "inside the input folder" in err and "holds the input" in err
    assert snapshot(frames) == before and sorted(os.listdir(tmp_path / "work")) == ["frames"]


def test_archive_into_its_own_input_folder_is_refused(clips, tmp_path, capsys):
    folder, (model, _) = clips
    before = snapshot(folder)
    (tmp_path / "alias").symlink_to(folder)
    for out in (folder, tmp_path / "alias", folder / "enhanced"):
        assert run(str(folder), "-o", str(out), "--model", model) == 2, out
    assert capsys.readouterr().err.count("inside the input folder") == 3
    listing = tmp_path / "list.txt"
    listing.write_text("clips/clip0.mp4\nclips/clip1.mp4\n")
    assert run(str(listing), "-o", str(tmp_path / "alias"), "--model", model) == 2
    assert "overwritten by its own output" in capsys.readouterr().err
    assert snapshot(folder) == before and not (folder / "summary.json").exists()


# -- 4. resume trusts only outputs finished by this job ------------------------------------------------------------


def test_resume_redoes_a_preview_or_another_models_output(clips, tmp_path, capsys):
    folder, (model, other) = clips
    out = tmp_path / "out"
    assert run(str(folder), "-o", str(out), "--model", model, "--max-frames", "2", *FIXED) == 0
    assert [count(out / f"clip{k}.mp4") for k in range(3)] == [2, 2, 2]
    capsys.readouterr()
    assert run(str(folder), "-o", str(out), "--model", model, *FIXED) == 0  # the previews are not the job asked for
    err = capsys.readouterr().err
    assert err.count("it was made with other settings (--max-frames)") == 3
    assert [count(out / f"clip{k}.mp4") for k in range(3)] == [3, 4, 5]
    stamps = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n.endswith(".mp4")}
    assert run(str(folder), "-o", str(out), "--model", model, *FIXED) == 0
    assert "0 done, 3 skipped (finished earlier), 0 failed" in capsys.readouterr().out
    assert {n: os.stat(out / n).st_mtime_ns for n in stamps} == stamps
    assert run(str(folder), "-o", str(out), "--model", other, *FIXED) == 0
    assert capsys.readouterr().err.count("made with another checkpoint") == 3
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["files"]] == ["done"] * 3


def test_a_file_the_job_did_not_write_is_refused_not_overwritten(clips, tmp_path, capsys):
    folder, (model, _) = clips
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip1.mp4").write_bytes(b"my own edit of clip 1")
    assert run(str(folder), "-o", str(out), "--model", model) == arc.EXIT_FAILED_INPUTS
    captured = capsys.readouterr()
    assert "clip1.mp4 exists and was not written by this archive job" in captured.err
    assert (out / "clip1.mp4").read_bytes() == b"my own edit of clip 1"
    assert "3 inputs: 2 done, 0 skipped (finished earlier), 1 failed" in captured.out
    # An output this job wrote and someone changed afterwards is not redone either.
    with open(out / "clip0.mp4", "ab") as f:
        f.write(b"appended by hand")
    os.remove(out / "clip1.mp4")
    assert run(str(folder), "-o", str(out), "--model", model) == arc.EXIT_FAILED_INPUTS
    assert "clip0.mp4 was changed after sdsd.enhance wrote it" in capsys.readouterr().err
    assert count(out / "clip1.mp4") == 4
    # A summary.json that is not ours is not replaced.
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text("my notes")
    assert run(str(folder), "-o", str(other), "--model", model) == 2
    assert (other / "summary.json").read_text() == "my notes"


# -- 13. list files -------------------------------------------------------------------------------------------------


def test_list_files_in_other_encodings(clips, tmp_path):
    folder, _ = clips
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfclips/clip0.mp4\n")
    assert arc.archive_inputs([str(bom)]) == [str(folder / "clip0.mp4")]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("clips/caf\u00e9.mp4\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin.txt: the list is not UTF-8 text \(byte 0xe9 at offset 9\)"):
        arc.archive_inputs([str(latin)])
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="pipe.mp4 is not a regular file or folder"):
        arc.archive_inputs([str(folder / "clip0.mp4"), str(fifo)])


def test_exit_codes_are_documented_and_distinct():
    assert sorted(arc.EXIT_CODES) == [0, 1, 2, 3, 130] and len(set(arc.EXIT_CODES.values())) == 5
    assert arc.EXIT_FAILED_INPUTS == 3


# -- 6. torchrun: a shared queue, nobody waits ----------------------------------------------------------------------


def _torchrun(args: list[str], cwd, timeout_s: int = 3, **popen) -> list[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", SDSD_DIST_TIMEOUT_S=str(timeout_s),
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "codes"), REPO, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sdsd.enhance", *args, "--device", "cpu", "--quiet"]
    return cmd, dict(cwd=str(cwd), env=env, **popen)


@pytest.mark.soak
def test_torchrun_unequal_shares_under_a_short_timeout(tmp_path):
    """One long clip and four short ones on two processes, with every store request and collective limited to
    3 s: the process with the long clip finishes many seconds after the other, and nothing times out."""
    folder = tmp_path / "clips"
    folder.mkdir()
    make_video(str(folder / "a_long.mp4"), make_frames(400, 64, 96, seed=9), audio=None)
    for k in range(4):
        make_video(str(folder / f"short{k}.mp4"), make_frames(3, 32, 48, seed=k), audio=None)
    torch.manual_seed(0)
    torch.save(build_network(TINY).state_dict(), tmp_path / "tiny_G.pth")
    out = tmp_path / "out"
    cmd, kw = _torchrun([str(folder), "-o", str(out), "--model", str(tmp_path / "tiny_G.pth")], tmp_path)
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = {os.path.basename(r["input"]): r for r in summary["files"]}
    assert [r["status"] for r in rows.values()] == ["done"] * 5 and summary["world_size"] == 2
    long_rank = rows["a_long.mp4"]["rank"]
    # The other process took every short clip while the long one ran, and the long one took longer than the
    # timeout more than the short ones together: the old design (a gather at the end) failed here.
    assert all(rows[f"short{k}.mp4"]["rank"] != long_rank for k in range(4))
    shorts = sum(rows[f"short{k}.mp4"]["seconds"] for k in range(4))
    assert rows["a_long.mp4"]["seconds"] > shorts + 3, (rows, time.monotonic() - start)
    assert done.stdout.count("5 inputs: 5 done") == 1
    assert sorted(os.listdir(out)) == [arc.RECORD_FOLDER, "a_long.mp4", *[f"short{k}.mp4" for k in range(4)],
                                       "summary.json"]
    assert count(out / "a_long.mp4") == 400


@pytest.mark.soak
def test_torchrun_worker_killed_then_rerun_finishes_each_output_once(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    lengths = {f"clip{k}.mp4": n for k, n in enumerate((40, 40, 40, 40, 40, 40))}
    for k, (name, n) in enumerate(lengths.items()):
        make_video(str(folder / name), make_frames(n, 48, 64, seed=k), audio=None)
    torch.manual_seed(0)
    torch.save(build_network(TINY).state_dict(), tmp_path / "tiny_G.pth")
    out = tmp_path / "out"
    args = [str(folder), "-o", str(out), "--model", str(tmp_path / "tiny_G.pth")]
    cmd, kw = _torchrun(args, tmp_path, timeout_s=60, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(cmd, **kw)
    records = out / arc.RECORD_FOLDER
    victim = None
    deadline = time.monotonic() + 240
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        done_any = False
        pending = []
        for name in os.listdir(records) if records.is_dir() else []:
            try:
                rec = json.loads((records / name).read_text())
            except (OSError, ValueError):
                continue
            done_any |= rec["state"] == "done"
            if rec["state"] == "pending":
                pending.append(rec["pid"])
        if done_any and pending:
            victim = pending[0]
    assert victim is not None, "no worker was caught in the middle of a file"
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    finished = {n: os.stat(out / n).st_mtime_ns for n in lengths if arc.read_record(str(out / n)) and
                arc.read_record(str(out / n))["state"] == "done"}
    assert 0 < len(finished) < len(lengths)
    cmd, kw = _torchrun(args, tmp_path, timeout_s=60)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    status = {os.path.basename(r["input"]): r["status"] for r in summary["files"]}
    assert {n for n, s in status.items() if s == "skipped"} == set(finished)
    assert {n for n, s in status.items() if s == "done"} == set(lengths) - set(finished)
    assert {n: os.stat(out / n).st_mtime_ns for n in finished} == finished  # finished once, not again
    assert {n: count(out / n) for n in lengths} == lengths
    leftovers = [os.path.join(r, n) for r, ds, fs in os.walk(tmp_path) for n in ds + fs if ".sdsd-" in n
                 and n != arc.RECORD_FOLDER]
    assert leftovers == []
