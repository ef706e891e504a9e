"""Frames stored in an LMDB folder, as written by ``python -m sdsd.tools.make_lmdb``.

Layout of one LMDB (one root, e.g. ``indoor_np/GT`` -> ``indoor_GT.lmdb``):

* key ``<scene>/<frame file name>`` (e.g. ``pair1/0001.npy``), ASCII/UTF-8: one frame. The value is a
  16-byte header (magic ``SDF1``, then height, width, channels as little-endian uint32) followed by the raw
  uint8 BGR pixels exactly as decoded from the source file (``H x W x C``, C-order).
* key ``__meta__``: UTF-8 JSON ``{"format": "sdsd-frames-v1", "source": <source folder>, "scenes": [...],
  "frames": {scene: [file names in sorted order]}, "shapes": {scene: [H, W, C] of its first frame}}``.
  It is written last, so an LMDB without it is an unfinished conversion (re-run ``make_lmdb`` to resume).

A frame inside an LMDB is addressed by the pseudo-path ``<root>.lmdb/<scene>/<file name>``, so the
rest of the data code treats LMDB and folder frames alike. Environments are opened lazily, read-only and
without locking, once per process (DataLoader workers each open their own after fork).
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from sdsd.errors import UserError

META_KEY = b"__meta__"
META_FORMAT = "sdsd-frames-v1"
_HEADER = struct.Struct("<4sIII")
_MAGIC = b"SDF1"

_ENVS: dict[tuple[int, str], object] = {}


def check_scene_name(scene, where: str) -> str:
    """Return ``scene`` if it is a plain folder name, else raise a one-line :class:`UserError` naming ``where``.

    Scene names come from dataset folders and from an LMDB's ``__meta__`` record, and become parts of output paths
    (``results/.../images/output/<scene>.<i>-<n>.png``, ``videos/<scene>.mp4``). A name that is empty, ``.``,
    holds ``..``, a path separator or NUL could make those paths point outside the results folder, so it is
    refused where it enters.
    """
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not isinstance(scene, str) or scene in ("", ".") or ".." in scene or any(s in scene for s in seps) \
            or "\0" in scene:
        raise UserError(f"{where}: scene name {scene!r} is not a plain folder name (one non-empty name without "
                        "'/', '\\' or '..'); rename the scene or re-create the data")
    return scene


def is_lmdb_root(root: str) -> bool:
    """Whether a dataset root names an LMDB (its path ends with ``.lmdb``)."""
    return os.fspath(root).rstrip("/\\").endswith(".lmdb")


def split_lmdb_path(path: str) -> tuple[str, str] | None:
    """Split ``<root>.lmdb/<key>`` into ``(root, key)``; None for an ordinary path."""
    marker = ".lmdb" + os.sep
    pos = path.rfind(marker)
    if pos < 0:
        return None
    return path[: pos + len(".lmdb")], path[pos + len(marker) :].replace(os.sep, "/")


def open_env(root: str):
    """Return this process's read-only environment for ``root`` (opened on first use)."""
    import lmdb

    root = os.path.abspath(os.fspath(root))
    cache_key = (os.getpid(), root)
    env = _ENVS.get(cache_key)
    if env is None:
        if not os.path.isdir(root):
            raise UserError(f"LMDB {root} does not exist; create it with `python -m sdsd.tools.make_lmdb SRC {root}`")
        try:
            env = lmdb.open(root, readonly=True, lock=False, readahead=False, meminit=False, max_readers=2048)
        except lmdb.Error as exc:
            raise UserError(f"LMDB {root} cannot be opened ({exc}); re-create it with sdsd.tools.make_lmdb") from None
        _ENVS[cache_key] = env
    return env


def encode_frame(img: np.ndarray) -> bytes:
    """Serialise an ``H x W x C`` (or ``H x W``) uint8 array to header + raw bytes."""
    if img.ndim == 2:
        img = img[:, :, None]
    height, width, channels = img.shape
    return _HEADER.pack(_MAGIC, height, width, channels) + np.ascontiguousarray(img).tobytes()


def decode_value(buf: bytes, where: str) -> np.ndarray:
    """Inverse of :func:`encode_frame`; ``where`` names the entry in error messages."""
    if len(buf) < _HEADER.size:
        raise UserError(f"LMDB entry {where} is truncated; re-create the LMDB with sdsd.tools.make_lmdb")
    magic, height, width, channels = _HEADER.unpack_from(buf)
    if magic != _MAGIC or len(buf) != _HEADER.size + height * width * channels:
        raise UserError(f"LMDB entry {where} is corrupt or truncated; re-create the LMDB with sdsd.tools.make_lmdb")
    return np.frombuffer(buf, dtype=np.uint8, offset=_HEADER.size).reshape(height, width, channels)


def read_raw(root: str, key: str) -> np.ndarray:
    """Read one frame (``H x W x C`` uint8 BGR, read-only view) from the LMDB at ``root``."""
    env = open_env(root)
    with env.begin(write=False, buffers=False) as txn:
        buf = txn.get(key.encode("utf-8"))
    if buf is None:
        raise UserError(f"frame {key} is not in LMDB {root}; re-run sdsd.tools.make_lmdb on its source folder")
    return decode_value(buf, f"{root}/{key}")


def read_meta(root: str) -> dict:
    """Return the ``__meta__`` record of an LMDB (scenes, frame lists, shapes, source).

    Raises:
        UserError: the LMDB is missing, unfinished (no ``__meta__``) or was not written by make_lmdb.
    """
    env = open_env(root)
    with env.begin(write=False) as txn:
        buf = txn.get(META_KEY)
    if buf is None:
        raise UserError(
            f"LMDB {root} has no __meta__ entry (an unfinished conversion?); "
            f"re-run `python -m sdsd.tools.make_lmdb SRC {root}` to finish it"
        )
    try:
        meta = json.loads(bytes(buf).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"LMDB {root} has an unreadable __meta__ entry; re-create it with make_lmdb") from None
    if meta.get("format") != META_FORMAT or not isinstance(meta.get("frames"), dict):
        raise UserError(f"LMDB {root} was not written by sdsd.tools.make_lmdb (format {meta.get('format')!r})")
    scenes = meta.get("scenes")
    if not isinstance(scenes, list):
        raise UserError(f"LMDB {root} has a __meta__ entry without a scene list; re-create it with make_lmdb")
    for scene in [*scenes, *meta["frames"]]:
        check_scene_name(scene, f"LMDB {root} (__meta__)")
    return meta
