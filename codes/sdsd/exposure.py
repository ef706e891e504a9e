"""What a model was trained on, and bringing a new video to it.

A trained network only knows the exposure and noise of its training inputs: given a video twice as bright it
over-brightens, given one twice as dark it under-brightens. This module

* measures the training inputs at the start of a run (:func:`training_statistics`: mean linear brightness,
  percentiles, per channel, and a noise level) and stores them in a small JSON *sidecar* beside each saved
  checkpoint, ``<iter>_G.json`` next to ``<iter>_G.pth`` (:func:`write_sidecar`, :func:`read_sidecar`); the
  ``.pth`` stays a plain ``state_dict``;
* rescales the frames of a video in linear light so that their mean brightness is the one the model was trained
  on (:class:`ExposureMatcher`), with a gain that follows the video smoothly over time (an exponential moving
  average of the log-gain), so that a cut or a light switching on does not make the output flicker.

Brightness is measured in *linear light*: the network's inputs are sRGB-encoded values in [0, 1], decoded with
the inverse sRGB curve before averaging, and the gain is applied there and re-encoded, as a camera's exposure
acts on scene light.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch

from sdsd.errors import UserError

SIDECAR_FORMAT = "sdsd-training-inputs"
SIDECAR_VERSION = 1
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
DEFAULT_SAMPLES = 64  # training windows measured at the start of a run: enough for 3 significant digits


# -- sRGB <-> linear, in torch (the same curves as sdsd.tools.synthesize) --------------------------------------------


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """Inverse sRGB transfer curve (IEC 61966-2-1) of values in [0, 1]."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(y: torch.Tensor) -> torch.Tensor:
    """sRGB transfer curve (IEC 61966-2-1); values are clipped to [0, 1] first, as a sensor saturates."""
    y = y.clamp(0, 1)
    return torch.where(y <= 0.0031308, 12.92 * y, 1.055 * y.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def mean_linear_brightness(frame: torch.Tensor) -> float:
    """Mean linear brightness (over pixels and channels) of a ``3 x H x W`` or ``H x W x 3`` sRGB frame in [0, 1]."""
    return float(srgb_to_linear(frame.float()).mean())


def estimate_noise(frames: torch.Tensor) -> torch.Tensor:
    """Per-channel noise standard deviation of ``... x 3 x H x W`` frames (Immerkaer's fast estimator).

    The frames are filtered with the difference of two Laplacians, which cancels smooth image structure; for
    white Gaussian noise of standard deviation ``s`` the mean absolute response is ``6 s sqrt(2 / pi)``.
    Strong edges bias it upwards, so it is a noise *level*, comparable between datasets, not an exact sigma.

    Returns:
        A tensor of 3 values, in the units of ``frames`` (sRGB values in [0, 1] for network inputs).
    """
    x = frames.float().reshape(-1, 1, *frames.shape[-2:])
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]).view(1, 1, 3, 3)
    response = torch.nn.functional.conv2d(x, kernel).abs()
    per = response.reshape(-1, 3, response.shape[-2] * response.shape[-1]).mean(dim=(0, 2))
    return per * math.sqrt(math.pi / 2) / 6


# -- statistics of the training inputs -------------------------------------------------------------------------------


def summarize(frames: torch.Tensor) -> dict:
    """Brightness and noise statistics of ``N x 3 x H x W`` sRGB frames in [0, 1] (RGB order).

    Returns:
        ``{"mean_linear", "channel_mean_linear", "percentiles_linear", "noise_sigma", "channel_noise_sigma"}``:
        the mean linear brightness over everything and per channel (R, G, B), percentiles of the linear values
        per channel (``{"1": [r, g, b], ...}``), and the noise level of the sRGB values (overall and per channel).
    """
    linear = srgb_to_linear(frames.float())
    channels = linear.transpose(0, 1).reshape(3, -1)
    # torch.quantile refuses more than 2**24 values; a strided subsample is exact enough for percentiles.
    step = max(1, channels.shape[1] // 2_000_000)
    q = torch.quantile(channels[:, ::step].double(), torch.tensor([p / 100 for p in PERCENTILES], dtype=torch.float64),
                       dim=1)
    noise = estimate_noise(frames)
    return {
        "mean_linear": float(channels.mean()),
        "channel_mean_linear": [float(v) for v in channels.mean(dim=1)],
        "percentiles_linear": {str(p): [float(v) for v in q[i]] for i, p in enumerate(PERCENTILES)},
        "noise_sigma": float(noise.mean()),
        "channel_noise_sigma": [float(v) for v in noise],
    }


def training_statistics(dataset, seed: int, samples: int = DEFAULT_SAMPLES) -> dict:
    """Measure a bounded, seeded sample of training windows: what the model is trained on.

    ``samples`` windows are drawn without replacement (all of them when the dataset has fewer), read as the
    training loop reads them (random crop, flips), and summarised by :func:`summarize`, inputs and ground truth
    apart. The global random states (Python, NumPy, torch) are restored afterwards, so a run that measures its
    data trains exactly as one that does not.

    Args:
        dataset: a training dataset whose items hold ``LQs`` (``N x 3 x H x W``) and ``GT`` (``3 x H x W``).
        seed: the run's seed; the same seed measures the same windows.
        samples: how many windows to measure.

    Returns:
        ``{"windows", "frames", "input": summarize(inputs), "gt": summarize(ground truth)}``.
    """
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        count = min(samples, len(dataset))
        picks = np.random.default_rng(seed).choice(len(dataset), size=count, replace=False)
        lqs, gts = [], []
        for index in sorted(int(i) for i in picks):
            item = dataset[index]
            lqs.append(item["LQs"])
            gts.append(item["GT"][None])
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    inputs = torch.cat(lqs)
    return {"windows": count, "frames": int(inputs.shape[0]), "seed": int(seed), "input": summarize(inputs),
            "gt": summarize(torch.cat(gts))}


# -- the sidecar ---------------------------------------------------------------------------------------------------


def sidecar_path(weights_path: str) -> str:
    """``models/300_G.pth`` -> ``models/300_G.json``."""
    root, _ = os.path.splitext(weights_path)
    return root + ".json"


def write_sidecar(stats: dict, weights_path: str) -> str:
    """Write the statistics beside ``weights_path`` atomically; return the sidecar's path."""
    from sdsd.utils.io import atomic_write_json

    path = sidecar_path(weights_path)
    atomic_write_json({"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **stats}, path)
    return path


def read_sidecar(weights_path: str) -> dict | None:
    """The statistics saved beside ``weights_path``, or ``None`` when it has no sidecar (published checkpoints).

    Raises:
        UserError: a sidecar exists but is not one (unreadable, or no input brightness).
    """
    import json

    path = sidecar_path(weights_path)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        mean = float(data["input"]["mean_linear"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a training-statistics sidecar (no input.mean_linear); delete it or "
                        "pass --exposure VALUE") from None
    if data.get("format") != SIDECAR_FORMAT or not 0 < mean <= 1:
        raise UserError(f"{path} is not a valid training-statistics sidecar (format {data.get('format')!r}, "
                        f"input.mean_linear {mean}); delete it or pass --exposure VALUE")
    return data
