"""Qualitative test: enhanced frames, input frames, labelled panels and per-scene videos (``qualitative_test.py``).

Usage::

    python qualitative_test.py -opt options/test/test_in_sdsd.yml [--set key=value ...] [--self-ensemble]
                               [--fps 10] [--no-video]

Outputs under ``path.results_root`` (default ``<root>/results/<name>``), written atomically:

* ``images/output/<scene>.<i>-<n>.png``: the enhanced frame ``i`` of scene ``<scene>``;
* ``images/input/<scene>.<i>-<n>.png``: its low-light input (the centre frame of the window);
* ``images/panel/<scene>.<i>-<n>.png``: input | enhanced | illumination | GT, labelled;
* ``videos/<scene>.mp4``: the panels of the scene as a video (H.264 if available, else MPEG-4).

Naming: ``i`` is the 0-based frame index within the scene (the same ``index`` as in ``metrics.json``), ``n``
the number of frames evaluated in the scene (30 under the published protocol), without zero padding, e.g.
``pair13.0-30.png`` ... ``pair13.29-30.png``. Under torchrun the frames are split across processes; rank 0
assembles the videos from the panels once every process has finished.

The frames come from the evaluation loop (:func:`sdsd.evaluation.loop.run_frames`, the one ``quantitative_test.py``
scores with) through a :class:`FrameWriter`; the panels are :func:`sdsd.evaluation.visualize.frame_panel`'s, the
builder of the trainer's validation images too (:class:`PanelKeeper`).
"""

from __future__ import annotations

import functools
import os

from sdsd.data.lmdb_backend import check_scene_name
from sdsd.errors import cli_main
from sdsd.evaluation.common import check_common_arguments
from sdsd.evaluation.common import qualitative_parser as build_parser
from sdsd.evaluation.loop import FrameConsumer, run_frames
from sdsd.evaluation.quantitative import prepare_evaluation
from sdsd.evaluation.visualize import PANEL_LABELS, frame_images, frame_panel, read_png, write_png, write_video
from sdsd.inference import FrameOutput
from sdsd.utils import dist as dist_utils

__all__ = ["PANEL_LABELS", "FrameWriter", "PanelKeeper", "frame_name", "output_paths", "run", "main",
           "build_parser"]


def frame_name(scene: str, index: int, n: int) -> str:
    """The published file name of frame ``index`` (0-based) of an ``n``-frame scene: ``<scene>.<i>-<n>.png``."""
    return f"{scene}.{index}-{n}.png"


def output_paths(results_root: str, scene: str, index: int, n: int) -> dict[str, str]:
    """Paths of the output, input and panel images of one frame (a scene name that could leave them is refused)."""
    check_scene_name(scene, f"results under {results_root}")
    name = frame_name(scene, index, n)
    return {kind: os.path.join(results_root, "images", kind, name) for kind in ("output", "input", "panel")}


def _save_frame(results_root: str, scene: str, index: int, n: int, images: dict) -> None:
    paths = output_paths(results_root, scene, index, n)
    write_png(images["enhanced"], paths["output"])
    write_png(images["input"], paths["input"])
    write_png(frame_panel(images), paths["panel"])


class FrameWriter(FrameConsumer):
    """Loop consumer writing each frame's output, input and panel PNGs under ``results_root``
    (:func:`output_paths`); the PNGs are encoded and written on the loop's worker threads."""

    def __init__(self, results_root: str):
        self.results_root = results_root

    def take(self, out: FrameOutput):
        """The job writing ``out``'s three images (converted to uint8 here)."""
        return functools.partial(_save_frame, self.results_root, out.scene, out.index, out.n, frame_images(out))


class PanelKeeper(FrameConsumer):
    """Loop consumer keeping the result panel (:func:`~sdsd.evaluation.visualize.frame_panel`) of one frame.

    Args:
        frame: ``(scene, index)`` of the frame; ``None`` keeps none. :attr:`panel` stays ``None`` on a rank that
            did not compute that frame.
    """

    def __init__(self, frame: tuple[str, int] | None):
        self.frame = frame
        self.panel = None

    def take(self, out: FrameOutput):
        """The job building the panel of the wanted frame; ``None`` for every other frame."""
        if self.frame is None or (out.scene, out.index) != tuple(self.frame):
            return None
        return functools.partial(frame_panel, frame_images(out))

    def done(self, result) -> None:
        """Keep the panel."""
        self.panel = result


def run(opt: dict, info: dist_utils.DistInfo, *, self_ensemble: bool | None = None, batch: int = 1,
        chunk: int = 4, fps: int = 10, video: bool = True, progress: bool = True) -> dict | None:
    """Write the qualitative outputs for the test block of ``opt``.

    Returns:
        On rank 0: ``{"results_root", "frames", "videos": [paths], "codec"}``; ``None`` on other ranks.
    """
    root = opt["path"]["results_root"]
    setup = prepare_evaluation(opt, info, self_ensemble=self_ensemble, batch=batch, chunk=chunk)
    dataset = setup.dataset
    stats = run_frames(setup.engine, dataset, info, [FrameWriter(root)], progress=progress)

    counts = dist_utils.all_gather_object(stats.frames)
    dist_utils.barrier()  # every panel is on disk before rank 0 reads them back for the videos
    if not info.is_main:
        return None
    videos, codec = [], None
    if video:
        for scene in dataset.scenes:
            n = dataset.scene_length(scene)
            panels = (read_png(output_paths(root, scene, i, n)["panel"]) for i in range(n))
            path = os.path.join(root, "videos", f"{scene}.mp4")
            codec = write_video(panels, path, fps=fps)
            videos.append(path)
    return {"results_root": root, "frames": sum(counts), "videos": videos, "codec": codec}


@cli_main
def main(argv: list[str] | None = None) -> dict | None:
    """Command-line entry point of ``qualitative_test.py``; returns a summary on rank 0."""
    from sdsd import options
    from sdsd.errors import UserError

    args = build_parser().parse_args(argv)
    check_common_arguments(args)
    if args.fps < 1:
        raise UserError(f"--fps must be a positive integer (got {args.fps})")
    opt = options.load(args.opt, args.overrides, is_train=False)
    info = dist_utils.init_distributed(opt.get("gpu_ids"), want=None if args.device == "auto" else args.device)
    try:
        summary = run(opt, info, self_ensemble=args.self_ensemble, batch=args.batch, chunk=args.chunk,
                      fps=args.fps, video=not args.no_video, progress=not args.no_progress)
        if summary is not None:
            where = os.path.join(summary["results_root"], "images")
            videos = f"; {len(summary['videos'])} videos ({summary['codec']}) in " \
                     f"{os.path.join(summary['results_root'], 'videos')}" if summary["videos"] else ""
            print(f"wrote {summary['frames']} frames (output, input, panel) in {where}{videos}")
        return summary
    finally:
        dist_utils.cleanup()


if __name__ == "__main__":
    main()
