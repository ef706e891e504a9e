"""Deformable convolution (DCNv1/v2) with nothing to compile.

``deform_conv2d`` matches ``torchvision.ops.deform_conv2d``; ``ModulatedDeformConvPack`` is the DCNv2 layer that
predicts its own offsets and mask, as used by the PCD alignment module.
"""

from dcn.modules import ModulatedDeformConvPack, report_offsets
from dcn.ops import deform_conv2d

__all__ = ["ModulatedDeformConvPack", "deform_conv2d", "report_offsets"]
