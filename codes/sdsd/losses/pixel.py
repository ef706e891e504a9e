"""Pixel criteria with SUMMED reductions, as the reference trains with (docs/protocol.md#sums-not-means).

A YAML file names them by ``train.pixel_criterion`` (``cb`` or ``l1``) through :data:`sdsd.registry.LOSS_REGISTRY`.
"""

from __future__ import annotations

import torch
from torch import nn

from sdsd.errors import UserError
from sdsd.registry import LOSS_REGISTRY


@LOSS_REGISTRY.register("cb", aliases=("charbonnier",))
class CharbonnierLoss(nn.Module):
    """``sum(sqrt((a - b)^2 + eps))`` over every element (Charbonnier penalty, summed).

    Args:
        eps: added under the square root; the reference uses 1e-6.
    """

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred - target
        return torch.sqrt(diff * diff + self.eps).sum()


@LOSS_REGISTRY.register("l1")
class L1SumLoss(nn.Module):
    """``sum(|a - b|)`` over every element."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs().sum()


def build_pixel_loss(name: str) -> nn.Module:
    """Return the pixel criterion registered as ``name`` (``cb`` or ``l1``).

    Raises:
        UserError: the name is not registered; the message names ``train.pixel_criterion``.
    """
    try:
        cls = LOSS_REGISTRY.get(name)
    except UserError as exc:
        raise UserError(f"train.pixel_criterion: {exc}") from None
    return cls()
