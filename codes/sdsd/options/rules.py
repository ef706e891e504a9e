"""Rules that relate several option keys, run by :func:`sdsd.options.validate` on the filled-in options.

:func:`check_options` holds for every entry point (the network block must describe a buildable network whose
window width matches the dataset blocks); :func:`check_training` adds what ``train.py`` needs (run at load when
``is_train``, and by :func:`sdsd.training.train` against the world size it actually runs with). Every message is
one line naming the file, the keys and their values (each value cut to 80 characters by
:func:`sdsd.options.checks.show`, so a huge one cannot make a huge line).
"""

from __future__ import annotations

import os

from sdsd.errors import UserError
from sdsd.options.checks import show

__all__ = ["check_options", "check_training", "env_world_size"]

#: The network downsamples by 16 (two stride-2 convs, then PCD levels 2 and 3), so training crops must divide by it.
MULTIPLE = 16


def env_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``, set before the options are loaded); 1 otherwise."""
    value = os.environ.get("WORLD_SIZE", "1") or "1"
    try:
        return max(int(value), 1)
    except ValueError:
        raise UserError(f"the WORLD_SIZE environment variable is {show(value)}; it must be a process count") from None


def check_options(opt: dict, source: str = "<options>") -> None:
    """Rules for every entry point: a dataset kind per block, window width = network frames, a buildable network,
    a float PSNR only on the RGB channels.

    Raises:
        UserError: one line naming the file, the keys and the values.
    """
    protocol = opt["protocol"]
    if protocol["psnr"] == "float" and protocol["channel"] != "rgb":
        raise UserError(f"{source}: protocol.psnr is 'float' (preset {protocol['preset']}) but protocol.channel is "
                        f"{show(protocol['channel'])}; the float PSNR scores the RGB output: set protocol.channel: rgb "
                        "or protocol.psnr: uint8")
    net = opt["network_G"]
    nframes = net["nframes"]
    for phase, block in opt["datasets"].items():
        if not (block.get("type") or block.get("mode")):
            raise UserError(f"{source}: datasets.{phase} needs `type` (SDSD or SMID) or a published `mode` "
                            "(video_samesize, video_samesize1, video_samesize_smid, video_samesize_smid1)")
        if block["N_frames"] != nframes:
            raise UserError(f"{source}: datasets.{phase}.N_frames is {show(block['N_frames'])} but network_G.nframes "
                            f"is {show(nframes)}; the network takes windows of nframes frames, make them equal")
    if net["center"] is not None and net["center"] >= nframes:
        raise UserError(f"{source}: network_G.center is {show(net['center'])}; allowed: an index below "
                        f"network_G.nframes ({show(nframes)}), or null for the middle frame")
    if net["nf"] % net["groups"]:
        raise UserError(f"{source}: network_G.nf is {show(net['nf'])} but the {show(net['groups'])} network_G.groups "
                        "must divide it (each deformable group takes nf / groups channels); change nf or groups")


def require_train_section(opt: dict, source: str = "<options>") -> None:
    """The one rule for a file that trains without a ``train`` section (raw options, or checked ones).

    Raises:
        UserError: no ``train`` section, or one without ``niter``.
    """
    train = opt.get("train") or {}
    if not train or train.get("niter") is None:
        raise UserError(f"{source}: the option file has no `train` section; train.py needs train.niter, train.lr_G, "
                        "... (see options/train/)")


def check_training(opt: dict, world_size: int | None = None, source: str = "<options>") -> None:
    """The rules ``train.py`` adds: a train section and block, a batch that divides among the processes, crops the
    network accepts, a schedule with one period per segment and one weight per restart, TSA for ``ft_tsa_only``.

    Args:
        opt: validated options.
        world_size: number of training processes; default :func:`env_world_size`.
        source: the option file, for messages.

    Raises:
        UserError: one line naming the file, the keys and the values.
    """
    world_size = env_world_size() if world_size is None else world_size
    train = opt.get("train") or {}
    require_train_section(opt, source)
    data = (opt.get("datasets") or {}).get("train")
    if data is None:
        raise UserError(f"{source}: the option file has no datasets.train block; train.py needs training data")

    if not train["noisy_copy"] and train["noise_weight"]:
        raise UserError(f"{source}: train.noisy_copy is false but train.noise_weight is "
                        f"{show(train['noise_weight'])}: the noise term is computed on the noisy copy; set "
                        "train.noise_weight: 0 or train.noisy_copy: true")

    batch = data["batch_size"]
    if batch % world_size:
        raise UserError(f"{source}: datasets.train.batch_size {show(batch)} is the global batch and must be divisible "
                        f"by the {world_size} processes; use a multiple of {world_size}")
    crop, size = data["GT_size"], data.get("train_size")
    if crop % MULTIPLE:
        raise UserError(f"{source}: datasets.train.GT_size {show(crop)} must be a multiple of {MULTIPLE} (the network "
                        f"downsamples by {MULTIPLE})")
    if size and crop > min(size):
        raise UserError(f"{source}: datasets.train.GT_size {show(crop)} is larger than the frames "
                        f"({show(size[0])}x{show(size[1])} "
                        "from datasets.train.train_size); lower GT_size")

    restarts = train.get("restarts") or []
    weights = train.get("restart_weights")
    if weights is not None and len(weights) != len(restarts):
        raise UserError(f"{source}: train.restart_weights has {len(weights)} entries for {len(restarts)} "
                        f"train.restarts ({show(weights)} vs {show(restarts)}); give one weight per restart")
    if train["lr_scheme"] == "CosineAnnealingLR_Restart":
        periods = train.get("T_period") or []
        if len(periods) < len(restarts) + 1:
            raise UserError(f"{source}: train.T_period is {show(train.get('T_period'))} but {len(restarts)} "
                            f"train.restarts need {len(restarts) + 1} periods (one per segment) for lr_scheme "
                            "CosineAnnealingLR_Restart")

    ft_tsa = train.get("ft_tsa_only") or 0
    if ft_tsa and not opt["network_G"].get("w_TSA", True):
        raise UserError(f"{source}: train.ft_tsa_only={show(ft_tsa)} needs network_G.w_TSA: true (there is no TSA "
                        "module to fine-tune); set train.ft_tsa_only: 0 or network_G.w_TSA: true")
