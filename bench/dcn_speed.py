"""Speed of ``dcn.deform_conv2d`` (CPU path) against ``torchvision.ops.deform_conv2d`` on CPU.

Shape: the PCD level-1 deformable conv of the default network (5 frames x 64 channels at 128x240, 8 deformable
groups, 3x3, stride 1, padding 1, with a modulation mask). Run ``python bench/dcn_speed.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

import dcn

FULL_SHAPE = (5, 64, 128, 240)
QUICK_SHAPE = (2, 64, 64, 120)
DEFORM_GROUPS = 8


def _inputs(shape, requires_grad: bool):
    n, c, h, w = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=gen)
    offset = torch.randn(n, 2 * DEFORM_GROUPS * 9, h, w, generator=gen) * 2.0
    mask = torch.rand(n, DEFORM_GROUPS * 9, h, w, generator=gen)
    weight = torch.randn(c, c, 3, 3, generator=gen) / (3.0 * c**0.5)
    bias = torch.randn(c, generator=gen)
    tensors = [x, offset, weight, bias, mask]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return tensors


def _best_of(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def run(quick: bool = False) -> dict:
    """Times forward and forward+backward of ours and torchvision's op; returns seconds, speed-ups and errors."""
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    repeats = 2 if quick else 3
    results = {"shape": list(shape), "deformable_groups": DEFORM_GROUPS, "threads": torch.get_num_threads()}

    x, offset, weight, bias, mask = _inputs(shape, requires_grad=False)

    def forward(op):
        return lambda: op(x, offset, weight, bias, stride=1, padding=1, dilation=1, mask=mask)

    with torch.no_grad():
        results["ours_forward_s"], ours = _best_of(forward(dcn.deform_conv2d), repeats)
        results["torchvision_forward_s"], ref = _best_of(forward(tv_deform_conv2d), repeats)
    results["forward_max_rel_error"] = _max_rel(ours, ref)
    del ours, ref

    leaves = _inputs(shape, requires_grad=True)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1))

    def train_step(op):
        def step():
            out = op(*leaves[:3], leaves[3], stride=1, padding=1, dilation=1, mask=leaves[4])
            return torch.autograd.grad(out, leaves, grad_out)

        return step

    results["ours_forward_backward_s"], ours_g = _best_of(train_step(dcn.deform_conv2d), repeats)
    results["torchvision_forward_backward_s"], ref_g = _best_of(train_step(tv_deform_conv2d), repeats)
    names = ("input", "offset", "weight", "bias", "mask")
    results["grad_max_rel_error"] = {n: _max_rel(a, b) for n, a, b in zip(names, ours_g, ref_g)}
    results["forward_speedup"] = results["torchvision_forward_s"] / results["ours_forward_s"]
    results["forward_backward_speedup"] = results["torchvision_forward_backward_s"] / results["ours_forward_backward_s"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shape, fewer repeats")
    r = run(quick=parser.parse_args().quick)
    print(f"deform_conv2d CPU, input {'x'.join(map(str, r['shape']))}, {r['deformable_groups']} deformable groups, "
          f"3x3 s1 p1, mask, {r['threads']} threads (best of repeats)")
    print(f"  forward          ours {r['ours_forward_s']:.3f} s   torchvision {r['torchvision_forward_s']:.3f} s   "
          f"speed-up {r['forward_speedup']:.2f}x")
    print(f"  forward+backward ours {r['ours_forward_backward_s']:.3f} s   torchvision "
          f"{r['torchvision_forward_backward_s']:.3f} s   speed-up {r['forward_backward_speedup']:.2f}x")
    grads = ", ".join(f"{k} {v:.1e}" for k, v in r["grad_max_rel_error"].items())
    print(f"  max relative error: output {r['forward_max_rel_error']:.1e}; gradients {grads}")


if __name__ == "__main__":
    main()
