"""Reading and writing videos and frame folders, one frame at a time (PyAV + OpenCV).

Frames travel as ``H x W x 3`` ``uint8`` **RGB** numpy arrays everywhere in this module.

Reading (:func:`open_source` / :func:`read_frames`): a video file in any container/codec PyAV decodes, or a
folder of frames (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif(f)`` read with OpenCV, and ``.npy`` arrays in
BGR order as in the SDSD data), taken in sorted name order.

Writing (:func:`open_writer`): a video file (H.264 via libx264, falling back to MPEG-4 Part 2 when libx264 is
unavailable; odd frame sizes use 4:4:4 chroma because 4:2:0 needs even sizes) with the audio streams of a
source video copied packet by packet when the container accepts their codec, or a folder of PNGs. Both are
written under a temporary name and renamed into place only when :meth:`close` succeeds; :meth:`abort` (or an
exception inside a ``with`` block) removes everything written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from sdsd.errors import UserError

logger = logging.getLogger("sdsd")

__all__ = [
    "FRAME_EXTS",
    "VIDEO_EXTS",
    "FrameSource",
    "VideoInfo",
    "open_source",
    "read_frames",
    "is_video_path",
    "open_writer",
    "VideoWriter",
    "FolderWriter",
]

# Output containers that hold H.264 (input accepts anything FFmpeg decodes, whatever the extension).
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".m4v", ".flv")
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
DEFAULT_FPS = Fraction(25)


@dataclass
class VideoInfo:
    """What is known about a source before decoding it.

    Attributes:
        width, height: frame size in pixels.
        fps: frame rate (a folder of frames gets the caller's ``fps``, 25 by default).
        frame_count: number of frames when the container says so (``None`` when unknown).
        audio_streams: number of audio streams in the source (0 for a folder).
    """

    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    audio_streams: int = 0


def is_video_path(path: str) -> bool:
    """True when ``path`` has a known video-container extension."""
    return os.path.splitext(path)[1].lower() in VIDEO_EXTS


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


# -- reading ------------------------------------------------------------------------------------------------------


def _read_image(path: str) -> np.ndarray:
    """One frame file -> ``H x W x 3`` uint8 RGB (4 channels keep the first 3; 2-D gets a channel axis)."""
    try:
        if path.lower().endswith(".npy"):
            img = np.load(path, allow_pickle=False)
        else:
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read frame {path} ({_first_line(exc)})") from None
    if img is None or not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.size == 0:
        raise UserError(f"cannot read frame {path}: not an image (expected an H x W x 3 picture or BGR .npy array)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[:, :, :3]
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.max(initial=0) <= 1.0:
            img = (np.clip(img, 0, 1) * 255.0).round()
        img = np.clip(img, 0, 255).astype(np.uint8)
    # Frames on disk are BGR (OpenCV / the SDSD .npy files); everything in memory is RGB.
    return np.ascontiguousarray(img[:, :, ::-1])


class FrameSource:
    """A stream of RGB frames from a video file or a frame folder; iterate it once.

    Args:
        path: a video file or a folder of frames.
        fps: the frame rate assumed for a frame folder (ignored for videos).

    Raises:
        UserError: the path does not exist, is not a decodable video, has no video stream, or is a folder
            without frame files.
    """

    def __init__(self, path: str, fps: float | Fraction | None = None):
        self.path = path
        self.is_folder = os.path.isdir(path)
        self._container = None
        if not os.path.exists(path):
            raise UserError(f"input not found: {path} (give a video file or a folder of frames)")
        if self.is_folder:
            names = sorted(n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in FRAME_EXTS)
            if not names:
                raise UserError(f"input folder {path} holds no frames ({', '.join(FRAME_EXTS)}); "
                                "put the frames there or give a video file")
            self.files = [os.path.join(path, n) for n in names]
            first = _read_image(self.files[0])
            rate = Fraction(fps).limit_denominator(1001) if fps else DEFAULT_FPS
            self.info = VideoInfo(first.shape[1], first.shape[0], rate, len(self.files), 0)
            return
        try:
            self._container = av.open(path, "r")
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"cannot read {path} as a video ({_first_line(exc)}); "
                            "give a video file PyAV/FFmpeg can decode or a folder of frames") from None
        if not self._container.streams.video:
            self._container.close()
            raise UserError(f"{path} has no video stream; give a video file or a folder of frames")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or DEFAULT_FPS
        count = stream.frames or None
        if count is None and stream.duration is not None and stream.time_base is not None:
            count = round(float(stream.duration * stream.time_base * rate)) or None
        elif count is None and self._container.duration:
            # Matroska keeps no frame count; the container duration gives an estimate for progress bars.
            count = round(self._container.duration / av.time_base * float(rate)) or None
        width, height = stream.codec_context.width, stream.codec_context.height
        self.info = VideoInfo(width, height, Fraction(rate), count, len(self._container.streams.audio))

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.is_folder:
            for file in self.files:
                yield _read_image(file)
            return
        try:
            for frame in self._container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise UserError(f"cannot decode {self.path} ({_first_line(exc)}); the file may be damaged") from None
        finally:
            self.close()

    def close(self) -> None:
        """Release the decoder (safe to call twice)."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_source(path: str, fps: float | Fraction | None = None) -> FrameSource:
    """Open a video file or frame folder for reading; see :class:`FrameSource`."""
    return FrameSource(path, fps)


def read_frames(path: str, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video file or frame folder as ``H x W x 3`` uint8 RGB arrays, in order.

    Args:
        path: a video file or a folder of frames.
        max_frames: stop after this many frames (``None``: all).
    """
    with open_source(path) as source:
        for i, frame in enumerate(source):
            if max_frames is not None and i >= max_frames:
                break
            yield frame


# -- writing ------------------------------------------------------------------------------------------------------


class _AudioCopier:
    """Copies the audio packets of a source video into an output container, interleaved with the video.

    Streams whose codec the output container does not accept are skipped with one warning line.
    """

    def __init__(self, source_path: str, output, output_path: str):
        self._src = av.open(source_path, "r")
        self._map = {}
        skipped = []
        for stream in self._src.streams.audio:
            name = stream.codec_context.codec.canonical_name
            if name not in output.supported_codecs:
                skipped.append(name)
                continue
            self._map[stream.index] = output.add_stream_from_template(stream)
        if skipped:
            ext = os.path.splitext(output_path)[1] or "this container"
            print(f"warning: audio ({', '.join(skipped)}) not copied: {ext} cannot hold it; use .mkv to keep it")
        self._packets = (self._src.demux(*[s for s in self._src.streams.audio if s.index in self._map])
                         if self._map else iter(()))
        self._pending = None
        self._output = output

    def pump(self, until_s: float | None) -> None:
        """Mux the source's audio packets that start before ``until_s`` seconds (``None``: all)."""
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            if packet.dts is None or packet.size == 0:
                continue
            start = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            if until_s is not None and start >= until_s:
                self._pending = packet
                return
            packet.stream = self._map[packet.stream.index]
            self._output.mux(packet)

    def close(self) -> None:
        self._src.close()


class _AtomicOutput:
    """Context-manager behaviour of the writers: ``close()`` on success, ``abort()`` (remove everything) on error."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class VideoWriter(_AtomicOutput):
    """Writes RGB frames to a video file under a temporary name; :meth:`close` renames it into place.

    Args:
        path: the output file; its extension chooses the container.
        width, height: frame size.
        fps: frame rate (every frame lasts ``1 / fps``).
        audio_from: a source video whose audio streams are copied (``None``: no audio).
        codec: ``None`` for libx264 (falling back to mpeg4), or an FFmpeg encoder name.
        crf: libx264 constant rate factor (lower = better, 18 is visually near-lossless).
    """

    def __init__(self, path: str, width: int, height: int, fps: Fraction | float, audio_from: str | None = None,
                 codec: str | None = None, crf: int = 18):
        self.path = path
        self.width, self.height = width, height
        self.fps = Fraction(fps).limit_denominator(1001)
        self.count = 0
        self._audio = None
        self._container = None
        errors = []
        # Each candidate encoder gets a fresh container so a failed attempt leaves no dead stream behind.
        for name in [codec] if codec else ["libx264", "mpeg4"]:
            try:
                self._tmp = _temp_name(path)
            except OSError as exc:
                raise UserError(f"cannot write the video {path} ({_first_line(exc)}); check the folder") from None
            try:
                self._container = av.open(self._tmp, "w")
                self._stream = self._add_video_stream(name, crf)
                break
            except (av.FFmpegError, OSError, ValueError, TypeError) as exc:
                errors.append(f"{name}: {_first_line(exc)}")
                self.abort()
                self._container = None
        if self._container is None:
            raise UserError(f"cannot encode {width}x{height} video to {path} ({'; '.join(errors)}); "
                            "write a PNG folder instead (an output path without extension)")
        try:
            if audio_from is not None:
                self._audio = _AudioCopier(audio_from, self._container, path)
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(self, name: str, crf: int):
        # 4:2:0 needs even sizes; x264 encodes odd sizes in 4:4:4 instead of changing the frame size.
        odd = self.width % 2 or self.height % 2
        if av.codec.Codec(name, "w").canonical_name not in self._container.supported_codecs:
            raise ValueError(f"the {os.path.splitext(self.path)[1]} container cannot hold {name}")
        stream = self._container.add_stream(name, rate=self.fps)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = "yuv444p" if odd and name == "libx264" else "yuv420p"
        if name == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
        elif name == "mpeg4":
            stream.options = {"qscale": "2"}
        stream.codec_context.time_base = 1 / self.fps
        # Open now so an encoder that rejects the size fails here, before any frame is computed.
        stream.codec_context.open()
        return stream

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``H x W x 3`` uint8 RGB frame."""
        if frame.shape[:2] != (self.height, self.width):
            raise UserError(f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]} but the video {self.path} is "
                            f"{self.width}x{self.height}; all frames must have the same size")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf = vf.reformat(format=self._stream.pix_fmt)
        vf.pts = self.count
        vf.time_base = 1 / self.fps
        self.count += 1
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.pump(self.count / self.fps)

    def close(self) -> str:
        """Flush the encoder, copy the remaining audio (up to the video's end), and rename into place."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.pump(float(self.count / self.fps))
                self._audio.close()
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException as exc:
            self.abort()
            if isinstance(exc, (av.FFmpegError, OSError)):
                raise UserError(f"cannot finish the video {self.path} ({_first_line(exc)})") from None
            raise
        return self.path

    def abort(self) -> None:
        """Stop and remove everything written (no partial file is left)."""
        for thing in (self._audio, getattr(self, "_container", None)):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        _remove(self._tmp)


class FolderWriter(_AtomicOutput):
    """Writes RGB frames as ``000000.png, 000001.png, ...`` into a temporary folder, moved into place on close.

    When ``path`` already exists as a folder, the frames are moved into it (replacing same-named files).
    """

    def __init__(self, path: str, start: int = 0):
        self.path = path
        self.count = 0
        self._start = start
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"cannot write frames to {path}: it is a file; give a folder or a video file name")
        try:
            os.makedirs(parent, exist_ok=True)
            self._tmp = tempfile.mkdtemp(prefix="." + os.path.basename(os.path.abspath(path)) + ".", suffix=".tmp",
                                         dir=parent)
        except OSError as exc:
            raise UserError(f"cannot write frames to {path} ({_first_line(exc)}); check the path") from None

    def write(self, frame: np.ndarray) -> None:
        """Write one ``H x W x 3`` uint8 RGB frame as a PNG."""
        name = os.path.join(self._tmp, f"{self._start + self.count:06d}.png")
        if not cv2.imwrite(name, np.ascontiguousarray(frame[:, :, ::-1])):
            raise UserError(f"cannot write {name}; check the free disk space and permissions")
        self.count += 1

    def close(self) -> str:
        """Move the finished frames into place."""
        try:
            if not os.path.exists(self.path):
                os.replace(self._tmp, self.path)
                return self.path
            for name in sorted(os.listdir(self._tmp)):
                os.replace(os.path.join(self._tmp, name), os.path.join(self.path, name))
            os.rmdir(self._tmp)
        except OSError as exc:
            self.abort()
            raise UserError(f"cannot move the frames into {self.path} ({_first_line(exc)})") from None
        return self.path

    def abort(self) -> None:
        """Remove the temporary folder."""
        shutil.rmtree(self._tmp, ignore_errors=True)


def open_writer(path: str, width: int, height: int, fps: Fraction | float = DEFAULT_FPS,
                audio_from: str | None = None, codec: str | None = None, crf: int = 18):
    """Open a frame sink chosen by ``path``: a video file for a known video extension, else a PNG folder.

    Args:
        path: output path. A video extension (``.mp4``, ``.mkv``, ``.mov``, ``.avi``, ...) writes a video;
            an existing folder or a path without extension writes PNG frames.
        width, height, fps: the video's frame size and rate (a folder ignores fps).
        audio_from: source video whose audio is copied into a video output.
        codec, crf: see :class:`VideoWriter`.

    Returns:
        A :class:`VideoWriter` or :class:`FolderWriter` (both have ``write(frame)``, ``close()``, ``abort()``
        and work as context managers).

    Raises:
        UserError: an unknown extension, or a path that cannot be written.
    """
    if os.path.isdir(path) or not os.path.splitext(path)[1]:
        return FolderWriter(path)
    if not is_video_path(path):
        raise UserError(f"output {path}: unknown extension; use a video file ({', '.join(VIDEO_EXTS[:5])}, ...) "
                        "or a folder (no extension) for PNG frames")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the output folder {parent} ({_first_line(exc)})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write to {parent}: permission denied; choose another output path")
    return VideoWriter(path, width, height, fps, audio_from=audio_from, codec=codec, crf=crf)


def _temp_name(path: str) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(fd)
    return tmp


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
