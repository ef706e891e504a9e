"""The inference engine: the one place that runs SDSD-Net on frames.

Validation during training, ``quantitative_test.py``, ``qualitative_test.py`` and ``python -m sdsd.enhance`` all
run the network through :class:`Engine`; each adds only what is its own (metrics, images, video encoding).

What the engine does, in order:

* **Backend**: a :class:`sdsd.runtimes.base.Backend` runs the network's two stages (the runtime layer,
  :mod:`sdsd.runtimes`: PyTorch, OpenVINO, ONNX Runtime, ``auto``). :func:`build_engine` is the one place an
  engine is built, for validation, the test scripts and ``sdsd.enhance`` alike.
* **Features once per frame**: the per-frame stage (``extract_features``: the first convolutions, the residual
  blocks and the pyramid) does not depend on the window, so it runs once per frame and view (flip, tile), in
  chunks of ``chunk`` frames; only the window stage (``forward_features``: alignment, fusion, reconstruction)
  runs per window, ``batch`` windows per call, on gathered features. This gives the numbers of ``net(window)``
  at about 1/N of the per-frame cost.
* **Geometry**: frames are padded to a multiple of 16 (reflect; replicate when too small to reflect) and the
  outputs cropped back. With ``tile > 0`` every view is cut into overlapping tiles (identically for all frames
  of a window); each tile keeps its own features and the overlaps are blended with a smooth partition of unity,
  so no seam shows and peak memory depends on the tile size, not on the frame size.
* **Memory plan** (:func:`plan_tile`, :meth:`Engine.fit_tiles`): before the first frame, the peak memory of the
  run at the frame size is estimated from the network's ``nf``, ``nframes`` and ``groups`` and compared with the
  memory available; frames that do not fit are tiled (the largest tile that fits) instead of failing in the
  allocator.
* **Self-ensemble**: the whole window is flipped (identity, horizontal, vertical, both), each view is enhanced,
  the outputs are flipped back and averaged (all three outputs).
* **Streaming** (:meth:`Engine.stream`): frames are read one at a time; window ``i`` is computed once frame
  ``max(i + N//2, 2 * (N//2))`` has been read or the stream has ended, so the clip length need not be known,
  and only the frames (and features) a later window can still use are kept: about ``N + batch`` frames.

Windows follow the test protocol's rule (``sdsd.data.windows.index_generation``, ``new_info`` as published):
output frame ``i`` of an ``n``-frame clip comes from the N-frame window around ``i`` computed over those ``n``
frames.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcn.cpu import COLUMN_BUFFER_BYTES
from sdsd.data.windows import index_generation
from sdsd.errors import UserError
from sdsd.runtimes import make_backend
from sdsd.runtimes.base import Backend, Outputs, TorchBackend

__all__ = [
    "ENSEMBLE_FLIPS",
    "MIN_SIZE",
    "Backend",
    "TorchBackend",
    "Engine",
    "build_engine",
    "engine_from_options",
    "FrameOutput",
    "WorkItem",
    "plan_work",
    "iterate_dataset",
    "pad_to_multiple",
    "plan_tiles",
    "tile_weights",
    "available_memory",
    "estimate_peak_bytes",
    "plan_tile",
]

#: The self-ensemble transforms: name -> the tensor dims flipped (of a ``... x H x W`` tensor).
ENSEMBLE_FLIPS: dict[str, tuple[int, ...]] = {
    "identity": (),
    "hflip": (-1,),
    "vflip": (-2,),
    "hvflip": (-2, -1),
}
MULTIPLE = 16  # the network downsamples by 16
MIN_SIZE = 16



# -- geometry -----------------------------------------------------------------------------------------------------


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Pad the last two axes (bottom/right) up to a multiple of ``multiple``.

    Reflect padding when the frame is large enough to mirror (pad < size), else replicate.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    squeeze = x.dim() == 3
    out = F.pad(x.unsqueeze(0) if squeeze else x, (0, pw, 0, ph), mode=mode)
    return out[0] if squeeze else out


def plan_tiles(size: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Tile starts along one axis of length ``size`` (a multiple of 16).

    Returns ``(starts, length)``: tiles ``[s, s + length)`` covering ``0 .. size``, consecutive tiles
    overlapping by at least ``overlap``; one tile of the full size when ``tile`` is 0 or not smaller.
    """
    if tile <= 0 or tile >= size:
        return [0], size
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return starts, tile


def _ramp(length: int) -> torch.Tensor:
    """Weights of the right-hand tile across an overlap of ``length`` pixels (the left tile gets ``1 - ramp``).

    The outer quarter of the overlap on each side gets weight 0 for the tile whose border it is (a tile's
    outputs near its own border see the zero padding of the convolutions), and a smoothstep crosses over in
    the middle half. Smoothstep is symmetric (``f(t) + f(1 - t) = 1``), so the two tiles' weights sum to one.
    """
    dead = length // 4
    t = ((torch.arange(length, dtype=torch.float64) + 0.5 - dead) / max(length - 2 * dead, 1)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def tile_weights(starts: list[int], length: int) -> list[torch.Tensor]:
    """1-D blending weights (float64, ``length`` each) for the tiles at ``starts`` along one axis.

    Across each overlap with a neighbour a tile fades smoothly from 0 to 1 (see :func:`_ramp`); it is 1
    elsewhere, including at the frame border. Neighbouring tiles' weights sum to one, so the blend shows no
    seam.
    """
    out = []
    for k, start in enumerate(starts):
        w = torch.ones(length, dtype=torch.float64)
        if k > 0:
            left = starts[k - 1] + length - start
            w[:left] *= _ramp(left)
        if k + 1 < len(starts):
            right = start + length - starts[k + 1]
            w[length - right:] *= 1 - _ramp(right)
        out.append(w)
    return out


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


# -- memory plan --------------------------------------------------------------------------------------------------

#: Constants of :func:`estimate_peak_bytes`, in bytes per pixel of the padded frame or tile unless said otherwise;
#: measured on the CPU (see :func:`estimate_peak_bytes` for the measurements).
FIXED_BYTES = 64 * 2**20  # the largest intercept of the measured lines (allocator, oneDNN/Winograd scratch)
RECONSTRUCTION_BYTES = (1550, 4.5)  # per window: 1550 + 4.5 nf, the two reconstruction branches (64 channels at
#                                     full size whatever nf, with their convolution buffers)
ALIGNMENT_BYTES = (3.5, 19)  # per window: nf (3.5 nframes + 19), PCD alignment and fusion, DCN columns aside
FEATURE_BYTES = (9, 32)  # per frame of a feature call: 9 nf + 32 (the full-size first convolution and pyramid)
FRAME_BYTES = 12  # per frame held: a float32 RGB frame
OUTPUT_BYTES = 108  # per window: three 3-channel float32 outputs, their tile canvas and the flip sum
#: Fraction of the available memory a planned run may take; the rest covers decoding, encoding and the error of the
#: estimate (measured peaks: 0.65-0.99 of it; 1.07 once, for small frames in a busy test process).
MEMORY_SAFETY = 0.8


def _pyramid_bytes(nf: int) -> float:
    """float32 features of one frame as ``extract_features`` returns them (L1 + L2 + L3, each with its offset conv's
    neighbour half: ``2 nf`` channels), per pixel of the frame: ``8 nf (1/16 + 1/64 + 1/256)``."""
    return 8 * nf * (1 / 16 + 1 / 64 + 1 / 256)


def estimate_peak_bytes(nf: int, nframes: int, width: int, height: int, *, groups: int = 8, tile: int = 0,
                        overlap: int = 64, batch: int = 1, chunk: int = 1, flips: int = 1,
                        device: torch.device | str = "cpu") -> int:
    """Estimated peak memory, in bytes, of :meth:`Engine.stream` on ``width x height`` frames (fp32).

    With ``P`` the pixels of the padded frame, ``V`` those of one view (a tile, or the padded frame untiled), ``S``
    those of all tiles together (``P`` untiled; more than ``P`` where tiles overlap), ``K = nframes + batch`` the
    frames the stream keeps, ``L = 8 nf (1/16 + 1/64 + 1/256)`` the bytes per pixel of one frame's features
    (the pyramid and its offset convs' neighbour halves, :func:`_pyramid_bytes`):

    * held: ``P (12 K + 108 batch)`` (frames, outputs) ``+ S K flips L`` (the feature cache, every tile and flip);
    * feature stage: ``chunk (9 nf + 32) V``;
    * window stage: ``batch nframes L V`` (the gathered features) ``+ max(batch (1550 + 4.5 nf) V, batch nf
      (3.5 nframes + 19) V + D)``: the reconstruction (two branches with 64 channels at full size whatever ``nf``)
      or the alignment and fusion, whichever is larger, with ``D = batch nframes 2.25 (nf + 2 groups) V`` the
      deformable convolutions' column and grid buffers (at 1/16 of the pixels), which :mod:`dcn.cpu` caps at
      ``COLUMN_BUFFER_BYTES (1 + 2 groups / nf)`` on the CPU;
    * peak = 64 MiB + held + the larger stage.

    For the published network (nf=64, nframes=5, groups=8) untiled that is about 3000 B/px: 47 GiB for 4096x4096,
    6.2 GiB for 1920x1080.

    The constants were fitted to measured peaks (``docs/performance.md``, memory plan calibration).
    """
    hp, wp = _round_up(height, MULTIPLE), _round_up(width, MULTIPLE)
    size = _round_up(tile, MULTIPLE) if tile > 0 else 0
    ys, th = plan_tiles(hp, size, overlap)
    xs, tw = plan_tiles(wp, size, overlap)
    frame, view = hp * wp, th * tw
    views = len(ys) * len(xs) * view
    kept, pyramid = nframes + batch, _pyramid_bytes(nf)
    held = frame * (FRAME_BYTES * kept + OUTPUT_BYTES * batch) + views * kept * flips * pyramid
    features = chunk * (FEATURE_BYTES[0] * nf + FEATURE_BYTES[1]) * view
    columns = batch * nframes * 9 * 4 * (nf + 2 * groups) / 16 * view
    if torch.device(device).type != "cuda":
        columns = min(columns, COLUMN_BUFFER_BYTES * (1 + 2 * groups / nf))
    alignment = batch * nf * (ALIGNMENT_BYTES[0] * nframes + ALIGNMENT_BYTES[1]) * view + columns
    reconstruction = batch * (RECONSTRUCTION_BYTES[0] + RECONSTRUCTION_BYTES[1] * nf) * view
    window = batch * nframes * pyramid * view + max(reconstruction, alignment)
    return int(FIXED_BYTES + held + max(features, window))


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that a run on ``device`` can still allocate, or ``None`` when this system does not say.

    CUDA: the free device memory (``torch.cuda.mem_get_info``) plus what PyTorch's caching allocator holds
    unused. CPU: ``MemAvailable`` of ``/proc/meminfo`` (Linux). ``$SDSD_MEMORY_BYTES``, when set, is used instead
    (a budget smaller than the machine's, e.g. on a shared node).
    """
    budget = os.environ.get("SDSD_MEMORY_BYTES")
    if budget:
        try:
            value = int(float(budget))
        except (ValueError, OverflowError):
            raise UserError(f"SDSD_MEMORY_BYTES={budget[:40]!r} is not a number of bytes") from None
        if value <= 0:
            raise UserError(f"SDSD_MEMORY_BYTES={budget[:40]!r} must be a positive number of bytes")
        return value
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _amount(size: float) -> str:
    """Bytes as ``12 GiB``, ``1.5 GiB`` or ``300 MiB``."""
    gib = size / 2**30
    if gib >= 10:
        return f"{gib:.0f} GiB"
    if gib >= 1:
        return f"{gib:.1f} GiB"
    return f"{size / 2**20:.0f} MiB"


def plan_tile(network, width: int, height: int, tile: int = 0, available_bytes: int | None = None, *,
              overlap: int = 64, batch: int = 1, chunk: int = 1, flips: int = 1,
              device: torch.device | str = "cpu") -> tuple[int, str | None]:
    """The tile size for ``width x height`` frames: ``tile`` when given, else 0 if whole frames fit in memory, else
    the largest tile that does.

    Args:
        network: an :class:`Engine` (its network, overlap, batch, chunk, flips and device are used, and the keyword
            arguments are ignored), an SDSD-Net module, or its ``network_G`` options (``nf``, ``nframes``,
            ``groups``; the published values for those missing). An engine whose backend does not hold the
            network (ONNX Runtime) is planned with the published network.
        width, height: the frame size.
        tile: the user's tile size; when above 0 it is returned unchanged, with no message.
        available_bytes: the memory the run may use; ``None`` reads it (:func:`available_memory`), and when the
            system does not say, whole frames are used.
        overlap, batch, chunk, flips, device: the engine's settings (see :class:`Engine`).

    Returns:
        ``(tile, message)``: ``(0, None)`` when whole frames fit in :data:`MEMORY_SAFETY` of the available memory
        (:func:`estimate_peak_bytes`); else the largest multiple of 16 (from just below the larger padded side down
        to ``max(2 * overlap, 64)``) whose tiled run fits, and one line saying so, e.g. ``frames 4096x4096 need
        about 31 GiB without tiles, 20 GiB available: tiling 2032x2032 (give --tile to choose)``.

    Raises:
        UserError: not even the smallest tile fits (the feature cache and the frames grow with the frame size
            whatever the tile).
    """
    if tile > 0:
        return tile, None
    if isinstance(network, Engine):
        engine = network
        overlap, batch, chunk, flips = engine.overlap, engine.batch, engine.chunk, len(engine.flips)
        device = engine.backend.device
        network = getattr(engine.backend, "net", None)
        network = {} if network is None else network
    if isinstance(network, nn.Module):
        settings = {k: getattr(network, k) for k in ("nf", "nframes", "groups") if hasattr(network, k)}
    else:
        settings = dict(network)
    from sdsd.options import published_network

    settings = {**published_network(), **{k: v for k, v in settings.items() if v is not None}}
    nf, nframes, groups = int(settings["nf"]), int(settings["nframes"]), int(settings["groups"])
    available = available_memory(device) if available_bytes is None else int(available_bytes)
    if available is None:
        return 0, None
    budget = MEMORY_SAFETY * available

    def need(size: int) -> int:
        return estimate_peak_bytes(nf, nframes, width, height, groups=groups, tile=size, overlap=overlap,
                                   batch=batch, chunk=chunk, flips=flips, device=device)

    whole = need(0)
    if whole <= budget:
        return 0, None
    overlap = _round_up(overlap, MULTIPLE)
    smallest = max(2 * overlap, 4 * MULTIPLE)
    largest = max(_round_up(height, MULTIPLE), _round_up(width, MULTIPLE)) - MULTIPLE
    for size in range(largest, smallest - 1, -MULTIPLE):
        if need(size) <= budget:
            return size, (f"frames {width}x{height} need about {_amount(whole)} without tiles, "
                          f"{_amount(available)} available: tiling {size}x{size} (give --tile to choose)")
    least = min((need(size) for size in range(largest, smallest - 1, -MULTIPLE)), default=whole)
    raise UserError(f"frames {width}x{height} need about {_amount(least)} even in tiles (of {smallest} px and up; "
                    f"{_amount(whole)} without tiles) but {_amount(available)} is available; free memory, reduce "
                    "the frame size, or give --tile to try a tile size yourself")


@dataclasses.dataclass
class _Tiling:
    """The tiles of one padded frame size: ``(y, x)`` starts, the tile size and per-tile blend weights."""

    tiles: list[tuple[int, int]]
    size: tuple[int, int]
    weights: list[torch.Tensor] | None  # None for a single tile


# -- the engine ---------------------------------------------------------------------------------------------------


class Engine:
    """Runs windows of frames through a :class:`Backend` with feature reuse, tiles and self-ensemble.

    Args:
        backend: how the network runs.
        chunk: frames per feature call (bounds the memory of the per-frame stage).
        batch: windows per window-stage call.
        self_ensemble: average over the four flips of each window (x4 cost).
        tile: tile size in pixels (rounded up to a multiple of 16); 0 runs on whole frames, or on the tiles
            :meth:`fit_tiles` chooses for frames too large for memory.
        overlap: tile overlap in pixels (rounded up to a multiple of 16; at most half the tile).

    The feature cache passed to :meth:`run` maps ``(flip, tile, frame key)`` to that frame's features; callers
    keep one per clip and drop entries of frames no later window uses.
    """

    def __init__(self, backend: Backend, *, chunk: int = 4, batch: int = 1, self_ensemble: bool = False,
                 tile: int = 0, overlap: int = 64):
        if chunk < 1 or batch < 1:
            raise UserError(f"chunk ({chunk}) and batch ({batch}) must be positive integers")
        if tile < 0 or overlap < 0:
            raise UserError("the tile size and the tile overlap must not be negative")
        self.backend = backend
        self.chunk, self.batch = int(chunk), int(batch)
        self.flips = list(ENSEMBLE_FLIPS.values()) if self_ensemble else [()]
        self.tile = _round_up(tile, MULTIPLE) if tile > 0 else 0
        self._tile_given = self.tile > 0  # the caller's tile size; otherwise fit_tiles may choose one per clip
        self.overlap = _round_up(overlap, MULTIPLE)
        if self.tile and 2 * self.overlap > self.tile:
            raise UserError(f"the tile overlap {self.overlap} must be at most half of the tile size {self.tile}; "
                            "lower the overlap or raise the tile size")
        self._tilings: dict[tuple[int, int], _Tiling] = {}
        #: ``{"loaded", "missing", "unexpected"}`` key counts of the checkpoint, when the engine loaded one.
        self.checkpoint_keys: dict | None = None

    @property
    def nframes(self) -> int:
        return self.backend.nframes

    def describe(self) -> dict:
        """Backend, precision and the engine's settings, for logs and metrics JSON."""
        return {**self.backend.describe(), "self_ensemble": len(self.flips) > 1, "tile": self.tile}

    def fit_tiles(self, width: int, height: int, available_bytes: int | None = None) -> str | None:
        """Choose the tile size for ``width x height`` frames before the first one, when the caller gave none.

        Applies :func:`plan_tile` to this engine: whole frames (``tile`` 0) when they fit in the available memory
        (``available_bytes``, default: what :func:`available_memory` reads), else the largest tile that fits. A
        tile size given to the constructor is kept. Call it again for each clip of another size (an archive).

        Returns:
            The line to show the user when tiles were chosen, else ``None``.

        Raises:
            UserError: not even the smallest tile fits.
        """
        if self._tile_given:
            return None
        tile, message = plan_tile(self, width, height, 0, available_bytes)
        if tile != self.tile:
            self.tile = tile
            self._tilings.clear()
        return message

    # ---------------------------------------------------------------- core
    def _tiling(self, hp: int, wp: int) -> _Tiling:
        if (hp, wp) not in self._tilings:
            ys, th = plan_tiles(hp, self.tile, self.overlap)
            xs, tw = plan_tiles(wp, self.tile, self.overlap)
            tiles = [(y, x) for y in ys for x in xs]
            weights = None
            if len(tiles) > 1:
                wy, wx = tile_weights(ys, th), tile_weights(xs, tw)
                plain = [torch.outer(wy[i], wx[j]) for i in range(len(ys)) for j in range(len(xs))]
                # Normalise by the summed weights so corners where several tiles meet still sum to one.
                total = torch.zeros(hp, wp, dtype=torch.float64)
                for (y, x), w in zip(tiles, plain):
                    total[y:y + th, x:x + tw] += w
                total.clamp_(min=1e-12)
                weights = [(w / total[y:y + th, x:x + tw]).to(self.backend.device, torch.float32)
                           for (y, x), w in zip(tiles, plain)]
            self._tilings[(hp, wp)] = _Tiling(tiles, (th, tw), weights)
        return self._tilings[(hp, wp)]

    def fill_cache(self, frames: Mapping, keys: Sequence, cache: dict) -> None:
        """Compute the features of frames ``keys`` (padded ``3 x H x W`` tensors in ``frames``) missing from
        ``cache``, for every view, ``chunk`` frames per call in the order given."""
        if not keys:
            return
        tiling = self._tiling(*frames[keys[0]].shape[-2:])
        th, tw = tiling.size
        with torch.inference_mode():
            for f, dims in enumerate(self.flips):
                for t, (y, x) in enumerate(tiling.tiles):
                    missing = [k for k in keys if (f, t, k) not in cache]
                    for start in range(0, len(missing), self.chunk):
                        part = missing[start:start + self.chunk]
                        crops = torch.stack([self._view(frames[k], dims, y, x, th, tw) for k in part])
                        levels = self.backend.features(crops)
                        for i, k in enumerate(part):
                            cache[(f, t, k)] = tuple(level[i] for level in levels)

    @staticmethod
    def _view(frame: torch.Tensor, dims: tuple[int, ...], y: int, x: int, th: int, tw: int) -> torch.Tensor:
        flipped = frame.flip(dims) if dims else frame
        return flipped[:, y:y + th, x:x + tw]

    def run(self, frames: Mapping, windows: Sequence[Sequence], cache: dict) -> Outputs:
        """Enhance a batch of windows.

        Args:
            frames: frame key -> padded ``3 x Hp x Wp`` float tensor on the backend's device.
            windows: per output, the N frame keys of its window (the centre is the backend's ``center``).
            cache: the feature cache (filled as needed).

        Returns:
            ``(enhanced, illumination, denoised)``, each ``B x 3 x Hp x Wp`` float32.
        """
        used = sorted({k for w in windows for k in w})
        self.fill_cache(frames, used, cache)
        pos = {k: p for p, k in enumerate(used)}
        index = torch.tensor([[pos[k] for k in w] for w in windows], dtype=torch.long, device=self.backend.device)
        centres = [w[self.backend.center] for w in windows]
        hp, wp = frames[used[0]].shape[-2:]
        tiling = self._tiling(hp, wp)
        th, tw = tiling.size
        total = None
        with torch.inference_mode():
            for f, dims in enumerate(self.flips):
                canvas = None
                for t, (y, x) in enumerate(tiling.tiles):
                    feats = tuple(torch.stack([cache[(f, t, k)][lvl] for k in used])[index]
                                  for lvl in range(len(cache[(f, t, used[0])])))
                    base = torch.stack([self._view(frames[c], dims, y, x, th, tw) for c in centres])
                    outs = self.backend.windows(feats, base)
                    if tiling.weights is None:
                        canvas = outs
                        break
                    if canvas is None:
                        canvas = tuple(torch.zeros(len(windows), 3, hp, wp, device=self.backend.device)
                                       for _ in outs)
                    for c, o in zip(canvas, outs):
                        c[:, :, y:y + th, x:x + tw] += o * tiling.weights[t]
                outs = tuple(o.flip(dims) if dims else o for o in canvas)
                total = outs if total is None else tuple(a + b for a, b in zip(total, outs))
            if len(self.flips) > 1:
                total = tuple(t / len(self.flips) for t in total)
        return total

    # ---------------------------------------------------------------- whole clips in memory
    def clip(self, frames: torch.Tensor, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, Outputs]]:
        """Enhance windows of a clip held in memory.

        Args:
            frames: ``T x 3 x H x W`` RGB frames in [0, 1].
            windows: for each output, the N indices into ``frames`` of its window.

        Yields:
            ``(k, (enhanced, illumination, denoised))`` for window ``k`` in order, each ``3 x H x W`` float32 on
            the backend's device.
        """
        if not len(windows):
            return
        h, w = frames.shape[-2:]
        padded = pad_to_multiple(frames.to(self.backend.device, non_blocking=True))
        view = {k: padded[k] for k in range(padded.shape[0])}
        cache: dict = {}
        # Every frame a window uses, in order, before the first window: the per-frame stage then sees the same
        # chunks whatever the batch size.
        self.fill_cache(view, sorted({k for win in windows for k in win}), cache)
        for start in range(0, len(windows), self.batch):
            part = windows[start:start + self.batch]
            outs = self.run(view, part, cache)
            for k in range(len(part)):
                yield start + k, tuple(o[k, :, :h, :w] for o in outs)

    # ---------------------------------------------------------------- streams
    def stream(self, frames: Iterable[np.ndarray], padding: str = "new_info",
               as_float: bool = False) -> Iterator[np.ndarray]:
        """Enhance a stream of frames with the test protocol's sliding window, in bounded memory.

        Args:
            frames: ``H x W x 3`` RGB arrays, uint8 or float32 in [0, 1] (for sources of more than 8 bits), all
                the same size (at least 16 x 16).
            padding: window rule at the clip ends (``new_info`` as published; ``replicate``, ``reflection``,
                ``circle``).
            as_float: yield ``H x W x 3`` float32 arrays in [0, 1] (before rounding) instead of uint8.

        Yields:
            One enhanced frame per input frame, in order.
        """
        half = self.nframes // 2
        source = iter(frames)
        buffer: dict[int, torch.Tensor] = {}
        cache: dict = {}
        read, ended, centre = 0, False, 0
        size = None

        def ready(i: int) -> bool:
            # Window i is final once every index it can use has been read: up to i + N//2 (and, at the start,
            # the new_info frames up to 2 * (N//2)), or the stream has ended so the clip length is known.
            return ended or read - 1 >= max(i + half, 2 * half)

        while True:
            while not ended and not ready(centre + self.batch - 1):
                frame = next(source, None)
                if frame is None:
                    ended = True
                    break
                buffer[read] = self._to_tensor(frame, read, size)
                size = size or frame.shape[:2]
                read += 1
            centres = [c for c in range(centre, centre + self.batch) if c < read and ready(c)]
            if not centres:
                break
            # With n = frames read so far the rule is exact: a window only reaches index >= n when the stream
            # has ended, and then n is the clip length.
            windows = [index_generation(c, read, self.nframes, padding) for c in centres]
            out = self.run(buffer, windows, cache)[0]
            centre += len(centres)
            keep_from = min(centre - half, read - 1 - 2 * half)
            for k in [k for k in buffer if k < keep_from]:
                del buffer[k]
            for key in [key for key in cache if key[2] < keep_from]:
                del cache[key]
            h, w = size
            with torch.inference_mode():
                out = out[:, :, :h, :w].clamp(0, 1)
                if as_float:
                    arrays = out.permute(0, 2, 3, 1).cpu().numpy()
                else:
                    arrays = out.mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            yield from arrays

    def _to_tensor(self, frame: np.ndarray, index: int, size: tuple[int, int] | None) -> torch.Tensor:
        if (not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3
                or frame.dtype not in (np.uint8, np.float32)):
            raise UserError(f"frame {index}: expected an H x W x 3 uint8 (or float32 in [0, 1]) RGB array, got "
                            f"{getattr(frame, 'shape', type(frame))} {getattr(frame, 'dtype', '')}")
        if size is not None and frame.shape[:2] != size:
            raise UserError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]} but frame 0 is {size[1]}x{size[0]}; "
                            "all frames of a video must have the same size")
        if min(frame.shape[:2]) < MIN_SIZE:
            raise UserError(f"frame size {frame.shape[1]}x{frame.shape[0]} is below the {MIN_SIZE} px minimum; "
                            "upscale the input first")
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.backend.device, non_blocking=True)
        x = x.permute(2, 0, 1).float()
        if frame.dtype == np.uint8:
            x = x.div_(255.0)
        return pad_to_multiple(x)


def build_engine(net: nn.Module, device: torch.device | str, *, runtime: str = "torch", precision: str = "fp32",
                 conv_backend: str | None = "auto", batch: int = 1, chunk: int | None = None, tile: int = 0,
                 overlap: int = 64, self_ensemble: bool = False, frames_hint: int | None = None) -> Engine:
    """The one place an :class:`Engine` is built: ``net`` on the backend of ``runtime`` (a name of
    :data:`sdsd.runtimes.registry.CHOICES`; :func:`sdsd.runtimes.make_backend`), wrapped in the engine.

    Args:
        net: an SDSD-Net (loaded weights).
        device: where to compute.
        runtime, precision, conv_backend, frames_hint: see :func:`sdsd.runtimes.make_backend` (``conv_backend``
            ``None`` runs a PyTorch network as it is, as validation during training does).
        batch, chunk, tile, overlap, self_ensemble: see :class:`Engine` (``chunk`` defaults to ``batch``).
    """
    backend = make_backend(runtime, net, device, precision, conv_backend=conv_backend, frames_hint=frames_hint)
    return Engine(backend, chunk=chunk or batch, batch=batch, tile=tile, overlap=overlap, self_ensemble=self_ensemble)


def engine_from_options(opt: dict, device: torch.device, *, self_ensemble: bool = False, batch: int = 1,
                        chunk: int = 4) -> Engine:
    """The engine of an evaluation option file: ``path.pretrain_model_G`` loaded into ``network_G``
    (``path.strict_load``), on ``device`` with the file's ``runtime``, ``precision`` and ``conv_backend``: fp32
    unless the file's ``precision`` says int8 (OpenVINO), so the published numbers stay fp32.

    Raises:
        UserError: the checkpoint is not set, missing or does not fit.
    """
    from sdsd.archs import load_model

    path = opt["path"]["pretrain_model_G"]
    if not path:
        raise UserError("path.pretrain_model_G is not set: point it at the checkpoint to evaluate "
                        "(e.g. --set path.pretrain_model_G=pretrain/indoor_G.pth)")
    if not os.path.isfile(path):
        raise UserError(f"path.pretrain_model_G: checkpoint {path} does not exist; download it or fix the path")
    net, _, report = load_model(path, opt["network_G"], strict=bool(opt["path"]["strict_load"]))
    engine = build_engine(net, device, runtime=opt["runtime"], precision=opt.get("precision") or "fp32",
                          conv_backend=opt["conv_backend"],
                          batch=batch, chunk=chunk, self_ensemble=self_ensemble)
    engine.checkpoint_keys = report.counts()
    return engine


# -- datasets -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class WorkItem:
    """Frames of one scene assigned to this process: centre indices into the scene's frames."""

    scene: str
    indices: list[int]
    n: int  # frames evaluated in the scene (``dataset.scene_length``), for output names


@dataclasses.dataclass
class FrameOutput:
    """One enhanced frame: the network's three outputs (``3 x H x W``, RGB) with its input and GT."""

    scene: str
    index: int
    n: int
    enhanced: torch.Tensor
    illumination: torch.Tensor
    denoised: torch.Tensor
    lq: torch.Tensor  # the centre input frame
    gt: torch.Tensor


def plan_work(scene_lengths: Sequence[tuple[str, int]], rank: int = 0, world_size: int = 1) -> list[WorkItem]:
    """Split all frames of all scenes into ``world_size`` contiguous, nearly equal parts; return part ``rank``.

    Frames are ordered scene by scene, so a part covers whole scenes plus at most two partial ones, and feature
    reuse is lost only at the (at most two) cut points.
    """
    total = sum(n for _, n in scene_lengths)
    start, stop = total * rank // world_size, total * (rank + 1) // world_size
    items, offset = [], 0
    for scene, n in scene_lengths:
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        if lo < hi:
            items.append(WorkItem(scene, list(range(lo, hi)), n))
        offset += n
    return items


def iterate_dataset(engine: Engine, dataset, work: Sequence[WorkItem]) -> Iterator[FrameOutput]:
    """Enhance the frames of ``work`` scene by scene; yield one :class:`FrameOutput` per frame (tensors on the
    backend's device). Per scene only the frames that the assigned windows use go through the per-frame stage.

    ``dataset`` provides ``load_scene(scene) -> (lq, gt)`` and ``window(scene, i) -> indices``.
    """
    for item in work:
        lq, gt = dataset.load_scene(item.scene)
        windows = [dataset.window(item.scene, i) for i in item.indices]
        needed = sorted({j for w in windows for j in w} | set(item.indices))
        local = {j: pos for pos, j in enumerate(needed)}
        frames = lq[needed].to(engine.backend.device, non_blocking=True)
        local_windows = [[local[j] for j in w] for w in windows]
        for k, (enhanced, illumination, denoised) in engine.clip(frames, local_windows):
            i = item.indices[k]
            yield FrameOutput(item.scene, i, item.n, enhanced, illumination, denoised, frames[local[i]], gt[i])

