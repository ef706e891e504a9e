"""OpenVINO / ONNX Runtime backends, the model cache and ``runtime: auto`` on a tiny network with non-zero offsets.

Exporting costs tens of seconds per runtime on a small CPU, so one cache folder serves the whole module: each
runtime exports the tiny network once and the later tests load it from the cache.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import pytest
import torch
from evaluation_helpers import H, W, aligning_tiny_net, clip_tensor, make_sdsd_tree, overrides, set_args

from sdsd import runtimes
from sdsd.data.windows import index_generation
from sdsd.errors import UserError
from sdsd.evaluation import quantitative
from sdsd.inference import Engine, TorchBackend
from sdsd.runtimes import AutoBackend, OnnxRuntimeBackend, OpenVINOBackend, RuntimeUnavailable, make_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_SDSD = os.path.join(REPO, "options", "test", "test_in_sdsd.yml")
BACKENDS = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVINOBackend}


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One model cache for the module (``$SDSD_CACHE``), so each runtime exports the tiny network once."""
    folder = str(tmp_path_factory.mktemp("sdsd-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDSD_CACHE", folder)
        yield folder


@pytest.fixture(scope="module")
def net():
    return aligning_tiny_net()


@pytest.fixture(scope="module")
def frames():
    """Seven real photograph crops, ``7 x 3 x H x W`` in [0, 1] (H, W multiples of 16)."""
    return clip_tensor("astronaut", 7, seed=3)


def max_diff(a, b) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_exported_graphs_match_pytorch(runtime, net, frames):
    assert float(net.pcd_align.L1_dcnpack.conv_offset_mask.weight.detach().abs().max()) > 0  # offsets really non-zero
    backend = BACKENDS[runtime](net)
    with torch.no_grad():
        want_feats = net.extract_features(frames[:5])
        window = tuple(f.unsqueeze(0) for f in want_feats)
        want = net.forward_features(window, frames[2:3])
    got_feats = backend.features(frames[:5])
    assert [tuple(f.shape) for f in got_feats] == [tuple(f.shape) for f in want_feats]
    assert max_diff(got_feats, want_feats) <= 1e-4
    got = backend.windows(window, frames[2:3])
    assert max_diff(got, want) <= 1e-4
    # The models are in the cache under the runtime's version, with a manifest of checksums.
    entries = [root for root, _, files in os.walk(os.environ["SDSD_CACHE"]) if "manifest.json" in files]
    assert any(runtime in entry for entry in entries)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_engine_clip_and_stream_match_torch(runtime, net, frames):
    torch_engine = Engine(TorchBackend(net, "cpu", conv_backend="nchw"), batch=2)
    other = Engine(make_backend(runtime, net, "cpu", "fp32"), batch=2)
    windows = [index_generation(i, len(frames), 5) for i in range(len(frames))]
    want = dict(torch_engine.clip(frames, windows))
    got = dict(other.clip(frames, windows))
    assert sorted(got) == sorted(want)
    for k in want:
        # illumination and denoised directly; enhanced = denoised / illumination (>= 1e-3) after the clamp.
        assert max_diff(got[k][1:], want[k][1:]) <= 1e-4
        assert float((got[k][0].clamp(0, 1) - want[k][0].clamp(0, 1)).abs().max()) <= 1e-3
    arrays = [f.permute(1, 2, 0).numpy().copy() for f in frames]
    streamed = np.stack(list(other.stream(iter(arrays), as_float=True)))
    reference = np.stack(list(torch_engine.stream(iter(arrays), as_float=True)))
    assert streamed.shape == (7, H, W, 3) and np.abs(streamed - reference).max() <= 1e-3
    assert other.describe()["runtime"] == runtime and other.describe()["precision"] == "fp32"


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_quantitative_numbers_within_a_hundredth_of_a_db(runtime, net, tmp_path):
    tree = make_sdsd_tree(str(tmp_path / "tree"))
    ckpt = str(tmp_path / "aligning_G.pth")
    torch.save(net.state_dict(), ckpt)
    results = {}
    for name in ("torch", runtime):
        items = overrides(tree, ckpt, str(tmp_path / f"results-{name}"))
        argv = ["-opt", IN_SDSD, "--no-progress", *set_args(items)]
        if name != "torch":
            argv += ["--runtime", name]
        results[name] = quantitative.main(argv)
    assert results["torch"]["engine"]["runtime"] == "torch"
    assert results[runtime]["engine"]["runtime"] == runtime and results[runtime]["engine"]["precision"] == "fp32"
    assert abs(results[runtime]["psnr"] - results["torch"]["psnr"]) <= 0.01
    assert abs(results[runtime]["ssim"] - results["torch"]["ssim"]) <= 1e-4
    with open(os.path.join(str(tmp_path / f"results-{runtime}"), "metrics.json"), encoding="utf-8") as f:
        assert json.load(f)["engine"]["runtime"] == runtime


def test_corrupt_cache_is_rebuilt_with_one_warning(net, frames, caplog):
    OpenVINOBackend(net).prepare(H, W)  # the entry exists (built by an earlier test or now)
    entry = next(root for root, _, files in os.walk(os.environ["SDSD_CACHE"])
                 if "manifest.json" in files and f"-{H}x{W}" in root)
    with open(os.path.join(entry, "windows.bin"), "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 64)
    with caplog.at_level(logging.WARNING, logger="sdsd"):
        backend = OpenVINOBackend(net)
        assert backend.prepare(H, W) is True  # converted again, not trusted
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "stale or corrupt" in warnings[0].getMessage()
    assert runtimes.cache.entry_valid(entry)
    with torch.no_grad():
        want = net.extract_features(frames[:2])
    assert max_diff(backend.features(frames[:2]), want) <= 1e-4


def test_missing_runtime_is_one_line_and_auto_falls_back(net, frames, monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeUnavailable) as err:
        make_backend("openvino", net)
    assert "openvino is not installed" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, UserError)
    monkeypatch.setenv("SDSD_CACHE", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="sdsd"):
        auto = AutoBackend(net, "cpu", "auto")
        engine = Engine(auto)
        windows = [index_generation(i, len(frames), 5) for i in range(3)]
        outs = dict(engine.clip(frames, windows))
    assert len(outs) == 3 and auto.describe()["runtime"] == "torch"
    assert {"openvino fp32", "onnxruntime fp32"} <= set(auto.report["skipped"])
    chosen = [r.getMessage() for r in caplog.records if "runtime auto: torch" in r.getMessage()]
    assert len(chosen) == 1


def test_auto_times_candidates_then_remembers_its_choice(net, frames, caplog):
    with caplog.at_level(logging.INFO, logger="sdsd"):
        first = AutoBackend(net, "cpu", "fp32")
        first.features(frames[:4])
    timed = first.report["timings"]
    assert {"torch fp32 nchw", "torch fp32 channels_last", "openvino fp32", "onnxruntime fp32"} <= set(timed)
    assert all(v["psnr_vs_fp32"] is None or v["psnr_vs_fp32"] >= 40 for v in timed.values())
    with open(os.path.join(os.environ["SDSD_CACHE"], "choices.json"), encoding="utf-8") as f:
        remembered = json.load(f)
    assert any(v["runtime"] == first.describe()["runtime"] for v in remembered.values())
    with caplog.at_level(logging.INFO, logger="sdsd"):
        second = AutoBackend(net, "cpu", "fp32")
        second.features(frames[:4])
    assert second.report["from_cache"] and second.describe()["runtime"] == first.describe()["runtime"]
    assert "remembered" in caplog.records[-1].getMessage()


def test_auto_skips_conversion_for_a_short_job(tmp_path, monkeypatch, frames):
    monkeypatch.setenv("SDSD_CACHE", str(tmp_path))
    other = aligning_tiny_net(nf=16)  # not in any cache
    auto = AutoBackend(other, "cpu", "auto", frames_hint=3)
    auto.features(frames[:2])
    assert "openvino fp32" in auto.report["skipped"] and auto.describe()["runtime"] == "torch"
    # Remembered all the same (the next short job starts at once), with what a conversion may upgrade it to.
    with open(tmp_path / "choices.json", encoding="utf-8") as f:
        (saved,) = json.load(f).values()
    assert saved["runtime"] == "torch" and "openvino fp32" in saved["pending"]
    again = AutoBackend(other, "cpu", "auto", frames_hint=3)
    again.features(frames[:2])
    assert again.report["from_cache"]


def test_unknown_runtime_and_precision_are_user_errors(net):
    with pytest.raises(UserError, match="runtime 'tensorflow'"):
        make_backend("tensorflow", net)
    with pytest.raises(UserError, match="precision 'int4'"):
        make_backend("torch", net, precision="int4")
    with pytest.raises(UserError, match="runtime torch does not run precision 'int8'"):
        make_backend("torch", net, precision="int8")


def test_native_bf16_is_read_from_the_cpu():
    flags = runtimes.machine._cpu_flags()
    if flags:
        assert runtimes.native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"}) or "AMX" in \
            torch.backends.cpu.get_cpu_capability().upper()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runtimes_match_torch(net, frames):
    with torch.no_grad():
        want = tuple(f.cuda() for f in net.cpu().extract_features(frames[:5]))
    backend = TorchBackend(aligning_tiny_net(), "cuda", conv_backend="nchw")
    assert max_diff(backend.features(frames[:5].cuda()), want) <= 1e-4
    try:
        ort_backend = OnnxRuntimeBackend(net, "cuda")
    except RuntimeUnavailable as exc:
        pytest.skip(str(exc))
    got = ort_backend.features(frames[:5].cuda())
    assert got[0].is_cuda and max_diff(got, want) <= 1e-4
    auto = AutoBackend(aligning_tiny_net(), "cuda", "auto")
    auto.features(frames[:4].cuda())
    assert auto.describe()["device"].startswith("cuda")


@pytest.fixture(autouse=True, scope="module")
def _release_runtime_objects():
    """Free this module's OpenVINO / ONNX Runtime objects when it ends, not at a later test's garbage collection
    (destroying them there aborted the process while a later test was encoding a video)."""
    yield
    import gc

    gc.collect()
