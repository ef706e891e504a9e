"""``python -m sdsd.enhance`` end to end on real videos/frame folders made in the test (tiny network, CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from test_video import make_frames, make_video, probe

from sdsd.archs import build_network
from sdsd.data.windows import index_generation
from sdsd.enhance import main
from sdsd.inference import pad_to_multiple
from sdsd.options import published_network
from sdsd.video import read_frames

TINY = {"nf": 8, "nframes": 5, "groups": 2, "front_RBs": 1, "back_RBs": 1}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A freshly built tiny network and its checkpoint (a plain state_dict, as published)."""
    torch.manual_seed(0)
    net = build_network(TINY).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny_G.pth"
    torch.save(net.state_dict(), path)
    return net, str(path)


#: A fixed runtime, for tests about something other than the choice `auto` makes (tests/test_runtimes.py).
FIXED = ("--runtime", "torch", "--precision", "fp32")


def run_cli(*args: str) -> int:
    return main([*map(str, args), "--device", "cpu", "--quiet"])


def final_line(out: str) -> str:
    return [ln for ln in out.splitlines() if ln.startswith("enhanced ")][-1]


@torch.no_grad()
def plain_forward_uint8(net, frames: list[np.ndarray]) -> np.ndarray:
    n, (h, w) = len(frames), frames[0].shape[:2]
    x = pad_to_multiple(torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]))
    out = [net(x[index_generation(i, n, 5)][None])[0][0, :, :h, :w] for i in range(n)]
    return torch.stack(out).clamp(0, 1).mul(255).round().permute(0, 2, 3, 1).numpy()


def read_pngs(folder) -> list[np.ndarray]:
    return [cv2.imread(os.path.join(folder, n))[:, :, ::-1] for n in sorted(os.listdir(folder))]


def test_video_in_video_out_keeps_frames_size_rate_and_audio(tiny, tmp_path, capsys):
    src = make_video(str(tmp_path / "in.mp4"), make_frames(10, 48, 64), fps=24, audio="aac")
    out = tmp_path / "out.mp4"
    assert run_cli(src, "-o", out, "--model", tiny[1]) == 0
    assert probe(str(out)) == {"width": 64, "height": 48, "fps": 24, "audio": ["aac"], "frames": 10}
    line = final_line(capsys.readouterr().out)
    assert re.fullmatch(r"enhanced 10 frames in [\d.]+ s \([\d.]+ frames/s\), peak memory \d+ MiB -> .*out\.mp4", line)
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mp4"]


def test_odd_size_video_with_mp2_audio(tiny, tmp_path):
    src = make_video(str(tmp_path / "in.mkv"), make_frames(10, 138, 170), fps=30, audio="mp2")
    out = tmp_path / "out.mkv"
    assert run_cli(src, "-o", out, "--model", tiny[1], "--runtime", "torch", "--precision", "fp32") == 0
    info = probe(str(out))
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (170, 138, 10, 30)
    assert info["audio"] == ["mp2"]


def test_frame_folder_in_png_folder_out_equals_plain_windowed_forward(tiny, tmp_path):
    net, ckpt = tiny
    frames = make_frames(10, 48, 64, seed=1)
    src = tmp_path / "frames"
    src.mkdir()
    for i, f in enumerate(frames):
        np.save(src / f"{i:03d}.npy", np.ascontiguousarray(f[:, :, ::-1]))  # BGR on disk, as the SDSD data
    out = tmp_path / "enhanced"
    assert run_cli(src, "-o", out, "--model", ckpt, "--batch", 2) == 0
    got = np.stack(read_pngs(out)).astype(np.float64)
    assert sorted(os.listdir(out))[0] == "000000.png" and got.shape == (10, 48, 64, 3)
    # PNG is lossless: the file output is the un-streamed protocol rounded to uint8 (float rounding: <= 1).
    assert np.abs(got - plain_forward_uint8(net, frames)).max() <= 1

    video = tmp_path / "from_frames.mp4"
    assert run_cli(src, "-o", video, "--model", ckpt, "--fps", 12) == 0
    info = probe(str(video))
    assert (info["frames"], info["fps"], info["width"], info["height"], info["audio"]) == (10, 12, 64, 48, [])


def test_video_in_png_folder_out_compare_and_max_frames(tiny, tmp_path):
    frames = make_frames(10, 48, 64, seed=2)
    src = make_video(str(tmp_path / "in.mp4"), frames, audio=None)
    out = tmp_path / "cmp"
    out.mkdir()  # an existing folder also means PNG output
    assert run_cli(src, "-o", out, "--model", tiny[1], "--compare", "--max-frames", 4,
                   "--tile", 48, "--tile-overlap", 16) == 0
    pngs = read_pngs(out)
    assert len(pngs) == 4 and pngs[0].shape == (48, 128, 3)
    decoded = list(read_frames(src, max_frames=4))
    for png, inp in zip(pngs, decoded):
        np.testing.assert_array_equal(png[:, :64], inp)


def test_opt_file_network(tiny, tmp_path, capsys):
    frames = tmp_path / "f"
    frames.mkdir()
    for i, f in enumerate(make_frames(3, 32, 32)):
        cv2.imwrite(str(frames / f"{i}.png"), f[:, :, ::-1])
    good = tmp_path / "tiny.yml"
    good.write_text(yaml.safe_dump({"network_G": {"which_model_G": "denoise_illumination_enhance", **TINY}}))
    assert run_cli(frames, "-o", tmp_path / "o1", "--model", tiny[1], "--opt", good) == 0
    assert len(os.listdir(tmp_path / "o1")) == 3
    published = tmp_path / "published.yml"
    published.write_text(yaml.safe_dump({"network_G": published_network()}))
    with pytest.raises(SystemExit) as exc:
        run_cli(frames, "-o", tmp_path / "o2", "--model", tiny[1], "--opt", published)
    assert exc.value.code == 2 and "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def _bad_cases(tmp_path, ckpt):
    """(name, argv) of every bad-input case; files they need are created under tmp_path/in."""
    d = tmp_path / "in"
    d.mkdir()
    (d / "text.mp4").write_text("not a video at all")
    (d / "empty").mkdir()
    (d / "afile").write_text("x")
    (d / "junk.pth").write_bytes(b"\x00junk")
    torch.save({"weight": torch.zeros(3)}, d / "other.pth")
    tiny_frames = d / "tiny_frames"
    tiny_frames.mkdir()
    for i in range(3):
        np.save(tiny_frames / f"{i}.npy", np.zeros((12, 40, 3), np.uint8))
    good = d / "good"
    good.mkdir()
    for i, f in enumerate(make_frames(2, 32, 32)):
        np.save(good / f"{i}.npy", f)
    out = tmp_path / "out" / "result.mp4"
    return {
        "non-video input": ([d / "text.mp4", "-o", out, "--model", ckpt], "as a video"),
        "missing input": ([d / "nope.mp4", "-o", out, "--model", ckpt], "not found"),
        "empty folder": ([d / "empty", "-o", out, "--model", ckpt], "no frames"),
        "unreadable checkpoint": ([good, "-o", out, "--model", d / "junk.pth"], "checkpoint"),
        "foreign checkpoint": ([good, "-o", out, "--model", d / "other.pth"], "not an SDSD-Net"),
        "missing checkpoint": ([good, "-o", out, "--model", d / "nope.pth"], "not found"),
        "unwritable output": ([good, "-o", d / "afile" / "x.mp4", "--model", ckpt], "cannot"),
        "unknown output extension": ([good, "-o", tmp_path / "out" / "x.png", "--model", ckpt], "extension"),
        "tiny resolution": ([tiny_frames, "-o", out, "--model", ckpt], "16 px"),
        "tile overlap": ([good, "-o", out, "--model", ckpt, "--tile", 32], "half"),
    }


@pytest.mark.parametrize("case", ["non-video input", "missing input", "empty folder", "unreadable checkpoint",
                                  "foreign checkpoint", "missing checkpoint", "unwritable output",
                                  "unknown output extension", "tiny resolution", "tile overlap"])
def test_bad_input_is_one_line_exit_2_and_no_output(tiny, tmp_path, capsys, case):
    argv, needle = _bad_cases(tmp_path, tiny[1])[case]
    (tmp_path / "out").mkdir()
    before = sorted(p for p in map(str, tmp_path.rglob("*")))
    with pytest.raises(SystemExit) as exc:
        run_cli(*argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert sorted(p for p in map(str, tmp_path.rglob("*"))) == before  # nothing written, no temp files left


def test_named_pretrained_model_missing_says_where_to_get_it(tmp_path, monkeypatch, capsys):
    if os.path.exists(os.path.join(REPO, "pretrain", "indoor_G.pth")):
        pytest.skip("the published indoor checkpoint is installed")
    monkeypatch.chdir(tmp_path)
    src = make_video(str(tmp_path / "in.mp4"), make_frames(2, 32, 32), audio=None)
    with pytest.raises(SystemExit):
        run_cli(src, "-o", tmp_path / "o.mp4", "--model", "indoor")
    err = capsys.readouterr().err
    assert "pretrain/indoor_G.pth" in err and "drive.google.com" in err
    assert sorted(os.listdir(tmp_path)) == ["in.mp4"]


def test_module_entry_point_in_a_subprocess(tiny, tmp_path):
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(os.urandom(2048))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([REPO, os.path.join(REPO, "codes"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "sdsd.enhance", str(bad), "-o", str(tmp_path / "o.mp4"),
                           "--model", tiny[1]], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert sorted(os.listdir(tmp_path)) == ["bad.mkv"]


def test_stale_temporary_files_of_a_killed_run_are_removed(tiny, tmp_path, capsys):
    """A SIGKILL leaves the hidden temporary output behind; the next run in that folder removes it once its process
    is gone, spares one a live process is writing, and never touches a file it did not make."""
    import subprocess
    import sys

    from sdsd.utils.io import temp_path_for

    src = make_video(str(tmp_path / "in.mp4"), make_frames(3, 32, 32), audio=None)
    made = subprocess.run([sys.executable, "-c", "import sys; from sdsd.utils.io import temp_path_for; "
                           "print(temp_path_for(sys.argv[1]))", str(tmp_path / "out.mp4")],
                          check=True, capture_output=True, text=True)
    old = tmp_path / os.path.basename(made.stdout.strip())  # its process has exited, as a killed one would
    fresh = temp_path_for(str(tmp_path / "other.mp4"))  # this live process may be writing it right now
    users = tmp_path / ".out.0123abcd.tmp.mp4"  # the old name pattern: a user's file, however old
    users.write_bytes(b"mine")
    os.utime(users, (1e9, 1e9))
    assert old.exists()
    assert run_cli(src, "-o", tmp_path / "out.mp4", "--model", tiny[1]) == 0
    assert not old.exists() and os.path.exists(fresh) and users.read_bytes() == b"mine"
    assert f"removed {old}" in capsys.readouterr().err


def test_report_measures_camera_and_flicker_without_changing_the_output(tiny, tmp_path, capsys):
    """``--report``: the input's camera and the output's temporal figures, printed and in an archive's summary;
    the output's bytes are those of a run without it (it only watches the frames)."""
    import json

    rng = np.random.default_rng(3)
    base = make_frames(8, 64, 80, seed=4)
    noisy = [np.clip(f.astype(np.float64) * 0.3 + rng.normal(0, 3, f.shape), 0, 255).astype(np.uint8) for f in base]
    src = make_video(str(tmp_path / "dark.mkv"), noisy, fps=10, audio=None)
    plain, measured = tmp_path / "plain", tmp_path / "measured"
    assert run_cli(src, "-o", plain, "--model", tiny[1], *FIXED) == 0
    capsys.readouterr()
    assert run_cli(src, "-o", measured, "--model", tiny[1], "--report", "--compare", *FIXED) == 0
    out = capsys.readouterr().out
    assert re.search(r"report: .*dark\.mkv: input noise std [0-9.e-]+ at its white level [0-9.]+", out), out
    assert re.search(r"^measured +8 +7 +[0-9.]+ +[0-9.]+$", out, flags=re.M), out  # 8 frames, 7 pairs
    # --compare writes input | enhanced; the enhanced half equals the plain run's frames.
    assert np.array_equal(np.stack(read_pngs(measured))[:, :, 80:], np.stack(read_pngs(plain)))
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mkv", "b.mkv"):
        os.link(src, clips / name)
    assert run_cli(clips, "-o", tmp_path / "archive", "--model", tiny[1], "--report", *FIXED) == 0
    rows = json.loads((tmp_path / "archive" / "summary.json").read_text())["files"]
    assert [r["report"]["temporal"]["pairs"] for r in rows] == [7, 7]
    assert all(r["report"]["input_camera"]["frames_read"] == 2 for r in rows)  # every 4th of 8 frames
