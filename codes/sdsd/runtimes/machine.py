"""What this machine is, read at run time: its CPU's flags and model, and a key for remembered choices."""

from __future__ import annotations

import functools
import os
import platform

import torch

__all__ = ["cpu_model", "machine_key", "native_bf16"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), read at run time from the CPU's flags."""
    flags = _cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16"}:
        return True
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "AMX" in capability or "BF16" in capability


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: torch.device) -> str:
    """The machine part of a remembered ``auto`` choice: the GPU's name, or the CPU model, core and thread count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{cpu_model()}:{os.cpu_count()}cpus:{torch.get_num_threads()}threads"
