"""sdsd.video: reading videos/frame folders and writing videos (with audio) / PNG folders, on real files."""

from __future__ import annotations

import os

import av
import cv2
import numpy as np
import pytest

from sdsd.errors import UserError
from sdsd.video import FolderWriter, open_source, open_writer, read_frames


def make_frames(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth moving gradients plus a little noise (H.264 keeps them close), uint8 RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(n):
        r = 40 + 30 * np.sin((xx + 3 * i) / 9.0)
        g = 50 + 30 * np.cos((yy - 2 * i) / 7.0)
        b = 30 + 20 * np.sin((xx + yy + i) / 11.0)
        img = np.stack([r, g, b], axis=2) + rng.normal(0, 2, (height, width, 3))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def make_video(path: str, frames: list[np.ndarray], fps: int = 24, audio: str | None = "aac") -> str:
    """Encode ``frames`` (uint8 RGB) with libx264 and, optionally, a 440 Hz sine in ``audio`` codec."""
    height, width = frames[0].shape[:2]
    with av.open(path, "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = out.add_stream(audio, rate=44100, layout="mono") if audio else None
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
        if sound is not None:
            rate, total = 44100, int(44100 * len(frames) / fps)
            step = sound.codec_context.frame_size or 1024
            fmt = sound.codec_context.format.name
            for s in range(0, total, step):
                t = np.arange(s, min(s + step, total)) / rate
                wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                if fmt.startswith("s16"):
                    wave = (wave * 32767).astype(np.int16)
                chunk = av.AudioFrame.from_ndarray(wave[None, :], format=fmt, layout="mono")
                chunk.sample_rate, chunk.pts = rate, s
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def probe(path: str) -> dict:
    """Frame count (by decoding), size, rate and audio codecs of a video file."""
    with av.open(path) as c:
        v = c.streams.video[0]
        info = {"width": v.codec_context.width, "height": v.codec_context.height, "fps": v.average_rate,
                "audio": [a.codec_context.codec.canonical_name for a in c.streams.audio]}
        info["frames"] = sum(1 for _ in c.decode(video=0))
    return info


def test_video_roundtrip_keeps_count_size_rate_and_audio(tmp_path):
    frames = make_frames(10, 48, 64)
    src = make_video(str(tmp_path / "in.mp4"), frames)
    source = open_source(src)
    assert (source.info.width, source.info.height, source.info.fps) == (64, 48, 24)
    assert source.info.frame_count == 10 and source.info.audio_streams == 1
    decoded = list(source)
    assert len(decoded) == 10 and decoded[0].shape == (48, 64, 3) and decoded[0].dtype == np.uint8
    # H.264 at crf 18 stays close to the originals.
    assert np.abs(decoded[3].astype(int) - frames[3]).mean() < 4

    out = str(tmp_path / "out.mp4")
    with open_writer(out, 64, 48, source.info.fps, audio_from=src) as writer:
        for img in decoded:
            writer.write(img)
    assert probe(out) == {"width": 64, "height": 48, "fps": 24, "audio": ["aac"], "frames": 10}
    again = list(read_frames(out))
    assert np.abs(again[5].astype(int) - decoded[5]).mean() < 4
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mp4"]


def test_odd_size_and_mkv_with_pcm_audio(tmp_path):
    frames = make_frames(4, 139, 171)
    src = make_video(str(tmp_path / "in.mkv"), [f[:138, :170] for f in frames], fps=30, audio="pcm_s16le")
    source = open_source(src)
    assert source.info.frame_count == 4  # Matroska has no count: estimated from the duration
    out = str(tmp_path / "odd.mkv")
    with open_writer(out, 171, 139, 30, audio_from=src) as writer:
        for img in frames:
            writer.write(img)
    info = probe(out)
    assert (info["width"], info["height"], info["frames"], info["fps"]) == (171, 139, 4, 30)
    assert info["audio"] == ["pcm_s16le"]


def test_audio_the_container_cannot_hold_is_dropped_with_a_warning(tmp_path, capsys):
    frames = make_frames(3, 32, 32)
    src = make_video(str(tmp_path / "in.mkv"), frames, audio="pcm_s16le")
    out = str(tmp_path / "out.m4v")
    with open_writer(out, 32, 32, 24, audio_from=src) as writer:
        for img in frames:
            writer.write(img)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "pcm_s16le" in lines[0]
    assert probe(out)["audio"] == [] and probe(out)["frames"] == 3


def test_frame_folder_reads_sorted_bgr_npy_and_png_as_rgb(tmp_path):
    frames = make_frames(3, 20, 24)
    np.save(tmp_path / "b.npy", frames[1][:, :, ::-1].copy())
    cv2.imwrite(str(tmp_path / "a.png"), frames[0][:, :, ::-1])
    np.save(tmp_path / "c.npy", frames[2][:, :, ::-1].copy())
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path), fps=12)
    assert (source.info.width, source.info.height, source.info.frame_count, source.info.fps) == (24, 20, 3, 12)
    read = list(source)
    for got, want in zip(read, frames):
        np.testing.assert_array_equal(got, want)


def test_folder_writer_is_atomic(tmp_path):
    frames = make_frames(2, 16, 16)
    target = tmp_path / "pngs"
    with pytest.raises(RuntimeError), FolderWriter(str(target)) as writer:
        writer.write(frames[0])
        raise RuntimeError("stop half way")
    assert os.listdir(tmp_path) == []
    with FolderWriter(str(target)) as writer:
        for img in frames:
            writer.write(img)
    assert sorted(os.listdir(target)) == ["000000.png", "000001.png"]
    np.testing.assert_array_equal(cv2.imread(str(target / "000001.png"))[:, :, ::-1], frames[1])
    assert sorted(os.listdir(tmp_path)) == ["pngs"]


def test_video_writer_abort_leaves_nothing(tmp_path):
    out = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError), open_writer(str(out), 32, 32, 24) as writer:
        writer.write(make_frames(1, 32, 32)[0])
        raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []


def test_bad_inputs_and_outputs_are_user_errors(tmp_path):
    (tmp_path / "fake.mp4").write_text("this is not a video")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="cannot read .* as a video"):
        open_source(str(tmp_path / "fake.mp4"))
    with pytest.raises(UserError, match="holds no frames"):
        open_source(str(empty))
    with pytest.raises(UserError, match="not found"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(UserError, match="unknown extension"):
        open_writer(str(tmp_path / "out.png"), 32, 32)
    with pytest.raises(UserError, match="cannot"):
        open_writer(str(tmp_path / "afile" / "out.mp4"), 32, 32)
    with pytest.raises(UserError, match="same size"), open_writer(str(tmp_path / "o.mp4"), 32, 32) as writer:
        writer.write(np.zeros((16, 32, 3), np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["afile", "empty", "fake.mp4"]
