"""Other runtimes for the inference engine: OpenVINO and ONNX Runtime, disk-cached models, measured selection.

Each runtime is a :class:`sdsd.inference.Backend` running the network's two exported graphs, so streaming keeps
its feature reuse: the per-frame graph (``extract_features``: frames -> ``(L1, L2, L3)``) and the per-window graph
(``forward_features``: ``(L1, L2, L3, base)`` -> ``(enhanced, illumination, denoised)``).

* :class:`OnnxRuntimeBackend`: the graphs exported with PyTorch's dynamo ONNX exporter (opset 19; the deformable
  convolution becomes one ``DeformConv`` node), dynamic frame count and height/width, so one export serves every
  shape. CPU, or CUDA / TensorRT execution providers where installed.
* :class:`OpenVINOBackend`: the graphs converted by ``openvino.convert_model`` (its PyTorch frontend maps the
  deformable convolution onto ``DeformableConvolution``), one static model per frame shape: converted with dynamic
  height/width the window graph differed from PyTorch by 1e-5 (3e-3 after the Retinex division) where the static
  one matches to 1e-7, so every shape gets its own model. ``INFERENCE_PRECISION_HINT`` sets f32 or bf16.
* :class:`AutoBackend` (``runtime: auto``): on the first frames the engine passes it, times every candidate this
  machine can run (PyTorch NCHW / channels_last / Winograd, bf16 where the CPU computes it natively, CUDA fp16/bf16,
  OpenVINO, ONNX Runtime) on one window after one warm-up, rejects any whose output is not within 40 dB PSNR of the
  fp32 PyTorch output of that window, keeps the fastest, logs the choice in one line and remembers it per machine,
  network size, shape and precision request (``choices.json`` in the cache folder), so a later run skips the timing.

Exported models live in the cache folder (``$SDSD_CACHE``, default ``~/.cache/sdsd``), keyed by a hash of the
network's weights and settings, the shape (OpenVINO), the runtime's and PyTorch's versions. Each entry has a
manifest with the SHA-256 of its files; an entry that fails the check or does not load is replaced, and a single
warning says so. Entries are built in a marked temporary folder and renamed into place whole
(:func:`sdsd.utils.io.atomic_folder`), so a reader or a crash never sees a half-written one, and the temporary
folders of killed runs are removed the next time the cache is opened (:func:`open_cache`). Two processes building
the same entry at once both succeed: the later one uses the entry already in place.

A cache folder that cannot be created or written (``SDSD_CACHE`` naming a file, a read-only folder) makes
``openvino`` / ``onnxruntime`` fail with one line naming it (:class:`CacheUnavailable`); ``auto`` then runs PyTorch,
with one warning, converting and remembering nothing. A ``choices.json`` that is not valid (not JSON, not an
object, too large) is ignored with one warning and rewritten; entries naming unknown runtimes are dropped.

The runtimes are optional: they are imported only when used. A runtime that is not installed, or that refuses the
graph, raises :class:`RuntimeUnavailable` (one line naming it); ``auto`` then leaves it out.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import functools
import gc
import hashlib
import importlib
import json
import logging
import math
import os
import platform
import re
import shutil
import time

import numpy as np
import torch
from torch import nn

from sdsd.errors import UserError
from sdsd.inference import Backend, TorchBackend
from sdsd.utils.io import (
    OWNER_RECORD,
    atomic_folder,
    atomic_write_json,
    fsync_file,
    make_folder,
    move_aside,
    remove_stale_temps,
    temp_path_for,
)

logger = logging.getLogger("sdsd")

__all__ = [
    "RUNTIMES",
    "PRECISIONS",
    "RuntimeUnavailable",
    "CacheUnavailable",
    "cache_dir",
    "cache_problem",
    "open_cache",
    "cached_models",
    "native_bf16",
    "network_hash",
    "export_onnx",
    "export_openvino",
    "OnnxRuntimeBackend",
    "OpenVINOBackend",
    "AutoBackend",
    "make_backend",
]

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The package (pip name) of each optional runtime.
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript", "onnx": "onnx"}
#: Bumped when the exported graphs change for the same weights (part of every cache key).
GRAPH_VERSION = 1
#: ``auto`` accepts a lower precision only when its output is within this PSNR (dB) of the fp32 output.
MIN_PSNR_DB = 40.0
ONNX_OPSET = 19
#: Seconds assumed for exporting or converting a model not yet in the cache (OpenVINO converted the published
#: network at 512x960 in about 55 s on a 2-core CPU). ``auto`` builds such a model only when the job is expected to
#: take at least :data:`CONVERSION_PAYBACK` times as long on PyTorch, or its length is unknown.
CONVERSION_SECONDS = 60.0
CONVERSION_PAYBACK = 10.0


class RuntimeUnavailable(UserError):
    """A runtime is not installed, does not run on this device, or refused the graph (one line naming it)."""


def import_runtime(name: str):
    """Import the optional package ``name`` or raise :class:`RuntimeUnavailable` naming it."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        module = None
    if module is None:
        raise RuntimeUnavailable(f"runtime {name} is not installed (pip install {PACKAGES.get(name, name)}); "
                                 "use --runtime torch or install it")
    return module


def runtime_version(name: str) -> str:
    module = import_runtime(name)
    return str(getattr(module, "__version__", None) or module.get_version())


def cache_dir() -> str:
    """The folder of exported models and auto-selection choices: ``$SDSD_CACHE`` or ``~/.cache/sdsd``."""
    return os.environ.get("SDSD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sdsd")


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


def network_hash(net: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the network's settings and weights: the checkpoint part of every cache key."""
    h = hashlib.sha256()
    h.update(repr(_settings(net)).encode())
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _settings(net: nn.Module) -> dict:
    return {k: getattr(net, k, None) for k in ("nf", "nframes", "groups", "center", "w_TSA")} | {
        "front_RBs": len(getattr(net, "feature_extraction", ())), "back_RBs": len(getattr(net, "recon_trunk", ()))}


# -- the two graphs -----------------------------------------------------------------------------------------------


class FeatureGraph(nn.Module):
    """``frames (T x 3 x H x W)`` -> ``(L1, L2, L3)``: the per-frame stage, as a module to export."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, frames):
        return self.net.extract_features(frames)


class WindowGraph(nn.Module):
    """``(L1, L2, L3, base)`` -> ``(enhanced, illumination, denoised)``: the per-window stage, as a module to export."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, l1, l2, l3, base):
        return self.net.forward_features((l1, l2, l3), base)


def _plain_copy(net: nn.Module) -> nn.Module:
    """A float32 NCHW copy of ``net`` in eval mode with plain convolutions (what the runtimes get)."""
    from sdsd.archs.fastconv import use_winograd

    net = copy.deepcopy(net).float().cpu().eval()
    use_winograd(net, False)
    # (The DCN layers' offset statistic skips itself while a graph is exported: dcn.ops.exporting.)
    return net.to(memory_format=torch.contiguous_format)


def _examples(net: nn.Module, height: int, width: int, frames: int = 1, windows: int = 1):
    torch.manual_seed(0)
    x = torch.rand(max(frames, 1), 3, height, width)
    with torch.no_grad():
        feats = net.extract_features(x)
    n = int(net.nframes)
    index = torch.arange(windows * n) % x.shape[0]
    wfeats = tuple(f[index].reshape(windows, n, *f.shape[1:]) for f in feats)
    return x, wfeats, x[index[:windows]]


def _deform_conv_onnx(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                      n_weight_grps, n_offset_grps, use_mask):
    """``torchvision::deform_conv2d`` as ONNX ``DeformConv`` (opset 19), for the dynamo exporter."""
    from onnxscript import opset19 as op

    return op.DeformConv(input, weight, offset, bias, mask if use_mask else None, dilations=[dil_h, dil_w],
                         group=n_weight_grps, offset_group=n_offset_grps, pads=[pad_h, pad_w, pad_h, pad_w],
                         strides=[stride_h, stride_w])


def export_onnx(net: nn.Module, folder: str, height: int = 48, width: int = 80) -> dict[str, str]:
    """Export the two graphs of ``net`` as ONNX files in ``folder`` (dynamic frame count, height and width).

    ``height`` / ``width`` (multiples of 16) only shape the example inputs. Returns ``{"features": path,
    "windows": path}``.

    Raises:
        RuntimeUnavailable: onnx / onnxscript missing, or the exporter refused the graph.
    """
    import_runtime("onnx")
    import_runtime("onnxscript")
    from torch.export import Dim

    _check_shape(height, width)
    if height == width:
        # Equal example sizes would let the exporter tie height and width together.
        width += 16
    net = _plain_copy(net)
    x, feats, base = _examples(net, height, width, frames=3, windows=2)
    h16, w16 = Dim("h16", min=1, max=1024), Dim("w16", min=1, max=1024)
    t, b = Dim("t", min=1, max=4096), Dim("b", min=1, max=4096)
    os.makedirs(folder, exist_ok=True)
    paths = {"features": os.path.join(folder, "features.onnx"), "windows": os.path.join(folder, "windows.onnx")}
    table = {torch.ops.torchvision.deform_conv2d.default: _deform_conv_onnx}
    jobs = [
        (FeatureGraph(net), (x,), {"frames": {0: t, 2: 16 * h16, 3: 16 * w16}}, ["frames"], ["L1", "L2", "L3"]),
        (WindowGraph(net), (*feats, base),
         {"l1": {0: b, 3: 4 * h16, 4: 4 * w16}, "l2": {0: b, 3: 2 * h16, 4: 2 * w16}, "l3": {0: b, 3: h16, 4: w16},
          "base": {0: b, 2: 16 * h16, 3: 16 * w16}},
         ["l1", "l2", "l3", "base"], ["enhanced", "illumination", "denoised"]),
    ]
    for (module, args, dynamic, inputs, outputs), key in zip(jobs, ("features", "windows")):
        try:
            with _quiet():
                program = torch.onnx.export(module, args, dynamo=True, dynamic_shapes=dynamic, opset_version=ONNX_OPSET,
                                            custom_translation_table=table, input_names=inputs,
                                            output_names=outputs, verbose=False)
            program.save(paths[key])
        except Exception as exc:  # noqa: BLE001 - any exporter failure means "this runtime refused the graph"
            raise RuntimeUnavailable(f"onnx export of the {key} graph failed: {_first_line(exc)}") from None
    return paths


def export_openvino(net: nn.Module, folder: str, height: int, width: int) -> dict[str, str]:
    """Convert the two graphs of ``net`` to OpenVINO IR (``.xml`` + ``.bin``) in ``folder`` for ``height x width``
    frames (multiples of 16), one frame / one window per call. Returns ``{"features": xml, "windows": xml}``.

    Raises:
        RuntimeUnavailable: OpenVINO missing, or its converter refused the graph.
    """
    ov = import_runtime("openvino")
    _check_shape(height, width)
    net = _plain_copy(net)
    x, feats, base = _examples(net, height, width)
    os.makedirs(folder, exist_ok=True)
    paths = {"features": os.path.join(folder, "features.xml"), "windows": os.path.join(folder, "windows.xml")}
    for module, args, key in ((FeatureGraph(net), (x,), "features"), (WindowGraph(net), (*feats, base), "windows")):
        try:
            with _quiet(), torch.no_grad():
                model = ov.convert_model(module.eval(), example_input=args)
            ov.save_model(model, paths[key], compress_to_fp16=False)
        except Exception as exc:  # noqa: BLE001 - any converter failure means "this runtime refused the graph"
            raise RuntimeUnavailable(f"openvino conversion of the {key} graph failed: {_first_line(exc)}") from None
    return paths


def _check_shape(height: int, width: int) -> None:
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise UserError(f"export shape {height}x{width} (HxW) must be multiples of 16, at least 16")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints and deprecation warnings (they are not the user's concern)."""
    import io
    import warnings

    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for log in loggers:
            log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)


# -- the disk cache -----------------------------------------------------------------------------------------------


class CacheUnavailable(RuntimeUnavailable):
    """The model cache folder cannot be created or written (one line naming it, ``SDSD_CACHE`` and what to do).

    ``root`` is the folder and ``problem`` why it cannot be used (when that is known).
    """

    def __init__(self, message: str, root: str = "", problem: str = ""):
        super().__init__(message)
        self.root, self.problem = root, problem


def _cache_name(root: str, cache: str | None) -> str:
    """``model cache <root>`` and where that folder came from (an argument, ``$SDSD_CACHE`` or the default)."""
    if cache:
        return f"model cache {root}"
    if os.environ.get("SDSD_CACHE"):
        return f"model cache {root} (from SDSD_CACHE)"
    return f"model cache {root} (the default; SDSD_CACHE is not set)"


def cache_problem(root: str) -> str | None:
    """Why the cache folder ``root`` cannot be used, or None when it can.

    The folder is created when missing, then a marked temporary file is created in it and removed again, so a
    folder that only looks writable (a read-only file system, permissions) is found out before anything is built.
    """
    if os.path.lexists(root) and not os.path.isdir(root):
        return "it is a file, not a folder"
    try:
        make_folder(root)
        os.remove(temp_path_for(os.path.join(root, "write-check")))
    except OSError as exc:
        return f"it cannot be created or written ({exc.strerror or type(exc).__name__})"
    return None


def open_cache(cache: str | None = None) -> str:
    """The cache folder (``cache``, else :func:`cache_dir`), checked to be usable and cleared of stale temporaries.

    Temporary folders and files that killed runs of this package left in it (an interrupted conversion, an
    unfinished ``choices.json``) are removed with :func:`sdsd.utils.io.remove_stale_temps`: in the folder itself
    and in its per-runtime sub-folders (where entries are built); those of a process still running are spared.

    Raises:
        CacheUnavailable: the folder cannot be created or written.
    """
    root = cache or cache_dir()
    problem = cache_problem(root)
    if problem is not None:
        raise CacheUnavailable(f"{_cache_name(root, cache)} cannot be used: {problem}; set SDSD_CACHE to a "
                               "writable folder, or use runtime torch", root, problem)
    removed = remove_stale_temps(root)
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            # Only the per-runtime folders this module makes, never followed through a link: SDSD_CACHE may
            # point at a shared folder whose other sub-folders are not this package's to walk.
            if entry.name.split("-", 1)[0] in RUNTIMES and entry.is_dir(follow_symlinks=False):
                removed += remove_stale_temps(entry.path)
    for path in removed:
        logger.info("model cache: removed %s, left by an interrupted run", path)
    return root


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry_valid(folder: str) -> bool:
    """Whether ``folder`` is a complete cache entry: a manifest listing files of this folder, all with their
    recorded SHA-256."""
    try:
        with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        files = manifest["files"]
        return (bool(files) and all(isinstance(name, str) and os.path.basename(name) == name for name in files)
                and all(_sha256(os.path.join(folder, name)) == digest for name, digest in files.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return False


class _Superseded(Exception):
    """Another process finished the same cache entry while this one was building it."""


def cached_models(key: str, build, cache: str | None = None) -> tuple[str, bool]:
    """The folder of cache entry ``key``, built by ``build(folder)`` when absent or invalid.

    Returns ``(folder, built)`` (``built``: a build ran in this call). The entry is built in a marked temporary
    folder and renamed into place whole with its manifest (:func:`sdsd.utils.io.atomic_folder`), so a reader or a
    crash sees a complete entry or none; a present entry whose manifest or files do not check out is replaced
    whole, and one warning names it. When another process completes the same entry meanwhile (two runs converting
    one model at once), its entry is used and this build is dropped; neither fails.

    Raises:
        CacheUnavailable: the cache folder cannot be created or written.
    """
    root = open_cache(cache)
    folder = os.path.join(root, key)
    if _entry_valid(folder):
        return folder, False
    where = _cache_name(root, cache)
    try:
        if os.path.lexists(folder):
            logger.warning("model cache %s is stale or corrupt: rebuilding it", folder)
            if os.path.islink(folder) or not os.path.isdir(folder):
                os.remove(folder)  # atomic_folder replaces folders only
        with atomic_folder(folder) as tmp:
            build(tmp)
            files = {name: _sha256(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))
                     if name != OWNER_RECORD}
            with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
                json.dump({"key": key, "files": files, "created": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=1)
            # Flushed here (atomic_folder's own flush then finds nothing left to write), so that the look for a
            # winner below comes right before the rename and a winner's entry is seldom replaced.
            for name in [*files, "manifest.json"]:
                fsync_file(os.path.join(tmp, name))
            if _entry_valid(folder):
                raise _Superseded
    except _Superseded:
        return folder, True
    except OSError as exc:
        # os.replace onto a folder another process filled between atomic_folder's check and its rename.
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and _entry_valid(folder):
            return folder, True
        raise CacheUnavailable(f"{where}: could not store {key} ({exc.strerror or type(exc).__name__}); set "
                               "SDSD_CACHE to a writable folder with free space, or use runtime torch") from None
    return folder, True


def is_cached(runtime: str, net: nn.Module, height: int, width: int, cache: str | None = None) -> bool:
    """Whether the exported models of ``runtime`` for ``net`` (and, for OpenVINO, this shape) are in the cache."""
    try:
        key = _cache_key(runtime, network_hash(net), height, width)
    except RuntimeUnavailable:
        return False
    return _entry_valid(os.path.join(cache or cache_dir(), key))


def _cache_key(runtime: str, digest: str, height: int, width: int) -> str:
    if runtime == "openvino":
        return os.path.join(_versions("openvino"), f"{digest}-{height}x{width}")
    return os.path.join(_versions(runtime), digest)


def invalidate(folder: str, why: str) -> None:
    """Delete a cache entry that would not load (one warning); it is first renamed aside, so a reader never sees
    it half-deleted."""
    logger.warning("model cache %s does not load (%s): rebuilding it", folder, why)
    try:
        folder = move_aside(folder)
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _versions(runtime: str) -> str:
    # Version strings may hold "/" (OpenVINO's: "2026.4.1-22982-...-releases/2026/4"): one folder name each.
    text = f"{runtime}-{runtime_version(runtime)}-torch-{torch.__version__.split('+')[0]}-g{GRAPH_VERSION}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


# -- backends -----------------------------------------------------------------------------------------------------


class OnnxRuntimeBackend(Backend):
    """The exported ONNX graphs on ONNX Runtime (fp32; CPU, or the CUDA / TensorRT providers on a CUDA device).

    Args:
        net: an SDSD-Net (not modified: a float32 copy is exported).
        device: ``cpu`` or ``cuda``; inputs and outputs are torch tensors there.
        precision: ``fp32`` (the only one exported).
        cache: the cache folder (default :func:`cache_dir`).
        threads: intra-op threads (default: PyTorch's).
    """

    name = "onnxruntime"

    def __init__(self, net: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 cache: str | None = None, threads: int | None = None):
        ort = import_runtime("onnxruntime")
        if precision != "fp32":
            raise RuntimeUnavailable(f"runtime onnxruntime runs fp32 only (asked for {precision})")
        self.device = torch.device(device)
        self.precision = "fp32"
        self.nframes, self.center = int(net.nframes), int(net.center)
        available = ort.get_available_providers()
        if self.device.type == "cuda":
            wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            if not wanted:
                raise RuntimeUnavailable("runtime onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)")
            self.providers = [*wanted, "CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        key = _cache_key("onnxruntime", network_hash(net), 0, 0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.log_severity_level = 3
        for attempt in range(2):
            folder, _ = cached_models(key, lambda d: export_onnx(net, d), cache)
            try:
                self.sessions = {k: ort.InferenceSession(os.path.join(folder, f"{k}.onnx"), options,
                                                         providers=self.providers)
                                 for k in ("features", "windows")}
                break
            except Exception as exc:  # noqa: BLE001 - a file that passed its checksum but does not load
                if attempt:
                    raise RuntimeUnavailable(f"runtime onnxruntime refused the graph: {_first_line(exc)}") from None
                invalidate(folder, _first_line(exc))

    def _run(self, which: str, arrays: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        session = self.sessions[which]
        feed = {i.name: np.ascontiguousarray(a.detach().float().cpu().numpy())
                for i, a in zip(session.get_inputs(), arrays)}
        return tuple(torch.from_numpy(o).to(self.device) for o in session.run(None, feed))

    def features(self, frames):
        return self._run("features", [frames])

    def windows(self, feats, base):
        return self._run("windows", [*feats, base])

    def describe(self) -> dict:
        return {**super().describe(), "providers": self.providers[:-1] or self.providers}


class OpenVINOBackend(Backend):
    """The network's two graphs on OpenVINO's CPU plugin, one static model per frame shape.

    Args:
        net: an SDSD-Net (not modified: a float32 copy is converted).
        device: ``cpu`` (OpenVINO's CPU plugin; inputs and outputs are CPU torch tensors).
        precision: ``fp32`` or ``bf16`` (``INFERENCE_PRECISION_HINT``; bf16 needs a CPU with native bf16).
        cache: the cache folder (default :func:`cache_dir`).
        threads: inference threads (default: PyTorch's).
    """

    name = "openvino"

    def __init__(self, net: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 cache: str | None = None, threads: int | None = None):
        self._ov = import_runtime("openvino")
        self.device = torch.device(device)
        if self.device.type != "cpu":
            raise RuntimeUnavailable("runtime openvino runs on the CPU here (use onnxruntime or torch on CUDA)")
        if precision not in ("fp32", "bf16"):
            raise RuntimeUnavailable(f"runtime openvino runs fp32 or bf16 (asked for {precision})")
        if precision == "bf16" and not native_bf16():
            raise RuntimeUnavailable("runtime openvino bf16 needs a CPU with native bf16 (AVX512-BF16 or AMX)")
        self.precision = precision
        self.net = _plain_copy(net)
        self.nframes, self.center = int(net.nframes), int(net.center)
        self.cache = cache
        open_cache(cache)  # an unusable cache folder fails here, in one line, not at the first frame
        self.threads = int(threads or torch.get_num_threads())
        self._hash = network_hash(self.net)
        self._models: dict[tuple[int, int], dict] = {}
        self.core = self._ov.Core()

    def prepare(self, height: int, width: int) -> bool:
        """Load (or convert and cache) and compile the models of ``height x width`` frames; True if converted."""
        if (height, width) in self._models:
            return False
        key = _cache_key("openvino", self._hash, height, width)
        config = {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": self.threads}
        for attempt in range(2):
            folder, built = cached_models(key, lambda d: export_openvino(self.net, d, height, width), self.cache)
            try:
                compiled = {k: self.core.compile_model(self.core.read_model(os.path.join(folder, f"{k}.xml")),
                                                       "CPU", config) for k in ("features", "windows")}
                break
            except Exception as exc:  # noqa: BLE001 - a file that passed its checksum but does not load
                if attempt:
                    raise RuntimeUnavailable(f"runtime openvino refused the graph: {_first_line(exc)}") from None
                invalidate(folder, _first_line(exc))
        self._models[(height, width)] = {k: c.create_infer_request() for k, c in compiled.items()}
        return built

    def _infer(self, which: str, height: int, width: int, arrays: list[np.ndarray]) -> list[np.ndarray]:
        self.prepare(height, width)
        request = self._models[(height, width)][which]
        request.infer({i: a for i, a in enumerate(arrays)})
        return [np.array(request.get_output_tensor(i).data, copy=True) for i in range(3)]

    def features(self, frames):
        h, w = frames.shape[-2:]
        x = frames.detach().float().cpu().numpy()
        outs = [self._infer("features", h, w, [np.ascontiguousarray(x[i:i + 1])]) for i in range(x.shape[0])]
        return tuple(torch.from_numpy(np.concatenate([o[k] for o in outs])) for k in range(3))

    def windows(self, feats, base):
        h, w = base.shape[-2:]
        arrays = [f.detach().float().cpu().numpy() for f in feats] + [base.detach().float().cpu().numpy()]
        outs = [self._infer("windows", h, w, [np.ascontiguousarray(a[i:i + 1]) for a in arrays])
                for i in range(base.shape[0])]
        return tuple(torch.from_numpy(np.concatenate([o[k] for o in outs])) for k in range(3))


# -- selection ----------------------------------------------------------------------------------------------------


def make_backend(runtime: str, net: nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 conv_backend: str | None = "auto", cache: str | None = None,
                 frames_hint: int | None = None) -> Backend:
    """The backend ``runtime`` (``torch``, ``openvino``, ``onnxruntime`` or ``auto``) for ``net`` on ``device``.

    ``precision`` is ``fp32``, ``bf16``, ``fp16`` or (``auto`` runtime only) ``auto``: the fastest precision whose
    output stays within 40 dB PSNR of fp32. ``frames_hint``: the job's expected frame count (``auto`` only; see
    :class:`AutoBackend`).

    Raises:
        UserError: an unknown runtime or precision; RuntimeUnavailable: the runtime cannot run here.
    """
    if runtime not in RUNTIMES:
        raise UserError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if runtime == "auto":
        return AutoBackend(net, device, precision, conv_backend=conv_backend, cache=cache, frames_hint=frames_hint)
    if precision == "auto":
        precision = "fp32"
    if runtime == "torch":
        return TorchBackend(net, device, precision=precision, conv_backend=conv_backend)
    cls = OpenVINOBackend if runtime == "openvino" else OnnxRuntimeBackend
    return cls(net, device, precision=precision, cache=cache)


def _candidates(device: torch.device, precision: str, conv_backend: str | None = None
                ) -> list[tuple[str, str, str | None]]:
    """``(runtime, precision, conv_backend)`` this machine can run for a precision request (torch fp32 first).

    A ``conv_backend`` other than ``auto``/``None`` restricts the PyTorch candidates to it.
    """
    out = _all_candidates(device, precision)
    if conv_backend not in (None, "auto") and device.type == "cpu":
        out = [c for c in out if c[0] != "torch" or c[2] == conv_backend]
        if not out or out[0][0] != "torch":
            out.insert(0, ("torch", "fp32" if precision == "auto" else precision, conv_backend))
    return out


def _all_candidates(device: torch.device, precision: str) -> list[tuple[str, str, str | None]]:
    from sdsd.archs.fastconv import nnpack_available

    fp32, low = precision in ("fp32", "auto"), precision == "auto"
    out: list[tuple[str, str, str | None]] = []
    if device.type == "cuda":
        if fp32:
            out += [("torch", "fp32", "nchw"), ("onnxruntime", "fp32", None)]
        if low or precision == "fp16":
            out.append(("torch", "fp16", "nchw"))
        if (low or precision == "bf16") and torch.cuda.is_bf16_supported():
            out.append(("torch", "bf16", "nchw"))
        return out
    if fp32:
        out += [("torch", "fp32", "nchw"), ("torch", "fp32", "channels_last")]
        if nnpack_available():
            out.append(("torch", "fp32", "winograd"))
        out += [("openvino", "fp32", None), ("onnxruntime", "fp32", None)]
    if (low or precision == "bf16") and native_bf16():
        out += [("torch", "bf16", "channels_last"), ("openvino", "bf16", None)]
    if precision == "bf16" and not native_bf16():
        # Asked for explicitly: emulated bf16 still runs (slowly) in PyTorch.
        out.append(("torch", "bf16", "channels_last"))
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _machine_key(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{cpu_model()}:{os.cpu_count()}cpus:{torch.get_num_threads()}threads"


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
        return "|".join([_machine_key(self.device), json.dumps(_settings(self.net), sort_keys=True),
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
        return make_backend(runtime, self.net, self.device, precision, cache=self.cache)

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
            try:
                backend = self._build(known["runtime"], known["precision"], known.get("conv_backend"))
                self.report = {**known, "from_cache": True}
                logger.info("runtime auto: %s (remembered for %dx%d)", _label(known), height, width)
                return backend
            except UserError as exc:  # RuntimeUnavailable included: e.g. a runtime uninstalled since
                logger.warning("runtime auto: the remembered choice %s cannot run (%s); timing again",
                               _label(known), exc)
        n = self.nframes
        sample = frames[:1].float()
        window_index = torch.arange(n) % frames.shape[0]
        timings, rejected, skipped = {}, {}, {}
        # provisional: a runtime was left out only for its conversion cost (or the cache is unusable): do not
        # remember this choice.
        provisional = not cache_usable
        reference = None
        best = None
        candidates = _candidates(self.device, self.requested, self.conv_backend)
        if not cache_usable:
            candidates = [c for c in candidates if c[0] == "torch"]
        for runtime, precision, conv in candidates:
            label = _label({"runtime": runtime, "precision": precision, "conv_backend": conv})
            if (runtime != "torch" and best is not None and self.frames_hint is not None
                    and not is_cached(runtime, self.net, height, width, self.cache)
                    and self.frames_hint * best[0] < CONVERSION_PAYBACK * CONVERSION_SECONDS):
                provisional = True
                skipped[label] = (f"not converted yet and the job ({self.frames_hint} frames, about "
                                  f"{self.frames_hint * best[0]:.0f} s) is too short to pay for converting it")
                logger.info("runtime auto: %s left out: %s", label, skipped[label])
                continue
            try:
                start = time.perf_counter()
                backend = self._build(runtime, precision, conv)
                if isinstance(backend, OpenVINOBackend):
                    backend.prepare(height, width)
                setup = time.perf_counter() - start
                with torch.inference_mode():
                    seconds, out = _time_window(backend, frames, sample, window_index)
            except RuntimeUnavailable as exc:
                skipped[label] = str(exc)
                logger.info("runtime auto: %s left out: %s", label, exc)
                continue
            if reference is None:
                # The first candidate is always torch fp32: the reference the others are held to.
                reference = out
            psnr = _psnr(out, reference)
            if psnr < MIN_PSNR_DB:
                rejected[label] = round(psnr, 2)
                logger.info("runtime auto: %s rejected: %.1f dB from fp32 (< %g dB)", label, psnr, MIN_PSNR_DB)
                _close(backend)
                continue
            timings[label] = {"seconds": round(seconds, 4), "setup_seconds": round(setup, 2),
                              "psnr_vs_fp32": None if math.isinf(psnr) else round(psnr, 2)}
            if best is None or seconds < best[0]:
                if best is not None:
                    _close(best[2])
                best = (seconds, {"runtime": runtime, "precision": precision, "conv_backend": conv}, backend)
            else:
                _close(backend)
        if best is None:
            raise UserError(f"runtime auto: no runtime can run here ({'; '.join(skipped.values())})")
        choice = best[1]
        self.report = {**choice, "timings": timings, "rejected": rejected, "skipped": sorted(skipped),
                       "from_cache": False}
        if not provisional:
            self._save_choice(key, {**choice, "timings": timings})
        logger.info("runtime auto: %s at %.3f s per frame and window (%dx%d; %s)", _label(choice), best[0], height,
                    width, ", ".join(f"{k} {v['seconds']:.3f} s" for k, v in timings.items()))
        return best[2]

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
            _close(self.chosen)


#: ``choices.json`` files larger than this are ignored (and rewritten) instead of read.
MAX_CHOICES_BYTES = 1 << 20

_warned_caches: set[str] = set()


def _warn_unusable_cache(root: str, cache: str | None, problem: str) -> None:
    """One warning per cache folder and process: ``auto`` runs PyTorch because the cache cannot be used."""
    if root in _warned_caches:
        return
    _warned_caches.add(root)
    logger.warning("runtime auto: %s cannot be used: %s; running PyTorch without converting models or remembering "
                   "the choice (set SDSD_CACHE to a writable folder)", _cache_name(root, cache), problem)


def _valid_choice(value) -> bool:
    """Whether a remembered choice names a runtime, precision and convolution backend this version knows."""
    from sdsd.archs.fastconv import CONV_BACKENDS

    return (isinstance(value, dict) and isinstance(value.get("runtime"), str) and value["runtime"] in RUNTIMES[1:]
            and isinstance(value.get("precision"), str) and value["precision"] in PRECISIONS[1:]
            and (value.get("conv_backend") is None
                 or (isinstance(value["conv_backend"], str) and value["conv_backend"] in CONV_BACKENDS))
            and isinstance(value.get("timings", {}), dict))


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


def _close(backend: Backend) -> None:
    close = getattr(backend, "close", None)
    if close is not None:
        close()


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
