"""Tensor images to 8 bits: the published rounding (clamp to [0, 1], x255, round half to even, in float32)."""

from __future__ import annotations

import torch

__all__ = ["to_uint8"]


def to_uint8(tensor: torch.Tensor) -> torch.Tensor:
    """A float image tensor of any shape in [0, 1] as a uint8 tensor of the same shape, device and layout.

    The tensor is detached, converted to float32, clamped to [0, 1], multiplied by 255 and rounded half to even:
    the conversion behind the published scores (:func:`sdsd.metrics.tensor_to_uint8_bgr` gives the same values
    as an ``H x W x 3`` BGR array).
    """
    return tensor.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
