"""The SMID dataset (sRGB version of "Seeing Motion in the Dark"), registered as ``SMID``.

Published ``mode`` names map here: ``video_samesize_smid`` (train and val) and ``video_samesize_smid1``
(test). Layout: ``<data>/SMID_Long_np/<id>/`` holds the normal-light reference(s) of a static scene,
``<data>/SMID_LQ_np/<id>/`` its low-light frames.

The GT of every LQ frame of a scene is the first file (sorted) in its GT folder whose file name contains
neither ``.ARW`` nor ``half``. Test scenes: ``testing_dir`` when given, else the official 49-id list shipped
as ``smid_test_list.txt`` beside this module; testing uses the first ``test_frames`` (30) LQ frames of each.
All other scenes train. Published configs resize frames to 960x512 with ``train_size``.
"""

from __future__ import annotations

import os

from sdsd.data.video_base import VideoPairDataset
from sdsd.errors import UserError
from sdsd.registry import DATASET_REGISTRY

TEST_LIST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smid_test_list.txt")


def smid_test_scenes() -> list[str]:
    """The official SMID test scene ids, in the order of the shipped list."""
    with open(TEST_LIST_PATH, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def select_smid_gt(gt_files: list[str]) -> str | None:
    """First (sorted) file whose name contains neither ``.ARW`` nor ``half``; None when there is none."""
    for path in sorted(gt_files):
        name = os.path.basename(path)
        if ".ARW" not in name and "half" not in name:
            return path
    return None


@DATASET_REGISTRY.register("SMID", aliases=("video_samesize_smid", "video_samesize_smid1"))
class SMIDDataset(VideoPairDataset):
    """SMID scenes: many low-light frames, one normal-light reference per scene.

    Args:
        opt: one ``datasets.<phase>`` block (see :class:`~sdsd.data.video_base.VideoPairDataset`).
    """

    family = "SMID"

    def _default_test_scenes(self):
        return smid_test_scenes()

    def _pair_frames(self, scene, lq_files, gt_files):
        gt = select_smid_gt(gt_files)
        if gt is None:
            raise UserError(
                f"scene {scene} in {self.gt_root} has no reference frame (every file name contains '.ARW' or "
                "'half'); add the normal-light frame"
            )
        return lq_files, [gt] * len(lq_files)
