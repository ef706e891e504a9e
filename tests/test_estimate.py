"""``sdsd.estimate``: the camera of a clip measured on the input alone, checked against synthetic clips whose camera
is known (``sdsd.tools.synthesize``'s photographs and camera model). Each test prints the errors it measured
(``pytest -s``); docs/exposure.md reports them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdsd import estimate
from sdsd.tools.synthesize import expose, expose_camera, render_image_scene, white_level

SIZE = (96, 128)
FRAMES = 6

#: Cameras covering the corners of ``synthesize --cameras wild`` and its three curves: (response, parameter,
#: exposure, shot noise, read noise, ground-truth white level, colour cast).
CAMERAS = (
    ("srgb", None, 0.02, 3e-4, 3e-4, 0.9, 0.0),
    ("srgb", None, 0.1, 5e-3, 5e-3, 0.8, 0.1),
    ("srgb", None, 0.04, 1e-3, 1e-3, 0.9, 0.0),
    ("gamma", 1.8, 0.03, 5e-3, 3e-4, 0.85, 0.05),
    ("gamma", 2.6, 0.1, 3e-4, 5e-3, 0.95, 0.0),
    ("gamma", 2.2, 0.05, 2e-3, 1e-3, 0.75, 0.15),
    ("log", 4.0, 0.015, 1e-3, 3e-3, 0.9, 0.0),
    ("log", 64.0, 0.15, 3e-3, 5e-4, 0.8, 0.1),
    ("log", 16.0, 0.04, 5e-4, 2e-3, 0.9, 0.0),
)
#: Tolerances (multiplicative: ``max(est / true, true / est)``), from the errors measured on these clips with some
#: room; docs/exposure.md gives the measured ones.
TOL_STD_AT_WHITE = 1.25  # the noise standard deviation at the clip's white level, curve known
TOL_SHOT = 1.3  # the shot-noise gain a, curve known, on clips where it dominates the noise at the white level
TOL_EXPOSURE_KNOWN_WHITE = 1.15  # exposure, curve and the scene's well-exposed white level known
TOL_EXPOSURE_SRGB = 1.3  # exposure of sRGB cameras, the well-exposed white level assumed (0.9)


def _camera(kind, param, k, a, b, white, cast, seed):
    gains = np.exp(np.random.default_rng(seed).uniform(-cast, cast, 3)) if cast else np.ones(3)
    gains = gains / np.exp(np.log(gains).mean())
    return {"response": kind, "response_param": param, "exposure": k, "shot_noise": a, "read_noise": b,
            "white_level": white, "gains": list(gains)}


def _ratio(est: float, true: float) -> float:
    return max(est / true, true / est)


@pytest.fixture(scope="module")
def measured():
    rows = []
    for i, spec in enumerate(CAMERAS):
        cam = _camera(*spec, seed=i)
        clip = render_image_scene(i % 6, FRAMES, SIZE, 11)  # the first six photographs (no deep-sky one)
        gt, low = expose_camera(clip, np.random.default_rng(100 + i), cam)
        known = estimate.estimate_clip(low, response=(cam["response"], cam["response_param"]),
                                       reference_white=white_level(gt))
        blind = estimate.estimate_clip(low)  # sRGB decoding, reference white 0.9
        rows.append((cam, known, blind))
    return rows


def test_noise_level_with_the_curve_known(measured):
    std_err, shot_err = [], []
    for cam, known, _ in measured:
        true_std = math.sqrt(cam["shot_noise"] * known["white_level"] + cam["read_noise"] ** 2)
        std_err.append(_ratio(known["noise_std_at_white"], true_std))
        if cam["shot_noise"] * known["white_level"] > 2 * cam["read_noise"] ** 2:  # shot noise dominates
            shot_err.append(_ratio(known["shot_noise"], cam["shot_noise"]))
        assert known["noise_bins"] >= 6
    print(f"\nnoise std at the white level: max error x{max(std_err):.3f}, median x{np.median(std_err):.3f}; "
          f"shot noise: max x{max(shot_err):.3f}, median x{np.median(shot_err):.3f}")
    assert max(std_err) <= TOL_STD_AT_WHITE, std_err
    assert max(shot_err) <= TOL_SHOT, shot_err


def test_exposure_and_white_level(measured):
    known_err, srgb_err = [], []
    for cam, known, blind in measured:
        known_err.append(_ratio(known["exposure"], cam["exposure"]))
        if cam["response"] == "srgb":
            srgb_err.append(_ratio(blind["exposure"], cam["exposure"]))
            assert blind["white_level"] == pytest.approx(blind["white_level_srgb"])
        assert 0 < known["white_level"] < 1 and not blind["response_estimated"]
    print(f"\nexposure, curve and white known: max error x{max(known_err):.3f}, median x{np.median(known_err):.3f}; "
          f"sRGB cameras, white assumed 0.9: max x{max(srgb_err):.3f}")
    assert max(known_err) <= TOL_EXPOSURE_KNOWN_WHITE, known_err
    assert max(srgb_err) <= TOL_EXPOSURE_SRGB, srgb_err


def test_noise_estimate_follows_the_noise_and_ignores_the_content():
    """More noise reads as more noise, on the same content; a noise-free clip reads as (almost) none."""
    clip = render_image_scene(2, FRAMES, SIZE, 11)
    levels = []
    for a in (3e-4, 1e-3, 3e-3):
        low = expose(clip, np.random.default_rng(0), exposure=0.05, gains=[1, 1, 1], shot_noise=a, read_noise=5e-4)
        levels.append(estimate.estimate_clip(low)["shot_noise"])
    assert levels[0] < levels[1] < levels[2]
    assert levels[2] / levels[0] == pytest.approx(10, rel=0.35)
    clean = expose(clip, np.random.default_rng(0), exposure=0.05, gains=[1, 1, 1], shot_noise=0, read_noise=0)
    quiet = estimate.estimate_clip(clean)
    # The floor (texture and rounding the filter does not cancel) is well below the quietest wild camera's noise.
    floor, least = quiet["noise_std_at_white"], math.sqrt(3e-4 * quiet["white_level"] + 3e-4**2)
    print(f"\nnoise-free clip reads {floor:.2e} at its white level; the quietest wild camera's noise there {least:.2e}")
    assert floor < 0.5 * least


def test_response_estimate_on_a_clip_that_spans_the_curve():
    """On a smooth clip spanning most of the range with strong noise, the noise picks the curve family."""
    yy, xx = np.mgrid[0:64, 0:96]
    ramp = np.repeat(((xx / 95.0) * 255).astype(np.uint8)[None, ..., None], 4, 0).repeat(3, -1)
    picked = {}
    for kind, param in (("srgb", None), ("gamma", 2.2), ("log", 16.0)):
        low = expose(ramp, np.random.default_rng(1), exposure=0.8, gains=[1, 1, 1], shot_noise=4e-3,
                     read_noise=2e-3, response=(kind, param))
        (got, got_param), scores = estimate.estimate_response(low)
        assert len(scores) == len(estimate.CANDIDATES)
        picked[(kind, param)] = (got, got_param)
    print(f"\nresponse picked on ramps: {picked}")
    assert sum(k == got for (k, _), (got, _) in picked.items()) >= 2, picked


def test_input_estimator_passes_frames_through_and_measures_a_few():
    clip = render_image_scene(0, 12, (64, 96), 3)
    low = expose(clip, np.random.default_rng(0), exposure=0.05, gains=[1, 1, 1], shot_noise=1e-3, read_noise=1e-3)
    est = estimate.InputEstimator(keep=4, stride=3)
    floats = [f.astype(np.float32) / 255 for f in low]
    out = list(est(iter(floats)))
    assert len(out) == 12 and all(a is b for a, b in zip(out, floats))  # the same frames, unchanged
    assert est.seen == 12 and len(est.frames) == 4
    assert np.array_equal(est.frames[1], low[3])  # floats back to their uint8 codes
    summary = est.summary()
    assert summary["frames_read"] == 4
    assert summary["shot_noise"] == pytest.approx(1e-3, rel=0.5)
    assert estimate.InputEstimator().summary() is None
    tiny = estimate.InputEstimator()
    list(tiny(iter([np.zeros((4, 4, 3), np.uint8)])))
    assert tiny.summary() is None  # too small to measure: no estimate, no error
    with pytest.raises(ValueError, match="uint8"):
        estimate.estimate_clip(np.zeros((2, 16, 16, 3), np.float32))
