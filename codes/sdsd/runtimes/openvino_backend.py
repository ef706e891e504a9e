"""OpenVINO: the graphs converted by ``openvino.convert_model`` (its PyTorch frontend maps the deformable
convolution onto ``DeformableConvolution``), one static model per frame shape, on OpenVINO's CPU plugin.

Converted with dynamic height/width the window graph differed from PyTorch by 1e-5 (3e-3 after the Retinex
division) where the static one matches to 1e-7, so every shape gets its own model. ``INFERENCE_PRECISION_HINT``
sets f32 or bf16; int8 runs the fp32 models quantized by NNCF (:mod:`sdsd.runtimes.quantize`), cached beside them.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from sdsd.runtimes.base import Backend, RuntimeUnavailable, import_runtime
from sdsd.runtimes.cache import cache_key, cached_models, entry_valid, invalidate, newest_entry, open_cache
from sdsd.runtimes.graphs import export_openvino, network_hash, plain_copy
from sdsd.runtimes.machine import native_bf16
from sdsd.runtimes.quantize import RECIPE, import_nncf, int8_key, int8_prefix, quantize_models
from sdsd.utils.text import first_line

logger = logging.getLogger("sdsd")

__all__ = ["OpenVINOBackend"]


class OpenVINOBackend(Backend):
    """The network's two graphs on OpenVINO's CPU plugin, one static model per frame shape.

    Args:
        net: an SDSD-Net (not modified: a float32 copy is converted).
        device: ``cpu`` (OpenVINO's CPU plugin; inputs and outputs are CPU torch tensors).
        precision: ``fp32``, ``bf16`` (``INFERENCE_PRECISION_HINT``; bf16 needs a CPU with native bf16) or
            ``int8`` (the fp32 models quantized by NNCF, :mod:`sdsd.runtimes.quantize`).
        cache: the cache folder (default :func:`cache_dir`).
        threads: inference threads (default: PyTorch's).
        calibration: int8 only: ``T x 3 x H x W`` frames to calibrate on (their digest is part of the cache key).
            By default an int8 model of this network, shape and recipe already in the cache is used (the newest),
            and otherwise the first frames the backend is given (:meth:`features`) calibrate a new one.
        recipe: int8 only: the quantization recipe (default :data:`sdsd.runtimes.quantize.RECIPE`).
    """

    name = "openvino"

    def __init__(self, net: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 cache: str | None = None, threads: int | None = None, calibration: torch.Tensor | None = None,
                 recipe: dict | None = None):
        self._ov = import_runtime("openvino")
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise RuntimeUnavailable("runtime openvino runs on the CPU here (use onnxruntime or torch on CUDA)")
        if precision not in ("fp32", "bf16", "int8"):
            raise RuntimeUnavailable(f"runtime openvino runs fp32, bf16 or int8 (asked for {precision})")
        if precision == "bf16" and not native_bf16():
            raise RuntimeUnavailable("runtime openvino bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX)")
        if precision == "int8":
            import_nncf()  # missing NNCF is one line here, not at the first frame
        self.precision = precision
        self.calibration = calibration
        self.recipe = dict(recipe or RECIPE)
        #: Per frame shape, the int8 entry in use: ``{"entry" (its key), "quantized" (in this process)}``.
        self.int8: dict[tuple[int, int], dict] = {}
        self.net = plain_copy(net)
        self.nframes, self.center = int(net.nframes), int(net.center)
        self.cache = cache
        open_cache(cache)  # an unusable cache folder fails here, in one line, not at the first frame
        self.threads = int(threads or torch.get_num_threads())
        self._hash = network_hash(self.net)
        self._models: dict[tuple[int, int], dict] = {}
        self.core = self._ov.Core()

    def prepare(self, height: int, width: int, frames: torch.Tensor | None = None) -> bool:
        """Load (or convert and cache) and compile the models of ``height x width`` frames; True if converted (or,
        int8, quantized). ``frames``: int8 only, frames of that shape to calibrate on when no int8 model is cached.
        """
        if (height, width) in self._models:
            return False
        key = cache_key("openvino", self._hash, height, width)
        config = {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": self.threads}
        for attempt in range(2):
            folder, built = cached_models(key, lambda d: export_openvino(self.net, d, height, width), self.cache)
            if self.precision == "int8":
                folder, quantized = self._int8_entry(key, folder, height, width, frames)
                built = built or quantized
            try:
                compiled = {k: self.core.compile_model(self.core.read_model(os.path.join(folder, f"{k}.xml")),
                                                       "CPU", config) for k in ("features", "windows")}
                break
            except Exception as exc:  # noqa: BLE001 - a file that passed its checksum but does not load
                if attempt:
                    raise RuntimeUnavailable(f"runtime openvino refused the graph: {first_line(exc, 300)}") from None
                invalidate(folder, first_line(exc, 300))
        self._models[(height, width)] = {k: c.create_infer_request() for k, c in compiled.items()}
        return built

    def _int8_entry(self, key: str, fp32_folder: str, height: int, width: int,
                    frames: torch.Tensor | None) -> tuple[str, bool]:
        """The folder of the int8 models for fp32 entry ``key`` (quantized now when needed), and whether it was."""
        root = open_cache(self.cache)
        calibration = self.calibration
        if calibration is None:
            existing = newest_entry(root, int8_prefix(key, self.recipe))
            if existing is not None:
                self.int8[(height, width)] = {"entry": os.path.relpath(existing, root), "quantized": False}
                return existing, False
            calibration = frames
        if calibration is None:
            raise RuntimeUnavailable(f"runtime openvino int8: no int8 model for {height}x{width} frames in the cache "
                                     "and no frames to calibrate one on (run it on a job, or python -m sdsd.export "
                                     "--cache --int8 VIDEO)")
        calibration = calibration.detach().float().cpu()
        if tuple(calibration.shape[-2:]) != (height, width):
            raise RuntimeUnavailable(f"runtime openvino int8: calibration frames are {calibration.shape[-2]}x"
                                     f"{calibration.shape[-1]}, the model is for {height}x{width}")
        ikey = int8_key(key, self.recipe, calibration)
        if not entry_valid(os.path.join(root, ikey)):
            logger.info("runtime openvino int8: quantizing the %dx%d models (NNCF, %s, calibrated on %d frame(s))",
                        height, width, ", ".join(f"{k} {v}" for k, v in self.recipe.items()), calibration.shape[0])
        folder, quantized = cached_models(
            ikey, lambda d: quantize_models(self.core, fp32_folder, d, self.net, calibration, self.recipe), self.cache)
        self.int8[(height, width)] = {"entry": os.path.relpath(folder, root), "quantized": quantized}
        return folder, quantized

    def describe(self) -> dict:
        out = super().describe()
        if self.precision == "int8":
            out["int8"] = {"recipe": self.recipe, **({"entries": sorted(v["entry"] for v in self.int8.values())}
                                                     if self.int8 else {})}
        return out

    def _infer(self, which: str, height: int, width: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.prepare(height, width)
        request = self._models[(height, width)][which]
        request.infer({i: a for i, a in enumerate(arrays)})
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(3)]

    def features(self, frames):
        h, w = frames.shape[-2:]
        self.prepare(h, w, frames)
        x = frames.detach().float().cpu().numpy()
        outs = [self._infer("features", h, w, [np.ascontiguousarray(x[i:i + 1])]) for i in range(x.shape[0])]
        return tuple(torch.from_numpy(np.concatenate([o[k] for o in outs])) for k in range(3))

    def windows(self, feats, base):
        h, w = base.shape[-2:]
        arrays = [f.detach().float().cpu().numpy() for f in feats] + [base.detach().float().cpu().numpy()]
        outs = [self._infer("windows", h, w, [np.ascontiguousarray(a[i:i + 1]) for a in arrays])
                for i in range(base.shape[0])]
        return tuple(torch.from_numpy(np.concatenate([o[k] for o in outs])) for k in range(3))
