"""Convert the SDSD PNG release (1080 x 1920 frames) into the ``.npy`` frames the datasets read.

Every ``SRC/<any subfolders>/<scene>/<frame>.png`` becomes ``DST/<same subfolders>/<scene>/<frame>.npy``: an
``H x W x 3`` uint8 array in BGR order (as ``cv2.imread`` returns it), resized to ``--size H W`` (default
512 x 960, the size of the published ``*_np`` folders) with ``--interp`` (default ``area``, the right filter for
shrinking). Files already converted are skipped, so an interrupted run can simply be started again; each file
is written to a hidden temporary name and renamed, so a frame on disk is always complete.

A PNG that cannot be decoded does not stop the conversion: every other frame is converted, then the command
fails (exit status 2) with one line giving the number of unreadable files and the first ones.

Example::

    python -m sdsd.tools.prepare_sdsd SDSD/indoor_png dataset/indoor_np --workers 8
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from sdsd.errors import UserError, cli_main
from sdsd.utils.cli import ArgumentParser, HelpFormatter
from sdsd.utils.io import atomic_save_npy, remove_stale_temps

# Workers are spawned, not forked: a fork of a process whose OpenCV/torch thread pools are running can deadlock
# in the child (seen when called from a process that imported torch).
_SPAWN = multiprocessing.get_context("spawn")

INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}
DEFAULT_SIZE = (512, 960)


def _convert_one(src: str, dst: str, size: tuple[int, int], interp: int) -> str | None:
    """Convert one PNG; return ``None`` on success or the reason it could not be read."""
    cv2.setNumThreads(1)  # files are converted in parallel already; nested OpenCV threads only oversubscribe
    img = cv2.imread(src, cv2.IMREAD_COLOR)
    if img is None:
        return "cannot be decoded"
    height, width = size
    if img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=interp)
    # Written to a hidden temporary name and renamed: `glob(folder/*)` never lists a half-written frame.
    atomic_save_npy(np.ascontiguousarray(img), dst)
    return None


def find_frames(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    """All ``(png, npy)`` pairs under ``src`` / ``dst``, sorted by source path."""
    pairs = []
    for png in sorted(p for p in src.rglob("*") if p.suffix.lower() == ".png" and p.is_file()):
        rel = png.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders are not part of the release
        pairs.append((png, (dst / rel).with_suffix(".npy")))
    return pairs


def prepare_sdsd(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    interp: str = "area",
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Convert a tree of PNG frames into resized BGR uint8 ``.npy`` frames with the same folder tree.

    Args:
        src: root of the PNG tree.
        dst: root of the output tree (created if missing).
        size: ``(H, W)`` of the output frames.
        interp: one of ``area``, ``linear``, ``cubic``, ``nearest``.
        workers: worker processes (default: the CPU count).
        progress: show a tqdm progress bar on stderr.

    Returns:
        ``{"converted": n, "skipped": n, "total": n}``.

    Raises:
        UserError: ``src`` is missing or holds no PNG, a bad option, or some PNGs could not be decoded (raised
            after all the others were converted).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise UserError(f"source folder {src} does not exist; pass the folder holding the SDSD PNG scenes")
    if interp not in INTERPOLATIONS:
        raise UserError(f"--interp must be one of {', '.join(INTERPOLATIONS)}, got {interp!r}")
    size = tuple(int(v) for v in size)
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--size H W must be two positive integers, got {list(size)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if dst.exists() and not dst.is_dir():
        raise UserError(f"destination {dst} exists and is not a folder; choose another path")

    pairs = find_frames(src, dst)
    if not pairs:
        raise UserError(f"no .png files under {src}; expected SRC/<subfolders>/<scene>/<frame>.png")
    remove_stale_temps(str(dst), recursive=True)  # frames an interrupted earlier run was writing
    todo = [(png, npy) for png, npy in pairs if not npy.is_file()]
    flag = INTERPOLATIONS[interp]
    workers = workers or os.cpu_count() or 1
    failed: list[tuple[Path, str]] = []
    bar = tqdm(total=len(todo), unit="frame", desc="prepare_sdsd", disable=not progress or None, file=sys.stderr)
    try:
        if workers == 1 or len(todo) <= 1:
            for png, npy in todo:
                reason = _convert_one(str(png), str(npy), size, flag)
                if reason:
                    failed.append((png, reason))
                bar.update()
        else:
            with cf.ProcessPoolExecutor(min(workers, len(todo)), mp_context=_SPAWN) as pool:
                futures = {pool.submit(_convert_one, str(png), str(npy), size, flag): png for png, npy in todo}
                for fut in cf.as_completed(futures):
                    reason = fut.result()
                    if reason:
                        failed.append((futures[fut], reason))
                    bar.update()
    finally:
        bar.close()
    if failed:
        failed.sort()
        shown = ", ".join(str(p) for p, _ in failed[:3]) + (", ..." if len(failed) > 3 else "")
        raise UserError(
            f"{len(failed)} PNG file(s) {failed[0][1]} and were not converted: {shown}; "
            "replace them from the release and run again (converted frames are kept)"
        )
    return {"converted": len(todo), "skipped": len(pairs) - len(todo), "total": len(pairs)}


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (its description is the module docstring)."""
    parser = ArgumentParser(
        prog="python -m sdsd.tools.prepare_sdsd",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("src", help="root of the SDSD PNG tree")
    parser.add_argument("dst", help="root of the .npy tree to write")
    parser.add_argument("--interp", choices=list(INTERPOLATIONS), default="area", help="resize filter")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=list(DEFAULT_SIZE), help="frame size")
    parser.add_argument("--workers", type=int, help="worker processes (default: the CPU count)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    stats = prepare_sdsd(args.src, args.dst, size=tuple(args.size), interp=args.interp, workers=args.workers)
    print(f"{args.dst}: converted {stats['converted']} frames, skipped {stats['skipped']} already converted")


if __name__ == "__main__":
    sys.exit(main())
