"""What every runtime implements (:class:`Backend`), PyTorch's own backend, and the errors of optional runtimes.

A backend runs the network's two stages: the per-frame features (``extract_features``) and the per-window
reconstruction (``forward_features``); the engine (:class:`sdsd.inference.Engine`) does the rest (windows, tiles,
padding, streaming), whatever the backend.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from sdsd.archs.fastconv import prepare_for_inference
from sdsd.errors import UserError
from sdsd.utils import precision as precision_modes

__all__ = ["Backend", "Outputs", "RuntimeUnavailable", "TorchBackend", "close_backend", "import_runtime",
           "runtime_version"]

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class RuntimeUnavailable(UserError):
    """A runtime is not installed, does not run on this device, or refused the graph (one line naming it)."""


def import_runtime(name: str):
    """Import the optional package ``name`` or raise :class:`RuntimeUnavailable` naming it (and its pip name)."""
    from sdsd.runtimes.registry import RUNTIMES

    try:
        module = importlib.import_module(name)
    except ImportError:
        module = None
    if module is None:
        package = RUNTIMES[name].package if name in RUNTIMES else name
        raise RuntimeUnavailable(f"runtime {name} is not installed (pip install {package}); "
                                 "use --runtime torch or install it")
    return module


def runtime_version(name: str) -> str:
    module = import_runtime(name)
    return str(getattr(module, "__version__", None) or module.get_version())


class Backend:
    """How the network's two stages run. Subclasses implement :meth:`features` and :meth:`windows`.

    Attributes:
        name: the runtime's name (recorded in logs and metrics).
        precision: ``fp32``, ``bf16`` or ``fp16``.
        device: where inputs must be.
        nframes, center: the network's window width and reference index.
    """

    name = "abstract"
    precision = "fp32"
    device: torch.device
    nframes: int
    center: int

    def features(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-frame pyramid features of ``T x 3 x H x W`` frames: ``(L1, L2, L3)``, each ``T x C x h x w``."""
        raise NotImplementedError

    def windows(self, feats: tuple[torch.Tensor, ...], base: torch.Tensor) -> Outputs:
        """``(enhanced, illumination, denoised)``, each ``B x 3 x H x W`` float32, from ``B x N x C x h x w``
        features and the centre frames ``base`` (``B x 3 x H x W``)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What this backend is, for logs and metrics JSON."""
        return {"runtime": self.name, "precision": self.precision, "device": str(self.device)}


class TorchBackend(Backend):
    """Eager PyTorch.

    Args:
        net: an SDSD-Net (``extract_features`` / ``forward_features``); moved to ``device`` and put in eval mode
            (its training mode is restored by :meth:`close`).
        device: where to compute (default: the network's device).
        precision: ``fp32`` (default), ``bf16`` or ``fp16`` (autocast; fp16 needs CUDA).
        conv_backend: ``auto``, ``winograd``, ``channels_last`` or ``nchw`` (:mod:`sdsd.archs.fastconv`, same
            numbers up to float rounding), or ``None`` to run the network as it is (validation during training
            uses the training network unchanged).
    """

    name = "torch"

    def __init__(self, net: nn.Module, device: torch.device | str | None = None, precision: str = "fp32",
                 conv_backend: str | None = "auto"):
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        if precision == "fp16" and self.device.type != "cuda":
            raise UserError("precision fp16 needs a CUDA device; use bf16 on the CPU")
        self.precision = precision
        self._was_training = net.training
        self.net = net.to(self.device).eval()
        self.conv_backend = (prepare_for_inference(self.net, self.device, conv_backend)
                             if conv_backend is not None else "as is")
        self.nframes, self.center = int(net.nframes), int(net.center)

    def _autocast(self):
        return precision_modes.autocast(self.device, self.precision)

    def features(self, frames):
        with self._autocast():
            return self.net.extract_features(frames)

    def windows(self, feats, base):
        with self._autocast():
            outs = self.net.forward_features(feats, base)
        return tuple(o.float() for o in outs)

    def describe(self) -> dict:
        return {**super().describe(), "conv_backend": self.conv_backend}

    def close(self) -> None:
        """Give the network back in the training mode it came in."""
        self.net.train(self._was_training)


def close_backend(backend: Backend) -> None:
    """Release what ``backend`` holds (its ``close``, where it has one)."""
    close = getattr(backend, "close", None)
    if close is not None:
        close()
