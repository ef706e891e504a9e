"""Training speed: iterations/s and peak memory of one process at the published crop and batch.

    python bench/train_speed.py                 # published: batch 32 per process, 128x128 crops, nf 64
    python bench/train_speed.py --quick         # a small case (batch 2, 64x64) that finishes in seconds on a CPU
    python bench/train_speed.py --amp bf16 --channels-last
    python bench/train_speed.py --compare-compile --small   # train.compile true vs false (a few minutes on a CPU)

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
import statistics
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

#: A network small enough to compile and time on a loaded CPU in minutes (same code, fewer channels and blocks).
SMALL_NETWORK = {"nf": 16, "groups": 4, "front_RBs": 1, "back_RBs": 2}


def run(quick: bool = False, batch: int | None = None, crop: int | None = None, iters: int | None = None,
        warmup: int = 1, amp: str = "none", channels_last: bool = False, compile: bool = False,
        device: str | None = None, small: bool = False) -> dict:
    """Time training iterations of the published network.

    Args:
        quick: batch 2 at 64x64, 2 timed iterations (defaults for the other sizes otherwise: 32, 128, 5).
        batch, crop, iters: override the batch per process, the crop size and the number of timed iterations.
        warmup: untimed iterations first.
        amp, compile: the ``train.amp`` and ``train.compile`` options; channels_last: ``conv_backend: channels_last``
            (else ``auto``).
        device: ``cpu`` or ``cuda``; default CUDA when available.
        small: time :data:`SMALL_NETWORK` (over the published settings) instead of the published network.

    Returns:
        A dict with the settings, ``first_iter_s`` (the untimed first iteration: with ``compile`` it includes the
        compilation), ``seconds_per_iter``, ``iters_per_s``, ``windows_per_s`` and ``peak_memory_mb``.
    """
    batch = batch or (2 if quick else 32)
    crop = crop or (64 if quick else 128)
    iters = iters or (2 if quick else 5)
    dev = select_device(None, 0, device)
    setup = _Setup(batch, crop, amp, channels_last, compile, dev, small, warmup)
    start = time.perf_counter()
    for _ in range(iters):
        setup.step()
    _sync(dev)
    seconds = (time.perf_counter() - start) / iters
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**setup.settings(), "compile": compile, "timed_iters": iters, "first_iter_s": setup.first_iter_s,
            "seconds_per_iter": round(seconds, 4), "iters_per_s": round(1 / seconds, 4),
            "windows_per_s": round(batch / seconds, 3), "peak_memory_mb": round(peak, 1),
            "peak_memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "process max RSS"}


class _Setup:
    """One network, optimiser and batch built as ``train.py`` builds them, warmed up; :meth:`step` trains once."""

    def __init__(self, batch, crop, amp, channels_last, compile, dev, small, warmup):
        self.batch, self.crop, self.amp, self.channels_last, self.dev, self.small = (
            batch, crop, amp, channels_last, dev, small)
        # Validated like an option file, so every train key has its default (the published settings) and a new
        # option never breaks the bench.
        self.opt = options.validate({
            "name": "train-speed", "network_G": {**published_network(), **(SMALL_NETWORK if small else {})},
            "conv_backend": "channels_last" if channels_last else "auto",
            "train": {"niter": 10**6, "T_period": [600000], "amp": amp, "compile": compile},
        })
        torch.manual_seed(0)
        self.state = build_training(self.opt, DistInfo(device=dev))
        self.data = {"LQs": torch.rand(batch, 5, 3, crop, crop, device=dev) * 0.2,
                     "GT": torch.rand(batch, 3, crop, crop, device=dev)}
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        self.iteration = 0
        self.first_iter_s = None
        for _ in range(warmup):
            tick = time.perf_counter()
            self.step()
            _sync(dev)
            if self.first_iter_s is None:
                self.first_iter_s = round(time.perf_counter() - tick, 2)

    def step(self) -> None:
        self.iteration += 1
        train_step(self.state, self.data, self.iteration)

    def settings(self) -> dict:
        name = (torch.cuda.get_device_name(self.dev) if self.dev.type == "cuda"
                else f"cpu ({torch.get_num_threads()} threads)")
        return {"device": name, "batch_per_process": self.batch, "crop": self.crop, "frames": 5,
                "nf": self.opt["network_G"]["nf"], "network": "small" if self.small else "published", "amp": self.amp,
                "channels_last": self.channels_last}


def compare_compile(quick: bool = False, batch: int | None = None, crop: int | None = None, iters: int | None = None,
                    warmup: int = 1, amp: str = "none", channels_last: bool = False, device: str | None = None,
                    small: bool = False) -> dict:
    """``train.compile`` false against true in the same settings, timed interleaved (arguments as :func:`run`).

    Both setups are built and warmed up first (the compiled one's first iteration includes the compilation); then
    their iterations alternate, so a change of machine load affects both alike, and each gets the median of its
    iteration times.

    Returns:
        The settings, ``first_iter_s``, ``seconds_per_iter`` (median), ``best_s`` and ``all_s`` of each, ``speedup``
        (eager median / compiled median) and ``speedup_best`` (the same for the fastest iterations, the steadier
        figure on a loaded machine).
    """
    batch = batch or (2 if quick else 32)
    crop = crop or (64 if quick else 128)
    iters = iters or (2 if quick else 5)
    dev = select_device(None, 0, device)
    setups = {name: _Setup(batch, crop, amp, channels_last, name == "compiled", dev, small, warmup)
              for name in ("eager", "compiled")}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(iters):
        for name, setup in setups.items():
            _sync(dev)
            tick = time.perf_counter()
            setup.step()
            _sync(dev)
            times[name].append(time.perf_counter() - tick)
    median = {name: statistics.median(t) for name, t in times.items()}
    return {**setups["eager"].settings(), "timed_iters": iters,
            **{name: {"first_iter_s": setups[name].first_iter_s, "seconds_per_iter": round(median[name], 4),
                      "best_s": round(min(times[name]), 4), "all_s": [round(t, 3) for t in times[name]]}
               for name in setups},
            "speedup": round(median["eager"] / median["compiled"], 3),
            "speedup_best": round(min(times["eager"]) / min(times["compiled"]), 3)}


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
    parser.add_argument("--small", action="store_true", help="a small network (nf 16, 1+2 residual blocks)")
    parser.add_argument("--compare-compile", action="store_true", help="time train.compile false and true, interleaved")
    args = parser.parse_args(argv)
    kw = dict(quick=args.quick, batch=args.batch, crop=args.crop, iters=args.iters, warmup=args.warmup, amp=args.amp,
              channels_last=args.channels_last, device=args.device, small=args.small)
    result = compare_compile(**kw) if args.compare_compile else run(compile=args.compile, **kw)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
