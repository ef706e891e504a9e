"""Winograd 3x3 convolutions on CPUs, through the NNPACK library inside PyTorch's CPU build.

oneDNN, PyTorch's default CPU convolution, computes a 3x3 convolution directly: at best one multiply-add per
weight per output pixel, so it cannot beat the machine's FMA peak (``python -m bench`` measures it). NNPACK's
Winograd kernels compute the same 3x3 stride-1 convolution from transformed tiles with several times fewer
multiplications, so on a CPU they run faster than the FMA peak allows the direct method (figures in
docs/performance.md). Results differ from the direct convolution by float rounding (relative ~1e-5).

Use::

    from sdsd.archs.fastconv import use_winograd
    use_winograd(net)          # eligible nn.Conv2d modules become WinogradConv2d (state_dict keys unchanged)
    out = net(x)               # NCHW float32 on CPU: eligible convs run NNPACK, everything else as before

Decisions:

* Forward and the input gradient run NNPACK (the input gradient of a 3x3 stride-1 convolution is a 3x3 stride-1
  convolution of the output gradient with the flipped, transposed kernel); the weight and bias gradients stay
  with PyTorch's ``convolution_backward``. Second derivatives are not supported on this path.
* Only float32 CPU tensors outside autocast and ``torch.compile``, with frames of at least :data:`MIN_PIXELS`
  pixels; anything else runs ``nn.Conv2d.forward`` (so CUDA, bf16/fp16 and compiled training are unaffected).
* Only 3x3, stride 1, dilation 1, padding 1, zero padding, ``groups=1``, with at least :data:`MIN_CHANNELS` input
  and output channels: the shapes where NNPACK measured faster. Stride-2, 1x1 and RGB in/out convs stay on oneDNN.
* A batch is run one item at a time: NNPACK's batched entry point chooses a slower algorithm (measured 2x slower
  for 5 frames of 64 x 128 x 240).
* NNPACK wants NCHW; a channels_last input is converted. Run the network NCHW when this is enabled.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# The option's names live in a module that loads nothing (command lines parse with them); read here as before.
from sdsd.utils.conv_backend import CONV_BACKENDS as CONV_BACKENDS

# Smallest in/out channel count converted, and smallest frame (H * W) run on NNPACK: below them oneDNN was as fast
# or faster (measured on the 2-core AVX2 development machine, one thread: 8 frames of 32 channels at 12x12 ran
# 1.4x slower on NNPACK, 32->256 channels at 24x24 1.35x faster).
MIN_CHANNELS = 16
MIN_PIXELS = 512


@functools.cache
def nnpack_available() -> bool:
    """Whether this PyTorch build has a working NNPACK on this CPU.

    The call also initialises NNPACK: without it the first NNPACK convolution of a process fails with
    "NNPACK SpatialConvolution_updateOutput failed" (seen with torch 2.14.1).
    """
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def eligible(conv: nn.Module) -> bool:
    """Whether ``conv`` is an ``nn.Conv2d`` of a shape that :class:`WinogradConv2d` accelerates."""
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.padding == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros" and not conv.transposed
            and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS)


def winograd_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3, stride 1, padding 1 convolution of a 4-D float32 CPU tensor with NNPACK (not recorded by autograd)."""
    x = x.contiguous()
    weight = weight.contiguous()
    if x.shape[0] == 1:
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1], [1, 1])
    out = torch.empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]), dtype=x.dtype)
    for i in range(x.shape[0]):
        out[i:i + 1] = torch._nnpack_spatial_convolution(x[i:i + 1], weight, bias, [1, 1], [1, 1])
    return out


class _WinogradConv(torch.autograd.Function):
    """Autograd for :func:`winograd_conv2d`: NNPACK for the input gradient, PyTorch for the weight/bias ones."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return winograd_conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = winograd_conv2d(grad, weight.flip(2, 3).transpose(0, 1), None)
        want_w, want_b = ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]
        if want_w or want_b:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, x.contiguous(), weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1], [1, 1], [1, 1],
                False, [0, 0], 1, [False, want_w, want_b])
        return grad_x, grad_w, grad_b


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose CPU float32 forward (and input gradient) runs NNPACK's Winograd kernels.

    Same parameters and state_dict keys as ``nn.Conv2d``; every other call is ``nn.Conv2d.forward``.
    Made by :func:`use_winograd`, which swaps the class of existing modules in place.
    """

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # nn.Conv2d.forward calls this with the module's own weight; sdsd.archs.blocks.conv_part with a slice of it.
        if (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
                and x.shape[-2] * x.shape[-1] >= MIN_PIXELS and weight.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
                and nnpack_available()):
            if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
                return _WinogradConv.apply(x, weight, bias)
            return winograd_conv2d(x, weight, bias)
        return super()._conv_forward(x, weight, bias)


def use_winograd(model: nn.Module, enabled: bool = True) -> int:
    """Turn the eligible convs of ``model`` into :class:`WinogradConv2d` (or back with ``enabled=False``).

    Returns the number of modules converted; 0 when NNPACK is not available (the model is left unchanged).
    Parameters are shared, not copied, so the model keeps its state_dict, device and optimiser references.
    """
    if enabled and not nnpack_available():
        return 0
    count = 0
    for module in model.modules():
        if enabled and type(module) is nn.Conv2d and eligible(module):
            module.__class__ = WinogradConv2d
            count += 1
        elif not enabled and type(module) is WinogradConv2d:
            module.__class__ = nn.Conv2d
            count += 1
    return count




def apply_conv_backend(net: nn.Module, device: torch.device | str, backend: str = "auto") -> str:
    """Set ``net`` (in place) up for the ``conv_backend`` option on ``device``; return the backend used.

    ``winograd`` asked for where NNPACK cannot run (no NNPACK, not a CPU) falls back to ``channels_last`` on a CPU
    and ``nchw`` elsewhere. Results of every backend agree up to float rounding. ``backend`` is one of
    :data:`CONV_BACKENDS` (the option schema checks it).
    """
    cpu = torch.device(device).type == "cpu"
    if backend in ("auto", "winograd"):
        backend = "winograd" if cpu and nnpack_available() else "channels_last" if cpu else "nchw"
    use_winograd(net, backend == "winograd")
    net.to(memory_format=torch.channels_last if backend == "channels_last" else torch.contiguous_format)
    return backend


#: The name the evaluation code and ``sdsd.enhance`` call it by.
prepare_for_inference = apply_conv_backend
