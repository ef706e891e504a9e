"""Atomic, durable file writes: write a temporary file in the same folder, flush it to disk, then rename it.

Every file the package writes (checkpoints, training states, JSON/CSV results, PNG panels, dataset frames) goes
through :func:`atomic_path` or one of the convenience writers built on it, so that

* a reader, or a crash, never sees a half-written file: the data goes to a hidden temporary name
  ``.<name>.<random>.tmp<ext>`` next to the target and is renamed onto it with ``os.replace`` only when complete;
  on any error (including a full disk) the temporary file is removed and a previous file of that name is left
  as it was;
* a file that has been renamed into place survives a power loss: the temporary file is ``fsync``-ed before the
  rename and the folder after it (otherwise the rename can reach the disk before the data does, leaving an
  empty file under the final name);
* the file's permissions follow the umask like an ordinary ``open(path, "w")`` (``0666 & ~umask``), not the
  owner-only ``0600`` of ``tempfile.mkstemp``; folders created here get ``0777 & ~umask``.

:func:`remove_stale_temps` deletes the temporary files a killed process left behind (only names of the pattern
above); writers call it on their output folder when they start.

Writers that manage their own temporary file (a video encoder, a folder of frames) use the pieces directly:
:func:`temp_path_for` / :func:`make_temp_dir` for the name and :func:`commit` to fsync and rename it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import secrets
import shutil
import time

__all__ = [
    "atomic_path",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "commit",
    "fsync_file",
    "fsync_folder",
    "make_folder",
    "make_temp_dir",
    "remove_stale_temps",
    "temp_path_for",
]

#: Temporary names made here: ``.<target name>.<8 random characters>.tmp<target extension>``. The random part of
#: :func:`temp_path_for` is hex; ``[a-z0-9_]`` also covers the names ``tempfile.mkstemp`` makes with the same
#: prefix and suffix, so older temporary files are recognised too.
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<random>[a-z0-9_]{8})\.tmp(?P<ext>\.[^.]*)?$")

_ATTEMPTS = 100  # name collisions before giving up (8 random hex digits: never reached in practice)


def _temp_name(path: str, suffix: str | None) -> tuple[str, str]:
    """The folder of ``path`` and a fresh temporary name in it (not yet created)."""
    folder = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1] if suffix is None else suffix
    # secrets draws from os.urandom, so processes forked from one parent never draw the same names.
    name = f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp{ext}"
    return folder, os.path.join(folder, name)


def make_folder(folder: str) -> None:
    """``os.makedirs(folder, exist_ok=True)``: new folders get ``0777 & ~umask`` (the kernel applies the umask)."""
    os.makedirs(folder, mode=0o777, exist_ok=True)


def temp_path_for(path: str, suffix: str | None = None, claimed: list[str] | None = None) -> str:
    """Create an empty temporary file next to ``path`` and return its name.

    The file is created exclusively with mode ``0666`` filtered by the umask (what ``open(path, "w")`` would
    give ``path`` itself). The caller writes it, then calls :func:`commit`, or removes it on failure.

    Args:
        path: the final file.
        suffix: extension of the temporary name; defaults to the extension of ``path`` (writers such as OpenCV
            or PyAV choose the format from it).
        claimed: a list that receives the name *before* the file is created, so that a caller's clean-up still
            knows it when an interrupt (Ctrl-C, SIGTERM) arrives between the creation and the return.
    """
    make_folder(os.path.dirname(os.path.abspath(path)))
    claimed = [] if claimed is None else claimed
    for _ in range(_ATTEMPTS):
        _, tmp = _temp_name(path, suffix)
        claimed.append(tmp)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            claimed.remove(tmp)  # someone else's file
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", path)


def make_temp_dir(path: str) -> str:
    """Create an empty temporary folder next to ``path`` (mode ``0777 & ~umask``) and return its name.

    For writers that fill a folder and move it into place (``os.replace`` of the folder, or of its files).
    """
    make_folder(os.path.dirname(os.path.abspath(path)))
    for _ in range(_ATTEMPTS):
        _, tmp = _temp_name(path, "")
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", path)


def fsync_file(path: str) -> None:
    """Flush one file's data to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: str) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows: a rename is made durable by the file system itself
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str, path: str) -> None:
    """Flush the finished temporary file ``tmp`` to disk, rename it onto ``path``, then flush the folder.

    ``tmp`` must be in the folder of ``path`` (as :func:`temp_path_for` makes it). A temporary *folder* is
    renamed as it is (its files are the writer's to flush).
    """
    if not os.path.isdir(tmp):
        fsync_file(tmp)
    os.replace(tmp, path)
    fsync_folder(os.path.dirname(os.path.abspath(path)))


def _discard(tmp: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp)
        else:
            os.remove(tmp)


@contextlib.contextmanager
def atomic_path(path: str, suffix: str | None = None):
    """Yield a temporary path next to ``path``; when the block ends without an error it replaces ``path``.

    The temporary file exists (empty) when the block starts; write it by name (``torch.save(obj, tmp)``,
    ``cv2.imwrite(tmp, img)``). On success it is fsync-ed, renamed onto ``path`` and the folder fsync-ed; on any
    exception it is removed and ``path`` keeps its previous content.

    Args:
        path: the final file.
        suffix: extension of the temporary name; defaults to the extension of ``path`` (so writers that look at
            the extension, e.g. OpenCV or PyAV, pick the right format).
    """
    claimed: list[str] = []
    try:
        tmp = temp_path_for(path, suffix, claimed)
        yield tmp
        commit(tmp, path)
    except BaseException:
        for name in claimed:
            _discard(name)
        raise


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_bytes(data: bytes, path: str) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_BINARY", 0))
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def atomic_write_text(text: str, path: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically and durably."""
    atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj, path: str, *, indent: int = 2, default=None) -> None:
    """Write ``obj`` as JSON (``indent`` spaces, a final newline) to ``path`` atomically and durably.

    ``default`` is passed to ``json.dumps`` (e.g. ``str`` to write objects JSON has no type for).
    """
    atomic_write_text(json.dumps(obj, indent=indent, default=default) + "\n", path)


def atomic_save_npy(array, path: str) -> None:
    """``numpy.save(path, array)`` atomically and durably (the same bytes ``numpy.save`` writes)."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(buffer.getbuffer(), path)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` atomically and durably."""
    import torch  # here, not at the top: the dataset tools use this module without loading torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def remove_stale_temps(folder: str, recursive: bool = False, min_age_s: float = 0.0) -> list[str]:
    """Delete the temporary files and folders that interrupted writers left in ``folder``.

    Only names of this module's pattern (``.<name>.<8 characters>.tmp[<ext>]``) are touched; call it when a run
    starts, before anything in this run writes to ``folder``.

    Args:
        folder: the folder to clean; a missing folder is nothing to clean.
        recursive: also clean every sub-folder (not descending into the temporary folders themselves).
        min_age_s: only remove entries not modified for this many seconds (spares the temporary files of another
            process that is writing to the same folder right now).

    Returns:
        The paths removed.
    """
    removed: list[str] = []
    if not os.path.isdir(folder):
        return removed
    now = time.time()
    for root, dirs, files in os.walk(folder):
        for name in [*files, *dirs]:
            if not TEMP_NAME.match(name):
                continue
            path = os.path.join(root, name)
            try:
                if min_age_s > 0 and now - os.lstat(path).st_mtime < min_age_s:
                    continue
            except FileNotFoundError:
                continue
            _discard(path)
            if not os.path.lexists(path):
                removed.append(path)
        if not recursive:
            break
        dirs[:] = [d for d in dirs if not TEMP_NAME.match(d)]
    return removed
