"""Shared machinery of the paired low-light / normal-light video datasets (SDSD and SMID).

A dataset root holds one folder per scene (or is an LMDB written by :mod:`sdsd.tools.make_lmdb`); the
frames of a scene are ``sorted(glob(scene/*))``. The GT and LQ roots are paired scene by scene by sorted
name. Subclasses only decide which GT frame belongs to which LQ frame (:meth:`VideoPairDataset._pair_frames`)
and which scenes are test scenes when ``testing_dir`` is absent.

Phases (the ``phase`` key, set by :func:`sdsd.data.build_dataset` from the ``datasets`` block name):

* ``train``: every frame of every non-test scene is a sample centre; its window is computed over the
  whole clip; a random ``GT_size`` crop at one location in all N frames and the GT, then (same for all
  frames) a horizontal flip with p=0.5 when ``use_flip`` and a vertical flip with p=0.5 when ``use_rot``.
* ``val`` / ``test`` (any phase name other than ``train*``): the test scenes, only the first
  ``test_frames`` (default 30; null = all) frames of each, windows computed within those frames; full
  frames, no crop, no flip. ``max_frames`` further limits the centres per scene (a quick validation
  subset) without changing the windows of the centres kept.

Caching (``cache_data: true``, the published default): each process (every DataLoader worker has its own)
keeps decoded, resized uint8 frames in an LRU cache bounded to :attr:`VideoPairDataset.cache_bytes`
(256 MiB, about 170 frames at 512x960). Training crops of ``.npy`` frames that need no resize skip the cache
and read only the cropped rows through a memory map, which is cheaper than any cache at random access.
"""

from __future__ import annotations

import glob
import os
import random
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sdsd.data import lmdb_backend
from sdsd.data.frames import decode_frame, npy_memmap, prepare_uint8, three_channels
from sdsd.data.windows import index_generation
from sdsd.errors import UserError
from sdsd.options import with_defaults

_LQ_SIBLINGS = {"input": "LQ", "LQ": "input"}


def phase_role(phase: str) -> str:
    """Map a ``datasets`` block name to its role: ``train``, ``val`` or ``test``."""
    phase = str(phase)
    if phase.startswith("train"):
        return "train"
    if phase.startswith("val"):
        return "val"
    return "test"


def static_group(folder: str) -> str:
    """The scene a folder of the static SDSD data belongs to: its name up to the first ``_2`` (the whole name when
    it has none), so ``pair4_2`` belongs to ``pair4``.

    This is the rule of SNR-Aware's and Retinexformer's SDSD datasets: a folder is a test folder when its name or
    this part of it is a listed test scene. It is literal: ``pair1_20`` belongs to ``pair1`` too, while ``pair12``
    and ``pair1_3`` belong to no other scene.
    """
    return folder.split("_2", 1)[0]


def parse_scene_list(value, where: str = "datasets") -> list[str] | None:
    """Parse ``testing_dir`` (comma-separated string or list) into scene names; None when absent.

    ``where`` is kept for callers that pass it; the option schema has checked the value's type.
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [s.strip() for s in items if s.strip()]


class FrameCache:
    """A per-process LRU cache of decoded uint8 frames bounded by total bytes (0 disables it)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> np.ndarray | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes or key in self._items:
            return
        self._items[key] = value
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._items)


def _stack_to_tensor(frames: Sequence[np.ndarray], hflip: bool = False, vflip: bool = False) -> torch.Tensor:
    """uint8 BGR ``H x W x C`` frames -> float32 RGB ``T x 3 x H x W`` in [0, 1] (``/ 255`` like the reference)."""
    stacked = np.stack([three_channels(np.asarray(f)) for f in frames], axis=0)
    view = stacked[..., ::-1]
    if hflip:
        view = view[:, :, ::-1]
    if vflip:
        view = view[:, ::-1]
    out = np.ascontiguousarray(view.transpose(0, 3, 1, 2)).astype(np.float32)
    out /= np.float32(255.0)
    return torch.from_numpy(out)


class VideoPairDataset(Dataset):
    """Base class: scene discovery, splits, windows, frame loading and the item/scene API.

    Args:
        opt: one ``datasets.<phase>`` block (published keys plus ``phase``, ``split``, ``test_frames``,
            ``max_frames``, ``type``), as :func:`sdsd.options.load` validated it: values are trusted here (a key
            that is absent gets its schema default); only what depends on the data itself is checked.
    """

    #: Upper bound of the per-process frame cache in bytes (``cache_data: true``).
    cache_bytes = 256 * 1024 * 1024
    #: Human name of the dataset family, used in messages.
    family = "video"

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = with_defaults("datasets", opt)
        self.phase = str(self.opt.get("phase", "train"))
        self.role = phase_role(self.phase)
        self.where = f"datasets.{self.phase}"
        self.N = self.opt["N_frames"]
        self.padding = self.opt["padding"]
        size = self.opt["train_size"]
        self.train_size = (int(size[0]), int(size[1])) if size else None
        self.split = self.opt["split"] or "dynamic"
        self.test_frames = self.opt["test_frames"] or None  # 0 or null: every frame
        self.max_frames = self.opt["max_frames"] or None
        self.cache = FrameCache(self.cache_bytes if self.opt["cache_data"] else 0)

        self.gt_root = self._resolve_root("dataroot_GT", swap=False)
        self.lq_root = self._resolve_root("dataroot_LQ", swap=True)
        gt_scenes = self._list_scenes(self.gt_root, "dataroot_GT")
        lq_scenes = self._list_scenes(self.lq_root, "dataroot_LQ")
        if gt_scenes != lq_scenes:
            only_gt = sorted(set(gt_scenes) - set(lq_scenes))
            only_lq = sorted(set(lq_scenes) - set(gt_scenes))
            raise UserError(
                f"scene folders of {self.gt_root} and {self.lq_root} differ: only in GT: {_names(only_gt)}; "
                f"only in LQ: {_names(only_lq)}; every scene needs both a GT and an LQ folder"
            )
        if not gt_scenes:
            raise UserError(f"{self.gt_root} holds no scene folders (option {self.where}.dataroot_GT)")

        chosen = self._select_scenes(gt_scenes)
        self.scenes: list[str] = []
        self._lq: dict[str, list[str]] = {}
        self._gt: dict[str, list[str]] = {}
        self._n: dict[str, int] = {}
        self._centres: dict[str, int] = {}
        sample_scene, sample_centre = [], []
        for scene in chosen:
            lq_files = self._list_frames(self.lq_root, scene)
            gt_files = self._list_frames(self.gt_root, scene)
            if not lq_files:
                raise UserError(f"scene {scene} has no frames in {self.lq_root}; remove the scene or add its frames")
            if not gt_files:
                raise UserError(f"scene {scene} has no frames in {self.gt_root}; remove the scene or add its frames")
            lq_files, gt_files = self._pair_frames(scene, lq_files, gt_files)
            if self.role != "train" and self.test_frames is not None:
                lq_files, gt_files = lq_files[: self.test_frames], gt_files[: self.test_frames]
            n = len(lq_files)
            centres = n if self.role == "train" or self.max_frames is None else min(n, self.max_frames)
            self.scenes.append(scene)
            self._lq[scene], self._gt[scene] = lq_files, gt_files
            self._n[scene], self._centres[scene] = n, centres
            sample_scene.extend([len(self.scenes) - 1] * centres)
            sample_centre.extend(range(centres))
        self._sample_scene = np.asarray(sample_scene, dtype=np.int64)
        self._sample_centre = np.asarray(sample_centre, dtype=np.int64)
        self._windows: dict[str, list[list[int]]] = {}

        if self.role == "train":
            self.crop = self.opt["GT_size"]
            self.use_flip = bool(self.opt["use_flip"])
            self.use_rot = bool(self.opt["use_rot"])

    # ------------------------------------------------------------------ paths
    def _resolve_root(self, key: str, swap: bool) -> str:
        root = os.path.expanduser(os.fspath(self.opt[key])).rstrip("/\\") or "/"
        if os.path.isdir(root):
            return root
        if swap:
            parent, base = os.path.split(root)
            stem, ext = (base[:-5], ".lmdb") if base.endswith(".lmdb") else (base, "")
            other = _LQ_SIBLINGS.get(stem)
            if other is not None and os.path.isdir(os.path.join(parent, other + ext)):
                return os.path.join(parent, other + ext)
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise UserError(f"dataset folder {root} {what} (option {self.where}.{key}); fix the path or get the data")

    # ------------------------------------------------------------------ discovery
    def _list_scenes(self, root: str, key: str) -> list[str]:
        if lmdb_backend.is_lmdb_root(root):
            return list(lmdb_backend.read_meta(root)["scenes"])  # read_meta checks the names
        scenes = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "*")) if os.path.isdir(p))
        for scene in scenes:
            lmdb_backend.check_scene_name(scene, f"{root} (option {self.where}.{key})")
        return scenes

    def _list_frames(self, root: str, scene: str) -> list[str]:
        if lmdb_backend.is_lmdb_root(root):
            names = lmdb_backend.read_meta(root)["frames"].get(scene, [])
            return [os.path.join(root, scene, name) for name in names]
        return sorted(p for p in glob.glob(os.path.join(root, scene, "*")) if os.path.isfile(p))

    def _pair_frames(self, scene: str, lq_files: list[str], gt_files: list[str]) -> tuple[list[str], list[str]]:
        """Return equally long LQ and GT frame lists for ``scene`` (the GT of LQ frame i is ``gt[i]``)."""
        raise NotImplementedError

    def _default_test_scenes(self) -> list[str] | None:
        """Test scenes when ``testing_dir`` is absent; None means every scene."""
        return None

    def _select_scenes(self, scenes: list[str]) -> list[str]:
        names = parse_scene_list(self.opt["testing_dir"], self.where)
        explicit = names is not None
        if names is None:
            names = self._default_test_scenes()
        if names is None:
            # No test list: validation/testing uses every scene; training would have nothing held out.
            return list(scenes)
        listed = set(names)
        if self.split == "static":
            test_set = {s for s in scenes if s in listed or static_group(s) in listed}
            found = test_set | {static_group(s) for s in test_set}
        else:
            test_set = listed & set(scenes)
            found = test_set
        missing = [s for s in names if s not in found]
        if missing and (explicit or self.role != "train"):
            source = f"{self.where}.testing_dir" if explicit else f"the {self.family} test list"
            raise UserError(
                f"test scenes named in {source} do not exist in {self.gt_root}: {_names(missing)}; "
                "fix the names or the dataset path"
            )
        if self.role == "train":
            chosen = [s for s in scenes if s not in test_set]
            if not chosen:
                raise UserError(f"every scene of {self.gt_root} is a test scene; {self.where} has nothing to train on")
            return chosen
        return [s for s in scenes if s in test_set]

    # ------------------------------------------------------------------ frames
    def _load_full(self, path: str) -> np.ndarray:
        """Decoded, resized uint8 BGR frame (through the per-process cache)."""
        img = self.cache.get(path)
        if img is None:
            img = prepare_uint8(decode_frame(path), self.train_size)
            self.cache.put(path, img)
        return img

    def _load_for_crop(self, path: str) -> np.ndarray:
        """A frame to crop from: a memory map for .npy files needing no resize, else the full frame."""
        if path.lower().endswith(".npy") and lmdb_backend.split_lmdb_path(path) is None:
            cached = self.cache.get(path)
            if cached is not None:
                return cached
            mm = npy_memmap(path)
            if self.train_size is None or mm.shape[:2] == (self.train_size[1], self.train_size[0]):
                return mm
        return self._load_full(path)

    def _check_same_size(self, frames: Sequence[np.ndarray], paths: Sequence[str]) -> tuple[int, int]:
        height, width = frames[0].shape[:2]
        for img, path in zip(frames, paths):
            if img.shape[:2] != (height, width):
                raise UserError(
                    f"frames used together differ in size: {paths[0]} is {width}x{height}, {path} is "
                    f"{img.shape[1]}x{img.shape[0]}; resize them or set {self.where}.train_size"
                )
        return height, width

    # ------------------------------------------------------------------ scene API (evaluation)
    def scene_length(self, scene: str) -> int:
        """Number of centre frames evaluated in ``scene`` (= ``gt.shape[0]`` of :meth:`load_scene`)."""
        return self._centres[scene]

    def window(self, scene: str, i: int) -> list[int]:
        """The N frame indices (into the scene's frames) of the window centred on frame ``i``."""
        if scene not in self._windows:
            n = self._n[scene]
            self._windows[scene] = [index_generation(c, n, self.N, self.padding) for c in range(n)]
        return list(self._windows[scene][i])

    def load_scene(self, scene: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Load a scene once for feature-reuse evaluation.

        Returns:
            ``(lq, gt)``: ``lq`` is ``T x 3 x H x W`` with every frame any evaluated window uses
            (``T == scene_length(scene)`` unless ``max_frames`` cut the centres; then T may be larger);
            ``gt`` is ``scene_length(scene) x 3 x H x W``. Float32 RGB in [0, 1].
        """
        centres = self._centres[scene]
        needed = max(max(self.window(scene, c)) for c in range(centres)) + 1
        needed = max(needed, centres)
        lq_paths = self._lq[scene][:needed]
        gt_paths = self._gt[scene][:centres]
        local: dict[str, np.ndarray] = {}
        for path in (*lq_paths, *gt_paths):
            if path not in local:
                local[path] = prepare_uint8(decode_frame(path), self.train_size)
        all_paths = [*lq_paths, *gt_paths]
        self._check_same_size([local[p] for p in all_paths], all_paths)
        lq = _stack_to_tensor([local[p] for p in lq_paths])
        gt = _stack_to_tensor([local[p] for p in gt_paths]) if len(set(gt_paths)) > 1 else None
        if gt is None:  # one shared GT (SMID): expand a single frame instead of decoding it T times
            gt = _stack_to_tensor([local[gt_paths[0]]]).expand(centres, -1, -1, -1)
        return lq, gt

    # ------------------------------------------------------------------ Dataset protocol
    def __len__(self) -> int:
        return len(self._sample_scene)

    def __getitem__(self, index: int) -> dict:
        scene = self.scenes[int(self._sample_scene[index])]
        centre = int(self._sample_centre[index])
        idx = self.window(scene, centre)
        paths = [self._lq[scene][j] for j in idx] + [self._gt[scene][centre]]
        if self.role == "train":
            return self._train_item(scene, centre, paths)
        frames = [self._load_full(p) for p in paths]
        self._check_same_size(frames, paths)
        stack = _stack_to_tensor(frames)
        return {
            "LQs": stack[:-1],
            "GT": stack[-1],
            "scene": scene,
            "index": centre,
            "LQ_path": self._lq[scene][centre],
            "GT_path": self._gt[scene][centre],
        }

    def _train_item(self, scene: str, centre: int, paths: list[str]) -> dict:
        frames = [self._load_for_crop(p) for p in paths]
        height, width = self._check_same_size(frames, paths)
        size = self.crop
        if size > height or size > width:
            raise UserError(
                f"{self.where}.GT_size {size} is larger than frame {paths[-1]} ({width}x{height}); lower GT_size "
                f"or set {self.where}.train_size"
            )
        top = random.randint(0, height - size)
        left = random.randint(0, width - size)
        hflip = self.use_flip and random.random() < 0.5
        vflip = self.use_rot and random.random() < 0.5
        crops = [f[top : top + size, left : left + size] for f in frames]
        stack = _stack_to_tensor(crops, hflip=hflip, vflip=vflip)
        return {"LQs": stack[:-1], "GT": stack[-1], "key": f"{scene}/{centre}"}


def _names(items: Sequence[str], limit: int = 10) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} (+{len(items) - limit} more)"
