"""SDSD-Net (``denoise_illumination_enhance``): PCD alignment, TSA fusion, and two Retinex branches.

The parameter names and the maths follow the published network exactly (docs/protocol.md#network), so the published
checkpoints load with ``strict=True``. The one structural change is speed: all frames of a window go
through feature extraction and PCD alignment as one batch instead of a Python loop, and a caller can compute
each frame's features once and reuse them across overlapping windows (:meth:`extract_features` +
:meth:`forward_features`), which gives the same numbers as :meth:`forward`.
"""

from __future__ import annotations

import torch
from torch import nn

from dcn import ModulatedDeformConvPack
from sdsd.archs.blocks import add_pair, conv_part, is_channels_last, lrelu, lrelu_, make_blocks, up2
from sdsd.errors import UserError
from sdsd.options import published_network
from sdsd.registry import ARCH_REGISTRY

# The published sizes, written once in the option schema.
_PUBLISHED = published_network()


def _conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, s, k // 2, bias=True)


def _dcn(nf: int, groups: int) -> ModulatedDeformConvPack:
    return ModulatedDeformConvPack(nf, nf, 3, stride=1, padding=1, dilation=1, deformable_groups=groups,
                                   extra_offset_mask=True)


class PCDAlign(nn.Module):
    """Pyramid, cascading and deformable alignment of neighbour features to the reference features.

    Inputs are lists ``[L1, L2, L3]`` of ``M x nf x h x w`` tensors holding every (neighbour, reference) pair
    of the batch stacked along the first axis, so one call aligns all frames of all windows. ``ref`` may instead
    hold one item per window (``M / B``-fold shared): it is then broadcast and never copied on its own.

    The four offset convolutions that read ``cat[x, ref]`` (``L3/L2/L1_offset_conv1``, ``cas_offset_conv1``) run as
    the sum of their two halves, ``conv(x, W[:, :nf]) + b + conv(ref, W[:, nf:])`` (:func:`conv_part`: the halves
    are views of the one weight, so the parameters, checkpoint keys and gradients are those of the full conv). The
    reference half is computed once per reference item, not once per pair; the neighbour half of the three pyramid
    convs depends on one frame only, so :meth:`neighbour_halves` computes it with the frame's features (what
    :meth:`DenoiseIlluminationEnhance.extract_features` returns), and a window reuses it. Any level of ``nbr`` /
    ``ref`` may therefore also be given packed, ``2 nf`` channels: the features, then their neighbour half.
    """

    #: The offset convs of the pyramid levels whose neighbour half is a per-frame quantity, in level order.
    PAIR_CONVS = ("L1_offset_conv1", "L2_offset_conv1", "L3_offset_conv1")

    def __init__(self, nf: int = 64, groups: int = 8):
        super().__init__()
        self.nf = nf
        self.L3_offset_conv1 = _conv(nf * 2, nf)
        self.L3_offset_conv2 = _conv(nf, nf)
        self.L3_dcnpack = _dcn(nf, groups)
        self.L2_offset_conv1 = _conv(nf * 2, nf)
        self.L2_offset_conv2 = _conv(nf * 2, nf)
        self.L2_offset_conv3 = _conv(nf, nf)
        self.L2_dcnpack = _dcn(nf, groups)
        self.L2_fea_conv = _conv(nf * 2, nf)
        self.L1_offset_conv1 = _conv(nf * 2, nf)
        self.L1_offset_conv2 = _conv(nf * 2, nf)
        self.L1_offset_conv3 = _conv(nf, nf)
        self.L1_dcnpack = _dcn(nf, groups)
        self.L1_fea_conv = _conv(nf * 2, nf)
        self.cas_offset_conv1 = _conv(nf * 2, nf)
        self.cas_offset_conv2 = _conv(nf, nf)
        self.cas_dcnpack = _dcn(nf, groups)

    def neighbour_halves(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The neighbour halves (bias included) of the pyramid offset convs for features ``[L1, L2, L3]``."""
        return [conv_part(getattr(self, name), level, 0) for name, level in zip(self.PAIR_CONVS, levels)]

    def unpack(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(features, neighbour half)`` of a packed ``2 nf``-channel level; ``(level, None)`` for a plain one."""
        if level.shape[1] == self.nf:
            return level, None
        fmt = torch.channels_last if is_channels_last(level) else torch.contiguous_format
        return (level[:, :self.nf].contiguous(memory_format=fmt),
                level[:, self.nf:].contiguous(memory_format=fmt))

    def forward(self, nbr: list[torch.Tensor], ref: list[torch.Tensor],
                halves: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Aligned neighbours, ``M x nf x h x w``. ``halves``: :meth:`neighbour_halves` of ``nbr`` when already
        computed (packed levels carry their own; otherwise they are computed here)."""
        unpacked = [self.unpack(level) for level in nbr]
        nbr = [level for level, _ in unpacked]
        if halves is None:
            halves = [half for _, half in unpacked]
            if any(half is None for half in halves):
                halves = self.neighbour_halves(nbr)
        ref = [self.unpack(level)[0] for level in ref]

        # Activations on fresh conv outputs run in place (nothing else holds them); the DCN outputs keep the
        # out-of-place one, as the dcn package may keep its output for its backward pass.
        off3 = lrelu_(add_pair(halves[2], conv_part(self.L3_offset_conv1, ref[2], 1, bias=False)))
        off3 = lrelu_(self.L3_offset_conv2(off3))
        fea3 = lrelu(self.L3_dcnpack([nbr[2], off3]))

        off2 = lrelu_(add_pair(halves[1], conv_part(self.L2_offset_conv1, ref[1], 1, bias=False)))
        off2 = lrelu_(self.L2_offset_conv2(torch.cat([off2, up2(off3).mul_(2)], 1)))
        off2 = lrelu_(self.L2_offset_conv3(off2))
        fea2 = self.L2_dcnpack([nbr[1], off2])
        fea2 = lrelu_(self.L2_fea_conv(torch.cat([fea2, up2(fea3)], 1)))

        off1 = lrelu_(add_pair(halves[0], conv_part(self.L1_offset_conv1, ref[0], 1, bias=False)))
        off1 = lrelu_(self.L1_offset_conv2(torch.cat([off1, up2(off2).mul_(2)], 1)))
        off1 = lrelu_(self.L1_offset_conv3(off1))
        fea1 = self.L1_dcnpack([nbr[0], off1])
        fea1 = self.L1_fea_conv(torch.cat([fea1, up2(fea2)], 1))

        off = add_pair(conv_part(self.cas_offset_conv1, fea1, 0), conv_part(self.cas_offset_conv1, ref[0], 1,
                                                                              bias=False))
        off = lrelu_(self.cas_offset_conv2(lrelu_(off)))
        return lrelu(self.cas_dcnpack([fea1, off]))


class TSAFusion(nn.Module):
    """Temporal and spatial attention fusion of N aligned frames into one feature map."""

    def __init__(self, nf: int = 64, nframes: int = 5, center: int = 2):
        super().__init__()
        self.center = center
        self.tAtt_1 = _conv(nf, nf)
        self.tAtt_2 = _conv(nf, nf)
        self.fea_fusion = _conv(nframes * nf, nf, 1)
        self.sAtt_1 = _conv(nframes * nf, nf, 1)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1)
        self.sAtt_2 = _conv(nf * 2, nf, 1)
        self.sAtt_3 = _conv(nf, nf)
        self.sAtt_4 = _conv(nf, nf, 1)
        self.sAtt_5 = _conv(nf, nf)
        self.sAtt_L1 = _conv(nf, nf, 1)
        self.sAtt_L2 = _conv(nf * 2, nf)
        self.sAtt_L3 = _conv(nf, nf)
        self.sAtt_add_1 = _conv(nf, nf, 1)
        self.sAtt_add_2 = _conv(nf, nf, 1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = aligned.shape
        emb_ref = self.tAtt_2(aligned[:, self.center])
        emb = self.tAtt_1(aligned.reshape(b * n, c, h, w)).view(b, n, c, h, w)
        prob = torch.sigmoid((emb * emb_ref.unsqueeze(1)).sum(2, keepdim=True))
        # Write the weighted frames straight into the ``B x N*C x h x w`` layout the 1x1 convs read; in
        # channels_last a plain reshape would be a second full copy.
        weighted = aligned * prob
        if is_channels_last(emb_ref):
            flat = torch.empty((b, n * c, h, w), dtype=weighted.dtype, device=weighted.device,
                               memory_format=torch.channels_last)
            flat.view(b, n, c, h, w).copy_(weighted)
            weighted = flat
        else:
            weighted = weighted.reshape(b, n * c, h, w)

        fea = lrelu_(self.fea_fusion(weighted))
        att = lrelu_(self.sAtt_1(weighted))
        att = lrelu_(self.sAtt_2(torch.cat([self.maxpool(att), self.avgpool(att)], 1)))
        att_l = lrelu_(self.sAtt_L1(att))
        att_l = lrelu_(self.sAtt_L2(torch.cat([self.maxpool(att_l), self.avgpool(att_l)], 1)))
        att_l = up2(lrelu_(self.sAtt_L3(att_l)))
        att = lrelu_(self.sAtt_3(att)) + att_l
        att = up2(lrelu_(self.sAtt_4(att)))
        att = self.sAtt_5(att)
        att_add = self.sAtt_add_2(lrelu_(self.sAtt_add_1(att)))
        return (fea * torch.sigmoid(att)).mul_(2).add_(att_add)


@ARCH_REGISTRY.register("denoise_illumination_enhance", aliases=("SDSDNet",))
class DenoiseIlluminationEnhance(nn.Module):
    """SDSD-Net. Input ``B x N x 3 x H x W`` RGB in [0, 1] (H, W multiples of 16).

    Returns ``(enhanced, illumination, denoised)``, each ``B x 3 x H x W``:
    ``denoised = centre - noise``, ``illumination = min(max(ill_raw, centre), 1)``,
    ``enhanced = denoised / clamp(illumination, 1e-3, 1)`` (the Retinex composition).

    The defaults are the published network (the option schema's ``network_G`` defaults). The option-file keys
    ``predeblur`` and ``HR_in`` are legacy keys that :func:`sdsd.archs.build_network` drops.

    Args:
        nf: feature channels. nframes: frames per window. groups: deformable groups.
        front_RBs / back_RBs: residual blocks before alignment / in each reconstruction branch.
        center: reference frame index (default ``nframes // 2``).
        w_TSA: TSA fusion (else a single 1x1 conv over the concatenated frames).
        illumination_bias: initial bias of ``conv_last`` (the illumination branch's output conv); ``None`` keeps
            PyTorch's default init, as published. It only matters when training from scratch: the composition
            ``max(ill_raw, centre)`` passes no gradient where ``ill_raw`` is below the input, so a branch that starts
            below it everywhere never learns (seen: a run stuck at 11.8 dB with white outputs). A bias above the
            input's brightness (e.g. 0.5) starts it where every pixel gets a gradient.
    """

    def __init__(self, nf: int = _PUBLISHED["nf"], nframes: int = _PUBLISHED["nframes"],
                 groups: int = _PUBLISHED["groups"], front_RBs: int = _PUBLISHED["front_RBs"],
                 back_RBs: int = _PUBLISHED["back_RBs"], center: int | None = None,
                 w_TSA: bool = _PUBLISHED["w_TSA"], illumination_bias: float | None = None):
        super().__init__()
        self.nf, self.nframes, self.groups = nf, nframes, groups
        self.center = nframes // 2 if center is None else center
        if not 0 <= self.center < nframes:
            raise UserError(f"network_G.center={center} must be within [0, nframes={nframes})")
        self.w_TSA = w_TSA

        self.conv_first_1 = _conv(3, nf)
        self.conv_first_2 = _conv(nf, nf, 3, 2)
        self.conv_first_3 = _conv(nf, nf, 3, 2)
        self.feature_extraction = make_blocks(front_RBs, nf)
        self.fea_L2_conv1 = _conv(nf, nf, 3, 2)
        self.fea_L2_conv2 = _conv(nf, nf)
        self.fea_L3_conv1 = _conv(nf, nf, 3, 2)
        self.fea_L3_conv2 = _conv(nf, nf)
        self.pcd_align = PCDAlign(nf, groups)
        if w_TSA:
            self.tsa_fusion = TSAFusion(nf, nframes, self.center)
        else:
            self.tsa_fusion = _conv(nframes * nf, nf, 1)

        for suffix in ("_denoise", ""):
            setattr(self, "recon_trunk" + suffix, make_blocks(back_RBs, nf))
            setattr(self, "upconv1" + suffix, _conv(nf, nf * 4))
            setattr(self, "upconv2" + suffix, _conv(nf, 64 * 4))
            setattr(self, "HRconv" + suffix, _conv(64, 64))
            setattr(self, "conv_last" + suffix, _conv(64, 3))
        self.pixel_shuffle = nn.PixelShuffle(2)
        if illumination_bias is not None:
            nn.init.constant_(self.conv_last.bias, float(illumination_bias))

    # -- stages -------------------------------------------------------------------------------------------------

    def pyramid(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-frame pyramid features. ``frames``: ``T x 3 x H x W`` -> ``(L1, L2, L3)``, ``T x nf x H/4|8|16``."""
        self._check_size(frames.shape[-2], frames.shape[-1])
        frames = frames.contiguous(memory_format=self._memory_format())
        l1 = lrelu_(self.conv_first_1(frames))
        l1 = lrelu_(self.conv_first_2(l1))
        l1 = lrelu_(self.conv_first_3(l1))
        l1 = self.feature_extraction(l1)
        l2 = lrelu_(self.fea_L2_conv2(lrelu_(self.fea_L2_conv1(l1))))
        l3 = lrelu_(self.fea_L3_conv2(lrelu_(self.fea_L3_conv1(l2))))
        return l1, l2, l3

    def extract_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything of a window that depends on one frame only, computed once per frame.

        ``frames``: ``T x 3 x H x W`` -> three levels, ``T x 2 nf x H/4|8|16``: each the pyramid features
        (:meth:`pyramid`, channels ``:nf``) followed by the neighbour half of that level's first offset conv
        (:meth:`PCDAlign.neighbour_halves`, channels ``nf:``), which every window holding the frame reuses.
        """
        levels = self.pyramid(frames)
        halves = self.pcd_align.neighbour_halves(list(levels))
        return tuple(torch.cat([level, half], 1) for level, half in zip(levels, halves))

    def forward_features(self, feats: tuple[torch.Tensor, ...], base: torch.Tensor):
        """Align, fuse and reconstruct from per-window features.

        Args:
            feats: the :meth:`extract_features` levels of the window's frames in order, each
                ``B x N x 2 nf x h x w`` (plain :meth:`pyramid` levels, ``B x N x nf x h x w``, work too).
            base: the centre input frame, ``B x 3 x H x W``.

        Returns:
            ``(enhanced, illumination, denoised)``, each ``B x 3 x H x W``.
        """
        b, n = feats[0].shape[:2]
        if n != self.nframes:
            raise UserError(f"the network was built for nframes={self.nframes} but got windows of {n} frames")
        c, fmt = self.center, self._memory_format()
        nbr = [f.reshape(b * n, *f.shape[2:]).contiguous(memory_format=fmt) for f in feats]
        # One reference item per window (its features only): PCD computes its halves once and broadcasts them.
        ref = [f[:, c, :self.nf].contiguous(memory_format=fmt) for f in feats]
        aligned = self.pcd_align(nbr, ref).view(b, n, self.nf, *feats[0].shape[-2:])
        if self.w_TSA:
            fea = self.tsa_fusion(aligned)
        else:
            fea = self.tsa_fusion(aligned.reshape(b, n * self.nf, *aligned.shape[-2:]))

        noise = self._reconstruct(fea, "_denoise")
        ill_raw = self._reconstruct(fea, "")
        if fmt == torch.channels_last:
            # 3-channel maps: hand back the plain layout callers expect (a negligible copy).
            noise, ill_raw = noise.contiguous(), ill_raw.contiguous()
        denoised = base - noise
        illumination = torch.clamp(torch.maximum(ill_raw, base), max=1.0)
        enhanced = denoised / torch.clamp(illumination, 0.001, 1.0)
        return enhanced, illumination, denoised

    def forward(self, x: torch.Tensor):
        """``x``: ``B x N x 3 x H x W`` -> ``(enhanced, illumination, denoised)``, each ``B x 3 x H x W``."""
        if x.dim() != 5 or x.shape[2] != 3:
            raise UserError(f"expected input of shape B x N x 3 x H x W, got {tuple(x.shape)}")
        b, n, _, h, w = x.shape
        self._check_size(h, w)
        feats = self.pyramid(x.reshape(b * n, 3, h, w))
        feats = tuple(f.view(b, n, *f.shape[1:]) for f in feats)
        return self.forward_features(feats, x[:, self.center])

    def to_channels_last(self) -> DenoiseIlluminationEnhance:
        """Store the weights channels_last (NHWC), the faster layout for oneDNN convolutions on CPU; returns self.

        Inputs may stay NCHW: :meth:`extract_features` and :meth:`forward_features` convert them once, and the whole
        network then keeps the channels_last layout. ``net.to(memory_format=torch.channels_last)`` is equivalent.
        Results equal the NCHW path up to float rounding.
        """
        return self.to(memory_format=torch.channels_last)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if is_channels_last(self.fea_L2_conv1.weight) else torch.contiguous_format

    def _reconstruct(self, fea: torch.Tensor, suffix: str) -> torch.Tensor:
        out = getattr(self, "recon_trunk" + suffix)(fea)
        out = lrelu_(self.pixel_shuffle(getattr(self, "upconv1" + suffix)(out)))
        out = lrelu_(self.pixel_shuffle(getattr(self, "upconv2" + suffix)(out)))
        out = lrelu_(getattr(self, "HRconv" + suffix)(out))
        return getattr(self, "conv_last" + suffix)(out)

    @staticmethod
    def _check_size(h: int, w: int) -> None:
        if h % 16 or w % 16:
            raise UserError(
                f"frame size {h}x{w} (HxW) is not a multiple of 16; resize it (train_size) or pad it "
                "(sdsd.enhance pads automatically)")
