"""Building blocks shared by the SDSD network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcn.ops import exporting


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.1), the activation used throughout SDSD-Net."""
    return F.leaky_relu(x, 0.1, inplace=False)


def lrelu_(x: torch.Tensor) -> torch.Tensor:
    """In-place LeakyReLU(0.1) for freshly computed tensors nothing else holds (saves a full-size copy).

    Autograd allows it with a positive slope: the backward pass reads the sign from the result.
    """
    return F.leaky_relu_(x, 0.1)


def cat_pair(a: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``cat([a, ref], 1)`` where ``ref`` may hold one item per group of ``a.shape[0] // ref.shape[0]`` items.

    A smaller ``ref`` is broadcast while it is written into the output, so the repeated reference features are
    never materialised on their own; the output keeps ``a``'s memory format.
    """
    if ref.shape[0] == a.shape[0]:
        return torch.cat([a, ref], 1)
    m, c = a.shape[:2]
    b = ref.shape[0]
    if exporting():
        # Graph capture for another runtime: an expand + reshape, which every runtime takes (OpenVINO refuses
        # ``aten::unflatten`` on a slice being written to); same values.
        rep = ref.unsqueeze(1).expand(b, m // b, *ref.shape[1:]).reshape(m, *ref.shape[1:])
        return torch.cat([a, rep], 1)
    fmt = torch.channels_last if is_channels_last(a) else torch.contiguous_format
    out = torch.empty((m, c + ref.shape[1], *a.shape[2:]), dtype=torch.result_type(a, ref), device=a.device,
                      memory_format=fmt)
    out[:, :c] = a
    out[:, c:].unflatten(0, (b, m // b)).copy_(ref.unsqueeze(1))
    return out


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
