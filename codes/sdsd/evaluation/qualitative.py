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
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os

from sdsd.data.lmdb_backend import check_scene_name
from sdsd.errors import cli_main
from sdsd.evaluation.common import add_common_arguments, check_common_arguments, progress_bar
from sdsd.evaluation.quantitative import prepare_evaluation
from sdsd.evaluation.visualize import make_panel, read_png, write_png, write_video
from sdsd.inference import iterate_dataset, plan_work
from sdsd.metrics import tensor_to_uint8_bgr
from sdsd.utils import dist as dist_utils

__all__ = ["PANEL_LABELS", "frame_name", "output_paths", "run", "main", "build_parser"]

PANEL_LABELS = ("input", "enhanced", "illumination", "GT")


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
    panel = make_panel([images[k] for k in ("input", "enhanced", "illumination", "GT")], PANEL_LABELS)
    write_png(panel, paths["panel"])


def run(opt: dict, info: dist_utils.DistInfo, *, self_ensemble: bool | None = None, batch: int = 1,
        chunk: int = 4, fps: int = 10, video: bool = True, progress: bool = True) -> dict | None:
    """Write the qualitative outputs for the test block of ``opt``.

    Returns:
        On rank 0: ``{"results_root", "frames", "videos": [paths], "codec"}``; ``None`` on other ranks.
    """
    root = opt["path"]["results_root"]
    setup = prepare_evaluation(opt, info, self_ensemble=self_ensemble, batch=batch, chunk=chunk)
    dataset, engine = setup.dataset, setup.engine
    scenes = [(s, dataset.scene_length(s)) for s in dataset.scenes]
    work = plan_work(scenes, info.rank, info.world_size)

    count = 0
    bar = progress_bar(sum(len(w.indices) for w in work), progress and info.is_main)
    # PNG encoding runs on threads (OpenCV releases the GIL) while the network computes the next window.
    with cf.ThreadPoolExecutor(max_workers=2) as pool:
        pending = []
        for out in iterate_dataset(engine, dataset, work):
            images = {"enhanced": tensor_to_uint8_bgr(out.enhanced), "input": tensor_to_uint8_bgr(out.lq),
                      "illumination": tensor_to_uint8_bgr(out.illumination), "GT": tensor_to_uint8_bgr(out.gt)}
            pending.append(pool.submit(_save_frame, root, out.scene, out.index, out.n, images))
            done = [f for f in pending if f.done()]
            for f in done:
                f.result()
                pending.remove(f)
                bar.update(1)
            count += 1
        for f in pending:
            f.result()
            bar.update(1)
    bar.close()

    counts = dist_utils.all_gather_object(count)
    dist_utils.barrier()  # every panel is on disk before rank 0 reads them back for the videos
    if not info.is_main:
        return None
    videos, codec = [], None
    if video:
        for scene, n in scenes:
            panels = (read_png(output_paths(root, scene, i, n)["panel"]) for i in range(n))
            path = os.path.join(root, "videos", f"{scene}.mp4")
            codec = write_video(panels, path, fps=fps)
            videos.append(path)
    return {"results_root": root, "frames": sum(counts), "videos": videos, "codec": codec}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qualitative_test.py",
                                     description="Enhanced frames, panels and videos of the test scenes.")
    add_common_arguments(parser)
    parser.add_argument("--fps", type=int, default=10, help="frame rate of the scene videos (default 10)")
    parser.add_argument("--no-video", action="store_true", help="write the images only")
    return parser


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
