"""What a model was trained on, and bringing a new video to it.

A trained network only knows the exposure and noise of its training inputs: given a video twice as bright it
over-brightens, given one twice as dark it under-brightens. This module

* measures the training inputs at the start of a run (:func:`training_statistics`: mean linear brightness,
  percentiles, per channel, and a noise level) and stores them in a small JSON *sidecar* beside each saved
  checkpoint, ``<iter>_G.json`` next to ``<iter>_G.pth`` (:func:`write_sidecar`, :func:`read_sidecar`); the
  ``.pth`` stays a plain ``state_dict``;
* rescales the frames of a video in linear light so that their brightness (the white level,
  :func:`sdsd.color.white_level`) is the one the model was trained on (:class:`ExposureMatcher`), with a gain that
  follows the video smoothly over time (an exponential moving average of the log-gain), so that a cut or a light
  switching on does not make the output flicker.

Brightness is measured in *linear light*: the network's inputs are sRGB-encoded values in [0, 1], decoded with
the inverse sRGB curve (:mod:`sdsd.color`) before averaging, and the gain is applied there and re-encoded, as a
camera's exposure acts on scene light.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from sdsd import color
from sdsd.color import SMOOTHING, WHITE_LEVEL_TEXT, WHITE_PERCENTILE, linear_to_srgb, srgb_to_linear
from sdsd.errors import UserError

SIDECAR_FORMAT = "sdsd-training-inputs"
#: 2 added ``smoothed_percentiles_linear`` (the statistic the matcher uses); version 1 sidecars still load.
SIDECAR_VERSION = 2
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
DEFAULT_SAMPLES = 64  # training windows measured at the start of a run: enough for 3 significant digits


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
        ``{"mean_linear", "channel_mean_linear", "percentiles_linear", "smoothed_percentiles_linear", "smoothing",
        "noise_sigma", "channel_noise_sigma"}``: the mean linear brightness over everything and per channel (R, G, B),
        percentiles of the linear values per channel (``{"1": [r, g, b], ...}``), the same of the moving averages
        :func:`sdsd.color.white_level` reads, of side ``smoothing`` (the mean of its ``"99"`` row is the white level
        of all the frames together: :func:`target_of`), and the noise level of the sRGB values (overall and per
        channel).
    """
    linear = srgb_to_linear(frames.float())
    channels = linear.transpose(0, 1).reshape(3, -1)
    noise = estimate_noise(frames)
    return {
        "mean_linear": float(channels.mean()),
        "channel_mean_linear": [float(v) for v in channels.mean(dim=1)],
        "percentiles_linear": _percentiles(linear, 1),
        "smoothed_percentiles_linear": _percentiles(linear, SMOOTHING),
        "smoothing": SMOOTHING,
        "noise_sigma": float(noise.mean()),
        "channel_noise_sigma": [float(v) for v in noise],
    }


def _percentiles(linear: torch.Tensor, smoothing: int) -> dict:
    """``N x 3 x H x W`` linear frames -> ``{"1": [r, g, b], ...}`` at :data:`PERCENTILES` after a ``smoothing``
    moving average."""
    table = color.channel_percentiles(color.smoothed_samples(linear, smoothing), PERCENTILES)
    return {str(p): [float(v) for v in row] for p, row in zip(PERCENTILES, table)}


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


#: Sidecars are a few KB; a larger file is refused unread.
MAX_SIDECAR_BYTES = 1 << 20


class _NotSidecar(ValueError):
    """What makes a file not a usable sidecar (the message names the field)."""


def _finite(value, where: str, low: float | None = None, high: float | None = None) -> float:
    """``value`` when it is a number whose float is finite and within ``[low, high]``; :class:`_NotSidecar`
    otherwise (an integer too large for a float included)."""
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            pass
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        span = f" in [{low:g}, {high:g}]" if high is not None else f" >= {low:g}" if low is not None else ""
        raise _NotSidecar(f"{where} is not a finite number{span}")
    return value


def _count(value, where: str, low: int = 0, high: int | None = None) -> int:
    """``value`` when it is an integer (not a boolean) within ``[low, high]``; :class:`_NotSidecar` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise _NotSidecar(f"{where} is not an integer >= {low}" + (f" and <= {high}" if high is not None else ""))
    return value


def _triple(value, where: str, high: float | None = None) -> None:
    """A list of 3 finite numbers (R, G, B), each >= 0 (and <= ``high``)."""
    if not isinstance(value, list) or len(value) != 3:
        raise _NotSidecar(f"{where} is not a list of 3 numbers (R, G, B)")
    for i, v in enumerate(value):
        _finite(v, f"{where}[{i}]", 0.0, high)


def _table(value, where: str) -> None:
    """A percentile table ``{"99": [r, g, b], ...}`` of linear values in [0, 1] holding at least the 99th."""
    if not isinstance(value, dict) or "99" not in value:
        raise _NotSidecar(f"{where} is not a table of percentiles holding \"99\"")
    for key, entry in value.items():
        _triple(entry, f"{where}[{key[:20]!r}]", 1.0)


def _summary(block, where: str, inputs: bool) -> None:
    """Check the fields of a :func:`summarize` block that are present; the inputs' brightness fields are required."""
    if not isinstance(block, dict):
        raise _NotSidecar(f"{where} is not an object")
    if inputs and "mean_linear" not in block:
        raise _NotSidecar(f"{where} has no mean_linear")
    if "mean_linear" in block:
        _finite(block["mean_linear"], f"{where}.mean_linear", 0.0, 1.0)
    if inputs and "smoothed_percentiles_linear" not in block and "percentiles_linear" not in block:
        raise _NotSidecar(f"{where} has no percentiles_linear")
    for key in ("percentiles_linear", "smoothed_percentiles_linear"):
        if key in block:
            _table(block[key], f"{where}.{key}")
    for key in ("channel_mean_linear", "channel_noise_sigma"):
        if key in block:
            _triple(block[key], f"{where}.{key}", 1.0 if key == "channel_mean_linear" else None)
    if "noise_sigma" in block:
        _finite(block["noise_sigma"], f"{where}.noise_sigma", 0.0)
    if "smoothing" in block:
        _count(block["smoothing"], f"{where}.smoothing", 1)


def _refuse_constant(name: str):
    raise _NotSidecar(f"it holds {name}, which is not a number")


def check_sidecar(data) -> None:
    """Check the shape of a sidecar's parsed JSON: every field the code reads, at every level it reads it.

    A sidecar is an object with ``"format": "sdsd-training-inputs"``; ``input`` an object with ``mean_linear`` (a
    finite number in [0, 1]) and ``percentiles_linear`` or ``smoothed_percentiles_linear`` (objects mapping
    percentiles to 3 numbers in [0, 1], holding ``"99"``, whose mean, the white level, must be above 0); the optional
    fields, where present: ``version``, ``windows``, ``frames`` (integers >= 0), ``seed`` (an integer in
    [0, 2**64), what the random generators accept), ``gt`` (an object checked as ``input``, its fields optional),
    ``noise_sigma`` (a finite number >= 0), ``channel_mean_linear`` and ``channel_noise_sigma`` (3 numbers),
    ``smoothing`` (an integer >= 1).

    Raises:
        ValueError: what is wrong, naming the field (no value is quoted at length).
    """
    if not isinstance(data, dict):
        raise _NotSidecar(f"it is a JSON {type(data).__name__}, not an object")
    fmt = data.get("format")
    if fmt != SIDECAR_FORMAT:
        shown = "missing" if fmt is None else repr(fmt[:40]) if isinstance(fmt, str) else f"a {type(fmt).__name__}"
        raise _NotSidecar(f"format is {shown}, not {SIDECAR_FORMAT!r}")
    for key in ("version", "windows", "frames"):
        if key in data:
            _count(data[key], key)
    if "seed" in data:
        _count(data["seed"], "seed", 0, 2**64 - 1)
    _summary(data.get("input"), "input", inputs=True)
    if "gt" in data:
        _summary(data["gt"], "gt", inputs=False)
    if not target_of(data) > 0:
        raise _NotSidecar("the input white level (the 99th percentile) is 0")


def read_sidecar(weights_path: str) -> dict | None:
    """The statistics saved beside ``weights_path``, or ``None`` when it has no sidecar (published checkpoints).

    The file is checked by :func:`check_sidecar` before it is returned, so callers may index the fields it checks.

    Raises:
        UserError: a sidecar exists but is not a usable one: larger than :data:`MAX_SIDECAR_BYTES`, unreadable, not
            JSON, nested too deeply to parse, holding ``NaN`` or ``Infinity``, or failing :func:`check_sidecar`;
            one line naming the file and the field, and saying to delete or rewrite it.
    """
    import json

    path = sidecar_path(weights_path)
    if not os.path.isfile(path):
        return None
    try:
        size = os.path.getsize(path)
        if size > MAX_SIDECAR_BYTES:
            raise _NotSidecar(f"it is {size} bytes; a sidecar is a few KB")
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_SIDECAR_BYTES + 1)
        if len(text) > MAX_SIDECAR_BYTES:
            raise _NotSidecar(f"it is more than {MAX_SIDECAR_BYTES} bytes; a sidecar is a few KB")
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise _NotSidecar("it is nested too deeply to read") from None
        check_sidecar(data)
    except _NotSidecar as exc:
        reason = str(exc)
    except UnicodeDecodeError:
        reason = "it is not UTF-8 text"
    except ValueError as exc:  # json.JSONDecodeError, or an integer too long for Python to read
        message = " ".join(str(exc).split())
        reason = f"not JSON: {message if len(message) <= 80 else message[:77] + '...'}"
    except OSError as exc:
        reason = f"cannot be read: {exc.strerror or type(exc).__name__}"
    else:
        return data
    raise UserError(f"{path} is not a valid training-statistics sidecar ({reason}); delete it, or rewrite it with "
                    f"python -m sdsd.tools.sidecar -opt TRAIN.yml {weights_path}")


# -- matching a video to the training brightness ---------------------------------------------------------------------

#: Frames over which the gain follows a change of the video's brightness (time constant of the moving average).
TIME_CONSTANT = 8.0
#: The gain stays within [1 / MAX_GAIN, MAX_GAIN]: a black frame (a fade, a lens cap) must not ask for infinity.
MAX_GAIN = 256.0
#: ``sdsd.color.to_linear`` under the name ``tests/test_exposure.py`` imports.
_linear_np = color.to_linear

#: The brightness measured: ``p99``, :func:`sdsd.color.white_level` at its 99th percentile, or ``mean``, the mean
#: linear value (why the white level: ``docs/exposure.md``).
STATISTIC = f"p{WHITE_PERCENTILE}"


def measure(linear: np.ndarray, statistic: str = STATISTIC, smoothing: int = SMOOTHING) -> float:
    """The brightness of an ``H x W x 3`` linear frame: its mean for ``"mean"``, else ``pQ``'s
    :func:`sdsd.color.white_level` at percentile ``Q`` over ``smoothing x smoothing`` averages (1: single pixels)."""
    if statistic == "mean":
        return float(linear.mean(dtype=np.float64))
    return color.white_level(linear, float(statistic[1:]), smoothing)


def target_of(stats: dict, statistic: str = STATISTIC) -> float:
    """The sidecar's value of ``statistic`` for the training inputs (a percentile: of the smoothed frames, as
    :func:`measure` reads it; a version 1 sidecar only has raw percentiles, see :func:`is_legacy`)."""
    inputs = stats["input"]
    if statistic == "mean":
        return float(inputs["mean_linear"])
    table = inputs.get("smoothed_percentiles_linear") or inputs["percentiles_linear"]
    return float(np.mean(table[statistic[1:]]))


def is_legacy(stats: dict) -> bool:
    """True for a version 1 sidecar: its white level was measured on single pixels, not on the moving averages
    :func:`sdsd.color.white_level` reads."""
    return "smoothed_percentiles_linear" not in stats["input"]


def recorded_seed(stats: dict | None, fallback: int) -> int:
    """The seed a sidecar's statistics were measured with (training's own, also one it drew when
    ``train.manual_seed`` was unset), else ``fallback``: what measuring them again must use to get the same sample."""
    seed = stats.get("seed") if stats is not None else None
    return seed if isinstance(seed, int) else fallback


class ExposureMatcher:
    """Brings the frames of a video, in order, to a target linear brightness with a smoothly varying gain.

    Brightness is :func:`measure`'s statistic (by default the white level, :func:`sdsd.color.white_level`).
    For each frame the gain that would give it the target brightness is measured (``target / brightness``); the
    gain applied is an exponential moving average of its logarithm (time constant :data:`TIME_CONSTANT` frames,
    starting at the first frame's own value). A constant video gets a constant gain;
    after a cut or a light switching on the gain glides to its new value over a few frames instead of jumping, so
    neither the network's input nor its output pumps from frame to frame with noise or moving objects. The gain is
    applied in linear light (clipping at full scale, as a sensor does) and the frame re-encoded with the sRGB curve.

    Use one matcher per video: it holds the running gain. :attr:`gains` lists the gain of every frame seen.
    """

    def __init__(self, target: float, time_constant: float = TIME_CONSTANT, statistic: str | None = None):
        if not 0 < target <= 1:
            raise UserError(f"--exposure {target}: the target linear brightness must be in (0, 1]")
        self.target = float(target)
        self.statistic = statistic or STATISTIC
        self.rate = 1.0 - math.exp(-1.0 / time_constant) if time_constant > 0 else 1.0
        self.log_gain: float | None = None
        self.gains: list[float] = []

    def update(self, brightness: float) -> float:
        """Take one frame's brightness (:func:`measure`); return the gain for that frame."""
        bound = math.log(MAX_GAIN)
        wanted = min(bound, max(-bound, math.log(self.target / max(brightness, 1e-12))))
        if self.log_gain is None:
            self.log_gain = wanted
        else:
            self.log_gain += self.rate * (wanted - self.log_gain)
        gain = math.exp(self.log_gain)
        self.gains.append(gain)
        return gain

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """One ``H x W x 3`` sRGB frame (uint8, or float32 in [0, 1]) -> the matched float32 frame in [0, 1]."""
        linear = color.to_linear(frame)
        gain = self.update(measure(linear, self.statistic))
        return linear_to_srgb(linear * np.float32(gain))

    def tensor(self, frame: torch.Tensor) -> torch.Tensor:
        """One ``3 x H x W`` sRGB tensor in [0, 1] -> the matched tensor (same device and dtype)."""
        linear = srgb_to_linear(frame.float())
        gain = self.update(measure(linear.permute(1, 2, 0).cpu().numpy(), self.statistic))
        return linear_to_srgb(linear * gain).to(frame.dtype)

    def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Match a stream of frames (what :meth:`sdsd.inference.Engine.stream` reads)."""
        for frame in frames:
            yield self.frame(frame)

    def summary(self) -> dict:
        """``{"target", "frames", "gain_first", "gain_last", "gain_min", "gain_max"}`` of the frames seen so far."""
        g = self.gains or [math.nan]
        return {"target": self.target, "frames": len(self.gains), "gain_first": g[0], "gain_last": g[-1],
                "gain_min": min(g), "gain_max": max(g)}


def parse_setting(value, where: str = "--exposure") -> str | float:
    """``auto`` / ``off`` (YAML's ``off`` is ``False``) / a number in (0, 1] -> ``"auto"``, ``"off"`` or a float."""
    if value is False or value == "off":
        return "off"
    if value == "auto":
        return "auto"
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if isinstance(value, bool) or not 0 < number <= 1:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise UserError(f"{where} {shown}: use auto, off, or a target white level in (0, 1] ({WHITE_LEVEL_TEXT}, "
                        "e.g. 0.035)")
    return number


def resolve_target(setting, weights_path: str, where: str = "--exposure") -> float | None:
    """The target white level for ``setting`` and a checkpoint, or ``None``: no matching.

    ``None`` (no setting given) means ``auto`` when the checkpoint has a sidecar, else off. ``auto`` reads the
    white level of the training inputs (:func:`sdsd.color.white_level`) from the sidecar (:func:`target_of`); a
    number is used as it is. A version 1 sidecar (raw percentiles only) is used with one warning: its white level
    includes the training noise, so a clean video comes out brighter than the model was trained for.

    Raises:
        UserError: ``auto`` asked for a checkpoint without a sidecar, or a bad setting.
    """
    if setting is None:
        stats = read_sidecar(weights_path)
        return None if stats is None else _sidecar_target(stats, weights_path)
    setting = parse_setting(setting, where)
    if setting == "off":
        return None
    if setting == "auto":
        stats = read_sidecar(weights_path)
        if stats is None:
            raise UserError(f"{where} auto: {weights_path} has no training-statistics sidecar "
                            f"({os.path.basename(sidecar_path(weights_path))}); pass {where} VALUE (the training "
                            f"inputs' white level: {WHITE_LEVEL_TEXT}) or off")
        return _sidecar_target(stats, weights_path)
    return float(setting)


def _sidecar_target(stats: dict, weights_path: str) -> float:
    target = target_of(stats)
    if is_legacy(stats):
        import logging

        logging.getLogger("sdsd").warning(
            "%s is a version 1 sidecar (white level %.4g measured with the training noise): matched videos come out "
            "brighter than trained for; rewrite it with python -m sdsd.tools.sidecar -opt TRAIN.yml %s",
            sidecar_path(weights_path), target, weights_path)
    return target


class MatchedDataset:
    """An evaluation dataset whose scenes' inputs are matched to ``target`` (every scene from its first frame,
    so a frame's gain does not depend on how frames are shared out among processes)."""

    def __init__(self, dataset, target: float):
        self.dataset = dataset
        self.target = target

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def load_scene(self, scene):
        lq, gt = self.dataset.load_scene(scene)
        matcher = ExposureMatcher(self.target)
        return torch.stack([matcher.tensor(frame) for frame in lq]), gt
