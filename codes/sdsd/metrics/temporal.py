"""Temporal consistency of a video: warping error and flicker (docs/protocol.md#temporal-metrics).

Both look at consecutive frames ``t - 1, t`` of one scene. Frames are ``H x W x 3`` **RGB** arrays, uint8, uint16 or
float in [0, 1]; every computation is on float values in [0, 1] (:func:`to_unit`). The evaluation hands in
the same uint8 images PSNR is computed on, so a prediction read back from a PNG gives the same numbers.

Motion (:func:`estimate_motion`): dense optical flow from frame ``t`` to frame ``t - 1`` of a *reference* video
(the ground truth when there is one, else the brightened input), computed by OpenCV's DIS optical flow
(``cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)``, its default parameters: 8 x 8 patches, stride
3, finest scale 1, 25 gradient-descent iterations per patch, variational refinement with 5 iterations, alpha 20,
delta 5, gamma 10) on the BT.601 grey image (``cv2.COLOR_RGB2GRAY`` of the uint8 frame), and the backward flow
from ``t - 1`` to ``t``. A pixel ``x`` of frame ``t`` is *valid* (not occluded) when ``x + f(x)`` lies inside the
frame and the two flows agree (the forward-backward check of Sundaram, Brox and Keutzer, ECCV 2010)::

    |f(x) + b(x + f(x))|^2 <= 0.01 (|f(x)|^2 + |b(x + f(x))|^2) + 0.5

with ``f`` the flow from ``t`` to ``t - 1``, ``b`` the flow from ``t - 1`` to ``t`` sampled bilinearly. The flow
of a pair is computed once and used for every video scored on it (output, input, ground truth).

Warping error (Lai et al., "Learning Blind Video Temporal Consistency", ECCV 2018), per pair::

    E_warp(t) = (1 / |V|) sum_{x in V} || O_t(x) - O_{t-1}(x + f(x)) ||^2

the squared Euclidean norm over the three RGB channels, ``V`` the valid pixels, ``O_{t-1}`` sampled bilinearly
(``cv2.remap``). ``None`` for a pair without a valid pixel.

Flicker, per pair: with ``B(F)`` the mean BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of a frame over all its
pixels, ``dB_O(t) = B(O_t) - B(O_{t-1})``:

* against a ground truth ``G``: ``flicker(t) = |dB_O(t) - dB_G(t)|`` (0 for the ground truth itself);
* against an input ``I`` (no ground truth): ``flicker(t) = |dB_O(t) - s_t dB_I(t)|`` with the pair's brightening
  ``s_t = (B(O_t) + B(O_{t-1})) / (B(I_t) + B(I_{t-1}))``, so an output that is any constant gain times its input
  has flicker 0.

A video's figure is the mean over its pairs. :class:`ReferenceMeter` (ground truth) and :class:`NoReferenceMeter`
(input only) take frames one at a time; :func:`sequence_metrics` and :func:`no_reference_metrics` take whole
sequences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np

__all__ = ["TEMPORAL_METRICS", "FLOW_METHOD", "LUMA_RGB", "Motion", "to_unit", "brightness", "grey",
           "estimate_motion", "warp_previous", "warp_error", "flicker", "pair_terms", "mean_terms",
           "sequence_metrics", "ReferenceMeter", "NoReferenceMeter", "no_reference_metrics", "brightened_grey",
           "FLOW_BRIGHTNESS", "format_report"]

#: The temporal metrics ``protocol.temporal`` may list, in report order.
TEMPORAL_METRICS = ("warp", "flicker")
#: How the flow is computed (recorded in the metrics JSON).
FLOW_METHOD = ("OpenCV DIS optical flow, PRESET_MEDIUM, on the BT.601 grey uint8 frames; occlusion by the "
               "forward-backward check |f + b|^2 <= 0.01 (|f|^2 + |b|^2) + 0.5")
#: BT.601 luma weights of R, G, B (the brightness of flicker).
LUMA_RGB = (0.299, 0.587, 0.114)
#: Mean grey level (in [0, 1]) the input pair is brought to before the flow of the no-reference metrics.
FLOW_BRIGHTNESS = 0.4
# Forward-backward consistency constants (Sundaram et al. 2010, as in Ruder et al. 2016 and Lai et al. 2018).
_FB_ALPHA = 0.01
_FB_BETA = 0.5


@dataclasses.dataclass
class Motion:
    """The motion of one pair: ``flow`` (``H x W x 2``, float32, (dx, dy) from frame ``t`` to frame ``t - 1``) and
    ``valid`` (``H x W`` bool, the pixels of frame ``t`` that are not occluded)."""

    flow: np.ndarray
    valid: np.ndarray
    _maps: tuple[np.ndarray, np.ndarray] | None = dataclasses.field(default=None, repr=False, compare=False)

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x + f_x, y + f_y)``: where each pixel of frame ``t`` samples frame ``t - 1`` (``cv2.remap``'s maps)."""
        if self._maps is None:
            xs, ys = _grid(*self.flow.shape[:2])
            self._maps = (xs + self.flow[..., 0], ys + self.flow[..., 1])
        return self._maps


def to_unit(frame: np.ndarray) -> np.ndarray:
    """``frame`` as float32 in [0, 1]: a uint8 frame divided by 255, a uint16 one (a deep video's) by 65535, a
    float frame clipped."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame.astype(np.float32) / np.float32(255.0)
    if frame.dtype == np.uint16:
        return frame.astype(np.float32) / np.float32(65535.0)
    return np.clip(frame.astype(np.float32, copy=False), 0.0, 1.0)


def brightness(frame: np.ndarray) -> float:
    """Mean BT.601 luma of an RGB frame, in [0, 1] (float64 sum over all pixels)."""
    f = np.asarray(frame)
    if f.dtype != np.uint8:
        f = to_unit(f)
    means = cv2.mean(np.ascontiguousarray(f))  # per channel, summed in float64
    scale = 255.0 if f.dtype == np.uint8 else 1.0
    return float(sum(w * m for w, m in zip(LUMA_RGB, means[:3]))) / scale


def grey(frame: np.ndarray) -> np.ndarray:
    """The uint8 BT.601 grey image (``cv2.COLOR_RGB2GRAY``) of an RGB frame, contiguous (DIS needs it)."""
    f = np.asarray(frame)
    if f.dtype != np.uint8:
        f = np.round(to_unit(f) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY))


def _dis():
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def _sample(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def estimate_motion(prev_grey: np.ndarray, cur_grey: np.ndarray) -> Motion:
    """The flow from ``cur`` (frame ``t``) to ``prev`` (frame ``t - 1``) and its valid pixels (module docstring).

    Args:
        prev_grey, cur_grey: ``H x W`` uint8 grey images (:func:`grey`).
    """
    prev_grey, cur_grey = np.ascontiguousarray(prev_grey), np.ascontiguousarray(cur_grey)
    if prev_grey.shape != cur_grey.shape or prev_grey.ndim != 2:
        raise ValueError(f"expected two H x W grey images of one size, got {prev_grey.shape} and {cur_grey.shape}")
    forward = _dis().calc(cur_grey, prev_grey, None)  # t -> t-1
    backward = _dis().calc(prev_grey, cur_grey, None)  # t-1 -> t
    h, w = cur_grey.shape
    motion = Motion(forward, np.zeros((h, w), bool))
    map_x, map_y = motion.maps()
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    back = _sample(backward, map_x, map_y)
    gap = np.sum((forward + back) ** 2, axis=-1)
    scale = np.sum(forward ** 2, axis=-1) + np.sum(back ** 2, axis=-1)
    motion.valid = inside & (gap <= _FB_ALPHA * scale + _FB_BETA)
    return motion


def warp_previous(prev: np.ndarray, motion: Motion) -> np.ndarray:
    """Frame ``t - 1`` warped onto frame ``t``: ``prev(x + f(x))`` (bilinear), float32 in [0, 1]."""
    return _sample(to_unit(prev), *motion.maps())


def warp_error(prev: np.ndarray, cur: np.ndarray, motion: Motion) -> float | None:
    """``E_warp`` of one pair: the mean over valid pixels of the squared RGB distance between frame ``t`` and the
    warped frame ``t - 1``; ``None`` when no pixel is valid."""
    count = int(motion.valid.sum())
    if count == 0:
        return None
    diff = to_unit(cur) - warp_previous(prev, motion)
    per_pixel = np.einsum("hwc,hwc->hw", diff, diff)  # float32 per pixel, summed in float64 below
    return float(per_pixel[motion.valid].sum(dtype=np.float64) / count)


def flicker(prev: np.ndarray, cur: np.ndarray, ref_prev: np.ndarray, ref_cur: np.ndarray) -> float:
    """``|dB_O - dB_G|`` of one pair: how much more (or less) the brightness of ``prev -> cur`` changes than that
    of the reference pair ``ref_prev -> ref_cur``."""
    return abs((brightness(cur) - brightness(prev)) - (brightness(ref_cur) - brightness(ref_prev)))


def pair_terms(gt_prev: np.ndarray, gt_cur: np.ndarray, videos: Mapping[str, tuple[np.ndarray, np.ndarray]],
               metrics: Sequence[str] = TEMPORAL_METRICS, motion: Motion | None = None) -> dict:
    """The temporal terms of one pair of frames, scored against the ground truth.

    Args:
        gt_prev, gt_cur: ground-truth frames ``t - 1`` and ``t`` (RGB); the flow is computed on them once.
        videos: ``name -> (frame t-1, frame t)`` of each video to score (e.g. ``output``, ``input``).
        metrics: which of :data:`TEMPORAL_METRICS`.
        motion: the pair's motion when already computed.

    Returns:
        ``{"warp": {name: E, ..., "gt": E}, "flicker": {name: F, ...}}`` with the metrics asked for; ``warp`` also
        holds the ground truth's own warping error (the floor) under ``gt``.
    """
    out: dict = {}
    if "warp" in metrics:
        motion = motion or estimate_motion(grey(gt_prev), grey(gt_cur))
        out["warp"] = {name: warp_error(p, c, motion) for name, (p, c) in videos.items()}
        out["warp"]["gt"] = warp_error(gt_prev, gt_cur, motion)
    if "flicker" in metrics:
        change = brightness(gt_cur) - brightness(gt_prev)
        out["flicker"] = {name: abs(brightness(c) - brightness(p) - change) for name, (p, c) in videos.items()}
    return out


def mean_terms(terms: Iterable[dict]) -> dict:
    """The mean of per-pair terms (:func:`pair_terms`) key by key, ``None`` values left out (a mean over no value
    is ``None``); adds ``pairs``, the number of pairs."""
    terms = list(terms)
    out: dict = {}
    for metric in TEMPORAL_METRICS:
        names = [n for t in terms for n in t.get(metric, {})]
        if not names:
            continue
        out[metric] = {}
        for name in dict.fromkeys(names):
            values = [t[metric][name] for t in terms if t.get(metric, {}).get(name) is not None]
            out[metric][name] = math.fsum(values) / len(values) if values else None
    out["pairs"] = len(terms)
    return out


def sequence_metrics(gt: Sequence[np.ndarray], videos: Mapping[str, Sequence[np.ndarray]],
                     metrics: Sequence[str] = TEMPORAL_METRICS) -> dict:
    """The temporal metrics of whole sequences against their ground truth: :func:`mean_terms` over every pair.

    Args:
        gt: the ground-truth frames of one scene, in order.
        videos: ``name -> frames`` (as many as ``gt``) of each video to score.
    """
    meter = ReferenceMeter(metrics)
    for t, ref in enumerate(gt):
        meter.add(ref, {name: frames[t] for name, frames in videos.items()})
    return meter.summary()


class ReferenceMeter:
    """Temporal metrics of videos against a ground truth, one frame at a time (frames in order)."""

    def __init__(self, metrics: Sequence[str] = TEMPORAL_METRICS):
        self.metrics = tuple(metrics)
        self.terms: list[dict] = []
        self._prev: tuple[np.ndarray, dict] | None = None

    def add(self, gt: np.ndarray, frames: Mapping[str, np.ndarray]) -> dict | None:
        """Add frame ``t`` of the ground truth and of each video; returns the pair's terms (``None`` at ``t = 0``)."""
        prev, self._prev = self._prev, (gt, dict(frames))
        if prev is None:
            return None
        terms = pair_terms(prev[0], gt, {n: (prev[1][n], f) for n, f in frames.items()}, self.metrics)
        self.terms.append(terms)
        return terms

    def summary(self) -> dict:
        """:func:`mean_terms` of the pairs added so far."""
        return mean_terms(self.terms)


def brightened_grey(prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey images of an input pair brightened for the flow: both frames multiplied by the one gain that brings
    their mean grey level to :data:`FLOW_BRIGHTNESS` (at most 100), clipped to [0, 1], as uint8."""
    a = cv2.cvtColor(np.ascontiguousarray(to_unit(prev)), cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(np.ascontiguousarray(to_unit(cur)), cv2.COLOR_RGB2GRAY)
    level = (float(a.mean(dtype=np.float64)) + float(b.mean(dtype=np.float64))) / 2
    gain = min(FLOW_BRIGHTNESS / max(level, 1e-6), 100.0)

    def scaled(g: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.round(np.clip(g * gain, 0.0, 1.0) * 255.0).astype(np.uint8))

    return scaled(a), scaled(b)


class NoReferenceMeter:
    """Temporal metrics of an enhanced video against its own input, without a ground truth, frame by frame.

    Per pair: the flow of the brightened input (:func:`brightened_grey`, :func:`estimate_motion`); the warping
    error of the output and of the brightened input on it (the latter: how far the flow and the input's noise
    alone take the figure); the output's flicker relative to the input (module docstring).
    """

    def __init__(self):
        self.terms: list[dict] = []
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self.frames = 0

    def add(self, output: np.ndarray, source: np.ndarray) -> dict | None:
        """Add frame ``t`` of the output and of its input (RGB, same size); returns the pair's terms."""
        if np.shape(output)[:2] != np.shape(source)[:2]:
            raise ValueError(f"output and input differ in size: {np.shape(output)} vs {np.shape(source)}")
        prev, self._prev = self._prev, (output, source)
        self.frames += 1
        if prev is None:
            return None
        g_prev, g_cur = brightened_grey(prev[1], source)
        motion = estimate_motion(g_prev, g_cur)
        b_out = (brightness(prev[0]), brightness(output))
        b_in = (brightness(prev[1]), brightness(source))
        gain = (b_out[0] + b_out[1]) / max(b_in[0] + b_in[1], 1e-12)
        bright = [np.repeat(g[..., None], 3, axis=2) for g in (g_prev, g_cur)]
        terms = {"warp": {"output": warp_error(prev[0], output, motion),
                          "input": warp_error(bright[0], bright[1], motion)},
                 "flicker": {"output": abs((b_out[1] - b_out[0]) - gain * (b_in[1] - b_in[0]))}}
        self.terms.append(terms)
        return terms

    def summary(self) -> dict:
        """``{"warp": {"output", "input"}, "flicker": {"output"}, "pairs", "frames"}``: means over the pairs."""
        out = mean_terms(self.terms)
        out["frames"] = self.frames
        return out


def no_reference_metrics(output: Iterable[np.ndarray], source: Iterable[np.ndarray]) -> dict:
    """:class:`NoReferenceMeter` over two frame sequences of the same length (``ValueError`` otherwise)."""
    meter = NoReferenceMeter()
    sentinel = object()
    out_it, in_it = iter(output), iter(source)
    while True:
        a, b = next(out_it, sentinel), next(in_it, sentinel)
        if a is sentinel and b is sentinel:
            return meter.summary()
        if a is sentinel or b is sentinel:
            raise ValueError(f"the enhanced video and its input differ in length (one ends after {meter.frames} "
                             "frames)")
        meter.add(a, b)


def format_report(summary: dict, output_name: str = "enhanced", input_name: str = "input") -> str:
    """The small table of :meth:`NoReferenceMeter.summary` (warping errors in units of 1e-3)."""

    def num(value, scale: float = 1.0, digits: int = 4) -> str:
        return f"{'-':>10}" if value is None else f"{value * scale:>10.{digits}f}"

    warp, flick = summary.get("warp", {}), summary.get("flicker", {})
    rows = [(output_name, warp.get("output"), flick.get("output")),
            (f"{input_name} (brightened)", warp.get("input"), None)]
    width = max(len("video"), *(len(r[0]) for r in rows))
    lines = [f"{'video':<{width}}  {'frames':>6}  {'pairs':>5}  {'warp x1e-3':>10}  {'flicker':>10}"]
    for name, w, f in rows:
        lines.append(f"{name:<{width}}  {summary.get('frames', 0):>6d}  {summary['pairs']:>5d}  {num(w, 1e3)}  "
                     f"{num(f, 1.0, 5)}")
    lines.append("warp: mean squared RGB distance (in [0, 1]) between each frame and the previous one warped by the "
                 "flow of the brightened input, occluded pixels left out (the brightened input's own figure: the "
                 "floor its noise and the flow leave); flicker: |change of mean brightness - the input's change "
                 "times the pair's brightening|")
    return "\n".join(lines)
