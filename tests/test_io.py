"""Tests for ``sdsd.utils.io``: atomic, durable writes with ordinary permissions, on real files."""

from __future__ import annotations

import errno
import json
import os
import re
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


def _temps_of_a_dead_process(folder: Path) -> list[str]:
    """Temporary entries made by a real process that has exited (as a killed writer leaves them)."""
    code = (
        "import json, sys\n"
        "from sdsd.utils import io as sio\n"
        "f = sys.argv[1]\n"
        "a = sio.temp_path_for(f + '/0002.npy')\n"
        "d = sio.make_temp_dir(f + '/frames')\n"
        "open(d + '/000000.png', 'wb').write(b'png')\n"
        "n = sio.temp_path_for(f + '/scene/0000.npy')\n"
        "print(json.dumps([a, d, n]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_remove_stale_temps_removes_what_a_dead_writer_left(tmp_path):
    (tmp_path / "scene").mkdir()
    stale_file, stale_dir, nested = _temps_of_a_dead_process(tmp_path)
    assert sio.is_our_temp(os.path.basename(stale_file)) and (Path(stale_dir) / sio.OWNER_RECORD).exists()
    removed = sio.remove_stale_temps(str(tmp_path))  # no waiting: the creating process is gone
    assert sorted(removed) == sorted([stale_file, stale_dir]) and os.path.exists(nested)
    assert sio.remove_stale_temps(str(tmp_path), recursive=True) == [nested]
    assert sorted(os.listdir(tmp_path)) == ["scene"] and os.listdir(tmp_path / "scene") == []
    assert sio.remove_stale_temps(str(tmp_path / "missing")) == []


def test_remove_stale_temps_never_touches_files_it_did_not_make(tmp_path):
    """A user's hidden temporary-looking files and folders survive, however old: the audit lost a
    ``.thesis.20240101.tmp.docx`` and a ``.photos.backup01.tmp/`` folder to the earlier name pattern."""
    (tmp_path / "scene").mkdir()
    keep = ["0001.npy", ".hidden", "x.tmp", ".a.npy.tmp", ".a.npy.ABCDEFGH.tmp.npy", "notes.1234abcd.tmp",
            ".thesis.20240101.tmp.docx", ".clip.k2_9xz0a.tmp.mp4"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    photos = tmp_path / ".photos.backup01.tmp"
    photos.mkdir()
    (photos / "IMG_0001.jpg").write_bytes(b"jpeg")
    # Names of our pattern, of a dead process, on entries this module did not make: a wrong check digest, a
    # folder without the owner record or with another folder's, a symbolic link, a FIFO.
    file_name, dir_name, _ = _temps_of_a_dead_process(tmp_path)
    sio.remove_stale_temps(str(tmp_path), recursive=True)
    digest = file_name[-13:-9]
    forged = Path(file_name[:-13] + ("0000" if digest != "0000" else "1111") + file_name[-9:])
    forged.write_text("keep")
    unmarked = Path(dir_name)
    unmarked.mkdir()
    (unmarked / "mine.txt").write_text("keep")
    link_name, alien_name, fifo_name = _temps_of_a_dead_process(tmp_path)
    os.remove(link_name)
    os.remove(fifo_name)
    (tmp_path / "target.txt").write_text("keep")
    os.symlink(tmp_path / "target.txt", link_name)
    os.mkfifo(fifo_name)
    (Path(alien_name) / sio.OWNER_RECORD).write_text("some other folder")
    for path in [*(tmp_path / n for n in keep), photos, forged, unmarked]:
        os.utime(path, (0, 0))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert sio.remove_stale_temps(str(tmp_path), recursive=True, min_age_s=0) == []
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (photos / "IMG_0001.jpg").read_bytes() == b"jpeg" and (tmp_path / "target.txt").read_text() == "keep"
    # A dead writer's folder killed before its owner record was written goes only while empty.
    os.remove(unmarked / "mine.txt")
    assert sio.remove_stale_temps(str(tmp_path), min_age_s=0) == [str(unmarked)]


def test_remove_stale_temps_spares_a_live_writer_until_it_is_old(tmp_path):
    fresh = Path(sio.temp_path_for(str(tmp_path / "a.json")))  # this process is alive
    assert sio.remove_stale_temps(str(tmp_path)) == [] and fresh.exists()
    os.utime(fresh, (0, 0))  # untouched for decades: a process id in use again, or another machine's
    assert sio.remove_stale_temps(str(tmp_path)) == [str(fresh)]


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "entry"
    with sio.atomic_folder(str(target)) as tmp:
        Path(tmp, "a.bin").write_bytes(b"1")
    assert sorted(os.listdir(target)) == ["a.bin"]
    with pytest.raises(RuntimeError), sio.atomic_folder(str(target)) as tmp:
        Path(tmp, "b.bin").write_bytes(b"2")
        raise RuntimeError("killed half way")
    assert sorted(os.listdir(target)) == ["a.bin"] and sorted(os.listdir(tmp_path)) == ["entry"]
    with sio.atomic_folder(str(target)) as tmp:
        Path(tmp, "b.bin").write_bytes(b"2")
    assert sorted(os.listdir(target)) == ["b.bin"] and sorted(os.listdir(tmp_path)) == ["entry"]
    (tmp_path / "file").write_text("x")
    os.symlink(target, tmp_path / "link")
    for bad in ("file", "link"):
        with pytest.raises(FileExistsError), sio.atomic_folder(str(tmp_path / bad)):
            pass
    assert (tmp_path / "file").read_text() == "x" and os.path.islink(tmp_path / "link")


def test_dataset_tools_do_not_load_torch():
    # synthesize/prepare_sdsd run in spawned workers; loading torch there would cost seconds per worker.
    code = ("import sys, sdsd.tools.synthesize, sdsd.tools.prepare_sdsd, sdsd.metrics, sdsd.utils.io; "
            "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "codes"), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


# -- read_json: the one reader of our small JSON files -----------------------------------------------------------


def test_read_json_reads_and_refuses_each_hostile_file(tmp_path):
    from sdsd.utils.io import JSONFileProblem, read_json

    good = tmp_path / "good.json"
    good.write_bytes(b'\xef\xbb\xbf{"a": [1, 2.5, null]}')
    assert read_json(str(good), 100) == {"a": [1, 2.5, None]}
    with pytest.raises(FileNotFoundError):
        read_json(str(tmp_path / "absent.json"), 100)
    cases = {
        "big.json": (b"[" + b"0," * 100 + b"0]", "larger than 100 bytes"),
        "latin.json": ('{"caf\u00e9": 1}'.encode("latin-1"), "not UTF-8 text"),
        "nan.json": (b'{"x": NaN}', "not valid JSON (NaN is not a number JSON allows"),
        "cut.json": (b'{"x": ', "not valid JSON (Expecting value"),
        "deep.json": (b"[" * 50 + b"]" * 50, None),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        if reason is None:
            continue
        with pytest.raises(JSONFileProblem, match=re.escape(reason)):
            read_json(str(tmp_path / name), 100)
    deep = tmp_path / "deeper.json"
    deep.write_bytes(b"[" * 100000 + b"]" * 100000)
    with pytest.raises(JSONFileProblem, match="nested too deeply"):
        read_json(str(deep), 10**6)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(JSONFileProblem, match="not a regular file"):
        read_json(str(fifo), 100)  # refused without opening it: the read would block
    link = tmp_path / "link.json"
    link.symlink_to(good)
    assert read_json(str(link), 100) == {"a": [1, 2.5, None]}
    with pytest.raises(JSONFileProblem, match="symbolic link"):
        read_json(str(link), 100, follow_links=False)
