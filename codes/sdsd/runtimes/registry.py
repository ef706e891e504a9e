"""The runtime registry: every runtime the engine can run the network on, in one table.

A runtime is a name, the backend class that runs the network's two stages with it (imported only when used), the
package it needs, the precisions it computes and the candidates ``auto`` times on a device. The option schema
(``runtime``), ``sdsd.enhance --runtime``, ``sdsd.export --cache`` and ``auto`` read their names from here, so
adding a runtime is one backend module plus one :class:`Runtime` entry in :data:`RUNTIMES`.

This module imports nothing heavy (no torch), so that command-line parsers can read it.
"""

from __future__ import annotations

import dataclasses
import importlib

from sdsd.errors import UserError
from sdsd.utils.precision import MODES

__all__ = ["AUTO", "CHOICES", "EVALUATION_PRECISIONS", "INFERENCE_PRECISIONS", "INT8", "PRECISIONS",
           "PRECISION_CHOICES", "RUNTIMES", "Runtime", "backend_class", "check_precision"]

#: The precisions a network computes in, training and inference alike (training's ``amp`` vocabulary).
PRECISIONS = MODES
#: Post-training int8 quantization (NNCF, :mod:`sdsd.runtimes.quantize`): inference only, never a ``train.amp``.
INT8 = "int8"
#: Every precision a backend computes in: :data:`PRECISIONS` and int8.
INFERENCE_PRECISIONS = (*PRECISIONS, INT8)
#: ``auto``: chosen by measuring on the job's first window (:class:`sdsd.runtimes.auto.AutoBackend`).
AUTO = "auto"
#: The values ``sdsd.enhance --precision`` takes.
PRECISION_CHOICES = (AUTO, *INFERENCE_PRECISIONS)
#: The values the option files' ``precision`` (evaluation) takes: fp32 (the published numbers) or int8.
EVALUATION_PRECISIONS = ("fp32", INT8)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """One runtime.

    Attributes:
        name: what ``runtime:`` / ``--runtime`` call it.
        backend: ``module:Class`` of its :class:`sdsd.runtimes.base.Backend`, imported on first use.
        package: the pip package it needs (``None``: PyTorch itself).
        precisions: the precisions its backend computes.
        exported: it runs exported graphs kept in the model cache (``sdsd.runtimes.cache``).
        candidates: ``module:function`` giving, for a device and a precision request, the ``(precision,
            conv_backend)`` pairs ``auto`` times (:func:`sdsd.runtimes.auto.candidates`).
    """

    name: str
    backend: str
    package: str | None
    precisions: tuple[str, ...]
    exported: bool
    candidates: str


#: Every runtime, PyTorch first (the reference every other is held to).
RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("torch", "sdsd.runtimes.base:TorchBackend", None, PRECISIONS, False,
            "sdsd.runtimes.auto:torch_candidates"),
    Runtime("openvino", "sdsd.runtimes.openvino_backend:OpenVINOBackend", "openvino", ("fp32", "bf16", INT8), True,
            "sdsd.runtimes.auto:openvino_candidates"),
    Runtime("onnxruntime", "sdsd.runtimes.onnxruntime_backend:OnnxRuntimeBackend", "onnxruntime", ("fp32",), True,
            "sdsd.runtimes.auto:onnxruntime_candidates"),
)}
#: The values ``runtime:`` / ``--runtime`` take.
CHOICES = (AUTO, *RUNTIMES)


def _load(ref: str):
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def backend_class(name: str):
    """The backend class of runtime ``name`` (imports its module, not its package)."""
    return _load(RUNTIMES[name].backend)


def candidates_of(name: str):
    """The candidate function of runtime ``name`` (see :attr:`Runtime.candidates`)."""
    return _load(RUNTIMES[name].candidates)


def check_precision(runtime: str, precision: str) -> None:
    """Refuse, in one line, a precision that runtime ``runtime`` does not compute (``auto`` takes any: it picks a
    runtime that does).

    Raises:
        UserError: the runtime and the runtimes that do compute it.
    """
    if runtime == AUTO or precision == AUTO or precision in RUNTIMES[runtime].precisions:
        return
    able = [name for name, r in RUNTIMES.items() if precision in r.precisions]
    raise UserError(f"runtime {runtime} does not run precision {precision!r} (it runs "
                    f"{', '.join(RUNTIMES[runtime].precisions)}); use runtime {' or '.join(able)} for it, or "
                    "precision fp32")
