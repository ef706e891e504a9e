"""Command line of ``train.py``: plain ``python``, ``torchrun`` and the legacy ``torch.distributed.launch``."""

from __future__ import annotations

import argparse
import os


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
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
