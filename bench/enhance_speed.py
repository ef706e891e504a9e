"""Speed and peak memory of streaming enhancement on the CPU (default SDSD-Net, random weights).

Each configuration runs in a fresh subprocess so its peak RSS is its own:

* 512 x 960 (the SDSD test size), whole frames;
* 1920 x 1080 with ``--tile 512 --tile-overlap 64`` (goal: peak RSS under 4 GiB).

Usage::

    python bench/enhance_speed.py            # a few frames per configuration
    python bench/enhance_speed.py --quick    # fewer frames

or ``from bench.enhance_speed import run; run(quick=True)`` (returns a dict of the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = [
    {"name": "512x960", "height": 512, "width": 960, "tile": 0, "overlap": 64},
    {"name": "1920x1080-tile512", "height": 1080, "width": 1920, "tile": 512, "overlap": 64},
]


def _measure(height: int, width: int, tile: int, overlap: int, frames: int, threads: int | None) -> dict:
    """Enhance ``frames`` random frames in this process and return the figures."""
    import numpy as np
    import torch

    from sdsd.archs import build_network
    from sdsd.enhance import StreamingEnhancer, peak_memory_mib
    from sdsd.options import published_network

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(published_network()).eval()
    rng = np.random.default_rng(0)
    # Dim, noisy frames, like the low-light inputs; generated lazily so the source itself costs no memory.
    base = (rng.random((height, width, 3)) * 60).astype(np.uint8)

    def source():
        for i in range(frames):
            yield np.roll(base, 4 * i, axis=1)

    rss_before, _ = peak_memory_mib()
    enhancer = StreamingEnhancer(net, device="cpu", tile=tile, overlap=overlap)
    start = time.perf_counter()
    first = None
    count = 0
    for _ in enhancer.enhance(source()):
        count += 1
        if first is None:
            first = time.perf_counter() - start
    seconds = time.perf_counter() - start
    rss, _ = peak_memory_mib()
    return {
        "height": height, "width": width, "tile": tile, "overlap": overlap, "frames": count,
        "seconds": round(seconds, 2), "frames_per_s": round(count / seconds, 4),
        "first_frame_s": round(first, 2), "peak_rss_mib": round(rss), "rss_after_model_mib": round(rss_before),
        "threads": torch.get_num_threads(),
    }


def run(quick: bool = False, frames: int | None = None, threads: int | None = None, verbose: bool = False) -> dict:
    """Run every configuration in its own subprocess.

    Args:
        quick: 1 frame per configuration instead of 3 (a 1-frame clip still runs full 5-frame windows).
        frames: override the frame count.
        threads: torch CPU threads in the children (default: torch's default).
        verbose: print each configuration's figures as soon as they are measured.

    Returns:
        ``{config name: figures}`` with frames/s and peak RSS (MiB) for each.
    """
    count = frames or (1 if quick else 3)
    results = {}
    for cfg in CONFIGS:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", str(cfg["height"]), str(cfg["width"]),
               str(cfg["tile"]), str(cfg["overlap"]), "--frames", str(count)]
        if threads:
            cmd += ["--threads", str(threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{cfg['name']} failed: {done.stderr.strip()[-2000:]}")
        results[cfg["name"]] = json.loads(done.stdout.strip().splitlines()[-1])
        if verbose:
            print(_summary(cfg["name"], results[cfg["name"]]), flush=True)
    return results


def _summary(name: str, r: dict) -> str:
    return (f"{name:>20}: {r['frames']} frames in {r['seconds']:.1f} s = {r['frames_per_s']:.3f} frames/s, "
            f"peak RSS {r['peak_rss_mib']} MiB (after model {r['rss_after_model_mib']} MiB), {r['threads']} threads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 frame per configuration")
    parser.add_argument("--frames", type=int, default=None, help="frames per configuration (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--one", nargs=4, type=int, metavar=("H", "W", "TILE", "OVERLAP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(*args.one, frames=args.frames or 3, threads=args.threads)))
        return
    results = run(quick=args.quick, frames=args.frames, threads=args.threads, verbose=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
