"""``sdsd.color``: the sRGB curves (NumPy and torch), the one uint8 -> linear table, and the one white level."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdsd import color

CODES = Path(__file__).resolve().parents[1] / "codes"


def _srgb_to_linear_64(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 in float64, written out here as the reference."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _box_means_64(frame: np.ndarray, size: int) -> np.ndarray:
    """The means of the ``size x size`` boxes whose top-left corner is at row ``0 .. H - 2 * (size // 2)`` and
    column alike (what ``color.moving_average`` documents), in float64 from a summed-area table."""
    h, w = frame.shape[:2]
    table = np.zeros((h + 1, w + 1, frame.shape[2]))
    table[1:, 1:] = frame.astype(np.float64).cumsum(0).cumsum(1)
    rows, cols = h - 2 * (size // 2), w - 2 * (size // 2)
    sums = (table[size:size + rows, size:size + cols] - table[:rows, size:size + cols]
            - table[size:size + rows, :cols] + table[:rows, :cols])
    return sums / size**2


def _frame(seed: int, shape=(40, 56)) -> np.ndarray:
    """A textured uint8 sRGB frame with a few bright highlights (channels last)."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 140, (*shape, 3), dtype=np.uint8)
    frame[rng.integers(0, shape[0], 30), rng.integers(0, shape[1], 30)] = 250
    return frame


def test_curves_round_trip_clip_and_agree_between_numpy_and_torch():
    x = np.linspace(0, 1, 4097, dtype=np.float32)
    linear = color.srgb_to_linear(x)
    assert linear.dtype == np.float32
    np.testing.assert_allclose(color.linear_to_srgb(linear), x, rtol=0, atol=2e-6)
    np.testing.assert_allclose(linear, _srgb_to_linear_64(x), rtol=1e-6, atol=1e-9)
    assert color.srgb_to_linear(0.5).dtype == np.float32  # plain numbers are read as NumPy

    t = torch.from_numpy(x)
    t_linear = color.srgb_to_linear(t)
    assert isinstance(t_linear, torch.Tensor) and t_linear.dtype == torch.float32
    np.testing.assert_allclose(t_linear.numpy(), linear, rtol=1e-6, atol=1e-9)  # float32 rounding apart
    np.testing.assert_allclose(color.linear_to_srgb(t_linear).numpy(), color.linear_to_srgb(linear), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(color.linear_to_srgb(t_linear).numpy(), x, rtol=0, atol=2e-6)
    # A float64 tensor is computed in float64.
    t64 = color.srgb_to_linear(t.double())
    assert t64.dtype == torch.float64
    np.testing.assert_allclose(t64.numpy(), _srgb_to_linear_64(x), rtol=1e-12)
    np.testing.assert_allclose(color.linear_to_srgb(t64).numpy(), x, rtol=0, atol=1e-9)

    # Both clip to [0, 1], as a sensor saturates.
    outside = np.array([-0.5, 1.5], np.float32)
    for curve in (color.srgb_to_linear, color.linear_to_srgb):
        np.testing.assert_allclose(curve(outside), [0.0, 1.0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(curve(torch.from_numpy(outside)).numpy(), [0.0, 1.0], rtol=0, atol=1e-6)
    # The torch curve has a finite gradient at black.
    y = torch.zeros(3, requires_grad=True)
    color.linear_to_srgb(y).sum().backward()
    assert torch.isfinite(y.grad).all()


def test_one_table_the_float32_numpy_curve():
    from sdsd import exposure
    from sdsd.tools import synthesize

    codes = np.arange(256, dtype=np.float32) / np.float32(255)
    assert color.LINEAR_LUT.dtype == np.float32 and color.LINEAR_LUT.shape == (256,)
    assert np.array_equal(color.LINEAR_LUT, color.srgb_to_linear(codes))  # exactly: synthesized bytes depend on it
    # The curve in float32 arithmetic: a few float32 steps (ulps) from the float64 curve, the power amplifying them.
    ulps = np.abs(color.LINEAR_LUT - _srgb_to_linear_64(np.arange(256) / 255)) / np.spacing(color.LINEAR_LUT)
    assert ulps.max() <= 8
    assert not color.LINEAR_LUT.flags.writeable
    # The same table everywhere: synthesize's camera, and exposure's decoding of uint8 frames.
    assert synthesize.LINEAR_LUT is color.LINEAR_LUT
    frame = _frame(0)
    assert np.array_equal(exposure._linear_np(frame), color.LINEAR_LUT[frame])
    assert np.array_equal(color.to_linear(frame), color.LINEAR_LUT[frame])
    floats = frame.astype(np.float32) / 255
    np.testing.assert_allclose(color.to_linear(floats), color.LINEAR_LUT[frame], rtol=1e-6)
    assert synthesize.srgb_to_linear is color.srgb_to_linear and synthesize.linear_to_srgb is color.linear_to_srgb
    assert exposure.srgb_to_linear is color.srgb_to_linear and exposure.linear_to_srgb is color.linear_to_srgb


def test_white_level_is_the_percentile_of_the_documented_box_means():
    linear = color.LINEAR_LUT[_frame(1)]
    boxes = _box_means_64(linear, 4)
    assert color.moving_average(linear).shape == boxes.shape == (36, 52, 3)
    np.testing.assert_allclose(color.moving_average(linear), boxes, rtol=1e-5, atol=1e-7)
    expected = np.percentile(boxes.reshape(-1, 3), 99, axis=0).mean()
    assert color.white_level(linear) == pytest.approx(expected, rel=1e-5)
    # Other percentiles and box sides; 1 reads single pixels.
    assert color.white_level(linear, 50, 3) == pytest.approx(
        np.percentile(_box_means_64(linear, 3).reshape(-1, 3), 50, axis=0).mean(), rel=1e-5)
    assert color.white_level(linear, smoothing=1) == pytest.approx(
        np.percentile(linear.reshape(-1, 3), 99, axis=0).mean(), rel=1e-6)
    # Noise widens single pixels' white level more than the averaged one.
    assert color.white_level(linear) < color.white_level(linear, smoothing=1)
    # A frame no larger than the box is read as it is.
    small = linear[:4, :9]
    assert color.white_level(small) == color.white_level(small, smoothing=1)


def test_white_level_subsamples_each_frame_and_pools_a_stack(monkeypatch):
    a, b = (color.LINEAR_LUT[_frame(seed)] for seed in (2, 3))
    stack = np.stack([a, b])
    pooled = np.concatenate([_box_means_64(f, 4).reshape(-1, 3) for f in stack])
    assert color.smoothed_samples(stack).shape == pooled.shape
    assert color.white_level(stack) == pytest.approx(np.percentile(pooled, 99, axis=0).mean(), rel=1e-5)
    monkeypatch.setattr(color, "SAMPLES_PER_FRAME", 100)
    boxes = _box_means_64(a, 4).reshape(-1, 3)  # 36 x 52 = 1872 boxes: every 18th is read
    assert color.smoothed_samples(a).shape == boxes[::18].shape
    np.testing.assert_allclose(color.smoothed_samples(a), boxes[::18], rtol=1e-5, atol=1e-7)
    assert color.smoothed_samples(stack).shape == (2 * len(boxes[::18]), 3)


def test_one_white_level_for_numpy_frames_torch_frames_training_and_synthesize():
    from sdsd.exposure import ExposureMatcher, measure, summarize, target_of
    from sdsd.tools.synthesize import white_level as clip_white_level

    frames = np.stack([_frame(seed) for seed in (4, 5, 6)])  # uint8 RGB, channels last
    linear = color.LINEAR_LUT[frames]
    tensors = torch.from_numpy(linear).permute(0, 3, 1, 2)  # channels first, not contiguous
    for f, t in zip(linear, tensors):
        level = color.white_level(f)
        assert color.white_level(t) == level  # the torch path reads the same values
        assert measure(f) == level
        assert measure(f, smoothing=1) == color.white_level(t, smoothing=1)
    assert color.white_level(tensors) == color.white_level(linear)
    # Video matching: the NumPy and the torch frame get the same gain (float32 decoding apart).
    by_array, by_tensor = ExposureMatcher(0.02), ExposureMatcher(0.02)
    for f in frames:
        by_array.frame(f)
        by_tensor.tensor(torch.from_numpy(f).permute(2, 0, 1).float() / 255)
    np.testing.assert_allclose(by_array.gains, by_tensor.gains, rtol=1e-5)
    # Training: the sidecar's white level is the one white level of all the frames together.
    stats = summarize(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    assert stats["smoothing"] == color.SMOOTHING
    assert target_of({"input": stats}) == pytest.approx(color.white_level(tensors), rel=1e-6)
    assert np.mean(stats["percentiles_linear"]["99"]) == pytest.approx(color.white_level(tensors, smoothing=1),
                                                                       rel=1e-6)
    # synthesize --white-level: the median over a clip's frames.
    assert clip_white_level(frames) == float(np.median([color.white_level(f) for f in linear]))


def test_synthesize_white_level_scales_each_scene_to_the_documented_statistic(tmp_path):
    """The ground truth of ``--white-level 0.9`` is each clean scene scaled by 0.9 over its white level computed
    here from the documented definition (float64): equal but for rare float32 rounding, where another border rule
    would change a large share of the bytes."""
    from sdsd.tools.synthesize import render_image_scene, scale_brightness, synthesize

    params = {"scenes": 2, "test_scenes": 1, "frames": 2, "size": (32, 48), "seed": 5, "verbose": False}
    summary = synthesize(tmp_path / "white", workers=1, white_level=0.9, **params)
    differ = total = 0
    for index, scene in enumerate(summary["scenes"]):
        clean = render_image_scene(index, params["frames"], params["size"], params["seed"])
        level = np.median([np.percentile(_box_means_64(color.LINEAR_LUT[f], 4).reshape(-1, 3), 99, axis=0).mean()
                           for f in clean])
        expected = scale_brightness(clean, 0.9 / level)
        gt = np.stack([np.load(tmp_path / "white" / "GT" / scene / f"{i:04d}.npy") for i in range(params["frames"])])
        diff = np.abs(gt.astype(int) - expected)
        assert diff.max() <= 1
        differ, total = differ + int(np.count_nonzero(diff)), total + diff.size
    assert differ <= 0.001 * total, (differ, total)


def test_color_and_exposure_import_no_cli_tool_and_synthesize_no_torch():
    checks = (
        "import sys, sdsd.color; assert 'torch' not in sys.modules\n"
        "import sdsd.exposure; tools = [m for m in sys.modules if m.startswith('sdsd.tools')]; assert not tools, tools",
        "import sys, sdsd.tools.synthesize; assert 'torch' not in sys.modules",
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CODES), os.environ.get("PYTHONPATH", "")]))
    for code in checks:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr[-2000:]


def _reference_curves_64():
    """The response curves written out in float64 (encode, decode) as the references."""
    return {
        ("gamma", 2.2): (lambda y: y ** (1 / 2.2), lambda v: v ** 2.2),
        ("gamma", 1.8): (lambda y: y ** (1 / 1.8), lambda v: v ** 1.8),
        ("log", 16.0): (lambda y: np.log1p(16 * y) / np.log1p(16), lambda v: np.expm1(v * np.log1p(16)) / 16),
        ("bt709", None): (lambda y: np.where(y < 0.018, 4.5 * y, 1.099 * y ** 0.45 - 0.099),
                          lambda v: np.where(v < 0.081, v / 4.5, ((v + 0.099) / 1.099) ** (1 / 0.45))),
    }


def test_response_curves_match_their_formulas_round_trip_and_agree_between_numpy_and_torch():
    y = np.linspace(0, 1, 2049, dtype=np.float32)
    for (kind, param), (enc64, dec64) in _reference_curves_64().items():
        encoded = color.encode(y, kind, param)
        assert encoded.dtype == np.float32
        np.testing.assert_allclose(encoded, enc64(y.astype(np.float64)), rtol=2e-6, atol=2e-7, err_msg=kind)
        np.testing.assert_allclose(color.decode(encoded, kind, param), y, rtol=1e-5, atol=3e-7, err_msg=kind)
        np.testing.assert_allclose(color.decode(y, kind, param), dec64(y.astype(np.float64)), rtol=2e-6,
                                   atol=2e-7, err_msg=kind)
        t = torch.from_numpy(y).double()
        np.testing.assert_allclose(color.encode(t, kind, param).numpy(), enc64(y.astype(np.float64)), rtol=1e-9,
                                   atol=1e-12, err_msg=kind)
        np.testing.assert_allclose(color.decode(color.encode(t, kind, param), kind, param).numpy(), y, rtol=1e-9,
                                   atol=1e-12, err_msg=kind)
        # Monotone, 0 -> 0 and 1 -> 1, clipped outside [0, 1].
        assert np.all(np.diff(encoded) >= 0)
        np.testing.assert_allclose(color.encode(np.array([-1.0, 0.0, 1.0, 2.0]), kind, param), [0, 0, 1, 1],
                                   atol=2e-4)
        # Finite gradients at black (the power is taken of a floor there).
        z = torch.zeros(3, requires_grad=True)
        color.encode(z, kind, param).sum().backward()
        assert torch.isfinite(z.grad).all(), kind
    # srgb is the sRGB pair itself; default parameters are RESPONSES'.
    np.testing.assert_array_equal(color.encode(y, "srgb"), color.linear_to_srgb(y))
    np.testing.assert_array_equal(color.decode(y, "gamma"), color.decode(y, "gamma", color.RESPONSES["gamma"]))


def test_response_curves_take_one_parameter_per_sample_of_a_batch():
    y = np.random.default_rng(0).random((4, 3, 5, 6)).astype(np.float32)
    gammas = np.array([1.8, 2.0, 2.4, 2.6]).reshape(4, 1, 1, 1)
    batch = color.encode(y, "gamma", gammas)
    for i, g in enumerate(gammas.ravel()):
        np.testing.assert_allclose(batch[i], color.encode(y[i], "gamma", float(g)), rtol=1e-6)
    cs = torch.tensor([4.0, 8.0, 32.0, 64.0]).view(4, 1, 1, 1)
    tb = color.decode(torch.from_numpy(y), "log", cs)
    for i, c in enumerate(cs.ravel()):
        np.testing.assert_allclose(tb[i].numpy(), color.decode(y[i], "log", float(c)), rtol=2e-6, atol=1e-7)


def test_response_lut_and_checks():
    codes = np.arange(256, dtype=np.float32) / np.float32(255)
    assert color.response_lut("srgb") is color.LINEAR_LUT
    # The power-law table is the expression synthesize's gamma camera always used (its bytes depend on it).
    legacy = (np.arange(256, dtype=np.float32) / 255.0) ** np.float32(2.2)
    assert np.array_equal(color.response_lut("gamma", 2.2), legacy)
    np.testing.assert_array_equal(color.response_lut("log", 8.0), color.decode(codes, "log", 8.0))
    assert color.describe_response("gamma", 2.2) == "gamma 2.2" and color.describe_response("srgb") == "srgb"
    for kind, param in (("sepia", None), ("gamma", 0.0), ("log", -1.0), ("gamma", float("nan"))):
        with pytest.raises(ValueError):
            color.encode(codes, kind, param)
    with pytest.raises(ValueError, match="one parameter"):
        color.response_lut("gamma", [2.0, 2.2])
