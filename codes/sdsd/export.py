"""Export SDSD-Net for other runtimes: ONNX (ONNX Runtime) or OpenVINO IR.

Usage::

    python -m sdsd.export CKPT --format onnx|openvino -o DIR [--opt FILE.yml] [--height H --width W]
    python -m sdsd.export CKPT --cache [--runtime openvino|onnxruntime|all] [--height H --width W] [--int8 VIDEO]

Two graphs are written, so a runtime keeps the engine's feature reuse: ``features`` (per frame: ``T x 3 x H x W``
-> the ``L1, L2, L3`` pyramid) and ``windows`` (per window: the pyramid of the N frames + the centre frame ->
``enhanced, illumination, denoised``). ONNX graphs (opset 19, the deformable convolution as ``DeformConv``) have a
dynamic frame count, height and width; OpenVINO models are for ``--height x --width`` frames, one frame or window
per call (with dynamic height/width its converted window graph did not match PyTorch). Network settings come from
``--opt`` (its ``network_G``) or are read off the checkpoint. Both graphs are run on random frames and the largest
difference to PyTorch is printed.

The output folder appears whole or not at all: the files are written to a marked temporary folder beside it and
renamed onto it in one step, replacing a previous export there; a folder holding anything else is refused. The
temporary folders of killed exports are removed by the next export into the same parent folder.

``sdsd.enhance --runtime openvino|onnxruntime`` and ``runtime:`` in option files export on their own (into the
model cache, :mod:`sdsd.runtimes`); ``-o`` is for using the graphs elsewhere. ``--cache`` converts into that model
cache instead, ahead of the jobs (the conversions a short ``--runtime auto`` job leaves out as too costly for it):
OpenVINO's models for ``--height x --width`` frames and ONNX Runtime's graphs, and with ``--int8 VIDEO`` OpenVINO's
int8 models too, quantized by NNCF on the video's first frames (their size, padded to a multiple of 16, is then the
models' size). A later ``--runtime auto`` run finds them converted and times them (its remembered choice is
upgraded).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from sdsd.errors import UserError, cli_main
from sdsd.utils.io import OWNER_RECORD, atomic_folder, make_folder, remove_stale_temps

if TYPE_CHECKING:
    import torch

__all__ = ["EXPORT_FILES", "check_output", "export", "export_to_cache", "main"]


#: The files an export writes (ONNX graphs with their optional external-data files, OpenVINO IR): an existing
#: output folder holding only these is a previous export, which a new export replaces whole.
EXPORT_FILES = frozenset({"features.onnx", "windows.onnx", "features.onnx.data", "windows.onnx.data",
                          "features.xml", "features.bin", "windows.xml", "windows.bin"})


def export(checkpoint: str, fmt: str, output: str, opt_path: str | None = None, height: int = 64,
           width: int = 96) -> dict:
    """Export ``checkpoint`` as ``fmt`` (``onnx`` or ``openvino``) into the folder ``output``.

    The graphs are written into a marked temporary folder next to ``output``, checked against PyTorch, then renamed
    onto ``output`` in one step (:func:`sdsd.utils.io.atomic_folder`): a previous export there is replaced whole, and
    on any failure ``output`` is left as it was. Temporary folders that killed exports left next to ``output`` are
    removed first (:func:`sdsd.utils.io.remove_stale_temps`).

    Returns ``{"files": [...], "max_abs_diff": float, "removed": [...]}`` (the check against PyTorch on random
    frames; the stale temporary folders removed).

    Raises:
        UserError: bad checkpoint / option file / shape, an output that is not a folder of a previous export, an
            output folder that cannot be written, or the runtime is missing or refuses the graph.
    """
    from sdsd import runtimes
    from sdsd.archs import load_model

    if fmt not in ("onnx", "openvino"):
        raise UserError(f"--format {fmt!r}: use onnx or openvino")
    network_opts = None
    if opt_path is not None:
        from sdsd import options

        network_opts = options.load(opt_path, ["name=export"], is_train=False)["network_G"]
    net, _, _ = load_model(checkpoint, network_opts, strict=True)
    check_output(output)
    target = os.path.abspath(output)  # "out/" and "out" name one folder (the temporary name is built from it)
    parent = os.path.dirname(target)
    try:
        make_folder(parent)
    except OSError as exc:
        raise UserError(f"-o {output}: cannot create the folder {parent} ({exc.strerror or type(exc).__name__}); "
                        "give an output in a writable folder") from None
    removed = remove_stale_temps(parent)
    try:
        with atomic_folder(target) as tmp:
            if fmt == "onnx":
                paths = runtimes.export_onnx(net, tmp, height, width)
            else:
                paths = runtimes.export_openvino(net, tmp, height, width)
            diff = _check(fmt, paths, net, height, width)
            names = sorted(name for name in os.listdir(tmp) if name != OWNER_RECORD)
    except OSError as exc:
        raise UserError(f"-o {output}: could not write the export ({exc.strerror or type(exc).__name__}); give a "
                        "writable folder with free space") from None
    return {"files": [os.path.join(output, name) for name in names], "max_abs_diff": diff, "removed": removed}


def export_to_cache(checkpoint: str, runtimes: list[str], height: int = 512, width: int = 960,
                    opt_path: str | None = None, int8_video: str | None = None,
                    cache: str | None = None) -> list[str]:
    """Convert ``checkpoint`` into the model cache for ``runtimes`` (``openvino``: for ``height x width`` frames,
    with ``int8_video`` also its int8 models, calibrated on that video's first frames, whose padded size is then
    the size; ``onnxruntime``: any size). Returns one line per model: what it is and whether it was converted now
    or already cached.

    Raises:
        UserError: bad checkpoint / option file / shape / video, the cache cannot be used, or a runtime is missing
            or refuses the graph.
    """
    from sdsd import runtimes as rt
    from sdsd.archs import load_model
    from sdsd.runtimes.graphs import _check_shape

    network_opts = None
    if opt_path is not None:
        from sdsd import options

        network_opts = options.load(opt_path, ["name=export"], is_train=False)["network_G"]
    calibration = None
    if int8_video is not None:
        calibration = _calibration_frames(int8_video)
        height, width = calibration.shape[-2:]
    _check_shape(height, width)
    net, _, _ = load_model(checkpoint, network_opts, strict=True)
    lines = []
    for name in runtimes:
        if name == "openvino":
            for precision in ("fp32", "int8") if calibration is not None else ("fp32",):
                backend = rt.OpenVINOBackend(net, precision=precision, cache=cache,
                                             calibration=calibration if precision == "int8" else None)
                built = backend.prepare(height, width)
                lines.append(f"openvino {precision} {height}x{width}: {'converted' if built else 'already cached'}")
        elif name == "onnxruntime":
            cached = rt.is_cached("onnxruntime", net, 0, 0, cache)
            rt.OnnxRuntimeBackend(net, cache=cache)
            lines.append(f"onnxruntime fp32: {'already cached' if cached else 'converted'}")
        else:
            raise UserError(f"--runtime {name}: use openvino, onnxruntime or all")
    return lines


def _calibration_frames(path: str) -> torch.Tensor:
    """The first frames of a video (as many as the int8 recipe calibrates on), ``T x 3 x H x W`` RGB in [0, 1],
    padded to a multiple of 16 as the engine pads them."""
    import numpy as np
    import torch

    from sdsd.inference import pad_to_multiple
    from sdsd.runtimes.quantize import RECIPE
    from sdsd.video import read_frames

    if not os.path.exists(path):
        raise UserError(f"--int8 {path}: no such video or frame folder")
    frames = list(read_frames(path, int(RECIPE["windows"])))
    if not frames:
        raise UserError(f"--int8 {path} has no frames; give a video to calibrate on")
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float() for f in frames])
    if frames[0].dtype == np.uint8:
        x = x / 255.0
    return pad_to_multiple(x)


def check_output(output: str) -> None:
    """Refuse an ``output`` that an export may not replace: a file, a symbolic link, or a folder holding anything
    but the files of a previous export (:data:`EXPORT_FILES`). A missing or empty folder is fine.

    Raises:
        UserError: one line naming ``output`` and what it holds.
    """
    if os.path.islink(output.rstrip("/" + os.sep) or output):
        raise UserError(f"-o {output} is a symbolic link; give a folder")
    if not os.path.lexists(output):
        return
    if not os.path.isdir(output):
        raise UserError(f"-o {output} is a file; give a folder")
    try:
        names = sorted(os.listdir(output))
    except OSError as exc:
        raise UserError(f"-o {output} cannot be read ({exc.strerror or type(exc).__name__}); give another "
                        "folder") from None
    foreign = [name for name in names if name not in EXPORT_FILES or os.path.islink(os.path.join(output, name))
               or not os.path.isfile(os.path.join(output, name))]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"-o {output} exists and holds files export does not write ({shown}); give a new or empty "
                        "folder, or the folder of a previous export (it is replaced whole)")


def _check(fmt: str, paths: dict, net, height: int, width: int) -> float:
    """Largest absolute difference between the exported graphs and PyTorch (features and window outputs)."""
    import numpy as np
    import torch

    from sdsd import runtimes
    from sdsd.runtimes.graphs import example_inputs, plain_copy

    net = plain_copy(net)
    x, feats, base = example_inputs(net, height, width, frames=2, windows=1)
    with torch.no_grad():
        want = [*net.extract_features(x[:1]), *net.forward_features(tuple(f[:1] for f in feats), base[:1])]
    inputs = ([x[:1].numpy()], [f[:1].numpy() for f in feats] + [base[:1].numpy()])
    if fmt == "onnx":
        ort = runtimes.import_runtime("onnxruntime")
        got = []
        for key, arrays in zip(("features", "windows"), inputs):
            session = ort.InferenceSession(paths[key], providers=["CPUExecutionProvider"])
            got += session.run(None, {i.name: a for i, a in zip(session.get_inputs(), arrays)})
    else:
        ov = runtimes.import_runtime("openvino")
        core = ov.Core()
        got = []
        for key, arrays in zip(("features", "windows"), inputs):
            compiled = core.compile_model(core.read_model(paths[key]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            result = compiled(arrays)
            got += [np.asarray(result[i]) for i in range(3)]
    return max(float(np.abs(np.asarray(g) - w.numpy()).max()) for g, w in zip(got, want))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdsd.export",
                                     description="Export SDSD-Net's two graphs (features, windows) for ONNX Runtime "
                                                 "or OpenVINO, into a folder (--format, -o) or into the model cache "
                                                 "(--cache).")
    parser.add_argument("checkpoint", help="checkpoint path, or indoor|outdoor|smid for pretrain/<name>_G.pth")
    parser.add_argument("--format", choices=("onnx", "openvino"), help="what to write into -o")
    parser.add_argument("-o", "--output", help="output folder (with --format)")
    parser.add_argument("--cache", action="store_true",
                        help="convert into the model cache ($SDSD_CACHE, default ~/.cache/sdsd) for sdsd.enhance "
                             "and runtime auto, instead of into -o")
    parser.add_argument("--runtime", choices=("openvino", "onnxruntime", "all"), default="all",
                        help="with --cache: which runtime's models (default all)")
    parser.add_argument("--int8", metavar="VIDEO", default=None,
                        help="with --cache: also quantize OpenVINO int8 models (NNCF), calibrated on this video's "
                             "first frames; their size is the models' size")
    parser.add_argument("--opt", default=None, help="option file whose network_G describes the network "
                                                    "(default: read it off the checkpoint)")
    parser.add_argument("--height", type=int, default=None,
                        help="frame height, a multiple of 16 (OpenVINO: the model's fixed size, default 512; "
                             "ONNX: only the example's, the graph takes any)")
    parser.add_argument("--width", type=int, default=None, help="frame width (OpenVINO default 960)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m sdsd.export`` (PyTorch loads after the arguments are parsed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from sdsd.enhance import resolve_model

    if args.cache:
        if args.format or args.output:
            raise UserError("--cache converts into the model cache: give it without --format and -o")
        if args.int8 and args.runtime == "onnxruntime":
            raise UserError("--int8 quantizes OpenVINO models: use it with --runtime openvino or all")
        chosen = ["openvino", "onnxruntime"] if args.runtime == "all" else [args.runtime]
        lines = export_to_cache(resolve_model(args.checkpoint), chosen, args.height or 512, args.width or 960,
                                args.opt, args.int8)
        print("\n".join(lines))
        return 0
    if not args.format or not args.output:
        raise UserError("give --format and -o (export into a folder), or --cache (convert into the model cache)")
    if args.int8:
        raise UserError("--int8 goes with --cache (convert into the model cache)")
    default = (512, 960) if args.format == "openvino" else (64, 96)
    height = args.height if args.height is not None else default[0]
    width = args.width if args.width is not None else default[1]
    result = export(resolve_model(args.checkpoint), args.format, args.output, args.opt, height, width)
    for path in result["removed"]:
        print(f"removed {path}, left by an interrupted export", file=sys.stderr)
    print(f"wrote {', '.join(result['files'])}")
    print(f"max abs difference to PyTorch on random frames: {result['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
