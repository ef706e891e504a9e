"""int8 for OpenVINO: NNCF post-training quantization of the two converted graphs, calibrated on frames.

The recipe (:data:`RECIPE`): ``nncf.quantize`` with preset MIXED (symmetric int8 weights, asymmetric activations),
fast bias correction, on up to 6 calibration windows (and their frames for the ``features`` graph) made of the
frames given: the job's first frames, or any sample a caller passes. Layers named by :data:`IGNORED_SCOPES` (the
recipe's ``ignored`` entries) stay float32:

* ``retinex``: the Retinex composition at the end of the ``windows`` graph (``denoised = base - noise``,
  ``illumination = min(max(ill_raw, base), 1)``, ``enhanced = denoised / clamp(illumination, 0.001, 1)``). Quantized,
  the divisor's 0.001 floor rounds to 0 and ``enhanced`` holds inf; kept float32 it divides exactly.
* ``offsets``: the convolutions that predict the deformable offsets (not in the default recipe; see
  docs/performance.md for what it changes).

A quantized pair is a model-cache entry (:func:`sdsd.runtimes.cache.cached_models`) beside the fp32 one, keyed by
the network, the frame shape, the recipe, NNCF's version and the SHA-256 of the calibration frames
(:func:`int8_key`). NNCF is imported only here, when an int8 model is built.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os

import numpy as np
import torch
from torch import nn

from sdsd.runtimes.base import RuntimeUnavailable, import_runtime
from sdsd.utils.text import first_line

logger = logging.getLogger("sdsd")

__all__ = ["IGNORED_SCOPES", "QUANTIZE_SECONDS", "RECIPE", "calibration_data", "frames_digest", "import_nncf",
           "int8_key", "int8_prefix", "quantize_models", "recipe_digest"]

#: The calibration recipe: part of every int8 cache key (change it and the models are quantized again).
RECIPE = {"preset": "mixed", "fast_bias_correction": True, "windows": 6, "ignored": ["retinex"]}

#: What each ``ignored`` entry of a recipe keeps in float32 (NNCF ignored scopes, by node type or name pattern;
#: the types named occur in the ``windows`` graph only in the Retinex composition).
IGNORED_SCOPES = {
    "retinex": {"types": ["Subtract", "Maximum", "Divide"]},
    "offsets": {"patterns": [".*conv_offset_mask.*", ".*offset_conv.*"]},
}

#: Seconds assumed for quantizing both graphs when no int8 model is cached (what ``auto`` weighs against the job).
QUANTIZE_SECONDS = 90.0


def import_nncf():
    """NNCF, or :class:`RuntimeUnavailable` in one line when it is not installed."""
    try:
        import nncf
    except ImportError:
        raise RuntimeUnavailable("precision int8 needs NNCF, which is not installed (pip install nncf); use "
                                 "precision fp32") from None
    return nncf


def recipe_digest(recipe: dict) -> str:
    """12 hex digits of the recipe and NNCF's version (the recipe part of an int8 key)."""
    text = json.dumps({**recipe, "nncf": import_nncf().__version__}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def frames_digest(frames: torch.Tensor) -> str:
    """12 hex digits of the SHA-256 of calibration frames (their float32 bytes and shape)."""
    x = frames.detach().to("cpu", torch.float32).contiguous()
    h = hashlib.sha256(repr(tuple(x.shape)).encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()[:12]


def int8_prefix(fp32_key: str, recipe: dict) -> str:
    """The key of every int8 entry of one network, shape and recipe, less the calibration frames' digest."""
    return f"{fp32_key}-int8-{recipe_digest(recipe)}-"


def int8_key(fp32_key: str, recipe: dict, frames: torch.Tensor) -> str:
    """The cache key of the int8 models of the fp32 entry ``fp32_key``, quantized by ``recipe`` on ``frames``."""
    return int8_prefix(fp32_key, recipe) + frames_digest(frames)


def calibration_data(net: nn.Module, frames: torch.Tensor, count: int) -> tuple[list, list]:
    """The calibration inputs of both graphs from ``T x 3 x H x W`` frames, as lists of zero-argument functions
    that make one input each (so that only the frames' features are held, not every window): up to ``count``
    single frames (the ``features`` graph's input) and as many windows (``windows`` graph: ``L1, L2, L3, base``),
    window ``i`` made of frames ``i, i+1, ...`` (wrapping round when there are fewer than N), its features from the
    float32 ``net``.
    """
    n, c = int(net.nframes), int(net.center)
    frames = frames.detach().float().cpu()
    t = min(count, frames.shape[0])
    with torch.no_grad():
        feats = net.extract_features(frames[:t])

    def single(i: int):
        return lambda: [np.ascontiguousarray(frames[i:i + 1].numpy())]

    def window(i: int):
        index = (torch.arange(n) + i) % t
        return lambda: ([np.ascontiguousarray(f[index].unsqueeze(0).numpy()) for f in feats]
                        + [np.ascontiguousarray(frames[index[c]].unsqueeze(0).numpy())])

    return [single(i) for i in range(t)], [window(i) for i in range(t)]


def quantize_models(core, fp32_folder: str, folder: str, net: nn.Module, frames: torch.Tensor,
                    recipe: dict) -> dict[str, str]:
    """Quantize the fp32 models of ``fp32_folder`` by ``recipe``, calibrated on ``frames``, into ``folder``
    (``features.xml`` / ``windows.xml`` with their ``.bin``, and ``calibration.json``: the recipe and the frames'
    digest).

    Raises:
        RuntimeUnavailable: NNCF missing, or it refused a graph.
    """
    nncf = import_nncf()
    ov = import_runtime("openvino")
    single, windows = calibration_data(net, frames, int(recipe["windows"]))
    preset = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    paths = {}
    for key, data in (("features", single), ("windows", windows)):
        model = core.read_model(os.path.join(fp32_folder, f"{key}.xml"))
        scope = {"types": [], "patterns": []}
        for name in recipe.get("ignored", ()):
            for kind, values in IGNORED_SCOPES[name].items():
                scope[kind] += values
        try:
            with _quiet_nncf():
                quantized = nncf.quantize(
                    model, nncf.Dataset(data, lambda make: dict(enumerate(make()))),
                    preset=preset[recipe["preset"]], subset_size=len(data),
                    fast_bias_correction=bool(recipe["fast_bias_correction"]),
                    ignored_scope=nncf.IgnoredScope(**scope, validate=False))
        except Exception as exc:  # noqa: BLE001 - any NNCF failure means "int8 is not available for this graph"
            raise RuntimeUnavailable(f"runtime openvino int8: NNCF could not quantize the {key} graph: "
                                     f"{first_line(exc, 300)}") from None
        paths[key] = os.path.join(folder, f"{key}.xml")
        ov.save_model(quantized, paths[key], compress_to_fp16=False)
    with open(os.path.join(folder, "calibration.json"), "w", encoding="utf-8") as f:
        json.dump({"recipe": recipe, "frames": frames_digest(frames), "frame_count": int(frames.shape[0]),
                   "windows": len(windows), "nncf": nncf.__version__}, f, indent=1)
    return paths


@contextlib.contextmanager
def _quiet_nncf():
    """NNCF's progress bars and info logs off (one ``sdsd`` line says a model is being quantized)."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)
