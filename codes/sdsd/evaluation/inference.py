"""Inference shared by the quantitative and qualitative tests: model loading, work split and feature reuse.

Feature reuse: a window of N frames around every centre frame means each frame enters N windows. The network's
per-frame stage (``extract_features``: the first convolutions, the residual blocks and the pyramid) does not
depend on the window, so it runs once per frame, in chunks of frames to bound memory; only the window stage
(``forward_features``: PCD alignment, TSA fusion, reconstruction) runs per window, on gathered features.
This gives the same numbers as running ``net(window)`` for every window, at about 1/N of the per-frame cost.

Self-ensemble (``protocol.self_ensemble``): the whole window is flipped (identity, horizontal, vertical, both),
each flipped window is enhanced (features of the flipped frames are again computed once per frame), the outputs
are flipped back and averaged. The enhanced frame, the illumination and the denoised frame are all averaged.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from sdsd.errors import UserError

__all__ = [
    "ENSEMBLE_FLIPS",
    "FrameOutput",
    "WorkItem",
    "load_model",
    "plan_work",
    "enhance_windows",
    "iterate_work",
    "select_test_block",
]

#: The self-ensemble transforms: name -> the tensor dims flipped (of a ``... x H x W`` tensor).
ENSEMBLE_FLIPS: dict[str, tuple[int, ...]] = {
    "identity": (),
    "hflip": (-1,),
    "vflip": (-2,),
    "hvflip": (-2, -1),
}


@dataclasses.dataclass
class WorkItem:
    """Frames of one scene assigned to this process: centre indices into the scene's frames."""

    scene: str
    indices: list[int]
    n: int  # frames evaluated in the scene (``dataset.scene_length``), for output names


@dataclasses.dataclass
class FrameOutput:
    """One enhanced frame: the network's three outputs (``3 x H x W``, RGB) with its input and GT."""

    scene: str
    index: int
    n: int
    enhanced: torch.Tensor
    illumination: torch.Tensor
    denoised: torch.Tensor
    lq: torch.Tensor  # the centre input frame
    gt: torch.Tensor


def select_test_block(opt: dict) -> tuple[str, dict]:
    """Return ``(phase, block)`` of the dataset block to evaluate: ``test`` if present, else the first non-train one.

    Raises:
        UserError: the option file has no evaluation dataset block.
    """
    datasets = opt.get("datasets") or {}
    if "test" in datasets:
        return "test", datasets["test"]
    for phase, block in datasets.items():
        if not str(phase).startswith("train"):
            return phase, block
    raise UserError("the option file has no datasets.test block (the scenes to evaluate); add one, see "
                    "options/test/test_in_sdsd.yml")


def load_model(opt: dict, device: torch.device) -> nn.Module:
    """Build ``network_G`` and load ``path.pretrain_model_G`` into it; evaluation mode, on ``device``.

    Raises:
        UserError: the option is not set, the file does not exist, or the checkpoint does not fit.
    """
    from sdsd.archs import build_network, load_network
    from sdsd.archs.fastconv import prepare_for_inference

    path = (opt.get("path") or {}).get("pretrain_model_G")
    if not path:
        raise UserError("path.pretrain_model_G is not set: point it at the checkpoint to evaluate "
                        "(e.g. --set path.pretrain_model_G=pretrain/indoor_G.pth)")
    if not os.path.isfile(path):
        raise UserError(f"path.pretrain_model_G: checkpoint {path} does not exist; download it or fix the path")
    net = build_network(opt.get("network_G") or {})
    load_network(net, path, strict=bool(opt["path"].get("strict_load", True)))
    net = net.to(device).eval()
    # Winograd (NNPACK) or channels_last convolutions on CPUs (python -m bench); same numbers up to float rounding.
    prepare_for_inference(net, device, opt.get("conv_backend", "auto"))
    return net


def plan_work(scene_lengths: Sequence[tuple[str, int]], rank: int = 0, world_size: int = 1) -> list[WorkItem]:
    """Split all frames of all scenes into ``world_size`` contiguous, nearly equal parts; return part ``rank``.

    Frames are ordered scene by scene, so a part covers whole scenes plus at most two partial ones, and feature
    reuse is lost only at the (at most two) cut points.

    Args:
        scene_lengths: ``(scene, number of frames)`` in evaluation order.
        rank: this process's rank.
        world_size: number of processes.
    """
    total = sum(n for _, n in scene_lengths)
    start, stop = total * rank // world_size, total * (rank + 1) // world_size
    items, offset = [], 0
    for scene, n in scene_lengths:
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        if lo < hi:
            items.append(WorkItem(scene, list(range(lo, hi)), n))
        offset += n
    return items


def _extract(net: nn.Module, frames: torch.Tensor, chunk: int) -> tuple[torch.Tensor, ...]:
    """Per-frame features of ``T x 3 x H x W`` frames, computed ``chunk`` frames at a time."""
    parts = [net.extract_features(frames[i:i + chunk]) for i in range(0, frames.shape[0], chunk)]
    return tuple(torch.cat(level, dim=0) for level in zip(*parts))


def enhance_windows(net: nn.Module, frames: torch.Tensor, windows: Sequence[Sequence[int]], *,
                    chunk: int = 4, batch: int = 1, self_ensemble: bool = False,
                    ) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Enhance every window of a clip with feature reuse.

    Args:
        net: the network (``extract_features`` / ``forward_features`` API), in eval mode.
        frames: ``T x 3 x H x W`` RGB frames in [0, 1] on the network's device.
        windows: for each output, the N indices into ``frames`` of its window (the centre is ``net.center``).
        chunk: frames per ``extract_features`` call (bounds the memory of the per-frame stage).
        batch: windows per ``forward_features`` call.
        self_ensemble: average over the four flips of the whole window (x4 cost).

    Yields:
        ``(k, (enhanced, illumination, denoised))`` for window ``k`` in order, each ``3 x H x W`` on the device.
    """
    flips = list(ENSEMBLE_FLIPS.values()) if self_ensemble else [()]
    index = torch.as_tensor([list(w) for w in windows], dtype=torch.long, device=frames.device)
    if index.numel() == 0:
        return
    # The inference-mode blocks never span a ``yield``: the caller's code between items runs in its own mode.
    with torch.inference_mode():
        feats = []
        for dims in flips:
            flipped = frames.flip(dims) if dims else frames
            feats.append((flipped, _extract(net, flipped, chunk)))
    for start in range(0, index.shape[0], batch):
        with torch.inference_mode():
            idx = index[start:start + batch]
            total = None
            for dims, (flipped, levels) in zip(flips, feats):
                gathered = tuple(level[idx] for level in levels)
                outs = net.forward_features(gathered, flipped[idx[:, net.center]])
                outs = tuple(o.flip(dims) if dims else o for o in outs)
                total = outs if total is None else tuple(t + o for t, o in zip(total, outs))
            if len(flips) > 1:
                total = tuple(t / len(flips) for t in total)
        for k in range(idx.shape[0]):
            yield start + k, tuple(t[k] for t in total)


def iterate_work(net: nn.Module, dataset, work: Sequence[WorkItem], device: torch.device, *,
                 chunk: int = 4, batch: int = 1, self_ensemble: bool = False) -> Iterator[FrameOutput]:
    """Enhance the frames of ``work`` scene by scene; yield one :class:`FrameOutput` per frame (tensors on device).

    Per scene only the frames that the assigned windows use are sent through the per-frame stage.
    """
    for item in work:
        lq, gt = dataset.load_scene(item.scene)
        windows = [dataset.window(item.scene, i) for i in item.indices]
        needed = sorted({j for w in windows for j in w} | set(item.indices))
        local = {j: pos for pos, j in enumerate(needed)}
        frames = lq[needed].to(device, non_blocking=True)
        local_windows = [[local[j] for j in w] for w in windows]
        for k, (enhanced, illumination, denoised) in enhance_windows(
                net, frames, local_windows, chunk=chunk, batch=batch, self_ensemble=self_ensemble):
            i = item.indices[k]
            yield FrameOutput(item.scene, i, item.n, enhanced, illumination, denoised,
                              frames[local[i]], gt[i])
