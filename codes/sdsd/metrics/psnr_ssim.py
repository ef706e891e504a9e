"""PSNR and SSIM exactly as the published SDSD numbers were computed, plus the variants of other papers.

The published protocol: every output and GT frame is turned into a uint8 BGR ``H x W x 3`` image
(:func:`tensor_to_uint8_bgr`: clamp to [0, 1], x255, round), then

* PSNR = ``20 log10(255 / sqrt(mean((a - b)^2)))`` in float64 over all pixels and channels (``inf`` when equal);
* SSIM = the MATLAB-style SSIM (11x11 Gaussian window, sigma 1.5, statistics by Gaussian filtering in float64,
  the 5-pixel border of the SSIM map cut off) averaged over all remaining pixels and all channels.

No border crop and no Y channel. Variants used by other papers (selected by the ``protocol`` options, usually through
a preset, see :mod:`sdsd.options.presets`):

* ``channel='y'`` scores the BT.601 luma (MATLAB ``rgb2ycbcr``);
* ``psnr='float'`` is the PSNR of Retinexformer's test script (:func:`calculate_psnr_float`): on the float RGB
  output clamped to [0, 1] and *not* rounded, ``10 log10(1 / mse)`` with the mean taken in float32, and 100 (not
  ``inf``) for identical images; its SSIM is still computed on the uint8 images;
* ``ssim=False`` skips SSIM (SNR-Aware's test script does not compute it); the score is then ``None``;
* ``gt_mean`` rescales the output so that its mean brightness equals the GT's before scoring, by one of two
  rules (:data:`GT_MEAN_RULES`): ``bt601`` (:func:`gt_mean_scale`: BT.601 luma of the RGB frame) or
  ``retinexformer`` (:func:`gt_mean_scale_retinexformer`: Retinexformer's optional ``--GT_mean``, whose grey
  conversion reads RGB arrays as BGR, so red is weighted 0.114 and blue 0.299).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the dataset tools score uint8 frames without loading it
    import torch

__all__ = [
    "calculate_psnr",
    "calculate_ssim",
    "tensor_to_uint8_bgr",
    "bgr_to_y",
    "gt_mean_scale",
    "score_frame",
    "calculate_psnr_float",
    "gt_mean_scale_retinexformer",
    "gt_mean_rule",
    "CHANNELS",
    "PSNR_MODES",
    "GT_MEAN_RULES",
]

CHANNELS = ("rgb", "y")
#: ``protocol.psnr``: ``uint8`` = on the rounded uint8 images (published), ``float`` = on the float output.
PSNR_MODES = ("uint8", "float")
#: ``protocol.gt_mean`` rules (``false`` = none; ``true`` = the preset's rule).
GT_MEAN_RULES = ("bt601", "retinexformer")
#: What :func:`calculate_psnr_float` returns for identical images (Retinexformer's value; the uint8 PSNR gives inf).
FLOAT_PSNR_IDENTICAL = 100.0

# BT.601 luma weights on [0, 1] R, G, B giving Y in [16, 235] (MATLAB rgb2ycbcr, first row plus offset 16).
_Y_WEIGHTS_RGB = np.array([65.481, 128.553, 24.966], dtype=np.float64)
# Luma weights of the gt_mean rescaling (the same BT.601 proportions, normalised to sum to 1).
_LUMA_RGB = (0.299, 0.587, 0.114)

_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2
_SSIM_CROP = 5  # half of the 11x11 window: the part of the map not influenced by the filter's border handling


def _check_pair(img1: np.ndarray, img2: np.ndarray) -> None:
    if img1.shape != img2.shape:
        raise ValueError(f"images differ in shape: {img1.shape} vs {img2.shape}")
    if img1.ndim not in (2, 3):
        raise ValueError(f"expected H x W or H x W x C images, got shape {img1.shape}")


def calculate_psnr_float(img1: np.ndarray, img2: np.ndarray) -> float:
    """PSNR in dB between two float images with values in [0, 1], as Retinexformer's test script computes it.

    ``10 log10(1 / mse)`` where ``mse`` is numpy's mean of the squared difference in the images' own dtype
    (float32 for frames: the float32 mean of Retinexformer is reproduced, including its summation order when the
    arrays have the same memory layout); :data:`FLOAT_PSNR_IDENTICAL` (100) when the images are identical.
    """
    _check_pair(img1, img2)
    mse = np.mean((img1 - img2) ** 2)
    if mse == 0:
        return FLOAT_PSNR_IDENTICAL
    # 1 / mse stays in the images' dtype (float32), as in the reference, before the log in double precision.
    return float(10.0 * math.log10(1 / mse))


def calculate_psnr(img1: np.ndarray, img2: np.ndarray) -> float:
    """PSNR in dB between two images with values in [0, 255] (uint8 ``H x W x C`` or ``H x W``).

    Computed in float64 over all pixels and channels; ``inf`` when the images are identical.
    """
    _check_pair(img1, img2)
    diff = img1.astype(np.float64) - img2.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0:
        return math.inf
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


@functools.lru_cache(maxsize=1)
def _ssim_kernel() -> np.ndarray:
    return cv2.getGaussianKernel(11, 1.5)


def _ssim_map(img1: np.ndarray, img2: np.ndarray) -> np.ndarray:
    """The SSIM map of two float64 images (any number of channels), with the 5-pixel border cut off."""
    kernel = _ssim_kernel()
    c = _SSIM_CROP

    # The 11x11 window is the outer product of the 1-D kernel, so filtering rows then columns equals
    # cv2.filter2D with the 2-D window (to ~1e-13 on values up to 255^2) and is about 5x faster.
    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(x, -1, kernel, kernel)[c:-c, c:-c]

    mu1, mu2 = filt(img1), filt(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = filt(img1 * img1) - mu1_sq
    sigma2_sq = filt(img2 * img2) - mu2_sq
    sigma12 = filt(img1 * img2) - mu1_mu2
    numerator = (2 * mu1_mu2 + _SSIM_C1) * (2 * sigma12 + _SSIM_C2)
    denominator = (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2)
    return numerator / denominator


def calculate_ssim(img1: np.ndarray, img2: np.ndarray) -> float:
    """MATLAB-style SSIM between two images with values in [0, 255] (uint8 ``H x W x C`` or ``H x W``).

    The SSIM map is computed per channel (11x11 Gaussian window, sigma 1.5, float64) and its 5-pixel border is
    cut; the result is the mean over all remaining pixels and channels, which for equal-size channels equals the
    mean of the per-channel SSIM values.
    """
    _check_pair(img1, img2)
    if min(img1.shape[:2]) <= 2 * _SSIM_CROP:
        raise ValueError(f"images of size {img1.shape[:2]} are too small for an 11x11 SSIM window")
    ssim_map = _ssim_map(img1.astype(np.float64), img2.astype(np.float64))
    return float(ssim_map.mean())


def tensor_to_uint8_bgr(tensor: torch.Tensor) -> np.ndarray:
    """Convert a ``3 x H x W`` RGB float tensor in [0, 1] to an ``H x W x 3`` BGR uint8 array.

    Clamp to [0, 1], multiply by 255 and round half to even (as ``numpy.round``) in float32, the published
    ``to_uint8`` conversion. A ``H x W`` tensor gives an ``H x W`` array.
    """
    import torch

    if tensor.dim() not in (2, 3):
        raise ValueError(f"expected a 3 x H x W or H x W tensor, got shape {tuple(tensor.shape)}")
    img = tensor.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu()
    if img.dim() == 2:
        return img.numpy()
    return np.ascontiguousarray(img.flip(0).permute(1, 2, 0).numpy())


def bgr_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 BGR ``H x W x 3`` image, as MATLAB ``rgb2ycbcr`` computes it for uint8 input.

    Returns a float64 ``H x W`` array holding whole numbers in [16, 235]: MATLAB returns uint8 for uint8 input,
    so the value is rounded.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 BGR image, got shape {img.shape}")
    rgb = img[..., ::-1].astype(np.float64) / 255.0
    return np.round(rgb @ _Y_WEIGHTS_RGB + 16.0)


def gt_mean_scale(output: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Scale ``output`` so that its mean luma equals the GT's (the "GT mean" protocol of some papers).

    Both are ``3 x H x W`` RGB tensors in [0, 1]; the output is clamped to [0, 1] first and after scaling.
    """
    import torch

    weights = torch.tensor(_LUMA_RGB, dtype=torch.float64, device=output.device).view(3, 1, 1)
    out = output.detach().double().clamp(0, 1)
    mean_out = (out * weights).sum(0).mean()
    mean_gt = (gt.detach().double().clamp(0, 1) * weights.to(gt.device)).sum(0).mean().to(output.device)
    scaled = out * (mean_gt / mean_out.clamp_min(1e-8))
    return scaled.clamp(0, 1).to(output.dtype)


def _hwc_view(tensor: torch.Tensor) -> np.ndarray:
    """An ``H x W x 3`` float32 numpy view of a ``3 x H x W`` tensor, without copying: the memory stays planar
    (channel-major), exactly like Retinexformer's ``tensor.permute(...).numpy()`` arrays, so numpy sums in the
    same order."""
    return tensor.detach().float().cpu().contiguous().permute(1, 2, 0).numpy()


def gt_mean_scale_retinexformer(output: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Retinexformer's optional ``--GT_mean`` rescaling, quirk included.

    In Retinexformer's test script both frames are RGB float32 arrays, yet their mean brightness is taken with
    OpenCV's ``COLOR_BGR2GRAY``, which reads channel 0 as blue: the weights become 0.114 R + 0.587 G + 0.299 B
    instead of BT.601's 0.299 R + 0.587 G + 0.114 B. The output (clamped to [0, 1]) is multiplied by
    ``mean_gt / mean_output`` (float32, as there) and clamped to [0, 1] again. A black output (mean 0, where the
    reference would divide by zero) is returned unscaled.

    Args:
        output: ``3 x H x W`` RGB float tensor (any range; clamped).
        gt: ``3 x H x W`` RGB float tensor in [0, 1].

    Returns:
        The rescaled ``3 x H x W`` float32 tensor.
    """
    import torch

    out = _hwc_view(output.detach().float().clamp(0, 1))
    mean_out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).mean()
    mean_gt = cv2.cvtColor(_hwc_view(gt), cv2.COLOR_BGR2GRAY).mean()
    if mean_out == 0:
        scaled = out
    else:
        scaled = np.clip(out * (mean_gt / mean_out), 0, 1)
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))


def gt_mean_rule(gt_mean) -> str | None:
    """The GT-mean rule named by a ``protocol.gt_mean`` value: ``None`` (off), ``bt601`` or ``retinexformer``.

    ``True`` (the older spelling) is ``bt601``; the options layer resolves ``true`` to the preset's rule first.
    """
    if gt_mean is None or gt_mean is False:
        return None
    if gt_mean is True:
        return "bt601"
    if gt_mean not in GT_MEAN_RULES:
        raise ValueError(f"gt_mean must be false, true or one of {GT_MEAN_RULES}, got {gt_mean!r}")
    return gt_mean


def score_frame(output: torch.Tensor, gt: torch.Tensor, channel: str = "rgb", gt_mean: bool | str = False,
                psnr: str = "uint8", ssim: bool = True) -> tuple[float, float | None]:
    """PSNR and SSIM of one enhanced frame against its GT under the chosen protocol.

    Args:
        output: the enhanced frame, ``3 x H x W`` RGB float (any range; clamped).
        gt: the normal-light frame, ``3 x H x W`` RGB float in [0, 1].
        channel: ``rgb`` (published: all three channels of the uint8 BGR image) or ``y`` (BT.601 luma).
        gt_mean: rescale the output's mean brightness to the GT's before scoring: ``False`` (published), or a
            rule of :data:`GT_MEAN_RULES` (``True`` = ``bt601``).
        psnr: ``uint8`` (published: on the rounded images) or ``float`` (:func:`calculate_psnr_float`, RGB only).
        ssim: compute SSIM (on the uint8 images); ``False`` gives ``None``.

    Returns:
        ``(psnr, ssim)``: Python floats, ``ssim`` ``None`` when switched off.
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if psnr not in PSNR_MODES:
        raise ValueError(f"psnr must be one of {PSNR_MODES}, got {psnr!r}")
    if psnr == "float" and channel != "rgb":
        raise ValueError("the float PSNR is defined on the RGB output only (channel='rgb')")
    rule = gt_mean_rule(gt_mean)
    if rule == "bt601":
        output = gt_mean_scale(output, gt)
    elif rule == "retinexformer":
        output = gt_mean_scale_retinexformer(output, gt)
    out_img, gt_img = tensor_to_uint8_bgr(output), tensor_to_uint8_bgr(gt)
    if channel == "y":
        out_img, gt_img = bgr_to_y(out_img), bgr_to_y(gt_img)
    if psnr == "float":
        value = calculate_psnr_float(_hwc_view(gt), _hwc_view(output.detach().float().clamp(0, 1)))
    else:
        value = calculate_psnr(out_img, gt_img)
    return value, (calculate_ssim(out_img, gt_img) if ssim else None)
