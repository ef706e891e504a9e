"""Write the training-statistics sidecar of a checkpoint from the option file it was trained with.

``sdsd.enhance --exposure auto`` (and ``protocol.exposure: auto``) reads the brightness a model was trained on from
the small JSON sidecar beside its weights, ``<model>.json`` (:mod:`sdsd.exposure`). Training writes one beside every
checkpoint. This tool writes it for a checkpoint that has none (trained elsewhere or before sidecars existed) and
rewrites a version 1 sidecar (raw percentiles only, which ``--exposure auto`` uses with a warning), by measuring what
training measures: the same seeded sample of windows of the option file's training set (``datasets.train``). The
seed is the one the old sidecar recorded (the seed training ran with, also when ``train.manual_seed`` was unset and
training drew one), else ``train.manual_seed``, else 0. A current sidecar is left alone unless ``--force``: the
tool cannot tell whether the option file is the one the checkpoint was trained with.

    python -m sdsd.tools.sidecar -opt options/train/train_demo.yml experiments/demo/models/latest_G.pth
"""

from __future__ import annotations

import argparse
import os

from sdsd.errors import UserError, cli_main


def write_sidecars(opt_path: str, checkpoints: list[str], overrides: list[str] | None = None,
                   force: bool = False) -> list[tuple[str, str]]:
    """Measure the training inputs of ``opt_path`` once and write each checkpoint's sidecar.

    Returns:
        ``(sidecar path, what happened)`` per checkpoint: ``written``, ``rewritten (was version 1)``,
        ``overwritten`` (``force``) or ``kept (current; --force rewrites it)``.
    """
    from sdsd import options
    from sdsd.data import build_dataset
    from sdsd.exposure import is_legacy, read_sidecar, recorded_seed, sidecar_path, training_statistics, write_sidecar

    for path in checkpoints:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such checkpoint")
    opt = options.load(opt_path, overrides, is_train=True)
    default_seed = int(opt["train"].get("manual_seed") or 0)
    todo, done = [], []
    for path in checkpoints:
        try:
            old = read_sidecar(path)
        except UserError:  # unreadable: replaced, as a missing one is
            old = None
        seed = recorded_seed(old, default_seed)
        if old is None:
            todo.append((path, "written", seed))
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
