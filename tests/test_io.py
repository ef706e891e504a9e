"""Tests for ``sdsd.utils.io``: atomic, durable writes with ordinary permissions, on real files."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sdsd.utils import io as sio

ROOT = Path(__file__).resolve().parents[1]


def _write_each(folder: Path) -> dict[str, Path]:
    """One file written by each public writer; returns ``{writer: path}``."""
    paths = {name: folder / f"{name}.out" for name in ("bytes", "text", "json", "npy", "torch", "path")}
    sio.atomic_write_bytes(b"\x00\x01", str(paths["bytes"]))
    sio.atomic_write_text("hello\n", str(paths["text"]))
    sio.atomic_write_json({"a": 1}, str(paths["json"]))
    sio.atomic_save_npy(np.arange(3, dtype=np.uint8), str(paths["npy"]))
    sio.atomic_torch_save({"w": torch.ones(2)}, str(paths["torch"]))
    with sio.atomic_path(str(paths["path"])) as tmp, open(tmp, "w") as fh:
        fh.write("by name")
    return paths


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_and_folders_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        paths = _write_each(tmp_path / "new" / "deeper")
        temp_dir = sio.make_temp_dir(str(tmp_path / "frames"))
    finally:
        os.umask(old)
    for name, path in paths.items():
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, name
    for folder in (tmp_path / "new", tmp_path / "new" / "deeper", Path(temp_dir)):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder
    assert _leftovers(tmp_path / "new") == []


def test_contents_are_what_the_plain_writers_give(tmp_path):
    paths = _write_each(tmp_path)
    assert paths["bytes"].read_bytes() == b"\x00\x01"
    assert paths["text"].read_text() == "hello\n"
    assert json.loads(paths["json"].read_text()) == {"a": 1} and paths["json"].read_text().endswith("}\n")
    plain = tmp_path / "plain.npy"
    np.save(plain, np.arange(3, dtype=np.uint8))
    assert paths["npy"].read_bytes() == plain.read_bytes()
    assert torch.equal(torch.load(paths["torch"], weights_only=True)["w"], torch.ones(2))
    assert paths["path"].read_text() == "by name"
    sio.atomic_write_json({"x": object()}, str(tmp_path / "d.json"), indent=1, default=str)
    assert json.loads((tmp_path / "d.json").read_text())["x"].startswith("<object")


def test_file_then_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    # A spy on os.fsync is the only way to see the flushes; the real fsync still runs.
    real_fsync, real_replace = os.fsync, os.replace
    events: list[tuple[str, str]] = []

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(sio.os, "fsync", fsync)
    monkeypatch.setattr(sio.os, "replace", replace)
    for writer, target in ((lambda p: sio.atomic_write_text("x", p), tmp_path / "a.txt"),
                           (lambda p: sio.atomic_save_npy(np.zeros(2), p), tmp_path / "b.npy"),
                           (lambda p: sio.atomic_torch_save({}, p), tmp_path / "c.pth")):
        events.clear()
        writer(str(target))
        assert [e[0] for e in events] == ["fsync", "replace", "fsync"], events
        tmp_name = os.path.basename(events[0][1])
        assert sio.TEMP_NAME.match(tmp_name) and tmp_name.startswith(f".{target.name}.")
        assert events[1][1] == str(target) and events[2][1] == str(tmp_path)


def test_an_exception_inside_leaves_no_file_and_no_temp_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="boom"):
        with sio.atomic_path(str(target)) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and os.listdir(tmp_path) == []
    with pytest.raises(TypeError):
        sio.atomic_write_json({"x": object()}, str(target))  # not JSON: fails before anything is renamed
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("writer", ["bytes", "text", "json", "npy"])
def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, writer):
    target = tmp_path / "data.bin"
    target.write_bytes(b"previous")
    real_write = os.write
    calls = []

    def write(fd, data):  # the first chunk goes to disk, then the disk is full
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sio.os, "write", write)
    payload = {"bytes": lambda: sio.atomic_write_bytes(b"n" * 1000, str(target)),
               "text": lambda: sio.atomic_write_text("n" * 1000, str(target)),
               "json": lambda: sio.atomic_write_json(["n" * 1000], str(target)),
               "npy": lambda: sio.atomic_save_npy(np.ones(1000), str(target))}[writer]
    with pytest.raises(OSError) as info:
        payload()
    assert info.value.errno == errno.ENOSPC and len(calls) == 2
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_a_full_disk_inside_atomic_path_keeps_the_previous_file(tmp_path):
    target = tmp_path / "model.pth"
    torch.save({"old": torch.zeros(1)}, target)
    before = target.read_bytes()
    with pytest.raises(OSError):
        with sio.atomic_path(str(target)) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["model.pth"]


def test_remove_stale_temps_removes_only_our_temporary_names(tmp_path):
    keep = ["0001.npy", ".hidden", "x.tmp", ".a.npy.tmp", ".a.npy.ABCDEFGH.tmp.npy", "notes.1234abcd.tmp"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    stale_file = Path(sio.temp_path_for(str(tmp_path / "0002.npy")))
    stale_dir = Path(sio.make_temp_dir(str(tmp_path / "frames")))
    (stale_dir / "000000.png").write_bytes(b"png")
    mkstemp_style = tmp_path / ".clip.k2_9xz0a.tmp.mp4"  # what tempfile.mkstemp made for the video writer
    mkstemp_style.write_bytes(b"")
    sub = tmp_path / "scene"
    sub.mkdir()
    nested = Path(sio.temp_path_for(str(sub / "0000.npy")))

    removed = sio.remove_stale_temps(str(tmp_path))
    assert sorted(removed) == sorted(map(str, (stale_file, stale_dir, mkstemp_style)))
    assert sorted(os.listdir(tmp_path)) == sorted([*keep, "scene"]) and nested.exists()
    assert sio.remove_stale_temps(str(tmp_path), recursive=True) == [str(nested)]
    assert sio.remove_stale_temps(str(tmp_path / "missing")) == []


def test_remove_stale_temps_spares_fresh_files_when_asked(tmp_path):
    fresh = Path(sio.temp_path_for(str(tmp_path / "a.json")))
    assert sio.remove_stale_temps(str(tmp_path), min_age_s=3600) == [] and fresh.exists()
    os.utime(fresh, (0, 0))
    assert sio.remove_stale_temps(str(tmp_path), min_age_s=3600) == [str(fresh)]


def test_dataset_tools_do_not_load_torch():
    # synthesize/prepare_sdsd run in spawned workers; loading torch there would cost seconds per worker.
    code = ("import sys, sdsd.tools.synthesize, sdsd.tools.prepare_sdsd, sdsd.metrics, sdsd.utils.io; "
            "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "codes"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
