"""OpenVINO: the graphs converted by ``openvino.convert_model`` (its PyTorch frontend maps the deformable
convolution onto ``DeformableConvolution``), one static model per frame shape, on OpenVINO's CPU plugin.

Converted with dynamic height/width the window graph differed from PyTorch by 1e-5 (3e-3 after the Retinex
division) where the static one matches to 1e-7, so every shape gets its own model. ``INFERENCE_PRECISION_HINT``
sets f32 or bf16.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from sdsd.runtimes.base import Backend, RuntimeUnavailable, import_runtime
from sdsd.runtimes.cache import cache_key, cached_models, invalidate, open_cache
from sdsd.runtimes.graphs import export_openvino, network_hash, plain_copy
from sdsd.runtimes.machine import native_bf16
from sdsd.utils.text import first_line

__all__ = ["OpenVINOBackend"]


class OpenVINOBackend(Backend):
    """The network's two graphs on OpenVINO's CPU plugin, one static model per frame shape.

    Args:
        net: an SDSD-Net (not modified: a float32 copy is converted).
        device: ``cpu`` (OpenVINO's CPU plugin; inputs and outputs are CPU torch tensors).
        precision: ``fp32`` or ``bf16`` (``INFERENCE_PRECISION_HINT``; bf16 needs a CPU with native bf16).
        cache: the cache folder (default :func:`cache_dir`).
        threads: inference threads (default: PyTorch's).
    """

    name = "openvino"

    def __init__(self, net: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 cache: str | None = None, threads: int | None = None):
        self._ov = import_runtime("openvino")
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise RuntimeUnavailable("runtime openvino runs on the CPU here (use onnxruntime or torch on CUDA)")
        if precision not in ("fp32", "bf16"):
            raise RuntimeUnavailable(f"runtime openvino runs fp32 or bf16 (asked for {precision})")
        if precision == "bf16" and not native_bf16():
            raise RuntimeUnavailable("runtime openvino bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX)")
        self.precision = precision
        self.net = plain_copy(net)
        self.nframes, self.center = int(net.nframes), int(net.center)
        self.cache = cache
        open_cache(cache)  # an unusable cache folder fails here, in one line, not at the first frame
        self.threads = int(threads or torch.get_num_threads())
        self._hash = network_hash(self.net)
        self._models: dict[tuple[int, int], dict] = {}
        self.core = self._ov.Core()

    def prepare(self, height: int, width: int) -> bool:
        """Load (or convert and cache) and compile the models of ``height x width`` frames; True if converted."""
        if (height, width) in self._models:
            return False
        key = cache_key("openvino", self._hash, height, width)
        config = {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": self.threads}
        for attempt in range(2):
            folder, built = cached_models(key, lambda d: export_openvino(self.net, d, height, width), self.cache)
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

    def _infer(self, which: str, height: int, width: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.prepare(height, width)
        request = self._models[(height, width)][which]
        request.infer({i: a for i, a in enumerate(arrays)})
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(3)]

    def features(self, frames):
        h, w = frames.shape[-2:]
        x = frames.detach().float().cpu().numpy()
        outs = [self._infer("features", h, w, [np.ascontiguousarray(x[i:i + 1])]) for i in range(x.shape[0])]
        return tuple(torch.from_numpy(np.concatenate([o[k] for o in outs])) for k in range(3))

    def windows(self, feats, base):
        h, w = base.shape[-2:]
        arrays = [f.detach().float().cpu().numpy() for f in feats] + [base.detach().float().cpu().numpy()]
        outs = [self._infer("windows", h, w, [np.ascontiguousarray(a[i:i + 1]) for a in arrays])
                for i in range(base.shape[0])]
        return tuple(torch.from_numpy(np.concatenate([o[k] for o in outs])) for k in range(3))
