"""Networks: the registry-based builder and the published-checkpoint loader."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import os
import re

import torch
from torch import nn

from sdsd.errors import UserError, exception_reason
from sdsd.registry import ARCH_REGISTRY

from . import sdsd_arch  # noqa: F401  (registers denoise_illumination_enhance)

logger = logging.getLogger("sdsd")

__all__ = ["LoadReport", "build_network", "load_model", "load_network", "load_network_report",
           "network_options_from_state", "read_state_dict", "unwrap"]


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
    ``{'state_dict': ...}`` wrappers. Loads with ``weights_only=True``; a refused or unreadable file is a
    :class:`UserError` naming what torch refused (:func:`sdsd.errors.exception_reason`).

    Raises:
        UserError: the file is missing or unreadable, holds no state dict, or holds a NaN or infinite value (such
            weights enhance every frame to black); the message names the first such tensor and how many there are.
    """
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a checkpoint we can read"
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({exception_reason(exc)})") from None
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
    bad = [key for key, value in out.items() if not _all_finite(value)]
    if bad:
        raise UserError(f"{path}: {len(bad)} of its {len(out)} tensors hold NaN or infinite values (first: {bad[0]}); "
                        "the checkpoint is damaged or its training diverged, use another checkpoint")
    return out


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of a floating-point or complex tensor is finite (integer tensors always are)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return True
    return bool(torch.isfinite(tensor).all())


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`load_network_report` loaded: the checkpoint, the tensors loaded and the keys that did not match.

    ``missing`` is always empty after a successful load (a missing key is an error); ``unexpected`` lists the
    checkpoint's extra keys, which only ``strict=False`` tolerates.
    """

    path: str
    loaded: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """``{"loaded", "missing", "unexpected"}`` as numbers, e.g. for a metrics JSON."""
        return {"loaded": self.loaded, "missing": len(self.missing), "unexpected": len(self.unexpected)}


def load_network_report(net: nn.Module, path: str, strict: bool = True) -> LoadReport:
    """Load a published-format checkpoint into ``net`` (unwrapping DDP/compile wrappers) and say what was loaded.

    Every tensor of the network must come from the checkpoint, with its shape: a missing key or a shape mismatch is
    always an error, since a network with some tensors left at their random initialisation would be scored or
    trained as if it were the checkpoint's. ``strict=False`` (``path.strict_load: false``) only tolerates keys of
    the checkpoint that the network does not have, e.g. a checkpoint of a larger variant; they are logged and
    skipped. Errors are one line naming the first offending keys.

    Returns:
        The :class:`LoadReport` (loaded / missing / unexpected keys).

    Raises:
        UserError: unreadable file, NaN or infinite weights, shape mismatch, missing keys, or unexpected keys with
            ``strict=True``.
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
    if missing and not strict:
        raise UserError(f"{path} does not fit the network: {len(missing)} of its {len(own)} tensors are missing "
                        f"from the checkpoint (first: {', '.join(missing[:3])}; {len(own) - len(missing)} would load)"
                        "; even with strict_load: false every tensor of the network must be in the checkpoint, "
                        "check path.pretrain_model_G and network_G")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, first: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, first: {', '.join(unexpected[:3])}")
        raise UserError(f"{path} does not fit the network ({'; '.join(parts)}); check network_G, or use "
                        "strict_load: false when the checkpoint only has extra keys")
    if unexpected:
        logger.warning("loading %s non-strictly: %d unexpected keys skipped (first: %s)", path, len(unexpected),
                       ", ".join(unexpected[:3]))
    target.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    return LoadReport(path=path, loaded=len(own), missing=tuple(missing), unexpected=tuple(unexpected))


def load_network(net: nn.Module, path: str, strict: bool = True) -> nn.Module:
    """Load a published-format checkpoint into ``net``; returns ``net``.

    The rules are those of :func:`load_network_report` (which also returns what was loaded): every tensor of the
    network must be in the checkpoint with its shape; ``strict=False`` only tolerates extra checkpoint keys.
    """
    load_network_report(net, path, strict=strict)
    return net


def network_options_from_state(state: dict[str, torch.Tensor]) -> dict:
    """Read the ``network_G`` options of an SDSD-Net state dict off its keys and tensor shapes.

    ``nf`` (``conv_first_1`` outputs), ``front_RBs`` / ``back_RBs`` (number of residual blocks), ``groups``
    (``L3_dcnpack`` offset channels / 27), ``w_TSA`` (``tsa_fusion.fea_fusion`` present) and ``nframes``
    (fusion input channels / ``nf``); the published values for the rest. ``center`` cannot be seen in the weights
    and stays ``nframes // 2``.

    Raises:
        UserError: the state dict is not an SDSD-Net one.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise UserError(f"the checkpoint is not an SDSD-Net state_dict (no {key!r}); give an option file with "
                            "its network_G or a checkpoint saved from this network")
        return tuple(state[key].shape)

    nf = shape("conv_first_1.weight")[0]
    offsets = shape("pcd_align.L3_dcnpack.conv_offset_mask.weight")[0]
    w_tsa = "tsa_fusion.fea_fusion.weight" in state
    fusion_in = shape("tsa_fusion.fea_fusion.weight" if w_tsa else "tsa_fusion.weight")[1]

    def count(prefix: str) -> int:
        pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.conv1\.weight$")
        return len({m.group(1) for k in state if (m := pattern.match(k))})

    from sdsd.options import published_network

    return {**published_network(), "nf": nf, "nframes": fusion_in // nf, "groups": offsets // 27,
            "front_RBs": count("feature_extraction"), "back_RBs": count("recon_trunk"), "w_TSA": w_tsa}


def load_model(path: str, network_opts: dict | None = None,
               strict: bool = True) -> tuple[nn.Module, dict, LoadReport]:
    """The one network loader: build SDSD-Net and load a published-format checkpoint into it, in eval mode.

    Args:
        path: the checkpoint.
        network_opts: a validated ``network_G`` block; ``None`` reads the settings off the checkpoint
            (:func:`network_options_from_state`), so small checkpoints work as well as the published ones.
        strict: require every key to match (``path.strict_load``; ``False`` only tolerates extra checkpoint keys).

    Returns:
        ``(net, network_opts, report)``: the network, the options it was built from, and what was loaded.

    Raises:
        UserError: missing/unreadable checkpoint, one with NaN or infinite weights, or one that does not fit.
    """
    if network_opts is None:
        network_opts = network_options_from_state(read_state_dict(path))
    net = build_network(network_opts)
    report = load_network_report(net, path, strict=strict)
    return net.eval(), dict(network_opts), report
