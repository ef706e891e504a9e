"""``ModulatedDeformConvPack``: a DCNv2 layer that predicts its offsets and mask with a plain convolution."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from dcn.ops import deform_conv2d

logger = logging.getLogger("dcn")

#: The mean-|offset| sanity check needs a device-to-host copy, so it runs on the first call and then once every
#: this many calls instead of on every forward.
OFFSET_CHECK_INTERVAL = 100
#: Mean absolute offset above which a warning is logged (offsets this large usually mean training diverged).
OFFSET_WARNING_THRESHOLD = 100.0


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class ModulatedDeformConvPack(nn.Module):
    """Modulated deformable convolution whose offsets and mask come from ``conv_offset_mask``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or pair.
        stride: int or pair, for both the deformable conv and ``conv_offset_mask``.
        padding: int or pair, likewise.
        dilation: int or pair (deformable conv only).
        deformable_groups: number of offset/mask groups.
        bias: whether the deformable conv has a bias.
        extra_offset_mask: when True the module is called as ``m([x, feat])`` and offsets are predicted from
            ``feat``; otherwise ``m(x)`` predicts them from ``x``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        deformable_groups: int = 1,
        bias: bool = True,
        extra_offset_mask: bool = False,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.deformable_groups = deformable_groups
        self.extra_offset_mask = extra_offset_mask
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        kh, kw = self.kernel_size
        self.conv_offset_mask = nn.Conv2d(
            in_channels, deformable_groups * 3 * kh * kw, self.kernel_size, stride=self.stride, padding=self.padding
        )
        self._calls = 0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) weight, zero bias, zero offset/mask predictor."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, inputs):
        """Applies the layer to ``x`` or, with ``extra_offset_mask``, to ``[x, feat]``."""
        if self.extra_offset_mask:
            x, feat = inputs
        else:
            x = feat = inputs
        o1, o2, m = torch.chunk(self.conv_offset_mask(feat), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        self._check_offset(offset)
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask=torch.sigmoid(m)
        )

    def _check_offset(self, offset: torch.Tensor) -> None:
        calls, self._calls = self._calls, self._calls + 1
        if calls % OFFSET_CHECK_INTERVAL:
            return
        mean = float(offset.detach().abs().mean())
        if mean > OFFSET_WARNING_THRESHOLD:
            logger.warning("deformable conv offset mean is %.1f (> %g): alignment is probably diverging", mean,
                           OFFSET_WARNING_THRESHOLD)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, deformable_groups={self.deformable_groups}, "
            f"extra_offset_mask={self.extra_offset_mask}"
        )
