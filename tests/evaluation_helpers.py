"""Tiny SDSD/SMID trees and checkpoints shared by the evaluation tests (real .npy files, a real checkpoint)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import skimage.data
import torch

import sdsd

TINY_NET = dict(nf=8, nframes=5, groups=2, front_RBs=1, back_RBs=1)
H, W = 32, 48
PUBLISHED_TEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "options", "test")


def aligning_tiny_net(**opts) -> torch.nn.Module:
    """A seeded tiny SDSD-Net in eval mode whose offset predictors are non-zero, so PCD really samples off-grid.

    ``opts`` are ``network_G`` keys over ``TINY_NET``.
    """
    torch.manual_seed(0)
    net = sdsd.build_network({"which_model_G": "denoise_illumination_enhance", **TINY_NET, **opts}).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv_offset_mask" in name:
                p.normal_(0, 0.05)
    return net


def clip_frames(photo: str, n: int, seed: int) -> list[np.ndarray]:
    """``n`` BGR uint8 ``H x W`` frames: a crop window drifting over a real photograph."""
    img = getattr(skimage.data, photo)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = cv2.resize(img[..., :3], (W * 3, H * 3), interpolation=cv2.INTER_AREA)[..., ::-1]
    rng = np.random.default_rng(seed)
    y, x = int(rng.integers(0, H)), int(rng.integers(0, W))
    return [np.ascontiguousarray(img[y + k: y + k + H, x + 2 * k: x + 2 * k + W]) for k in range(n)]


def clip_tensor(photo: str, n: int, seed: int):
    """:func:`clip_frames` as the network takes them: ``n x 3 x H x W`` RGB float32 in [0, 1]."""
    return torch.stack([torch.from_numpy(f[:, :, ::-1].copy()).permute(2, 0, 1).float() / 255
                        for f in clip_frames(photo, n, seed)])


def darken(frame: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = frame.astype(np.float64) * 0.15 + rng.normal(0, 2, frame.shape)
    return np.clip(np.round(low), 0, 255).astype(np.uint8)


def write_frames(folder: str, frames: list[np.ndarray], names: list[str] | None = None) -> None:
    os.makedirs(folder, exist_ok=True)
    for k, frame in enumerate(frames):
        np.save(os.path.join(folder, names[k] if names else f"{k:04d}.npy"), frame)


def make_sdsd_tree(root: str) -> dict:
    """``root/GT|input/<scene>/0000.npy``: two test scenes (7 and 6 frames) and one training scene."""
    scenes = {"sceneA": ("astronaut", 7), "sceneB": ("coffee", 6), "sceneC": ("chelsea", 3)}
    for k, (scene, (photo, n)) in enumerate(scenes.items()):
        gt = clip_frames(photo, n, seed=k)
        write_frames(os.path.join(root, "GT", scene), gt)
        write_frames(os.path.join(root, "input", scene), [darken(f, seed=100 * k + j) for j, f in enumerate(gt)])
    return {"GT": os.path.join(root, "GT"), "LQ": os.path.join(root, "input"), "testing_dir": "sceneA,sceneB",
            "lengths": {"sceneA": 7, "sceneB": 6}}


def save_tiny_checkpoint(path: str, seed: int = 0) -> str:
    """A checkpoint of a freshly built tiny network (plain state_dict, as published)."""
    torch.manual_seed(seed)
    net = sdsd.build_network({"which_model_G": "denoise_illumination_enhance", **TINY_NET})
    torch.save(net.state_dict(), path)
    return path


def overrides(tree: dict, checkpoint: str | None, results_root: str) -> list[str]:
    """``--set`` items that point a published test option file at the tiny tree and network."""
    items = [
        f"datasets.test.dataroot_GT={tree['GT']}",
        f"datasets.test.dataroot_LQ={tree['LQ']}",
        f"datasets.test.testing_dir={tree['testing_dir']}",
        "datasets.test.train_size=null",
        f"path.results_root={results_root}",
        "gpu_ids=[]",
    ]
    items += [f"network_G.{k}={v}" for k, v in TINY_NET.items()]
    if checkpoint is not None:
        items.append(f"path.pretrain_model_G={checkpoint}")
    return items


def set_args(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]
