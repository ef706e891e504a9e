"""Write the training-statistics sidecar of a checkpoint from the option file it was trained with.

``sdsd.enhance --exposure auto`` (and ``protocol.exposure: auto``) reads the brightness a model was trained on from
the small JSON sidecar beside its weights, ``<model>.json`` (:mod:`sdsd.exposure`). Training writes one beside every
checkpoint. This tool writes it for a checkpoint that has none (trained elsewhere or before sidecars existed) and
rewrites a version 1 sidecar (raw percentiles only, which ``--exposure auto`` uses with a warning), by measuring what
training measures: the same seeded sample of windows of the option file's training set (``datasets.train``). The
seed is the one the old sidecar recorded (the seed training ran with, also when ``train.manual_seed`` was unset and
training drew one), else ``train.manual_seed``, else 0. A current sidecar is left alone unless ``--force``: the
tool cannot tell whether the option file is the one the checkpoint was trained with.

Nothing but a sidecar is ever replaced: each checkpoint must load as one (:func:`sdsd.archs.read_state_dict`; an option
or JSON file given in its place is refused), and a ``<model>.json`` beside it that is not a sidecar, e.g. a user's own
config, is refused and kept (a sidecar is a JSON object with ``"format": "sdsd-training-inputs"``). All of this is
checked before anything is measured or written.

    python -m sdsd.tools.sidecar -opt options/train/train_demo.yml experiments/demo/models/latest_G.pth
"""

from __future__ import annotations

import argparse
import os

from sdsd.errors import UserError, cli_main

#: Extensions of option and statistics files, which are never checkpoints (a ``.json`` one would be its own sidecar).
NOT_CHECKPOINTS = (".json", ".yml", ".yaml")
#: Sidecars are a few KiB; a bigger ``.json`` is read no further than this to tell it is not one.
_MAX_SIDECAR_BYTES = 1 << 20


def check_checkpoint(path: str) -> None:
    """Refuse ``path`` unless it is a checkpoint the project's loader reads (a weights file, not an option file).

    Raises:
        UserError: it is missing, not a regular file, has a :data:`NOT_CHECKPOINTS` extension, or does not load with
            :func:`sdsd.archs.read_state_dict`.
    """
    from sdsd.archs import read_state_dict

    if not os.path.exists(path):
        raise UserError(f"{path}: no such checkpoint")
    ext = os.path.splitext(path)[1].lower()
    if ext in NOT_CHECKPOINTS:
        raise UserError(f"{path} is not a checkpoint (a {ext} file); give the weights file (.pth) the sidecar is for")
    if not os.path.isfile(path):
        raise UserError(f"{path} is not a file; give the weights file (.pth) the sidecar is for")
    try:
        read_state_dict(path)
    except UserError as exc:  # it names the file and what is wrong with it
        raise UserError(f"{exc}; give the weights file (.pth) the sidecar is for") from None


def check_replaceable(path: str) -> None:
    """Refuse when the sidecar place of checkpoint ``path`` holds something that is not a sidecar.

    Nothing there, or a JSON object whose ``format`` is a sidecar's (valid or not, any version), may be replaced.

    Raises:
        UserError: it is a folder or other non-regular file, or a file that is not a training-statistics sidecar
            (not JSON, not an object, or another ``format``).
    """
    import json
    import stat

    from sdsd.exposure import SIDECAR_FORMAT, sidecar_path

    target = sidecar_path(path)
    what = f"{target} is not a training-statistics sidecar"
    todo = "it is kept; move or rename it, then run this again"
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot look at {target} ({reason}); check its permissions") from None
    if not stat.S_ISREG(mode):  # never opened: a FIFO would block the read
        raise UserError(f"{what} (not a regular file); {todo}")
    try:
        with open(target, "rb") as f:
            data = json.loads(f.read(_MAX_SIDECAR_BYTES + 1)[:_MAX_SIDECAR_BYTES])
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise UserError(f"{what} (no \"format\": \"{SIDECAR_FORMAT}\"); {todo}")


def write_sidecars(opt_path: str, checkpoints: list[str], overrides: list[str] | None = None,
                   force: bool = False) -> list[tuple[str, str]]:
    """Measure the training inputs of ``opt_path`` once and write each checkpoint's sidecar.

    Returns:
        ``(sidecar path, what happened)`` per checkpoint: ``written``, ``rewritten (was not valid)`` (a sidecar whose
        values are unusable), ``rewritten (was version 1)``, ``overwritten`` (``force``) or
        ``kept (current; --force rewrites it)``.

    Raises:
        UserError: a checkpoint that is not one (:func:`check_checkpoint`), or a file in a sidecar's place that is not
            a sidecar (:func:`check_replaceable`); raised before anything is measured or written.
    """
    from sdsd import options
    from sdsd.data import build_dataset
    from sdsd.exposure import is_legacy, read_sidecar, recorded_seed, sidecar_path, training_statistics, write_sidecar

    for path in checkpoints:
        check_checkpoint(path)
        check_replaceable(path)
    opt = options.load(opt_path, overrides, is_train=True)
    default_seed = int(opt["train"].get("manual_seed") or 0)
    todo, done = [], []
    for path in checkpoints:
        exists = os.path.exists(sidecar_path(path))
        try:
            old = read_sidecar(path)
        except UserError:  # a sidecar (check_replaceable said so) with unusable values: replaced
            old = None
        seed = recorded_seed(old, default_seed)
        if old is None:
            todo.append((path, "rewritten (was not valid)" if exists else "written", seed))
        elif is_legacy(old):
            todo.append((path, "rewritten (was version 1)", seed))
        elif force:
            todo.append((path, "overwritten", seed))
        else:
            done.append((sidecar_path(path), "kept (current; --force rewrites it)"))
    if todo:
        dataset = build_dataset(opt["datasets"]["train"], "train")
        measured: dict[int, dict] = {}  # one measurement per seed (checkpoints of one run share theirs)
        for path, what, seed in todo:
            if seed not in measured:
                measured[seed] = training_statistics(dataset, seed)
            done.append((write_sidecar(measured[seed], path), what))
    return done


@cli_main
def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(prog="python -m sdsd.tools.sidecar", description=__doc__.split("\n")[0])
    parser.add_argument("-opt", "--opt", required=True, help="the training option file the checkpoints come from")
    parser.add_argument("checkpoints", nargs="+", metavar="CKPT", help="weights files (.pth)")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="option overrides, as given to train.py (e.g. a moved datasets.train.dataroot_LQ)")
    parser.add_argument("--force", action="store_true", help="rewrite current (version 2) sidecars too")
    args = parser.parse_args(argv)
    done = write_sidecars(args.opt, args.checkpoints, args.set, args.force)
    for path, what in done:
        print(f"{path}: {what}")
    return done


if __name__ == "__main__":
    main()
