"""The experiment folder of a training run: a safe name, one run at a time (a lock), no stale temporary files.

* The ``name`` option becomes a folder under ``<root>/experiments/`` and ``<root>/tb_logger/``, and the
  archive-on-reuse step renames that folder; so a name must be exactly one non-empty path component. That rule
  is the schema's check of ``name`` (:func:`sdsd.options.checks.folder_name`), applied when options are loaded.
* :class:`ExperimentLock`: ``<experiments_root>/.lock`` names the host and process id of the run that holds it. It
  is an advisory ``flock`` lock on that file, so the kernel releases it when the holder dies, even by SIGKILL; the
  file a dead holder leaves behind is then taken over with a warning. A live holder is a one-line error naming it.
* Stale temporary files: atomic writes go to ``.<name>.<8 random characters>.tmp<ext>`` beside their target
  (:func:`sdsd.utils.io.atomic_path`); a SIGKILL in the middle of a write leaves that file behind. While the lock
  is held nobody else writes into the folder, so the trainer removes every such file in it
  (:func:`sdsd.utils.io.remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time

from sdsd.errors import UserError

logger = logging.getLogger("sdsd")

LOCK_NAME = ".lock"
_FLOCK_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _this_host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _describe(holder: dict | None) -> str:
    if not holder:
        return "an unknown process"
    since = f", since {holder['started']}" if holder.get("started") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{since}"


class ExperimentLock:
    """``<folder>/.lock``: at most one training run writes into an experiment folder at a time.

    Usage::

        lock = ExperimentLock(exp_root)
        lock.acquire()          # creates the folder; UserError when another live run holds it
        try:
            ...
        finally:
            lock.release()      # removes the file

    The lock is an advisory ``flock`` held on an open descriptor, so it disappears with its process however that
    process ends. The file's content (JSON: host, pid, start time) only serves the messages: a file left by a dead
    process of this host is taken over with a warning; a file written on another host is refused (this host
    cannot tell whether that run is alive: delete the file once it is over). On file systems without ``flock`` the
    content alone decides (a live pid on this host holds the lock).
    """

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Create the folder if needed and take the lock.

        Raises:
            UserError: another live run (named: host, pid, start) holds it, or it was left by another host.
        """
        if self._fd is not None:
            return
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(10):  # retried only when the holder released (and removed) the file while we opened it
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(fd)
                if not self._still_at_path(fd):
                    os.close(fd)
                    continue
                previous = self._read(fd)
                self._check_previous(previous, locked)
                self._write(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return
        raise UserError(f"could not take the lock {self.path}: other runs keep taking and releasing it; "
                        "run one training per experiment name at a time")

    def _flock(self, fd: int) -> bool:
        """Take the ``flock``; False where the file system has none. A live holder raises :class:`UserError`."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            raise UserError(f"experiment folder {self.folder} is in use by another training run ({_describe(holder)}; "
                            f"lock file {self.path}); wait for it to end, stop it, or use another name") from None
        except OSError as exc:
            if exc.errno in _FLOCK_UNSUPPORTED:
                return False
            raise
        return True

    def _still_at_path(self, fd: int) -> bool:
        """Whether ``self.path`` still names the file ``fd`` has open (a releasing holder unlinks it)."""
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def _check_previous(self, previous: dict | None, locked: bool) -> None:
        if not previous:
            return
        host, pid = previous.get("host"), previous.get("pid")
        if host != _this_host():
            raise UserError(f"experiment folder {self.folder} is locked by {_describe(previous)}, which this host "
                            f"cannot check; if that run has ended, delete {self.path} and start again")
        if isinstance(pid, int) and pid == os.getpid():
            return  # our own file (a lock taken again after the folder was archived)
        alive = isinstance(pid, int) and _pid_alive(pid)
        if alive and not locked:
            raise UserError(f"experiment folder {self.folder} is in use by another training run "
                            f"({_describe(previous)}; lock file {self.path}); wait for it to end or stop it")
        # With flock the kernel has the last word: a live pid here is an unrelated process that reused the number.
        logger.warning("taking over the stale lock %s of %s (no longer running)", self.path, _describe(previous))

    @staticmethod
    def _read(fd: int) -> dict | None:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, 4096)
            if not data.strip():
                return None  # a new file (or a holder killed before it wrote its name)
            record = json.loads(data.decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            record = None
        return record if isinstance(record, dict) else {"host": "?", "pid": "?"}

    @staticmethod
    def _write(fd: int) -> None:
        record = {"host": _this_host(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the lock; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._still_at_path(fd):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
        finally:
            os.close(fd)

    def reacquire_after_move(self, moved_to: str) -> None:
        """The locked folder was renamed to ``moved_to``: lock a new folder at the old path, then free the old file.

        The old lock stays held until the new one is taken, so no other run can slip in between.
        """
        old_fd, self._fd = self._fd, None
        try:
            self.acquire()
        finally:
            if old_fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(moved_to, LOCK_NAME))
                os.close(old_fd)

    def __enter__(self) -> ExperimentLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


