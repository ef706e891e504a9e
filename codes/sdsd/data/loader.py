"""DataLoaders for training and evaluation, single-process or under torchrun.

Training: the published ``batch_size`` is the GLOBAL batch; each of ``world_size`` processes loads
``batch_size // world_size`` samples per step (the options are validated first: :func:`sdsd.options.load` refuses
a batch size not divisible by the world size).
Samples are drawn by a :class:`~torch.utils.data.DistributedSampler` (also for one process, so the caller
always calls ``sampler.set_epoch(epoch)`` at the start of each epoch), shuffled when ``use_shuffle``,
incomplete batches are dropped, workers persist across epochs and host memory is pinned when training on
CUDA (``pin_memory`` option overrides). Augmentation randomness: the loader's generator is seeded with
``seed + rank`` so ranks differ, and every worker seeds ``random`` and NumPy from its torch seed.

Evaluation: batch 1, no shuffle, and :class:`ShardSampler` gives each rank a contiguous share of the
indices without padding, so every sample is seen by exactly one rank (no duplicates to remove when
gathering results; shares differ by at most one sample).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from sdsd.data.video_base import phase_role
from sdsd.errors import UserError


class ShardSampler(Sampler[int]):
    """Contiguous, non-padded split of ``range(length)`` over ``world_size`` ranks.

    Args:
        length: number of samples.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length = int(length)
        self.start = self.length * rank // world_size
        self.stop = self.length * (rank + 1) // world_size

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start

    def set_epoch(self, epoch: int) -> None:
        """No-op (evaluation order is fixed); present so callers can treat all samplers alike."""


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and NumPy in a DataLoader worker from the torch seed the loader gave it."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_dataloader(dataset, dataset_opt: dict, phase: str, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                     device_type: str = "cpu"):
    """Build the DataLoader (and its sampler) for one phase.

    Args:
        dataset: the dataset from :func:`sdsd.data.build_dataset`.
        dataset_opt: the same ``datasets.<phase>`` block (batch_size, n_workers, use_shuffle, pin_memory), validated
            by :func:`sdsd.options.load` (with the training rules for a training block).
        phase: the block name; names starting with ``train`` train, others evaluate.
        rank: this process's rank.
        world_size: number of processes.
        seed: base random seed (``manual_seed``).
        device_type: ``cuda`` enables pinned memory unless ``pin_memory`` says otherwise.

    Returns:
        ``(loader, sampler)``; call ``sampler.set_epoch(epoch)`` before each training epoch.

    Raises:
        UserError: fewer samples than one global batch.
    """
    from sdsd.options import with_defaults

    dataset_opt = with_defaults("datasets", dataset_opt)
    where = f"datasets.{phase}"
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    pin = dataset_opt["pin_memory"]
    pin = (device_type == "cuda") if pin is None else bool(pin)

    if phase_role(phase) != "train":
        sampler = ShardSampler(len(dataset), rank, world_size)
        workers = dataset_opt["n_workers"]
        loader = DataLoader(dataset, batch_size=1, sampler=sampler, num_workers=workers, pin_memory=pin,
                            worker_init_fn=seed_worker if workers else None)
        return loader, sampler

    batch = dataset_opt["batch_size"]
    per_process = batch // world_size
    workers = dataset_opt["n_workers"]
    if len(dataset) < batch:
        raise UserError(
            f"{where}: the dataset has {len(dataset)} samples, fewer than one batch of {batch}; "
            f"lower {where}.batch_size or add scenes"
        )
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                 shuffle=bool(dataset_opt["use_shuffle"]), seed=seed, drop_last=True)
    generator = torch.Generator()
    generator.manual_seed(seed + rank)
    loader = DataLoader(
        dataset,
        batch_size=per_process,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=pin,
        persistent_workers=workers > 0,
        worker_init_fn=seed_worker if workers else None,
        generator=generator,
    )
    return loader, sampler
