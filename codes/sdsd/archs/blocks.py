"""Building blocks shared by the SDSD network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.1), the activation used throughout SDSD-Net."""
    return F.leaky_relu(x, 0.1, inplace=False)


def lrelu_(x: torch.Tensor) -> torch.Tensor:
    """In-place LeakyReLU(0.1) for freshly computed tensors nothing else holds (saves a full-size copy).

    Autograd allows it with a positive slope: the backward pass reads the sign from the result.
    """
    return F.leaky_relu_(x, 0.1)


def add_pair(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``a + ref`` (a new tensor) where ``ref`` may hold one item per group of ``a.shape[0] // ref.shape[0]`` items.

    A smaller ``ref`` is broadcast over its group without being repeated; the output keeps ``a``'s memory format.
    """
    if ref.shape[0] == a.shape[0]:
        return a + ref
    b = ref.shape[0]
    return (a.reshape(b, a.shape[0] // b, *a.shape[1:]) + ref.unsqueeze(1)).flatten(0, 1)


def conv_part(conv: nn.Conv2d, x: torch.Tensor, part: int, parts: int = 2, bias: bool = True) -> torch.Tensor:
    """``conv`` applied to ``x`` as the ``part``-th of ``parts`` equal groups of its input channels.

    The weight is a slice (a view) of ``conv.weight``, so gradients reach the same parameter, and the call goes
    through the module's own convolution (:class:`sdsd.archs.fastconv.WinogradConv2d` included). Summing the parts
    of a concatenated input, with the bias in one of them, gives ``conv(cat(parts))`` up to float rounding.
    """
    width = conv.in_channels // parts
    weight = conv.weight[:, part * width:(part + 1) * width]
    return conv._conv_forward(x, weight, conv.bias if bias else None)


def is_channels_last(x: torch.Tensor) -> bool:
    """True when a 4-D tensor is laid out channels_last (and is not also plain contiguous)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


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
        return self.conv2(F.relu_(self.conv1(x))).add_(x)


def make_blocks(n: int, nf: int) -> nn.Sequential:
    """``n`` residual blocks in a Sequential (keys ``<i>.conv1`` / ``<i>.conv2``)."""
    return nn.Sequential(*[ResidualBlockNoBN(nf) for _ in range(n)])
