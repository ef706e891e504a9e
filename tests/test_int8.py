"""int8 on OpenVINO (NNCF post-training quantization) and ``runtime: auto``'s remembered choices, on a tiny network
with non-zero offsets: real OpenVINO, real NNCF, real model cache.

Converting and quantizing cost tens of seconds on a small CPU, so one cache folder serves the module: the tiny
network is converted once (by ``python -m sdsd.export --cache`` in the first test, which needs the cache empty)
and quantized once, and the later tests load it from the cache.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from evaluation_helpers import H, W, aligning_tiny_net, clip_tensor

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from sdsd.errors import UserError  # noqa: E402
from sdsd.runtimes import AutoBackend, OpenVINOBackend, auto, make_backend, registry  # noqa: E402
from sdsd.runtimes.cache import cache_key, entry_valid  # noqa: E402
from sdsd.runtimes.graphs import network_hash  # noqa: E402
from sdsd.runtimes.quantize import RECIPE, int8_key  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One model cache for the module (``$SDSD_CACHE``): the tiny network is converted and quantized once."""
    folder = str(tmp_path_factory.mktemp("sdsd-cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SDSD_CACHE", folder)
        yield folder


@pytest.fixture(scope="module")
def net():
    return aligning_tiny_net()


@pytest.fixture(scope="module")
def frames():
    """Seven real photograph crops, ``7 x 3 x H x W`` in [0, 1]."""
    return clip_tensor("astronaut", 7, seed=3)


@pytest.fixture()
def no_onnxruntime(monkeypatch):
    """``auto`` without ONNX Runtime's candidate (its export is another runtime's cost, not this file's subject)."""
    monkeypatch.delitem(registry.RUNTIMES, "onnxruntime")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def run_window(backend, frames):
    feats = backend.features(frames[:5])
    return backend.windows(tuple(f.unsqueeze(0) for f in feats), frames[2:3])


def test_short_job_choice_is_saved_then_upgraded_once_converted(net, frames, cache, tmp_path, no_onnxruntime,
                                                                 caplog, capsys):
    """First in the module: nothing is converted yet (the module's cache is new), so the short job leaves OpenVINO
    out; its conversion here is the one the later tests use."""
    from sdsd.export import main as export_main

    assert not os.listdir(cache) or not any(entry_valid(os.path.join(r, d)) for r, ds, _ in os.walk(cache)
                                            for d in ds)
    with caplog.at_level(logging.INFO, logger="sdsd"):
        first = AutoBackend(net, "cpu", "auto", conv_backend="nchw", frames_hint=3)
        first.features(frames[:2])
    assert first.describe()["runtime"] == "torch"
    assert set(first.report["pending"]) == {"openvino fp32", "openvino int8"}
    chosen = [r.getMessage() for r in caplog.records if r.getMessage().startswith("runtime auto: torch")]
    assert len(chosen) == 1 and "left out: openvino fp32 (not converted yet" in chosen[0]
    with open(os.path.join(cache, "choices.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert [v["pending"] for v in saved.values()] == [first.report["pending"]]

    # The same short job again: remembered, no timing.
    again = AutoBackend(net, "cpu", "auto", conv_backend="nchw", frames_hint=3)
    again.features(frames[:2])
    assert again.report["from_cache"]

    # Convert ahead with python -m sdsd.export --cache: the next short job finds OpenVINO fp32 converted.
    checkpoint = tmp_path / "tiny_G.pth"
    torch.save(net.state_dict(), checkpoint)
    assert export_main([str(checkpoint), "--cache", "--runtime", "openvino", "--height", str(H), "--width",
                        str(W)]) == 0
    assert f"openvino fp32 {H}x{W}: converted" in capsys.readouterr().out
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sdsd"):
        upgraded = AutoBackend(net, "cpu", "auto", conv_backend="nchw", frames_hint=3)
        upgraded.features(frames[:2])
    assert not upgraded.report["from_cache"] and upgraded.report["pending"] == ["openvino int8"]
    assert "openvino fp32" in upgraded.report["timings"]
    assert any("timing again" in r.getMessage() and "it is now" in r.getMessage() for r in caplog.records)
    last = AutoBackend(net, "cpu", "auto", conv_backend="nchw", frames_hint=3)
    last.features(frames[:2])
    assert last.report["from_cache"] and last.describe()["runtime"] == upgraded.describe()["runtime"]


def test_int8_runs_close_to_fp32_and_is_cached(net, frames, cache, caplog):
    with caplog.at_level(logging.INFO, logger="sdsd"):
        first = make_backend("openvino", net, precision="int8")
        got = run_window(first, frames)
    assert any("quantizing" in r.getMessage() for r in caplog.records)
    want = run_window(make_backend("openvino", net), frames)
    assert all(torch.isfinite(o).all() for o in got)  # the Retinex division stays float32: no inf
    assert psnr(got[0], want[0]) > 30 and psnr(got[2], want[2]) > 40
    entry = os.path.join(cache, first.describe()["int8"]["entries"][0])
    assert entry_valid(entry)
    with open(os.path.join(entry, "calibration.json"), encoding="utf-8") as f:
        recorded = json.load(f)
    assert recorded["recipe"] == RECIPE and recorded["frame_count"] == 5  # the first frames it was given
    # A second backend loads it from the cache: nothing is quantized.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sdsd"):
        second = OpenVINOBackend(net, precision="int8")
        assert second.prepare(H, W) is False
        again = run_window(second, frames)
    assert not any("quantizing" in r.getMessage() for r in caplog.records)
    assert second.int8[(H, W)] == {"entry": os.path.relpath(entry, cache), "quantized": False}
    assert all(torch.equal(a, b) for a, b in zip(again, got))


def test_key_holds_the_recipe_and_the_calibration_frames(net, frames):
    key = cache_key("openvino", network_hash(net), H, W)
    base = int8_key(key, RECIPE, frames[:1])
    assert base.startswith(key + "-int8-")
    assert int8_key(key, {**RECIPE, "windows": 3}, frames[:1]) != base
    assert int8_key(key, {**RECIPE, "ignored": ["retinex", "offsets"]}, frames[:1]) != base
    assert int8_key(key, RECIPE, frames[1:2]) != base
    assert int8_key(key, RECIPE, frames[:1].clone()) == base


def test_int8_is_inference_only_and_a_one_line_error_elsewhere(net):
    from sdsd.options import schema
    from sdsd.utils import precision

    assert "int8" in registry.PRECISION_CHOICES and "int8" in registry.RUNTIMES["openvino"].precisions
    assert "int8" not in precision.MODES  # never a train.amp
    from sdsd.options.checks import Invalid

    with pytest.raises(Invalid):
        schema.TRAIN_KEYS["amp"].check("int8")
    assert schema.TOP_KEYS["precision"].check("int8") == "int8"
    with pytest.raises(UserError) as err:
        make_backend("torch", net, precision="int8")
    assert "runtime torch does not run precision 'int8'" in str(err.value) and "openvino" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="onnxruntime does not run precision 'int8'"):
        make_backend("onnxruntime", net, precision="int8")


def test_enhance_parser_takes_int8():
    from sdsd.enhance import build_parser

    args = build_parser().parse_args(["in.mp4", "-o", "out.mp4", "--model", "m.pth", "--precision", "int8"])
    assert args.precision == "int8"


def test_auto_keeps_int8_within_the_threshold_and_rejects_it_below(net, frames, monkeypatch, no_onnxruntime):
    measured = AutoBackend(net, "cpu", "auto", conv_backend="nchw")
    measured.select(frames[:2], recall=False)
    if "openvino int8" in measured.report["rejected"]:
        value = measured.report["rejected"]["openvino int8"]
    else:
        value = measured.report["timings"]["openvino int8"]["psnr_vs_fp32"]
    assert value is not None and value > 20
    monkeypatch.setattr(auto, "MIN_PSNR_DB", value + 1)  # the rule: rejected below the threshold
    above = AutoBackend(net, "cpu", "auto", conv_backend="nchw")
    above.select(frames[:2], recall=False)
    assert above.report["rejected"]["openvino int8"] == value
    assert above.report["runtime"] != "openvino" or above.report["precision"] != "int8"
    monkeypatch.setattr(auto, "MIN_PSNR_DB", value - 1)  # and kept at or above it
    below = AutoBackend(net, "cpu", "auto", conv_backend="nchw")
    below.select(frames[:2], recall=False)
    assert "openvino int8" in below.report["timings"] and "openvino int8" not in below.report["rejected"]


def test_export_cache_int8_needs_a_video_and_openvino(tmp_path, capsys):
    from sdsd.export import main as export_main

    checkpoint = tmp_path / "tiny_G.pth"
    torch.save(aligning_tiny_net().state_dict(), checkpoint)
    for argv in (["--cache", "--int8", str(tmp_path / "none.mp4")], ["--cache", "--runtime", "onnxruntime", "--int8",
                 "x.mp4"], ["--cache", "-o", str(tmp_path / "o")], [], ["--format", "openvino", "-o", "o", "--int8",
                                                                       "x.mp4"]):
        with pytest.raises(SystemExit) as code:
            export_main([str(checkpoint), *argv])
        assert code.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
    video = tmp_path / "clip.mp4"
    _write_video(video, torch.rand(3, 3, 40, 56))
    from sdsd.export import _calibration_frames

    frames = _calibration_frames(str(video))
    assert tuple(frames.shape) == (3, 3, 48, 64)  # padded as the engine pads


def test_import_does_not_load_nncf_or_openvino():
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "codes")}
    code = ("import sys, sdsd.runtimes; "
            "print(sorted(m for m in ('nncf', 'openvino') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def _write_video(path, frames) -> None:
    """A real lossless H.264 clip of ``frames`` (``T x 3 x H x W`` in [0, 1]) with PyAV."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[-1], frames.shape[-2], "yuv444p"
        for f in frames:
            rgb = np.ascontiguousarray((f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(autouse=True, scope="module")
def _release_runtime_objects():
    """Free this module's OpenVINO objects when it ends, not at a later test's garbage collection."""
    yield
    import gc

    gc.collect()


def test_quantitative_test_int8_is_within_0_05_db_of_fp32(tmp_path):
    """``quantitative_test.py --runtime openvino --precision int8`` on the SDSD fixture: the JSON says int8, and the
    score is within 0.05 dB of the fp32 run (the published protocol stays fp32 unless asked)."""
    from evaluation_helpers import make_sdsd_tree, overrides, save_tiny_checkpoint, set_args

    from sdsd.evaluation import quantitative

    tree = make_sdsd_tree(str(tmp_path / "data"))
    ckpt = save_tiny_checkpoint(str(tmp_path / "tiny_G.pth"))
    opt = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "options", "test",
                       "test_in_sdsd.yml")
    runs = {}
    for name, extra in (("fp32", []), ("int8", ["--runtime", "openvino", "--precision", "int8"])):
        runs[name] = quantitative.main(["-opt", opt, "--no-progress", *extra,
                                        *set_args(overrides(tree, ckpt, str(tmp_path / name)))])
    assert runs["fp32"]["engine"]["precision"] == "fp32" and runs["fp32"]["engine"]["runtime"] == "torch"
    assert runs["int8"]["engine"]["precision"] == "int8" and runs["int8"]["engine"]["runtime"] == "openvino"
    assert abs(runs["int8"]["psnr"] - runs["fp32"]["psnr"]) < 0.05, (runs["int8"]["psnr"], runs["fp32"]["psnr"])
