"""Temporal consistency of an enhanced video without a ground truth: does a setting make it flicker?

    python -m sdsd.tools.temporal ENHANCED_VIDEO --input INPUT_VIDEO [--json PATH] [--max-frames N]

Both videos (files PyAV decodes, or frame folders; :mod:`sdsd.video`) are read frame by frame, frame ``k`` of the
enhanced video belonging to frame ``k`` of its input; they must have the same size and number of frames. For each
pair of consecutive frames (:class:`sdsd.metrics.temporal.NoReferenceMeter`):

* the motion is the dense optical flow (OpenCV DIS, medium preset) of the *input*, brightened by one gain per pair
  so the flow sees a normal exposure, with occluded pixels found by the forward-backward check;
* **warping error**: the mean over the pixels that are not occluded of the squared RGB distance (values in [0, 1])
  between the enhanced frame and the previous enhanced frame warped by that flow; the same figure of the
  brightened input is printed beside it (what its noise and the flow's errors alone give);
* **flicker**: ``|dB_out - s dB_in|``, the change of the enhanced video's mean brightness from one frame to the next
  less the input's change scaled by the pair's brightening ``s`` (the ratio of the two videos' mean brightness over
  the pair): 0 when the output follows the input's brightness, large when its exposure jumps.

Each is the mean over the pairs. Formulas: docs/protocol.md#temporal-metrics. Compare settings (e.g. ``sdsd.enhance
--exposure auto`` against a fixed exposure, or tiles) on the same input: the figures are relative, not absolute.
"""

from __future__ import annotations

import os

from sdsd.errors import UserError, cli_main
from sdsd.metrics.temporal import NoReferenceMeter, format_report
from sdsd.utils.cli import ArgumentParser, HelpFormatter
from sdsd.utils.io import atomic_write_json

__all__ = ["measure", "main", "build_parser"]


def measure(enhanced: str, source: str, max_frames: int | None = None) -> dict:
    """The no-reference temporal metrics of video ``enhanced`` made from video ``source``.

    Returns:
        :meth:`~sdsd.metrics.temporal.NoReferenceMeter.summary` plus ``enhanced`` and ``input`` (the paths).

    Raises:
        UserError: a video cannot be read, the two differ in size or length, or fewer than two frames.
    """
    from sdsd.video import open_source

    meter = NoReferenceMeter()
    with open_source(enhanced) as out_video, open_source(source) as in_video:
        a, b = out_video.info, in_video.info
        if (a.width, a.height) != (b.width, b.height):
            raise UserError(f"{enhanced} is {a.width}x{a.height} but its input {source} is {b.width}x{b.height}; "
                            "give the input the enhanced video was made from, at its size")
        out_frames, in_frames = iter(out_video), iter(in_video)
        while max_frames is None or meter.frames < max_frames:
            out_frame, in_frame = next(out_frames, None), next(in_frames, None)
            if out_frame is None and in_frame is None:
                break
            if out_frame is None or in_frame is None:
                short, other = (enhanced, source) if out_frame is None else (source, enhanced)
                raise UserError(f"{short} ends after {meter.frames} frames but {other} goes on; give the input the "
                                "enhanced video was made from (or --max-frames)")
            meter.add(out_frame, in_frame)
    if meter.frames < 2:
        raise UserError(f"{enhanced} has {meter.frames} frame(s); temporal metrics need at least two")
    return {**meter.summary(), "enhanced": os.path.abspath(enhanced), "input": os.path.abspath(source)}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m sdsd.tools.temporal", formatter_class=HelpFormatter,
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("enhanced", metavar="ENHANCED_VIDEO", help="the enhanced video (file or frame folder)")
    parser.add_argument("--input", required=True, metavar="INPUT_VIDEO", help="the video it was made from")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--max-frames", type=int, metavar="N", help="only the first N frames")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.max_frames is not None and args.max_frames < 2:
        raise UserError(f"--max-frames must be at least 2 (got {args.max_frames})")
    summary = measure(args.enhanced, args.input, args.max_frames)
    print(format_report(summary, os.path.basename(args.enhanced), os.path.basename(args.input)))
    if args.json:
        atomic_write_json(summary, args.json)
        print(f"wrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
