"""Precision modes: the one list of names (``train.amp``, ``sdsd.enhance --precision``, the runtimes) and what each
means.

``fp32`` computes in float32 (``none``, the name older option files use for ``train.amp``, means the same);
``bf16`` and ``fp16`` run the network under :func:`torch.autocast` with that dtype
(training with ``fp16`` also scales the loss with a GradScaler). torch is imported when a mode is used, so the
option schema can name the modes without loading it.
"""

from __future__ import annotations

import contextlib

__all__ = ["ALIASES", "MODES", "dtype", "autocast"]

#: Mode names, float32 first.
MODES = ("fp32", "bf16", "fp16")
#: Older spellings, accepted where option files give a mode: ``{old: mode}``.
ALIASES = {"none": "fp32"}


def dtype(mode: str | None):
    """The autocast dtype of ``mode`` (``None`` for ``fp32``, ``none`` or ``None``).

    Raises:
        ValueError: an unknown mode (options are validated before they get here).
    """
    import torch

    dtypes = {None: None, "none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if mode not in dtypes:
        raise ValueError(f"unknown precision mode {mode!r}; use one of {', '.join(MODES)}")
    return dtypes[mode]


def autocast(device, mode: str | None):
    """The context manager that runs code in ``mode`` on ``device`` (a no-op context for float32)."""
    import torch

    amp_dtype = dtype(mode)
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=amp_dtype)
