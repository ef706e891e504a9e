"""``runtime: auto``: the fastest backend this machine runs, measured on the job's first window, and remembered.

On the first frames the engine passes it, :class:`AutoBackend` times every candidate the registry's runtimes offer
here (:func:`candidates`: PyTorch NCHW / channels_last / Winograd, bf16 where the CPU computes it natively, CUDA
fp16/bf16, OpenVINO fp32 and int8, ONNX Runtime) on one window after one warm-up, rejects any whose output is not
within :data:`MIN_PSNR_DB` of the fp32 PyTorch output of that window, keeps the fastest, logs the choice and why
the others were left out in one line and remembers it per machine, network size, shape and precision request
(``choices.json`` in the cache folder), so a later run skips the timing.

A candidate whose models are not converted (or, int8, quantized) yet is left out when the job is too short to pay
for the conversion; the choice among the others is remembered all the same, with the candidates left out that way
(``pending``). A later run times again (an upgrade) once one of them is in the cache (a longer job converted it, or
``python -m sdsd.export --cache``) or its job is long enough to pay for converting it; a remembered choice whose
models left the cache is timed again too.

A ``choices.json`` that is not valid (not JSON, not an object, too large) is ignored with one warning and
rewritten; entries naming unknown runtimes are dropped. When the cache folder cannot be used, one warning says so
and only PyTorch candidates are timed.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import math
import os
import time

import torch
from torch import nn

from sdsd.errors import UserError
from sdsd.runtimes.base import Backend, RuntimeUnavailable, TorchBackend, close_backend
from sdsd.runtimes.cache import CacheUnavailable, cache_dir, cache_name, is_cached, open_cache
from sdsd.runtimes.graphs import GRAPH_VERSION, network_settings
from sdsd.runtimes.machine import machine_key, native_bf16
from sdsd.runtimes.quantize import QUANTIZE_SECONDS
from sdsd.runtimes.registry import INFERENCE_PRECISIONS, RUNTIMES, backend_class, candidates_of
from sdsd.utils.io import atomic_write_json

logger = logging.getLogger("sdsd")

__all__ = ["AutoBackend", "MIN_PSNR_DB", "candidates", "read_choices"]

#: ``auto`` accepts a lower precision only when its output is within this PSNR (dB) of the fp32 output.
MIN_PSNR_DB = 40.0
#: Seconds assumed for exporting or converting a model not yet in the cache. ``auto`` builds such a model only
#: when the job is expected to take at least :data:`CONVERSION_PAYBACK` times as long on PyTorch, or its length is
#: unknown.
CONVERSION_SECONDS = 60.0
CONVERSION_PAYBACK = 10.0


def conversion_seconds(runtime: str, precision: str, net: nn.Module, height: int, width: int,
                       cache: str | None) -> float:
    """Seconds assumed for making a candidate's models (0 when they are in the cache): a conversion, and for int8 the
    quantization (:data:`sdsd.runtimes.quantize.QUANTIZE_SECONDS`) too."""
    if runtime == "torch" or is_cached(runtime, net, height, width, cache, precision):
        return 0.0
    if precision == "int8":
        converted = is_cached(runtime, net, height, width, cache)
        return QUANTIZE_SECONDS + (0.0 if converted else CONVERSION_SECONDS)
    return CONVERSION_SECONDS


# -- candidates, per runtime (named by the registry) ---------------------------------------------------------------


def torch_candidates(device: torch.device, precision: str) -> list[tuple[str, str | None]]:
    """PyTorch's ``(precision, conv_backend)`` candidates, fp32 NCHW first (the reference)."""
    from sdsd.archs.fastconv import nnpack_available

    fp32, low = precision in ("fp32", "auto"), precision == "auto"
    out: list[tuple[str, str | None]] = []
    if device.type == "cuda":
        if fp32:
            out.append(("fp32", "nchw"))
        if low or precision == "fp16":
            out.append(("fp16", "nchw"))
        if (low or precision == "bf16") and torch.cuda.is_bf16_supported():
            out.append(("bf16", "nchw"))
        return out
    if fp32:
        out += [("fp32", "nchw"), ("fp32", "channels_last")]
        if nnpack_available():
            out.append(("fp32", "winograd"))
    if precision == "bf16" or (low and native_bf16()):
        # Asked for explicitly, emulated bf16 still runs (slowly).
        out.append(("bf16", "channels_last"))
    return out


def openvino_candidates(device: torch.device, precision: str) -> list[tuple[str, str | None]]:
    """OpenVINO's candidates: the CPU plugin in fp32, bf16 where the CPU computes it natively, and int8 (NNCF)."""
    if device.type != "cpu":
        return []
    out: list[tuple[str, str | None]] = [("fp32", None)] if precision in ("fp32", "auto") else []
    if precision in ("bf16", "auto") and native_bf16():
        out.append(("bf16", None))
    if precision in ("int8", "auto"):
        out.append(("int8", None))
    return out


def onnxruntime_candidates(device: torch.device, precision: str) -> list[tuple[str, str | None]]:
    """ONNX Runtime's candidate: fp32 (CPU, or the CUDA providers)."""
    return [("fp32", None)] if precision in ("fp32", "auto") else []


def candidates(device: torch.device, precision: str, conv_backend: str | None = None
               ) -> list[tuple[str, str, str | None]]:
    """``(runtime, precision, conv_backend)`` this machine can run for a precision request, over every registered
    runtime in registry order (PyTorch fp32 first: the reference).

    A ``conv_backend`` other than ``auto``/``None`` restricts the PyTorch candidates to it.
    """
    out = [(name, p, conv) for name in RUNTIMES for p, conv in candidates_of(name)(device, precision)]
    if conv_backend not in (None, "auto") and device.type == "cpu":
        out = [c for c in out if c[0] != "torch" or c[2] == conv_backend]
        if not out or out[0][0] != "torch":
            out.insert(0, ("torch", "fp32" if precision == "auto" else precision, conv_backend))
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


class AutoBackend(Backend):
    """``runtime: auto``: chooses the fastest backend by timing the candidates on the first frames it is given.

    The choice happens on the first :meth:`features` call (the engine's first chunk of frames): each candidate runs
    one window (the features of one frame and one window step) once to warm up and once timed, on a window made of
    those frames. A candidate that cannot run here (not installed, refused graph) is left out with one log line; one
    whose output is not within 40 dB PSNR of the fp32 PyTorch output is rejected. The choice is remembered in
    ``choices.json`` in the cache folder per machine, network size, frame shape and precision request.
    """

    name = "auto"

    def __init__(self, net: nn.Module, device: torch.device | str = "cpu", precision: str = "auto",
                 conv_backend: str | None = "auto", cache: str | None = None, frames_hint: int | None = None):
        self.device = torch.device(device)
        #: Output frames the job is expected to have (None: unknown); decides whether converting a model pays off.
        self.frames_hint = frames_hint
        self.requested = precision
        self.precision = precision
        self.net = net
        self.cache = cache
        self.conv_backend = conv_backend
        self.nframes, self.center = int(net.nframes), int(net.center)
        self.chosen: Backend | None = None
        self.report: dict = {}

    # -------------------------------------------------------------- choice cache
    def _choice_key(self, height: int, width: int) -> str:
        return "|".join([machine_key(self.device), json.dumps(network_settings(self.net), sort_keys=True),
                         f"{height}x{width}", self.requested, f"torch-{torch.__version__}", f"g{GRAPH_VERSION}"])

    def _choices_path(self) -> str:
        return os.path.join(self.cache or cache_dir(), "choices.json")

    def _load_choices(self, warn: bool = True) -> dict:
        """The remembered choices (see :func:`read_choices`)."""
        return read_choices(self._choices_path(), warn)

    def _save_choice(self, key: str, value: dict) -> None:
        """Add one choice to ``choices.json`` (written atomically and durably); a failure to write is one warning."""
        path = self._choices_path()
        data = self._load_choices(warn=False)
        data[key] = value
        try:
            atomic_write_json(dict(sorted(data.items())), path, indent=1)
        except OSError as exc:
            logger.warning("runtime auto: could not remember the choice in %s (%s)", path,
                           exc.strerror or type(exc).__name__)

    # -------------------------------------------------------------- selection
    def _build(self, runtime: str, precision: str, conv: str | None) -> Backend:
        if runtime == "torch":
            return TorchBackend(copy.deepcopy(self.net), self.device, precision=precision, conv_backend=conv)
        return backend_class(runtime)(self.net, self.device, precision=precision, cache=self.cache)

    def select(self, frames: torch.Tensor, recall: bool = True) -> Backend:
        """Choose (or, with ``recall``, recall) the backend for frames shaped like ``frames`` (``T x 3 x H x W``).

        When the cache folder cannot be used (see :func:`cache_problem`), one warning says so and only the PyTorch
        candidates are timed: nothing is converted, recalled or remembered.
        """
        height, width = frames.shape[-2:]
        key = self._choice_key(height, width)
        try:
            open_cache(self.cache)
            cache_usable = True
        except CacheUnavailable as exc:
            cache_usable = False
            _warn_unusable_cache(exc.root, self.cache, exc.problem)
        known = self._load_choices().get(key) if recall and cache_usable else None
        if known is not None:
            why = self._retime_reason(known, height, width)
            if why is None:
                try:
                    backend = self._build(known["runtime"], known["precision"], known.get("conv_backend"))
                    self.report = {**known, "from_cache": True}
                    logger.info("runtime auto: %s (remembered for %dx%d)", _label(known), height, width)
                    return backend
                except UserError as exc:  # RuntimeUnavailable included: e.g. a runtime uninstalled since
                    why = f"it cannot run ({exc})"
            logger.info("runtime auto: timing again for %dx%d: the remembered choice %s %s", height, width,
                        _label(known), why)
        n = self.nframes
        sample = frames[:1].float()
        window_index = torch.arange(n) % frames.shape[0]
        timings, rejected, skipped = {}, {}, {}
        # Labels left out only because converting them would not pay for this job: remembered as pending, so a
        # later run upgrades the choice once they are converted.
        pending: list[str] = []
        reference = None
        best = None
        tried = candidates(self.device, self.requested, self.conv_backend)
        if not cache_usable:
            tried = [c for c in tried if c[0] == "torch"]
        for runtime, precision, conv in tried:
            label = _label({"runtime": runtime, "precision": precision, "conv_backend": conv})
            cost = conversion_seconds(runtime, precision, self.net, height, width, self.cache)
            if (cost and best is not None and self.frames_hint is not None
                    and self.frames_hint * best[0] < CONVERSION_PAYBACK * cost):
                pending.append(label)
                skipped[label] = (f"not {'quantized' if precision == 'int8' else 'converted'} yet and the job "
                                  f"({self.frames_hint} frames, about {self.frames_hint * best[0]:.0f} s) is too "
                                  "short to pay for it")
                logger.debug("runtime auto: %s left out: %s", label, skipped[label])
                continue
            try:
                start = time.perf_counter()
                backend = self._build(runtime, precision, conv)
                if hasattr(backend, "prepare"):
                    backend.prepare(height, width, frames)
                setup = time.perf_counter() - start
                with torch.inference_mode():
                    seconds, out = _time_window(backend, frames, sample, window_index)
            except RuntimeUnavailable as exc:
                skipped[label] = str(exc)
                logger.debug("runtime auto: %s left out: %s", label, exc)
                continue
            if reference is None:
                # The first candidate is always torch fp32: the reference the others are held to.
                reference = out
            psnr = _psnr(out, reference)
            if psnr < MIN_PSNR_DB:
                rejected[label] = round(psnr, 2)
                logger.debug("runtime auto: %s rejected: %.1f dB from fp32 (< %g dB)", label, psnr, MIN_PSNR_DB)
                close_backend(backend)
                continue
            timings[label] = {"seconds": round(seconds, 4), "setup_seconds": round(setup, 2),
                              "psnr_vs_fp32": None if math.isinf(psnr) else round(psnr, 2)}
            if best is None or seconds < best[0]:
                if best is not None:
                    close_backend(best[2])
                best = (seconds, {"runtime": runtime, "precision": precision, "conv_backend": conv}, backend)
            else:
                close_backend(backend)
        if best is None:
            raise UserError(f"runtime auto: no runtime can run here ({'; '.join(skipped.values())})")
        choice = best[1]
        self.report = {**choice, "timings": timings, "rejected": rejected, "skipped": sorted(skipped),
                       "pending": pending, "from_cache": False}
        if cache_usable:
            # Remembered whenever it was made among the candidates that can run now; pending ones upgrade it later.
            self._save_choice(key, {**choice, "timings": timings, "pending": pending,
                                    "seconds": round(best[0], 4)})
        left_out = [f"{k} ({v})" for k, v in skipped.items()] + [
            f"{k} ({v:.1f} dB from fp32 < {MIN_PSNR_DB:g} dB)" for k, v in rejected.items()]
        logger.info("runtime auto: %s at %.3f s per frame and window (%dx%d; %s)%s", _label(choice), best[0], height,
                    width, ", ".join(f"{k} {v['seconds']:.3f} s" for k, v in timings.items()),
                    f"; left out: {'; '.join(left_out)}" if left_out else "")
        return best[2]

    def _retime_reason(self, known: dict, height: int, width: int) -> str | None:
        """Why a remembered choice is timed again (None: use it): its models left the cache, or a candidate it was
        made without (``pending``) is now in the cache or pays for its conversion on this job."""
        if known["runtime"] != "torch" and not is_cached(known["runtime"], self.net, height, width, self.cache,
                                                         known["precision"]):
            return "has no models in the cache any more"
        seconds = known.get("seconds")
        for label in known.get("pending", ()):
            match = [c for c in candidates(self.device, self.requested, self.conv_backend)
                     if _label({"runtime": c[0], "precision": c[1], "conv_backend": c[2]}) == label]
            if not match:
                continue
            runtime, precision, _ = match[0]
            cost = conversion_seconds(runtime, precision, self.net, height, width, self.cache)
            if not cost:
                return f"was made while {label} was not converted; it is now"
            if self.frames_hint is None or not isinstance(seconds, (int, float)):
                return f"was made without {label}; this job's length is unknown, so converting it may pay"
            if self.frames_hint * seconds >= CONVERSION_PAYBACK * cost:
                return f"was made without {label}; this job ({self.frames_hint} frames) pays for converting it"
        return None

    def _ensure(self, frames: torch.Tensor) -> Backend:
        if self.chosen is None:
            self.chosen = self.select(frames)
            self.precision = self.chosen.precision
            # The candidates that lost hold compiled models and sessions of other runtimes (memory): free them now,
            # not at some later garbage collection.
            gc.collect()
        return self.chosen

    def features(self, frames):
        return self._ensure(frames).features(frames)

    def windows(self, feats, base):
        if self.chosen is None:
            raise RuntimeError("AutoBackend.windows before features: the engine computes features first")
        return self.chosen.windows(feats, base)

    def describe(self) -> dict:
        if self.chosen is None:
            return {**super().describe(), "runtime": "auto (not chosen yet)"}
        chosen = self.chosen.describe()
        return {**chosen, "selected_by": "auto", "auto": {k: v for k, v in self.report.items()
                                                          if k in ("timings", "rejected", "skipped", "from_cache")}}

    def close(self) -> None:
        if self.chosen is not None:
            close_backend(self.chosen)


#: ``choices.json`` files larger than this are ignored (and rewritten) instead of read.
MAX_CHOICES_BYTES = 1 << 20

_warned_caches: set[str] = set()


def _warn_unusable_cache(root: str, cache: str | None, problem: str) -> None:
    """One warning per cache folder and process: ``auto`` runs PyTorch because the cache cannot be used."""
    if root in _warned_caches:
        return
    _warned_caches.add(root)
    logger.warning("runtime auto: %s cannot be used: %s; running PyTorch without converting models or remembering "
                   "the choice (set SDSD_CACHE to a writable folder)", cache_name(root, cache), problem)


def _valid_choice(value) -> bool:
    """Whether a remembered choice names a runtime, precision and convolution backend this version knows."""
    from sdsd.archs.fastconv import CONV_BACKENDS

    return (isinstance(value, dict) and isinstance(value.get("runtime"), str) and value["runtime"] in RUNTIMES
            and isinstance(value.get("precision"), str) and value["precision"] in INFERENCE_PRECISIONS
            and (value.get("conv_backend") is None
                 or (isinstance(value["conv_backend"], str) and value["conv_backend"] in CONV_BACKENDS))
            and isinstance(value.get("timings", {}), dict)
            and isinstance(value.get("pending", []), list)
            and all(isinstance(label, str) for label in value.get("pending", [])))


def read_choices(path: str, warn: bool = True) -> dict:
    """The choices remembered in ``path`` (``choices.json``): ``{key: {"runtime", "precision", ...}}``.

    A missing file is no choices. A file that cannot be read, is larger than :data:`MAX_CHOICES_BYTES`, is not
    JSON or not a JSON object is ignored whole: one warning (with ``warn``) names it and says it will be rewritten
    (the next remembered choice replaces it). Entries naming an unknown runtime, precision or convolution backend,
    or of the wrong types, are dropped (one warning with ``warn``); the others are kept.
    """
    problem = None
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CHOICES_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        problem = f"it cannot be read: {exc.strerror or type(exc).__name__}"
    else:
        if len(raw) > MAX_CHOICES_BYTES:
            problem = f"it is larger than {MAX_CHOICES_BYTES >> 20} MiB"
        else:
            try:
                data = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                data, problem = None, "it is not valid JSON"
            if problem is None and not isinstance(data, dict):
                problem = "it is not a JSON object"
    if problem is not None:
        if warn:
            logger.warning("runtime auto: %s was ignored (%s); it will be rewritten with the next measured choice",
                           path, problem)
        return {}
    kept = {key: value for key, value in data.items() if _valid_choice(value)}
    if warn and len(kept) < len(data):
        logger.warning("runtime auto: %s: dropped %d remembered choice(s) naming an unknown runtime, precision or "
                       "convolution backend; timing again where needed", path, len(data) - len(kept))
    return kept


def _label(choice: dict) -> str:
    conv = f" {choice['conv_backend']}" if choice.get("conv_backend") and choice["runtime"] == "torch" else ""
    return f"{choice['runtime']} {choice['precision']}{conv}"


def _time_window(backend: Backend, frames: torch.Tensor, sample: torch.Tensor,
                 window_index: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Seconds of one streaming step (features of one frame + one window) after one warm-up, and its output."""
    feats = backend.features(frames)
    window = tuple(f[window_index].unsqueeze(0) for f in feats)
    base = frames[window_index[backend.center]].unsqueeze(0)
    backend.windows(window, base)  # warm-up (first-call allocations, kernel selection)
    sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    backend.features(sample)
    out = backend.windows(window, base)[0]
    sync()
    return time.perf_counter() - start, out.float().cpu()
