"""``deform_conv2d``: torchvision's op on CUDA and in exported graphs, a pure-PyTorch implementation elsewhere.

When a graph is being captured for another runtime (``torch.export`` / the dynamo ONNX exporter, TorchScript
tracing as ``openvino.convert_model`` does it, the TorchScript ONNX exporter), the call is torchvision's op, so the
graph holds ONE deformable-convolution node that the runtime maps onto its own (OpenVINO's
``DeformableConvolution``, ONNX ``DeformConv``) instead of the dozens of gather/matmul ops of :mod:`dcn.cpu`. Both
compute the same maths; eager CPU calls keep :mod:`dcn.cpu`, which is faster there.
"""

from __future__ import annotations

import torch

from dcn.cpu import deform_conv2d_cpu


def torchvision_deform_conv2d():
    """``torchvision.ops.deform_conv2d``, imported on first use (then a lookup in ``sys.modules``): importing
    torchvision costs seconds, as it loads ``torch._dynamo``, and the eager CPU path never needs it.

    Its first import must not happen inside a traced call (importing torchvision runs one of its ops, which a
    tracer records or refuses): a layer moved to CUDA imports it then, and code that captures graphs for another
    runtime imports torchvision before tracing (as :mod:`sdsd.runtimes.graphs` does).
    """
    from torchvision.ops import deform_conv2d

    return deform_conv2d


def exporting() -> bool:
    """Whether the current call is being captured into a graph for another runtime (not ``torch.compile``)."""
    return bool(torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


def _check_shapes(input, offset, weight, bias, stride, padding, dilation, mask) -> None:
    """Raises ValueError with one line describing the first inconsistency, like torchvision would."""
    for name, t in (("input", input), ("offset", offset), ("weight", weight)):
        if t.dim() != 4:
            raise ValueError(f"deform_conv2d: {name} must be 4-D, got shape {tuple(t.shape)}")
    n, c, h, w = input.shape
    out_c, c_per_group, kh, kw = weight.shape
    if c_per_group == 0 or c % c_per_group:
        raise ValueError(f"deform_conv2d: input has {c} channels, not a multiple of weight.shape[1]={c_per_group}")
    if out_c % (c // c_per_group):
        raise ValueError(f"deform_conv2d: {out_c} output channels do not split into {c // c_per_group} groups")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"deform_conv2d: bad stride {stride}, padding {padding} or dilation {dilation}")
    out_h = (h + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (w + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"deform_conv2d: input {h}x{w} is too small for kernel {kh}x{kw} with this padding/dilation")
    points = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * points):
        raise ValueError(f"deform_conv2d: offset has {offset.shape[1]} channels, not a multiple of 2*{kh}*{kw}")
    groups = offset.shape[1] // (2 * points)
    if c % groups:
        raise ValueError(f"deform_conv2d: {c} input channels do not split into {groups} deformable groups")
    if tuple(offset.shape) != (n, 2 * groups * points, out_h, out_w):
        raise ValueError(
            f"deform_conv2d: offset shape {tuple(offset.shape)} must be {(n, 2 * groups * points, out_h, out_w)}"
        )
    if mask is not None and tuple(mask.shape) != (n, groups * points, out_h, out_w):
        raise ValueError(f"deform_conv2d: mask shape {tuple(mask.shape)} must be {(n, groups * points, out_h, out_w)}")
    if bias is not None and tuple(bias.shape) != (out_c,):
        raise ValueError(f"deform_conv2d: bias shape {tuple(bias.shape)} must be ({out_c},)")


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(Modulated) deformable convolution with the signature and maths of ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``N x C x H x W``.
        offset: ``N x 2*G*kh*kw x H_out x W_out``; per deformable group ``G``, per kernel point, ``(dy, dx)``.
            ``G`` is inferred from the channel count.
        weight: ``C_out x C/groups x kh x kw``; convolution groups are inferred from ``C / weight.shape[1]``.
        bias: optional ``C_out``.
        stride: int or pair.
        padding: int or pair.
        dilation: int or pair.
        mask: optional ``N x G*kh*kw x H_out x W_out`` modulation (DCNv2); ``None`` means all ones.

    Returns:
        ``N x C_out x H_out x W_out``, in ``input``'s dtype (offset, mask, weight and bias are cast to it, also
        under autocast).

    CUDA tensors and exported graphs (:func:`exporting`) go to torchvision's op; other devices use :mod:`dcn.cpu`,
    built from standard ops.
    """
    stride, padding, dilation = _pair(stride, "stride"), _pair(padding, "padding"), _pair(dilation, "dilation")
    if exporting():
        # Shapes are symbolic here (checked by the eager run the export is compared with); one op, input's dtype.
        return torchvision_deform_conv2d()(input, offset, weight.to(input.dtype),
                                           None if bias is None else bias.to(input.dtype), stride, padding, dilation,
                                           None if mask is None else mask.to(input.dtype))
    _check_shapes(input, offset, weight, bias, stride, padding, dilation, mask)
    dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32

    def cast(t):
        return None if t is None else t.to(dtype)

    if input.is_cuda:
        return torchvision_deform_conv2d()(
            cast(input), cast(offset), cast(weight), cast(bias), stride, padding, dilation, cast(mask)
        ).to(input.dtype)
    with torch.autocast(device_type=input.device.type, enabled=False):
        out = deform_conv2d_cpu(
            cast(input).contiguous(),
            cast(offset).contiguous(),
            cast(weight).contiguous(),
            cast(bias),
            stride,
            padding,
            dilation,
            None if mask is None else cast(mask).contiguous(),
        )
    return out.to(input.dtype)
