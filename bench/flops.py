"""FLOP counting for SDSD-Net with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2).

``FlopCounterMode`` knows convolutions and matmuls. The deformable convolution needs care so that it is counted
exactly once:

* torchvision's op (``torchvision::deform_conv2d``, used on CUDA and by the reference-style baseline) is opaque,
  so :data:`CUSTOM_FORMULAS` gives it a formula: the same multiply-adds as a dense conv of that shape;
* ``dcn``'s CPU path is built from standard ops, so the counter already sees its column matmul (``aten.bmm``)
  and must not be given a second formula.

:func:`count_flops` checks the result against :func:`dcn_flops` for every ``ModulatedDeformConvPack`` call: when
the counter saw none of a call's multiply-adds (an implementation built only from uncounted ops) the analytic
figure is added, and the report says which case applied. The bilinear sampling that builds the columns is not a
multiply-add of the convolution; :func:`count_flops` reports the number of samples separately.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import ExitStack

import torch
from torch.utils.flop_counter import FlopCounterMode


def conv_flops(batch: int, in_channels: int, out_channels: int, out_h: int, out_w: int, kh: int, kw: int,
               groups: int = 1) -> int:
    """Multiply-add FLOPs (x2) of a dense 2-D convolution; bias is not counted (as FlopCounterMode does)."""
    return 2 * batch * out_channels * (in_channels // groups) * kh * kw * out_h * out_w


def dcn_flops(batch: int, in_channels: int, out_channels: int, out_h: int, out_w: int, kh: int = 3, kw: int = 3,
              groups: int = 1) -> int:
    """Multiply-add FLOPs of a deformable conv: the column matmul, identical to a dense conv of the same shape."""
    return conv_flops(batch, in_channels, out_channels, out_h, out_w, kh, kw, groups)


def dcn_samples(batch: int, in_channels: int, out_h: int, out_w: int, kh: int = 3, kw: int = 3) -> int:
    """Bilinear samples (4 taps each) a deformable conv gathers to build its columns."""
    return batch * in_channels * kh * kw * out_h * out_w


def _tv_deform_conv2d_flop(input_shape, weight_shape, offset_shape, mask_shape, bias_shape, *args, out_shape=None,
                           **kwargs) -> int:
    n, c_out, out_h, out_w = out_shape
    _, c_per_group, kh, kw = weight_shape
    return 2 * n * c_out * c_per_group * kh * kw * out_h * out_w


def _tv_deform_conv2d_backward_flop(grad_shape, input_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    # Gradients of the input columns and of the weight: two matmuls of the forward's size.
    n, c_out, out_h, out_w = grad_shape
    _, c_per_group, kh, kw = weight_shape
    return 2 * 2 * n * c_out * c_per_group * kh * kw * out_h * out_w


def custom_formulas() -> dict:
    """``custom_mapping`` for FlopCounterMode: formulas for torchvision's deformable conv ops (if loaded)."""
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    mapping = {}
    ops = torch.ops.torchvision
    if hasattr(ops, "deform_conv2d"):
        mapping[ops.deform_conv2d] = _tv_deform_conv2d_flop
    if hasattr(ops, "_deform_conv2d_backward"):
        mapping[ops._deform_conv2d_backward] = _tv_deform_conv2d_backward_flop
    return mapping


class _DcnTally:
    """Forward hooks on every ModulatedDeformConvPack: analytic FLOPs and samples per module name."""

    def __init__(self, net: torch.nn.Module):
        from dcn import ModulatedDeformConvPack

        self.flops: dict[str, int] = defaultdict(int)
        self.samples: dict[str, int] = defaultdict(int)
        self._handles = []
        for name, mod in net.named_modules():
            if isinstance(mod, ModulatedDeformConvPack):
                self._handles.append(mod.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(mod, inputs, out):
            x = inputs[0][0] if mod.extra_offset_mask else inputs[0]
            n, c, *_ = x.shape
            oh, ow = out.shape[-2:]
            kh, kw = mod.kernel_size
            self.flops[name] += dcn_flops(n, c, out.shape[1], oh, ow, kh, kw)
            self.samples[name] += dcn_samples(n, c, oh, ow, kh, kw)

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def count_flops(net: torch.nn.Module, fn, *args, **kwargs) -> tuple[object, dict]:
    """Run ``fn(*args, **kwargs)`` (which uses ``net``) once under FlopCounterMode.

    Returns:
        ``(result, report)`` where ``report`` holds ``total`` (FLOPs, deformable convs counted once),
        ``by_op`` (FLOPs per aten/torchvision op), ``by_stage`` (FLOPs per top-level submodule of ``net``, with
        ``extract_features``-only modules under their own names), ``dcn`` (analytic FLOPs, FLOPs the counter saw
        inside the deformable convs, how they were reconciled) and ``dcn_samples`` (bilinear samples).
    """
    tally = _DcnTally(net)
    counter = FlopCounterMode(display=False, custom_mapping=custom_formulas())
    try:
        with ExitStack() as stack:
            stack.enter_context(counter)
            result = fn(*args, **kwargs)
    finally:
        tally.close()
    counts = counter.get_flop_counts()
    by_op = {str(op).split(".")[-1] if "aten" in str(op) else str(op): int(v)
             for op, v in counts.get("Global", {}).items()}
    root = type(net).__name__
    by_stage: dict[str, int] = {}
    for name, ops in counts.items():
        parts = name.split(".")
        if len(parts) == 2 and parts[0] == root:
            by_stage[parts[1]] = int(sum(ops.values()))

    # FLOPs the counter attributed to each deformable conv, minus its offset/mask predictor (a plain conv).
    seen = 0
    for name in tally.flops:
        fq = f"{root}.{name}"
        seen += int(sum(counts.get(fq, {}).values())) - int(sum(counts.get(f"{fq}.conv_offset_mask", {}).values()))
    analytic = int(sum(tally.flops.values()))
    total = int(counter.get_total_flops())
    if seen == 0 and analytic:
        mode = "added analytically (the dcn implementation runs no counted op)"
        total += analytic
        by_op["deform_conv2d (analytic)"] = analytic
    elif analytic and abs(seen - analytic) <= 0.01 * analytic:
        mode = "counted by FlopCounterMode (matches the analytic formula)"
    else:
        mode = f"MISMATCH: counter saw {seen}, formula says {analytic}"
    report = {
        "total": total,
        "by_op": by_op,
        "by_stage": by_stage,
        "dcn": {"analytic": analytic, "seen_by_counter": seen, "mode": mode},
        "dcn_samples": int(sum(tally.samples.values())),
    }
    return result, report
