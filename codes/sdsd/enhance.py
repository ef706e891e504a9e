"""Enhance a low-light video (or folder of frames) with SDSD-Net, streaming, in bounded memory.

Usage::

    python -m sdsd.enhance INPUT -o OUTPUT --model CKPT [--opt FILE.yml] [--device cpu|cuda] [--amp bf16|fp16]
                           [--tile 512 --tile-overlap 64] [--batch B] [--max-frames N] [--compare]

INPUT is a video file (any container/codec FFmpeg decodes) or a folder of frames (PNG/JPG/BGR ``.npy``,
sorted by name). OUTPUT is a video file (H.264, same frame rate and frame count, audio copied) when it has a
video extension, else a folder of PNGs. Nothing is left at OUTPUT unless the whole run succeeds.

The network runs through the inference engine (:meth:`sdsd.inference.Engine.stream`), the same code as the
quantitative and qualitative tests: every output frame ``i`` of an ``n``-frame clip comes from the N-frame window
around ``i`` under the test protocol's ``new_info`` rule, each frame's features are computed once, frames of any
size are padded to a multiple of 16, and ``--tile`` bounds memory by the tile size.

Network settings come from ``--opt`` (an option file, validated whole like every entry point's; its ``network_G``
block and ``conv_backend`` are used; ``name`` may be left out) or, without it, are read off the checkpoint
(:func:`sdsd.archs.network_options_from_state`), so small demo checkpoints work as well as the published ones.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from sdsd.archs.fastconv import CONV_BACKENDS
from sdsd.errors import UserError, cli_main
from sdsd.inference import MIN_SIZE, Engine, TorchBackend

__all__ = ["PRETRAINED", "resolve_model", "load_engine", "peak_memory_mib", "enhance_file", "main"]

PRETRAINED = ("indoor", "outdoor", "smid")
PRETRAINED_URL = "https://drive.google.com/file/d/1_V0Dxtr4dZ5xZuOsU1gUIUYUDKJvj7BZ/view?usp=sharing"


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


def load_engine(model: str, opt_path: str | None = None, *, device: torch.device | str = "cpu",
                precision: str = "fp32", conv_backend: str | None = None, batch: int = 1, tile: int = 0,
                overlap: int = 64, self_ensemble: bool = False) -> Engine:
    """The engine of ``sdsd.enhance``: the checkpoint loaded strictly, on ``device``.

    Args:
        model: a checkpoint path, or ``indoor`` / ``outdoor`` / ``smid`` (see :func:`resolve_model`).
        opt_path: an option file (validated whole) whose ``network_G`` describes the network and whose
            ``conv_backend`` is used unless ``conv_backend`` is given; ``None`` reads the network off the checkpoint.
        device, precision, conv_backend, batch, tile, overlap, self_ensemble: see :class:`sdsd.inference.Engine`
            and :class:`sdsd.inference.TorchBackend` (``batch`` is also the frames per feature call).

    Raises:
        UserError: missing/unreadable checkpoint, bad option file, or a checkpoint that does not fit.
    """
    from sdsd.archs import load_model

    network_opts, file_backend = None, "auto"
    if opt_path is not None:
        from sdsd import options

        # Every key and value is checked as for the tests; ``name`` (an experiment's folder) means nothing here and
        # may be left out, so a file holding only a network_G block is enough.
        opt = options.load(opt_path, ["name=enhance"], is_train=False)
        network_opts, file_backend = opt["network_G"], opt.get("conv_backend", "auto")
    net, _ = load_model(resolve_model(model), network_opts, strict=True)
    backend = TorchBackend(net, device, precision=precision, conv_backend=conv_backend or file_backend)
    return Engine(backend, chunk=batch, batch=batch, tile=tile, overlap=overlap, self_ensemble=self_ensemble)


def peak_memory_mib(device: torch.device | None = None) -> tuple[float, float | None]:
    """``(peak RSS of this process, peak CUDA memory allocated or None)`` in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.max_memory_allocated(device) / 2**20
    return rss_mib, cuda


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
    parser.add_argument("--conv-backend", choices=CONV_BACKENDS, default=None,
                        help="CPU convolutions: auto (winograd where NNPACK runs, else channels_last), winograd, "
                             "channels_last or nchw; all agree up to float rounding (default: the --opt file's "
                             "conv_backend, else auto)")
    parser.add_argument("--self-ensemble", action="store_true",
                        help="average the outputs over horizontal/vertical flips of the window (x4 cost)")
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
    engine = load_engine(args.model, args.opt, device=device, precision=args.amp or "fp32",
                         conv_backend=args.conv_backend, batch=args.batch, tile=args.tile, overlap=args.tile_overlap,
                         self_ensemble=args.self_ensemble)
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
        results = engine.stream(inputs, padding=args.padding, as_float=deep)
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
