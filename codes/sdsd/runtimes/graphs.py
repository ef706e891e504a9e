"""The network's two stages as graphs other runtimes run: the per-frame graph (``extract_features``: frames ->
``(L1, L2, L3)``) and the per-window graph (``forward_features``: ``(L1, L2, L3, base)`` -> ``(enhanced,
illumination, denoised)``), exported to ONNX (dynamo exporter, opset 19; the deformable convolution becomes one
``DeformConv`` node; dynamic frame count and height/width) or converted to OpenVINO IR (one static model per frame
shape), and the hash of a network that keys them in the cache.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os

import torch
from torch import nn

from sdsd.errors import UserError
from sdsd.runtimes.base import RuntimeUnavailable, import_runtime
from sdsd.utils.text import first_line

__all__ = ["FeatureGraph", "GRAPH_VERSION", "ONNX_OPSET", "WindowGraph", "export_onnx", "export_openvino",
           "example_inputs", "network_hash", "network_settings", "plain_copy"]

#: Bumped when the exported graphs change for the same weights (part of every cache key).
GRAPH_VERSION = 2
ONNX_OPSET = 19


def network_hash(net: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the network's settings and weights: the checkpoint part of every cache key."""
    h = hashlib.sha256()
    h.update(repr(network_settings(net)).encode())
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def network_settings(net: nn.Module) -> dict:
    return {k: getattr(net, k, None) for k in ("nf", "nframes", "groups", "center", "w_TSA")} | {
        "front_RBs": len(getattr(net, "feature_extraction", ())), "back_RBs": len(getattr(net, "recon_trunk", ()))}


class FeatureGraph(nn.Module):
    """``frames (T x 3 x H x W)`` -> ``(L1, L2, L3)``: the per-frame stage, as a module to export."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, frames):
        return self.net.extract_features(frames)


class WindowGraph(nn.Module):
    """``(L1, L2, L3, base)`` -> ``(enhanced, illumination, denoised)``: the per-window stage, as a module to export."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, l1, l2, l3, base):
        return self.net.forward_features((l1, l2, l3), base)


def plain_copy(net: nn.Module) -> nn.Module:
    """A float32 NCHW copy of ``net`` in eval mode with plain convolutions (what the runtimes get)."""
    from sdsd.archs.fastconv import use_winograd

    net = copy.deepcopy(net).float().cpu().eval()
    use_winograd(net, False)
    # (The DCN layers' offset statistic skips itself while a graph is exported: dcn.ops.exporting.)
    return net.to(memory_format=torch.contiguous_format)


def example_inputs(net: nn.Module, height: int, width: int, frames: int = 1, windows: int = 1):
    torch.manual_seed(0)
    x = torch.rand(max(frames, 1), 3, height, width)
    with torch.no_grad():
        feats = net.extract_features(x)
    n = int(net.nframes)
    index = torch.arange(windows * n) % x.shape[0]
    wfeats = tuple(f[index].reshape(windows, n, *f.shape[1:]) for f in feats)
    return x, wfeats, x[index[:windows]]


def _deform_conv_onnx(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                      n_weight_grps, n_offset_grps, use_mask):
    """``torchvision::deform_conv2d`` as ONNX ``DeformConv`` (opset 19), for the dynamo exporter."""
    from onnxscript import opset19 as op

    return op.DeformConv(input, weight, offset, bias, mask if use_mask else None, dilations=[dil_h, dil_w],
                         group=n_weight_grps, offset_group=n_offset_grps, pads=[pad_h, pad_w, pad_h, pad_w],
                         strides=[stride_h, stride_w])


def export_onnx(net: nn.Module, folder: str, height: int = 48, width: int = 80) -> dict[str, str]:
    """Export the two graphs of ``net`` as ONNX files in ``folder`` (dynamic frame count, height and width).

    ``height`` / ``width`` (multiples of 16) only shape the example inputs. Returns ``{"features": path,
    "windows": path}``.

    Raises:
        RuntimeUnavailable: onnx / onnxscript missing, or the exporter refused the graph.
    """
    import_runtime("onnx")
    import_runtime("onnxscript")
    from torch.export import Dim

    _check_shape(height, width)
    if height == width:
        # Equal example sizes would let the exporter tie height and width together.
        width += 16
    net = plain_copy(net)
    x, feats, base = example_inputs(net, height, width, frames=3, windows=2)
    h16, w16 = Dim("h16", min=1, max=1024), Dim("w16", min=1, max=1024)
    t, b = Dim("t", min=1, max=4096), Dim("b", min=1, max=4096)
    os.makedirs(folder, exist_ok=True)
    paths = {"features": os.path.join(folder, "features.onnx"), "windows": os.path.join(folder, "windows.onnx")}
    import torchvision  # noqa: F401  (registers torch.ops.torchvision: dcn imports it only when it calls the op)
    table = {torch.ops.torchvision.deform_conv2d.default: _deform_conv_onnx}
    jobs = [
        (FeatureGraph(net), (x,), {"frames": {0: t, 2: 16 * h16, 3: 16 * w16}}, ["frames"], ["L1", "L2", "L3"]),
        (WindowGraph(net), (*feats, base),
         {"l1": {0: b, 3: 4 * h16, 4: 4 * w16}, "l2": {0: b, 3: 2 * h16, 4: 2 * w16}, "l3": {0: b, 3: h16, 4: w16},
          "base": {0: b, 2: 16 * h16, 3: 16 * w16}},
         ["l1", "l2", "l3", "base"], ["enhanced", "illumination", "denoised"]),
    ]
    for (module, args, dynamic, inputs, outputs), key in zip(jobs, ("features", "windows")):
        try:
            with _quiet():
                program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic, opset_version=ONNX_OPSET,
                                            custom_translation_table=table, input_names=inputs,
                                            output_names=outputs, verbose=False)
            program.save(paths[key])
        except Exception as exc:  # noqa: BLE001 - any exporter failure means "this runtime refused the graph"
            raise RuntimeUnavailable(f"onnx export of the {key} graph failed: {first_line(exc, 300)}") from None
    return paths


def export_openvino(net: nn.Module, folder: str, height: int, width: int) -> dict[str, str]:
    """Convert the two graphs of ``net`` to OpenVINO IR (``.xml`` + ``.bin``) in ``folder`` for ``height x width``
    frames (multiples of 16), one frame / one window per call. Returns ``{"features": xml, "windows": xml}``.

    Raises:
        RuntimeUnavailable: OpenVINO missing, or its converter refused the graph.
    """
    ov = import_runtime("openvino")
    _check_shape(height, width)
    net = plain_copy(net)
    x, feats, base = example_inputs(net, height, width)
    os.makedirs(folder, exist_ok=True)
    paths = {"features": os.path.join(folder, "features.xml"), "windows": os.path.join(folder, "windows.xml")}
    # Imported before tracing: its first import inside a traced call runs torchvision::_cuda_version, which the
    # tracer refuses (dcn imports it only when it calls the op).
    import torchvision  # noqa: F401
    for module, args, key in ((FeatureGraph(net), (x,), "features"), (WindowGraph(net), (*feats, base), "windows")):
        try:
            with _quiet(), torch.no_grad():
                model = ov.convert_model(module.eval(), example_input=args)
            ov.save_model(model, paths[key], compress_to_fp16=False)
        except Exception as exc:  # noqa: BLE001 - any converter failure means "this runtime refused the graph"
            raise RuntimeUnavailable(f"openvino conversion of the {key} graph failed: {first_line(exc, 300)}") from None
    return paths


def _check_shape(height: int, width: int) -> None:
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise UserError(f"export shape {height}x{width} (HxW) must be multiples of 16, at least 16")


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints and deprecation warnings (they are not the user's concern)."""
    import io
    import warnings

    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for log in loggers:
            log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)
