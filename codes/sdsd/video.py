"""Reading and writing videos and frame folders, one frame at a time (PyAV + OpenCV).

Frames travel as ``H x W x 3`` **RGB** numpy arrays: ``uint8`` for 8-bit sources, ``float32`` in [0, 1] for
sources with more than 8 bits per sample (10-bit video, 16-bit PNG/TIFF), so that no precision is lost
before the network. Writers take either kind.

Reading (:func:`open_source` / :func:`read_frames`): a video file in any container/codec PyAV decodes, or a
folder of frames (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tif(f)`` read with OpenCV, and uint8 ``.npy``
arrays in BGR order as in the SDSD data), taken in sorted name order. Inputs and frames must be regular files
(or links to them): a FIFO, socket or device is refused, never opened. A video is converted to RGB the way a
player shows it:

* **colour**: with the matrix (BT.709, BT.601, BT.2020) and range (limited/full) it is tagged with; an
  untagged stream is taken as BT.709 when it is HD (wider than 1024 or taller than 576 pixels) and BT.601
  otherwise, limited range unless its pixel format is a full-range (``yuvj``) one. HDR transfers (PQ, HLG)
  are refused: this network is SDR only.
* **rotation**: a display rotation (the display-matrix side data phones write, ``rotate`` in older tools)
  is applied to the pixels, so every frame is yielded the way up it is shown, and written without a tag.
  A mirrored display matrix is refused.
* **damage**: a frame that fails to decode, or a video that ends before its container says (fewer frames than an
  MP4/MOV's index lists; a Matroska file cut short before its track's end), raises :class:`~sdsd.errors.UserError`
  naming the frame reached, rather than giving a silently shorter video.
* **timing**: each frame keeps its own timestamp (:meth:`FrameSource.timed_frames`), so variable-frame-rate
  video is written back with the same timing and its audio stays in sync.

Writing (:func:`open_writer`): a video file, or a folder of PNGs. Video: H.264 (libx264; MPEG-4 Part 2 when
libx264 is unavailable) 8-bit by default, 10-bit H.264 or H.265 (libx265) on request; odd frame sizes use
4:4:4 chroma because 4:2:0 needs even sizes. RGB is converted with the matrix and range of the
:class:`ColorSpec` given (by default the one a player assumes for an untagged video of that size) and
matrix, primaries, transfer and range are tagged on the stream. The audio streams of a source video are
copied packet by packet when the container accepts their codec. Both kinds are written under a temporary
name and moved into place only when :meth:`close` succeeds; :meth:`abort` (or an exception inside a
``with`` block) removes everything written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation

from sdsd.errors import UserError
from sdsd.utils import io as io_utils
from sdsd.utils.text import first_line

logger = logging.getLogger("sdsd")

__all__ = [
    "FRAME_EXTS",
    "VIDEO_EXTS",
    "MIN_FPS",
    "COLORSPACES",
    "COLOR_RANGES",
    "CODECS",
    "BIT_DEPTHS",
    "ColorSpec",
    "FrameSource",
    "VideoInfo",
    "default_matrix",
    "output_color",
    "open_source",
    "probe_frame_count",
    "read_frames",
    "is_video_path",
    "open_writer",
    "video_codec",
    "VideoWriter",
    "FolderWriter",
]

# Output containers that hold H.264 (input accepts anything FFmpeg decodes, whatever the extension).
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".m4v", ".flv")
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".npy")
DEFAULT_FPS = Fraction(25)
# One frame per 1000 s: slower rates are almost surely a typo (or a broken header), and their time bases
# (seconds per tick) are beyond what encoders and muxers handle.
MIN_FPS = Fraction(1, 1000)
COLORSPACES = ("bt709", "bt601", "bt2020")
COLOR_RANGES = ("limited", "full")
# Command-line codec names -> FFmpeg encoders.
CODECS = {"h264": "libx264", "h265": "libx265", "mpeg4": "mpeg4"}
#: The libx265 bundled with PyAV corrupts the heap (glibc: "free(): invalid next size", the process aborts when the
#: encoder is freed) on frames 36-48 px wide, 8- and 10-bit alike; 16, 32, 52, 56 and 64-208 px wide encoded cleanly
#: under MALLOC_CHECK_=3. Narrower H.265 output is refused rather than risked.
X265_MIN_WIDTH = 64
BIT_DEPTHS = (8, 10)

# swscale's default rounding is off by up to 2 levels on saturated colours; accurate rounding (and full
# horizontal chroma interpolation when reading) keeps a decode + encode round trip within about 2 levels.
_READ_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_WRITE_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND

# FFmpeg's codes: AVColorSpace (the matrix), AVColorPrimaries, AVColorTransferCharacteristic, AVColorRange.
_UNSPECIFIED = 2
_MATRIX_OF_CODE = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020"}
_CODE_OF_MATRIX = {"bt709": 1, "bt601": 6, "bt2020": 9}
# swscale's SWS_CS_* (PyAV's Colorspace) for the matrices it reads; 0 is RGB stored as planes (no matrix).
_SWS_MATRIX = {0: None, 1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9}
_SWS_OF_MATRIX = {"bt709": 1, "bt601": 5, "bt2020": 9}
_DEFAULT_PRIMARIES = {"bt709": 1, "bt601": 6, "bt2020": 9}
_DEFAULT_TRANSFER = {"bt709": 1, "bt601": 6, "bt2020": 14}
_HDR_TRANSFER = {16: "PQ (SMPTE ST 2084)", 18: "HLG (ARIB STD-B67)"}
_RANGE_CODE = {"limited": 1, "full": 2}


@dataclass(frozen=True)
class ColorSpec:
    """How a video's YUV samples map to RGB, and the colour tags on its stream.

    Attributes:
        matrix: ``bt709``, ``bt601`` or ``bt2020`` (non-constant luminance).
        range: ``limited`` (luma 16-235) or ``full`` (0-255).
        primaries, transfer: FFmpeg's ``AVColorPrimaries`` / ``AVColorTransferCharacteristic`` codes. They
            describe the RGB itself, which is never converted between gamuts or transfers, so an output keeps
            its source's values whatever matrix it is written with.
    """

    matrix: str = "bt709"
    range: str = "limited"
    primaries: int = 1
    transfer: int = 1

    @classmethod
    def for_matrix(cls, matrix: str, color_range: str = "limited") -> ColorSpec:
        """The matrix with its usual primaries and transfer (BT.601: SMPTE 170M; BT.2020: 10-bit SDR)."""
        return cls(matrix, color_range, _DEFAULT_PRIMARIES[matrix], _DEFAULT_TRANSFER[matrix])


def default_matrix(width: int, height: int) -> str:
    """The matrix players assume for an untagged stream: BT.709 for HD (width >= 1280 or height > 576)."""
    return "bt709" if width >= 1280 or height > 576 else "bt601"


def output_color(source: ColorSpec | None, width: int, height: int, matrix: str | None = None,
                 color_range: str | None = None) -> ColorSpec:
    """The colour an output video is written with: its source's, unless ``matrix`` / ``color_range`` say.

    Args:
        source: the source video's colour (``None`` for a frame folder, whose frames are sRGB: BT.709
            primaries and transfer, the matrix by size as for an untagged video).
        width, height: the output's frame size.
        matrix: one of :data:`COLORSPACES`, or ``None`` / ``"auto"`` to follow the source.
        color_range: one of :data:`COLOR_RANGES`, or ``None`` / ``"auto"`` to follow the source.
    """
    if matrix in (None, "auto"):
        matrix = source.matrix if source is not None else default_matrix(width, height)
    if color_range in (None, "auto"):
        color_range = source.range if source is not None else "limited"
    if matrix not in COLORSPACES:
        raise UserError(f"colorspace {matrix!r}: use one of {', '.join(COLORSPACES)} (or auto)")
    if color_range not in COLOR_RANGES:
        raise UserError(f"color range {color_range!r}: use one of {', '.join(COLOR_RANGES)} (or auto)")
    if source is None:
        return ColorSpec(matrix, color_range, 1, 1)
    return ColorSpec(matrix, color_range, source.primaries, source.transfer)


@dataclass
class VideoInfo:
    """What is known about a source before decoding it (a video's first frame is decoded on opening).

    Attributes:
        width, height: frame size in pixels, the way up the frames are shown (after any rotation).
        fps: frame rate (a folder of frames gets the caller's ``fps``, 25 by default); for a
            variable-frame-rate video the average, while :attr:`time_base` timestamps give the real timing.
        frame_count: number of frames when the container says so (``None`` when unknown).
        audio_streams: number of audio streams in the source (0 for a folder).
        time_base: unit of the frame timestamps (``None`` for a folder: frames are ``1 / fps`` apart).
        bit_depth: bits per sample of the first frame (frames are float32 when above 8).
        color: the video's colour (``None`` for a folder: sRGB).
        rotation: the display rotation (degrees counter-clockwise) applied to the pixels.
    """

    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    audio_streams: int = 0
    time_base: Fraction | None = None
    bit_depth: int = 8
    color: ColorSpec | None = None
    rotation: int = 0


def is_video_path(path: str) -> bool:
    """True when ``path`` has a known video-container extension."""
    return os.path.splitext(path)[1].lower() in VIDEO_EXTS


def _check_rate(fps, what: str) -> Fraction:
    """``fps`` as a Fraction (denominator at most 1001, so 29.97 is 30000/1001); refuses rates below MIN_FPS."""
    try:
        ok = float(fps) >= MIN_FPS and np.isfinite(float(fps))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise UserError(f"{what}: frame rate {fps} is not supported; it must be at least {float(MIN_FPS):g} "
                        "frames/s (one frame per 1000 s)")
    rate = Fraction(fps).limit_denominator(1001)
    return rate if rate >= MIN_FPS else Fraction(fps).limit_denominator(10**6)


# -- reading ------------------------------------------------------------------------------------------------------


def _read_image(path: str) -> np.ndarray:
    """One frame file -> ``H x W x 3`` RGB: uint8 for 8-bit files, float32 in [0, 1] for 16-bit images.

    ``.npy`` frames must be uint8 (BGR), as the SDSD data and its datasets require; 4 channels keep the
    first 3 and a 2-D frame is repeated to 3 channels.
    """
    npy = path.lower().endswith(".npy")
    try:
        if npy:
            img = np.load(path, allow_pickle=False)
        else:
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read frame {path} ({first_line(exc, 200)})") from None
    if img is None or not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or img.size == 0:
        raise UserError(f"cannot read frame {path}: not an image (expected an H x W x 3 picture or BGR .npy array)")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] not in (1, 3, 4):
        raise UserError(f"frame {path} has shape {tuple(img.shape)}; expected H x W x 3 (BGR), H x W x 4 or H x W")
    allowed = (np.uint8,) if npy else (np.uint8, np.uint16)
    if img.dtype not in allowed:
        # Guessing a scale (x 255? clip?) would silently change the picture; the datasets refuse these too.
        kind = ".npy frames must be uint8 (BGR, 0-255)" if npy else "images must be 8- or 16-bit"
        raise UserError(f"frame {path} has dtype {img.dtype}; {kind}, convert it")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[:, :, :3]
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / np.float32(65535.0)
    # Frames on disk are BGR (OpenCV / the SDSD .npy files); everything in memory is RGB.
    return np.ascontiguousarray(img[:, :, ::-1])


def _rotation_quarters(frame, path: str) -> int:
    """Counter-clockwise quarter turns that show ``frame`` the way up its display matrix says."""
    for side in frame.side_data:
        if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            m = np.frombuffer(bytes(side), dtype="<i4")
            if len(m) >= 5 and int(m[0]) * int(m[4]) - int(m[1]) * int(m[3]) < 0:
                raise UserError(f"{path} has a mirrored display matrix, which is not supported; remux it "
                                "without the mirroring first")
    degrees = float(frame.rotation or 0.0)
    if not np.isfinite(degrees):
        return 0
    quarters = round(degrees / 90.0)
    if abs(degrees - 90.0 * quarters) > 1.0:
        raise UserError(f"{path} is to be shown rotated by {degrees:g} degrees; only multiples of 90 are supported")
    return quarters % 4


def _source_color(frame, stream, path: str) -> tuple[ColorSpec, int | None, int]:
    """The source's :class:`ColorSpec`, and the swscale matrix and range codes that decode it."""
    cc = stream.codec_context

    def tag(name: str) -> int:
        value = int(getattr(frame, name) or 0)
        return value if value not in (0, _UNSPECIFIED) else int(getattr(cc, name) or 0)

    transfer = tag("color_trc")
    if transfer in _HDR_TRANSFER:
        raise UserError(f"{path} is HDR video ({_HDR_TRANSFER[transfer]} transfer); only SDR video is supported, "
                        "tone-map it to SDR (BT.709) first")
    fmt = frame.format.name
    rgb = fmt.startswith(("gbr", "rgb", "bgr", "gray"))
    code = int(frame.colorspace or 0)
    if code == _UNSPECIFIED or (code == 0 and not rgb):
        code = int(cc.colorspace or _UNSPECIFIED)
    if code in (0, _UNSPECIFIED) and not rgb:
        code = _CODE_OF_MATRIX[default_matrix(frame.width, frame.height)]
    if code not in _SWS_MATRIX:
        raise UserError(f"{path} uses colour matrix code {code}, which is not supported; convert it to BT.709 first")
    matrix = _MATRIX_OF_CODE.get(code, default_matrix(frame.width, frame.height))
    range_code = int(frame.color_range or 0) or int(cc.color_range or 0)
    if range_code not in (1, 2):
        range_code = 2 if fmt.startswith("yuvj") else 1
    # An RGB source has no range of its own; its output follows the writer's default (limited).
    color_range = "full" if range_code == 2 and not rgb else "limited"
    primaries = tag("color_primaries")
    primaries = primaries if primaries not in (0, _UNSPECIFIED) else _DEFAULT_PRIMARIES[matrix]
    transfer = transfer if transfer not in (0, _UNSPECIFIED) else _DEFAULT_TRANSFER[matrix]
    return ColorSpec(matrix, color_range, primaries, transfer), _SWS_MATRIX[code], range_code


_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def _kind(mode: int) -> str:
    """What a non-regular file is, in words (``a named pipe (FIFO)``, ``a socket``, ...)."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def _input_kind(path: str) -> str:
    """``folder`` or ``file`` for an input that may be read (followed through links).

    Raises:
        UserError: the path does not exist, cannot be looked at, or is neither a regular file nor a folder (a FIFO,
            socket or device is never opened: reading one blocks until a writer comes, or never ends).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"input not found: {path} (give a video file or a folder of frames)") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} ({first_line(exc, 200)}); check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        return "folder"
    if not stat.S_ISREG(mode):
        raise UserError(f"{path} is {_kind(mode)}, not a regular file; give a video file or a folder of frames")
    return "file"


def _frame_files(folder: str) -> list[str]:
    """The frame files of ``folder`` (names ending in one of :data:`FRAME_EXTS`), in sorted name order.

    Raises:
        UserError: the folder cannot be listed, holds no frame file, or one of them is not a regular file (a FIFO
            named ``000001.png`` would block the read forever).
    """
    try:
        with os.scandir(folder) as entries:
            frames = sorted((e for e in entries if os.path.splitext(e.name)[1].lower() in FRAME_EXTS),
                            key=lambda e: e.name)
    except OSError as exc:
        raise UserError(f"cannot list the input folder {folder} ({first_line(exc, 200)}); "
                        "check its permissions") from None
    if not frames:
        raise UserError(f"input folder {folder} holds no frames ({', '.join(FRAME_EXTS)}); "
                        "put the frames there or give a video file")
    for entry in frames:
        if entry.is_file():  # a regular file, or a link to one
            continue
        try:
            what = _kind(os.stat(entry.path).st_mode)
        except OSError:
            what = "a broken link"
        raise UserError(f"input folder {folder}: {entry.name} is {what}, not a regular file; remove it or put the "
                        "frame there")
    return [entry.path for entry in frames]


def _ebml_number(data: bytes, pos: int, is_id: bool = False) -> tuple[int | None, int]:
    """The EBML variable-length number at ``data[pos]`` and the position after it.

    An element ID keeps its length marker (``0x1A45DFA3``); a size loses it, and all ones (an unknown size, as a live
    recording writes) is -1. ``None`` when the bytes are not one.
    """
    if pos >= len(data) or data[pos] == 0:
        return None, pos
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        return None, pos
    raw = int.from_bytes(data[pos:pos + length], "big")
    if is_id:
        return raw, pos + length
    value = raw & ((1 << (7 * length)) - 1)
    return (-1 if value == (1 << (7 * length)) - 1 else value), pos + length


def _matroska_sizes(path: str) -> tuple[int, int] | None:
    """``(bytes present, bytes its Segment declares)`` of a Matroska/WebM file, from its first bytes; ``None`` when
    the Segment's size is unknown (a live recording) or the header is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            present = os.fstat(f.fileno()).st_size
    except OSError:
        return None
    ident, pos = _ebml_number(head, 0, is_id=True)
    size, pos = _ebml_number(head, pos)
    if ident != 0x1A45DFA3 or size is None or size < 0:
        return None
    ident, pos = _ebml_number(head, pos + size, is_id=True)
    size, pos = _ebml_number(head, pos)
    if ident != 0x18538067 or size is None or size < 0:
        return None
    return present, pos + size


def _track_end_s(stream, container) -> float | None:
    """Where a Matroska video track ends (seconds), as the file says: its ``DURATION`` tag, else the file's
    duration (which may also cover other tracks); ``None`` when it says neither."""
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    hours_minutes_seconds = re.fullmatch(r"\s*(\d+):(\d+):(\d+(?:\.\d*)?)\s*", tag or "")
    if hours_minutes_seconds:
        h, m, sec = hours_minutes_seconds.groups()
        return int(h) * 3600 + int(m) * 60 + float(sec)
    if container.duration:
        return (container.duration + (container.start_time or 0)) / av.time_base
    return None


class FrameSource:
    """A stream of RGB frames from a video file or a frame folder; iterate it once.

    A video is converted to RGB as a player shows it (see the module docstring: tagged or size-default
    colour matrix and range, display rotation applied); frames with more than 8 bits per sample come as
    float32 in [0, 1], others as uint8.

    Args:
        path: a video file or a folder of frames.
        fps: the frame rate assumed for a frame folder (ignored for videos).

    Raises:
        UserError: the path does not exist, is neither a regular file nor a folder (a FIFO, socket or device is
            never opened), is not a decodable video, has no video stream or no frame, is HDR, or is a folder
            without frame files (or with a frame file that is not a regular file, not an 8/16-bit image or not a
            uint8 ``.npy`` array). While iterating: the video is damaged, i.e. a frame fails to decode, or the
            decoder ends before the end its container declares (an MP4/MOV's exact frame count, less the frames
            an edit list hides; a Matroska file's track duration where its Segment is cut short). Where the
            container declares no exact end (AVI, MPEG-TS, ...), only a decoding error tells.
    """

    def __init__(self, path: str, fps: float | Fraction | None = None):
        self.path = path
        self._container = None
        self._first = None
        # A FIFO, socket or device is never opened: reading one blocks (a FIFO without a writer) or never ends.
        self.is_folder = _input_kind(path) == "folder"
        if self.is_folder:
            self.files = _frame_files(path)
            first = _read_image(self.files[0])
            rate = _check_rate(fps, f"--fps for {path}") if fps is not None else DEFAULT_FPS
            depth = 16 if first.dtype == np.float32 else 8
            self.info = VideoInfo(first.shape[1], first.shape[0], rate, len(self.files), 0, bit_depth=depth)
            return
        try:
            self._container = av.open(path, "r")
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise UserError(f"cannot read {path} as a video ({first_line(exc, 200)}); "
                            "give a video file PyAV/FFmpeg can decode or a folder of frames") from None
        try:
            self._open_video()
        except BaseException:
            self.close()
            raise

    def _open_video(self) -> None:
        path = self.path
        if not self._container.streams.video:
            raise UserError(f"{path} has no video stream; give a video file or a folder of frames")
        stream = self._container.streams.video[0]
        # Threaded decoding is faster, but where one frame fails to decode it may end quietly instead of raising;
        # timed_frames then compares what was decoded with what the container declares (_check_complete).
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or DEFAULT_FPS
        formats = set(self._container.format.name.split(","))
        # MP4/MOV list every sample in their index, so their count is exact; other containers' counts are estimates.
        self._declared = int(stream.frames) if stream.frames and formats & {"mov", "mp4"} else None
        self._discarded = 0
        self._cut = _matroska_sizes(path) if "matroska" in formats else None
        if self._cut is not None and self._cut[0] >= self._cut[1]:
            self._cut = None  # the whole Segment is there
        self._end_s = _track_end_s(stream, self._container) if self._cut is not None else None
        self._frame_s = 1.0 / float(rate)
        count = stream.frames or None
        if count is None and stream.duration is not None and stream.time_base is not None:
            count = round(float(stream.duration * stream.time_base * rate)) or None
        elif count is None and self._container.duration:
            # Matroska keeps no frame count; the container duration gives an estimate for progress bars.
            count = round(self._container.duration / av.time_base * float(rate)) or None
        # The first frame tells what the container may not: pixel format, colour tags, display rotation.
        self._decoder = self._decode(stream)
        try:
            first = next(self._decoder, None)
        except av.FFmpegError as exc:
            raise UserError(f"{path}: cannot decode its first frame ({first_line(exc, 200)}); the file is damaged or "
                            "truncated; re-encode or repair it") from None
        if first is None:
            raise UserError(f"{path}: no frames could be decoded; the file may be empty or damaged")
        self._first = first
        self._quarters = _rotation_quarters(first, path)
        components = first.format.components
        depth = max((c.bits for c in components), default=8)
        self._high = depth > 8
        color, self._sws_matrix, self._sws_range = _source_color(first, stream, path)
        width, height = first.width, first.height
        if self._quarters % 2:
            width, height = height, width
        time_base = Fraction(stream.time_base) if stream.time_base else None
        self.info = VideoInfo(width, height, Fraction(rate), count, len(self._container.streams.audio),
                              time_base=time_base, bit_depth=depth, color=color, rotation=90 * self._quarters)

    def _decode(self, stream) -> Iterator:
        """The stream's frames in order (as ``container.decode``), counting the packets the demuxer marks as
        discarded (outside an MP4 edit list: decoded as references, never shown)."""
        for packet in self._container.demux(stream):
            if packet.is_discard:
                self._discarded += 1
            yield from packet.decode()

    def _check_complete(self, shown: int, end_s: float | None) -> None:
        """Raise when the decoder ended before the end the container declares: ``shown`` frames were decoded, the
        last one ending at ``end_s`` seconds (``None``: no timestamps)."""
        path = self.path
        if self._declared is not None and shown < self._declared - self._discarded:
            raise UserError(f"{path}: the video ends after frame {shown} of the {self._declared - self._discarded} "
                            "its container declares (damaged or truncated file); re-encode or repair it")
        if self._cut is not None:
            # Bytes are missing at the end: harmless where they were only the index, not where frames were lost.
            present, declared = self._cut
            if self._end_s is None or end_s is None or end_s < self._end_s - 0.5 * self._frame_s - 0.001:
                reached = f" at {end_s:.3f} s" if end_s is not None else ""
                until = f" of the {self._end_s:.3f} s it declares" if self._end_s is not None and reached else ""
                raise UserError(f"{path}: the file is truncated ({present} of the {declared} bytes its Matroska "
                                f"header declares) and the video ends after frame {shown}{reached}{until}; "
                                "re-encode or repair it")

    def _to_rgb(self, frame) -> np.ndarray:
        kwargs = {"src_color_range": self._sws_range, "dst_color_range": 2, "interpolation": _READ_FLAGS}
        if self._sws_matrix is not None:
            kwargs["src_colorspace"] = self._sws_matrix
        if self._high:
            img = frame.to_ndarray(format="rgb48le", **kwargs).astype(np.float32) / np.float32(65535.0)
        else:
            img = frame.to_ndarray(format="rgb24", **kwargs)
        if self._quarters:
            img = np.rot90(img, self._quarters)
        return np.ascontiguousarray(img)

    def timed_frames(self) -> Iterator[tuple[np.ndarray, int | None, int | None]]:
        """Yield ``(frame, pts, duration)`` in order; pts and duration in ``info.time_base`` units.

        Both are ``None`` for a frame folder (and where a container gives none), meaning ``1 / fps`` apart.
        """
        if self.is_folder:
            for file in self.files:
                yield _read_image(file), None, None
            return
        shown, end_s = 0, None
        try:
            frame, self._first = self._first, None
            while frame is not None:
                yield self._to_rgb(frame), frame.pts, (frame.duration or None)
                shown += 1
                if frame.pts is not None and frame.time_base:
                    ends = float(frame.pts * frame.time_base) + (
                        float(frame.duration * frame.time_base) if frame.duration else self._frame_s)
                    end_s = ends if end_s is None else max(end_s, ends)
                frame = next(self._decoder, None)
            # Only a decoder that ran to its end is checked: a caller that stops early (--max-frames) stops above.
            self._check_complete(shown, end_s)
        except av.FFmpegError as exc:
            raise UserError(f"{self.path}: decoding failed after frame {shown} ({first_line(exc, 200)}); the file is "
                            "damaged or truncated; re-encode or repair it") from None
        finally:
            self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame, _, _ in self.timed_frames():
            yield frame

    def close(self) -> None:
        """Release the decoder (safe to call twice)."""
        self._first = None
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def probe_frame_count(path: str) -> int | None:
    """The number of frames of a video (as its container says, without decoding) or of a frame folder; ``None``
    when unknown or unreadable."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            return sum(1 for n in os.listdir(path) if n.lower().endswith(FRAME_EXTS) and not n.startswith("."))
        if not stat.S_ISREG(mode):
            return None  # a FIFO, socket or device is never opened (FrameSource refuses it)
        with av.open(path) as container:
            streams = container.streams.video
            return int(streams[0].frames) or None if streams else None
    except (av.FFmpegError, OSError, ValueError):
        return None


def open_source(path: str, fps: float | Fraction | None = None) -> FrameSource:
    """Open a video file or frame folder for reading; see :class:`FrameSource`."""
    return FrameSource(path, fps)


def read_frames(path: str, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of a video file or frame folder as ``H x W x 3`` RGB arrays, in order.

    uint8 for 8-bit sources, float32 in [0, 1] above 8 bits (see :class:`FrameSource`).

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


def video_codec() -> str:
    """The default encoder: ``libx264`` (H.264) when this PyAV build has it, else ``mpeg4``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - PyAV raises different types across versions for a missing encoder
        return "mpeg4"


class _AudioCopier:
    """Copies the audio packets of a source video into an output container, interleaved with the video.

    Streams whose codec the output container does not accept are skipped with one warning line. Packets keep
    their timestamps, and the video keeps its source's, so the two stay in sync.
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
        # Free the demuxer now, not whenever the garbage collector gets to it (see VideoWriter._release).
        self._src = self._output = self._map = self._pending = self._packets = None


class _AtomicOutput:
    """Context-manager behaviour of the writers: ``close()`` on success, ``abort()`` (remove everything) on error."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *rest):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _rgb_frame(frame: np.ndarray) -> av.VideoFrame:
    """An ``H x W x 3`` uint8 or float ([0, 1]) RGB array as a PyAV frame (float keeps 16 bits)."""
    if frame.dtype == np.uint8:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    if np.issubdtype(frame.dtype, np.floating):
        deep = (np.clip(frame, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(deep), format="rgb48le")
    raise TypeError(f"frames must be uint8 or float RGB arrays, got {frame.dtype}")


class VideoWriter(_AtomicOutput):
    """Writes RGB frames to a video file under a temporary name; :meth:`close` renames it into place.

    Args:
        path: the output file; its extension chooses the container.
        width, height: frame size.
        fps: frame rate (at least :data:`MIN_FPS`); frames without a timestamp last ``1 / fps``.
        audio_from: a source video whose audio streams are copied (``None``: no audio).
        codec: ``None`` for libx264 (falling back to mpeg4 for 8 bits), or an FFmpeg encoder name
            (``libx265``, ...).
        crf: libx264/libx265 constant rate factor (lower = better, 18 is visually near-lossless).
        color: the matrix and range RGB is converted with, and the stream's colour tags (default: sRGB
            frames, :func:`output_color` with no source: the matrix a player assumes for an untagged video of
            this size, limited range, BT.709 primaries and transfer).
        bit_depth: 8 or 10 bits per sample.
        time_base: the unit of the timestamps given to :meth:`write` (a source's ``info.time_base``);
            ``None``: ``1 / fps``.

    Raises:
        UserError: a rate below :data:`MIN_FPS`, or no encoder that can write this size and bit depth to this
            container. Nothing is left on disk.
    """

    def __init__(self, path: str, width: int, height: int, fps: Fraction | float, audio_from: str | None = None,
                 codec: str | None = None, crf: int = 18, color: ColorSpec | None = None, bit_depth: int = 8,
                 time_base: Fraction | None = None):
        self.path = path
        self.width, self.height = width, height
        self._tmp = None
        self._audio = None
        self._container = None
        self.fps = _check_rate(fps, f"the video {path}")
        if bit_depth not in BIT_DEPTHS:
            raise UserError(f"bit depth {bit_depth}: use {' or '.join(map(str, BIT_DEPTHS))}")
        self.bit_depth = bit_depth
        self.color = color if color is not None else output_color(None, width, height)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        # Frames without a timestamp are this many time-base units apart.
        self._step = max(1, round(1 / (self.fps * self.time_base)))
        self._last_pts = None
        self._end = 0
        self.count = 0
        self.codec = None
        errors = []
        candidates = [codec] if codec else (["libx264", "mpeg4"] if bit_depth == 8 else ["libx264"])
        # Each candidate encoder gets a fresh container so a failed attempt leaves no dead stream behind.
        for name in candidates:
            try:
                self._tmp = io_utils.temp_path_for(path)
            except OSError as exc:
                raise UserError(f"cannot write the video {path} ({first_line(exc, 200)}); check the folder") from None
            try:
                self._container = av.open(self._tmp, "w")
                self._stream = self._add_video_stream(name, crf)
                self.codec = name
                break
            except (av.FFmpegError, OSError, ValueError, TypeError) as exc:
                errors.append(f"{name}: {first_line(exc, 200)}")
                self.abort()
                self._container = None
            except BaseException:
                self.abort()
                raise
        if self._container is None:
            raise UserError(f"cannot encode {width}x{height} {bit_depth}-bit video to {path} ({'; '.join(errors)}); "
                            "choose another codec or bit depth, or write a PNG folder (an output path without "
                            "extension)")
        try:
            if audio_from is not None:
                self._audio = _AudioCopier(audio_from, self._container, path)
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(self, name: str, crf: int):
        codec = av.codec.Codec(name, "w")
        if codec.canonical_name not in self._container.supported_codecs:
            raise ValueError(f"the {os.path.splitext(self.path)[1]} container cannot hold {name}")
        # 4:2:0 needs even sizes; odd sizes are encoded in 4:4:4 (where the encoder has it) rather than resized.
        deep = "10le" if self.bit_depth == 10 else ""
        wanted = [f"yuv420p{deep}"]
        if self.width % 2 or self.height % 2:
            wanted.insert(0, f"yuv444p{deep}")
        formats = {f.name for f in codec.video_formats or ()}
        pix_fmt = next((f for f in wanted if f in formats), None)
        if pix_fmt is None:
            raise ValueError(f"{name} cannot encode {self.bit_depth}-bit {wanted[-1][3:6]} video")
        if name == "libx265" and self.width < X265_MIN_WIDTH:
            raise UserError(f"the video {self.path}: H.265 (libx265) is not safe below {X265_MIN_WIDTH} px wide "
                            f"(this frame is {self.width}); use --codec h264")
        stream = self._container.add_stream(name, rate=self.fps)
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = pix_fmt
        if name in ("libx264", "libx265"):
            stream.options = {"crf": str(crf), "preset": "medium"}
            if name == "libx265":
                stream.options["x265-params"] = "log-level=error"
        elif name == "mpeg4":
            stream.options = {"qscale": "2"}
        cc = stream.codec_context
        # The tags players read to turn the samples back into RGB: the same matrix and range as the conversion.
        cc.colorspace = _CODE_OF_MATRIX[self.color.matrix]
        cc.color_range = _RANGE_CODE[self.color.range]
        cc.color_primaries = self.color.primaries
        cc.color_trc = self.color.transfer
        cc.time_base = self.time_base
        # Open now so an encoder that rejects the size fails here, before any frame is computed.
        cc.open()
        return stream

    def write(self, frame: np.ndarray, pts: int | None = None, duration: int | None = None) -> None:
        """Encode one ``H x W x 3`` RGB frame (uint8, or float in [0, 1]).

        Args:
            frame: the picture.
            pts: its timestamp in ``time_base`` units (``None``: ``1 / fps`` after the previous frame). A
                timestamp not after the previous one (a broken source) is moved just after it.
            duration: how long it is shown, in ``time_base`` units (``None``: ``1 / fps``).
        """
        if frame.shape[:2] != (self.height, self.width):
            raise UserError(f"frame {self.count} is {frame.shape[1]}x{frame.shape[0]} but the video {self.path} is "
                            f"{self.width}x{self.height}; all frames must have the same size")
        vf = _rgb_frame(frame).reformat(format=self._stream.pix_fmt, dst_colorspace=_SWS_OF_MATRIX[self.color.matrix],
                                        dst_color_range=_RANGE_CODE[self.color.range], interpolation=_WRITE_FLAGS)
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._step
        elif self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        vf.pts = pts
        vf.time_base = self.time_base
        if duration:
            vf.duration = duration
        self._last_pts = pts
        self._end = pts + (duration or self._step)
        self.count += 1
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.pump(float(self._end * self.time_base))

    def close(self) -> str:
        """Flush the encoder, copy the remaining audio (up to the video's end), and rename into place."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.pump(float(self._end * self.time_base))
                self._audio.close()
            self._container.close()
            self._release()
            io_utils.commit(self._tmp, self.path)  # fsync, rename, fsync the folder
        except BaseException as exc:
            self.abort()
            if isinstance(exc, (av.FFmpegError, OSError)):
                raise UserError(f"cannot finish the video {self.path} ({first_line(exc, 200)})") from None
            raise
        return self.path

    def abort(self) -> None:
        """Stop and remove everything written (no partial file is left)."""
        for thing in (self._audio, self._container):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self._release()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(self._tmp)

    def _release(self) -> None:
        """Drop the PyAV objects now. An encoder (x264/x265 and its worker threads) lives as long as its stream
        object; if this writer ends up in a reference cycle, the garbage collector would otherwise free it at
        an arbitrary later moment, during other work (that is where libx265's heap corruption, see
        :data:`X265_MIN_WIDTH`, surfaced as an abort)."""
        self._stream = self._container = self._audio = None


_FRAME_NAME = re.compile(r"^\d{6}\.png$")


class FolderWriter(_AtomicOutput):
    """Writes RGB frames as ``000000.png, 000001.png, ...`` into a temporary folder, moved into place on close.

    An existing output folder must be empty or hold only ``NNNNNN.png`` frames (an earlier output); it is
    then replaced whole on close, so no stale frame of a longer earlier run survives. A folder holding
    anything else is refused rather than overwritten.

    Args:
        path: the output folder.
        start: number of the first frame file.
        bit_depth: 8 writes 8-bit PNGs; above 8 writes 16-bit PNGs (float frames keep their precision).
    """

    def __init__(self, path: str, start: int = 0, bit_depth: int = 8):
        self.path = path
        self.count = 0
        self._start = start
        self._deep = bit_depth > 8
        parent = os.path.dirname(os.path.abspath(path))
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"cannot write frames to {path}: it is a file; give a folder or a video file name")
        if os.path.isdir(path):
            try:
                foreign = sorted(n for n in os.listdir(path) if not _FRAME_NAME.match(n))
            except OSError as exc:
                raise UserError(f"cannot write frames to {path} ({first_line(exc, 200)}); check the path") from None
            if foreign:
                raise UserError(f"output folder {path} holds files this tool did not write (e.g. {foreign[0]}); "
                                "give a new or empty folder (one holding only NNNNNN.png frames is replaced)")
        try:
            os.makedirs(parent, exist_ok=True)
            self._tmp = io_utils.make_temp_dir(path)
        except OSError as exc:
            raise UserError(f"cannot write frames to {path} ({first_line(exc, 200)}); check the path") from None

    def write(self, frame: np.ndarray) -> None:
        """Write one ``H x W x 3`` RGB frame (uint8, or float in [0, 1]) as a PNG."""
        name = os.path.join(self._tmp, f"{self._start + self.count:06d}.png")
        if self._deep:
            scale = 257.0 if frame.dtype == np.uint8 else 65535.0
            img = (np.clip(frame.astype(np.float32) * scale, 0, 65535) + 0.5).astype(np.uint16)
        elif frame.dtype != np.uint8:
            img = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        else:
            img = frame
        if not cv2.imwrite(name, np.ascontiguousarray(img[:, :, ::-1])):
            raise UserError(f"cannot write {name}; check the free disk space and permissions")
        self.count += 1

    def close(self) -> str:
        """Move the finished folder into place, replacing an earlier one whole."""
        target = os.path.realpath(self.path) if os.path.islink(self.path) else self.path
        old = None
        try:
            for name in os.listdir(self._tmp):  # the frames reach the disk before the folder is renamed
                io_utils.fsync_file(os.path.join(self._tmp, name))
            if os.path.isdir(target):
                with contextlib.suppress(OSError):
                    os.chmod(self._tmp, stat.S_IMODE(os.stat(target).st_mode))
                old = io_utils.move_aside(target)
            try:
                io_utils.commit(self._tmp, target)
            except OSError:
                if old is not None:
                    os.replace(old, target)
                    old = None
                raise
        except OSError as exc:
            self.abort()
            raise UserError(f"cannot move the frames into {self.path} ({first_line(exc, 200)})") from None
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Remove the temporary folder."""
        shutil.rmtree(self._tmp, ignore_errors=True)


def open_writer(path: str, width: int, height: int, fps: Fraction | float = DEFAULT_FPS,
                audio_from: str | None = None, codec: str | None = None, crf: int = 18,
                color: ColorSpec | None = None, bit_depth: int = 8, time_base: Fraction | None = None):
    """Open a frame sink chosen by ``path``: a video file for a known video extension, else a PNG folder.

    Args:
        path: output path. A video extension (``.mp4``, ``.mkv``, ``.mov``, ``.avi``, ...) writes a video;
            an existing folder or a path without extension writes PNG frames (sRGB, 16-bit when
            ``bit_depth`` > 8; see :class:`FolderWriter` for an existing folder).
        width, height, fps: the video's frame size and rate (a folder ignores fps).
        audio_from: source video whose audio is copied into a video output.
        codec, crf, color, bit_depth, time_base: see :class:`VideoWriter` (a folder takes only bit_depth).

    Returns:
        A :class:`VideoWriter` or :class:`FolderWriter` (both have ``write(frame)``, ``close()``, ``abort()``
        and work as context managers; ``VideoWriter.write`` also takes a timestamp).

    Raises:
        UserError: an unknown extension, a codec for a folder, or a path that cannot be written.
    """
    if os.path.isdir(path) or not os.path.splitext(path)[1]:
        if codec is not None:
            raise UserError(f"codec {codec} applies to a video output, not the PNG folder {path}; "
                            "leave it out or give a video file name")
        return FolderWriter(path, bit_depth=bit_depth)
    if not is_video_path(path):
        raise UserError(f"output {path}: unknown extension; use a video file ({', '.join(VIDEO_EXTS[:5])}, ...) "
                        "or a folder (no extension) for PNG frames")
    _check_rate(fps, f"the video {path}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the output folder {parent} ({first_line(exc, 200)})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write to {parent}: permission denied; choose another output path")
    return VideoWriter(path, width, height, fps, audio_from=audio_from, codec=codec, crf=crf, color=color,
                       bit_depth=bit_depth, time_base=time_base)
