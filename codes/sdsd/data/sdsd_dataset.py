"""The SDSD video dataset (dynamic and static versions), registered as ``SDSD``.

Published ``mode`` names map here: ``video_samesize`` (train and val) and ``video_samesize1`` (test); the
phase (not the mode) decides train vs. test behaviour, see :mod:`sdsd.data.video_base`.

Layout: ``<data>/indoor_np/GT/pairK/*.npy`` and ``<data>/indoor_np/input/pairK/*.npy`` (``input`` may
also be called ``LQ``; whichever exists is used). GT frame i belongs to LQ frame i, so both folders of a
scene must hold the same number of frames.

Splits:

* ``split: dynamic`` (default; the paper's protocol): ``testing_dir`` lists the test scenes, training uses
  every other scene. Without ``testing_dir`` validation/testing uses every scene.
* ``split: static`` (SNR-Aware / Retinexformer protocol on ``indoor_static_np`` / ``outdoor_static_np``):
  a folder is a test folder when its name, or the part of its name before the first ``_2``
  (:func:`~sdsd.data.video_base.static_group`), is listed in ``testing_dir``: a test scene ``X`` makes both ``X``
  and ``X_2`` test folders (and removes both from training). Each folder is its own clip for windows and its
  own scene for ``protocol.average: scene`` (as the two papers count folders).
"""

from __future__ import annotations

from sdsd.data.video_base import VideoPairDataset
from sdsd.errors import UserError
from sdsd.registry import DATASET_REGISTRY


@DATASET_REGISTRY.register("SDSD", aliases=("video_samesize", "video_samesize1"))
class SDSDDataset(VideoPairDataset):
    """Paired low-light / normal-light SDSD video scenes.

    Args:
        opt: one ``datasets.<phase>`` block (see :class:`~sdsd.data.video_base.VideoPairDataset`).
    """

    family = "SDSD"

    def _pair_frames(self, scene, lq_files, gt_files):
        if len(lq_files) != len(gt_files):
            raise UserError(
                f"scene {scene} has {len(gt_files)} GT frames in {self.gt_root} but {len(lq_files)} LQ frames in "
                f"{self.lq_root}; every LQ frame needs its GT frame"
            )
        return lq_files, gt_files
