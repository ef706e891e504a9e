"""``ModulatedDeformConvPack``: a DCNv2 layer that predicts its offsets and mask with a plain convolution.

Each layer also keeps, on the device, the largest mean absolute offset of its forward passes since the last
report; :func:`report_offsets` (called by the training loop when it logs) reads them in one transfer, warns about
layers above :data:`OFFSET_WARNING_THRESHOLD`, and starts a new window. Offsets that large usually mean training
diverged; checking them inside ``forward`` would need a device-to-host copy (a GPU sync) and a graph break under
``torch.compile``, so the forward pass only updates a tensor.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from dcn.ops import deform_conv2d, exporting, torchvision_deform_conv2d

logger = logging.getLogger("dcn")

#: Mean absolute offset (in pixels) above which :func:`report_offsets` warns.
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
        # Not a buffer: it is no part of the checkpoint, and DistributedDataParallel would broadcast a buffer from
        # rank 0 before every forward. ``_apply`` moves it with the module instead.
        self.offset_abs_mean_max = self._new_offset_stat(torch.device("cpu"))
        self.reset_parameters()

    @staticmethod
    def _new_offset_stat(device: torch.device) -> torch.Tensor:
        # Outside inference mode, so that a layer moved or built under inference_mode can still train.
        with torch.inference_mode(False):
            return torch.zeros((), dtype=torch.float32, device=device)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        moved = fn(self.offset_abs_mean_max)
        self.offset_abs_mean_max = self._new_offset_stat(moved.device)
        if moved.is_cuda:
            # CUDA calls run torchvision's op: import it now, eagerly, not first inside a compiled or traced forward.
            torchvision_deform_conv2d()
        return self

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
        self._record_offset(offset)
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask=torch.sigmoid(m)
        )

    def _record_offset(self, offset: torch.Tensor) -> None:
        """Keep the largest mean |offset| on the device: no host copy, no branch on a tensor value.

        Not while the layer is captured into a graph for another runtime (ONNX, OpenVINO): the statistic is the
        training loop's, and a graph must not carry its in-place update.
        """
        if exporting():
            return
        mean = offset.detach().abs().mean().float()
        stat = self.offset_abs_mean_max
        stat.copy_(torch.maximum(stat, mean))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, deformable_groups={self.deformable_groups}, "
            f"extra_offset_mask={self.extra_offset_mask}"
        )


def report_offsets(model: nn.Module, threshold: float = OFFSET_WARNING_THRESHOLD, reset: bool = True,
                   log: logging.Logger | None = None) -> dict[str, float]:
    """Read the largest mean |offset| of every deformable layer of ``model`` and warn about diverging ones.

    One device-to-host transfer for all layers. Each layer above ``threshold`` gets a warning naming it and its
    value.

    Args:
        model: any module (wrappers such as DDP or ``torch.compile`` included: their layers are the same objects).
        threshold: the warning threshold in pixels.
        reset: start a new window (zero the statistics) after reading.
        log: the logger of the warnings (the training loop passes its own, so they reach the training log);
            default the ``dcn`` logger.

    Returns:
        ``{layer name: largest mean |offset| since the last reset}``; empty when the model has no such layer.
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, ModulatedDeformConvPack)]
    if not layers:
        return {}
    stats = torch.stack([m.offset_abs_mean_max.to(layers[0][1].offset_abs_mean_max.device) for _, m in layers])
    values = dict(zip((name for name, _ in layers), stats.tolist()))
    if reset:
        for _, m in layers:
            m.offset_abs_mean_max.zero_()
    log = log or logger
    for name, value in values.items():
        if value > threshold:
            log.warning("deformable conv %s: offset mean reached %.1f px (> %g; the largest mean |offset| since the "
                        "last report): alignment is probably diverging", name or "(model)", value, threshold)
    return values
