"""The SDSD training objective (paper Sec. 4: the self-supervised denoising and Retinex terms).

See also docs/protocol.md#training-objective.

One iteration sees the low-light window ``L`` (``B x N x 3 x h x w``) and the normal-light centre frame ``G``:

* a noisy copy ``L_noisy = L + (L - mu)``, ``mu`` the per-image, per-channel spatial mean of ``L``;
* both copies go through the network (the caller runs them as one batched forward);
* ``l_rec = w/2 pix(E, G) + w/2 pix(E_n, G)``, ``l_ill = w/2 L1(I, T) + w/2 L1(I_n, T)`` with the illumination
  target ``T = L_c / (G + 1e-4)`` (no gradient), ``l_noise = w pix(D_n, L_c)``;
* total ``l_rec + 0.5 l_ill + l_noise``. Every reduction is a sum.

Without the noisy copy (``train.noisy_copy: false``, not published) only ``L`` goes through the network and
``l_rec = w pix(E, G)``, ``l_ill = w L1(I, T)``, ``l_noise = 0``: each term keeps the scale it has when both copies
agree. The copy asks the network to map ``L`` and ``L + (L - mu)``, twice the contrast around the mean, to the same
``G``; with a ground truth for every frame that is a brightness ambiguity the network pays for in tone accuracy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sdsd.losses.pixel import L1SumLoss, build_pixel_loss


class LossTerms(NamedTuple):
    """The loss terms of one iteration (0-dim tensors); ``total`` is what is back-propagated."""

    l_rec: torch.Tensor
    l_ill: torch.Tensor
    l_noise: torch.Tensor
    total: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return self._asdict()


def noisy_copy(lq: torch.Tensor) -> torch.Tensor:
    """``L + (L - mu)``: the self-supervised noisy copy of a ``B x N x 3 x h x w`` window.

    ``mu`` is the mean over the two spatial axes, separately for every image and channel.
    """
    mu = lq.mean(dim=(-2, -1), keepdim=True)
    return lq + (lq - mu)


class SDSDObjective(nn.Module):
    """Combine the network outputs for the clean and the noisy copy into the SDSD loss terms.

    Args:
        pixel_criterion: ``cb`` (Charbonnier) or ``l1``; both summed.
        pixel_weight: ``w``, the weight of every pixel term.
        center: index of the centre frame in the window.
        illumination_weight: factor of ``l_ill`` in the total (published: 0.5).
        noise_weight: factor of ``l_noise`` in the total (published: 1).
    """

    def __init__(self, pixel_criterion: str = "cb", pixel_weight: float = 1.0, center: int = 2,
                 illumination_weight: float = 0.5, noise_weight: float = 1.0):
        super().__init__()
        self.pix = build_pixel_loss(pixel_criterion)
        self.l1 = L1SumLoss()
        self.weight = float(pixel_weight)
        self.center = int(center)
        self.illumination_weight = float(illumination_weight)
        self.noise_weight = float(noise_weight)

    def forward(self, clean_out, noisy_out, lq: torch.Tensor, gt: torch.Tensor) -> LossTerms:
        """Compute the terms.

        Args:
            clean_out: ``(E, I, D)`` for ``L``.
            noisy_out: ``(E_n, I_n, D_n)`` for ``L_noisy``, or ``None`` to train without the noisy copy (then the
                objective's ``noise_weight`` must be 0).
            lq: the low-light window ``L``, ``B x N x 3 x h x w``.
            gt: the normal-light centre frame ``G``, ``B x 3 x h x w``.
        """
        if noisy_out is None and self.noise_weight:
            raise ValueError("the noise term needs the noisy copy: noise_weight must be 0 without it")
        w = self.weight
        # Work in float32 even under autocast: sums over 32 x 3 x 128 x 128 elements lose digits in half precision.
        enhanced, illum = clean_out[0].float(), clean_out[1].float()
        gt, lq_c = gt.float(), lq[:, self.center].float()
        target_ill = (lq_c / (gt + 1e-4)).detach()
        if noisy_out is None:
            l_rec = w * self.pix(enhanced, gt)
            l_ill = w * self.l1(illum, target_ill)
            l_noise = torch.zeros((), device=l_rec.device)
        else:
            enhanced_n, illum_n, denoised_n = (t.float() for t in noisy_out)
            l_rec = w * 0.5 * self.pix(enhanced, gt) + w * 0.5 * self.pix(enhanced_n, gt)
            l_ill = w * 0.5 * self.l1(illum, target_ill) + w * 0.5 * self.l1(illum_n, target_ill)
            l_noise = w * self.pix(denoised_n, lq_c)
        total = l_rec + self.illumination_weight * l_ill + self.noise_weight * l_noise
        return LossTerms(l_rec, l_ill, l_noise, total)
