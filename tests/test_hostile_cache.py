"""Hostile model caches and export folders: an unusable ``SDSD_CACHE``, a bad ``choices.json``, killed and
concurrent conversions, and export outputs that are not previous exports.

Real OpenVINO / ONNX Runtime conversions of the tiny network, real subprocesses killed with SIGKILL. The tests that
convert share one module cache (each runtime converts the tiny network once); the others use folders of their own.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time

import cv2
import pytest
import torch
from evaluation_helpers import H, W, aligning_tiny_net, clip_frames, clip_tensor

from sdsd import runtimes
from sdsd.errors import UserError
from sdsd.export import main as export_main
from sdsd.runtimes import AutoBackend, OpenVINOBackend, cached_models, make_backend
from sdsd.utils.io import OWNER_RECORD, is_our_temp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "codes"), REPO, TESTS])}
EXPORT_OV = ["--format", "openvino", "--height", str(H), "--width", str(W)]
#: SIGKILL tests wait at most this long for the child's temporary folder to appear.
POLL_S = 60.0


@pytest.fixture(scope="module")
def net():
    return aligning_tiny_net()


@pytest.fixture(scope="module")
def frames():
    """Five real photograph crops, ``5 x 3 x H x W`` in [0, 1]."""
    return clip_tensor("astronaut", 5, seed=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, net):
    path = tmp_path_factory.mktemp("ckpt") / "aligning_G.pth"
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory, net):
    """A cache folder holding the tiny network converted for OpenVINO (H x W) and ONNX Runtime."""
    folder = str(tmp_path_factory.mktemp("built-cache"))
    OpenVINOBackend(net, cache=folder).prepare(H, W)
    make_backend("onnxruntime", net, cache=folder)
    return folder


def temps_under(folder) -> list[str]:
    """Every temporary name of sdsd.utils.io's making below ``folder``."""
    return [os.path.join(root, name) for root, dirs, files in os.walk(folder) for name in [*dirs, *files]
            if is_our_temp(name)]


def umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def hostile_cache(kind: str, tmp_path) -> str:
    """A cache path that cannot be used: a regular file, a path under a regular file, or a read-only folder."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache should be\n")
    if kind == "file":
        return str(blocker)
    if kind == "under_a_file":
        return str(blocker / "sub")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return str(folder)
    pytest.skip("this user writes into a chmod 0555 folder (root): the read-only case cannot be made here")


# -- 1. an unusable cache -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "under_a_file", "read_only"])
def test_auto_falls_back_to_pytorch_with_one_warning(kind, net, frames, tmp_path, monkeypatch, caplog):
    path = hostile_cache(kind, tmp_path)
    monkeypatch.setenv("SDSD_CACHE", path)
    before = sorted(os.listdir(tmp_path))
    with caplog.at_level(logging.INFO, logger="sdsd"):
        auto = AutoBackend(net, "cpu", "auto")  # no frames hint: converting would be worth it
        feats = auto.features(frames)
    assert auto.describe()["runtime"] == "torch" and len(feats) == 3
    assert not auto.report["from_cache"] and all(label.startswith("torch") for label in auto.report["timings"])
    warned = warnings_of(caplog)
    assert len(warned) == 1 and path in warned[0] and "SDSD_CACHE" in warned[0] and "\n" not in warned[0]
    assert sorted(os.listdir(tmp_path)) == before  # nothing converted, nothing remembered
    assert (tmp_path / "not-a-folder").read_text() == "a file where the cache should be\n"


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("kind", ["file", "under_a_file", "read_only"])
def test_explicit_runtime_names_the_unusable_cache(kind, runtime, net, frames, tmp_path, monkeypatch):
    path = hostile_cache(kind, tmp_path)
    monkeypatch.setenv("SDSD_CACHE", path)
    with pytest.raises(UserError) as err:
        make_backend(runtime, net).features(frames[:1])
    message = str(err.value)
    assert path in message and "SDSD_CACHE" in message and "writable folder" in message and "\n" not in message


def test_enhance_cli_with_a_cache_under_a_file(checkpoint, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, frame in enumerate(clip_frames("astronaut", 5, seed=1)):
        cv2.imwrite(str(src / f"{i:03d}.png"), frame)
    cache = hostile_cache("under_a_file", tmp_path)
    env = {**ENV, "SDSD_CACHE": cache}
    base = [sys.executable, "-m", "sdsd.enhance", str(src), "--model", checkpoint, "--device", "cpu", "--quiet"]
    auto = subprocess.run([*base, "-o", str(tmp_path / "auto")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert auto.returncode == 0, auto.stderr
    lines = auto.stderr.strip().splitlines()
    assert len(lines) == 1 and cache in lines[0] and "SDSD_CACHE" in lines[0], auto.stderr
    assert len(os.listdir(tmp_path / "auto")) == 5
    forced = subprocess.run([*base, "-o", str(tmp_path / "ov"), "--runtime", "openvino"], capture_output=True,
                            text=True, env=env, timeout=120)
    lines = forced.stderr.strip().splitlines()
    assert forced.returncode == 2 and len(lines) == 1, forced.stderr
    assert lines[0].startswith("error: ") and cache in lines[0] and "SDSD_CACHE" in lines[0]
    assert not (tmp_path / "ov").exists()


# -- 2. a bad choices.json ----------------------------------------------------------------------------------------

VALID = {"runtime": "torch", "precision": "fp32", "conv_backend": "nchw"}
BAD_CHOICES = {
    "unknown_runtime": lambda key: json.dumps({key: {"runtime": "tensorflow", "precision": "fp32"},
                                               "another machine": VALID}),
    "unknown_precision": lambda key: json.dumps({key: {**VALID, "precision": "int4"}, "another machine": VALID}),
    "wrong_types": lambda key: json.dumps({key: {"runtime": ["torch"], "precision": 32}, "another machine": VALID}),
    "not_an_object": lambda key: json.dumps([VALID]),
    "not_json": lambda key: "{" + json.dumps(key) + ": {\"runtime\": ",
    "nested_too_deep": lambda key: "[" * 200_000 + "]" * 200_000,
    "huge": lambda key: json.dumps({key: VALID, "padding": "x" * (runtimes.auto.MAX_CHOICES_BYTES + 1)}),
}


@pytest.mark.parametrize("kind", sorted(BAD_CHOICES))
def test_bad_choices_file_is_ignored_then_rewritten(kind, net, frames, built_cache, caplog):
    path = os.path.join(built_cache, "choices.json")
    auto = AutoBackend(net, "cpu", "fp32", cache=built_cache)
    key = auto._choice_key(H, W)
    with open(path, "w", encoding="utf-8") as f:
        f.write(BAD_CHOICES[kind](key))
    with caplog.at_level(logging.WARNING, logger="sdsd"):
        auto.features(frames[:4])
    warned = warnings_of(caplog)
    assert len(warned) == 1 and path in warned[0] and "\n" not in warned[0], warned
    assert ("dropped 1" in warned[0]) if kind.startswith(("unknown", "wrong")) else ("ignored" in warned[0])
    assert not auto.report["from_cache"]  # measured again
    assert {"openvino fp32", "onnxruntime fp32"} <= set(auto.report["timings"])  # the cached models were used
    with open(path, encoding="utf-8") as f:
        rewritten = json.load(f)
    assert rewritten[key]["runtime"] == auto.describe()["runtime"]
    assert all(runtimes.auto._valid_choice(v) for v in rewritten.values())
    if kind.startswith(("unknown", "wrong")):
        assert rewritten["another machine"] == VALID  # the good entries stay
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask()  # follows the umask like open(path, "w")
    assert not temps_under(built_cache)
    os.remove(path)


# -- 3. killed and concurrent conversions -------------------------------------------------------------------------


def kill_when_temp_folder_appears(proc: subprocess.Popen, folder: str) -> str:
    """SIGKILL ``proc`` as soon as a temporary folder of sdsd.utils.io's making exists below ``folder``; its path.

    The folder counts once its owner record is written (a process killed in the instant between creating the
    folder and writing the record leaves a folder no sweep may prove its own).
    """
    deadline = time.monotonic() + POLL_S
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p for p in temps_under(folder) if os.path.isfile(os.path.join(p, OWNER_RECORD))]
        if found:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return found[0]
        time.sleep(0.01)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"no temporary folder appeared under {folder} (exit {proc.returncode}): {err[-2000:]}")


@pytest.mark.soak
def test_killed_conversion_leaves_nothing_after_the_next_run(net, tmp_path):
    cache = str(tmp_path / "cache")
    code = (f"from evaluation_helpers import H, W, aligning_tiny_net\nfrom sdsd.runtimes import OpenVINOBackend\n"
            f"OpenVINOBackend(aligning_tiny_net(), cache={cache!r}).prepare(H, W)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    left = kill_when_temp_folder_appears(proc, cache)
    assert proc.returncode == -signal.SIGKILL and os.path.isdir(left)  # killed mid-conversion: the temp is there
    assert OpenVINOBackend(net, cache=cache).prepare(H, W) is True  # the next run converts it again
    assert not temps_under(cache) and not os.path.exists(left)
    (versions,) = [d for d in os.listdir(cache) if d.startswith("openvino-")]
    entries = os.listdir(os.path.join(cache, versions))
    assert len(entries) == 1 and runtimes.cache.entry_valid(os.path.join(cache, versions, entries[0]))


CONCURRENT = """
import os, sys, time
from sdsd.runtimes import cached_models
cache, key, me, signals = sys.argv[1:5]

def build(folder):
    with open(os.path.join(folder, "model.bin"), "w") as f:
        f.write("weights of " + key)
    open(os.path.join(signals, "ready-" + me), "w").close()
    while not os.path.exists(os.path.join(signals, "go")):  # all writers finish their builds at once
        time.sleep(0.002)

folder, built = cached_models(key, build, cache)
print(folder)
"""


def test_concurrent_writers_of_one_entry_all_succeed(tmp_path):
    cache, signals = tmp_path / "cache", tmp_path / "signals"
    signals.mkdir()
    key = os.path.join("onnxruntime-test", "0123456789abcdef")
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(cache), key, str(i), str(signals)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.monotonic() + 60
    while len(list(signals.iterdir())) < len(procs) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (signals / "go").touch()
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), results
    folder = os.path.join(str(cache), key)
    assert {out.strip() for out, _ in results} == {folder}
    assert runtimes.cache.entry_valid(folder) and not temps_under(cache)
    assert sorted(os.listdir(folder)) == ["manifest.json", "model.bin"]


def test_an_entry_finished_meanwhile_by_another_writer_is_used(tmp_path):
    cache = str(tmp_path / "cache")
    key = os.path.join("openvino-test", "entry")

    def write(text):
        def build(folder):
            with open(os.path.join(folder, "model.bin"), "w") as f:
                f.write(text)
        return build

    def slow_build(folder):
        write("mine")(folder)
        # Another writer completes the same entry while this build runs.
        assert cached_models(key, write("winner"), cache) == (os.path.join(cache, key), True)

    folder, built = cached_models(key, slow_build, cache)
    assert built and runtimes.cache.entry_valid(folder)
    with open(os.path.join(folder, "model.bin"), encoding="utf-8") as f:
        assert f.read() == "winner"
    assert not temps_under(cache)
    assert cached_models(key, write("unused"), cache) == (folder, False)


# -- 4. export outputs --------------------------------------------------------------------------------------------


@pytest.mark.soak
def test_killed_export_leaves_the_old_export_then_the_next_one_replaces_it_whole(checkpoint, tmp_path, capsys):
    parent = tmp_path / "exports"
    out = parent / "model"
    out.mkdir(parents=True)
    (out / "features.onnx").write_bytes(b"a previous export")
    proc = subprocess.Popen([sys.executable, "-m", "sdsd.export", checkpoint, *EXPORT_OV, "-o", str(out)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    left = kill_when_temp_folder_appears(proc, str(parent))
    assert proc.returncode == -signal.SIGKILL and os.path.isdir(left)
    assert os.listdir(out) == ["features.onnx"]  # the killed export changed nothing
    assert export_main([checkpoint, *EXPORT_OV, "-o", str(out)]) == 0
    assert os.listdir(parent) == ["model"]  # the killed export's temporary folder is gone
    assert sorted(os.listdir(out)) == ["features.bin", "features.xml", "windows.bin", "windows.xml"]
    assert left in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["foreign_file", "sub_folder", "link"])
def test_export_refuses_an_output_that_is_not_a_previous_export(kind, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    if kind == "link":
        (tmp_path / "elsewhere").mkdir()
        out.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    else:
        out.mkdir()
        (out / "features.xml").write_text("<old/>")
        if kind == "foreign_file":
            (out / "notes.txt").write_text("mine\n")
        else:
            (out / "features.onnx").mkdir()
    before = sorted(os.listdir(out))
    with pytest.raises(SystemExit) as exited:
        export_main([checkpoint, *EXPORT_OV, "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and err.count("\n") == 0 and err.startswith("error: -o ") and str(out) in err
    assert sorted(os.listdir(out)) == before and not temps_under(tmp_path)


@pytest.fixture(autouse=True, scope="module")
def _release_runtime_objects():
    """Free this module's OpenVINO / ONNX Runtime objects when it ends, not at a later test's garbage collection."""
    yield
    import gc

    gc.collect()
