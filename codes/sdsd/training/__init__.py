"""Training: the loop and its parts (objective steps, schedules, validation, checkpoints, logging).

Public API:
    train(opt, *, auto_resume=False, argv=None, progress=None, dist_info=None) -> dict
    parse_args(argv) / restarted_by_torchrun()   the train.py command line
    train_step, run_validation, save_checkpoint, prepare_experiment, build_training, build_data, resume
"""

from sdsd.training.cli import parse_args, restarted_by_torchrun
from sdsd.training.trainer import (
    NonFiniteLossError,
    TrainState,
    build_data,
    build_training,
    prepare_experiment,
    resume,
    run_validation,
    save_checkpoint,
    train,
    train_step,
)

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
