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
import gc
import os
import resource
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

# Only light modules at module level: the command line is parsed (and --help, argument errors answered) before
# PyTorch, the network and the video libraries load, inside the functions that use them.
from sdsd.archive import EXIT_FAILED_INPUTS, archive_inputs, archive_outputs, check_paths, format_summary
from sdsd.color import WHITE_LEVEL_TEXT
from sdsd.errors import UserError, cli_main
from sdsd.runtimes.registry import CHOICES as RUNTIME_CHOICES
from sdsd.runtimes.registry import PRECISION_CHOICES, PRECISIONS
from sdsd.utils.conv_backend import CONV_BACKENDS
from sdsd.utils.io import remove_stale_temps

if TYPE_CHECKING:
    import torch

    from sdsd.inference import Engine

__all__ = ["PRETRAINED", "resolve_model", "load_engine", "peak_memory_mib", "enhance_one", "enhance_file",
           "archive_inputs", "archive_outputs", "enhance_archive", "format_summary", "main"]

PRETRAINED = ("indoor", "outdoor", "smid")
STALE_TEMP_AGE_S = 3600
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


def load_option_file(path: str) -> dict:
    """Load and validate an option file for ``sdsd.enhance`` (every key and value, as for the tests).

    ``name`` (an experiment's folder) means nothing here and may be left out, so a file holding only a
    ``network_G`` block is enough.
    """
    from sdsd import options

    return options.load(path, ["name=enhance"], is_train=False)


def load_engine(model: str, opt_path: str | dict | None = None, *, device: torch.device | str = "cpu",
                precision: str = "fp32", conv_backend: str | None = None, batch: int = 1, tile: int = 0,
                overlap: int = 64, self_ensemble: bool = False, runtime: str = "torch",
                frames_hint: int | None = None) -> Engine:
    """The engine of ``sdsd.enhance``: the checkpoint loaded strictly, on ``device``.

    Args:
        model: a checkpoint path, or ``indoor`` / ``outdoor`` / ``smid`` (see :func:`resolve_model`).
        opt_path: an option file (validated whole; or the dict :func:`load_option_file` returned) whose
            ``network_G`` describes the network and whose
            ``conv_backend`` is used unless ``conv_backend`` is given; ``None`` reads the network off the checkpoint.
        device, precision, conv_backend, batch, tile, overlap, self_ensemble: see :class:`sdsd.inference.Engine`
            and :class:`sdsd.inference.TorchBackend` (``batch`` is also the frames per feature call).
        runtime: ``torch`` (default), ``openvino``, ``onnxruntime`` or ``auto`` (:func:`sdsd.runtimes.make_backend`;
            ``precision`` may then be ``auto``). frames_hint: the job's expected frame count (``auto`` only).

    Raises:
        UserError: missing/unreadable checkpoint, bad option file, or a checkpoint that does not fit.
    """
    from sdsd.archs import load_model
    from sdsd.inference import build_engine

    network_opts, file_backend = None, "auto"
    if opt_path is not None:
        opt = load_option_file(opt_path) if isinstance(opt_path, str) else opt_path
        network_opts, file_backend = opt["network_G"], opt["conv_backend"]
    net, _, _ = load_model(resolve_model(model), network_opts, strict=True)
    # An explicit --conv-backend restricts auto's PyTorch candidates; the option file's only sets the default.
    return build_engine(net, device, runtime=runtime, precision=precision, conv_backend=conv_backend or file_backend,
                        batch=batch, chunk=batch, tile=tile, overlap=overlap, self_ensemble=self_ensemble,
                        frames_hint=frames_hint)


def peak_memory_mib(device: torch.device | None = None) -> tuple[float, float | None]:
    """``(peak RSS of this process, peak CUDA memory allocated or None)`` in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    cuda = None
    if device is not None and device.type == "cuda":
        import torch

        cuda = torch.cuda.max_memory_allocated(device) / 2**20
    return rss_mib, cuda


# -- command line -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdsd-enhance",
        description="Enhance a low-light video or frame folder with SDSD-Net (streaming, bounded memory).",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video file, or folder of frames (PNG/JPG/BGR .npy, sorted by name); several inputs, a "
                             "folder of videos or a .txt list of paths (one per line) enhance a whole archive into "
                             "the folder -o")
    parser.add_argument("-o", "--output", required=True,
                        help="video file (.mp4/.mkv/.mov/.avi/...: H.264, audio copied) or folder for PNG frames; "
                             "for an archive, the folder that receives one video per input")
    parser.add_argument("--model", required=True,
                        help="checkpoint path, or indoor|outdoor|smid for pretrain/<name>_G.pth")
    parser.add_argument("--opt", default=None,
                        help="YAML option file whose network_G describes the network (default: read it off the "
                             "checkpoint)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    parser.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto",
                        help="auto (default): the fastest this machine runs, measured on the first window and "
                             "remembered; torch, openvino or onnxruntime force one")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=None,
                        help="auto (default): the fastest whose output is within 40 dB PSNR of fp32 on the first "
                             "window (bf16 only on CPUs with native bf16; measured with --runtime auto, a fixed "
                             "runtime runs fp32); fp32 forces exact; int8: OpenVINO quantized by NNCF, calibrated on "
                             "the first frames")
    parser.add_argument("--amp", choices=PRECISIONS[1:], default=None, help="same as --precision (bf16, fp16)")
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
    parser.add_argument("--exposure", default=None, metavar="auto|off|VALUE",
                        help="bring each frame, in linear light and with a gain that changes smoothly over time, to "
                             "the brightness the model was trained on (auto: from the checkpoint's sidecar "
                             f"<model>.json; VALUE: the target white level, {WHITE_LEVEL_TEXT}, for checkpoints "
                             "without one). Default: auto when the "
                             "checkpoint has a sidecar, else off")
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
    parser.add_argument("--report", action="store_true",
                        help="also measure, without a ground truth, the input's camera (noise level, white level, "
                             "exposure) and the output's temporal consistency against the input's own motion "
                             "(warping error, flicker); printed, and kept in an archive's summary.json. Costs an "
                             "optical flow per frame pair")
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


def _limited(frames: Iterable[np.ndarray], limit: int | None) -> Iterator[np.ndarray]:
    # Stops right after the limit-th frame, without asking the decoder for one more (which, on a damaged file
    # holding exactly that many frames, would report the damage of a part the preview does not need).
    if limit is None:
        yield from frames
        return
    for i, frame in enumerate(frames):
        yield frame
        if i + 1 >= limit:
            return


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


def _measured(results: Iterable[np.ndarray], sources: deque, meter) -> Iterator[np.ndarray]:
    """``results`` unchanged, each enhanced frame handed with its input frame (from ``sources``) to ``meter``."""
    for frame in results:
        meter.add(frame, sources.popleft())
        yield frame


def enhance_one(args, engine: Engine, input_path: str, output_path: str) -> dict:
    """Enhance one video or frame folder into ``output_path`` with ``engine`` (settings from parsed ``args``).

    Returns:
        A summary dict: frames, seconds, fps, peak memory, output, kind, and the engine's runtime and precision.
    """
    import torch
    from tqdm import tqdm

    from sdsd.exposure import ExposureMatcher
    from sdsd.inference import MIN_SIZE
    from sdsd.video import CODECS, VideoWriter, open_source, open_writer, output_color

    check_paths(input_path, output_path)
    device = engine.backend.device
    source = open_source(input_path, fps=args.fps)
    info = source.info
    if min(info.width, info.height) < MIN_SIZE:
        source.close()
        raise UserError(f"{input_path}: frame size {info.width}x{info.height} is below the {MIN_SIZE} px minimum; "
                        "upscale it first")
    try:  # frames too large for memory get tiles chosen before the first one (unless --tile was given)
        note = engine.fit_tiles(info.width, info.height)
    except BaseException:
        source.close()
        raise
    if note:
        print(f"info: {input_path}: {note}", file=sys.stderr)
    total = info.frame_count
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    out_width = info.width * 2 if args.compare else info.width
    audio = input_path if info.audio_streams and not args.no_audio and not source.is_folder else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # Temporary files of our own naming that no writer touched for an hour were left by a killed run (SIGKILL
    # cannot be caught); younger ones may belong to another process writing into the same folder right now.
    for stale in remove_stale_temps(os.path.dirname(os.path.abspath(output_path)), min_age_s=STALE_TEMP_AGE_S):
        print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
    start = time.perf_counter()
    try:
        # Colour follows the source unless --colorspace/--color-range say; timestamps use the source's unit.
        color = output_color(info.color, out_width, info.height, args.colorspace, args.color_range)
        writer = open_writer(output_path, out_width, info.height, info.fps, audio_from=audio,
                             codec=CODECS[args.codec] if args.codec else None, crf=args.crf, color=color,
                             bit_depth=args.bit_depth, time_base=info.time_base)
    except BaseException:
        source.close()
        raise
    # Above 8 bits in or out, the network's output stays float until the writer quantises it once.
    deep = info.bit_depth > 8 or args.bit_depth > 8
    with writer, source:
        decoded = source.timed_frames()
        inputs = results = None
        try:
            times: deque[tuple[int | None, int | None]] = deque()
            inputs = _tee_times(_limited(decoded, args.max_frames), times)
            queue: deque[np.ndarray] = deque()
            if args.compare:
                inputs = _tee_inputs(inputs, queue)
            estimator = meter = None
            report_queue: deque[np.ndarray] = deque()
            if getattr(args, "report", False):
                # Both look at the input as decoded, before the exposure matcher changes it.
                from sdsd.estimate import InputEstimator
                from sdsd.metrics.temporal import NoReferenceMeter

                estimator, meter = InputEstimator(), NoReferenceMeter()
                inputs = _tee_inputs(estimator(inputs), report_queue)
            matcher = None
            if getattr(args, "exposure_target", None) is not None:
                # A transform in front of the engine: it sees the frames the network sees, in order.
                matcher = ExposureMatcher(args.exposure_target)
                inputs = matcher(inputs)
            results = engine.stream(inputs, padding=args.padding, as_float=deep)
            if meter is not None:
                results = _measured(results, report_queue, meter)
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
        finally:
            # Close the generator chain here, so the decoder is freed with this file, not whenever the garbage
            # collector reaches it (in an archive, during some later file).
            for gen in (results, inputs, decoded):
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
        if writer.count == 0:
            raise UserError(f"{input_path}: no frames could be decoded")
    seconds = time.perf_counter() - start
    gc.collect()  # PyAV objects left in reference cycles are freed now, between files, not during the next one
    rss, cuda = peak_memory_mib(device)
    count = writer.count
    fps = count / seconds if seconds > 0 else float("inf")
    memory = f"{rss:.0f} MiB" + (f" (CUDA {cuda:.0f} MiB)" if cuda is not None else "")
    kind = "video" if isinstance(writer, VideoWriter) else "PNG folder"
    described = engine.describe()
    how = f"runtime {described['runtime']} {described['precision']}" + (
        f" {described['conv_backend']}" if described.get("conv_backend") else "") + (
        " (chosen by measuring)" if described.get("selected_by") == "auto" else "")
    gains = matcher.summary() if matcher is not None else None
    if gains is not None:
        how += f", exposure gain {gains['gain_min']:.3g}-{gains['gain_max']:.3g}"
    print(how)
    print(f"enhanced {count} frames in {seconds:.1f} s ({fps:.2f} frames/s), peak memory {memory} -> {output_path}")
    report = None
    if meter is not None:
        import json

        from sdsd.metrics.temporal import format_report

        # Plain JSON values (numpy scalars as Python numbers): the report travels in an archive's summary.json.
        report = json.loads(json.dumps({"input_camera": estimator.summary(), "temporal": meter.summary()},
                                       default=lambda v: v.item() if hasattr(v, "item") else str(v)))
        camera = report["input_camera"]
        if camera is None:
            print(f"report: {input_path}: too few or too flat frames to estimate the input's camera")
        else:
            print(f"report: {input_path}: input noise std {camera['noise_std_at_white']:.3g} at its white level "
                  f"{camera['white_level_srgb']:.3g} (sRGB-decoded; {camera['noise_bins']} brightness bins), "
                  f"exposure about {camera['exposure']:.3g} of a well-exposed frame")
        if report["temporal"]["pairs"]:
            print(format_report(report["temporal"], os.path.basename(output_path), os.path.basename(input_path)))
    return {"frames": count, "seconds": seconds, "fps": fps, "peak_rss_mib": rss, "peak_cuda_mib": cuda,
            "output": output_path, "kind": kind, "runtime": described["runtime"],
            "precision": described["precision"], "engine": described,
            "exposure": gains, "report": report}


def set_exposure(args) -> float | None:
    """Resolve ``args.exposure`` against the checkpoint into ``args.exposure_target`` (``None``: no matching)."""
    from sdsd.exposure import resolve_target

    model = resolve_model(args.model)
    args.exposure_target = resolve_target(args.exposure, model)
    if args.exposure is None and args.exposure_target is None:
        print(f"info: {model} has no training-statistics sidecar: --exposure off (give --exposure VALUE, a target "
              f"white level ({WHITE_LEVEL_TEXT}), to match the input's exposure)")
    return args.exposure_target


def _engine_for(args, device, frames_hint: int | None = None) -> Engine:
    """The engine the parsed ``args`` ask for; ``frames_hint`` (the job's frame count) lets ``--runtime auto``
    judge whether converting a model for another runtime pays off."""
    if args.amp and args.precision and args.amp != args.precision:
        raise UserError(f"--amp {args.amp} and --precision {args.precision} disagree; give one of them")
    precision = args.precision or args.amp or "auto"
    if precision == "fp16" and device.type == "cpu":
        raise UserError("--precision fp16 needs a CUDA device; use --precision bf16 on the CPU")
    return load_engine(args.model, args.opt, device=device, precision=precision, conv_backend=args.conv_backend,
                       batch=args.batch, tile=args.tile, overlap=args.tile_overlap,
                       self_ensemble=args.self_ensemble, runtime=args.runtime, frames_hint=frames_hint)


def _check_sources(inputs: list[str], model: str) -> None:
    """Refuse a missing input or checkpoint before PyTorch and the video libraries load (a mistyped path answers at
    once, not after seconds of imports); everything else about them is checked where they are read."""
    for path in inputs:
        if not os.path.lexists(path):
            raise UserError(f"input not found: {path} (give a video file or a folder of frames)")
    checkpoint = resolve_model(model)
    if not os.path.isfile(checkpoint):
        raise UserError(f"checkpoint not found: {checkpoint}")


def enhance_file(args) -> dict:
    """Run the single-input command described by parsed ``args``; returns :func:`enhance_one`'s summary."""
    _check_args(args)
    (input_path,) = args.inputs
    check_paths(input_path, args.output)
    _check_sources([input_path], args.model)
    from sdsd.utils.dist import select_device

    set_exposure(args)
    device = select_device(None, want=args.device)
    return enhance_one(args, _engine_for(args, device, _frames_in([input_path], args)), input_path, args.output)


# -- whole archives -------------------------------------------------------------------------------------------------


def enhance_archive(args, files: list[str]) -> dict:
    """Enhance many inputs into the folder ``args.output``, shared out across the processes of a torchrun job.

    Processes take the next input from a shared counter and never wait for one another (:mod:`sdsd.archive`). An
    output finished earlier by this same job (same input, checkpoint and pixel-changing settings, per its
    completion record) is skipped, so a rerun resumes; one made under other settings is redone; a file at an
    output's name that this program did not write is refused. A file that fails is reported on one line and the
    others go on. The process that finishes last prints one summary and writes it to ``summary.json``.

    Returns:
        ``{"files": [{"input", "output", "status" (done|skipped|failed), "frames", "seconds", "runtime",
        "precision", "error", "rank"}...], "failed": n, "world_size": w}``; on a process that did not finish last,
        ``"files"`` holds only its own inputs and ``"last"`` is false.
    """
    from sdsd import archive
    from sdsd.utils.io import atomic_write_json

    _check_args(args)
    outputs = archive.archive_outputs(files, args.output)
    archive.check_archive_paths(args.inputs, files, outputs, args.output)
    _check_sources([], args.model)
    from sdsd.utils.dist import select_device

    set_exposure(args)
    os.makedirs(args.output, exist_ok=True)
    queue = archive.WorkQueue(len(files))
    for folder in (args.output, os.path.join(args.output, archive.RECORD_FOLDER)):
        for stale in remove_stale_temps(folder):
            print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
    device = select_device(None, int(os.environ.get("LOCAL_RANK", "0")), want=args.device)
    if device.type == "cuda":
        import torch

        torch.cuda.set_device(device)
    key = archive.job_key(args, resolve_model(args.model))
    todo = [f for f, o in zip(files, outputs) if not os.path.exists(o)]
    hint = _frames_in(todo, args)
    hint = -(-hint // queue.world) if hint else None  # this process's share, roughly
    engine = None
    mine = []
    while (k := queue.next()) is not None:
        row = {"input": files[k], "output": outputs[k], "status": "skipped", "frames": None, "seconds": None,
               "runtime": None, "precision": None, "error": None, "rank": queue.rank}
        try:
            identity = archive.input_identity(files[k])
            action, why = archive.recognise(outputs[k], identity, key)
            if action == "refuse":
                raise UserError(why)
            if action == "make":
                if why:
                    print(why, file=sys.stderr)
                archive.write_record(outputs[k], "pending", identity, key)
                engine = engine or _engine_for(args, device, hint)
                done = enhance_one(args, engine, files[k], outputs[k])
                archive.write_record(outputs[k], "done", identity, key, frames=done["frames"])
                row.update(status="done", frames=done["frames"], seconds=round(done["seconds"], 3),
                           runtime=done["runtime"], precision=done["precision"])
                if done["report"] is not None:
                    row["report"] = done["report"]
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the archive
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"error: {files[k]}: {message[:300]} (skipped)", file=sys.stderr)
            row.update(status="failed", error=message[:300])
        queue.post(k, row)
        mine.append(row)
    rows = queue.finish()
    if rows is None:  # another process finishes last and writes the summary
        return {"files": mine, "failed": sum(r["status"] == "failed" for r in mine), "world_size": queue.world,
                "last": False}
    summary = {"files": rows, "failed": sum(r["status"] == "failed" for r in rows), "world_size": queue.world,
               "last": True}
    atomic_write_json(summary, os.path.join(args.output, archive.SUMMARY))
    print(archive.format_summary(rows))
    return summary


def _frames_in(files: list[str], args) -> int | None:
    """The frames this process will enhance (what ``--runtime auto`` weighs a conversion against), from the
    containers' frame counts without decoding; unreadable or uncounted files count nothing here (they are reported
    when their turn comes)."""
    from sdsd.video import probe_frame_count

    total = 0
    for path in files:
        count = probe_frame_count(path) or 0
        total += min(count, args.max_frames) if args.max_frames else count
    return total or None


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Console entry point ``sdsd-enhance`` / ``python -m sdsd.enhance``.

    Returns:
        The exit status (:data:`sdsd.archive.EXIT_CODES`): 0 done; 3 some inputs of an archive failed (0 for a
        ``torchrun`` worker, whose failures are recorded in ``summary.json``); usage errors exit 2 through
        ``cli_main``.
    """
    from sdsd.utils.signals import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt():  # torchrun stops workers with SIGTERM: clean up as on Ctrl-C
        return _run(args)


def _run(args) -> int:
    if args.opt is not None:  # the option file is checked before anything else is looked at
        args.opt = load_option_file(args.opt)
    files = archive_inputs(args.inputs)
    if files is None:
        if len(args.inputs) != 1:
            raise UserError("give one input, or several inputs with -o an output folder")
        enhance_file(args)
        return 0
    failed = enhance_archive(args, files)["failed"]
    if failed and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return EXIT_FAILED_INPUTS
    return 0


if __name__ == "__main__":
    sys.exit(main())
