"""Adam as the reference uses it, with the ``ft_tsa_only`` warm start (docs/protocol.md#optimiser-and-schedules)."""

from __future__ import annotations

import torch
from torch import nn

TSA_NAME = "tsa_fusion"


def build_optimizer(net: nn.Module, train_opt: dict) -> torch.optim.Adam:
    """Adam over the network's trainable parameters.

    With ``ft_tsa_only > 0`` there are two param groups, everything else first and then the parameters whose name
    contains ``tsa_fusion``, so that :func:`apply_ft_tsa_only` can silence the first group.
    """
    lr = float(train_opt["lr_G"])
    kwargs = {"lr": lr, "betas": (float(train_opt["beta1"]), float(train_opt["beta2"])),
              "weight_decay": float(train_opt.get("weight_decay_G") or 0.0)}
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    if train_opt.get("ft_tsa_only"):
        others = [p for n, p in named if TSA_NAME not in n]
        tsa = [p for n, p in named if TSA_NAME in n]
        groups = [{"params": others, "lr": lr}, {"params": tsa, "lr": lr}]
    else:
        groups = [{"params": [p for _, p in named], "lr": lr}]
    return torch.optim.Adam(groups, **kwargs)


def apply_ft_tsa_only(optimizer: torch.optim.Optimizer, iteration: int, ft_tsa_only: int) -> None:
    """For ``iteration < ft_tsa_only`` set the first group's lr to 0, so only ``tsa_fusion`` learns.

    Called after the scheduler step of the iteration; the recursive schedule then continues from 0 for that group,
    which is the reference behaviour.
    """
    if ft_tsa_only and iteration < ft_tsa_only and len(optimizer.param_groups) > 1:
        optimizer.param_groups[0]["lr"] = 0.0
