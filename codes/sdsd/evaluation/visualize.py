"""Pictures and videos of results: labelled side-by-side panels, atomic PNG writes, and videos (through
:mod:`sdsd.video`'s writer: H.264, MPEG-4 Part 2 where libx264 is missing).

:func:`frame_images` and :func:`frame_panel` make the result panel of one frame (input | enhanced | illumination |
GT) for both the qualitative test and the trainer's validation images."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np

from sdsd.errors import UserError
from sdsd.metrics import tensor_to_uint8_bgr
from sdsd.utils.io import atomic_path
from sdsd.video import VideoWriter, video_codec

__all__ = ["PANEL_LABELS", "label_tile", "make_panel", "frame_images", "frame_panel", "write_png", "read_png",
           "write_video", "video_codec", "even_size"]

#: The tiles of a result panel, left to right; also the keys of :func:`frame_images`.
PANEL_LABELS = ("input", "enhanced", "illumination", "GT")

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text_metrics(width: int) -> tuple[float, int, int]:
    """Font scale, thickness and label-bar height that stay readable from 48 to 4000 pixels wide."""
    scale = float(np.clip(width / 640.0, 0.35, 1.5))
    thickness = 1 if scale < 0.9 else 2
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, scale, thickness)
    return scale, thickness, text_h + baseline + 8


def label_tile(img: np.ndarray, text: str, bar: int | None = None) -> np.ndarray:
    """Put a black bar with ``text`` (white) above a BGR uint8 image; returns a new image."""
    h, w = img.shape[:2]
    scale, thickness, default_bar = _text_metrics(w)
    bar = default_bar if bar is None else bar
    out = np.zeros((h + bar, w, 3), dtype=np.uint8)
    out[bar:] = img if img.ndim == 3 else img[..., None]
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    # Shrink long labels on narrow tiles rather than letting them run out of the bar.
    if text_w > w - 8:
        scale *= (w - 8) / text_w
        (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    origin = (max((w - text_w) // 2, 2), (bar + text_h) // 2)
    cv2.putText(out, text, origin, _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def make_panel(tiles: Sequence[np.ndarray], labels: Sequence[str], separator: int = 4) -> np.ndarray:
    """Side-by-side labelled panel of equally tall BGR uint8 images, separated by white gaps."""
    if len(tiles) != len(labels) or not tiles:
        raise ValueError("make_panel needs one label per tile and at least one tile")
    heights = {t.shape[0] for t in tiles}
    if len(heights) != 1:
        raise ValueError(f"panel tiles differ in height: {sorted(heights)}")
    _, _, bar = _text_metrics(tiles[0].shape[1])
    labelled = [label_tile(t, s, bar) for t, s in zip(tiles, labels)]
    gap = np.full((labelled[0].shape[0], separator, 3), 255, dtype=np.uint8)
    parts = []
    for k, tile in enumerate(labelled):
        if k:
            parts.append(gap)
        parts.append(tile)
    return np.concatenate(parts, axis=1)


def frame_images(out) -> dict[str, np.ndarray]:
    """The four images of one :class:`~sdsd.inference.FrameOutput` as uint8 BGR arrays, keyed by
    :data:`PANEL_LABELS`: its centre input frame, enhanced frame, illumination map and GT."""
    return {"input": tensor_to_uint8_bgr(out.lq), "enhanced": tensor_to_uint8_bgr(out.enhanced),
            "illumination": tensor_to_uint8_bgr(out.illumination), "GT": tensor_to_uint8_bgr(out.gt)}


def frame_panel(images: Mapping[str, np.ndarray]) -> np.ndarray:
    """The labelled result panel (input | enhanced | illumination | GT) of :func:`frame_images`'s images."""
    return make_panel([images[k] for k in PANEL_LABELS], PANEL_LABELS)


def write_png(img: np.ndarray, path: str) -> None:
    """Write a BGR uint8 image as PNG atomically (a temporary name in the same folder, then a rename)."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, img):
            raise UserError(f"cannot write image {path}; check that the folder is writable")


def read_png(path: str) -> np.ndarray:
    """Read a BGR uint8 image; a missing or unreadable file is a UserError naming it."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"cannot read image {path}; it is missing or not an image")
    return img


def even_size(width: int, height: int, max_width: int | None = None) -> tuple[int, int]:
    """Video frame size: scaled down to ``max_width`` (keeping the aspect ratio), both sides even (yuv420p)."""
    if max_width is not None and width > max_width:
        height = round(height * max_width / width)
        width = max_width
    return max(2, width - width % 2), max(2, height - height % 2)


def write_video(frames: Iterable[np.ndarray], path: str, fps: int = 10, max_width: int | None = 1920) -> str:
    """Encode BGR uint8 frames into an mp4 atomically with :class:`sdsd.video.VideoWriter`; returns the codec.

    Frames are resized to the first frame's (even, at most ``max_width`` wide) size, so every player can
    show the 4:2:0 result. H.264 (libx264, crf 18) when available, else MPEG-4 part 2; colour converted and
    tagged as :func:`sdsd.video.default_matrix` says for that size (the panels are sRGB pictures).
    """
    writer = None
    size = None
    try:
        for img in frames:
            if writer is None:
                size = even_size(img.shape[1], img.shape[0], max_width)
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                writer = VideoWriter(path, size[0], size[1], fps)
            if (img.shape[1], img.shape[0]) != size:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            writer.write(np.ascontiguousarray(img[:, :, ::-1]))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is None:
        raise ValueError(f"no frames to write into {path}")
    writer.close()
    return writer.codec
