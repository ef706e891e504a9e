#!/usr/bin/env python
"""Train SDSD-Net from an option file.

    python train.py -opt options/train/train_in_sdsd.yml [--set train.niter=1000 ...] [--auto_resume]
    torchrun --nproc_per_node 2 train.py -opt options/train/train_in_sdsd.yml
    python -m torch.distributed.launch --nproc_per_node 1 --master_port 4320 train.py \
        -opt options/train/train_in_sdsd.yml --launcher pytorch          (the original command)

Outputs go to <root>/experiments/<name>/ (models/, training_state/, val_images/, train_<time>.log) and
<root>/tb_logger/<name>/. The steps below are functions of sdsd.training, each usable on its own.
"""

import os
import sys


def _make_importable() -> None:
    """Run from a checkout without installing: put <repo>/codes (package sdsd) and <repo> (package dcn) on the path."""
    try:
        import sdsd  # noqa: F401
    except ImportError:
        repo = os.path.dirname(os.path.abspath(__file__))
        sys.path[:0] = [os.path.join(repo, "codes"), repo]


_make_importable()

from sdsd import options  # noqa: E402
from sdsd.errors import cli_main  # noqa: E402
from sdsd.training import parse_args, restarted_by_torchrun, train  # noqa: E402
from sdsd.utils.dist import cleanup, init_distributed  # noqa: E402


@cli_main
def main(argv=None):
    args = parse_args(argv)  # -opt, --set, --auto_resume, legacy --launcher/--local_rank
    opt = options.load(args.opt, args.set, is_train=True)  # YAML + overrides, every key validated
    dist_info = init_distributed(opt["gpu_ids"])  # torchrun environment -> rank, world size, device
    try:
        train(opt,  # checks, experiment folder, data, network, resume, loop, checkpoints
              auto_resume=args.auto_resume or restarted_by_torchrun(), argv=sys.argv, dist_info=dist_info)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
