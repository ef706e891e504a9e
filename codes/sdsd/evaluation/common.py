"""Pieces shared by the quantitative and qualitative tests: the protocol options and the command line."""

from __future__ import annotations

import argparse
import sys

from sdsd.errors import UserError
from sdsd.metrics import CHANNELS

__all__ = ["AVERAGES", "check_protocol", "progress_bar", "add_common_arguments", "check_common_arguments"]

AVERAGES = ("scene", "frame")


def check_protocol(opt: dict, self_ensemble: bool | None = None) -> dict:
    """Validate the ``protocol`` section and return it as a plain dict (``self_ensemble`` overrides the file).

    Raises:
        UserError: an unknown value, naming the option.
    """
    proto = dict(opt.get("protocol") or {})
    out = {
        "average": proto.get("average", "scene"),
        "channel": proto.get("channel", "rgb"),
        "gt_mean": proto.get("gt_mean", False),
        "self_ensemble": proto.get("self_ensemble", False) if self_ensemble is None else self_ensemble,
    }
    if out["average"] not in AVERAGES:
        raise UserError(f"protocol.average is {out['average']!r}; use scene (published) or frame")
    if out["channel"] not in CHANNELS:
        raise UserError(f"protocol.channel is {out['channel']!r}; use rgb (published) or y")
    for key in ("gt_mean", "self_ensemble"):
        if not isinstance(out[key], bool):
            raise UserError(f"protocol.{key} must be true or false (got {out[key]!r})")
    return out


def progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr (disabled unless ``enabled``: only rank 0 shows one)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the quantitative and qualitative tests."""
    parser.add_argument("-opt", "--opt", required=True, help="test option file (e.g. options/test/test_in_sdsd.yml)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override options, e.g. --set path.pretrain_model_G=pretrain/indoor_G.pth "
                             "(several per --set, repeatable; values are YAML scalars)")
    parser.add_argument("--self-ensemble", action="store_true", default=None,
                        help="average the outputs over horizontal/vertical flips of the window (x4 cost)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="compute device; auto = the option file's gpu_ids when CUDA is available, else CPU")
    parser.add_argument("--batch", type=int, default=1, help="windows per network call (default 1)")
    parser.add_argument("--chunk", type=int, default=4, help="frames per feature-extraction call (default 4)")
    parser.add_argument("--runtime", dest="overrides", action=_RuntimeOverride, metavar="RUNTIME",
                        help="torch (default, the published numbers), openvino, onnxruntime or auto (fastest "
                             "measured); fp32 always; same as --set runtime=RUNTIME")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Accepted for the torch.distributed.launch command lines of the reference; torchrun's environment decides.
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm"), default="none", help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


class _RuntimeOverride(argparse.Action):
    """``--runtime X`` is the override ``runtime=X``: the option file's value check applies to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        overrides = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, [*overrides, f"runtime={values}"])


def check_common_arguments(args: argparse.Namespace) -> None:
    """Reject non-positive ``--batch`` / ``--chunk`` with a one-line error."""
    for name in ("batch", "chunk"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be a positive integer (got {getattr(args, name)})")
