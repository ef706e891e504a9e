"""Logging for a training run: a text log file, TensorBoard events and a progress bar, all on rank 0 only."""

from __future__ import annotations

import logging
import os
import sys
import time

import yaml

logger = logging.getLogger("sdsd")

_FORMAT = "%(asctime)s %(levelname)s: %(message)s"


def setup_text_log(experiments_root: str, rank: int, timestamp: str, level: int = logging.INFO) -> str | None:
    """Log the ``sdsd`` logger to ``<experiments_root>/train_<timestamp>.log`` and the console (rank 0).

    Other ranks only log warnings and errors to the console, prefixed with their rank. Returns the log path.
    """
    log = logging.getLogger("sdsd")
    log.setLevel(level)
    log.propagate = False
    for handler in list(log.handlers):
        if getattr(handler, "_sdsd_train", False):
            log.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler(sys.stderr)
    console._sdsd_train = True
    # Long records (the resolved options) go to the log file only, so the console stays readable.
    console.addFilter(lambda record: not getattr(record, "file_only", False))
    if rank != 0:
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter(f"[rank {rank}] " + _FORMAT, "%H:%M:%S"))
        log.addHandler(console)
        return None
    console.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
    log.addHandler(console)
    os.makedirs(experiments_root, exist_ok=True)
    path = os.path.join(experiments_root, f"train_{timestamp}.log")
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler._sdsd_train = True
    file_handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    log.addHandler(file_handler)
    return path


def close_text_log() -> None:
    """Detach and close the handlers :func:`setup_text_log` added (so in-process callers can train again)."""
    log = logging.getLogger("sdsd")
    for handler in list(log.handlers):
        if getattr(handler, "_sdsd_train", False):
            log.removeHandler(handler)
            handler.close()


def log_run_header(opt: dict, argv: list[str] | None, world_size: int, device, per_process_batch: int) -> None:
    """Write the command line, the world size and the resolved options (as YAML) to the log."""
    cmd = " ".join(argv) if argv is not None else "(called in-process)"
    logger.info("command: %s", cmd)
    logger.info("world size %d, device %s, batch %d per process (global %d)", world_size, device,
                per_process_batch, per_process_batch * world_size)
    logger.info("resolved options:\n%s", yaml.safe_dump(opt, sort_keys=False, default_flow_style=None).rstrip(),
                extra={"file_only": True})


def timestamp() -> str:
    return time.strftime("%y%m%d-%H%M%S")


class TensorBoardLogger:
    """A thin wrapper around ``SummaryWriter`` that is a no-op when disabled (other ranks, ``use_tb_logger: false``).

    Args:
        log_dir: ``<root>/tb_logger/<name>``.
        enabled: create the writer at all.
    """

    def __init__(self, log_dir: str, enabled: bool):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(log_dir, exist_ok=True)
            self.writer = SummaryWriter(log_dir=log_dir)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, image_hwc_rgb_uint8, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image_hwc_rgb_uint8, step, dataformats="HWC")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Progress:
    """A tqdm bar over iterations on rank 0 (iterations/s and ETA); silent elsewhere or when disabled."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="it", dynamic_ncols=True, mininterval=1.0,
                            desc="train", file=sys.stderr)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def set_loss(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
