"""Pre-flight checks: option combinations that contradict each other fail before any work, naming the key."""

from __future__ import annotations

from sdsd.errors import UserError
from sdsd.registry import LOSS_REGISTRY, SCHEDULER_REGISTRY

AMP_MODES = ("none", "bf16", "fp16")
NAN_POLICIES = ("stop", "skip")


def _positive_int(value, key: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key} must be a positive integer (got {value!r})")


def check_train_options(opt: dict, world_size: int) -> None:
    """Validate the training-related options of an already schema-checked option dict.

    Raises:
        UserError: one line naming the offending key and what to do.
    """
    train = opt.get("train") or {}
    if not train:
        raise UserError("the option file has no `train` section; train.py needs train.niter, train.lr_G, ...")
    datasets = opt.get("datasets") or {}
    if "train" not in datasets:
        raise UserError("the option file has no datasets.train block; train.py needs training data")
    data = datasets["train"]
    _positive_int(train.get("niter"), "train.niter")
    for key in ("val_freq",):
        _positive_int(train.get(key), f"train.{key}")
    for key in ("print_freq", "save_checkpoint_freq"):
        _positive_int((opt.get("logger") or {}).get(key), f"logger.{key}")
    _positive_int(train.get("keep_last"), "train.keep_last", allow_none=True)
    _positive_int(train.get("val_max_frames"), "train.val_max_frames", allow_none=True)
    if not isinstance(train.get("lr_G"), (int, float)) or isinstance(train.get("lr_G"), bool) or train["lr_G"] < 0:
        raise UserError(f"train.lr_G must be a non-negative number (got {train.get('lr_G')!r})")

    if train.get("lr_scheme") not in SCHEDULER_REGISTRY:
        raise UserError(f"train.lr_scheme {train.get('lr_scheme')!r} is unknown; use one of "
                        f"{', '.join(SCHEDULER_REGISTRY.keys())}")
    if train.get("pixel_criterion") not in LOSS_REGISTRY:
        raise UserError(f"train.pixel_criterion {train.get('pixel_criterion')!r} is unknown; use cb or l1")
    restarts = train.get("restarts") or []
    weights = train.get("restart_weights")
    if weights is not None and len(weights) != len(restarts):
        raise UserError(f"train.restart_weights has {len(weights)} entries for {len(restarts)} train.restarts; "
                        "give one weight per restart")
    if train["lr_scheme"] == "CosineAnnealingLR_Restart":
        periods = train.get("T_period") or []
        if len(periods) < len(restarts) + 1:
            raise UserError(f"train.T_period has {len(periods)} entries but {len(restarts)} train.restarts need "
                            f"{len(restarts) + 1} (one period per segment)")
    if train.get("amp") not in AMP_MODES:
        raise UserError(f"train.amp {train.get('amp')!r} is unknown; use one of {', '.join(AMP_MODES)}")
    if train.get("nan_policy") not in NAN_POLICIES:
        raise UserError(f"train.nan_policy {train.get('nan_policy')!r} is unknown; use stop or skip")

    network = opt.get("network_G") or {}
    ft_tsa = train.get("ft_tsa_only") or 0
    if ft_tsa and not network.get("w_TSA", True):
        raise UserError(f"train.ft_tsa_only={ft_tsa} needs network_G.w_TSA: true (there is no TSA module to "
                        "fine-tune); set train.ft_tsa_only: 0 or network_G.w_TSA: true")

    batch = data.get("batch_size")
    _positive_int(batch, "datasets.train.batch_size")
    if batch % world_size:
        raise UserError(f"datasets.train.batch_size {batch} is the global batch and must be divisible by the "
                        f"{world_size} processes; use a multiple of {world_size}")
    crop = data.get("GT_size")
    _positive_int(crop, "datasets.train.GT_size")
    if crop % 16:
        raise UserError(f"datasets.train.GT_size {crop} must be a multiple of 16 (the network downsamples by 16)")
    size = data.get("train_size")
    if size and crop > min(size):
        raise UserError(f"datasets.train.GT_size {crop} is larger than the frames ({size[0]}x{size[1]} from "
                        "datasets.train.train_size); lower GT_size")
    nframes = network.get("nframes", 5)
    if data.get("N_frames", nframes) != nframes:
        raise UserError(f"datasets.train.N_frames {data.get('N_frames')} differs from network_G.nframes {nframes}; "
                        "make them equal")
