"""Datasets, frame reading and data loaders.

Importing this package registers the ``SDSD`` and ``SMID`` datasets (and the published ``mode`` names
``video_samesize``, ``video_samesize1``, ``video_samesize_smid``, ``video_samesize_smid1``) in
:data:`sdsd.registry.DATASET_REGISTRY`.

Public API:
    build_dataset(dataset_opt, phase) -> Dataset
    build_dataloader(dataset, dataset_opt, phase, *, rank, world_size, seed, device_type) -> (loader, sampler)
    read_frame(path, train_size=None) -> H x W x 3 float32 RGB
    index_generation(center, n, N, padding) -> list[int]
"""

from __future__ import annotations

from sdsd.data import sdsd_dataset, smid_dataset  # noqa: F401  (registers the datasets)
from sdsd.data.frames import read_frame, to_tensor
from sdsd.data.loader import build_dataloader
from sdsd.data.windows import index_generation
from sdsd.registry import DATASET_REGISTRY

__all__ = ["build_dataset", "build_dataloader", "read_frame", "to_tensor", "index_generation"]


def build_dataset(dataset_opt: dict, phase: str):
    """Build the dataset named by ``dataset_opt['type']`` (or the published ``mode``) for ``phase``.

    Args:
        dataset_opt: one ``datasets.<phase>`` block of the options, validated by :func:`sdsd.options.load` (which
            also requires ``type`` or ``mode`` and checks every value); absent keys get their schema defaults.
        phase: the block's name (``train``, ``val``, ``test``...); names starting with ``train`` train,
            everything else evaluates.

    Returns:
        The dataset instance.

    Raises:
        UserError: the data is unusable (missing folders, scenes or frames), naming the path and the option.
    """
    cls = DATASET_REGISTRY.get(dataset_opt.get("type") or dataset_opt.get("mode"))
    opt = dict(dataset_opt)
    opt["phase"] = phase
    return cls(opt)
