"""Synthesize a paired low-light video dataset in the SDSD folder layout from real normal-light content.

Output (the layout the SDSD datasets read)::

    OUT/GT/scene001/0000.npy ...      clean frames, uint8, H x W x 3, BGR (as OpenCV writes)
    OUT/input/scene001/0000.npy ...   the same frames after the low-light degradation below
    OUT/testing_dir.txt               the last ``--test-scenes`` scene names, comma separated: the value for a
                                      YAML ``testing_dir:`` option
    OUT/summary.json                  parameters, scene names and the mean input PSNR against GT

Content:

* ``--images`` (default): the real photographs that ship inside scikit-image (no download). Each scene is one
  photograph turned into a clip by a smooth camera motion (a crop window that drifts, zooms and rolls slightly,
  resampled at sub-pixel positions with ``cv2.warpAffine``) with 1-3 objects cut from *other* photographs (soft
  alpha edges) moving along their own smooth paths, so frames need real temporal alignment.
* ``--video FILE``: any video PyAV can decode, centre-cropped to the aspect ratio of ``--size``, resized and cut
  into consecutive scenes of ``--frames`` frames (a last partial scene is dropped).

White level (optional, ``--white-level W``): each clean scene is first multiplied in linear light so that its white
level (the median over its frames of ``sdsd.color.white_level``, the statistic ``sdsd.enhance --exposure auto``
matches) is ``W``, as a camera's automatic exposure places a scene's highlights near full scale; the result is that
scene's ground truth. The photographs are exposed unevenly (a deep-sky photograph's white is far below a
portrait's), and a model learns the white level of its ground truth: trained on them it outputs ordinary
well-exposed video too dark. It is one gain per scene, aimed at ``W``: where the highlights are small or coloured
they clip at full scale first and the scene ends somewhat below ``W`` (measured on the demo: docs/exposure.md). An
all-black scene is left as is.

Scene brightness (optional, ``--scene-brightness MIN MAX``): each clean scene is then multiplied in linear light by
a factor drawn log-uniformly per scene (clipped at full scale, re-encoded to sRGB uint8); the result is that scene's
ground truth. Real scenes differ in brightness while a camera's exposure stays put; the photographs alone do not,
and a model trained on them learns each photograph's brightness instead of the camera's tone mapping. The default,
1, leaves the frames as they are.

Degradation (per scene, a simple physical camera model), applied to the clean uint8 frames:

1. linearise with the inverse sRGB transfer curve (``sdsd.color``), so values are linear scene light in [0, 1]
   (1 = clipping);
2. multiply by an exposure factor ``k`` drawn log-uniformly from ``--exposure MIN MAX`` (one per scene);
3. optionally multiply each channel by a colour-cast gain ``exp(u_c)``, ``u_c ~ U(-s, s)`` with
   ``s = --color-cast``, normalised to a geometric mean of 1 (a wrong white balance; 0 disables it);
4. add Poisson-Gaussian sensor noise: ``y = a * Poisson(x / a) + Normal(0, b^2)``, where ``a = --shot-noise`` is
   the signal-dependent variance gain (variance ``a * x``; ``1 / a`` photo-electrons at full scale) and
   ``b = --read-noise`` is the standard deviation of the signal-independent noise, both in units of the linear
   signal where 1.0 is full scale; the result is clipped to [0, 1]. Each takes one value, or ``MIN MAX`` to draw
   it log-uniformly per scene (uniformly when ``MIN`` is 0), as ``--exposure`` does;
5. re-apply the sRGB transfer curve and quantise to uint8.

Camera distribution (optional, ``--cameras wild``): instead of the one camera above, each scene gets its own camera
drawn from a distribution (:data:`CAMERA_DISTRIBUTIONS`): a response curve (``sdsd.color.encode``: sRGB, a power
law of gamma 1.8-2.6, or a log-like curve), an exposure, shot and read noise (log-uniform), a colour cast and the
white level its ground truth is exposed to (as ``--white-level`` does, per scene). The clean scene is decoded
with the camera's own curve (its ground truth is what that camera records when well exposed) and the noisy linear
values encoded with it again. Every drawn value is recorded per scene in ``summary.json`` (``scene_cameras``).
``--camera-range KEY MIN MAX`` and ``--camera-curves`` change the distribution's ranges; why its ranges are what
they are: docs/demo-and-real-footage.md, "Camera distribution".

Everything is drawn from ``--seed`` and the scene index alone, so the same parameters give the same bytes
whatever ``--workers`` is. Rerunning with the same parameters into a complete folder returns at once; a
folder left half-written by an interrupted run is completed.

Example::

    python -m sdsd.tools.synthesize dataset/synthetic --scenes 12 --test-scenes 2 --frames 20 --size 128 192
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from sdsd import color
from sdsd.color import LINEAR_LUT, linear_to_srgb
from sdsd.color import srgb_to_linear as srgb_to_linear  # this module's name for the curve, as before
from sdsd.errors import UserError, cli_main
from sdsd.metrics import calculate_psnr
from sdsd.utils.cli import ArgumentParser, HelpFormatter
from sdsd.utils.io import atomic_save_npy, atomic_write_json, atomic_write_text, remove_stale_temps

# Workers are spawned, not forked: a fork of a process whose OpenCV/torch thread pools are running can deadlock
# in the child (seen when called from a process that imported torch).
_SPAWN = multiprocessing.get_context("spawn")

FORMAT_NAME = "sdsd-synthesize"
FORMAT_VERSION = 1


class StaleDatasetError(UserError):
    """The output folder holds a dataset this tool made with other parameters (so it is safe to regenerate)."""


_PARAMS_FILE = ".synthesize.json"  # written first; a dot file so `glob(folder/*)` readers never see it
_SUMMARY_FILE = "summary.json"  # written last; its presence means the dataset is complete
_TESTING_FILE = "testing_dir.txt"

DEFAULT_SCENES = 12
DEFAULT_TEST_SCENES = 2
DEFAULT_FRAMES = 20
DEFAULT_SIZE = (128, 192)
DEFAULT_EXPOSURE = (0.05, 0.2)
DEFAULT_SHOT_NOISE = 1e-3
DEFAULT_READ_NOISE = 1e-3
DEFAULT_COLOR_CAST = 0.0

# (skimage.data function, index into its result when it returns a tuple, group). Photos of one group show the
# same thing (the two motorcycle views), so an object is never cut from its own background's group.
_PHOTOS = (
    ("astronaut", None, "astronaut"),
    ("coffee", None, "coffee"),
    ("chelsea", None, "chelsea"),
    ("rocket", None, "rocket"),
    ("stereo_motorcycle", 0, "motorcycle"),
    ("stereo_motorcycle", 1, "motorcycle"),
    ("immunohistochemistry", None, "ihc"),
    ("hubble_deep_field", None, "hubble"),
)


def as_range(value) -> tuple[float, float]:
    """One value ``v`` or a pair ``(min, max)`` as ``(min, max)``."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = value
    return float(lo), float(hi)


def _plain_range(value):
    """What the parameters file stores: a number for one value (as before ranges existed), a list for a range."""
    lo, hi = as_range(value)
    return lo if lo == hi else [lo, hi]


def draw(rng: np.random.Generator, value) -> float:
    """A value drawn log-uniformly from ``(min, max)`` (uniformly when ``min`` is 0); no draw for one value."""
    lo, hi = as_range(value)
    if hi <= lo:
        return lo
    if lo > 0:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def degrade_clip(
    frames: np.ndarray,
    rng: np.random.Generator,
    *,
    exposure: tuple[float, float] = DEFAULT_EXPOSURE,
    shot_noise: float | tuple[float, float] = DEFAULT_SHOT_NOISE,
    read_noise: float | tuple[float, float] = DEFAULT_READ_NOISE,
    color_cast: float = DEFAULT_COLOR_CAST,
    gamma: float | None = None,
    response: tuple[str, float | None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Turn clean frames into low-light frames with the camera model in the module docstring.

    Args:
        frames: ``T x H x W x 3`` uint8 clean frames (any channel order; the cast gains follow it).
        rng: random generator; one exposure, colour cast and noise level are drawn for the whole clip.
        exposure: ``(min, max)`` of the log-uniform exposure factor.
        shot_noise: Poisson variance gain ``a`` (variance ``a * x`` of a linear signal ``x`` in [0, 1]), or a
            ``(min, max)`` range to draw it from.
        read_noise: standard deviation ``b`` of the Gaussian noise, same unit, or a ``(min, max)`` range.
        color_cast: half-width ``s`` of the log-gain range per channel; 0 disables the cast.
        gamma: ``None`` for the sRGB transfer curve (the module's camera), or a pure power law ``x ** (1 / gamma)``
            for another camera (linearised with the same law); shorthand for ``response=("gamma", gamma)``.
        response: ``(kind, parameter)`` of the camera's response curve (:func:`sdsd.color.encode`); the clean frames
            are decoded with it and the noisy linear values encoded with it.

    Returns:
        ``(low, info)``: the degraded uint8 frames (same shape) and ``{"exposure": k, "gains": [g0, g1, g2],
        "shot_noise": a, "read_noise": b}``.
    """
    k = draw(rng, exposure)
    log_gains = rng.uniform(-color_cast, color_cast, size=3) if color_cast > 0 else np.zeros(3)
    gains = np.exp(log_gains - log_gains.mean())
    # Drawn after the exposure and cast, and only for ranges: single values give the bytes they always gave.
    a, b = draw(rng, shot_noise), draw(rng, read_noise)
    if response is None:
        response = ("srgb", None) if gamma is None else ("gamma", gamma)
    low = expose(frames, rng, exposure=k, gains=gains, shot_noise=a, read_noise=b, response=response)
    return low, {"exposure": k, "gains": [float(g) for g in gains], "shot_noise": a, "read_noise": b}


def expose(frames: np.ndarray, rng: np.random.Generator, *, exposure: float, gains, shot_noise: float,
           read_noise: float, response: tuple[str, float | None] = ("srgb", None)) -> np.ndarray:
    """The camera model of the module docstring with every parameter given: ``frames`` (uint8) decoded with the
    ``response`` curve, multiplied by ``exposure * gains`` (per channel), Poisson-Gaussian noise drawn from ``rng``,
    clipped, encoded with the same curve and quantised to uint8."""
    linear = color.response_lut(*response)
    x = linear[frames] * (exposure * np.asarray(gains, dtype=np.float64)).astype(np.float32)
    np.clip(x, 0.0, 1.0, out=x)  # a channel pushed past full scale by the cast saturates like a sensor
    if shot_noise > 0:
        x = (rng.poisson(x / shot_noise) * shot_noise).astype(np.float32)
    if read_noise > 0:
        x += np.float32(read_noise) * rng.standard_normal(size=x.shape, dtype=np.float32)
    return np.round(color.encode(x, *response) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------- camera distributions
#: Named distributions of cameras for ``--cameras``: per scene one camera is drawn from it (:func:`draw_camera`).
#: ``responses`` are drawn with equal odds; ``gamma`` (uniform) and ``log`` (the curve's ``c``, log-uniform) are the
#: parameter ranges of those curves; ``exposure``, ``shot_noise`` and ``read_noise`` are log-uniform;
#: ``color_cast`` is the range (uniform) of the half-width ``s`` of the channel log-gains ``U(-s, s)``;
#: ``white_level`` (uniform) is the white level each clean scene is exposed to (its ground truth's). Why these
#: ranges: docs/demo-and-real-footage.md, "Camera distribution".
CAMERA_DISTRIBUTIONS = {
    "wild": {
        "responses": ["srgb", "gamma", "log"],
        "gamma": [1.8, 2.6],
        "log": [4.0, 64.0],
        "exposure": [0.015, 0.15],
        "shot_noise": [3e-4, 5e-3],
        "read_noise": [3e-4, 5e-3],
        "color_cast": [0.0, 0.15],
        "white_level": [0.75, 0.95],
    },
}
#: The keys of a camera distribution that hold a numeric ``[min, max]`` range.
CAMERA_RANGES = ("gamma", "log", "exposure", "shot_noise", "read_noise", "color_cast", "white_level")


def camera_distribution(name: str, overrides: dict | None = None) -> dict:
    """The distribution called ``name`` (:data:`CAMERA_DISTRIBUTIONS`) with ``overrides`` (``{key: [min, max]}``
    for the ranges, ``{"responses": [kind, ...]}``) applied and checked.

    Raises:
        UserError: an unknown name, key or curve, or a range outside what the camera model takes.
    """
    if name not in CAMERA_DISTRIBUTIONS:
        raise UserError(f"--cameras {name!r}: unknown camera distribution; known: {', '.join(CAMERA_DISTRIBUTIONS)}")
    dist = json.loads(json.dumps(CAMERA_DISTRIBUTIONS[name]))
    for key, value in (overrides or {}).items():
        if key == "responses":
            kinds = [str(v) for v in value]
            unknown = [k for k in kinds if k not in color.RESPONSES]
            if not kinds or unknown:
                raise UserError(f"--camera-curves: unknown curve(s) {', '.join(unknown) or '(none given)'}; "
                                f"known: {', '.join(color.RESPONSES)}")
            dist["responses"] = kinds
            continue
        if key not in CAMERA_RANGES:
            raise UserError(f"--camera-range {key}: unknown key; known: {', '.join(CAMERA_RANGES)}")
        lo, hi = as_range(value)
        dist[key] = [lo, hi]
    for key in CAMERA_RANGES:
        lo, hi = dist[key]
        positive = key not in ("color_cast",)
        ok = math.isfinite(lo) and math.isfinite(hi) and lo <= hi and (lo > 0 if positive else lo >= 0)
        if key in ("exposure", "white_level"):
            ok = ok and hi <= 1
        if not ok:
            bound = "0 < MIN <= MAX <= 1" if key in ("exposure", "white_level") else (
                "0 < MIN <= MAX" if positive else "0 <= MIN <= MAX")
            raise UserError(f"--camera-range {key} {lo} {hi}: needs finite {bound}")
    return dist


def draw_camera(rng: np.random.Generator, dist: dict) -> dict:
    """One camera drawn from ``dist`` (:func:`camera_distribution`): ``{"response", "response_param", "exposure",
    "color_cast", "gains", "shot_noise", "read_noise", "white_level"}``.

    Every range is drawn whatever the curve (in a fixed order), so two distributions that differ in one range draw
    the same values for the others.
    """
    kinds = dist["responses"]
    kind = kinds[int(rng.integers(len(kinds)))]
    gamma = float(rng.uniform(*dist["gamma"]))
    log_c = draw(rng, dist["log"])
    exposure = draw(rng, dist["exposure"])
    cast = float(rng.uniform(*dist["color_cast"]))
    log_gains = rng.uniform(-cast, cast, size=3)
    gains = np.exp(log_gains - log_gains.mean())
    shot, read = draw(rng, dist["shot_noise"]), draw(rng, dist["read_noise"])
    white = float(rng.uniform(*dist["white_level"]))
    param = {"gamma": gamma, "log": log_c}.get(kind)
    return {"response": kind, "response_param": param, "exposure": exposure, "color_cast": cast,
            "gains": [float(g) for g in gains], "shot_noise": shot, "read_noise": read, "white_level": white}


def expose_camera(clip: np.ndarray, rng: np.random.Generator, camera: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(ground truth, low-light input)`` of a clean uint8 clip under a drawn ``camera`` (:func:`draw_camera`): the
    clip exposed to the camera's white level (:func:`expose_white`), then darkened and made noisy by
    :func:`expose` with the camera's curve, exposure, gains and noise (the noise drawn from ``rng``)."""
    gt = expose_white(clip, camera["white_level"])
    low = expose(gt, rng, exposure=camera["exposure"], gains=camera["gains"], shot_noise=camera["shot_noise"],
                 read_noise=camera["read_noise"], response=(camera["response"], camera["response_param"]))
    return gt, low


# --------------------------------------------------------------------------------------------- image scenes
@functools.lru_cache(maxsize=1)
def _load_photos() -> tuple[tuple[np.ndarray, str], ...]:
    """The shipped scikit-image photographs as BGR uint8 arrays (loaded once per process)."""
    from skimage import data as skdata

    photos = []
    for name, index, group in _PHOTOS:
        try:
            img = getattr(skdata, name)()
        except Exception as exc:  # any failure here means this scikit-image cannot supply the file offline
            raise UserError(
                f"scikit-image photo '{name}' is not available offline ({type(exc).__name__}: {exc}); "
                "reinstall scikit-image or use --video FILE"
            ) from None
        if index is not None:
            img = img[index]
        img = np.ascontiguousarray(img[..., :3][..., ::-1])  # RGB -> BGR, as every other array here
        photos.append((img, group))
    return tuple(photos)


def _fit_scale(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize ``img`` to ``height x width`` (area filter when shrinking, cubic when enlarging)."""
    interp = cv2.INTER_AREA if img.shape[0] > height else cv2.INTER_CUBIC
    return cv2.resize(img, (width, height), interpolation=interp)


def _smooth_path(rng: np.random.Generator, t: np.ndarray, start: np.ndarray, end: np.ndarray, wobble: float):
    """Points from ``start`` to ``end`` with an ease-in/out profile plus a sinusoidal sideways wobble."""
    ease = t * t * (3.0 - 2.0 * t)
    d = end - start
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    phase, cycles = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.2)
    side = wobble * np.sin(2 * math.pi * cycles * t + phase)
    return start[None] + ease[:, None] * d[None] + side[:, None] * normal[None]


def _object_sprite(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``h x w x 4`` float32 BGRA patch cut from ``photo`` with a soft elliptic or rounded-box alpha."""
    h, w = size
    scale = max(h / photo.shape[0], w / photo.shape[1]) * rng.uniform(1.5, 3.0)
    src = _fit_scale(photo, max(h, round(photo.shape[0] * scale)), max(w, round(photo.shape[1] * scale)))
    y0 = int(rng.integers(0, src.shape[0] - h + 1))
    x0 = int(rng.integers(0, src.shape[1] - w + 1))
    patch = src[y0 : y0 + h, x0 : x0 + w].astype(np.float32) / 255.0
    sigma = max(0.8, 0.04 * min(h, w))
    inset = int(math.ceil(2.5 * sigma))  # keeps the blurred alpha at zero on the patch border
    alpha = np.zeros((h, w), np.float32)
    if rng.random() < 0.5:
        axes = (max(1, w // 2 - inset), max(1, h // 2 - inset))
        cv2.ellipse(alpha, (w // 2, h // 2), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    else:
        cv2.rectangle(alpha, (inset, inset), (w - 1 - inset, h - 1 - inset), 1.0, -1, cv2.LINE_AA)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    return np.dstack([patch, alpha])


def render_image_scene(scene_index: int, frames: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Render one clean clip from the shipped photographs.

    Args:
        scene_index: 0-based scene number; picks the background photo and seeds everything else.
        frames: number of frames.
        size: ``(H, W)`` of the frames.
        seed: dataset seed.

    Returns:
        ``frames x H x W x 3`` uint8 BGR clip.
    """
    content_rng = _scene_rngs(seed, scene_index)[0]
    photos = _load_photos()
    height, width = size
    order = np.random.default_rng(seed).permutation(len(photos))  # same photo order for every scene
    bg, bg_group = photos[int(order[scene_index % len(photos)])]
    if content_rng.random() < 0.5:
        bg = bg[:, ::-1]
    # The photo is resized so the output window covers 1/margin of it: room to travel and zoom without borders.
    margin = content_rng.uniform(1.35, 1.8)
    f = max(height * margin / bg.shape[0], width * margin / bg.shape[1])
    bg = _fit_scale(bg, round(bg.shape[0] * f), round(bg.shape[1] * f)).astype(np.float32) / 255.0
    bh, bw = bg.shape[:2]

    t = np.linspace(0.0, 1.0, frames)
    zoom = np.exp(np.linspace(*content_rng.uniform(math.log(0.85), math.log(1.15), size=2), frames))
    roll = np.deg2rad(content_rng.uniform(-3, 3)) * np.sin(math.pi * t * content_rng.uniform(0.5, 1.5))
    # Half extent of the rotated, zoomed window in photo pixels bounds where its centre may go.
    half = np.array([width, height], np.float64) / 2 * zoom.max() * (1 + abs(roll).max())
    lo, hi = half + 1, np.array([bw, bh]) - half - 1
    speed = content_rng.uniform(0.4, 2.5)  # output pixels per frame
    direction = content_rng.uniform(0, 2 * math.pi)
    travel = speed * max(frames - 1, 1) * np.array([math.cos(direction), math.sin(direction)])
    travel = np.clip(travel, -(hi - lo), hi - lo)
    start = lo + content_rng.uniform(0, 1, size=2) * (hi - lo - abs(travel)) + np.maximum(-travel, 0)
    centres = np.clip(_smooth_path(content_rng, t, start, start + travel, content_rng.uniform(0, 2)), lo, hi)

    sprites, paths = [], []
    others = [p for p, g in photos if g != bg_group]
    for _ in range(int(content_rng.integers(1, 4))):
        photo = others[int(content_rng.integers(len(others)))]
        oh = int(round(height * content_rng.uniform(0.22, 0.42)))
        ow = int(round(oh * content_rng.uniform(0.7, 1.5)))
        sprites.append(_object_sprite(content_rng, photo, (oh, min(ow, width - 2))))
        inner = np.array([width, height], np.float64)
        p0 = content_rng.uniform(0.15, 0.85, size=2) * inner
        step = content_rng.uniform(0.8, 3.5) * max(frames - 1, 1)  # output pixels over the clip
        angle = content_rng.uniform(0, 2 * math.pi)
        p1 = np.clip(p0 + step * np.array([math.cos(angle), math.sin(angle)]), 0.1 * inner, 0.9 * inner)
        spin = np.deg2rad(content_rng.uniform(-1.0, 1.0)) * np.arange(frames)
        grow = np.exp(np.linspace(0.0, content_rng.uniform(-0.15, 0.15), frames))
        paths.append((_smooth_path(content_rng, t, p0, p1, content_rng.uniform(0, 4)), spin, grow))

    out_centre = np.array([(width - 1) / 2, (height - 1) / 2])
    clip = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        # Inverse map (output -> photo): src = centre + zoom * R(roll) * (dst - out_centre).
        c, s = zoom[i] * math.cos(roll[i]), zoom[i] * math.sin(roll[i])
        lin = np.array([[c, -s], [s, c]])
        m = np.hstack([lin, (centres[i] - lin @ out_centre)[:, None]])
        frame = cv2.warpAffine(
            bg, m, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101
        )
        for sprite, (pos, spin, grow) in zip(sprites, paths):
            # Forward map (sprite -> output): dst = pos + grow * R(spin) * (src - sprite_centre).
            sc = np.array([(sprite.shape[1] - 1) / 2, (sprite.shape[0] - 1) / 2])
            c, s = grow[i] * math.cos(spin[i]), grow[i] * math.sin(spin[i])
            lin = np.array([[c, -s], [s, c]])
            m = np.hstack([lin, (pos[i] - lin @ sc)[:, None]])
            layer = cv2.warpAffine(sprite, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            a = layer[..., 3:]
            frame = layer[..., :3] * a + frame * (1.0 - a)
        clip[i] = np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
    return clip


# --------------------------------------------------------------------------------------------- video scenes
def _fit_frame(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop ``img`` to the aspect ratio of ``height x width``, then resize to it."""
    ih, iw = img.shape[:2]
    if ih * width > iw * height:
        ch = max(1, round(iw * height / width))
        y0 = (ih - ch) // 2
        img = img[y0 : y0 + ch]
    else:
        cw = max(1, round(ih * width / height))
        x0 = (iw - cw) // 2
        img = img[:, x0 : x0 + cw]
    interp = cv2.INTER_AREA if img.shape[0] > height else cv2.INTER_CUBIC
    return cv2.resize(img, (width, height), interpolation=interp)


def _video_clips(path: Path, frames: int, size: tuple[int, int], limit: int | None):
    """Yield consecutive ``frames x H x W x 3`` uint8 BGR clips decoded from ``path`` (at most ``limit``)."""
    import av

    height, width = size
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise UserError(f"cannot open video {path}: {exc}") from None
    with container:
        if not container.streams.video:
            raise UserError(f"{path} has no video stream; pass a video file to --video")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        buf, count = [], 0
        try:
            for frame in container.decode(stream):
                buf.append(_fit_frame(frame.to_ndarray(format="bgr24"), height, width))
                if len(buf) == frames:
                    yield np.stack(buf)
                    buf, count = [], count + 1
                    if limit is not None and count >= limit:
                        return
        except av.error.FFmpegError as exc:
            raise UserError(f"cannot decode video {path} after {count * frames + len(buf)} frames: {exc}") from None


# --------------------------------------------------------------------------------------------- writing
def _scene_rngs(seed: int, scene_index: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent (content, degradation, scene brightness) generators; changing the noise never changes the
    content, and drawing a scene brightness changes neither (the first two are what they were before it existed)."""
    content, noise, brightness = np.random.SeedSequence([seed, scene_index]).spawn(3)
    return np.random.default_rng(content), np.random.default_rng(noise), np.random.default_rng(brightness)


def _camera_rng(seed: int, scene_index: int) -> np.random.Generator:
    """The generator a scene's camera is drawn from (``--cameras``): the fourth child of the scene's seed sequence,
    independent of the three of :func:`_scene_rngs` (which stay what they were before cameras existed)."""
    return np.random.default_rng(np.random.SeedSequence([seed, scene_index]).spawn(4)[3])


def scene_camera(params: dict, scene_index: int) -> dict | None:
    """The camera drawn for scene ``scene_index`` of a dataset with these parameters (``None`` without
    ``--cameras``)."""
    if "cameras" not in params:
        return None
    return draw_camera(_camera_rng(params["seed"], scene_index), params["cameras"])


def scale_brightness(frames: np.ndarray, factor: float) -> np.ndarray:
    """Clean uint8 sRGB frames multiplied by ``factor`` in linear light, clipped at full scale, as uint8 sRGB."""
    if factor == 1:
        return frames
    x = np.minimum(LINEAR_LUT[frames] * np.float32(factor), 1.0)
    return np.round(linear_to_srgb(x) * 255.0).astype(np.uint8)


def _frame_names(frames: int) -> list[str]:
    width = max(4, len(str(frames - 1)))
    return [f"{i:0{width}d}.npy" for i in range(frames)]


def _scene_names(scenes: int) -> list[str]:
    width = max(3, len(str(scenes)))
    return [f"scene{i + 1:0{width}d}" for i in range(scenes)]


def _scene_complete(out: Path, scene: str, frames: int) -> bool:
    names = _frame_names(frames)
    return all((out / sub / scene / n).is_file() for sub in ("GT", "input") for n in names)


def _scene_psnr_from_disk(out: Path, scene: str, frames: int) -> float:
    values = [calculate_psnr(np.load(out / "input" / scene / n), np.load(out / "GT" / scene / n))
              for n in _frame_names(frames)]
    return float(np.mean(values))


def white_level(clip: np.ndarray) -> float:
    """The white level of a ``T x H x W x 3`` uint8 sRGB clip: the median over its frames of
    :func:`sdsd.color.white_level`."""
    return float(np.median([color.white_level(LINEAR_LUT[frame]) for frame in clip]))


def expose_white(clip: np.ndarray, level: float) -> np.ndarray:
    """``clip`` scaled in linear light so that its :func:`white_level` is ``level`` (an all-black clip unchanged)."""
    white = white_level(clip)
    return clip if white <= 0 else scale_brightness(clip, level / white)


def _finish_scene(out: Path, scene: str, scene_index: int, clip: np.ndarray | None, params: dict) -> float:
    """Degrade one clean clip, write GT and input frames, return the scene's mean input PSNR."""
    cv2.setNumThreads(1)  # workers already run in parallel; nested OpenCV threads only oversubscribe
    if clip is None:
        clip = render_image_scene(scene_index, params["frames"], tuple(params["size"]), params["seed"])
    _, noise_rng, brightness_rng = _scene_rngs(params["seed"], scene_index)
    camera = scene_camera(params, scene_index)
    if "white_level" in params:  # absent when not asked for, so older datasets keep their parameters
        clip = expose_white(clip, params["white_level"])
    if "scene_brightness" in params:  # absent for the default 1, so older datasets keep their parameters
        clip = scale_brightness(clip, draw(brightness_rng, params["scene_brightness"]))
    if camera is not None:  # --cameras (never with --white-level or --scene-brightness)
        clip, low = expose_camera(clip, noise_rng, camera)
    else:
        low, _ = degrade_clip(
            clip,
            noise_rng,
            exposure=tuple(params["exposure"]),
            shot_noise=as_range(params["shot_noise"]),
            read_noise=as_range(params["read_noise"]),
            color_cast=params["color_cast"],
        )
    for sub in ("GT", "input"):
        (out / sub / scene).mkdir(parents=True, exist_ok=True)
    for name, gt, lq in zip(_frame_names(len(clip)), clip, low):
        atomic_save_npy(gt, out / "GT" / scene / name)
        atomic_save_npy(lq, out / "input" / scene / name)
    return float(np.mean([calculate_psnr(lq, gt) for gt, lq in zip(clip, low)]))


# --------------------------------------------------------------------------------------------- checks
def _check_range(name: str, value, positive: bool = False) -> None:
    """One value or ``MIN MAX``, finite, ``>= 0`` (``> 0`` when ``positive``), ``MIN <= MAX``."""
    if not isinstance(value, (int, float)) and len(value) != 2:
        raise UserError(f"{name} takes one value or MIN MAX, got {list(value)}")
    lo, hi = as_range(value)
    if not ((lo > 0 if positive else lo >= 0) and lo <= hi and math.isfinite(hi)):
        above, below = (">", "<") if positive else (">=", "<=")
        raise UserError(f"{name} must be a finite number {above} 0 (or MIN MAX with 0 {below} MIN <= MAX), "
                        f"got {value}")


def _check_params(scenes, test_scenes, frames, size, exposure, shot_noise, read_noise, color_cast, workers,
                  scene_brightness=1.0, white=None):
    if scenes is not None and scenes < 1:
        raise UserError(f"--scenes must be at least 1, got {scenes}")
    if test_scenes < 0 or (scenes is not None and test_scenes >= scenes):
        raise UserError(f"--test-scenes must be in [0, --scenes - 1] so at least one scene trains, got {test_scenes}")
    if frames < 1:
        raise UserError(f"--frames must be at least 1, got {frames}")
    if len(size) != 2 or any(v < 16 or v % 16 for v in size):
        raise UserError(f"--size H W must be two multiples of 16 (the network needs them), got {list(size)}")
    lo, hi = exposure
    if not 0 < lo <= hi <= 1:
        raise UserError(f"--exposure MIN MAX needs 0 < MIN <= MAX <= 1, got {lo} {hi}")
    _check_range("--shot-noise", shot_noise)
    _check_range("--read-noise", read_noise)
    _check_range("--scene-brightness", scene_brightness, positive=True)
    if white is not None and not 0 < white <= 1:
        raise UserError(f"--white-level must be in (0, 1] (1 = full scale, linear light), got {white}")
    if not (color_cast >= 0 and math.isfinite(color_cast)):
        raise UserError(f"--color-cast must be a finite number >= 0, got {color_cast}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")


def _prepare_out(out: Path, params: dict) -> dict | None:
    """Validate ``out`` for this run; return the existing summary when the dataset is already complete."""
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder; choose another path")
    marker = out / _PARAMS_FILE
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise UserError(f"output {out} is not empty and was not made by synthesize; choose an empty or new folder")
        try:
            previous = json.loads(marker.read_text())["params"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{marker} is unreadable; delete {out} and run again") from None
        for key in params:
            if previous.get(key) != params[key]:
                raise StaleDatasetError(
                    f"{out} was made with {key}={previous.get(key)!r}, not {params[key]!r}; "
                    "use the same options, another folder, or delete it"
                )
        summary_path = out / _SUMMARY_FILE
        if summary_path.is_file():
            try:
                return json.loads(summary_path.read_text())
            except ValueError:
                return None  # half-written summaries cannot exist (atomic), but a hand-edited one is just redone
        return None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "params": params}), marker)
    return None


# --------------------------------------------------------------------------------------------- main API
def synthesize(
    out_dir: str | os.PathLike,
    *,
    scenes: int | None = None,
    test_scenes: int = DEFAULT_TEST_SCENES,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    video: str | os.PathLike | None = None,
    exposure: tuple[float, float] = DEFAULT_EXPOSURE,
    shot_noise: float | tuple[float, float] = DEFAULT_SHOT_NOISE,
    read_noise: float | tuple[float, float] = DEFAULT_READ_NOISE,
    color_cast: float = DEFAULT_COLOR_CAST,
    scene_brightness: float | tuple[float, float] = 1.0,
    white_level: float | None = None,
    cameras: str | None = None,
    camera_ranges: dict | None = None,
    workers: int | None = None,
    verbose: bool = True,
) -> dict:
    """Write a paired low-light video dataset (SDSD layout) into ``out_dir`` and return its summary.

    Args:
        out_dir: output folder; must be new, empty, or an earlier output of this function with the same options.
        scenes: number of scenes; default 12 from photographs, or every full clip of the video.
        test_scenes: the last ``test_scenes`` scenes are the test split (written to ``testing_dir.txt``).
        frames: frames per scene.
        size: ``(H, W)``, multiples of 16.
        seed: seed of all random choices; equal options give byte-identical files.
        video: a video file to use instead of the shipped photographs.
        exposure: ``(min, max)`` exposure factor range (log-uniform, one per scene).
        shot_noise: Poisson variance gain in linear full-scale units (see module docstring), or ``(min, max)``
            to draw it per scene.
        read_noise: Gaussian noise standard deviation in linear full-scale units, or ``(min, max)``.
        color_cast: per-scene colour-cast strength (0 = none).
        scene_brightness: factor on each clean scene in linear light before the degradation (its result is the
            ground truth), or ``(min, max)`` to draw it log-uniformly per scene; 1 (default) leaves scenes as they are.
        white_level: scale each clean scene in linear light so that its white level is this (before
            ``scene_brightness``); ``None`` (default) leaves scenes as they are.
        cameras: the name of a camera distribution (:data:`CAMERA_DISTRIBUTIONS`, e.g. ``"wild"``): each scene gets
            its own camera drawn from it (response curve, exposure, colour cast, noise, ground-truth white level),
            recorded per scene in the summary's ``scene_cameras``; it replaces ``exposure``, ``shot_noise``,
            ``read_noise``, ``color_cast`` and ``white_level``, which must stay at their defaults, and excludes
            ``scene_brightness``. ``None`` (default): the one camera those options describe.
        camera_ranges: overrides of the distribution's ranges, ``{key: (min, max)}`` for the keys of
            :data:`CAMERA_RANGES`, and ``{"responses": [kind, ...]}`` (:func:`camera_distribution`).
        workers: worker processes (default: up to 4, at most the CPU count).
        verbose: print the summary line.

    Returns:
        The summary written to ``out_dir/summary.json``: parameters, scene names, test scenes, the
        ``testing_dir`` string, ``input_psnr_db`` (mean over scenes of the per-frame mean) and per-scene PSNR;
        with ``cameras``, also ``scene_cameras``: each scene's drawn camera (:func:`draw_camera`) and
        ``gt_white_level``, the white level its ground truth ended at (:func:`white_level`; below the drawn one where
        highlights clip).

    Raises:
        UserError: bad options, an unusable output folder, or a video that cannot be decoded.
    """
    started = time.perf_counter()
    size = tuple(int(v) for v in size)
    exposure = tuple(float(v) for v in exposure)
    if len(exposure) != 2:
        raise UserError(f"--exposure takes MIN MAX, got {list(exposure)}")
    _check_params(scenes, test_scenes, frames, size, exposure, shot_noise, read_noise, color_cast, workers,
                  scene_brightness, white_level)
    out = Path(out_dir)
    if video is not None:
        video = Path(video)
        if not video.is_file():
            raise UserError(f"--video {video} does not exist; pass a video file")
        source = {"video": str(video.resolve()), "video_bytes": video.stat().st_size}
    else:
        source = {"images": "skimage.data"}
        scenes = DEFAULT_SCENES if scenes is None else scenes
        if test_scenes >= scenes:
            raise UserError(f"--test-scenes ({test_scenes}) must be smaller than --scenes ({scenes})")
    # Everything that changes a pixel; test_scenes only changes the split files and may differ on a rerun.
    params = {
        "source": source,
        "scenes": scenes,
        "frames": frames,
        "size": list(size),
        "seed": int(seed),
        "exposure": list(exposure),
        "shot_noise": _plain_range(shot_noise),
        "read_noise": _plain_range(read_noise),
        "color_cast": float(color_cast),
    }
    if white_level is not None:
        params["white_level"] = float(white_level)
    if as_range(scene_brightness) != (1.0, 1.0):
        params["scene_brightness"] = _plain_range(scene_brightness)
    if cameras is not None:
        _check_camera_conflicts(params)
        params["cameras"] = camera_distribution(cameras, camera_ranges)
        params["cameras_name"] = cameras
    elif camera_ranges:
        raise UserError("--camera-range and --camera-curves change a --cameras distribution; add --cameras wild")
    done = _prepare_out(out, params)
    if done is not None and done.get("test_scenes_count") == test_scenes:
        if verbose:
            print(_summary_line(out, done, time.perf_counter() - started, skipped=True))
        return done
    remove_stale_temps(str(out), recursive=True)  # files an interrupted earlier run was writing

    workers = workers or max(1, min(4, os.cpu_count() or 1))
    psnr: dict[int, float] = {}
    if video is None:
        names = _scene_names(scenes)
        todo = []
        for i, name in enumerate(names):
            if _scene_complete(out, name, frames):
                psnr[i] = _scene_psnr_from_disk(out, name, frames)
            else:
                todo.append(i)
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                psnr[i] = _finish_scene(out, names[i], i, None, params)
        else:
            with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=_SPAWN) as pool:
                futures = {pool.submit(_finish_scene, out, names[i], i, None, params): i for i in todo}
                for fut in cf.as_completed(futures):
                    psnr[futures[fut]] = fut.result()
        count = scenes
    else:
        count = _run_video(out, video, params, scenes, workers, psnr)
        names = _scene_names(count)
        if test_scenes >= count:
            raise UserError(f"--test-scenes ({test_scenes}) must be smaller than the {count} scenes the video gives")

    per_scene = [psnr[i] for i in range(count)]
    test_names = names[count - test_scenes :] if test_scenes else []
    summary = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "params": params,
        "scenes": names,
        "test_scenes": test_names,
        "test_scenes_count": test_scenes,
        "testing_dir": ",".join(test_names),
        "input_psnr_db": float(np.mean(per_scene)),
        "scene_input_psnr_db": dict(zip(names, per_scene)),
    }
    if "cameras" in params:
        summary["scene_cameras"] = {name: _camera_record(out, name, i, params) for i, name in enumerate(names)}
    atomic_write_text(summary["testing_dir"] + "\n", out / _TESTING_FILE)
    atomic_write_json(summary, out / _SUMMARY_FILE)
    if verbose:
        print(_summary_line(out, summary, time.perf_counter() - started, skipped=False))
    return summary


def _check_camera_conflicts(params: dict) -> None:
    """``--cameras`` draws what these options fix: refuse them unless they are at their defaults."""
    fixed = {"--exposure": params["exposure"] != list(DEFAULT_EXPOSURE),
             "--shot-noise": params["shot_noise"] != DEFAULT_SHOT_NOISE,
             "--read-noise": params["read_noise"] != DEFAULT_READ_NOISE,
             "--color-cast": params["color_cast"] != DEFAULT_COLOR_CAST,
             "--white-level": "white_level" in params, "--scene-brightness": "scene_brightness" in params}
    given = [name for name, set_ in fixed.items() if set_]
    if given:
        raise UserError(f"--cameras draws the exposure, noise, colour cast and white level per scene; drop "
                        f"{', '.join(given)} (change a range with --camera-range KEY MIN MAX)")


def _camera_record(out: Path, scene: str, scene_index: int, params: dict) -> dict:
    """A scene's drawn camera and the white level its ground truth (on disk) ended at."""
    camera = scene_camera(params, scene_index)
    gt = np.stack([np.load(out / "GT" / scene / n) for n in _frame_names(params["frames"])])
    camera["gt_white_level"] = white_level(gt)
    return camera


def _run_video(out: Path, video: Path, params: dict, scenes: int | None, workers: int, psnr: dict) -> int:
    """Decode ``video`` clip by clip, degrade and write each scene; return the number of scenes."""
    frames = params["frames"]
    # Scene names need the final count for their zero padding; 3 digits cover up to 999 clips, more is refused.
    limit = scenes if scenes is not None else 999
    names = _scene_names(limit)
    count = 0
    pool = cf.ProcessPoolExecutor(workers, mp_context=_SPAWN) if workers > 1 else None
    pending: dict[cf.Future, int] = {}
    try:
        for i, clip in enumerate(_video_clips(video, frames, tuple(params["size"]), limit)):
            count = i + 1
            if _scene_complete(out, names[i], frames):
                psnr[i] = _scene_psnr_from_disk(out, names[i], frames)
            elif pool is None:
                psnr[i] = _finish_scene(out, names[i], i, clip, params)
            else:
                pending[pool.submit(_finish_scene, out, names[i], i, clip, params)] = i
                if len(pending) >= 2 * workers:  # bound the clips held in memory
                    finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for fut in finished:
                        psnr[pending.pop(fut)] = fut.result()
        for fut in cf.as_completed(list(pending)):
            psnr[pending.pop(fut)] = fut.result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if count == 0:
        raise UserError(f"--video {video} has fewer than --frames {frames} frames; lower --frames")
    if scenes is not None and count < scenes:
        raise UserError(
            f"--video {video} gives only {count} scenes of {frames} frames, not --scenes {scenes}; "
            "lower --scenes or --frames"
        )
    return count


def _summary_line(out: Path, summary: dict, elapsed: float, skipped: bool) -> str:
    p = summary["params"]
    state = "already complete" if skipped else f"wrote in {elapsed:.1f} s"
    return (
        f"{out}: {len(summary['scenes'])} scenes x {p['frames']} frames at {p['size'][0]}x{p['size'][1]} "
        f"({state}); input PSNR vs GT {summary['input_psnr_db']:.2f} dB; "
        f"testing_dir: {summary['testing_dir'] or '(none)'}"
    )


# --------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (its description is the module docstring)."""
    parser = ArgumentParser(
        prog="python -m sdsd.tools.synthesize",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("out", help="output folder (new, empty, or an earlier output with the same options)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--images", action="store_true", help="use the photographs shipped with scikit-image (default)")
    src.add_argument("--video", metavar="FILE", help="use a video file (anything PyAV decodes)")
    parser.add_argument("--scenes", type=int, help=f"number of scenes (default {DEFAULT_SCENES}; video: all)")
    parser.add_argument("--test-scenes", type=int, default=DEFAULT_TEST_SCENES, help="last K scenes are the test split")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames per scene")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=list(DEFAULT_SIZE), help="frame size")
    parser.add_argument("--seed", type=int, default=0, help="seed; equal options give identical bytes")
    parser.add_argument(
        "--exposure", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(DEFAULT_EXPOSURE),
        help="exposure factor range, drawn log-uniformly per scene",
    )  # fmt: skip
    parser.add_argument(
        "--shot-noise", type=float, nargs="+", metavar="A", default=[DEFAULT_SHOT_NOISE],
        help="Poisson variance gain a: variance a*x of a linear signal x in [0, 1] (1/a electrons at full scale); "
        "MIN MAX draws it log-uniformly per scene",
    )  # fmt: skip
    parser.add_argument(
        "--read-noise", type=float, nargs="+", metavar="B", default=[DEFAULT_READ_NOISE],
        help="std of the Gaussian read noise in linear units (1.0 = full scale); MIN MAX draws it per scene",
    )  # fmt: skip
    parser.add_argument(
        "--color-cast", type=float, default=DEFAULT_COLOR_CAST,
        help="per-scene colour cast: channel log-gains drawn from U(-s, s) (0 = none)",
    )  # fmt: skip
    parser.add_argument(
        "--scene-brightness", type=float, nargs="+", metavar="S", default=[1.0],
        help="factor on each clean scene in linear light before darkening (the result is the ground truth); "
        "MIN MAX draws it log-uniformly per scene, so scenes differ in brightness as real ones do (1 = none)",
    )  # fmt: skip
    parser.add_argument(
        "--white-level", type=float, metavar="W",
        help=f"scale each clean scene in linear light so that its white level ({color.WHITE_LEVEL_TEXT}, median "
        "over frames) is W, as an automatic exposure would (default: as is)",
    )  # fmt: skip
    parser.add_argument(
        "--cameras", choices=sorted(CAMERA_DISTRIBUTIONS), metavar="NAME",
        help="draw a camera per scene from a distribution (wild: sRGB, gamma 1.8-2.6 or log response; exposure, "
        "shot and read noise, colour cast, ground-truth white level over ranges; each scene's recorded in "
        "summary.json); replaces --exposure, --shot-noise, --read-noise, --color-cast, --white-level",
    )  # fmt: skip
    parser.add_argument(
        "--camera-range", nargs=3, action="append", metavar=("KEY", "MIN", "MAX"), default=None,
        help=f"change one range of the --cameras distribution (KEY: {', '.join(CAMERA_RANGES)}); repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--camera-curves", nargs="+", metavar="KIND", default=None,
        help=f"the response curves --cameras draws from ({', '.join(color.RESPONSES)})",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, help="worker processes (default: up to 4)")
    return parser


def _cli_camera_ranges(ranges: list[list[str]] | None, curves: list[str] | None) -> dict | None:
    if not ranges and not curves:
        return None
    out: dict = {}
    for key, lo, hi in ranges or []:
        try:
            out[key] = (float(lo), float(hi))
        except ValueError:
            raise UserError(f"--camera-range {key} {lo} {hi}: MIN and MAX must be numbers") from None
    if curves:
        out["responses"] = curves
    return out


def _cli_range(name: str, values: list[float]):
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return tuple(values)
    raise UserError(f"{name} takes one value or MIN MAX, got {len(values)} values")


@cli_main
def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    synthesize(
        args.out,
        scenes=args.scenes,
        test_scenes=args.test_scenes,
        frames=args.frames,
        size=tuple(args.size),
        seed=args.seed,
        video=args.video,
        exposure=tuple(args.exposure),
        shot_noise=_cli_range("--shot-noise", args.shot_noise),
        read_noise=_cli_range("--read-noise", args.read_noise),
        color_cast=args.color_cast,
        scene_brightness=_cli_range("--scene-brightness", args.scene_brightness),
        white_level=args.white_level,
        cameras=args.cameras,
        camera_ranges=_cli_camera_ranges(args.camera_range, args.camera_curves),
        workers=args.workers,
    )


if __name__ == "__main__":
    sys.exit(main())
