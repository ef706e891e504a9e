"""Atomic file writes: write to a temporary name in the same folder, then ``os.replace``.

A reader (or a crash) never sees a half-written checkpoint, image or JSON file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

import torch


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None):
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on error removed.

    ``suffix`` defaults to the extension of ``path`` (so writers that look at the extension, e.g. OpenCV or
    PyAV, pick the right format).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    ext = os.path.splitext(path)[1] if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp" + ext, dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(obj, path: str) -> None:
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)
