"""Colour in one place: the sRGB transfer curves, the uint8 -> linear table, and the white level.

* :func:`srgb_to_linear` and :func:`linear_to_srgb` take a NumPy array (or anything :func:`numpy.asarray` reads)
  and return float32, or a torch tensor and return a tensor of its dtype on its device; the same formulas
  (IEC 61966-2-1) in both.
* :data:`LINEAR_LUT` is the linear value of each uint8 code, from the NumPy curve in float32; :func:`to_linear`
  decodes a frame with it (uint8) or with the curve (floats).
* :func:`encode` and :func:`decode` are a family of camera response curves (:data:`RESPONSES`: ``srgb``,
  ``gamma`` (a pure power law), ``log`` (a log-like, filmic curve) and ``bt709``), NumPy and torch alike, with a
  parameter that may be an array or tensor broadcasting against the values (one curve per sample of a batch);
  :func:`response_lut` is the uint8 -> linear table of any of them.
* :func:`white_level` is the brightness statistic that training records (``sdsd.exposure.summarize``), that video
  matching aims at (``sdsd.exposure.ExposureMatcher``) and that ``sdsd.tools.synthesize --white-level`` sets.

Layouts: NumPy frames are channels-last (``H x W x C``, a stack ``N x H x W x C``), as OpenCV and video decoders
give them; torch frames are channels-first (``C x H x W``, ``N x C x H x W``), as the network reads them.

This module imports torch only if the caller has: an object cannot be a tensor unless torch is loaded, so the
NumPy-only tools (``sdsd.tools.synthesize`` and its worker processes) do not pay for importing it.
"""

from __future__ import annotations

import sys

import numpy as np

#: The side of the moving average :func:`white_level` reads (box means instead of single pixels).
SMOOTHING = 4
#: The percentile of the linear values :func:`white_level` reads by default.
WHITE_PERCENTILE = 99
#: :func:`white_level` reads at most about this many values per channel of each frame (a strided subsample).
SAMPLES_PER_FRAME = 200_000
#: :func:`white_level` in a few words, for messages and help texts.
WHITE_LEVEL_TEXT = f"the {WHITE_PERCENTILE}th percentile of the linear values over {SMOOTHING}x{SMOOTHING} averages"


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# -- the sRGB transfer curves ------------------------------------------------------------------------------------


def srgb_to_linear(x):
    """Inverse sRGB transfer curve (IEC 61966-2-1): sRGB values in [0, 1] -> linear light in [0, 1].

    Values are clipped to [0, 1] first. A tensor comes back as a tensor of its dtype and device; anything else is
    read with :func:`numpy.asarray` and computed and returned in float32.
    """
    if _is_tensor(x):
        import torch

        x = x.clamp(0, 1)
        return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(y):
    """sRGB transfer curve (IEC 61966-2-1): linear light -> sRGB values in [0, 1].

    Values are clipped to [0, 1] first, as a sensor saturates. Types as :func:`srgb_to_linear`.
    """
    if _is_tensor(y):
        import torch

        y = y.clamp(0, 1)
        # The power is taken of at least 1e-12 so that its gradient stays finite at 0 (that branch is unused there).
        return torch.where(y <= 0.0031308, 12.92 * y, 1.055 * y.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    y = np.clip(np.asarray(y, dtype=np.float32), 0.0, 1.0)
    return np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1.0 / 2.4) - 0.055).astype(np.float32)


#: The linear value of each uint8 sRGB code ``v``: ``srgb_to_linear(v / 255)`` in float32 (read-only).
LINEAR_LUT = srgb_to_linear(np.arange(256, dtype=np.float32) / np.float32(255))
LINEAR_LUT.setflags(write=False)


def to_linear(frame: np.ndarray) -> np.ndarray:
    """An sRGB frame as float32 linear light: uint8 codes through :data:`LINEAR_LUT`, floats in [0, 1] through
    :func:`srgb_to_linear`."""
    if frame.dtype == np.uint8:
        return LINEAR_LUT[frame]
    return srgb_to_linear(frame)


# -- camera response curves ---------------------------------------------------------------------------------------

#: The response curves :func:`encode` and :func:`decode` know, with what their parameter means and its default:
#: ``srgb`` (IEC 61966-2-1, no parameter), ``gamma`` (``v = y ** (1 / g)``, the parameter ``g``), ``log``
#: (``v = log(1 + c y) / log(1 + c)``, the parameter ``c``: a log curve with a linear toe at black and a soft shoulder,
#: like the log and filmic profiles of video cameras) and ``bt709`` (the ITU-R BT.709 camera curve, no parameter).
RESPONSES = {"srgb": None, "gamma": 2.2, "log": 16.0, "bt709": None}


def check_response(kind: str, param=None) -> None:
    """Raise ``ValueError`` unless ``kind`` is one of :data:`RESPONSES` with a usable parameter (``gamma`` > 0,
    ``log`` > 0; every value of an array parameter)."""
    if kind not in RESPONSES:
        raise ValueError(f"unknown response curve {kind!r}; known: {', '.join(RESPONSES)}")
    if RESPONSES[kind] is None or param is None:
        return
    values = param.detach().cpu().numpy() if _is_tensor(param) else np.asarray(param, dtype=np.float64)
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError(f"the {kind} curve needs a finite parameter > 0")


def _param(kind: str, param):
    return RESPONSES[kind] if param is None else param


def encode(linear, kind: str = "srgb", param=None):
    """A camera's response curve: linear light in [0, 1] -> encoded values in [0, 1] (clipped to [0, 1] first).

    Args:
        linear: a NumPy array (or anything :func:`numpy.asarray` reads; computed and returned in float32), or a
            torch tensor (returned in its dtype on its device).
        kind: one of :data:`RESPONSES`.
        param: the curve's parameter (default :data:`RESPONSES`'s); a number, or an array/tensor broadcasting
            against ``linear`` (for example ``N x 1 x 1 x 1`` for one curve per clip of a batch).
    """
    check_response(kind, param)
    p = _param(kind, param)
    if kind == "srgb":
        return linear_to_srgb(linear)
    if _is_tensor(linear):
        import torch

        y = linear.clamp(0, 1)
        if kind == "gamma":
            return y.clamp_min(1e-12) ** (1.0 / torch.as_tensor(p, dtype=y.dtype, device=y.device)) * (y > 0)
        if kind == "log":
            c = torch.as_tensor(p, dtype=y.dtype, device=y.device)
            return torch.log1p(c * y) / torch.log1p(c)
        return torch.where(y < 0.018, 4.5 * y, 1.099 * y.clamp_min(1e-12) ** 0.45 - 0.099)
    y = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    if kind == "gamma":
        # One value: the exponent rounded once to float32, the power taken in float32 (synthesized bytes depend on it).
        return (y ** (1.0 / np.asarray(p, dtype=np.float64)).astype(np.float32)).astype(np.float32)
    if kind == "log":
        c = np.asarray(p, dtype=np.float64)
        return (np.log1p(c * y) / np.log1p(c)).astype(np.float32)
    return np.where(y < 0.018, 4.5 * y, 1.099 * np.power(y, 0.45) - 0.099).astype(np.float32)


def decode(encoded, kind: str = "srgb", param=None):
    """The inverse of :func:`encode`: encoded values in [0, 1] -> linear light in [0, 1] (clipped first); types
    and ``param`` as there."""
    check_response(kind, param)
    p = _param(kind, param)
    if kind == "srgb":
        return srgb_to_linear(encoded)
    if _is_tensor(encoded):
        import torch

        v = encoded.clamp(0, 1)
        if kind == "gamma":
            return v.clamp_min(1e-12) ** torch.as_tensor(p, dtype=v.dtype, device=v.device) * (v > 0)
        if kind == "log":
            c = torch.as_tensor(p, dtype=v.dtype, device=v.device)
            return torch.expm1(v * torch.log1p(c)) / c
        return torch.where(v < 0.081, v / 4.5, ((v + 0.099) / 1.099) ** (1 / 0.45))
    v = np.clip(np.asarray(encoded, dtype=np.float32), 0.0, 1.0)
    if kind == "gamma":
        return (v ** np.asarray(p, dtype=np.float64).astype(np.float32)).astype(np.float32)
    if kind == "log":
        c = np.asarray(p, dtype=np.float64)
        return (np.expm1(v * np.log1p(c)) / c).astype(np.float32)
    return np.where(v < 0.081, v / 4.5, np.power((v + 0.099) / 1.099, 1 / 0.45)).astype(np.float32)


def response_lut(kind: str = "srgb", param=None) -> np.ndarray:
    """The linear value of each uint8 code under a response curve (:func:`decode` of ``code / 255`` in float32);
    :data:`LINEAR_LUT` itself for ``srgb``. ``param`` is one number here."""
    if kind == "srgb":
        return LINEAR_LUT
    if param is not None and np.ndim(param) != 0:
        raise ValueError("response_lut takes one parameter value, not an array")
    return decode(np.arange(256, dtype=np.float32) / np.float32(255), kind, param)


def describe_response(kind: str, param=None) -> str:
    """A response curve in a few words, e.g. ``gamma 2.2`` or ``log c=16``."""
    if RESPONSES.get(kind) is None:
        return kind
    p = float(_param(kind, param))
    return f"gamma {p:.3g}" if kind == "gamma" else f"log c={p:.3g}"


# -- the white level ---------------------------------------------------------------------------------------------


def moving_average(frame: np.ndarray, size: int = SMOOTHING) -> np.ndarray:
    """The ``size x size`` box means of an ``H x W x C`` frame, as float32, at the pixels at least ``size // 2``
    from every edge.

    The box of pixel ``(y, x)`` covers rows ``y - size // 2`` to ``y + (size - 1) // 2`` (columns alike), so
    every box read lies inside the frame and the result is ``(H - 2 * (size // 2)) x (W - 2 * (size // 2))``: for
    an even ``size`` the last row and column of boxes inside the frame are not read. A frame no larger than the box
    in height or width, or a ``size`` of 1 or less, is returned as it is.
    """
    if size <= 1 or min(frame.shape[:2]) <= size:
        return frame
    import cv2

    blurred = cv2.blur(np.ascontiguousarray(frame, dtype=np.float32), (size, size), borderType=cv2.BORDER_REPLICATE)
    r = size // 2
    return blurred[r:blurred.shape[0] - r, r:blurred.shape[1] - r]


def _frames(linear) -> list[np.ndarray]:
    """One frame or a stack (NumPy channels-last, torch channels-first) -> a list of ``H x W x C`` arrays."""
    if _is_tensor(linear):
        import torch

        linear = linear.detach().to("cpu", torch.float32).movedim(-3, -1).numpy()
    linear = np.asarray(linear, dtype=np.float32)
    if linear.ndim not in (3, 4):
        raise ValueError(f"expected one frame or a stack of frames, got an array of shape {linear.shape}")
    return [linear] if linear.ndim == 3 else list(linear)


def smoothed_samples(linear, smoothing: int = SMOOTHING) -> np.ndarray:
    """The values :func:`white_level` takes its percentile of: ``M x C``, pooled over the frames given.

    Each frame's :func:`moving_average` of side ``smoothing`` (1: the frame itself), read in raster order with a
    stride that keeps at most about :data:`SAMPLES_PER_FRAME` values per channel.

    Args:
        linear: linear-light frames: a NumPy ``H x W x C`` frame or ``N x H x W x C`` stack, or a torch ``C x H x W``
            frame or ``N x C x H x W`` stack (on any device).
        smoothing: the side of the moving average.
    """
    parts = []
    for frame in _frames(linear):
        flat = moving_average(frame, smoothing).reshape(-1, frame.shape[-1])
        parts.append(flat[:: max(1, flat.shape[0] // SAMPLES_PER_FRAME)])
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def channel_percentiles(samples: np.ndarray, percentiles) -> np.ndarray:
    """``len(percentiles) x C``: each percentile (0-100, linear interpolation) of each column of ``samples``
    (:func:`smoothed_samples`), computed in the samples' precision."""
    return np.stack([np.percentile(samples, float(p), axis=0) for p in percentiles])


def white_level(linear, percentile: float = WHITE_PERCENTILE, smoothing: int = SMOOTHING) -> float:
    """The white level of linear-light frames: the mean over channels of the ``percentile``-th percentile (99th by
    default) of each channel's values after a ``smoothing x smoothing`` moving average (4x4 by default).

    This is the brightness statistic of the project: training records it of its input windows (``sdsd.exposure``'s
    ``smoothed_percentiles_linear`` in the checkpoint's sidecar, whose 99th-percentile row, averaged, is this value
    of all the windows together), ``sdsd.enhance --exposure auto`` brings every frame of a video to the trained one
    (``sdsd.exposure.ExposureMatcher``), and ``sdsd.tools.synthesize --white-level`` scales each clean scene to a
    chosen one (the median over its frames). A high percentile of linear light is where a camera's exposure places
    the highlights; the moving average keeps sensor noise, which widens the high percentiles of single pixels, from
    counting as brightness. Why these choices: ``docs/exposure.md``.

    The moving average is :func:`moving_average` (boxes inside the frame; a frame no larger than the box is read as
    it is); the values are :func:`smoothed_samples` (a strided subsample of at most about
    :data:`SAMPLES_PER_FRAME` per channel of each frame, a stack pooled); the percentile interpolates linearly, in
    float32. A NumPy frame and the same frame as a torch tensor give the same value.

    Args:
        linear: linear-light values in [0, 1] (decode sRGB with :func:`to_linear` or :func:`srgb_to_linear`): a
            NumPy ``H x W x C`` frame or ``N x H x W x C`` stack, or a torch ``C x H x W`` frame or ``N x C x H x W``
            stack.
        percentile: the percentile, 0 to 100.
        smoothing: the side of the moving average; 1 reads single pixels.
    """
    return float(channel_percentiles(smoothed_samples(linear, smoothing), [percentile])[0].mean())
