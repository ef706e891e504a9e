"""Enhance a low-light video (or folder of frames) with SDSD-Net, streaming, in bounded memory.

Usage::

    python -m sdsd.enhance INPUT -o OUTPUT --model CKPT [--opt FILE.yml] [--device cpu|cuda] [--amp bf16|fp16]
                           [--tile 512 --tile-overlap 64] [--batch B] [--max-frames N] [--compare]

INPUT is a video file (any container/codec FFmpeg decodes) or a folder of frames (PNG/JPG/BGR ``.npy``,
sorted by name). OUTPUT is a video file (H.264, same frame rate and frame count, audio copied) when it has a
video extension, else a folder of PNGs. Nothing is left at OUTPUT unless the whole run succeeds.

How frames are processed (the published test protocol, SPEC §3, with ``n`` = the number of frames read):
every output frame ``i`` comes from the N-frame window ``index_generation(i, n, N, 'new_info')``. Frames are
read one at a time; a frame's pyramid features are computed once and reused by every window that holds it.
Window ``i`` is computed as soon as frame ``max(i + N//2, 2 * (N//2))`` has been read, or the stream has ended
(detected by reading ahead), so the frame count need not be known. The buffer keeps the frames (and features)
that a later window can still use: those from ``min(i - N//2, last - 2 * (N//2))`` on, i.e. about ``N + batch``
frames, never the whole video.

Frames of any size are padded to a multiple of 16 (reflect; replicate when the frame is too small to
reflect) and cropped back. With ``--tile S`` the network runs on overlapping ``S x S`` tiles (all frames of a
window are cut identically; each tile keeps its own feature cache) and the overlaps are blended with a smooth
partition-of-unity weight, so no seam shows and peak memory depends on ``S``, not on the frame size.

Network options come from ``--opt`` (its ``network_G`` block) or, without it, are read off the checkpoint
(``nf``, ``nframes``, ``groups``, ``front_RBs``, ``back_RBs``, ``w_TSA`` from the tensor shapes/keys; the
published values for the rest), so small demo checkpoints work as well as the published ones.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from sdsd.archs.fastconv import CONV_BACKENDS, prepare_for_inference
from sdsd.data.windows import check_window_options, index_generation
from sdsd.errors import UserError, cli_main

__all__ = [
    "PUBLISHED_NETWORK",
    "PRETRAINED",
    "StreamingEnhancer",
    "infer_network_options",
    "load_enhancer_network",
    "resolve_model",
    "pad_to_multiple",
    "plan_tiles",
    "tile_weights",
    "peak_memory_mib",
    "main",
]

PUBLISHED_NETWORK = {
    "which_model_G": "denoise_illumination_enhance",
    "nf": 64,
    "nframes": 5,
    "groups": 8,
    "front_RBs": 5,
    "back_RBs": 10,
    "predeblur": True,
    "HR_in": True,
    "w_TSA": True,
}
PRETRAINED = ("indoor", "outdoor", "smid")
PRETRAINED_URL = "https://drive.google.com/file/d/1_V0Dxtr4dZ5xZuOsU1gUIUYUDKJvj7BZ/view?usp=sharing"
MIN_SIZE = 16
MULTIPLE = 16


# -- network ------------------------------------------------------------------------------------------------------


def resolve_model(model: str) -> str:
    """Map ``indoor`` / ``outdoor`` / ``smid`` to ``pretrain/<name>_G.pth``; other values are paths.

    The pretrain folder is looked up in the current directory, then at the repository root.

    Raises:
        UserError: a named checkpoint is missing (the message says where to download it).
    """
    if model not in PRETRAINED or os.path.isfile(model):
        return model
    name = f"{model}_G.pth"
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for root in (os.getcwd(), repo_root):
        path = os.path.join(root, "pretrain", name)
        if os.path.isfile(path):
            return path
    raise UserError(f"pretrained checkpoint pretrain/{name} not found; download the published models from "
                    f"{PRETRAINED_URL} into pretrain/ (or give --model PATH)")


def infer_network_options(state: dict[str, torch.Tensor]) -> dict:
    """Read the network options of an SDSD-Net state dict off its keys and tensor shapes.

    ``nf`` (``conv_first_1`` outputs), ``front_RBs`` / ``back_RBs`` (number of residual blocks), ``groups``
    (``L3_dcnpack`` offset channels / 27), ``w_TSA`` (``tsa_fusion.fea_fusion`` present) and ``nframes``
    (fusion input channels / ``nf``). ``center`` cannot be seen in the weights and stays ``nframes // 2``.

    Raises:
        UserError: the state dict is not an SDSD-Net one.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise UserError(f"the checkpoint is not an SDSD-Net state_dict (no {key!r}); give --opt with its "
                            "network_G or a checkpoint saved from this network")
        return tuple(state[key].shape)

    nf = shape("conv_first_1.weight")[0]
    offsets = shape("pcd_align.L3_dcnpack.conv_offset_mask.weight")[0]
    w_tsa = "tsa_fusion.fea_fusion.weight" in state
    fusion_in = shape("tsa_fusion.fea_fusion.weight" if w_tsa else "tsa_fusion.weight")[1]

    def count(prefix: str) -> int:
        pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.conv1\.weight$")
        return len({m.group(1) for k in state if (m := pattern.match(k))})

    opts = dict(PUBLISHED_NETWORK)
    opts.update(nf=nf, groups=offsets // 27, nframes=fusion_in // nf, front_RBs=count("feature_extraction"),
                back_RBs=count("recon_trunk"), w_TSA=w_tsa)
    return opts


def load_enhancer_network(model: str, opt_path: str | None = None) -> tuple[torch.nn.Module, dict]:
    """Build SDSD-Net and load a published-format checkpoint into it (strictly), in eval mode on the CPU.

    Args:
        model: a checkpoint path, or ``indoor`` / ``outdoor`` / ``smid`` (see :func:`resolve_model`).
        opt_path: a YAML file whose ``network_G`` block describes the network; ``None`` infers it from the
            checkpoint (:func:`infer_network_options`).

    Returns:
        ``(net, network_opts)``.

    Raises:
        UserError: missing/unreadable checkpoint, bad option file, or a checkpoint that does not fit.
    """
    from sdsd.archs import build_network, load_network, read_state_dict

    path = resolve_model(model)
    if opt_path is not None:
        from sdsd.options import read_yaml

        raw = read_yaml(opt_path)
        block = raw.get("network_G") if isinstance(raw, dict) else None
        if not isinstance(block, dict):
            raise UserError(f"{opt_path} has no network_G block; give an option file with one, or leave out --opt "
                            "to read the network from the checkpoint")
        opts = {**PUBLISHED_NETWORK, **block}
    else:
        opts = infer_network_options(read_state_dict(path))
    net = build_network(opts)
    load_network(net, path, strict=True)
    return net.eval(), opts


# -- geometry -----------------------------------------------------------------------------------------------------


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Pad the last two axes (bottom/right) up to a multiple of ``multiple``.

    Reflect padding when the frame is large enough to mirror (pad < size), else replicate.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def plan_tiles(size: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Tile starts along one axis of length ``size`` (a multiple of 16).

    Returns ``(starts, length)``: tiles ``[s, s + length)`` covering ``0 .. size``, consecutive tiles
    overlapping by at least ``overlap``; one tile of the full size when ``tile`` is 0 or not smaller.
    """
    if tile <= 0 or tile >= size:
        return [0], size
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return starts, tile


def _ramp(length: int) -> torch.Tensor:
    """Weights of the right-hand tile across an overlap of ``length`` pixels (the left tile gets ``1 - ramp``).

    The outer quarter of the overlap on each side gets weight 0 for the tile whose border it is (a tile's
    outputs near its own border see the zero padding of the convolutions), and a smoothstep crosses over in
    the middle half. Smoothstep is symmetric (``f(t) + f(1 - t) = 1``), so the two tiles' weights sum to one.
    """
    dead = length // 4
    t = ((torch.arange(length, dtype=torch.float64) + 0.5 - dead) / max(length - 2 * dead, 1)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def tile_weights(starts: list[int], length: int) -> list[torch.Tensor]:
    """1-D blending weights (float64, ``length`` each) for the tiles at ``starts`` along one axis.

    Across each overlap with a neighbour a tile fades smoothly from 0 to 1 (see :func:`_ramp`); it is 1
    elsewhere, including at the frame border. Neighbouring tiles' weights sum to one, so the blend shows no
    seam.
    """
    out = []
    for k, start in enumerate(starts):
        w = torch.ones(length, dtype=torch.float64)
        if k > 0:
            left = starts[k - 1] + length - start
            w[:left] *= _ramp(left)
        if k + 1 < len(starts):
            right = start + length - starts[k + 1]
            w[length - right:] *= 1 - _ramp(right)
        out.append(w)
    return out


def peak_memory_mib(device: torch.device | None = None) -> tuple[float, float | None]:
    """``(peak RSS of this process, peak CUDA memory allocated or None)`` in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.max_memory_allocated(device) / 2**20
    return rss_mib, cuda


# -- streaming ----------------------------------------------------------------------------------------------------


class StreamingEnhancer:
    """Run SDSD-Net over a stream of frames with the test protocol's sliding window.

    Args:
        net: an SDSD-Net (``extract_features`` / ``forward_features``), already loaded; it is moved to
            ``device`` and put in eval mode.
        nframes: window width (default ``net.nframes``; must equal it).
        padding: window rule at the clip ends (``new_info`` as published; ``replicate``, ``reflection``,
            ``circle``).
        device: where to compute (default: the network's device).
        amp: ``None``, ``"bf16"`` or ``"fp16"`` (autocast).
        tile: tile size in pixels (rounded up to a multiple of 16); 0 runs on whole frames.
        overlap: tile overlap in pixels (rounded up to a multiple of 16).
        batch: windows per forward pass (also frames per feature-extraction pass).
        conv_backend: :data:`sdsd.archs.fastconv.CONV_BACKENDS`; ``auto`` runs Winograd (NNPACK) convolutions on
            CPUs that have it, channels_last oneDNN on other CPUs. All agree up to float rounding.

    Use :meth:`enhance` (or call the object) with an iterable of ``H x W x 3`` uint8 RGB frames; it yields the
    enhanced frames in order. Memory stays bounded by about ``nframes + batch`` frames and their features.
    """

    def __init__(self, net: torch.nn.Module, nframes: int | None = None, padding: str = "new_info",
                 device: torch.device | str | None = None, amp: str | None = None, tile: int = 0, overlap: int = 64,
                 batch: int = 1, conv_backend: str = "auto"):
        self.nframes = int(nframes if nframes is not None else net.nframes)
        if self.nframes != net.nframes:
            raise UserError(f"nframes={self.nframes} but the network was built for {net.nframes}-frame windows")
        check_window_options(self.nframes, padding, where="enhance")
        if batch < 1:
            raise UserError(f"--batch must be at least 1 (got {batch})")
        if amp not in (None, "bf16", "fp16"):
            raise UserError(f"--amp {amp!r}: use bf16 or fp16 (or leave it out for float32)")
        self.padding = padding
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.net = net.to(self.device).eval()
        self.conv_backend = prepare_for_inference(self.net, self.device, conv_backend)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
        self.tile = _round_up(tile, MULTIPLE) if tile and tile > 0 else 0
        self.overlap = _round_up(max(overlap, 0), MULTIPLE)
        if self.tile and 2 * self.overlap > self.tile:
            raise UserError(f"--tile-overlap {self.overlap} must be at most half of --tile {self.tile}; "
                            "lower the overlap or raise the tile size")
        self.batch = int(batch)
        self.frames_done = 0

    def __call__(self, frames: Iterable[np.ndarray], as_float: bool = False) -> Iterator[np.ndarray]:
        return self.enhance(frames, as_float)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def _to_tensor(self, frame: np.ndarray, index: int, size: tuple[int, int] | None) -> torch.Tensor:
        # uint8, or float32 in [0, 1] for sources above 8 bits (kept at full precision, not rounded to 8 bits).
        if (not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3
                or frame.dtype not in (np.uint8, np.float32)):
            raise UserError(f"frame {index}: expected an H x W x 3 uint8 or float32 RGB array, got "
                            f"{getattr(frame, 'shape', type(frame))} {getattr(frame, 'dtype', '')}")
        if size is not None and frame.shape[:2] != size:
            raise UserError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is {size[1]}x{size[0]}; "
                            "all frames of a video must have the same size")
        if min(frame.shape[:2]) < MIN_SIZE:
            raise UserError(f"frame size {frame.shape[1]}x{frame.shape[0]} is below the {MIN_SIZE} px minimum; "
                            "upscale the input first")
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1).unsqueeze(0).float()
        if frame.dtype == np.uint8:
            x = x.div_(255.0)
        return pad_to_multiple(x)[0]

    def _setup_tiles(self, hp: int, wp: int) -> None:
        ys, th = plan_tiles(hp, self.tile, self.overlap)
        xs, tw = plan_tiles(wp, self.tile, self.overlap)
        self._tile_size = (th, tw)
        wy, wx = tile_weights(ys, th), tile_weights(xs, tw)
        self._tiles = [(y, x) for y in ys for x in xs]
        self._weights = None
        if len(self._tiles) > 1:
            # Normalise by the summed weights so corners where several tiles meet still sum to one.
            total = torch.zeros(hp, wp, dtype=torch.float64)
            plain = [torch.outer(wy[i], wx[j]) for i in range(len(ys)) for j in range(len(xs))]
            for (y, x), w in zip(self._tiles, plain):
                total[y:y + th, x:x + tw] += w
            total.clamp_(min=1e-12)
            self._weights = [(w / total[y:y + th, x:x + tw]).to(self.device, torch.float32)
                             for (y, x), w in zip(self._tiles, plain)]

    @torch.inference_mode()
    def enhance(self, frames: Iterable[np.ndarray], as_float: bool = False) -> Iterator[np.ndarray]:
        """Yield the enhanced frames of ``frames`` in order.

        Args:
            frames: ``H x W x 3`` uint8 RGB arrays (or float32 in [0, 1]), all the same size (at least 16 x 16).
            as_float: yield ``H x W x 3`` float32 arrays in [0, 1] (before rounding) instead of uint8.

        Yields:
            One enhanced frame per input frame.
        """
        half = self.nframes // 2
        source = iter(frames)
        buffer: dict[int, torch.Tensor] = {}
        feats: dict[int, list] = {}
        read, ended, centre = 0, False, 0
        size = None

        def ready(i: int) -> bool:
            # Window i is final once every index it can use has been read: up to i + N//2 (and, at the start,
            # the new_info frames up to 2 * (N//2)), or the stream has ended so the clip length is known.
            return ended or read - 1 >= max(i + half, 2 * half)

        while True:
            while not ended and not ready(centre + self.batch - 1):
                frame = next(source, None)
                if frame is None:
                    ended = True
                    break
                x = self._to_tensor(frame, read, size)
                if size is None:
                    size = frame.shape[:2]
                    self._setup_tiles(*x.shape[-2:])
                buffer[read] = x
                read += 1
            centres = [c for c in range(centre, centre + self.batch) if c < read and ready(c)]
            if not centres:
                break
            # With n = frames read so far the rule is exact: a window only reaches index >= n when the stream
            # has ended, and then n is the clip length.
            windows = [index_generation(c, read, self.nframes, self.padding) for c in centres]
            out = self._run_windows(windows, centres, buffer, feats)
            centre += len(centres)
            keep_from = min(centre - half, read - 1 - 2 * half)
            for k in [k for k in buffer if k < keep_from]:
                del buffer[k]
                feats.pop(k, None)
            h, w = size
            out = out[:, :, :h, :w].clamp_(0, 1)
            if as_float:
                arrays = out.permute(0, 2, 3, 1).float().cpu().numpy()
            else:
                arrays = out.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for arr in arrays:
                self.frames_done += 1
                yield arr

    def _run_windows(self, windows: list[list[int]], centres: list[int], buffer: dict, feats: dict) -> torch.Tensor:
        """Enhance a batch of windows tile by tile; returns ``B x 3 x Hp x Wp`` float32."""
        used = sorted({k for win in windows for k in win})
        pos = {k: p for p, k in enumerate(used)}
        index = torch.tensor([[pos[k] for k in win] for win in windows], device=self.device)
        missing = [k for k in used if k not in feats]
        for k in missing:
            feats[k] = [None] * len(self._tiles)
        th, tw = self._tile_size
        hp, wp = buffer[centres[0]].shape[-2:]
        single = len(self._tiles) == 1
        canvas = None if single else torch.zeros(len(centres), 3, hp, wp, device=self.device)
        for t, (y, x) in enumerate(self._tiles):
            for start in range(0, len(missing), self.batch):
                chunk = missing[start:start + self.batch]
                crops = torch.stack([buffer[k][:, y:y + th, x:x + tw] for k in chunk])
                with self._autocast():
                    levels = self.net.extract_features(crops)
                for i, k in enumerate(chunk):
                    feats[k][t] = tuple(level[i] for level in levels)
            window_feats = tuple(torch.stack([feats[k][t][lvl] for k in used])[index] for lvl in range(3))
            base = torch.stack([buffer[c][:, y:y + th, x:x + tw] for c in centres])
            with self._autocast():
                enhanced = self.net.forward_features(window_feats, base)[0].float()
            if single:
                return enhanced
            canvas[:, :, y:y + th, x:x + tw] += enhanced * self._weights[t]
        return canvas


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


# -- command line -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdsd-enhance",
        description="Enhance a low-light video or frame folder with SDSD-Net (streaming, bounded memory).",
    )
    parser.add_argument("input", help="video file, or folder of frames (PNG/JPG/BGR .npy, sorted by name)")
    parser.add_argument("-o", "--output", required=True,
                        help="video file (.mp4/.mkv/.mov/.avi/...: H.264, audio copied) or folder for PNG frames")
    parser.add_argument("--model", required=True,
                        help="checkpoint path, or indoor|outdoor|smid for pretrain/<name>_G.pth")
    parser.add_argument("--opt", default=None,
                        help="YAML option file whose network_G describes the network (default: read it off the "
                             "checkpoint)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="autocast precision (default float32)")
    parser.add_argument("--conv-backend", choices=CONV_BACKENDS, default="auto",
                        help="CPU convolutions: auto (winograd where NNPACK runs, else channels_last), winograd, "
                             "channels_last or nchw; all agree up to float rounding")
    parser.add_argument("--tile", type=int, default=0,
                        help="process S x S tiles (rounded up to a multiple of 16) for frames too large for memory")
    parser.add_argument("--tile-overlap", type=int, default=64, help="tile overlap in pixels (default 64)")
    parser.add_argument("--batch", type=int, default=1, help="windows per forward pass (default 1)")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames (a preview)")
    parser.add_argument("--padding", default="new_info", choices=("new_info", "replicate", "reflection", "circle"),
                        help="window rule at the clip ends (default new_info, as published)")
    parser.add_argument("--compare", action="store_true", help="write input | enhanced side by side")
    parser.add_argument("--fps", type=float, default=None, help="frame rate for a frame-folder input (default 25)")
    parser.add_argument("--crf", type=int, default=18, help="H.264/H.265 quality, lower is better (default 18)")
    parser.add_argument("--codec", choices=("h264", "h265", "mpeg4"), default=None,
                        help="video encoder (default h264, falling back to mpeg4 where libx264 is missing)")
    parser.add_argument("--bit-depth", type=int, choices=(8, 10), default=8,
                        help="output bits per sample: 8 (default) or 10 (h264/h265 video; 16-bit PNG frames)")
    parser.add_argument("--colorspace", choices=("auto", "bt709", "bt601", "bt2020"), default="auto",
                        help="YUV matrix the output video is converted with and tagged as (default auto: the "
                             "source's; BT.709 for HD and BT.601 for SD when the source is untagged or frames)")
    parser.add_argument("--color-range", choices=("auto", "limited", "full"), default="auto",
                        help="YUV range of the output video (default auto: the source's, else limited)")
    parser.add_argument("--no-audio", action="store_true", help="do not copy the input's audio")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_args(args) -> None:
    from sdsd.video import MIN_FPS

    if args.batch < 1:
        raise UserError(f"--batch must be at least 1 (got {args.batch})")
    if args.tile < 0 or args.tile_overlap < 0:
        raise UserError("--tile and --tile-overlap must not be negative")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1 (got {args.max_frames})")
    if args.fps is not None and not args.fps >= MIN_FPS:
        raise UserError(f"--fps {args.fps:g}: the frame rate must be at least {float(MIN_FPS):g} frames/s "
                        "(one frame per 1000 s)")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise UserError(f"output {args.output} is the input; choose another output path")


def _limited(frames: Iterable[np.ndarray], limit: int | None) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if limit is not None and i >= limit:
            return
        yield frame


def _side_by_side(pairs: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
    for left, right in pairs:
        if left.dtype != right.dtype:  # a uint8 input beside a float output (or the reverse): both as float
            left, right = (x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x for x in (left, right))
        yield np.concatenate([left, right], axis=1)


def _tee_times(timed: Iterable[tuple[np.ndarray, int | None, int | None]], times: deque) -> Iterator[np.ndarray]:
    # Timestamps bypass the enhancer (one output per input, in order) and wait here for their frame.
    for frame, pts, duration in timed:
        times.append((pts, duration))
        yield frame


def _tee_inputs(frames: Iterable[np.ndarray], keep: deque) -> Iterator[np.ndarray]:
    # The enhancer reads ahead of its output, so inputs wait in a short queue until their result arrives.
    for frame in frames:
        keep.append(frame)
        yield frame


def enhance_file(args) -> dict:
    """Run the command described by parsed ``args``; returns a summary dict (frames, seconds, fps, memory)."""
    from tqdm import tqdm

    from sdsd.utils.dist import select_device
    from sdsd.video import CODECS, VideoWriter, open_source, open_writer, output_color

    _check_args(args)
    device = select_device(None, want=args.device)
    if args.amp == "fp16" and device.type == "cpu":
        raise UserError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    net, _ = load_enhancer_network(args.model, args.opt)
    enhancer = StreamingEnhancer(net, padding=args.padding, device=device, amp=args.amp, tile=args.tile,
                                 overlap=args.tile_overlap, batch=args.batch, conv_backend=args.conv_backend)
    source = open_source(args.input, fps=args.fps)
    info = source.info
    if min(info.width, info.height) < MIN_SIZE:
        source.close()
        raise UserError(f"{args.input}: frame size {info.width}x{info.height} is below the {MIN_SIZE} px minimum; "
                        "upscale it first")
    total = info.frame_count
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    out_width = info.width * 2 if args.compare else info.width
    audio = args.input if info.audio_streams and not args.no_audio and not source.is_folder else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    start = time.perf_counter()
    try:
        # Colour follows the source unless --colorspace/--color-range say; timestamps use the source's unit.
        color = output_color(info.color, out_width, info.height, args.colorspace, args.color_range)
        writer = open_writer(args.output, out_width, info.height, info.fps, audio_from=audio,
                             codec=CODECS[args.codec] if args.codec else None, crf=args.crf, color=color,
                             bit_depth=args.bit_depth, time_base=info.time_base)
    except BaseException:
        source.close()
        raise
    # Above 8 bits in or out, the network's output stays float until the writer quantises it once.
    deep = info.bit_depth > 8 or args.bit_depth > 8
    with writer, source:
        times: deque[tuple[int | None, int | None]] = deque()
        inputs = _tee_times(_limited(source.timed_frames(), args.max_frames), times)
        queue: deque[np.ndarray] = deque()
        if args.compare:
            inputs = _tee_inputs(inputs, queue)
        results = enhancer.enhance(inputs, as_float=deep)
        if args.compare:
            results = _side_by_side((queue.popleft(), out) for out in results)
        bar = tqdm(total=total, unit="frame", disable=args.quiet, dynamic_ncols=True, file=sys.stderr,
                   desc="enhancing")
        with bar:
            for frame in results:
                pts, duration = times.popleft()
                if isinstance(writer, VideoWriter):
                    writer.write(frame, pts=pts, duration=duration)
                else:
                    writer.write(frame)
                bar.update(1)
        if writer.count == 0:
            raise UserError(f"{args.input}: no frames could be decoded")
    seconds = time.perf_counter() - start
    rss, cuda = peak_memory_mib(device)
    count = writer.count
    fps = count / seconds if seconds > 0 else float("inf")
    memory = f"{rss:.0f} MiB" + (f" (CUDA {cuda:.0f} MiB)" if cuda is not None else "")
    kind = "video" if isinstance(writer, VideoWriter) else "PNG folder"
    print(f"enhanced {count} frames in {seconds:.1f} s ({fps:.2f} frames/s), peak memory {memory} -> {args.output}")
    return {"frames": count, "seconds": seconds, "fps": fps, "peak_rss_mib": rss, "peak_cuda_mib": cuda,
            "output": args.output, "kind": kind}


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Console entry point ``sdsd-enhance`` / ``python -m sdsd.enhance``."""
    args = build_parser().parse_args(argv)
    enhance_file(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
