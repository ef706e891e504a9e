"""Image quality metrics: the published PSNR/SSIM (docs/protocol.md#metrics) and the variants other papers use;
temporal consistency of videos (warping error, flicker: :mod:`sdsd.metrics.temporal`,
docs/protocol.md#temporal-metrics)."""

from sdsd.metrics.psnr_ssim import (
    CHANNELS,
    FLOAT_PSNR_IDENTICAL,
    GT_MEAN_RULES,
    PSNR_MODES,
    bgr_to_y,
    calculate_psnr,
    calculate_psnr_float,
    calculate_ssim,
    gt_mean_rule,
    gt_mean_scale,
    gt_mean_scale_retinexformer,
    score_frame,
    tensor_to_uint8_bgr,
)
from sdsd.metrics.temporal import (
    TEMPORAL_METRICS,
    NoReferenceMeter,
    ReferenceMeter,
    no_reference_metrics,
    sequence_metrics,
)

__all__ = [
    "CHANNELS",
    "FLOAT_PSNR_IDENTICAL",
    "GT_MEAN_RULES",
    "PSNR_MODES",
    "bgr_to_y",
    "calculate_psnr",
    "calculate_psnr_float",
    "calculate_ssim",
    "gt_mean_rule",
    "gt_mean_scale",
    "gt_mean_scale_retinexformer",
    "score_frame",
    "tensor_to_uint8_bgr",
    "TEMPORAL_METRICS",
    "NoReferenceMeter",
    "ReferenceMeter",
    "no_reference_metrics",
    "sequence_metrics",
]
