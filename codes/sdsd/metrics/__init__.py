"""Image quality metrics: the published PSNR/SSIM (docs/protocol.md#metrics) and their protocol variants."""

from sdsd.metrics.psnr_ssim import (
    CHANNELS,
    bgr_to_y,
    calculate_psnr,
    calculate_ssim,
    gt_mean_scale,
    score_frame,
    tensor_to_uint8_bgr,
)

__all__ = [
    "CHANNELS",
    "bgr_to_y",
    "calculate_psnr",
    "calculate_ssim",
    "gt_mean_scale",
    "score_frame",
    "tensor_to_uint8_bgr",
]
