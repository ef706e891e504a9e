"""Validation during training: PSNR/SSIM on the held-out scenes, frames spread over the ranks, scored on rank 0."""

from __future__ import annotations

import contextlib
from collections import defaultdict

import cv2
import numpy as np
import torch

from sdsd.metrics import score_frame, tensor_to_uint8_bgr
from sdsd.utils.dist import all_gather_object
from sdsd.utils.io import atomic_path


def scene_mean(records: list[tuple[str, int, float, float]]) -> dict:
    """Reduce ``(scene, index, psnr, ssim)`` records to the published score: the mean of per-scene means.

    Returns:
        ``{'psnr', 'ssim', 'frames', 'scenes': {scene: (psnr, ssim, frames)}}``.
    """
    per_scene: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for scene, _index, psnr, ssim in records:
        per_scene[scene].append((psnr, ssim))
    scenes = {s: (float(np.mean([p for p, _ in v])), float(np.mean([q for _, q in v])), len(v))
              for s, v in sorted(per_scene.items())}
    if not scenes:
        return {"psnr": float("nan"), "ssim": float("nan"), "frames": 0, "scenes": {}}
    return {"psnr": float(np.mean([v[0] for v in scenes.values()])),
            "ssim": float(np.mean([v[1] for v in scenes.values()])),
            "frames": len(records), "scenes": scenes}


def make_panel(lq_centre: torch.Tensor, enhanced: torch.Tensor, illumination: torch.Tensor,
               gt: torch.Tensor) -> np.ndarray:
    """``input | output | illumination | GT`` side by side, as an ``H x 4W x 3`` uint8 BGR image."""
    return np.concatenate([tensor_to_uint8_bgr(t) for t in (lq_centre, enhanced, illumination, gt)], axis=1)


def save_panel(panel_bgr: np.ndarray, path: str) -> None:
    """Write a PNG atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, panel_bgr):
            raise OSError(f"could not write {path}")


@torch.inference_mode()
def validate(model: torch.nn.Module, loader, device: torch.device, autocast=contextlib.nullcontext,
             channel: str = "rgb", gt_mean: bool = False) -> tuple[dict, np.ndarray | None]:
    """Score ``model`` on every validation window this rank's loader yields, and gather the scores.

    Each rank scores its own share of the frames (the loader's sampler splits them); the records are gathered to
    every rank and reduced with :func:`scene_mean` (mean over scenes of the per-scene means).

    Args:
        model: the plain (unwrapped) network.
        loader: a batch-1 evaluation loader yielding ``{'LQs', 'GT', 'scene', 'index'}``.
        device: where to compute.
        autocast: a zero-argument callable returning the mixed-precision context of the run.
        channel, gt_mean: the scoring protocol (published: ``rgb``, ``False``).

    Returns:
        ``(metrics, panel)``: the :func:`scene_mean` dict and, on the rank that scored the first window of the
        first scene, its ``input | output | illumination | GT`` panel (else ``None``).
    """
    was_training = model.training
    model.eval()
    records, panel = [], None
    try:
        for batch in loader:
            lqs = batch["LQs"].to(device, non_blocking=True)
            gt = batch["GT"].to(device, non_blocking=True)
            with autocast():
                enhanced, illumination, _ = model(lqs)
            enhanced, illumination = enhanced.float(), illumination.float()
            for b in range(lqs.shape[0]):
                psnr, ssim = score_frame(enhanced[b], gt[b], channel=channel, gt_mean=gt_mean)
                scene, index = str(batch["scene"][b]), int(batch["index"][b])
                records.append((scene, index, psnr, ssim))
                if panel is None and index == 0:
                    centre = lqs.shape[1] // 2
                    panel = make_panel(lqs[b, centre], enhanced[b], illumination[b], gt[b])
    finally:
        model.train(was_training)
    gathered = [r for part in all_gather_object(records) for r in part]
    return scene_mean(gathered), panel
