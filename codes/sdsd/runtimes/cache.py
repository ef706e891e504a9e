"""The model cache: exported graphs on disk, keyed by the network's hash, the shape (OpenVINO), the runtime's and
PyTorch's versions.

The folder is ``$SDSD_CACHE`` (default ``~/.cache/sdsd``). Each entry has a manifest with the SHA-256 of its files;
an entry that fails the check or does not load is replaced, and a single warning says so. Entries are built in a
marked temporary folder and renamed into place whole (:func:`sdsd.utils.io.atomic_folder`), so a reader or a crash
never sees a half-written one, and the temporary folders of killed runs are removed the next time the cache is
opened (:func:`open_cache`). Two processes building the same entry at once both succeed: the later one uses the
entry already in place. A folder that cannot be created or written raises :class:`CacheUnavailable` (one line).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import time

import torch
from torch import nn

from sdsd.runtimes.base import RuntimeUnavailable, runtime_version
from sdsd.runtimes.graphs import GRAPH_VERSION, network_hash
from sdsd.runtimes.quantize import RECIPE, int8_prefix
from sdsd.runtimes.registry import RUNTIMES
from sdsd.utils.io import (
    OWNER_RECORD,
    atomic_folder,
    file_sha256,
    fsync_file,
    make_folder,
    move_aside,
    remove_stale_temps,
    temp_path_for,
)

logger = logging.getLogger("sdsd")

__all__ = ["CacheUnavailable", "cache_dir", "cache_key", "cache_name", "cache_problem", "cached_models",
           "entry_valid", "invalidate", "is_cached", "newest_entry", "open_cache"]


def cache_dir() -> str:
    """The folder of exported models and auto-selection choices: ``$SDSD_CACHE`` or ``~/.cache/sdsd``."""
    return os.environ.get("SDSD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sdsd")


class CacheUnavailable(RuntimeUnavailable):
    """The model cache folder cannot be created or written (one line naming it, ``SDSD_CACHE`` and what to do).

    ``root`` is the folder and ``problem`` why it cannot be used (when that is known).
    """

    def __init__(self, message: str, root: str = "", problem: str = ""):
        super().__init__(message)
        self.root, self.problem = root, problem


def cache_name(root: str, cache: str | None) -> str:
    """``model cache <root>`` and where that folder came from (an argument, ``$SDSD_CACHE`` or the default)."""
    if cache:
        return f"model cache {root}"
    if os.environ.get("SDSD_CACHE"):
        return f"model cache {root} (from SDSD_CACHE)"
    return f"model cache {root} (the default; SDSD_CACHE is not set)"


def cache_problem(root: str) -> str | None:
    """Why the cache folder ``root`` cannot be used, or None when it can.

    The folder is created when missing, then a marked temporary file is created in it and removed again, so a
    folder that only looks writable (a read-only file system, permissions) is found out before anything is built.
    """
    if os.path.lexists(root) and not os.path.isdir(root):
        return "it is a file, not a folder"
    try:
        make_folder(root)
        os.remove(temp_path_for(os.path.join(root, "write-check")))
    except OSError as exc:
        return f"it cannot be created or written ({exc.strerror or type(exc).__name__})"
    return None


def open_cache(cache: str | None = None) -> str:
    """The cache folder (``cache``, else :func:`cache_dir`), checked to be usable and cleared of stale temporaries.

    Temporary folders and files that killed runs of this package left in it (an interrupted conversion, an
    unfinished ``choices.json``) are removed with :func:`sdsd.utils.io.remove_stale_temps`: in the folder itself
    and in its per-runtime sub-folders (where entries are built); those of a process still running are spared.

    Raises:
        CacheUnavailable: the folder cannot be created or written.
    """
    root = cache or cache_dir()
    problem = cache_problem(root)
    if problem is not None:
        raise CacheUnavailable(f"{cache_name(root, cache)} cannot be used: {problem}; set SDSD_CACHE to a "
                               "writable folder, or use runtime torch", root, problem)
    removed = remove_stale_temps(root)
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            # Only the per-runtime folders this module makes, never followed through a link: SDSD_CACHE may
            # point at a shared folder whose other sub-folders are not this package's to walk.
            if entry.name.split("-", 1)[0] in RUNTIMES and entry.is_dir(follow_symlinks=False):
                removed += remove_stale_temps(entry.path)
    for path in removed:
        logger.info("model cache: removed %s, left by an interrupted run", path)
    return root


def entry_valid(folder: str) -> bool:
    """Whether ``folder`` is a complete cache entry: a manifest listing files of this folder, all with their
    recorded SHA-256."""
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        files = manifest["files"]
        return (bool(files) and all(isinstance(name, str) and os.path.basename(name) == name for name in files)
                and all(file_sha256(os.path.join(folder, name)) == digest for name, digest in files.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return False


class _Superseded(Exception):
    """Another process finished the same cache entry while this one was building it."""


def cached_models(key: str, build, cache: str | None = None) -> tuple[str, bool]:
    """The folder of cache entry ``key``, built by ``build(folder)`` when absent or invalid.

    Returns ``(folder, built)`` (``built``: a build ran in this call). The entry is built in a marked temporary
    folder and renamed into place whole with its manifest (:func:`sdsd.utils.io.atomic_folder`), so a reader or a
    crash sees a complete entry or none; a present entry whose manifest or files do not check out is replaced
    whole, and one warning names it. When another process completes the same entry meanwhile (two runs converting
    one model at once), its entry is used and this build is dropped; neither fails.

    Raises:
        CacheUnavailable: the cache folder cannot be created or written.
    """
    root = open_cache(cache)
    folder = os.path.join(root, key)
    if entry_valid(folder):
        return folder, False
    where = cache_name(root, cache)
    try:
        if os.path.lexists(folder):
            logger.warning("model cache %s is stale or corrupt: rebuilding it", folder)
            if os.path.islink(folder) or not os.path.isdir(folder):
                os.remove(folder)  # atomic_folder replaces folders only
        with atomic_folder(folder) as tmp:
            build(tmp)
            files = {name: file_sha256(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))
                     if name != OWNER_RECORD}
            with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
                json.dump({"key": key, "files": files, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=1)
            # Flushed here (atomic_folder's own flush then finds nothing left to write), so that the look for a
            # winner below comes right before the rename and a winner's entry is seldom replaced.
            for name in [*files, "manifest.json"]:
                fsync_file(os.path.join(tmp, name))
            if entry_valid(folder):
                raise _Superseded
    except _Superseded:
        return folder, True
    except OSError as exc:
        # os.replace onto a folder another process filled between atomic_folder's check and its rename.
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and entry_valid(folder):
            return folder, True
        raise CacheUnavailable(f"{where}: could not store {key} ({exc.strerror or type(exc).__name__}); set "
                               "SDSD_CACHE to a writable folder with free space, or use runtime torch") from None
    return folder, True


def is_cached(runtime: str, net: nn.Module, height: int, width: int, cache: str | None = None,
              precision: str = "fp32") -> bool:
    """Whether the exported models of ``runtime`` for ``net`` (and, for OpenVINO, this shape) are in the cache;
    for ``precision`` int8 (OpenVINO), also an int8 model of the default recipe (calibrated on any frames)."""
    root = cache or cache_dir()
    try:
        key = cache_key(runtime, network_hash(net), height, width)
        if not entry_valid(os.path.join(root, key)):
            return False
        return precision != "int8" or newest_entry(root, int8_prefix(key, RECIPE)) is not None
    except RuntimeUnavailable:
        return False


def newest_entry(root: str, prefix: str) -> str | None:
    """The most recently built complete entry whose key starts with ``prefix`` (links are not followed), or None."""
    parent, start = os.path.split(os.path.join(root, prefix))
    try:
        names = [name for name in os.listdir(parent) if name.startswith(start)]
    except OSError:
        return None
    found = []
    for name in names:
        path = os.path.join(parent, name)
        if not os.path.islink(path) and entry_valid(path):
            with contextlib.suppress(OSError):
                found.append((os.path.getmtime(os.path.join(path, "manifest.json")), path))
    return max(found)[1] if found else None


def cache_key(runtime: str, digest: str, height: int, width: int) -> str:
    if runtime == "openvino":
        return os.path.join(_versions("openvino"), f"{digest}-{height}x{width}")
    return os.path.join(_versions(runtime), digest)


def invalidate(folder: str, why: str) -> None:
    """Delete a cache entry that would not load (one warning); it is first renamed aside, so a reader never sees
    it half-deleted."""
    logger.warning("model cache %s does not load (%s): rebuilding it", folder, why)
    try:
        folder = move_aside(folder)
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _versions(runtime: str) -> str:
    # Version strings may hold "/" (OpenVINO's: "2026.4.1-22982-...-releases/2026/4"): one folder name each.
    text = f"{runtime}-{runtime_version(runtime)}-torch-{torch.__version__.split('+')[0]}-g{GRAPH_VERSION}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)
