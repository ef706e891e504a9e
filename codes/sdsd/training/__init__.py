"""Training: the loop and its parts (objective steps, schedules, validation, checkpoints, logging).

Public API:
    train(opt, *, auto_resume=False, argv=None, progress=None, dist_info=None) -> dict
    parse_args(argv) / restarted_by_torchrun()   the train.py command line
    train_step, run_validation, save_checkpoint, prepare_experiment, build_training, build_data, resume

The names are imported on first use: ``train.py`` parses its command line (:mod:`sdsd.training.cli`) without
loading PyTorch and the trainer, so ``--help`` and argument errors answer at once.
"""

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "build_data",
    "build_training",
    "parse_args",
    "prepare_experiment",
    "restarted_by_torchrun",
    "resume",
    "run_validation",
    "save_checkpoint",
    "train",
    "train_step",
]


def __getattr__(name):
    if name in ("parse_args", "restarted_by_torchrun"):
        from sdsd.training import cli

        return getattr(cli, name)
    if name in __all__:
        from sdsd.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'sdsd.training' has no attribute {name!r}")
