"""Seconds per output frame of every runtime and precision this machine runs, against the reference-style forward.

Measured in one process (ratios hold on a busy machine; absolute times do not):

* ``reference``: the reference implementation's structure (per-window plain forward, PCD once per frame in a
  Python loop, torchvision's deformable conv; :func:`bench.network_speed.reference_forward`), one window = one
  output frame, after one warm-up;
* one row per candidate of ``runtime: auto`` (PyTorch NCHW / channels_last / Winograd, OpenVINO fp32 and int8, ONNX
  Runtime; bf16 where the CPU computes it natively): the streaming cost of one output frame (the features of one
  frame + one window), one timed run after one warm-up, as :class:`sdsd.runtimes.AutoBackend` measures it, with the
  setup time (a conversion or quantization when the model is not cached yet) and the PSNR of its output against
  PyTorch fp32;
* ``int8``: OpenVINO int8 against OpenVINO fp32 on every window of the clip: the PSNR of the enhanced frames
  (lowest and median) and the seconds per output frame of both, interleaved (median);
* ``enhance``: what ``python -m sdsd.enhance`` with its defaults (``--runtime auto --precision auto``) picks, and
  :meth:`sdsd.inference.Engine.stream` with that backend over a short clip (seconds per frame = the whole engine
  path), with the tuning time of a first run and of a second one (the choice remembered).

Exported models go to the model cache (``$SDSD_CACHE``, default ``~/.cache/sdsd``), so only the first run pays the
conversions. Run: ``python -m bench --only runtimes`` (``--quick``: 128x240, ``--tiny``: a tiny network), or
``python -m bench.runtime_speed [--model CKPT] [--size HxW]`` for a trained checkpoint's PSNR.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from bench.network_speed import PUBLISHED, TINY, _photo_clip, best_time, build_net, reference_forward


def run(quick: bool = False, tiny: bool = False, size: tuple[int, int] | None = None, frames: int = 6,
        model: str | None = None) -> dict:
    """The measurements above; ``model``: a checkpoint instead of the seeded random network of the published (or,
    ``tiny``, a tiny) size."""
    from sdsd import runtimes
    from sdsd.inference import Engine

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    opts = TINY if tiny else PUBLISHED
    size = size or ((32, 48) if tiny else (128, 240) if quick else (512, 960))
    if model is not None:
        from sdsd.archs import load_model

        net = load_model(model, None, strict=True)[0].to(device).eval()
        opts = {"nf": int(net.nf)}
    else:
        net = build_net(opts, device)
    low, _ = _photo_clip(size, max(frames, net.nframes))
    clip = low[0]
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in clip]).to(device)
    res: dict = {"size": list(size), "nf": opts["nf"], "model": model or "seeded random weights",
                 "device": str(device), "cpu": runtimes.cpu_model(),
                 "native_bf16": runtimes.native_bf16(), "threads": torch.get_num_threads(),
                 "cpu_capability": torch.backends.cpu.get_cpu_capability()}

    with torch.inference_mode():
        ref_s = best_time(lambda: reference_forward(net, x[None, :net.nframes]), 1, device, warmup=1)
    res["reference"] = {"seconds_per_frame": ref_s}

    logging.getLogger("sdsd").setLevel(logging.INFO)
    start = time.perf_counter()
    auto = runtimes.AutoBackend(net, device, "auto")
    chosen = auto.select(x[:2], recall=False)  # always measure (a remembered choice would skip the timings)
    tuning = time.perf_counter() - start
    rows = {}
    for label, t in auto.report["timings"].items():
        rows[label] = {**t, "speedup_vs_reference": ref_s / t["seconds"]}
    res["runtimes"] = rows
    res["rejected"] = auto.report["rejected"]
    res["not_run"] = auto.report["skipped"]
    pick = {k: auto.report[k] for k in ("runtime", "precision", "conv_backend")}

    start = time.perf_counter()
    again = runtimes.AutoBackend(net, device, "auto")
    again.select(x[:2])
    second_tuning = time.perf_counter() - start

    engine = Engine(chosen)
    arrays = [np.ascontiguousarray(f) for f in clip[:frames]]
    start = time.perf_counter()
    count = sum(1 for _ in engine.stream(iter(arrays)))
    stream_s = (time.perf_counter() - start) / count
    res["enhance"] = {**pick, "stream_seconds_per_frame": stream_s, "frames": count,
                      "speedup_vs_reference": ref_s / stream_s, "tuning_seconds_first_run": round(tuning, 1),
                      "tuning_seconds_second_run": round(second_tuning, 2),
                      "second_run_remembered": bool(again.report.get("from_cache"))}
    if device.type == "cpu":
        res["int8"] = int8_rows(net, x, ref_s)
    return res


def int8_rows(net, x: torch.Tensor, ref_s: float) -> dict:
    """OpenVINO int8 against OpenVINO fp32 on every window of the clip ``x`` (``T x 3 x H x W``): PSNR of the
    enhanced frames (lowest, median) and seconds per output frame (one frame's features + one window), interleaved
    fp32 / int8, medians. Empty with the reason when either cannot run here."""
    from sdsd import runtimes
    from sdsd.data.windows import index_generation
    from sdsd.runtimes.auto import _psnr

    try:
        fp32 = runtimes.OpenVINOBackend(net)
        int8 = runtimes.OpenVINOBackend(net, precision="int8")
        int8.prepare(*x.shape[-2:], x[:1])
    except runtimes.RuntimeUnavailable as exc:
        return {"not_run": str(exc)}
    psnrs, times = [], {"fp32": [], "int8": []}
    with torch.inference_mode():
        feats = {k: b.features(x) for k, b in (("fp32", fp32), ("int8", int8))}
        for c in range(x.shape[0]):
            index = torch.tensor(index_generation(c, x.shape[0], net.nframes))
            outs = {}
            for k, b in (("fp32", fp32), ("int8", int8)):
                window = tuple(f[index].unsqueeze(0) for f in feats[k])
                start = time.perf_counter()
                b.features(x[c:c + 1])
                outs[k] = b.windows(window, x[c:c + 1])[0]
                times[k].append(time.perf_counter() - start)
            psnrs.append(_psnr(outs["int8"], outs["fp32"]))
    fp32_s, int8_s = float(np.median(times["fp32"])), float(np.median(times["int8"]))
    return {"windows": len(psnrs), "psnr_vs_fp32_min": round(min(psnrs), 2),
            "psnr_vs_fp32_median": round(float(np.median(psnrs)), 2), "fp32_seconds_per_frame": fp32_s,
            "int8_seconds_per_frame": int8_s, "int8_speedup_vs_fp32": fp32_s / int8_s,
            "int8_speedup_vs_reference": ref_s / int8_s, "calibration": int8.describe()["int8"]}


def summary_rows(res: dict) -> list[tuple[str, str]]:
    rows = [("setup", f"{res['size'][0]}x{res['size'][1]} nf {res['nf']} on {res['device']} ({res['cpu']}, "
                      f"{res['cpu_capability']}, native bf16: {res['native_bf16']}, {res['threads']} threads)"),
            ("reference", f"{res['reference']['seconds_per_frame']:.3f} s/frame  x1.00")]
    for label, r in res["runtimes"].items():
        psnr = "" if r["psnr_vs_fp32"] is None else f"  {r['psnr_vs_fp32']:.1f} dB vs fp32"
        rows.append((label, f"{r['seconds']:.3f} s/frame  x{r['speedup_vs_reference']:.2f}  "
                            f"(setup {r['setup_seconds']:.1f} s){psnr}"))
    e = res["enhance"]
    conv = f" {e['conv_backend']}" if e["runtime"] == "torch" else ""
    rows.append(("sdsd.enhance picks", f"{e['runtime']} {e['precision']}{conv}: {e['stream_seconds_per_frame']:.3f} "
                                       f"s/frame streamed  x{e['speedup_vs_reference']:.2f}  (tuning "
                                       f"{e['tuning_seconds_first_run']} s, then {e['tuning_seconds_second_run']} s)"))
    for label in res.get("not_run", []):
        rows.append((label, "not run here"))
    q = res.get("int8")
    if q and "not_run" not in q:
        text = (f"{q['psnr_vs_fp32_min']:.1f} dB lowest, {q['psnr_vs_fp32_median']:.1f} dB median over "
                f"{q['windows']} windows; {q['int8_seconds_per_frame']:.3f} s/frame against fp32 "
                f"{q['fp32_seconds_per_frame']:.3f} (x{q['int8_speedup_vs_fp32']:.2f}; "
                f"x{q['int8_speedup_vs_reference']:.2f} the reference)")
        rows.append(("openvino int8 vs fp32", text))
    elif q:
        rows.append(("openvino int8 vs fp32", f"not run here: {q['not_run']}"))
    return rows


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.runtime_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a checkpoint (default: seeded random weights, published size)")
    parser.add_argument("--size", default=None, metavar="HxW", help="frame size (default 512x960)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.size.split("x")) if args.size else None
    result = run(args.quick, args.tiny, shape, model=args.model)
    for name, text in summary_rows(result):
        print(f"{name:<28} {text}")
    print(json.dumps(result, indent=1))
