"""Checkpoints in the published layout, written atomically and readable with ``torch.load(weights_only=True)``.

``<experiments_root>/models/<iter>_G.pth`` holds a plain network ``state_dict`` (published keys, no ``module.``);
``<experiments_root>/training_state/<iter>.state`` holds the iteration, epoch, optimiser and scheduler state, the
AMP scaler state and every rank's RNG states (as tensors and plain Python values). The weights file of an
iteration is written before its state file, so a state file on disk always has its weights beside it.

:func:`write_checkpoint` writes both files (rank 0 only); the training loop's
:func:`sdsd.training.trainer.save_checkpoint` is what every rank calls: it gathers the RNG states, then rank 0
calls :func:`write_checkpoint`.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
import time

import numpy as np
import torch

from sdsd.archs import read_state_dict, unwrap
from sdsd.errors import UserError, exception_reason
from sdsd.exposure import sidecar_path, write_sidecar
from sdsd.utils.io import atomic_torch_save

logger = logging.getLogger("sdsd")

STATE_VERSION = 1
_STATE_RE = re.compile(r"^(\d+)\.state$")
_MODEL_RE = re.compile(r"^(\d+)_G\.pth$")


def models_dir(experiments_root: str) -> str:
    return os.path.join(experiments_root, "models")


def states_dir(experiments_root: str) -> str:
    return os.path.join(experiments_root, "training_state")


# -- RNG states as tensors -----------------------------------------------------------------------------------------


def get_rng_state() -> dict:
    """This process's RNG states (torch, CUDA, numpy, Python) as tensors and plain values."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- saving ----------------------------------------------------------------------------------------------------------


def save_weights(net: torch.nn.Module, path: str) -> None:
    """Write the plain (unwrapped, CPU) ``state_dict`` of ``net`` to ``path`` atomically."""
    state = {k: v.detach().cpu() for k, v in unwrap(net).state_dict().items()}
    atomic_torch_save(state, path)


def write_checkpoint(experiments_root: str, iteration: int, epoch: int, net, optimizer, scheduler, scaler=None,
                    rng_states: list | None = None, network_opt: dict | None = None,
                    keep_last: int | None = None, input_stats: dict | None = None) -> str:
    """Write ``models/<iter>_G.pth`` then ``training_state/<iter>.state``; prune to ``keep_last``. Rank 0 only.

    Args:
        rng_states: one :func:`get_rng_state` dict per rank (gathered by the caller).
        network_opt: the ``network_G`` block, stored so that resuming with another network is named clearly.
        input_stats: statistics of the training inputs (:func:`sdsd.exposure.training_statistics`), written as
            the sidecar ``models/<iter>_G.json`` beside the weights (what ``sdsd.enhance --exposure auto`` reads).

    Returns:
        The path of the state file.
    """
    weights = os.path.join(models_dir(experiments_root), f"{iteration}_G.pth")
    save_weights(net, weights)
    if input_stats is not None:
        write_sidecar(input_stats, weights)
    state = {
        "version": STATE_VERSION,
        "iter": int(iteration),
        "epoch": int(epoch),
        "optimizers": [optimizer.state_dict()],
        "schedulers": [scheduler.state_dict()],
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_states or [get_rng_state()],
        "network_G": _plain(network_opt or {}),
        "time": time.time(),
    }
    path = os.path.join(states_dir(experiments_root), f"{iteration}.state")
    atomic_torch_save(state, path)
    if keep_last:
        prune_checkpoints(experiments_root, keep_last, current=int(iteration))
    return path


def _plain(obj):
    """Options as plain values (no tuples/custom classes) so the state stays weights_only-loadable."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _iterations(folder: str, pattern: re.Pattern) -> list[int]:
    if not os.path.isdir(folder):
        return []
    found = (pattern.match(name) for name in os.listdir(folder))
    return sorted(int(m.group(1)) for m in found if m)


def prune_checkpoints(experiments_root: str, keep_last: int, current: int | None = None) -> None:
    """Delete all but the newest ``keep_last`` numbered weights (with their sidecars) and states (``latest_G.pth``
    is never deleted).

    Args:
        current: the iteration just written. Only iterations up to it are candidates, so its own files are never
            deleted (they are the newest candidates) and files of later iterations, which a resume from an older
            state sets aside before training (:func:`set_aside_newer`), are never touched here.

    States go first: a kill in the middle leaves weights without a state (ignored), never a state without weights.
    """
    if keep_last <= 0:
        return
    for folder, pattern, fmt in ((states_dir(experiments_root), _STATE_RE, "{}.state"),
                                 (models_dir(experiments_root), _MODEL_RE, "{}_G.pth")):
        iters = [it for it in _iterations(folder, pattern) if current is None or it <= current]
        for it in iters[:-keep_last]:
            if it == current:
                continue
            path = os.path.join(folder, fmt.format(it))
            for victim in (path, sidecar_path(path)) if path.endswith(".pth") else (path,):
                try:
                    os.remove(victim)
                except FileNotFoundError:
                    pass


def set_aside_newer(experiments_root: str, iteration: int) -> str | None:
    """Move the weights and states of iterations after ``iteration`` to ``<experiments_root>/set_aside_<time>/``.

    Resuming from an older state starts a new line of training from it. The newer files of the abandoned line are
    kept (not deleted) but moved out of ``models/`` and ``training_state/``, so that pruning cannot confuse them with
    the new ones and a later ``--auto_resume`` does not jump back to them. States move first, so a kill in the
    middle never leaves a state whose weights have gone.

    Returns:
        The folder they were moved to, or ``None`` when there was nothing newer.
    """
    moves = []
    for folder, pattern, sub in ((states_dir(experiments_root), _STATE_RE, "training_state"),
                                 (models_dir(experiments_root), _MODEL_RE, "models")):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            match = pattern.match(name)
            if match and int(match.group(1)) > iteration:
                moves.append((os.path.join(folder, name), sub, name))
                side = sidecar_path(os.path.join(folder, name))
                if sub == "models" and os.path.exists(side):  # the training statistics go with their weights
                    moves.append((side, sub, os.path.basename(side)))
    if not moves:
        return None
    target = os.path.join(experiments_root, f"set_aside_{time.strftime('%y%m%d_%H%M%S')}")
    suffix = 1
    while os.path.exists(target):
        suffix += 1
        target = os.path.join(experiments_root, f"set_aside_{time.strftime('%y%m%d_%H%M%S')}_{suffix}")
    for src, sub, name in moves:
        os.makedirs(os.path.join(target, sub), exist_ok=True)
        os.replace(src, os.path.join(target, sub, name))
    files = sum(not name.endswith(".json") for _, _, name in moves)  # the sidecars go along uncounted
    logger.warning("resuming from iteration %d: moved the %d newer weights/state files to %s (kept, not deleted)",
                   iteration, files, target)
    return target


# -- resuming ----------------------------------------------------------------------------------------------------------


def state_iterations(experiments_root: str) -> list[int]:
    """The iterations of the ``training_state/<iter>.state`` files present (complete or not), ascending."""
    return _iterations(states_dir(experiments_root), _STATE_RE)


def check_pair(experiments_root: str, iteration: int) -> str | None:
    """What keeps iteration ``iteration`` of an experiment from being resumed, or ``None`` when it is resumable.

    Resumable means: ``training_state/<iter>.state`` loads with ``weights_only=True``, is a training state of that
    iteration, and ``models/<iter>_G.pth`` exists and loads as a network ``state_dict``.
    """
    path = os.path.join(states_dir(experiments_root), f"{iteration}.state")
    weights = os.path.join(models_dir(experiments_root), f"{iteration}_G.pth")
    try:
        state = read_training_state(path)
    except UserError as exc:
        return str(exc)
    if int(state["iter"]) != iteration:
        return f"{path} holds iteration {state['iter']}, not {iteration}"
    if not os.path.isfile(weights):
        return f"its weights {weights} are missing"
    try:
        read_state_dict(weights)
    except UserError as exc:
        return f"its weights are unusable: {exc}"
    return None


def find_latest_state(experiments_root: str, problems: list[str] | None = None) -> str | None:
    """The newest ``training_state/<iter>.state`` whose state and weights both load; ``None`` if there is none.

    A damaged or incomplete pair (the state or its weights missing, truncated or corrupt) is skipped with a warning,
    and the next older pair is tried. ``problems``, when given, receives one line per skipped pair (newest first).
    """
    for it in reversed(state_iterations(experiments_root)):
        problem = check_pair(experiments_root, it)
        if problem is None:
            return os.path.join(states_dir(experiments_root), f"{it}.state")
        logger.warning("cannot resume from iteration %d: %s", it, problem)
        if problems is not None:
            problems.append(f"iteration {it}: {problem}")
    return None


def read_training_state(path: str) -> dict:
    """Load a ``.state`` file with ``weights_only=True``; a clear :class:`UserError` when it is not one."""
    if not os.path.isfile(path):
        raise UserError(f"path.resume_state: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report any failure as "not a training state"
        raise UserError(f"path.resume_state: {path} is not a readable training state "
                        f"({exception_reason(exc)})") from None
    if not isinstance(state, dict) or "iter" not in state or "optimizers" not in state:
        raise UserError(f"path.resume_state: {path} is not a training state (no 'iter'/'optimizers' entries)")
    return state


def weights_for_state(state_path: str, iteration: int) -> str:
    """``<experiments_root>/models/<iter>_G.pth`` next to ``<experiments_root>/training_state/<iter>.state``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(state_path)))
    return os.path.join(root, "models", f"{iteration}_G.pth")


def check_same_network(state: dict, network_opt: dict, state_path: str) -> None:
    """Raise a one-line error naming the first ``network_G`` key that differs from the one the state was saved with."""
    saved = state.get("network_G") or {}
    if not saved:
        return
    current = _plain(network_opt)
    ignore = {"predeblur", "HR_in", "which_model_G", "type"}
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        if saved.get(key) != current.get(key):
            raise UserError(f"path.resume_state: {state_path} was saved for network_G.{key}={saved.get(key)!r} but "
                            f"the options say network_G.{key}={current.get(key)!r}; use the same network_G block")


def all_files_loadable(folder: str) -> list[str]:
    """Return the ``.pth``/``.state`` files under ``folder`` that do NOT load with ``weights_only=True``."""
    bad = []
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if path.endswith((".pth", ".state")):
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001
                bad.append(path)
    return bad
