"""Tests for ``sdsd.tools.synthesize``: real photographs, real files, a real encoded video, real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from sdsd.errors import UserError
from sdsd.metrics import calculate_psnr
from sdsd.tools.synthesize import (
    StaleDatasetError,
    degrade_clip,
    linear_to_srgb,
    srgb_to_linear,
    synthesize,
)

CODES = Path(__file__).resolve().parents[1] / "codes"
TINY = {"scenes": 3, "test_scenes": 1, "frames": 4, "size": (32, 48), "seed": 7, "verbose": False}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CODES), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "sdsd.tools.synthesize", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("syn") / "data"
    return out, synthesize(out, workers=1, **TINY)


def test_layout_dtypes_and_split(tiny):
    out, summary = tiny
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "GT",
        "input",
        "summary.json",
        "testing_dir.txt",
    ]
    for sub in ("GT", "input"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["scene001", "scene002", "scene003"]
        for scene in ("scene001", "scene002", "scene003"):
            files = sorted(p.name for p in (out / sub / scene).iterdir())
            assert files == ["0000.npy", "0001.npy", "0002.npy", "0003.npy"]
            for name in files:
                arr = np.load(out / sub / scene / name)
                assert arr.dtype == np.uint8 and arr.shape == (32, 48, 3)
    assert (out / "testing_dir.txt").read_text().strip() == "scene003"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["scenes"] == ["scene001", "scene002", "scene003"]
    assert summary["testing_dir"] == "scene003"
    assert summary["params"]["frames"] == 4 and summary["params"]["size"] == [32, 48]


def test_clip_moves_and_input_is_dark_and_noisy(tiny):
    out, summary = tiny
    for scene in summary["scenes"]:
        gt = np.stack([np.load(out / "GT" / scene / f"{i:04d}.npy") for i in range(4)]).astype(np.float64)
        lq = np.stack([np.load(out / "input" / scene / f"{i:04d}.npy") for i in range(4)]).astype(np.float64)
        assert gt.std() > 10  # real photographic content, not a flat fill
        assert np.abs(gt[0] - gt[-1]).mean() > 1  # camera/object motion between frames
        assert lq.mean() < 0.75 * gt.mean()
    assert 5.0 < summary["input_psnr_db"] < 25.0
    # The recorded PSNR is the per-frame uint8 PSNR averaged per scene, then over scenes.
    scene = summary["scenes"][0]
    values = [
        calculate_psnr(np.load(out / "input" / scene / f"{i:04d}.npy"), np.load(out / "GT" / scene / f"{i:04d}.npy"))
        for i in range(4)
    ]
    assert summary["scene_input_psnr_db"][scene] == pytest.approx(np.mean(values))


def test_noise_is_added_on_top_of_identical_content(tiny, tmp_path):
    out, _ = tiny
    clean = tmp_path / "clean"
    synthesize(clean, workers=1, shot_noise=0.0, read_noise=0.0, **TINY)
    for scene in ("scene001", "scene002"):
        gt_a = np.load(out / "GT" / scene / "0001.npy")
        gt_b = np.load(clean / "GT" / scene / "0001.npy")
        np.testing.assert_array_equal(gt_a, gt_b)  # content and exposure do not depend on the noise options
        noisy = np.load(out / "input" / scene / "0001.npy").astype(np.float64)
        quiet = np.load(clean / "input" / scene / "0001.npy").astype(np.float64)
        residual = noisy - quiet
        assert residual.std() > 1.0
        assert abs(residual.mean()) < 0.5 * residual.std()  # zero-mean noise, not a brightness change


def test_degrade_clip_physics():
    grey = np.full((2, 16, 16, 3), 180, np.uint8)
    exact, info = degrade_clip(grey, np.random.default_rng(0), exposure=(0.1, 0.1), shot_noise=0, read_noise=0)
    assert info["exposure"] == pytest.approx(0.1) and info["gains"] == pytest.approx([1, 1, 1])
    expected = np.round(linear_to_srgb(srgb_to_linear(np.float32(180 / 255)) * 0.1) * 255)
    assert np.all(exact == expected)  # exposure acts on linear light, not on sRGB values
    cast, info = degrade_clip(grey, np.random.default_rng(0), exposure=(0.1, 0.1), read_noise=0, color_cast=0.5)
    assert np.prod(info["gains"]) == pytest.approx(1.0)
    means = cast.reshape(-1, 3).mean(0)
    assert means.max() - means.min() > 5  # the channels are no longer balanced
    # Shot noise grows with the signal: a brighter patch has a larger spread of raw (linear) values.
    dim, bright = np.full((1, 64, 64, 3), 60, np.uint8), np.full((1, 64, 64, 3), 250, np.uint8)
    spreads = []
    for clip in (dim, bright):
        low, _ = degrade_clip(clip, np.random.default_rng(1), exposure=(0.2, 0.2), shot_noise=1e-3, read_noise=0)
        spreads.append(srgb_to_linear(low / 255.0).std())
    assert spreads[1] > spreads[0] > 0


def test_same_seed_same_bytes_whatever_the_workers(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    synthesize(again, workers=2, **TINY)
    assert _tree_bytes(again) == _tree_bytes(out)
    other = tmp_path / "other"
    synthesize(other, workers=1, **{**TINY, "seed": 8})
    assert np.load(other / "GT/scene001/0000.npy").tobytes() != np.load(out / "GT/scene001/0000.npy").tobytes()


def test_rerun_skips_resumes_and_refuses(tiny, tmp_path):
    out, summary = tiny
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert synthesize(out, workers=1, **TINY) == summary
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == before

    partial = tmp_path / "partial"
    synthesize(partial, workers=1, **TINY)
    reference = _tree_bytes(partial)
    (partial / "input/scene002/0003.npy").unlink()
    (partial / "summary.json").unlink()
    synthesize(partial, workers=1, **TINY)
    assert _tree_bytes(partial) == reference

    with pytest.raises(StaleDatasetError, match="frames"):  # ours, made with other parameters: safe to regenerate
        synthesize(out, workers=1, **{**TINY, "frames": 5})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty") as refused:
        synthesize(foreign, workers=1, **TINY)
    assert not isinstance(refused.value, StaleDatasetError)  # a folder it did not make is never called stale


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="multiples of 16"):
        synthesize(tmp_path / "a", **{**TINY, "size": (30, 48)})
    with pytest.raises(UserError, match="test-scenes"):
        synthesize(tmp_path / "b", **{**TINY, "test_scenes": 3})
    with pytest.raises(UserError, match="exposure"):
        synthesize(tmp_path / "c", exposure=(0.3, 0.1), **TINY)
    with pytest.raises(UserError, match="does not exist"):
        synthesize(tmp_path / "d", video=tmp_path / "missing.mp4", **TINY)


def _write_video(path: Path, frames: int, height: int = 48, width: int = 80) -> None:
    """Encode a real clip: a coloured gradient with a bright square moving across it."""
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb = np.stack([xx * 3 % 256, yy * 5 % 256, np.full_like(xx, 60)], -1).astype(np.uint8)
            rgb[10:26, 4 + 5 * i : 20 + 5 * i] = 240
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_source(tmp_path):
    video = tmp_path / "clip.mp4"
    _write_video(video, frames=11)
    out = tmp_path / "vid"
    summary = synthesize(out, video=video, frames=4, test_scenes=1, size=(32, 48), seed=1, workers=2, verbose=False)
    assert summary["scenes"] == ["scene001", "scene002"]  # 11 frames -> two full clips of 4, the rest dropped
    assert summary["testing_dir"] == "scene002"
    gt = [np.load(out / "GT/scene001" / f"{i:04d}.npy") for i in range(4)]
    assert all(g.shape == (32, 48, 3) and g.dtype == np.uint8 for g in gt)
    assert np.abs(gt[0].astype(int) - gt[3].astype(int)).max() > 100  # the square moved
    # BGR order: the encoded blue channel is a constant 60, so channel 0 is flat apart from the bright square.
    assert np.median(gt[0][..., 0]) == pytest.approx(60, abs=6)
    assert np.load(out / "input/scene002/0003.npy").mean() < gt[0].mean()
    with pytest.raises(UserError, match="only 2 scenes"):
        synthesize(tmp_path / "more", video=video, frames=4, scenes=3, test_scenes=1, size=(32, 48), verbose=False)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    with pytest.raises(UserError, match="broken.mp4"):
        synthesize(tmp_path / "bad", video=broken, frames=4, test_scenes=0, size=(32, 48), verbose=False)


def test_cli_success_and_one_line_errors(tmp_path):
    out = tmp_path / "cli"
    ok = _run_cli(str(out), "--scenes", "2", "--test-scenes", "1", "--frames", "2", "--size", "32", "48")
    assert ok.returncode == 0, ok.stderr
    assert "input PSNR" in ok.stdout and "scene002" in ok.stdout
    assert (out / "testing_dir.txt").read_text().strip() == "scene002"

    bad = _run_cli(str(tmp_path / "x"), "--size", "30", "40")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    assert "--size" in bad.stderr

    unknown = _run_cli(str(tmp_path / "y"), "--frames", "many")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


def test_noise_levels_drawn_per_scene_from_ranges(tmp_path):
    grey = np.full((2, 32, 32, 3), 200, np.uint8)
    # One value and a degenerate range give the same bytes (no extra draw), so older datasets reproduce.
    single, info = degrade_clip(grey, np.random.default_rng(3), exposure=(0.1, 0.1), shot_noise=2e-3, read_noise=1e-3)
    same, _ = degrade_clip(grey, np.random.default_rng(3), exposure=(0.1, 0.1), shot_noise=(2e-3, 2e-3),
                           read_noise=(1e-3, 1e-3))
    assert np.array_equal(single, same) and info["shot_noise"] == 2e-3 and info["read_noise"] == 1e-3
    drawn = [degrade_clip(grey, np.random.default_rng(s), exposure=(0.1, 0.1), shot_noise=(1e-4, 1e-2),
                          read_noise=(0, 2e-3))[1] for s in range(40)]
    shots = np.array([d["shot_noise"] for d in drawn])
    reads = np.array([d["read_noise"] for d in drawn])
    assert shots.min() >= 1e-4 and shots.max() <= 1e-2 and shots.min() < 5e-4 and shots.max() > 2e-3
    assert np.median(np.log10(shots)) == pytest.approx(-3, abs=0.5)  # log-uniform
    assert reads.min() >= 0 and reads.max() <= 2e-3 and reads.std() > 3e-4  # uniform from 0
    # A pure power law (another camera) linearises and re-encodes with the same law.
    gamma_low, _ = degrade_clip(grey, np.random.default_rng(0), exposure=(0.1, 0.1), shot_noise=0, read_noise=0,
                                gamma=2.2)
    assert np.all(gamma_low == np.round(((200 / 255) ** 2.2 * 0.1) ** (1 / 2.2) * 255))

    out = tmp_path / "ranges"
    result = _run_cli(str(out), "--scenes", "2", "--test-scenes", "1", "--frames", "2", "--size", "32", "48",
                      "--shot-noise", "1e-4", "1e-2", "--read-noise", "1e-3", "--workers", "1")
    assert result.returncode == 0, result.stderr
    params = json.loads((out / "summary.json").read_text())["params"]
    assert params["shot_noise"] == [1e-4, 1e-2] and params["read_noise"] == 1e-3
    bad = _run_cli(str(tmp_path / "bad"), "--shot-noise", "1e-3", "2e-3", "3e-3")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --shot-noise takes one value or MIN MAX")
    bad = _run_cli(str(tmp_path / "bad"), "--read-noise", "2e-3", "1e-3")
    assert bad.returncode == 2 and "--read-noise" in bad.stderr and "Traceback" not in bad.stderr


def test_scene_brightness_scales_the_clean_scene_and_keeps_the_rest(tiny, tmp_path):
    """``scene_brightness`` scales each clean scene in linear light (GT and input alike, the noise drawn as
    before); the default leaves the dataset's bytes and parameters as they were."""
    from sdsd.tools.synthesize import scale_brightness

    grey = np.full((1, 4, 4, 3), 100, np.uint8)
    assert np.array_equal(scale_brightness(grey, 1.0), grey)
    doubled = scale_brightness(grey, 2.0)
    assert float(srgb_to_linear(doubled[0, 0, 0, 0] / 255.0)) == pytest.approx(
        2 * float(srgb_to_linear(100 / 255.0)), rel=0.02)
    assert np.all(scale_brightness(np.full((1, 2, 2, 3), 250, np.uint8), 4.0) == 255)  # clipped at full scale

    base, summary = tiny
    default = synthesize(tmp_path / "default", workers=1, scene_brightness=1.0, **TINY)
    assert _tree_bytes(tmp_path / "default") == _tree_bytes(base) and "scene_brightness" not in default["params"]
    varied = synthesize(tmp_path / "varied", workers=1, scene_brightness=(0.3, 3.0), **TINY)
    assert varied["params"]["scene_brightness"] == [0.3, 3.0]
    ratios = []
    for scene in summary["scenes"]:
        plain_gt, gt = (np.load(root / "GT" / scene / "0000.npy") for root in (base, tmp_path / "varied"))
        ratio = float(srgb_to_linear(gt / 255.0).mean() / srgb_to_linear(plain_gt / 255.0).mean())
        ratios.append(ratio)
        assert 0.25 < ratio < 3.1
        low = np.load(tmp_path / "varied" / "input" / scene / "0000.npy")
        assert low.mean() < gt.mean() / 2  # still darkened
    assert max(ratios) / min(ratios) > 1.3  # drawn per scene
    with pytest.raises(UserError, match="scene-brightness"):
        synthesize(tmp_path / "bad", workers=1, scene_brightness=(2.0, 1.0), **TINY)
    bad = _run_cli(str(tmp_path / "bad2"), "--scene-brightness", "0")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --scene-brightness")


def test_white_level_exposes_every_scene_alike(tiny, tmp_path):
    """``white_level`` scales each clean scene so that the statistic ``--exposure auto`` matches reads the same on
    every scene's ground truth; an all-black clip is left alone; the default records no parameter (so datasets made
    before the option keep matching their folder)."""
    from sdsd.exposure import measure
    from sdsd.tools.synthesize import expose_white, white_level

    black = np.zeros((2, 16, 16, 3), np.uint8)
    assert np.array_equal(expose_white(black, 0.9), black)
    ramp = np.tile(np.linspace(0, 120, 48).astype(np.uint8)[None, None, :, None], (3, 32, 1, 3))
    exposed = expose_white(ramp, 0.8)
    assert white_level(exposed) == pytest.approx(0.8, rel=0.03)
    assert white_level(ramp) == pytest.approx(float(np.median(
        [measure(srgb_to_linear(f.astype(np.float32) / 255)) for f in ramp])), rel=1e-6)

    base, summary = tiny
    exposed_set = synthesize(tmp_path / "white", workers=1, white_level=0.9, **TINY)
    assert exposed_set["params"]["white_level"] == 0.9
    before, after = [], []
    for scene in summary["scenes"]:
        gts = [np.stack([np.load(root / "GT" / scene / f"{i:04d}.npy") for i in range(TINY["frames"])])
               for root in (base, tmp_path / "white")]
        before.append(white_level(gts[0]))
        after.append(white_level(gts[1]))
        low = np.load(tmp_path / "white" / "input" / scene / "0000.npy")
        assert low.mean() < gts[1][0].mean() / 2  # still darkened
    # One gain per scene aims at the level; where highlights clip (small or coloured ones) the scene stays below it.
    assert all(abs(a - 0.9) < abs(b - 0.9) and a < 0.9 * 1.03 for a, b in zip(after, before)), (before, after)
    assert max(after) / min(after) < 1.5 < 5 < max(before) / min(before)
    assert "white_level" not in summary["params"]  # the default, as the tiny dataset above was made
    with pytest.raises(UserError, match="--white-level must be in"):
        synthesize(tmp_path / "bad", workers=1, white_level=1.5, **TINY)
    bad = _run_cli(str(tmp_path / "bad2"), "--white-level", "0")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --white-level")


# -- the camera distribution (--cameras) ------------------------------------------------------------------------------

#: SHA-256 over (relative path, bytes) of every frame of the TINY dataset, and of the first two scenes of the demo's
#: dataset (``sdsd.demo.DATA``, 2 frames each), as the code made them before camera distributions existed.
TINY_FRAMES_SHA256 = "5134bb3f39ec3d430e75fd7e786a0a5c8e44b7e700e662264770355f6c7b2fcc"
DEMO_FRAMES_SHA256 = "d8a3b31ce0006857396a829b64e374955a64d5fd7edb1191196044a5f8166292"
WILD = {**TINY, "scenes": 8, "frames": 3, "size": (48, 64), "cameras": "wild"}


def _frames_sha256(root: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.npy")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def wild(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("wild") / "data"
    return out, synthesize(out, workers=1, **WILD)


def test_default_dataset_and_the_demos_are_byte_identical_to_before(tiny, tmp_path):
    from sdsd.demo import DATA

    out, summary = tiny
    assert _frames_sha256(out) == TINY_FRAMES_SHA256
    assert "scene_cameras" not in summary and "cameras" not in summary["params"]
    synthesize(tmp_path / "demo", workers=1, verbose=False, **{**DATA, "scenes": 2, "test_scenes": 1, "frames": 2})
    assert _frames_sha256(tmp_path / "demo") == DEMO_FRAMES_SHA256
    # The bench's gamma camera through the generalised camera model: the legacy expressions, byte for byte.
    clip = np.random.default_rng(5).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    low, _ = degrade_clip(clip, np.random.default_rng(1), exposure=(0.05, 0.05), shot_noise=3e-3, gamma=2.2)
    rng = np.random.default_rng(1)  # single values draw nothing: the noise is the generator's first draws
    x = (((np.arange(256, dtype=np.float32) / 255.0) ** np.float32(2.2))[clip] * np.float32(0.05)).clip(0, 1)
    x = (rng.poisson(x / 3e-3) * 3e-3).astype(np.float32)
    x += np.float32(1e-3) * rng.standard_normal(size=x.shape, dtype=np.float32)
    assert np.array_equal(low, np.round(np.clip(x, 0, 1) ** np.float32(1 / 2.2) * 255).astype(np.uint8))


def test_cameras_drawn_per_scene_recorded_and_within_ranges(wild):
    from sdsd.tools.synthesize import CAMERA_DISTRIBUTIONS, white_level

    out, summary = wild
    dist = CAMERA_DISTRIBUTIONS["wild"]
    assert summary["params"]["cameras"] == dist and summary["params"]["cameras_name"] == "wild"
    cams = summary["scene_cameras"]
    assert list(cams) == summary["scenes"]
    assert json.loads((out / "summary.json").read_text())["scene_cameras"] == cams
    for scene, cam in cams.items():
        assert cam["response"] in dist["responses"]
        if cam["response"] == "gamma":
            assert dist["gamma"][0] <= cam["response_param"] <= dist["gamma"][1]
        elif cam["response"] == "log":
            assert dist["log"][0] <= cam["response_param"] <= dist["log"][1]
        else:
            assert cam["response_param"] is None
        for key in ("exposure", "shot_noise", "read_noise", "white_level"):
            assert dist[key][0] <= cam[key] <= dist[key][1], (scene, key)
        assert dist["color_cast"][0] <= cam["color_cast"] <= dist["color_cast"][1]
        assert np.prod(cam["gains"]) == pytest.approx(1.0)
        assert max(cam["gains"]) / min(cam["gains"]) <= np.exp(2 * cam["color_cast"]) + 1e-9
        gt = np.stack([np.load(out / "GT" / scene / f"{i:04d}.npy") for i in range(WILD["frames"])])
        assert cam["gt_white_level"] == pytest.approx(white_level(gt))
        assert cam["gt_white_level"] <= cam["white_level"] * 1.03
    # Drawn per scene: the values differ between scenes (8 scenes, three curves).
    assert len({c["response"] for c in cams.values()}) >= 2
    assert len({round(c["exposure"], 6) for c in cams.values()}) == len(cams)
    assert len({round(c["shot_noise"], 9) for c in cams.values()}) == len(cams)


def test_camera_of_a_scene_is_what_its_frames_show(wild, tiny):
    """The input of a scene is its ground truth under the recorded camera (noise apart), and the content is the
    default dataset's (the camera has its own random generator)."""
    from sdsd import color
    from sdsd.tools.synthesize import expose

    out, summary = wild
    for scene, cam in list(summary["scene_cameras"].items())[:4]:
        gt = np.load(out / "GT" / scene / "0000.npy")
        low = np.load(out / "input" / scene / "0000.npy")
        clean = expose(gt[None], np.random.default_rng(0), exposure=cam["exposure"], gains=cam["gains"],
                       shot_noise=0, read_noise=0, response=(cam["response"], cam["response_param"]))[0]
        lin = (color.response_lut(cam["response"], cam["response_param"])[low].mean((0, 1)),
               color.response_lut(cam["response"], cam["response_param"])[clean].mean((0, 1)))
        np.testing.assert_allclose(lin[0], lin[1], rtol=0.15, atol=2e-4)  # zero-mean noise around the clean exposure
    # Same content as the default camera's dataset of the same seed (sizes differ, so render one scene again).
    from sdsd.tools.synthesize import render_image_scene

    clip = render_image_scene(0, WILD["frames"], WILD["size"], WILD["seed"])
    gt = np.load(out / "GT" / "scene001" / "0000.npy").astype(float)
    assert np.corrcoef(gt.ravel(), clip[0].astype(float).ravel())[0, 1] > 0.98  # the same photo, rescaled


def test_cameras_reproducible_from_the_seed_and_resumable(wild, tmp_path):
    out, summary = wild
    again = synthesize(tmp_path / "again", workers=2, **WILD)
    assert _tree_bytes(tmp_path / "again") == _tree_bytes(out) and again == summary
    other = synthesize(tmp_path / "other", workers=1, **{**WILD, "seed": 8})
    assert other["scene_cameras"]["scene001"] != summary["scene_cameras"]["scene001"]
    assert synthesize(out, workers=1, **WILD) == summary  # complete: returned as it is
    with pytest.raises(StaleDatasetError, match="cameras"):
        synthesize(out, workers=1, **{**WILD, "camera_ranges": {"exposure": (0.02, 0.03)}})


def test_camera_ranges_override_and_bad_ones_are_user_errors(tmp_path):
    narrow = {"exposure": (0.05, 0.05), "shot_noise": (2e-3, 2e-3), "responses": ["gamma"], "gamma": (2.0, 2.0)}
    summary = synthesize(tmp_path / "n", workers=1, **{**WILD, "scenes": 3, "camera_ranges": narrow})
    for cam in summary["scene_cameras"].values():
        assert cam["response"] == "gamma" and cam["response_param"] == 2.0
        assert cam["exposure"] == 0.05 and cam["shot_noise"] == 2e-3
    # One range changed leaves the other draws as they were.
    base = synthesize(tmp_path / "b", workers=1, **{**WILD, "scenes": 3})
    moved = synthesize(tmp_path / "m", workers=1, **{**WILD, "scenes": 3, "camera_ranges": {"exposure": (0.02, 0.03)}})
    for a, b in zip(base["scene_cameras"].values(), moved["scene_cameras"].values()):
        assert a["shot_noise"] == b["shot_noise"] and a["response"] == b["response"] and a["exposure"] != b["exposure"]
    for bad, match in (({"exposure": (0.1, 2.0)}, "exposure"), ({"shot_noise": (-1, 1e-3)}, "shot_noise"),
                       ({"focus": (1, 2)}, "unknown key"), ({"responses": ["sepia"]}, "unknown curve")):
        with pytest.raises(UserError, match=match):
            synthesize(tmp_path / "bad", workers=1, **{**WILD, "camera_ranges": bad})
    with pytest.raises(UserError, match="drop --exposure"):
        synthesize(tmp_path / "bad", workers=1, **{**WILD, "exposure": (0.01, 0.02)})
    with pytest.raises(UserError, match="--white-level"):
        synthesize(tmp_path / "bad", workers=1, **{**WILD, "white_level": 0.9})
    with pytest.raises(UserError, match="add --cameras"):
        synthesize(tmp_path / "bad", workers=1, **{**TINY, "camera_ranges": {"exposure": (0.02, 0.03)}})

    out = tmp_path / "cli"
    done = _run_cli(str(out), "--scenes", "2", "--test-scenes", "1", "--frames", "2", "--size", "32", "48",
                    "--cameras", "wild", "--camera-range", "read_noise", "1e-4", "2e-4", "--camera-curves", "log",
                    "--workers", "1")
    assert done.returncode == 0, done.stderr
    cams = json.loads((out / "summary.json").read_text())["scene_cameras"]
    assert all(c["response"] == "log" and 1e-4 <= c["read_noise"] <= 2e-4 for c in cams.values())
    for args, text in ((["--cameras", "tame"], "--cameras"), (["--cameras", "wild", "--color-cast", "0.2"],
                                                              "--color-cast"),
                       (["--cameras", "wild", "--camera-range", "exposure", "a", "b"], "must be numbers")):
        bad = _run_cli(str(tmp_path / "x"), *args)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and text in bad.stderr, bad.stderr
