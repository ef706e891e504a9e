"""Deformable convolution for non-CUDA tensors, built only from standard PyTorch ops.

The maths is that of ``torchvision.ops.deform_conv2d``: every kernel point of every output pixel samples the input
bilinearly at ``(out_y * stride - pad + i * dilation + dy, out_x * stride - pad + j * dilation + dx)``, with zeros
outside the image (torchvision's extra cut-off at ``y <= -1``, ``y >= H`` and likewise for x only ever zeroes values
that zero padding makes zero anyway; the offset gradient has no cut-off, so a sample exactly on row -1 still gets
the difference towards row 0). The samples, scaled by the modulation mask, form a column tensor that one (grouped)
matmul turns into the output.

Sampling goes through ``grid_sample`` (vectorised and multi-threaded in ATen), which is several times faster than
torchvision's scalar CPU kernel. ``grid_sample``'s own grid gradient picks the side of the finite difference from
its internally re-normalised coordinate, which is off by rounding at integer positions (every position, when the
offsets are zero); the offset gradient is therefore computed here from samples on the integer rows/columns that
bracket each position, which reproduces torchvision's forward-difference convention exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Upper bound, in bytes, of one column-sized buffer (``N x C*kh*kw x rows x W_out``). Larger problems are processed
#: in chunks over the batch and, when one image alone exceeds it, over output rows. The forward pass holds one such
#: buffer at a time, the backward pass up to four.
COLUMN_BUFFER_BYTES = 256 * 2**20

_BILINEAR = 0
_ZEROS = 0


def _plan_chunks(batch: int, rows: int, bytes_per_row: int) -> list[tuple[int, int, int, int]]:
    """Splits ``batch x rows`` into ``(b0, b1, r0, r1)`` blocks whose column buffer fits COLUMN_BUFFER_BYTES."""
    limit = COLUMN_BUFFER_BYTES
    per_image = bytes_per_row * rows
    if per_image <= limit:
        step = max(1, limit // max(per_image, 1))
        return [(b0, min(b0 + step, batch), 0, rows) for b0 in range(0, batch, step)]
    row_step = max(1, limit // max(bytes_per_row, 1))
    return [(b, b + 1, r0, min(r0 + row_step, rows)) for b in range(batch) for r0 in range(0, rows, row_step)]


class _Geometry:
    """Shapes and hyper-parameters shared by the forward and backward passes."""

    def __init__(self, input, offset, weight, stride, padding, dilation):
        self.batch, self.in_channels, self.height, self.width = input.shape
        self.out_channels, self.channels_per_group, self.kh, self.kw = weight.shape
        self.groups = self.in_channels // self.channels_per_group
        self.kernel_points = self.kh * self.kw
        self.out_h, self.out_w = offset.shape[-2:]
        self.deform_groups = offset.shape[1] // (2 * self.kernel_points)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        # grid_sample with align_corners=True cannot address a size-1 axis; a zero row/column appended there is
        # exactly the zero padding torchvision samples from, so the result is unchanged.
        self.sample_h, self.sample_w = max(self.height, 2), max(self.width, 2)

    def sampling_input(self, input: torch.Tensor) -> torch.Tensor:
        """Returns ``input`` reshaped to ``(N*deform_groups, C/deform_groups, H', W')`` for grid_sample."""
        pad_h, pad_w = self.sample_h - self.height, self.sample_w - self.width
        if pad_h or pad_w:
            input = F.pad(input, (0, pad_w, 0, pad_h))
        return input.reshape(
            input.shape[0] * self.deform_groups, self.in_channels // self.deform_groups, self.sample_h, self.sample_w
        )

    def _bases(self, r0: int, r1: int, dtype, device):
        """Offset-free positions of the kernel points: ``(kh*kw, rows, 1)`` for y and ``(kh*kw, 1, W_out)`` for x."""
        sh, sw = self.stride
        ph, pw = self.padding
        dh, dw = self.dilation
        ki = torch.arange(self.kh, dtype=dtype, device=device).repeat_interleave(self.kw) * dh
        kj = torch.arange(self.kw, dtype=dtype, device=device).repeat(self.kh) * dw
        rows = torch.arange(r0, r1, dtype=dtype, device=device) * sh - ph
        cols = torch.arange(self.out_w, dtype=dtype, device=device) * sw - pw
        return ki.view(-1, 1, 1) + rows.view(1, -1, 1), kj.view(-1, 1, 1) + cols.view(1, 1, -1)

    def _offsets(self, offset: torch.Tensor, b0: int, b1: int, r0: int, r1: int):
        off = offset[b0:b1].view(b1 - b0, self.deform_groups, self.kernel_points, 2, self.out_h, self.out_w)
        off = off[..., r0:r1, :]
        return off[:, :, :, 0], off[:, :, :, 1]

    def positions(self, offset: torch.Tensor, b0: int, b1: int, r0: int, r1: int):
        """Sampling positions ``(y, x)``, each ``(n, deform_groups, kh*kw, rows, W_out)``, of one chunk."""
        base_y, base_x = self._bases(r0, r1, offset.dtype, offset.device)
        off_y, off_x = self._offsets(offset, b0, b1, r0, r1)
        return off_y + base_y, off_x + base_x

    def _scales(self) -> tuple[float, float]:
        return 2.0 / (self.sample_h - 1), 2.0 / (self.sample_w - 1)

    def offset_grid(self, offset: torch.Tensor, b0: int, b1: int, r0: int, r1: int) -> torch.Tensor:
        """Normalised sampling grid of a chunk straight from the offsets (one pass per coordinate)."""
        sy, sx = self._scales()
        base_y, base_x = self._bases(r0, r1, offset.dtype, offset.device)
        off_y, off_x = self._offsets(offset, b0, b1, r0, r1)
        n, g, k, r, w = off_y.shape
        if torch.compiler.is_compiling():  # the same values; torch.compile cannot trace a strided ``out=``
            grid = torch.stack((torch.add(base_x * sx - 1.0, off_x, alpha=sx),
                                torch.add(base_y * sy - 1.0, off_y, alpha=sy)), dim=-1)
            return grid.view(n * g, k * r, w, 2)
        grid = offset.new_empty(*off_y.shape, 2)
        torch.add(base_x * sx - 1.0, off_x, alpha=sx, out=grid[..., 0])
        torch.add(base_y * sy - 1.0, off_y, alpha=sy, out=grid[..., 1])
        return grid.view(n * g, k * r, w, 2)

    def grid(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Normalised grid ``(n*deform_groups, kh*kw*rows, W_out, 2)`` for ``grid_sample(align_corners=True)``."""
        sy, sx = self._scales()
        n, g, k, r, w = y.shape
        minus_one = y.new_tensor(-1.0)
        if torch.compiler.is_compiling():  # the same values; torch.compile cannot trace a strided ``out=``
            grid = torch.stack((torch.add(minus_one, x, alpha=sx), torch.add(minus_one, y, alpha=sy)), dim=-1)
            return grid.view(n * g, k * r, w, 2)
        grid = y.new_empty(n, g, k, r, w, 2)
        torch.add(minus_one, x, alpha=sx, out=grid[..., 0])
        torch.add(minus_one, y, alpha=sy, out=grid[..., 1])
        return grid.view(n * g, k * r, w, 2)

    def sample(self, inp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Bilinear samples ``(n, deform_groups, C/deform_groups, kh*kw, rows*W_out)`` of a chunk."""
        cols = torch.grid_sampler_2d(inp, grid, _BILINEAR, _ZEROS, True)
        n = grid.shape[0] // self.deform_groups
        return cols.view(n, self.deform_groups, cols.shape[1], self.kernel_points, -1)

    def mask_chunk(self, mask: torch.Tensor, b0: int, b1: int, r0: int, r1: int) -> torch.Tensor:
        """Mask of a chunk, shaped ``(n, deform_groups, 1, kh*kw, rows*W_out)`` to broadcast over channels."""
        m = mask[b0:b1].view(b1 - b0, self.deform_groups, self.kernel_points, self.out_h, self.out_w)[..., r0:r1, :]
        return m.reshape(b1 - b0, self.deform_groups, 1, self.kernel_points, -1)

    def chunks(self, itemsize: int):
        bytes_per_row = self.in_channels * self.kernel_points * self.out_w * itemsize
        return _plan_chunks(self.batch, self.out_h, bytes_per_row)


def _forward(geo: _Geometry, input, offset, weight, mask):
    out = input.new_empty(geo.batch, geo.out_channels, geo.out_h, geo.out_w)
    w = weight.reshape(1, geo.groups, geo.out_channels // geo.groups, -1)
    for b0, b1, r0, r1 in geo.chunks(input.element_size()):
        n = b1 - b0
        cols = geo.sample(geo.sampling_input(input[b0:b1]), geo.offset_grid(offset, b0, b1, r0, r1))
        if mask is not None:
            cols.mul_(geo.mask_chunk(mask, b0, b1, r0, r1))
        res = torch.matmul(w, cols.view(n, geo.groups, -1, cols.shape[-1]))
        out[b0:b1, :, r0:r1] = res.view(n, geo.out_channels, r1 - r0, geo.out_w)
    return out


def _backward(geo: _Geometry, grad_out, input, offset, weight, mask, needs):
    need_input, need_offset, need_weight, need_mask = needs
    grad_input = torch.zeros_like(input) if need_input else None
    grad_offset = torch.zeros_like(offset) if need_offset else None
    grad_weight = torch.zeros_like(weight) if need_weight else None
    grad_mask = torch.zeros_like(mask) if need_mask and mask is not None else None
    w = weight.reshape(1, geo.groups, geo.out_channels // geo.groups, -1)
    cg = geo.in_channels // geo.deform_groups
    k = geo.kernel_points
    for b0, b1, r0, r1 in geo.chunks(input.element_size()):
        n, rows = b1 - b0, r1 - r0
        go = grad_out[b0:b1, :, r0:r1].reshape(n, geo.groups, geo.out_channels // geo.groups, -1)
        grad_cols = torch.matmul(w.transpose(-1, -2), go).view(n, geo.deform_groups, cg, k, -1)
        y, x = geo.positions(offset, b0, b1, r0, r1)
        inp = geo.sampling_input(input[b0:b1])
        m = geo.mask_chunk(mask, b0, b1, r0, r1) if mask is not None else None
        shape5 = (n, geo.deform_groups, 1, k, -1)

        if need_offset or need_weight or grad_mask is not None:
            y0 = torch.floor(y)
            # Samples on the two integer rows bracketing y: their difference is d(value)/dy with torchvision's
            # forward-difference convention, and their blend by the fractional part is the value itself.
            top = geo.sample(inp, geo.grid(y0, x))
            diff_y = geo.sample(inp, geo.grid(y0 + 1, x)).sub_(top)
            values = top.addcmul_(diff_y, (y - y0).reshape(shape5))
            if need_offset:
                dy = (grad_cols * diff_y).sum(2)
            del diff_y
            if grad_mask is not None:
                gm = (grad_cols * values).sum(2).view(n, geo.deform_groups, k, rows, geo.out_w)
                grad_mask.view(geo.batch, geo.deform_groups, k, geo.out_h, geo.out_w)[b0:b1, ..., r0:r1, :] = gm
            if need_weight:
                if m is not None:
                    values.mul_(m)
                cols = values.view(n, geo.groups, -1, values.shape[-1])
                grad_weight += torch.matmul(go, cols.transpose(-1, -2)).sum(0).view_as(weight)
            del values
            if need_offset:
                x0 = torch.floor(x)
                left = geo.sample(inp, geo.grid(y, x0))
                diff_x = geo.sample(inp, geo.grid(y, x0 + 1)).sub_(left)
                del left
                dx = (grad_cols * diff_x).sum(2)
                del diff_x
                dy, dx = dy.view_as(y), dx.view_as(x)
                if m is not None:
                    dy, dx = dy * m.view_as(y), dx * m.view_as(x)
                go_off = torch.stack((dy, dx), dim=3)
                view = grad_offset.view(geo.batch, geo.deform_groups, k, 2, geo.out_h, geo.out_w)
                view[b0:b1, ..., r0:r1, :] = go_off

        if need_input:
            if m is not None:
                grad_cols = grad_cols * m
            grid = geo.offset_grid(offset, b0, b1, r0, r1)
            gc = grad_cols.view(n * geo.deform_groups, cg, k * rows, geo.out_w)
            gin = torch.ops.aten.grid_sampler_2d_backward(gc, inp, grid, _BILINEAR, _ZEROS, True, [True, False])[0]
            gin = gin.view(n, geo.in_channels, geo.sample_h, geo.sample_w)[..., : geo.height, : geo.width]
            grad_input[b0:b1] += gin
    return grad_input, grad_offset, grad_weight, grad_mask


class _DeformConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, offset, weight, mask, stride, padding, dilation):
        geo = _Geometry(input, offset, weight, stride, padding, dilation)
        ctx.geo = geo
        ctx.save_for_backward(input, offset, weight, mask)
        return _forward(geo, input, offset, weight, mask)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        input, offset, weight, mask = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        gi, go, gw, gm = _backward(ctx.geo, grad_out.contiguous(), input, offset, weight, mask, needs)
        return gi, go, gw, gm, None, None, None


def deform_conv2d_cpu(input, offset, weight, bias, stride, padding, dilation, mask):
    """Deformable convolution on already validated, same-dtype, contiguous tensors (see ``dcn.deform_conv2d``)."""
    out = _DeformConv2dFunction.apply(input, offset, weight, mask, stride, padding, dilation)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
