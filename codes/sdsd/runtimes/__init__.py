"""The runtimes the inference engine runs the network on: PyTorch, OpenVINO and ONNX Runtime, and ``auto``.

One layer, one module per concern:

* :mod:`sdsd.runtimes.registry` — the table of runtimes (name, backend class, package, precisions, ``auto``
  candidates) that the option schema, every command line and ``auto`` read;
* :mod:`sdsd.runtimes.base` — :class:`Backend` (what a runtime implements) and :class:`TorchBackend`;
* :mod:`sdsd.runtimes.graphs` — the network's two stages as exported graphs (ONNX, OpenVINO IR);
* :mod:`sdsd.runtimes.cache` — the on-disk model cache;
* :mod:`sdsd.runtimes.openvino_backend`, :mod:`sdsd.runtimes.onnxruntime_backend` — the backends of the two
  optional runtimes, imported (with their packages) only when used;
* :mod:`sdsd.runtimes.auto` — ``runtime: auto``, the measured choice;
* :mod:`sdsd.runtimes.machine` — CPU facts read at run time.

Adding a runtime is one backend module plus one entry in :data:`sdsd.runtimes.registry.RUNTIMES`.
:func:`make_backend` builds a backend by name; :func:`sdsd.inference.build_engine` wraps one in the engine.
A runtime that is not installed, or refuses the graph, raises :class:`RuntimeUnavailable` (one line naming it);
``auto`` then leaves it out.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sdsd.errors import UserError
from sdsd.runtimes.registry import (
    AUTO,
    CHOICES,
    INFERENCE_PRECISIONS,
    INT8,
    PRECISION_CHOICES,
    PRECISIONS,
    RUNTIMES,
    backend_class,
    check_precision,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The names this package gives, from the modules that define them, imported on first use: reading the registry
#: (command-line parsers) does not load PyTorch.
_LAZY = {
    "sdsd.runtimes.auto": ("MIN_PSNR_DB", "AutoBackend", "candidates", "read_choices"),
    "sdsd.runtimes.base": ("Backend", "RuntimeUnavailable", "TorchBackend", "import_runtime", "runtime_version"),
    "sdsd.runtimes.cache": ("CacheUnavailable", "cache_dir", "cache_problem", "cached_models", "is_cached",
                            "open_cache"),
    "sdsd.runtimes.graphs": ("export_onnx", "export_openvino", "network_hash"),
    "sdsd.runtimes.machine": ("cpu_model", "native_bf16"),
    "sdsd.runtimes.onnxruntime_backend": ("OnnxRuntimeBackend",),
    "sdsd.runtimes.openvino_backend": ("OpenVINOBackend",),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AUTO", "AutoBackend", "Backend", "CHOICES", "CacheUnavailable", "INFERENCE_PRECISIONS", "INT8",
           "MIN_PSNR_DB", "OnnxRuntimeBackend", "OpenVINOBackend", "PRECISIONS", "PRECISION_CHOICES", "RUNTIMES",
           "RuntimeUnavailable", "TorchBackend", "backend_class", "cache_dir", "cache_problem", "cached_models",
           "candidates", "check_precision", "cpu_model", "export_onnx", "export_openvino", "import_runtime",
           "is_cached", "make_backend", "native_bf16", "network_hash", "open_cache", "read_choices",
           "runtime_version"]


def make_backend(runtime: str, net: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 conv_backend: str | None = "auto", cache: str | None = None,
                 frames_hint: int | None = None):
    """The backend ``runtime`` (``torch``, ``openvino``, ``onnxruntime`` or ``auto``) for ``net`` on ``device``.

    ``precision`` is ``fp32``, ``bf16``, ``fp16``, ``int8`` (runtimes whose registry entry lists it: OpenVINO; with
    ``auto`` the runtime is OpenVINO) or ``auto``: with runtime ``auto`` the fastest precision whose output stays
    within 40 dB PSNR of fp32, with another runtime fp32. ``frames_hint``: the job's expected frame count (``auto``
    only; see :class:`AutoBackend`).

    Raises:
        UserError: an unknown runtime or precision, or a precision the runtime does not run (one line);
        RuntimeUnavailable: the runtime cannot run here.
    """
    if runtime not in CHOICES:
        raise UserError(f"runtime {runtime!r} is not one of {', '.join(CHOICES)}")
    if precision not in PRECISION_CHOICES:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    check_precision(runtime, precision)
    import torch

    from sdsd.runtimes.auto import AutoBackend
    from sdsd.runtimes.base import TorchBackend

    device = torch.device(device)
    if runtime == AUTO and precision == INT8:
        # One runtime computes int8: auto has nothing to choose between.
        runtime = next(name for name, r in RUNTIMES.items() if INT8 in r.precisions)
    if runtime == AUTO:
        return AutoBackend(net, device, precision, conv_backend=conv_backend, cache=cache, frames_hint=frames_hint)
    if precision == AUTO:
        precision = "fp32"
    if runtime == "torch":
        return TorchBackend(net, device, precision=precision, conv_backend=conv_backend)
    return backend_class(runtime)(net, device, precision=precision, cache=cache)
