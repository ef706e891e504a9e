"""Pieces shared by the quantitative and qualitative tests: the protocol options and the command line."""

from __future__ import annotations

import argparse
import sys

from sdsd.errors import UserError
from sdsd.options.presets import PRESET_NAMES
from sdsd.options.schema import AVERAGES, PROTOCOL_KEYS

__all__ = ["AVERAGES", "check_protocol", "preset_protocol", "progress_bar", "add_common_arguments",
           "check_common_arguments"]


def check_protocol(opt: dict, self_ensemble: bool | None = None) -> dict:
    """The ``protocol`` section as a plain dict, with ``self_ensemble`` (the command-line flag) overriding the file.

    The values were checked, and ``protocol.preset`` resolved, when the options were loaded
    (:func:`sdsd.options.load`); absent keys (options not loaded from a file) get their schema defaults: the
    ``sdsd`` preset, the published protocol. ``gt_mean`` is ``False`` or the name of its rule. ``temporal`` is
    present only when it lists a metric (off, the section is what it was before the temporal metrics existed).
    """
    from sdsd.metrics import gt_mean_rule

    out = {key: option.default for key, option in PROTOCOL_KEYS.items()}
    out.update(opt.get("protocol") or {})
    out["gt_mean"] = gt_mean_rule(out["gt_mean"]) or False
    if out.get("temporal"):
        out["temporal"] = list(out["temporal"])
    else:
        out.pop("temporal", None)
    if self_ensemble is not None:
        out["self_ensemble"] = bool(self_ensemble)
    return out


def preset_protocol(name: str = "sdsd") -> dict:
    """The resolved ``protocol`` section of a preset (:data:`sdsd.options.presets.PRESETS`) with nothing set apart
    from it: what :func:`check_protocol` gives options whose only protocol key is ``protocol.preset: name``.

    Raises:
        UserError: ``name`` is not a preset.
    """
    from sdsd.options.presets import PRESETS

    if name not in PRESETS:
        raise UserError(f"unknown protocol preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    preset = PRESETS[name]
    protocol = {"preset": name, **preset.protocol}
    if protocol["gt_mean"] is True:
        protocol["gt_mean"] = preset.gt_mean_rule
    return check_protocol({"protocol": protocol})


def progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr (disabled unless ``enabled``: only rank 0 shows one)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


class _PresetArgument(argparse.Action):
    """``--protocol NAME``: the same as ``--set protocol.preset=NAME`` (in command-line order with ``--set``)."""

    def __call__(self, parser, namespace, value, option_string=None):
        # A new list: the parser's default list must not grow from one parse to the next.
        namespace.overrides = [*(getattr(namespace, "overrides", None) or []), f"protocol.preset={value}"]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the quantitative and qualitative tests."""
    parser.add_argument("-opt", "--opt", required=True, help="test option file (e.g. options/test/test_in_sdsd.yml)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override options, e.g. --set path.pretrain_model_G=pretrain/indoor_G.pth "
                             "(several per --set, repeatable; values are YAML scalars)")
    parser.add_argument("--protocol", action=_PresetArgument, choices=PRESET_NAMES, metavar="PRESET",
                        help=f"whose reporting protocol to follow ({', '.join(PRESET_NAMES)}; default: the option "
                             "file's protocol.preset, else sdsd): split, frames, rounding, averaging, SSIM, GT-mean "
                             "and resize, except keys the file sets explicitly; see the README's protocol comparison")
    parser.add_argument("--self-ensemble", action="store_true", default=None,
                        help="average the outputs over horizontal/vertical flips of the window (x4 cost)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="compute device; auto = the option file's gpu_ids when CUDA is available, else CPU")
    parser.add_argument("--batch", type=int, default=1, help="windows per network call (default 1)")
    parser.add_argument("--chunk", type=int, default=4, help="frames per feature-extraction call (default 4)")
    parser.add_argument("--runtime", dest="overrides", action=_RuntimeOverride, metavar="RUNTIME",
                        help="torch (default, the published numbers), openvino, onnxruntime or auto (fastest "
                             "measured); fp32 always; same as --set runtime=RUNTIME")
    parser.add_argument("--precision", dest="overrides", action=_PrecisionOverride, metavar="PRECISION",
                        help="fp32 (default, the published numbers) or int8 (runtime openvino: NNCF post-training "
                             "quantization calibrated on the first frames evaluated); same as --set "
                             "precision=PRECISION")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Accepted for the torch.distributed.launch command lines of the reference; torchrun's environment decides.
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm"), default="none", help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


class _RuntimeOverride(argparse.Action):
    """``--runtime X`` is the override ``runtime=X``: the option file's value check applies to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, [*overrides, f"runtime={values}"])


class _PrecisionOverride(argparse.Action):
    """``--precision X`` is the override ``precision=X`` (checked as the option file's value is)."""

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, [*overrides, f"precision={values}"])


def check_common_arguments(args: argparse.Namespace) -> None:
    """Reject non-positive ``--batch`` / ``--chunk`` with a one-line error."""
    for name in ("batch", "chunk"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be a positive integer (got {getattr(args, name)})")


# The parsers of the two test scripts live here, in a module that loads nothing heavy: the scripts parse their
# arguments (answering --help and argument errors) before the evaluation and PyTorch load.


def quantitative_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantitative_test.py",
                                     description="PSNR/SSIM of a checkpoint on the test scenes of an option file.")
    add_common_arguments(parser)
    parser.add_argument("--json", help="also write the metrics JSON to this path")
    parser.add_argument("--predictions", metavar="DIR",
                        help="score the frames in DIR instead of running a checkpoint: the output folder of "
                             "qualitative_test.py, or one frame folder or video file per scene (DIR/<scene>/ or "
                             "DIR/<scene>.mp4), against the option file's ground truth and protocol")
    return parser


def qualitative_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qualitative_test.py",
                                     description="Enhanced frames, panels and videos of the test scenes.")
    add_common_arguments(parser)
    parser.add_argument("--fps", type=int, default=10, help="frame rate of the scene videos (default 10)")
    parser.add_argument("--no-video", action="store_true", help="write the images only")
    return parser
