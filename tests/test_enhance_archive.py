"""``python -m sdsd.enhance`` on whole archives: many inputs, resumable, a bad file skipped, shared under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from test_video import make_frames, make_video

from sdsd.archs import build_network
from sdsd.enhance import archive_inputs, archive_outputs, main
from sdsd.errors import UserError
from sdsd.video import read_frames

TINY = {"nf": 8, "nframes": 5, "groups": 2, "front_RBs": 1, "back_RBs": 1}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def archive(tmp_path):
    """A folder of three short videos (3, 4 and 5 frames) and one broken file, and a tiny checkpoint."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for k, n in enumerate((3, 4, 5)):
        make_video(str(folder / f"clip{k}.mp4"), make_frames(n, 32, 48, seed=k), audio=None)
    (folder / "broken.mp4").write_bytes(b"\x00 not a video " * 50)
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny_G.pth"
    torch.save(build_network(TINY).state_dict(), checkpoint)
    return folder, str(checkpoint)


def frame_counts(folder) -> dict[str, int]:
    return {n: sum(1 for _ in read_frames(os.path.join(folder, n))) for n in sorted(os.listdir(folder))
            if n.endswith(".mp4")}


def test_folder_of_videos_resumes_and_skips_a_bad_file(archive, tmp_path, capsys):
    folder, checkpoint = archive
    out = tmp_path / "out"
    argv = [str(folder), "-o", str(out), "--model", checkpoint, "--device", "cpu", "--quiet"]
    assert main(argv) == 3  # one input failed
    captured = capsys.readouterr()
    assert "error: " in captured.err and "broken.mp4" in captured.err
    assert frame_counts(out) == {"clip0.mp4": 3, "clip1.mp4": 4, "clip2.mp4": 5}
    summary = json.loads((out / "summary.json").read_text())
    status = {os.path.basename(r["input"]): r["status"] for r in summary["files"]}
    assert status == {"broken.mp4": "failed", "clip0.mp4": "done", "clip1.mp4": "done", "clip2.mp4": "done"}
    assert all(r["runtime"] and r["precision"] and r["frames"] for r in summary["files"] if r["status"] == "done")
    assert "4 inputs: 3 done, 0 skipped (finished earlier), 1 failed" in captured.out
    # No temporary file is left behind, and a rerun skips every finished output.
    assert sorted(os.listdir(out)) == [".sdsd-archive", "clip0.mp4", "clip1.mp4", "clip2.mp4", "summary.json"]
    stamps = {n: os.stat(out / n).st_mtime_ns for n in ("clip0.mp4", "clip1.mp4", "clip2.mp4")}
    assert main(argv) == 3
    assert "0 done, 3 skipped (finished earlier), 1 failed" in capsys.readouterr().out
    assert {n: os.stat(out / n).st_mtime_ns for n in stamps} == stamps


def test_list_file_and_several_inputs(archive, tmp_path):
    folder, checkpoint = archive
    listing = tmp_path / "list.txt"
    listing.write_text("# two clips\nclips/clip0.mp4\n\nclips/clip2.mp4\n")
    assert archive_inputs([str(listing)]) == [str(tmp_path / "clips" / "clip0.mp4"),
                                              str(tmp_path / "clips" / "clip2.mp4")]
    assert main([str(listing), "-o", str(tmp_path / "a"), "--model", checkpoint, "--device", "cpu",
                 "--quiet"]) == 0
    assert frame_counts(tmp_path / "a") == {"clip0.mp4": 3, "clip2.mp4": 5}
    assert main([str(folder / "clip1.mp4"), str(folder / "clip2.mp4"), "-o", str(tmp_path / "b"), "--model",
                 checkpoint, "--device", "cpu", "--quiet"]) == 0
    assert frame_counts(tmp_path / "b") == {"clip1.mp4": 4, "clip2.mp4": 5}


def test_archive_mistakes_are_one_line_errors(archive, tmp_path):
    folder, _ = archive
    with pytest.raises(UserError, match="output folder"):
        archive_outputs([str(folder / "clip0.mp4"), str(folder / "clip1.mp4")], str(tmp_path / "x.mp4"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "clip0.mp4").write_bytes((folder / "clip0.mp4").read_bytes())
    with pytest.raises(UserError, match="would both write"):
        archive_outputs([str(folder / "clip0.mp4"), str(other / "clip0.mp4")], str(tmp_path / "o"))
    with pytest.raises(UserError, match="does not exist"):
        archive_inputs([str(folder / "clip0.mp4"), str(folder / "nope.mp4")])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(UserError, match="names no input"):
        archive_inputs([str(empty)])


@pytest.mark.soak  # multi-process: `make soak`
def test_torchrun_two_processes_share_the_archive(archive, tmp_path):
    folder, checkpoint = archive
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "codes"), REPO, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sdsd.enhance", str(folder), "-o", str(out), "--model", checkpoint, "--device", "cpu", "--quiet"]
    first = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    # A recorded input failure is no crash: the workers exit 0 (torchrun would otherwise stop the others and print
    # a traceback); the failure is in the summary, printed once, by the process that finished last.
    assert first.returncode == 0 and "broken.mp4" in first.stderr and "ChildFailedError" not in first.stderr
    assert first.stdout.count("4 inputs: 3 done, 0 skipped (finished earlier), 1 failed") == 1
    # Each output was written by exactly one process.
    assert sum(line.startswith("enhanced ") for line in first.stdout.splitlines()) == 3
    assert frame_counts(out) == {"clip0.mp4": 3, "clip1.mp4": 4, "clip2.mp4": 5}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["failed"] == 1
    second = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert "0 done, 3 skipped (finished earlier), 1 failed" in second.stdout
    assert not any(line.startswith("enhanced ") for line in second.stdout.splitlines())
