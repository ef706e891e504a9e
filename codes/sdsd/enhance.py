"""Enhance a low-light video (or folder of frames) with SDSD-Net, streaming, in bounded memory.

Usage::

    python -m sdsd.enhance INPUT -o OUTPUT --model CKPT [--opt FILE.yml] [--device cpu|cuda]
                           [--runtime auto|torch|openvino|onnxruntime] [--precision auto|fp32|bf16|fp16]
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

By default (``--runtime auto --precision auto``) the runtime and precision are measured on the first window of the
job (:class:`sdsd.runtimes.AutoBackend`): the fastest candidate this machine runs whose output stays within 40 dB
PSNR of fp32 (bf16 only where the CPU computes it natively); ``--precision fp32`` forces exact fp32. The choice is
remembered per machine and frame shape, and printed.
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
                overlap: int = 64, self_ensemble: bool = False, runtime: str = "torch",
                frames_hint: int | None = None) -> Engine:
    """The engine of ``sdsd.enhance``: the checkpoint loaded strictly, on ``device``.

    Args:
        model: a checkpoint path, or ``indoor`` / ``outdoor`` / ``smid`` (see :func:`resolve_model`).
        opt_path: an option file (validated whole) whose ``network_G`` describes the network and whose
            ``conv_backend`` is used unless ``conv_backend`` is given; ``None`` reads the network off the checkpoint.
        device, precision, conv_backend, batch, tile, overlap, self_ensemble: see :class:`sdsd.inference.Engine`
            and :class:`sdsd.inference.TorchBackend` (``batch`` is also the frames per feature call).
        runtime: ``torch`` (default), ``openvino``, ``onnxruntime`` or ``auto`` (:func:`sdsd.runtimes.make_backend`;
            ``precision`` may then be ``auto``). frames_hint: the job's expected frame count (``auto`` only).

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
    if runtime == "torch" and precision != "auto":
        backend = TorchBackend(net, device, precision=precision, conv_backend=conv_backend or file_backend)
    else:
        from sdsd.runtimes import make_backend

        # An explicit --conv-backend restricts auto's PyTorch candidates; the option file's only sets the default.
        backend = make_backend(runtime, net, device, precision, conv_backend=conv_backend or file_backend,
                               frames_hint=frames_hint)
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
    parser.add_argument("--runtime", choices=("auto", "torch", "openvino", "onnxruntime"), default="auto",
                        help="auto (default): the fastest this machine runs, measured on the first window and "
                             "remembered; torch, openvino or onnxruntime force one")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                        help="auto (default): the fastest whose output is within 40 dB PSNR of fp32 on the first "
                             "window (bf16 only on CPUs with native bf16; measured with --runtime auto, a fixed "
                             "runtime runs fp32); fp32 forces exact")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None, help="same as --precision")
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
    parser.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    parser.add_argument("--no-audio", action="store_true", help="do not copy the input's audio")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _check_args(args) -> None:
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1 (got {args.batch})")
    if args.tile < 0 or args.tile_overlap < 0:
        raise UserError("--tile and --tile-overlap must not be negative")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1 (got {args.max_frames})")
    if args.fps is not None and args.fps <= 0:
        raise UserError(f"--fps must be positive (got {args.fps})")
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise UserError(f"output {args.output} is the input; choose another output path")


def _limited(frames: Iterable[np.ndarray], limit: int | None) -> Iterator[np.ndarray]:
    for i, frame in enumerate(frames):
        if limit is not None and i >= limit:
            return
        yield frame


def _side_by_side(pairs: Iterator[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
    for left, right in pairs:
        yield np.concatenate([left, right], axis=1)


def _tee_inputs(frames: Iterable[np.ndarray], keep: deque) -> Iterator[np.ndarray]:
    # The enhancer reads ahead of its output, so inputs wait in a short queue until their result arrives.
    for frame in frames:
        keep.append(frame)
        yield frame


def enhance_file(args) -> dict:
    """Run the command described by parsed ``args``; returns a summary dict (frames, seconds, fps, memory)."""
    from tqdm import tqdm

    from sdsd.utils.dist import select_device
    from sdsd.video import VideoWriter, open_source, open_writer

    _check_args(args)
    device = select_device(None, want=args.device)
    if args.amp and args.precision and args.amp != args.precision:
        raise UserError(f"--amp {args.amp} and --precision {args.precision} disagree; give one of them")
    precision = args.precision or args.amp or "auto"
    if precision == "fp16" and device.type == "cpu":
        raise UserError("--precision fp16 needs a CUDA device; use --precision bf16 on the CPU")
    source = open_source(args.input, fps=args.fps)
    info = source.info
    if min(info.width, info.height) < MIN_SIZE:
        source.close()
        raise UserError(f"{args.input}: frame size {info.width}x{info.height} is below the {MIN_SIZE} px minimum; "
                        "upscale it first")
    total = info.frame_count
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    try:
        engine = load_engine(args.model, args.opt, device=device, precision=precision,
                             conv_backend=args.conv_backend, batch=args.batch, tile=args.tile,
                             overlap=args.tile_overlap, self_ensemble=args.self_ensemble, runtime=args.runtime,
                             frames_hint=total or None)
    except BaseException:
        source.close()
        raise
    out_width = info.width * 2 if args.compare else info.width
    audio = args.input if info.audio_streams and not args.no_audio and not source.is_folder else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    start = time.perf_counter()
    try:
        writer = open_writer(args.output, out_width, info.height, info.fps, audio_from=audio, crf=args.crf)
    except BaseException:
        source.close()
        raise
    with writer, source:
        inputs = _limited(source, args.max_frames)
        queue: deque[np.ndarray] = deque()
        if args.compare:
            inputs = _tee_inputs(inputs, queue)
        results = engine.stream(inputs, padding=args.padding)
        if args.compare:
            results = _side_by_side((queue.popleft(), out) for out in results)
        bar = tqdm(total=total, unit="frame", disable=args.quiet, dynamic_ncols=True, file=sys.stderr,
                   desc="enhancing")
        with bar:
            for frame in results:
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
    described = engine.describe()
    how = f"runtime {described['runtime']} {described['precision']}" + (
        f" {described['conv_backend']}" if described.get("conv_backend") else "") + (
        " (chosen by measuring)" if described.get("selected_by") == "auto" else "")
    print(how)
    print(f"enhanced {count} frames in {seconds:.1f} s ({fps:.2f} frames/s), peak memory {memory} -> {args.output}")
    return {"frames": count, "seconds": seconds, "fps": fps, "peak_rss_mib": rss, "peak_cuda_mib": cuda,
            "output": args.output, "kind": kind, "runtime": described["runtime"],
            "precision": described["precision"], "engine": described}


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Console entry point ``sdsd-enhance`` / ``python -m sdsd.enhance``."""
    args = build_parser().parse_args(argv)
    enhance_file(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
