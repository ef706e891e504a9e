"""SDSD-Net inference speed at the test size (512x960, 5-frame windows), against the matmul peak of the same run.

Measured in one process, so the ratios hold even on a busy machine:

* ``peak``: a square fp32 matmul (4096^2; bf16 too) gives the machine's attainable GFLOP/s;
* ``reference``: the reference implementation's structure — PCD alignment called once per frame in a Python
  loop, torchvision's ``deform_conv2d`` — with the same weights (the baseline for before/after ratios);
* ``fp32_nchw``, ``fp32_channels_last``, ``fp32_winograd``, ``bf16_channels_last``: one window through ``net(x)``;
  FLOPs are counted with FlopCounterMode (see :mod:`bench.flops`) as a direct convolution computes them and turned
  into GFLOP/s and a fraction of the matmul peak. ``fp32_winograd`` runs the 3x3 convs with NNPACK's Winograd
  kernels (:mod:`sdsd.archs.fastconv`), which need fewer multiplications than those FLOPs, so its "fraction of
  peak" is an effective figure and can exceed 100%;
* ``kernels`` / ``stages``: where the time of the fastest fp32 variant goes (convolutions, deformable-conv
  matmul and sampling, everything else; feature extraction, PCD, TSA, reconstruction);
* ``streaming``: :meth:`sdsd.inference.Engine.stream` over a clip (each frame's features computed once and
  reused by the overlapping windows), seconds per frame and the speed-up over the reference forward;
* ``bf16_accuracy``: PSNR of fp32 and bf16 outputs on darkened photographs (skimage) against the originals,
  and of bf16 against fp32.

The network has random weights (with non-zero offset predictors so alignment really samples off-grid); speed
does not depend on the weights. Run: ``python -m bench --only network`` or ``python bench/network_speed.py``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from contextlib import contextmanager
from unittest import mock

import numpy as np
import torch

from bench.flops import count_flops
from sdsd.archs.fastconv import use_winograd
from sdsd.metrics import calculate_psnr
from sdsd.utils.image import to_uint8

PUBLISHED = {"which_model_G": "denoise_illumination_enhance", "nf": 64, "nframes": 5, "groups": 8, "front_RBs": 5,
             "back_RBs": 10, "w_TSA": True}
TINY = {"which_model_G": "denoise_illumination_enhance", "nf": 8, "nframes": 5, "groups": 2, "front_RBs": 1,
        "back_RBs": 1, "w_TSA": True}
#: The reference-style forward measured earlier on the 2-core development CPU (s per 512x960 output frame).
REFERENCE_SECONDS_NOTE = 12.0

FEATURE_MODULES = ("conv_first_1", "conv_first_2", "conv_first_3", "feature_extraction", "fea_L2_conv1",
                   "fea_L2_conv2", "fea_L3_conv1", "fea_L3_conv2")


# -- helpers ------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn, repeats: int, device: torch.device, warmup: int = 0) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(size: int, dtype: torch.dtype, device: torch.device, repeats: int = 3) -> dict:
    """GFLOP/s of a ``size x size`` matmul (multiply-add = 2 FLOPs)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    seconds = best_time(lambda: a @ b, repeats, device, warmup=1)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "seconds": seconds,
            "gflops": 2 * size**3 / seconds / 1e9}


def build_net(opts: dict, device: torch.device) -> torch.nn.Module:
    """The network with seeded random weights; offset predictors get small non-zero weights."""
    import sdsd

    torch.manual_seed(0)
    net = sdsd.build_network(dict(opts))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv_offset_mask" in name:
                p.normal_(0, 0.01)
    return net.to(device).eval()


@contextmanager
def torchvision_dcn():
    """Make every ``ModulatedDeformConvPack`` call torchvision's ``deform_conv2d`` (as the reference does)."""
    from torchvision.ops import deform_conv2d as tv_deform_conv2d

    import dcn.modules

    with mock.patch.object(dcn.modules, "deform_conv2d", tv_deform_conv2d):
        yield


def reference_forward(net: torch.nn.Module, x: torch.Tensor):
    """The reference implementation's structure with ``net``'s weights: batched feature extraction, then PCD
    alignment once per frame in a Python loop on cloned slices (torchvision's DCN), then TSA and reconstruction."""
    b, n = x.shape[:2]
    c = net.center
    with torchvision_dcn():
        feats = net.extract_features(x.reshape(b * n, *x.shape[2:]))
        feats = [f.view(b, n, *f.shape[1:]) for f in feats]
        ref = [f[:, c].clone() for f in feats]
        aligned = [net.pcd_align([f[:, i].clone() for f in feats], ref) for i in range(n)]
        aligned = torch.stack(aligned, dim=1)
        fea = net.tsa_fusion(aligned) if net.w_TSA else net.tsa_fusion(aligned.flatten(1, 2))
        noise = net._reconstruct(fea, "_denoise")
        ill_raw = net._reconstruct(fea, "")
    base = x[:, c]
    denoised = base - noise
    illumination = torch.clamp(torch.maximum(ill_raw, base), max=1.0)
    return denoised / torch.clamp(illumination, 0.001, 1.0), illumination, denoised


def _group_stages(by_stage: dict) -> dict:
    groups = {"features": 0, "pcd_align": 0, "tsa_fusion": 0, "reconstruction": 0}
    for name, flops in by_stage.items():
        if name in FEATURE_MODULES:
            groups["features"] += flops
        elif name in ("pcd_align", "tsa_fusion"):
            groups[name] += flops
        else:
            groups["reconstruction"] += flops
    return groups


def _rate(flops: float, seconds: float, peak: float) -> dict:
    gflops = flops / seconds / 1e9 if seconds > 0 else float("nan")
    return {"seconds": seconds, "gflop": flops / 1e9, "gflops": gflops, "fraction_of_peak": gflops / peak}


def kernel_breakdown(net, x, flops: dict, peak: float) -> dict:
    """Profile one CPU forward; time and achieved GFLOP/s per kind of kernel."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        net(x)
        wall = time.perf_counter() - start
    events = {e.key: e for e in prof.key_averages()}

    def total(key):
        return events[key].cpu_time_total / 1e6 if key in events else 0.0

    def self_time(key):
        return events[key].self_cpu_time_total / 1e6 if key in events else 0.0

    by_op = flops["by_op"]
    conv_s = total("aten::convolution") + total("aten::_nnpack_spatial_convolution")
    bmm_s, sample_s = self_time("aten::bmm"), self_time("aten::grid_sampler_2d")
    out = {
        "convolution": _rate(by_op.get("convolution", 0), conv_s, peak),
        "dcn_matmul (bmm)": _rate(by_op.get("bmm", 0), bmm_s, peak),
        "dcn_sampling (grid_sampler_2d)": {"seconds": sample_s, "samples": flops["dcn_samples"],
                                           "gsamples_per_s": flops["dcn_samples"] / max(sample_s, 1e-9) / 1e9},
        "other (elementwise, copies, pooling, resize)": {"seconds": max(wall - conv_s - bmm_s - sample_s, 0.0)},
        "profiled_wall_seconds": wall,
    }
    return out


def stage_breakdown(net, x, flops: dict, peak: float, device: torch.device) -> dict:
    """Time feature extraction, PCD, TSA and reconstruction of one window (hooks on the stage modules)."""
    marks: dict[str, float] = {}

    def pre(name):
        def hook(*_):
            _sync(device)
            marks[name + "_start"] = time.perf_counter()

        return hook

    def post(name):
        def hook(*_):
            _sync(device)
            marks[name] = time.perf_counter() - marks[name + "_start"]

        return hook

    handles = []
    for name in ("pcd_align", "tsa_fusion"):
        mod = getattr(net, name)
        handles += [mod.register_forward_pre_hook(pre(name)), mod.register_forward_hook(post(name))]
    b, n = x.shape[:2]
    try:
        with torch.no_grad():
            _sync(device)
            t0 = time.perf_counter()
            feats = net.extract_features(x.reshape(b * n, *x.shape[2:]))
            _sync(device)
            t1 = time.perf_counter()
            net.forward_features(tuple(f.view(b, n, *f.shape[1:]) for f in feats), x[:, net.center])
            _sync(device)
            t2 = time.perf_counter()
    finally:
        for h in handles:
            h.remove()
    seconds = {"features": t1 - t0, "pcd_align": marks["pcd_align"], "tsa_fusion": marks["tsa_fusion"]}
    seconds["reconstruction"] = (t2 - t1) - seconds["pcd_align"] - seconds["tsa_fusion"]
    grouped = _group_stages(flops["by_stage"])
    return {k: _rate(grouped[k], seconds[k], peak) for k in seconds}


def _photo_clip(size: tuple[int, int], frames: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Short 'videos' panned over skimage photographs: (darkened uint8 frames, original uint8 frames)."""
    from skimage import data

    h, w = size
    clips_low, clips_gt = [], []
    for name in ("astronaut", "chelsea", "coffee"):
        img = np.asarray(getattr(data, name)())[..., :3]
        scale = max(h / img.shape[0], (w + 4 * frames) / img.shape[1])
        if scale > 1:
            import cv2

            img = cv2.resize(img, (math.ceil(img.shape[1] * scale), math.ceil(img.shape[0] * scale)))
        gt = [np.ascontiguousarray(img[:h, 4 * i:4 * i + w]) for i in range(frames)]
        low = [np.clip((f.astype(np.float32) / 255) ** 1.6 * 0.25 * 255, 0, 255).round().astype(np.uint8) for f in gt]
        clips_low.append(low)
        clips_gt.append(gt)
    return clips_low, clips_gt


def bf16_accuracy(net, size: tuple[int, int], device: torch.device) -> dict:
    """PSNR (uint8, as published) of fp32 and bf16-autocast outputs on darkened photographs against the originals."""
    nframes, c = net.nframes, net.center
    lows, gts = _photo_clip(size, nframes)
    fp32, bf16, cross = [], [], []
    with torch.no_grad():
        for low, gt in zip(lows, gts):
            x = torch.from_numpy(np.stack(low)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0).to(device)
            out32 = net(x)[0]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out16 = net(x)[0].float()
            u8 = [to_uint8(o[0]).permute(1, 2, 0).cpu().numpy() for o in (out32, out16)]
            fp32.append(calculate_psnr(u8[0], gt[c]))
            bf16.append(calculate_psnr(u8[1], gt[c]))
            cross.append(calculate_psnr(u8[1], u8[0]))
    return {"size": list(size), "images": ["astronaut", "chelsea", "coffee"], "psnr_fp32": float(np.mean(fp32)),
            "psnr_bf16": float(np.mean(bf16)), "psnr_delta_db": float(np.mean(bf16) - np.mean(fp32)),
            "psnr_bf16_vs_fp32": float(np.mean(cross)),
            "note": "random weights: the PSNR against the originals is low; the delta and bf16-vs-fp32 are the point"}


def streaming(net, size: tuple[int, int], frames: int, device: torch.device, amp: str | None = None,
              conv_backend: str = "auto") -> dict:
    """Frames/s of the engine's streaming path (features once per frame, reused by the N overlapping windows)."""
    from sdsd.inference import Engine, TorchBackend

    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 64, (*size, 3), dtype=np.uint8) for _ in range(frames)]
    # No separate warm-up: the caller has already run the network at this size. The clip's first output needs the
    # features of the first N//2 + 1 frames, its last ones none, so time / frames is the steady per-frame cost.
    backend = TorchBackend(net, device, precision=amp or "fp32", conv_backend=conv_backend)
    engine = Engine(backend)
    _sync(device)
    start = time.perf_counter()
    count = sum(1 for _ in engine.stream(clip))
    _sync(device)
    seconds = time.perf_counter() - start
    return {"frames": count, "size": list(size), "amp": amp or "fp32", "conv_backend": backend.conv_backend,
            "seconds_per_frame": seconds / count,
            "frames_per_s": count / seconds}


def _bf16_probe(device: torch.device) -> dict:
    """One 64-channel 3x3 conv in fp32 and under bf16 autocast (channels_last): is bf16 worth timing here?"""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).to(memory_format=torch.channels_last)
    x = torch.rand(1, 64, 64, 120, device=device).contiguous(memory_format=torch.channels_last)
    flops = 2 * 64 * 64 * 9 * 64 * 120
    with torch.no_grad():
        fp32 = best_time(lambda: conv(x), 2, device, warmup=1)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            bf16 = best_time(lambda: conv(x), 2, device, warmup=1)
    return {"fp32_gflops": flops / fp32 / 1e9, "bf16_gflops": flops / bf16 / 1e9}


# -- the benchmark ------------------------------------------------------------------------------------------------


def run(quick: bool = False, tiny: bool = False, size: tuple[int, int] | None = None, repeats: int | None = None,
        device: str | None = None) -> dict:
    """Measure the network; returns a JSON-able dict (see the module docstring for the fields).

    Args:
        quick: smaller frames (128x240), fewer repeats, a smaller matmul.
        tiny: the tiny test network (nf=8) at 32x48 — exercises every code path in seconds.
        size: override the frame size ``(H, W)`` (multiples of 16).
        repeats: timed repeats per variant (best is kept).
        device: ``cpu`` or ``cuda`` (default: CUDA when available).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    opts = TINY if tiny else PUBLISHED
    if size is None:
        size = (32, 48) if tiny else (128, 240) if quick else (512, 960)
    repeats = repeats or (1 if quick or tiny else 2)
    h, w = size
    res: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                 f"cpu ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})",
                 "network": {k: v for k, v in opts.items() if k != "which_model_G"}, "frame": [h, w],
                 "window": opts["nframes"], "repeats": repeats}

    mm = 256 if tiny else 1024 if quick else 4096
    # The peak is measured before and after the network timings and the higher figure is used: on a shared
    # machine that is the closest estimate of what the hardware gives a single process.
    peak_start = matmul_peak(mm, torch.float32, dev)
    # bf16 matmul without hardware bf16 (AVX2 CPUs) runs at a few GFLOP/s; keep that measurement short.
    bf16_mm = mm if dev.type == "cuda" else min(mm, 512)
    res["peak"] = {"bf16": matmul_peak(bf16_mm, torch.bfloat16, dev, repeats=1)}

    net = build_net(opts, dev)
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    net_wg = copy.deepcopy(net)
    winograd = dev.type == "cpu" and use_winograd(net_wg) > 0
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(1, opts["nframes"], 3, h, w, generator=gen) * 0.3).to(dev)

    with torch.no_grad():
        # The counting pass doubles as the warm-up of the NCHW path.
        (out_nchw, *_), flops = count_flops(net, net, x)
        res["flops"] = {"total_gflop": flops["total"] / 1e9,
                        "by_op_gflop": {k: v / 1e9 for k, v in flops["by_op"].items()},
                        "by_stage_gflop": {k: v / 1e9 for k, v in _group_stages(flops["by_stage"]).items()},
                        "dcn": flops["dcn"], "dcn_gsamples": flops["dcn_samples"] / 1e9}
        total = flops["total"]
        out_cl = net_cl(x)[0]  # warm-up and check
        res["channels_last_max_rel_diff"] = float((out_cl - out_nchw).abs().max() / out_nchw.abs().max())
        if winograd:
            out_wg = net_wg(x)[0]
            res["winograd_max_rel_diff"] = float((out_wg - out_nchw).abs().max() / out_nchw.abs().max())

        def bf16_forward():
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                return net_cl(x)

        calls = {"fp32_nchw": lambda: net(x), "fp32_channels_last": lambda: net_cl(x)}
        if winograd:
            calls["fp32_winograd"] = lambda: net_wg(x)
        probe = _bf16_probe(dev)
        res["bf16_probe_conv"] = probe
        if probe["bf16_gflops"] >= 0.5 * probe["fp32_gflops"]:
            bf16_forward()
            calls["bf16_channels_last"] = bf16_forward
        else:
            res["bf16_skipped"] = (f"bf16 autocast conv runs at {probe['bf16_gflops']:.1f} GFLOP/s vs fp32 "
                                   f"{probe['fp32_gflops']:.1f} on this {res['device']}: no native bf16, not timed "
                                   "at full size")
        # The reference's check run is also its warm-up; it is then timed interleaved with the others.
        ref_out = reference_forward(net, x)[0]
        res["reference_max_rel_diff"] = float((ref_out - out_nchw).abs().max() / out_nchw.abs().max())
        calls = {"reference": lambda: reference_forward(net, x), **calls}
        variants = {}
        # Interleave the variants (and the matmul peak) so that a change of machine load hits them alike.
        peaks = [peak_start]
        for name in calls:
            variants[name] = math.inf
        for _ in range(repeats):
            for name, fn in calls.items():
                variants[name] = min(variants[name], best_time(fn, 1, dev))
            peaks.append(matmul_peak(mm, torch.float32, dev, repeats=1))

    res["peak"] = {"fp32": max(peaks, key=lambda p: p["gflops"]),
                   "fp32_all_gflops": [p["gflops"] for p in peaks], **res["peak"]}
    peak = res["peak"]["fp32"]["gflops"]
    ref_s = variants["reference"]
    res["forward"] = {name: {**_rate(total, s, peak), "speedup_vs_reference": ref_s / s}
                      for name, s in variants.items()}
    fp32_nets = {"fp32_nchw": (net, "nchw"), "fp32_channels_last": (net_cl, "channels_last")}
    if winograd:
        fp32_nets["fp32_winograd"] = (net_wg, "winograd")
    fastest = min(fp32_nets, key=lambda k: variants[k])
    res["fastest_fp32"] = fastest
    best_net, backend = fp32_nets[fastest]
    if dev.type == "cpu":
        res["kernels"] = kernel_breakdown(best_net, x, flops, peak)
    else:
        res["kernels"] = "profiled on CPU only"
    res["stages"] = stage_breakdown(best_net, x, flops, peak, dev)

    frames = 8 if tiny else 6
    res["streaming"] = streaming(best_net, size, frames, dev, conv_backend=backend)
    res["streaming"]["speedup_vs_reference_forward"] = ref_s / res["streaming"]["seconds_per_frame"]
    res["streaming"]["speedup_vs_12s"] = REFERENCE_SECONDS_NOTE / res["streaming"]["seconds_per_frame"] \
        if size == (512, 960) and opts is PUBLISHED else None

    acc_size = (32, 48) if tiny else (64, 96) if quick or "bf16_skipped" in res else (128, 192)
    res["bf16_accuracy"] = bf16_accuracy(net_cl, acc_size, dev)
    return res


def summary_rows(res: dict) -> list[tuple[str, str]]:
    """(label, value) rows for the console table."""
    rows = []
    pk = res["peak"]
    rows.append(("matmul peak fp32", f"{pk['fp32']['gflops']:.1f} GFLOP/s ({pk['fp32']['size']}^2)"))
    rows.append(("matmul peak bf16", f"{pk['bf16']['gflops']:.1f} GFLOP/s ({pk['bf16']['size']}^2)"))
    fl = res["flops"]
    rows.append(("FLOPs per output frame", f"{fl['total_gflop']:.1f} GFLOP (dcn {fl['dcn']['analytic'] / 1e9:.1f}, "
                                          f"{fl['dcn']['mode'].split(' (')[0]})"))
    for name, v in res["forward"].items():
        effective = " (effective: Winograd needs fewer multiplications)" if name == "fp32_winograd" else ""
        rows.append((f"forward {name}", f"{v['seconds']:.2f} s/frame  {v['gflops']:.1f} GFLOP/s  "
                                        f"{100 * v['fraction_of_peak']:.0f}% of peak  "
                                        f"x{v['speedup_vs_reference']:.2f} vs reference{effective}"))
    if "bf16_skipped" in res:
        rows.append(("forward bf16", res["bf16_skipped"]))
    st = res["streaming"]
    rows.append(("streaming (feature reuse)", f"{st['seconds_per_frame']:.2f} s/frame  {st['frames_per_s']:.3f} "
                                              f"frames/s  x{st['speedup_vs_reference_forward']:.2f} vs reference  "
                                              f"({st['conv_backend']} convs)"))
    if isinstance(res["kernels"], dict):
        for name, v in res["kernels"].items():
            if isinstance(v, dict) and "gflops" in v:
                rows.append((f"kernel {name}", f"{v['seconds']:.2f} s  {v['gflops']:.1f} GFLOP/s  "
                                               f"{100 * v['fraction_of_peak']:.0f}% of peak"))
            elif isinstance(v, dict):
                rows.append((f"kernel {name}", f"{v['seconds']:.2f} s"))
    for name, v in res["stages"].items():
        rows.append((f"stage {name}", f"{v['seconds']:.2f} s  {v['gflop']:.1f} GFLOP  {v['gflops']:.1f} GFLOP/s  "
                                      f"{100 * v['fraction_of_peak']:.0f}% of peak"))
    acc = res["bf16_accuracy"]
    rows.append(("bf16 accuracy", f"PSNR fp32 {acc['psnr_fp32']:.2f} dB, bf16 {acc['psnr_bf16']:.2f} dB "
                                  f"(delta {acc['psnr_delta_db']:+.3f}), "
                                  f"bf16 vs fp32 {acc['psnr_bf16_vs_fp32']:.1f} dB"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="128x240 frames, one repeat")
    parser.add_argument("--tiny", action="store_true", help="tiny network at 32x48 (a smoke test)")
    args = parser.parse_args()
    res = run(quick=args.quick, tiny=args.tiny)
    for label, value in summary_rows(res):
        print(f"{label:<48} {value}")
    print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
