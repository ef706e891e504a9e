"""Training data-loader throughput at the published settings, on a generated SDSD-like tree.

Writes a few scenes of 512x960 uint8 ``.npy`` frames (random content; decoding cost does not depend on it)
into a temporary folder, builds the ``train`` loader exactly as training does (global batch 32 for one
process, GT_size 128, N_frames 5, new_info padding, flips, n_workers 3, cache_data on) and reports
batches/s and samples/s after a warm-up. Compare with the training step time: the loader keeps up when its
batches/s exceeds the steps/s of training.

Run: ``python bench/data_speed.py [--quick]`` or ``from bench.data_speed import run; run(quick=True)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

SETTINGS = {"batch_size": 32, "GT_size": 128, "N_frames": 5, "n_workers": 3, "frame_hw": (512, 960)}


def _write_tree(root: str, scenes: int, frames: int, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    for sub in ("GT", "input"):
        for s in range(scenes):
            folder = os.path.join(root, sub, f"pair{s + 1}")
            os.makedirs(folder)
            for i in range(frames):
                np.save(os.path.join(folder, f"{i:05d}.npy"), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))


def run(quick: bool = False) -> dict:
    """Measure the train loader; return a dict of settings and figures (batches/s, samples/s)."""
    from sdsd.data import build_dataloader, build_dataset

    scenes, frames = (3, 20) if quick else (4, 30)
    warmup, measured = (2, 6) if quick else (5, 40)
    with tempfile.TemporaryDirectory(prefix="sdsd_bench_") as root:
        _write_tree(root, scenes, frames, SETTINGS["frame_hw"])
        opt = {
            "mode": "video_samesize", "dataroot_GT": os.path.join(root, "GT"),
            "dataroot_LQ": os.path.join(root, "input"), "train_size": [960, 512], "cache_data": True,
            "padding": "new_info", "N_frames": SETTINGS["N_frames"], "use_shuffle": True,
            "n_workers": SETTINGS["n_workers"], "batch_size": SETTINGS["batch_size"], "GT_size": SETTINGS["GT_size"],
            "use_flip": True, "use_rot": True, "testing_dir": "pair1",
        }
        dataset = build_dataset(opt, "train")
        loader, sampler = build_dataloader(dataset, opt, "train", seed=0, device_type="cpu")
        done, epoch = 0, 0
        start = None
        while done < warmup + measured:
            sampler.set_epoch(epoch)
            for batch in loader:
                assert batch["LQs"].shape[0] == SETTINGS["batch_size"]
                done += 1
                if done == warmup:
                    start = time.perf_counter()
                if done == warmup + measured:
                    break
            epoch += 1
        elapsed = time.perf_counter() - start
        del loader  # stop the persistent workers before the folder goes
    result = {
        "bench": "data_speed",
        **{k: v for k, v in SETTINGS.items() if k != "frame_hw"},
        "frame": f"{SETTINGS['frame_hw'][1]}x{SETTINGS['frame_hw'][0]} npy",
        "world_size": 1,
        "cpu_count": os.cpu_count(),
        "batches": measured,
        "batches_per_s": measured / elapsed,
        "samples_per_s": measured * SETTINGS["batch_size"] / elapsed,
    }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and batches")
    args = parser.parse_args(argv)
    result = run(quick=args.quick)
    print(
        f"train loader (batch {result['batch_size']}, GT_size {result['GT_size']}, N {result['N_frames']}, "
        f"{result['n_workers']} workers, {result['cpu_count']} CPUs): {result['batches_per_s']:.2f} batches/s, "
        f"{result['samples_per_s']:.1f} samples/s"
    )


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "codes"))
    main()
