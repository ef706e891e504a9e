"""Networks: the registry-based builder and the published-checkpoint loader."""

from __future__ import annotations

import copy
import inspect
import logging
import os

import torch
from torch import nn

from sdsd.errors import UserError
from sdsd.registry import ARCH_REGISTRY

from . import sdsd_arch  # noqa: F401  (registers denoise_illumination_enhance)

logger = logging.getLogger("sdsd")

__all__ = ["build_network", "load_network", "read_state_dict", "unwrap"]


def build_network(network_opts: dict) -> nn.Module:
    """Build a network from a ``network_G`` option block.

    Accepts the published block (``which_model_G: denoise_illumination_enhance`` plus its keys) or a registry
    ``type:`` key. The legacy keys of the block (``predeblur``, ``HR_in``: see ``sdsd.options.schema.LEGACY``) are
    dropped, so a published block builds unchanged. Other keys the network does not take are errors naming the key.
    """
    from sdsd.options.schema import LEGACY

    opts = {k: v for k, v in copy.deepcopy(dict(network_opts or {})).items() if k not in LEGACY["network_G"]}
    name = opts.pop("type", None)
    legacy = opts.pop("which_model_G", None)
    name = name or legacy or "denoise_illumination_enhance"
    cls = ARCH_REGISTRY.get(name)
    opts = {k: v for k, v in opts.items() if v is not None or k == "center"}
    params = inspect.signature(cls).parameters
    for key in opts:
        if key not in params:
            valid = ", ".join(p for p in params if p != "self")
            raise UserError(f"unknown option network_G.{key} for network {name!r} (valid: {valid})")
    return cls(**opts)


def unwrap(net: nn.Module) -> nn.Module:
    """Return the plain module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(net, "module") and isinstance(net.module, nn.Module):
            net = net.module
        elif hasattr(net, "_orig_mod"):
            net = net._orig_mod
        else:
            return net


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return a plain state dict.

    Accepts a plain state dict, one with ``module.`` prefixes (DataParallel/DDP) and ``{'params': ...}`` /
    ``{'state_dict': ...}`` wrappers. Loads with ``weights_only=True``.
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a checkpoint we can read"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({first[:200]})") from None
    for wrapper in ("params", "params_ema", "state_dict", "model"):
        if isinstance(data, dict) and wrapper in data and isinstance(data[wrapper], dict):
            data = data[wrapper]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise UserError(f"{path}: does not hold a network state_dict (a mapping of names to tensors)")
    out = {}
    for key, value in data.items():
        while key.startswith("module."):
            key = key[len("module."):]
        key = key.replace("_orig_mod.", "")
        out[key] = value
    return out


def load_network(net: nn.Module, path: str, strict: bool = True) -> nn.Module:
    """Load a published-format checkpoint into ``net`` (unwrapping DDP/compile wrappers).

    With ``strict=True`` every key must match; otherwise missing/unexpected keys are logged and skipped.
    A shape mismatch is always an error. Errors are one line naming the first offending keys.
    """
    target = unwrap(net)
    state = read_state_dict(path)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if shapes:
        raise UserError(f"{path} does not fit the network ({len(shapes)} shape mismatches, first: {shapes[0]}); "
                        "check network_G (nf, nframes, groups, front_RBs, back_RBs, w_TSA)")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, first: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: {', '.join(unexpected[:3])}")
        raise UserError(f"{path} does not fit the network ({'; '.join(parts)}); check network_G or use strict=False")
    if missing or unexpected:
        logger.warning("loading %s non-strictly: %d missing, %d unexpected keys", path, len(missing), len(unexpected))
    target.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return net
