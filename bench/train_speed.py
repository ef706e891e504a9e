"""Training speed: iterations/s and peak memory of one process at the published crop and batch.

    python bench/train_speed.py                 # published: batch 32 per process, 128x128 crops, nf 64
    python bench/train_speed.py --quick         # a small case (batch 2, 64x64) that finishes in seconds on a CPU
    python bench/train_speed.py --amp bf16 --channels-last

Importable: ``bench.train_speed.run(quick=False, **kw) -> dict``. Times full training iterations
(:func:`sdsd.training.train_step`: schedule, one batched forward of the clean and noisy copies, the summed losses,
backward, Adam) on random windows already on the device, so data loading is not measured. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the process's peak resident set size on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

# Run from a checkout: the repository's own packages first (an editable install can map `dcn` as a namespace).
_repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(_repo, "codes"), _repo]

import torch  # noqa: E402

from sdsd import options  # noqa: E402
from sdsd.options import published_network  # noqa: E402
from sdsd.training import train_step  # noqa: E402
from sdsd.training.trainer import build_training  # noqa: E402
from sdsd.utils import precision  # noqa: E402
from sdsd.utils.dist import DistInfo, select_device  # noqa: E402


def run(quick: bool = False, batch: int | None = None, crop: int | None = None, iters: int | None = None,
        warmup: int = 1, amp: str = "none", channels_last: bool = False, compile: bool = False,
        device: str | None = None) -> dict:
    """Time training iterations of the published network.

    Args:
        quick: batch 2 at 64x64, 2 timed iterations (defaults for the other sizes otherwise: 32, 128, 5).
        batch, crop, iters: override the batch per process, the crop size and the number of timed iterations.
        warmup: untimed iterations first.
        amp, compile: the ``train.amp`` and ``train.compile`` options; channels_last: ``conv_backend: channels_last``
            (else ``auto``).
        device: ``cpu`` or ``cuda``; default CUDA when available.

    Returns:
        A dict with the settings, ``seconds_per_iter``, ``iters_per_s``, ``windows_per_s`` and ``peak_memory_mb``.
    """
    batch = batch or (2 if quick else 32)
    crop = crop or (64 if quick else 128)
    iters = iters or (2 if quick else 5)
    dev = select_device(None, 0, device)
    # Validated like an option file, so every train key has its default (the published settings).
    opt = options.validate({
        "name": "train-speed", "network_G": published_network(),
        "conv_backend": "channels_last" if channels_last else "auto",
        "train": {"niter": warmup + iters, "T_period": [600000], "amp": amp, "compile": compile},
    })
    torch.manual_seed(0)
    state = build_training(opt, DistInfo(device=dev))
    batch_data = {"LQs": torch.rand(batch, 5, 3, crop, crop, device=dev) * 0.2,
                  "GT": torch.rand(batch, 3, crop, crop, device=dev)}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for k in range(1, warmup + 1):
        train_step(state, batch_data, k)
    _sync(dev)
    start = time.perf_counter()
    for k in range(warmup + 1, warmup + iters + 1):
        train_step(state, batch_data, k)
    _sync(dev)
    seconds = (time.perf_counter() - start) / iters
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        name = torch.cuda.get_device_name(dev)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        name = f"cpu ({torch.get_num_threads()} threads)"
    return {"device": name, "batch_per_process": batch, "crop": crop, "frames": 5, "nf": opt["network_G"]["nf"],
            "amp": amp,
            "channels_last": channels_last, "compile": compile, "timed_iters": iters,
            "seconds_per_iter": round(seconds, 4), "iters_per_s": round(1 / seconds, 4),
            "windows_per_s": round(batch / seconds, 3), "peak_memory_mb": round(peak, 1),
            "peak_memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process max RSS"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--crop", type=int)
    parser.add_argument("--iters", type=int)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", choices=precision.MODES, default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    result = run(quick=args.quick, batch=args.batch, crop=args.crop, iters=args.iters, warmup=args.warmup,
                 amp=args.amp, channels_last=args.channels_last, compile=args.compile, device=args.device)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
