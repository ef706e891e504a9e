"""Command line of ``train.py``: plain ``python``, ``torchrun`` and the legacy ``torch.distributed.launch``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil

from sdsd.errors import UserError
from sdsd.utils.io import atomic_write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the ``train.py`` arguments (see ``train.py --help``)."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train SDSD-Net. One process: python train.py -opt FILE.yml; several: torchrun "
                    "--nproc_per_node K train.py -opt FILE.yml (datasets.train.batch_size is the global batch).")
    parser.add_argument("-opt", "--opt", required=True, metavar="FILE.yml", help="option file (YAML)")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override options, e.g. --set train.niter=1000 datasets.train.batch_size=8")
    parser.add_argument("--auto_resume", "--auto-resume", action="store_true",
                        help="resume from the newest complete training_state/<iter>.state of the experiment")
    parser.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                        help="accepted for compatibility: processes are set up from the torchrun environment")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None,
                        help="set by torch.distributed.launch; LOCAL_RANK in the environment takes precedence")
    args = parser.parse_args(argv)
    if args.local_rank is not None and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    return args


def restarted_by_torchrun() -> bool:
    """Whether torchrun (``--max-restarts``) restarted this worker after a failure: then resume automatically."""
    return (torchrun_restart_count() or 0) > 0


# -- repeated failures under torchrun --max-restarts ---------------------------------------------------------------
#
# A restarted worker resumes from the newest checkpoint. When the failure is deterministic (a corrupt frame, a
# non-finite loss at a fixed iteration) every restart fails again at the same place, and the restarts only burn
# time. So each failing worker records (rank, restart, iteration, digest of its message) in
# <experiments_root>/.failures/, and a restarted worker compares the records of the two attempts before it: the
# same failure twice in a row stops the run with a one-line error instead of resuming again.

FAILURES_DIR = ".failures"


class RepeatedFailureError(UserError):
    """The two attempts before this torchrun restart failed the same way: the run is not resumed again."""


def torchrun_restart_count() -> int | None:
    """The restart number torchrun gives this worker (0 for the first attempt); ``None`` outside torchrun."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if value is None:
        return None
    try:
        return int(value or 0)
    except ValueError:
        return 0


def restarts_allowed() -> bool:
    """Whether this worker runs under torchrun with ``--max-restarts`` above 0."""
    try:
        return torchrun_restart_count() is not None and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
    except ValueError:
        return False


def failure_digest(exc: BaseException) -> str:
    """A short digest of the exception's type and first message line (the same failure gives the same digest)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return hashlib.sha256(f"{type(exc).__name__}: {first}".encode()).hexdigest()[:16]


def record_failure(experiments_root: str, rank: int, iteration: int | None, exc: BaseException) -> str | None:
    """Append this worker's failure to ``<experiments_root>/.failures/rank<rank>.json``; a no-op without restarts.

    Returns:
        The record file, or ``None`` when nothing was recorded (not under torchrun restarts, or unwritable).
    """
    if not restarts_allowed() or not os.path.isdir(experiments_root):
        return None
    folder = os.path.join(experiments_root, FAILURES_DIR)
    path = os.path.join(folder, f"rank{rank}.json")
    records = _read_records(path)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    record = {"restart": torchrun_restart_count(), "iteration": iteration, "digest": failure_digest(exc),
              "error": f"{type(exc).__name__}: {first[:300]}"}
    if isinstance(exc, RepeatedFailureError):
        record = {"restart": record["restart"], "stopped": str(exc)}  # later restarts stop the same way
    records.append(record)
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(records[-10:], path)
    except OSError:  # recording must never hide the failure itself
        return None
    return path


def _read_records(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except (OSError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def clear_failures(experiments_root: str) -> None:
    """Forget the recorded failures (a new torchrun launch starts counting again)."""
    shutil.rmtree(os.path.join(experiments_root, FAILURES_DIR), ignore_errors=True)


def check_repeated_failure(experiments_root: str, restart: int | None = None) -> None:
    """Stop a restarted worker when the two attempts before it failed the same way.

    Args:
        restart: this attempt's restart number (default: from torchrun's environment). The attempts compared are
            ``restart - 1`` and ``restart - 2``: the same iteration and message digest on one rank is "the same
            failure twice in a row".

    Raises:
        UserError: one line naming the iteration and the error, saying that the run is not resumed again.
    """
    restart = torchrun_restart_count() if restart is None else restart
    if restart is None or restart < 2:
        return
    folder = os.path.join(experiments_root, FAILURES_DIR)
    if not os.path.isdir(folder):
        return
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".json"):
            continue
        by_restart = {r.get("restart"): r for r in _read_records(os.path.join(folder, name))}
        last, before = by_restart.get(restart - 1), by_restart.get(restart - 2)
        if last and last.get("stopped"):
            message = str(last["stopped"])
            raise RepeatedFailureError(message.replace(f"restart {restart - 1}:", f"restart {restart}:", 1))
        if last and before and not before.get("stopped") and (last.get("iteration"), last.get("digest")) == (
                before.get("iteration"), before.get("digest")):
            where = f"iteration {last['iteration']}" if last.get("iteration") is not None else "start-up"
            raise RepeatedFailureError(
                f"torchrun restart {restart}: the last two attempts failed the same way at {where} ({name[:-5]}: "
                f"{last.get('error')}); a restart would fail again, so it does not resume: fix the cause, then run "
                "again with --auto_resume")
