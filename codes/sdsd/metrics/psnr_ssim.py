"""PSNR and SSIM exactly as the published SDSD numbers were computed, plus protocol variants.

The published protocol: every output and GT frame is turned into a uint8 BGR ``H x W x 3`` image
(:func:`tensor_to_uint8_bgr`: clamp to [0, 1], x255, round), then

* PSNR = ``20 log10(255 / sqrt(mean((a - b)^2)))`` in float64 over all pixels and channels (``inf`` when equal);
* SSIM = the MATLAB-style SSIM (11x11 Gaussian window, sigma 1.5, statistics by Gaussian filtering in float64,
  the 5-pixel border of the SSIM map cut off) averaged over all remaining pixels and all channels.

No border crop and no Y channel. Two protocol options used by other papers are available for comparison:
``channel='y'`` scores the BT.601 luma (MATLAB ``rgb2ycbcr``) and ``gt_mean=True`` rescales the output so its
mean luma equals the GT's before scoring.
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
    "CHANNELS",
]

CHANNELS = ("rgb", "y")

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


def score_frame(output: torch.Tensor, gt: torch.Tensor, channel: str = "rgb",
                gt_mean: bool = False) -> tuple[float, float]:
    """PSNR and SSIM of one enhanced frame against its GT under the chosen protocol.

    Args:
        output: the enhanced frame, ``3 x H x W`` RGB float (any range; clamped).
        gt: the normal-light frame, ``3 x H x W`` RGB float in [0, 1].
        channel: ``rgb`` (published: all three channels of the uint8 BGR image) or ``y`` (BT.601 luma).
        gt_mean: rescale the output's mean luma to the GT's before scoring.

    Returns:
        ``(psnr, ssim)`` as Python floats.
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    if gt_mean:
        output = gt_mean_scale(output, gt)
    out_img, gt_img = tensor_to_uint8_bgr(output), tensor_to_uint8_bgr(gt)
    if channel == "y":
        out_img, gt_img = bgr_to_y(out_img), bgr_to_y(gt_img)
    return calculate_psnr(out_img, gt_img), calculate_ssim(out_img, gt_img)
