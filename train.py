#!/usr/bin/env python
"""Train SDSD-Net from an option file.

    python train.py -opt options/train/train_in_sdsd.yml [--set train.niter=1000 ...] [--auto_resume]
    torchrun --nproc_per_node 2 train.py -opt options/train/train_in_sdsd.yml
    python -m torch.distributed.launch --nproc_per_node 1 --master_port 4320 train.py \
        -opt options/train/train_in_sdsd.yml --launcher pytorch          (the original command)

Outputs go to <root>/experiments/<name>/ (models/, training_state/, val_images/, train_<time>.log) and
<root>/tb_logger/<name>/. The steps below are functions of sdsd.training, each usable on its own.
"""

import sys

import _sdsd_checkout  # noqa: F401 - first: puts this checkout's codes/ on sys.path (see _sdsd_checkout.py)
from sdsd import options
from sdsd.errors import cli_main
from sdsd.training.cli import parse_args, restarted_by_torchrun


@cli_main
def main(argv=None):
    args = parse_args(argv)  # -opt, --set, --auto_resume, legacy --launcher/--local_rank
    opt = options.load(args.opt, args.set, is_train=True)  # YAML + overrides, every key validated
    # PyTorch and the trainer load only now: --help and mistakes in the arguments or the options answer at once.
    from sdsd.training import train
    from sdsd.utils.dist import cleanup, init_distributed

    dist_info = init_distributed(opt["gpu_ids"])  # torchrun environment -> rank, world size, device
    try:
        train(opt,  # checks, experiment folder, data, network, resume, loop, checkpoints
              auto_resume=args.auto_resume or restarted_by_torchrun(), argv=sys.argv, dist_info=dist_info)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
