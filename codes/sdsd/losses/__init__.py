"""Losses: the summed pixel criteria (``cb``, ``l1``) and the SDSD self-supervised training objective."""

from sdsd.losses.objective import LossTerms, SDSDObjective, noisy_copy
from sdsd.losses.pixel import CharbonnierLoss, L1SumLoss, build_pixel_loss

__all__ = ["CharbonnierLoss", "L1SumLoss", "LossTerms", "SDSDObjective", "build_pixel_loss", "noisy_copy"]
