"""ONNX Runtime: the exported ONNX graphs (one export serves every shape), fp32, on the CPU or the CUDA / TensorRT
execution providers where installed."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from sdsd.runtimes.base import Backend, RuntimeUnavailable, import_runtime
from sdsd.runtimes.cache import cache_key, cached_models, invalidate
from sdsd.runtimes.graphs import export_onnx, network_hash
from sdsd.utils.text import first_line

__all__ = ["OnnxRuntimeBackend"]


class OnnxRuntimeBackend(Backend):
    """The exported ONNX graphs on ONNX Runtime (fp32; CPU, or the CUDA / TensorRT providers on a CUDA device).

    Args:
        net: an SDSD-Net (not modified: a float32 copy is exported).
        device: ``cpu`` or ``cuda``; inputs and outputs are torch tensors there.
        precision: ``fp32`` (the only one exported).
        cache: the cache folder (default :func:`cache_dir`).
        threads: intra-op threads (default: PyTorch's).
    """

    name = "onnxruntime"

    def __init__(self, net: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 cache: str | None = None, threads: int | None = None):
        ort = import_runtime("onnxruntime")
        if precision != "fp32":
            raise RuntimeUnavailable(f"runtime onnxruntime runs fp32 only (asked for {precision})")
        self.device = torch.device(device)
        self.precision = "fp32"
        self.nframes, self.center = int(net.nframes), int(net.center)
        available = ort.get_available_providers()
        if self.device.type == "cuda":
            wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            if not wanted:
                raise RuntimeUnavailable("runtime onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)")
            self.providers = [*wanted, "CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        key = cache_key("onnxruntime", network_hash(net), 0, 0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.log_severity_level = 3
        for attempt in range(2):
            folder, _ = cached_models(key, lambda d: export_onnx(net, d), cache)
            try:
                self.sessions = {k: ort.InferenceSession(os.path.join(folder, f"{k}.onnx"), options,
                                                         providers=self.providers)
                                 for k in ("features", "windows")}
                break
            except Exception as exc:  # noqa: BLE001 - a file that passed its checksum but does not load
                if attempt:
                    raise RuntimeUnavailable(f"runtime onnxruntime refused the graph: {first_line(exc, 300)}") from None
                invalidate(folder, first_line(exc, 300))

    def _run(self, which: str, arrays: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        session = self.sessions[which]
        feed = {i.name: np.ascontiguousarray(a.detach().float().cpu().numpy())
                for i, a in zip(session.get_inputs(), arrays)}
        return tuple(torch.from_numpy(o).to(self.device) for o in session.run(None, feed))

    def features(self, frames):
        return self._run("features", [frames])

    def windows(self, feats, base):
        return self._run("windows", [*feats, base])

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers[:-1] or self.providers}
