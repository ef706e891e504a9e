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

:func:`remove_stale_temps` deletes the temporary files a killed process left behind. It only ever removes what
this module provably created: a name carrying the marker ``sdsd``, the creating host and process id and a check
digest over them (a name a person or another program chose does not verify), of a process that is gone (or,
for another host's, untouched for an hour); a folder only when it also holds the owner record this module wrote
into it, never through a symbolic link. Temporary names of older versions of this package are left alone.

Writers that manage their own temporary file (a video encoder, a folder of frames) use the pieces directly:
:func:`temp_path_for` / :func:`make_temp_dir` for the name and :func:`commit` to fsync and rename it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time

__all__ = [
    "atomic_folder",
    "atomic_path",
    "atomic_save_npy",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "commit",
    "file_sha256",
    "fsync_file",
    "fsync_folder",
    "is_our_temp",
    "make_folder",
    "make_temp_dir",
    "mark_temp_dir",
    "move_aside",
    "read_json",
    "remove_stale_temps",
    "temp_path_for",
]

#: Temporary names made here: ``.<target name>.sdsd-<host>-<pid>-<random><check>.tmp<target extension>``, where
#: ``host`` is 4 hex digits of a hash of this machine's name, ``pid`` the creating process, ``random`` 8 hex digits
#: and ``check`` 4 hex digits of a hash of all the rest (:func:`is_our_temp` verifies it).
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.sdsd-(?P<host>[0-9a-f]{4})-(?P<pid>[1-9][0-9]{0,9})-"
                       r"(?P<random>[0-9a-f]{8})(?P<check>[0-9a-f]{4})\.tmp(?P<ext>\.[^.]*)?$")

#: The file inside every temporary folder made by :func:`make_temp_dir`: it holds the folder's own name, so a
#: folder is only ever deleted as stale when this module created it. :func:`commit` removes it before the rename.
OWNER_RECORD = ".sdsd-temp-owner"

#: A temporary entry whose creator runs on another machine (or whose process id is in use again) counts as
#: stale only once nothing has touched it for this long.
STALE_AGE_S = 3600.0

_ATTEMPTS = 100  # name collisions before giving up (8 random hex digits: never reached in practice)


@functools.cache
def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:4]


def _check_digest(name: str, host: str, pid: str, random: str, ext: str) -> str:
    text = f"sdsd-temp\0{name}\0{host}\0{pid}\0{random}\0{ext}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:4]


def _temp_name(path: str, suffix: str | None) -> tuple[str, str]:
    """The folder of ``path`` and a fresh temporary name in it (not yet created)."""
    folder = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1] if suffix is None else suffix
    base, host, pid = os.path.basename(path), _host_tag(), str(os.getpid())
    # secrets draws from os.urandom, so processes forked from one parent never draw the same names.
    random = secrets.token_hex(4)
    name = f".{base}.sdsd-{host}-{pid}-{random}{_check_digest(base, host, pid, random, ext)}.tmp{ext}"
    return folder, os.path.join(folder, name)


def is_our_temp(name: str) -> bool:
    """True when ``name`` (a file name, no folder) is a temporary name this module made (its check digest holds)."""
    m = TEMP_NAME.match(name)
    if m is None:
        return False
    ext = m["ext"] or ""
    return m["check"] == _check_digest(m["name"], m["host"], m["pid"], m["random"], ext)


def _process_gone(pid: int) -> bool:
    """True when no process ``pid`` runs on this machine (a process of another user still counts as running)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


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
    """Create a temporary folder next to ``path`` (mode ``0777 & ~umask``) and return its name.

    For writers that fill a folder and move it into place with :func:`commit` (or :func:`atomic_folder`). The
    folder holds one file, :data:`OWNER_RECORD` (its own name), which marks it as this module's for
    :func:`remove_stale_temps`; :func:`commit` removes it, and a writer listing the folder should skip it.
    """
    make_folder(os.path.dirname(os.path.abspath(path)))
    for _ in range(_ATTEMPTS):
        _, tmp = _temp_name(path, "")
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:
            continue
        try:
            mark_temp_dir(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", path)


def mark_temp_dir(folder: str) -> None:
    """Write the owner record into ``folder``, a folder with a temporary name of :func:`temp_path_for`'s making
    (e.g. an old output moved aside before it is deleted), so that a sweep may delete it if the process dies."""
    with open(os.path.join(folder, OWNER_RECORD), "w", encoding="utf-8") as fh:
        fh.write(os.path.basename(folder))


def move_aside(path: str) -> str:
    """Rename the folder ``path`` to a fresh marked temporary name beside it (to be deleted once its replacement
    is in place) and return that name; if the process dies first, :func:`remove_stale_temps` deletes it."""
    for _ in range(_ATTEMPTS):
        _, old = _temp_name(path, "")
        if os.path.lexists(old):
            continue
        os.rename(path, old)
        mark_temp_dir(old)
        return old
    raise FileExistsError(errno.EEXIST, "no free temporary name", path)


def _owned_folder(path: str) -> bool:
    try:
        with open(os.path.join(path, OWNER_RECORD), encoding="utf-8") as fh:
            return fh.read(4096) == os.path.basename(path)
    except (OSError, UnicodeDecodeError):
        return False


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

    ``tmp`` must be in the folder of ``path`` (as :func:`temp_path_for` makes it). A temporary *folder* loses its
    owner record and is renamed as it is (its files are the writer's to flush).
    """
    if not os.path.isdir(tmp):
        fsync_file(tmp)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(tmp, OWNER_RECORD))
    os.replace(tmp, path)
    fsync_folder(os.path.dirname(os.path.abspath(path)))


def _discard(tmp: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp)
        else:
            os.remove(tmp)


@contextlib.contextmanager
def atomic_folder(path: str):
    """Yield a temporary folder next to ``path``; when the block ends without an error it becomes ``path``.

    The files written into it are flushed to disk, then the folder is renamed onto ``path`` in one step; a folder
    already at ``path`` is first moved aside (under a marked temporary name) and deleted after the rename, so a
    reader sees the old folder or the new one, never a mix. On any exception the temporary folder is removed and
    ``path`` is left as it was. ``path`` must not be a symbolic link or a file (``FileExistsError``).
    """
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        raise FileExistsError(errno.EEXIST, "not a folder this writer may replace", path)
    tmp = make_temp_dir(path)
    old = None
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                if name != OWNER_RECORD:
                    fsync_file(os.path.join(root, name))
        if os.path.isdir(path):
            old = move_aside(path)
        try:
            commit(tmp, path)
        except BaseException:
            if old is not None:
                os.remove(os.path.join(old, OWNER_RECORD))
                os.replace(old, path)
                old = None
            raise
    except BaseException:
        _discard(tmp)
        raise
    finally:
        if old is not None:
            _discard(old)


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


class JSONFileProblem(ValueError):
    """A small JSON file that cannot be used; ``str()`` is the reason, in words (``it is not valid JSON``)."""


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: str, max_bytes: int, follow_links: bool = True):
    """The value of the small JSON file ``path``, read with the checks every such file of ours gets.

    Refuses (raising :class:`JSONFileProblem` with the reason as its message) a path that is not a regular file
    (never opening a FIFO or device, so the read cannot block), a symbolic link when ``follow_links`` is false,
    a file larger than ``max_bytes``, one that cannot be read, is not UTF-8, is not JSON (``NaN``/``Infinity``
    included) or is nested too deeply to parse.

    Raises:
        FileNotFoundError: ``path`` does not exist (a missing file is usually not a problem to report).
        JSONFileProblem: the reasons above.
    """
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise JSONFileProblem(f"it cannot be read: {exc.strerror or type(exc).__name__}") from None
    if stat.S_ISLNK(st.st_mode):
        raise JSONFileProblem("it is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise JSONFileProblem("it is not a regular file")
    if st.st_size > max_bytes:
        raise JSONFileProblem(f"it is larger than {max_bytes} bytes")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise JSONFileProblem(f"it cannot be read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > max_bytes:
        raise JSONFileProblem(f"it is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise JSONFileProblem("it is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise JSONFileProblem("it is nested too deeply to read") from None
    except ValueError as exc:  # json.JSONDecodeError, a refused constant, an integer too long to read
        message = " ".join(str(exc).split())
        raise JSONFileProblem(f"it is not valid JSON ({message[:77] + '...' if len(message) > 80 else message})"
                              ) from None


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


def remove_stale_temps(folder: str, recursive: bool = False, min_age_s: float = STALE_AGE_S) -> list[str]:
    """Delete the temporary files and folders that interrupted writers of this package left in ``folder``.

    An entry is removed only when all of these hold:

    * its name is one :func:`temp_path_for` / :func:`make_temp_dir` makes, check digest included
      (:func:`is_our_temp`); anything else, whatever it looks like, is never touched;
    * it is a regular file, or a folder (not followed through a symbolic link) holding this module's owner
      record with its own name, or an empty folder; and it belongs to this user;
    * its creator is gone: the process id in the name runs no more on this machine, or (a creator on another
      machine, or a process id in use again) nothing has modified it for ``min_age_s`` seconds.

    Call it when a run starts, before anything in this run writes to ``folder``; the temporary files of another
    process writing there right now are spared.

    Args:
        folder: the folder to clean; a missing folder is nothing to clean.
        recursive: also clean every sub-folder (not descending into temporary folders or symbolic links).
        min_age_s: for a creator that may still be running, how long an entry must be untouched.

    Returns:
        The paths removed.
    """
    removed: list[str] = []
    if not os.path.isdir(folder):
        return removed
    now, host, uid = time.time(), _host_tag(), getattr(os, "getuid", lambda: None)()
    for root, dirs, files in os.walk(folder):
        for name in [*files, *dirs]:
            if not is_our_temp(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if uid is not None and st.st_uid != uid:
                continue
            m = TEMP_NAME.match(name)
            gone = m["host"] == host and _process_gone(int(m["pid"]))
            if not gone and now - st.st_mtime < min_age_s:
                continue
            if stat.S_ISDIR(st.st_mode) and not _owned_folder(path):
                # Killed between making the folder and writing its record: only an empty one goes (rmdir).
                with contextlib.suppress(OSError):
                    os.rmdir(path)
                    removed.append(path)
                continue
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                continue
            _discard(path)
            if not os.path.lexists(path):
                removed.append(path)
        if not recursive:
            break
        dirs[:] = [d for d in dirs if not is_our_temp(d) and not os.path.islink(os.path.join(root, d))]
    return removed
