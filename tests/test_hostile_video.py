"""Hostile inputs: damaged or truncated videos, FIFOs/sockets/devices given as inputs, and the sidecar tool given files
that are not checkpoints or sidecars. Every case is a real file; each ends in one ``UserError`` line (or a complete
result), never a silently short video, a hang or a replaced file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from test_enhance_cli import TINY, run_cli
from test_video import make_frames, make_video

from sdsd.archs import build_network
from sdsd.errors import UserError
from sdsd.video import open_source, read_frames

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODES = os.path.join(REPO, "codes")
FRAMES = 12


def remux(src: str, dst: str, options: dict | None = None, shift: int = 0) -> str:
    """Copy every packet of ``src`` into ``dst`` (its extension picks the container) with muxer ``options``; the
    video's timestamps are moved ``shift`` frames earlier (frames before 0 then lie outside an MP4 edit list)."""
    with av.open(src) as inp, av.open(dst, "w", options=options or {}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        step = {s.index: (1 / (s.average_rate * s.time_base) if s.type == "video" else 0) for s in inp.streams}
        for packet in inp.demux(*inp.streams):
            if packet.dts is None:
                continue
            offset = int(shift * step[packet.stream.index])
            packet.pts, packet.dts = packet.pts - offset, packet.dts - offset
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


def faststart_mp4(path: str, audio: str | None = None) -> str:
    """A 12-frame H.264 mp4 with its index (moov) before the frame data, as web and camera files have it."""
    plain = make_video(path + ".plain.mp4", make_frames(FRAMES, 48, 64), audio=audio)
    remux(plain, path, {"movflags": "faststart"})
    os.remove(plain)
    return path


def cut(path: str, dst: str, keep: int) -> str:
    """``dst`` holds the first ``keep`` bytes of ``path`` (a copy interrupted there)."""
    with open(path, "rb") as f:
        data = f.read(keep)
    with open(dst, "wb") as f:
        f.write(data)
    return dst


def video_packets(path: str) -> list[tuple[int, int]]:
    """``(byte offset, size)`` of each video packet of ``path``, in file order."""
    with av.open(path) as c:
        return sorted((p.pos, p.size) for p in c.demux(video=0) if p.size)


def decode_all(path: str) -> int:
    return sum(1 for _ in read_frames(path))


# -- (A) a damaged video is never silently shortened -------------------------------------------------------------


@pytest.mark.parametrize("audio", [None, "aac"])
@pytest.mark.parametrize("kept", [0.3, 0.6, 0.85, 0.97])
def test_truncated_faststart_mp4_raises_naming_the_frame_reached(tmp_path, audio, kept):
    """An mp4 whose index survives but whose frame data is cut (here at 30-97% of the video's data) declares 12
    frames; threaded decoding alone would end quietly after fewer (3 of 12 at 85%)."""
    src = faststart_mp4(str(tmp_path / "full.mp4"), audio)
    assert decode_all(src) == FRAMES
    packets = video_packets(src)
    start, end = packets[0][0], packets[-1][0] + packets[-1][1]
    bad = cut(src, str(tmp_path / "clip.mp4"), int(start + kept * (end - start)))
    with pytest.raises(UserError, match=r"clip\.mp4: .*(after frame \d+|first frame).*re-encode or repair it"):
        decode_all(bad)


def test_truncated_mp4_says_frames_reached_of_declared(tmp_path):
    """The shortfall message counts: the frames decoded and the 12 the index declares."""
    src = faststart_mp4(str(tmp_path / "full.mp4"))
    packets = video_packets(src)
    # Cut inside the 9th packet in file order: the decoder stops after the frames it could rebuild.
    bad = cut(src, str(tmp_path / "clip.mp4"), packets[8][0] + packets[8][1] // 2)
    with pytest.raises(UserError) as exc:
        decode_all(bad)
    message = str(exc.value)
    assert "\n" not in message and str(bad) in message
    assert "of the 12 its container declares" in message or "decoding failed after frame" in message
    shown = int(message.split("after frame ")[1].split()[0])
    assert 0 < shown < FRAMES


def test_mp4_cut_before_its_end_index_is_refused_on_opening(tmp_path):
    """A plain mp4 keeps its index at the end: cut anywhere in the frames, it has no index and does not open."""
    src = make_video(str(tmp_path / "full.mp4"), make_frames(FRAMES, 48, 64), audio=None)
    packets = video_packets(src)
    bad = cut(src, str(tmp_path / "clip.mp4"), packets[6][0])
    with pytest.raises(UserError, match=r"clip\.mp4"):
        open_source(bad)


def test_corrupted_frame_in_the_middle_raises_naming_the_frame_reached(tmp_path):
    src = faststart_mp4(str(tmp_path / "full.mp4"))
    pos, size = video_packets(src)[5]
    data = bytearray(open(src, "rb").read())
    data[pos:pos + size] = bytes((37 * i + 11) % 256 for i in range(size))
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"clip\.mp4: decoding failed after frame \d+ \(.*\); the file is damaged"):
        decode_all(str(bad))


def test_truncated_mkv_raises_but_one_missing_only_its_index_decodes_whole(tmp_path):
    """Matroska keeps no exact frame count; its header declares the file's size, so a cut is seen, and the track's
    duration tells whether frames were lost or only the index after them."""
    src = make_video(str(tmp_path / "full.mkv"), make_frames(FRAMES, 48, 64), audio=None)
    assert decode_all(src) == FRAMES
    packets = video_packets(src)
    for k in (3, 9):
        bad = cut(src, str(tmp_path / f"clip{k}.mkv"), packets[k][0] + packets[k][1] // 2)
        with pytest.raises(UserError, match=rf"clip{k}\.mkv: the file is truncated \(\d+ of the \d+ bytes .* the "
                                            r"video ends after frame \d+ at [\d.]+ s of the 0\.500 s it declares"):
            decode_all(bad)
    tail = cut(src, str(tmp_path / "tail.mkv"), os.path.getsize(src) - 4)
    assert decode_all(tail) == FRAMES


def test_legitimately_fewer_frames_than_declared_are_not_damage(tmp_path):
    """An mp4 with an edit list (a stream-copied cut) lists 12 samples but shows 9: not damage. An mkv's frame count
    is only an estimate; a complete one decodes without complaint (with audio too)."""
    src = make_video(str(tmp_path / "full.mp4"), make_frames(FRAMES, 48, 64), audio=None)
    edited = remux(src, str(tmp_path / "edited.mp4"), shift=3)
    with av.open(edited) as c:
        assert c.streams.video[0].frames == FRAMES
    assert decode_all(edited) == FRAMES - 3
    mkv = make_video(str(tmp_path / "sound.mkv"), make_frames(FRAMES, 48, 64), audio="pcm_s16le")
    assert decode_all(mkv) == FRAMES


def test_stopping_early_is_not_reported_as_short(tmp_path):
    """A reader that stops before the end (what --max-frames does) is never checked against the declared count."""
    src = faststart_mp4(str(tmp_path / "full.mp4"))
    packets = video_packets(src)
    bad = cut(src, str(tmp_path / "clip.mp4"), packets[8][0] + packets[8][1] // 2)
    assert len(list(read_frames(bad, max_frames=2))) == 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_G.pth"
    torch.save(build_network(TINY).eval().state_dict(), path)
    return str(path)


def test_enhance_refuses_a_truncated_mp4_and_leaves_no_output(tmp_path, ckpt, capsys):
    """The audited case: a truncated mp4 declaring 12 frames enhanced 3 and exited 0. Now: exit 2, one line naming
    the file, no output file; --max-frames 2 (fewer than survive) still works."""
    src = faststart_mp4(str(tmp_path / "full.mp4"))
    packets = video_packets(src)
    bad = cut(src, str(tmp_path / "clip.mp4"), packets[8][0] + packets[8][1] // 2)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        run_cli(bad, "-o", out / "clip.mp4", "--model", ckpt)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "clip.mp4" in err[0], err
    assert "after frame" in err[0]
    assert not out.exists() or os.listdir(out) == []
    assert run_cli(bad, "-o", out / "two.mp4", "--model", ckpt, "--max-frames", 2) == 0
    assert decode_all(str(out / "two.mp4")) == 2


# -- (B) FIFOs, sockets and devices are refused without being opened ---------------------------------------------


def run_isolated(code: str, timeout: float = 20, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python (which a blocking open cannot take the test suite down with); a hang fails the
    test after ``timeout`` seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([CODES, os.environ.get("PYTHONPATH", "")]))
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=cwd)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s (blocked on a FIFO or device?): {code}")


READ_EACH = """
import json, sys
from sdsd.errors import UserError
from sdsd.video import open_source, probe_frame_count
out = {}
for path in PATHS:
    try:
        source = open_source(path)
        out[path] = ("frames", sum(1 for _ in source))
    except UserError as exc:
        out[path] = ("error", str(exc))
    out[path] += (probe_frame_count(path),)
print(json.dumps(out))
"""


def read_each(paths: list[str], cwd: str | None = None) -> dict:
    done = run_isolated(f"PATHS = {paths!r}\n" + READ_EACH, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_fifo_socket_and_device_inputs_are_refused_without_opening(tmp_path, monkeypatch):
    """Opening a FIFO blocks until a writer comes (the run hung and ignored SIGTERM); /dev/zero never ends. Each is
    refused with one line naming it, and probe_frame_count (run on every archive input first) returns None."""
    monkeypatch.chdir(tmp_path)  # a short relative socket name: AF_UNIX paths are limited to ~108 bytes
    os.mkfifo("pipe.mp4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("sock.mp4")
    sock.close()
    os.symlink("pipe.mp4", "link.mp4")
    paths = ["pipe.mp4", "sock.mp4", "link.mp4", "/dev/zero"]
    result = read_each(paths, cwd=str(tmp_path))
    kinds = {"pipe.mp4": "named pipe (FIFO)", "sock.mp4": "socket", "link.mp4": "named pipe (FIFO)",
             "/dev/zero": "character device"}
    for path in paths:
        status, message, count = result[path]
        assert status == "error" and message == (f"{path} is a {kinds[path]}, not a regular file; give a video file "
                                                 "or a folder of frames"), message
        assert count is None


def test_folder_named_like_a_video_is_read_as_a_frame_folder(tmp_path):
    """A folder is a frame folder whatever its name: ``x.mp4/`` with frames is read, an empty one refused."""
    frames = tmp_path / "x.mp4"
    frames.mkdir()
    for i, img in enumerate(make_frames(3, 32, 32)):
        np.save(frames / f"{i:03d}.npy", np.ascontiguousarray(img[:, :, ::-1]))
    (tmp_path / "y.mp4").mkdir()
    result = read_each([str(frames), str(tmp_path / "y.mp4")])
    assert result[str(frames)] == ["frames", 3, 3]
    status, message, count = result[str(tmp_path / "y.mp4")]
    assert status == "error" and "holds no frames" in message and count == 0


def test_fifo_among_the_frames_of_a_folder_is_refused(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(make_frames(2, 32, 32)):
        np.save(folder / f"{i:03d}.npy", np.ascontiguousarray(img[:, :, ::-1]))
    os.mkfifo(folder / "002.npy")
    status, message, _ = read_each([str(folder)])[str(folder)]
    assert status == "error" and message == (f"input folder {folder}: 002.npy is a named pipe (FIFO), not a regular "
                                             "file; remove it or put the frame there")


def test_enhance_refuses_a_fifo_input_and_an_archive_holding_one_ends(tmp_path, ckpt):
    """End to end: ``sdsd.enhance fifo.mp4`` exits 2 with one line; an archive folder holding a FIFO among its videos
    ends (the FIFO reported) instead of blocking on it."""
    clips = tmp_path / "clips"
    clips.mkdir()
    make_video(str(clips / "a.mp4"), make_frames(3, 32, 32), audio=None)
    os.mkfifo(clips / "b.mp4")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([CODES, os.environ.get("PYTHONPATH", "")]))
    base = [sys.executable, "-m", "sdsd.enhance", "--model", ckpt, "--device", "cpu", "--quiet"]
    try:
        one = subprocess.run(base + [str(clips / "b.mp4"), "-o", str(tmp_path / "b_out.mp4")], capture_output=True,
                             text=True, timeout=60, env=env)
        many = subprocess.run(base + [str(clips), "-o", str(tmp_path / "out")], capture_output=True, text=True,
                              timeout=60, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"sdsd.enhance blocked on a FIFO: {exc.cmd}")
    err = one.stderr.strip().splitlines()
    assert one.returncode == 2 and len(err) == 1 and err[0] == (f"error: {clips / 'b.mp4'} is a named pipe (FIFO), "
                                                                "not a regular file; give a video file or a folder "
                                                                "of frames"), one.stderr
    assert not (tmp_path / "b_out.mp4").exists()
    assert "b.mp4" in many.stderr and "FIFO" in many.stderr, many.stderr


# -- (C) the sidecar tool replaces nothing but a sidecar ----------------------------------------------------------


@pytest.fixture()
def trained(tmp_path):
    """An option file with its tiny training set and a checkpoint (a plain state_dict) to write a sidecar for."""
    from test_train import make_options, write_options

    opt_file = write_options(tmp_path, make_options(tmp_path))
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    torch.save(build_network(TINY).state_dict(), weights)
    return opt_file, weights


def sidecar_error(capsys, *argv) -> str:
    from sdsd.tools.sidecar import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_sidecar_tool_keeps_a_json_beside_the_checkpoint_that_is_not_a_sidecar(tmp_path, trained, capsys):
    """A user's ``model.json`` config beside ``model.pth`` was replaced by a sidecar; now it is refused and kept (so
    are a folder or a FIFO there), while a real sidecar whose values are unusable is still rewritten."""
    from sdsd.exposure import SIDECAR_FORMAT, read_sidecar
    from sdsd.tools.sidecar import main

    opt_file, weights = trained
    config = tmp_path / "model.json"
    mine = '{"learning_rate": 0.0001, "note": "my settings"}\n'
    for content in (mine, "not json at all\n", '["a", "list"]\n', '{"format": "something-else", "input": {}}\n'):
        config.write_text(content)
        line = sidecar_error(capsys, "-opt", opt_file, weights)
        assert line == (f"error: {config} is not a training-statistics sidecar (no \"format\": \"{SIDECAR_FORMAT}\"); "
                        "it is kept; move or rename it, then run this again")
        assert config.read_text() == content
    config.unlink()
    config.mkdir()
    assert "not a regular file" in sidecar_error(capsys, "-opt", opt_file, weights)
    config.rmdir()
    os.mkfifo(config)
    assert "not a regular file" in sidecar_error(capsys, "-opt", opt_file, weights)
    config.unlink()
    config.write_text(json.dumps({"format": SIDECAR_FORMAT, "version": 2, "input": {"mean_linear": 7.0}}))
    assert main(["-opt", opt_file, str(weights)]) == [(str(config), "rewritten (was not valid)")]
    assert read_sidecar(str(weights))["format"] == SIDECAR_FORMAT


def test_sidecar_tool_refuses_what_is_not_a_checkpoint(tmp_path, trained, capsys):
    """A ``.json`` given as the checkpoint is its own sidecar place (it was overwritten); an option file or a file
    torch cannot load is no checkpoint either. Each is refused before anything is measured or written."""
    opt_file, _ = trained
    settings = tmp_path / "settings.json"
    settings.write_text('{"mine": true}\n')
    assert sidecar_error(capsys, "-opt", opt_file, settings) == (
        f"error: {settings} is not a checkpoint (a .json file); give the weights file (.pth) the sidecar is for")
    assert settings.read_text() == '{"mine": true}\n'
    assert f"{opt_file} is not a checkpoint (a .yml file)" in sidecar_error(capsys, "-opt", opt_file, opt_file)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00 not a checkpoint " * 20)
    line = sidecar_error(capsys, "-opt", opt_file, junk)
    assert line.startswith(f"error: {junk}: not a readable PyTorch checkpoint (")
    assert line.endswith("; give the weights file (.pth) the sidecar is for")
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    assert f"{listing}: does not hold a network state_dict" in sidecar_error(capsys, "-opt", opt_file, listing)
    assert not (tmp_path / "junk.json").exists() and not (tmp_path / "list.json").exists()
