"""Tests for ``sdsd.tools.prepare_sdsd`` on a tiny, real PNG tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdsd.errors import UserError
from sdsd.tools.prepare_sdsd import prepare_sdsd

CODES = Path(__file__).resolve().parents[1] / "codes"
FRAMES = ["indoor/GT/pair1", "indoor/input/pair1", "outdoor/input/pair2"]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CODES), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "sdsd.tools.prepare_sdsd", *args], capture_output=True, text=True, env=env, timeout=120
    )


def _make_tree(root: Path) -> list[Path]:
    """Two frames per scene, 36 x 64 BGR: a random texture with a pure-blue block in the top-left corner."""
    rng = np.random.default_rng(0)
    pngs = []
    for scene in FRAMES:
        for name in ("00001.png", "00002.png"):
            img = rng.integers(0, 256, size=(36, 64, 3), dtype=np.uint8)
            img[:12, :16] = (255, 0, 0)  # BGR blue
            path = root / scene / name
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), img)
            pngs.append(path)
    return pngs


def test_tree_shapes_bgr_and_resize(tmp_path):
    src, dst = tmp_path / "png", tmp_path / "np"
    pngs = _make_tree(src)
    stats = prepare_sdsd(src, dst, size=(18, 32), workers=2, progress=False)
    assert stats == {"converted": 6, "skipped": 0, "total": 6}
    for png in pngs:
        npy = (dst / png.relative_to(src)).with_suffix(".npy")
        arr = np.load(npy)
        assert arr.dtype == np.uint8 and arr.shape == (18, 32, 3)
        expected = cv2.resize(cv2.imread(str(png)), (32, 18), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(arr, expected)
        np.testing.assert_array_equal(arr[:6, :8], np.broadcast_to(np.uint8([255, 0, 0]), (6, 8, 3)))
    assert sorted(p.name for p in (dst / "indoor/GT/pair1").iterdir()) == ["00001.npy", "00002.npy"]

    nearest = tmp_path / "nearest"
    prepare_sdsd(src, nearest, size=(18, 32), interp="nearest", workers=1, progress=False)
    png = pngs[0]
    expected = cv2.resize(cv2.imread(str(png)), (32, 18), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(np.load((nearest / png.relative_to(src)).with_suffix(".npy")), expected)


def test_skips_converted_frames(tmp_path):
    src, dst = tmp_path / "png", tmp_path / "np"
    _make_tree(src)
    prepare_sdsd(src, dst, size=(18, 32), workers=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in dst.rglob("*.npy")}
    assert prepare_sdsd(src, dst, size=(18, 32), workers=1, progress=False) == {
        "converted": 0,
        "skipped": 6,
        "total": 6,
    }
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.npy")} == before
    (dst / "outdoor/input/pair2/00002.npy").unlink()
    assert prepare_sdsd(src, dst, size=(18, 32), workers=1, progress=False)["converted"] == 1
    assert not [p for p in dst.rglob("*") if p.name.startswith(".")]  # no temp files left behind


def test_corrupt_png_is_reported_after_the_rest(tmp_path):
    src, dst = tmp_path / "png", tmp_path / "np"
    pngs = _make_tree(src)
    garbage = src / "indoor/GT/pair1/00003.png"
    garbage.write_bytes(b"this is not a png" * 20)
    truncated = src / "indoor/input/pair1/00003.png"
    truncated.write_bytes(pngs[0].read_bytes()[:60])
    with pytest.raises(UserError) as info:
        prepare_sdsd(src, dst, size=(18, 32), workers=2, progress=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith("2 PNG file(s)")
    assert str(garbage) in message and str(truncated) in message
    assert len(list(dst.rglob("*.npy"))) == 6  # every readable frame was converted
    assert not (dst / "indoor/GT/pair1/00003.npy").exists()


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare_sdsd(tmp_path / "missing", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .png files"):
        prepare_sdsd(tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(UserError, match="--interp"):
        prepare_sdsd(tmp_path / "empty", tmp_path / "out", interp="lanczos", progress=False)


def test_cli(tmp_path):
    src, dst = tmp_path / "png", tmp_path / "np"
    _make_tree(src)
    ok = _run_cli(str(src), str(dst), "--size", "18", "32", "--workers", "2")
    assert ok.returncode == 0, ok.stderr
    assert "converted 6" in ok.stdout
    assert np.load(dst / "indoor/GT/pair1/00001.npy").shape == (18, 32, 3)

    missing = _run_cli(str(tmp_path / "nope"), str(dst))
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and len(missing.stderr.strip().splitlines()) == 1
    assert "nope" in missing.stderr

    bad_interp = _run_cli(str(src), str(dst), "--interp", "lanczos")
    assert bad_interp.returncode == 2 and len(bad_interp.stderr.strip().splitlines()) == 1
