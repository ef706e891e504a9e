"""Enhanced frames written by another program, read for scoring (``quantitative_test.py --predictions DIR``).

``DIR`` is one of:

* **the output folder of** ``qualitative_test.py`` (its ``path.results_root``, or the ``images/output`` folder in
  it): ``<scene>.<i>-<n>.png``, frame ``i`` (0-based) of an ``n``-frame scene
  (:func:`sdsd.evaluation.qualitative.frame_name`);
* **one entry per scene**: a folder ``DIR/<scene>/`` of frames (``.png``, ``.jpg``, ``.bmp``, ``.tif``, uint8 BGR
  ``.npy``: :mod:`sdsd.video`'s frame folders), taken in name order where numbers compare by value
  (``2.png`` before ``10.png``); or a video file ``DIR/<scene>.<ext>`` (``.mp4``, ``.mkv``, ``.mov``, ...), read with
  :class:`sdsd.video.FrameSource` (PyAV: colour as a player shows it).

Frame ``k`` of a scene's predictions is scored against frame ``k`` of the test block's ground truth (the first
``test_frames`` of the scene, resized to ``train_size`` when the protocol resizes). Each scene must have exactly
that many frames at exactly the ground truth's size; a missing scene, another count, another size or an unreadable
frame is a one-line :class:`~sdsd.errors.UserError`. Frames are RGB; 8-bit frames are ``k / 255``, so an 8-bit PNG
of an output is scored as the output's uint8 image is (the published PSNR and SSIM are computed on those images).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from sdsd.data.lmdb_backend import check_scene_name
from sdsd.errors import UserError
from sdsd.inference import FrameOutput, WorkItem
from sdsd.video import VIDEO_EXTS, FrameSource, probe_frame_count

__all__ = ["Predictions", "iterate_predictions", "QUALITATIVE_NAME", "natural_key"]

#: A frame name written by ``qualitative_test.py``: ``<scene>.<i>-<n>.png``.
QUALITATIVE_NAME = re.compile(r"^(?P<scene>.+)\.(?P<index>\d+)-(?P<n>\d+)\.png$")


def natural_key(path: str) -> list:
    """Sort key of a file name where runs of digits compare as numbers (``2.png`` < ``10.png``)."""
    parts = re.split(r"(\d+)", os.path.basename(path))
    return [(0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts]


def _to_tensor(frame: np.ndarray) -> torch.Tensor:
    """An RGB frame (uint8, or float32 in [0, 1]) as a ``3 x H x W`` float32 tensor."""
    x = torch.from_numpy(np.ascontiguousarray(frame))
    x = x.float() / 255.0 if frame.dtype == np.uint8 else x.float()
    return x.permute(2, 0, 1).contiguous()


class Predictions:
    """The prediction frames under ``root`` (module docstring: the layouts).

    Args:
        root: the folder given to ``--predictions``.
        resize: a phrase saying whether and how the protocol resizes the ground truth (for size errors).

    Raises:
        UserError: ``root`` is not a folder.
    """

    def __init__(self, root: str, resize: str = ""):
        self.root = root
        self.resize = resize
        if not os.path.isdir(root):
            what = "not found" if not os.path.exists(root) else "not a folder"
            raise UserError(f"--predictions {root}: {what}; give the folder qualitative_test.py wrote, or a folder "
                            "with one frame folder or video file per scene")
        flat = os.path.join(root, "images", "output")
        self.folder = flat if os.path.isdir(flat) else root
        self._named: dict[str, dict[int, dict[int, str]]] = {}  # scene -> n -> index -> path
        try:
            names = sorted(os.listdir(self.folder))
        except OSError as exc:
            raise UserError(f"--predictions {self.folder}: cannot be listed ({exc.strerror}); check its "
                            "permissions") from None
        for name in names:
            match = QUALITATIVE_NAME.match(name)
            if match and os.path.isfile(os.path.join(self.folder, name)):
                by_n = self._named.setdefault(match["scene"], {}).setdefault(int(match["n"]), {})
                by_n[int(match["index"])] = os.path.join(self.folder, name)
        self.layout = "qualitative" if self._named else "scenes"

    def describe(self) -> dict:
        """What the metrics JSON records: ``{"path", "layout"}`` (``qualitative`` or ``scenes``)."""
        return {"path": os.path.abspath(self.folder), "layout": self.layout}

    # -- listing -------------------------------------------------------------------------------------------------
    def _scene_entry(self, scene: str, n: int) -> tuple[str, str]:
        """``("folder" | "video", path)`` of a scene in the ``scenes`` layout."""
        folder = os.path.join(self.root, scene)
        videos = [os.path.join(self.root, scene + ext) for ext in VIDEO_EXTS
                  if os.path.isfile(os.path.join(self.root, scene + ext))]
        if os.path.isdir(folder) and videos:
            raise UserError(f"--predictions {self.root}: scene {scene} has both a folder {folder} and a video "
                            f"{videos[0]}; keep one")
        if len(videos) > 1:
            raise UserError(f"--predictions {self.root}: scene {scene} has several videos ({', '.join(videos)}); "
                            "keep one")
        if os.path.isdir(folder):
            return "folder", folder
        if videos:
            return "video", videos[0]
        raise UserError(f"--predictions {self.root}: no predictions for scene {scene} (expected a folder "
                        f"{folder}{os.sep} of {n} frames or a video {folder}.mp4)")

    def _mismatch(self, where: str, scene: str, found: int, n: int) -> UserError:
        return UserError(f"--predictions {where}: {found} frames for scene {scene}, but the protocol scores {n} "
                         f"(the first test_frames of the scene's ground truth); give exactly those {n} frames")

    def frame_files(self, scene: str, n: int) -> list[str] | None:
        """The frame files of a scene in order (``None`` for a video), after checking their number."""
        check_scene_name(scene, f"--predictions {self.root}")
        if self.layout == "qualitative":
            found = self._named.get(scene)
            if not found:
                raise UserError(f"--predictions {self.folder}: no predictions for scene {scene} (expected "
                                f"{scene}.0-{n}.png ... {scene}.{n - 1}-{n}.png, as qualitative_test.py writes)")
            # Files of an earlier run with another number of frames may lie beside them: only "-n" files count.
            if n in found and sorted(found[n]) == list(range(n)):
                return [found[n][i] for i in range(n)]
            where = os.path.join(self.folder, f"{scene}.*.png")
            complete = [k for k, files in found.items() if sorted(files) == list(range(k))]
            if n not in found and len(complete) == 1:
                raise self._mismatch(where, scene, complete[0], n)
            have = ", ".join(f"{len(files)} of {scene}.*-{k}.png" for k, files in sorted(found.items()))
            raise UserError(f"--predictions {where}: scene {scene} needs {scene}.0-{n}.png ... "
                            f"{scene}.{n - 1}-{n}.png, found {have}; the protocol scores {n} frames")
        kind, path = self._scene_entry(scene, n)
        if kind == "video":
            count = probe_frame_count(path)
            if count is not None and count != n:
                raise self._mismatch(path, scene, count, n)
            return None
        with FrameSource(path) as source:  # lists and checks the frame files (and reads the first)
            files = sorted(source.files, key=natural_key)
        if len(files) != n:
            raise self._mismatch(path, scene, len(files), n)
        return files

    def check(self, scenes: Sequence[tuple[str, int]]) -> None:
        """Fail before any scoring when a scene is missing or has another number of frames (videos: as their
        container says; the count is checked again while decoding)."""
        for scene, n in scenes:
            self.frame_files(scene, n)

    # -- reading -------------------------------------------------------------------------------------------------
    def frames(self, scene: str, n: int) -> Iterator[tuple[str, np.ndarray]]:
        """``(where, RGB frame)`` for frames ``0 .. n - 1`` of a scene (``where`` names the file or video frame)."""
        files = self.frame_files(scene, n)
        if files is not None and self.layout == "qualitative":
            from sdsd.evaluation.visualize import read_png

            for file in files:
                yield file, np.ascontiguousarray(read_png(file)[..., ::-1])
            return
        _, path = self._scene_entry(scene, n)
        if files is not None:
            with FrameSource(path) as source:  # the one reader of frame files (dtype and channel rules)
                source.files = files  # in natural name order
                yield from zip(files, source)
            return
        count = 0
        with FrameSource(path) as source:
            for frame in source:
                if count < n:
                    yield f"{path} (frame {count})", frame
                count += 1
        if count != n:
            raise self._mismatch(path, scene, count, n)


def iterate_predictions(predictions: Predictions, dataset, work: Sequence[WorkItem]) -> Iterator[FrameOutput]:
    """The :class:`~sdsd.inference.FrameOutput` of each frame of ``work``: the prediction as ``enhanced`` (no
    illumination or denoised map), the dataset's centre input frame and GT.

    Raises:
        UserError: a frame that cannot be read, or whose size differs from its ground truth's.
    """
    for item in work:
        lq, gt = dataset.load_scene(item.scene)
        wanted = set(item.indices)
        for i, (where, frame) in enumerate(predictions.frames(item.scene, item.n)):
            if i not in wanted:
                continue
            h, w = gt.shape[-2:]
            if frame.shape[:2] != (h, w):
                raise UserError(f"--predictions {where}: frame {i} of scene {item.scene} is "
                                f"{frame.shape[1]}x{frame.shape[0]}, its ground truth {w}x{h}"
                                f"{' (' + predictions.resize + ')' if predictions.resize else ''}; write the "
                                f"predictions at {w}x{h}")
            yield FrameOutput(item.scene, i, item.n, _to_tensor(frame), None, None, lq[i], gt[i])
