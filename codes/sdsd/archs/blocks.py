"""Building blocks shared by the SDSD network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.1), the activation used throughout SDSD-Net."""
    return F.leaky_relu(x, 0.1, inplace=False)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling with ``align_corners=False`` (the published network's ``up``)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ResidualBlockNoBN(nn.Module):
    """``x + conv2(relu(conv1(x)))``; convs initialised with kaiming-normal (fan_in) x 0.1 and zero bias."""

    def __init__(self, nf: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def make_blocks(n: int, nf: int) -> nn.Sequential:
    """``n`` residual blocks in a Sequential (keys ``<i>.conv1`` / ``<i>.conv2``)."""
    return nn.Sequential(*[ResidualBlockNoBN(nf) for _ in range(n)])
