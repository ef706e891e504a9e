"""LMDB frames: make_lmdb (real subprocess, resumable) and identical tensors from LMDB and folders."""

import json
import os
import random
import subprocess
import sys

import lmdb
import numpy as np
import pytest
import torch

from sdsd.data import build_dataset
from sdsd.data.lmdb_backend import META_KEY, encode_frame, open_env, read_raw
from sdsd.errors import UserError
from sdsd.tools.make_lmdb import main as make_lmdb_main
from sdsd.tools.make_lmdb import make_lmdb

H, W = 32, 48


def make_tree(root, scenes):
    rng = np.random.default_rng(0)
    for sub in ("GT", "input"):
        for scene, count in scenes.items():
            os.makedirs(root / sub / scene)
            for i in range(count):
                np.save(root / sub / scene / f"{i:04d}.npy", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return root


def run_tool(*args):
    return subprocess.run([sys.executable, "-m", "sdsd.tools.make_lmdb", *map(str, args), "--quiet"],
                          capture_output=True, text=True)


def opts(gt, lq, **kw):
    base = {"mode": "video_samesize", "dataroot_GT": str(gt), "dataroot_LQ": str(lq), "N_frames": 5,
            "padding": "new_info", "GT_size": 16, "testing_dir": "b", "cache_data": True}
    base.update(kw)
    return base


def test_lmdb_gives_same_tensors(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 6, "b": 7})
    result = run_tool(root / "GT", tmp_path / "GT.lmdb")  # the real command line once; in-process below
    assert result.returncode == 0, result.stderr
    assert "2 scenes, 13 frames" in result.stdout
    make_lmdb(str(root / "input"), str(tmp_path / "input.lmdb"), progress=False)
    with lmdb.open(str(tmp_path / "GT.lmdb"), readonly=True, lock=False) as env, env.begin() as txn:
        meta = json.loads(txn.get(META_KEY))
    assert meta["scenes"] == ["a", "b"] and meta["frames"]["a"][0] == "0000.npy" and meta["shapes"]["b"] == [H, W, 3]
    np.testing.assert_array_equal(read_raw(str(tmp_path / "GT.lmdb"), "b/0003.npy"),
                                  np.load(root / "GT" / "b" / "0003.npy"))

    for phase, kw in (("test", {}), ("test", {"train_size": [40, 24]})):
        folder = build_dataset(opts(root / "GT", root / "input", **kw), phase)
        packed = build_dataset(opts(tmp_path / "GT.lmdb", tmp_path / "input.lmdb", **kw), phase)
        assert packed.scenes == folder.scenes and len(packed) == len(folder)
        for i in range(len(folder)):
            assert torch.equal(packed[i]["LQs"], folder[i]["LQs"]) and torch.equal(packed[i]["GT"], folder[i]["GT"])
        for a, b in zip(packed.load_scene("b"), folder.load_scene("b")):
            assert torch.equal(a, b)

    folder = build_dataset(opts(root / "GT", root / "input"), "train")
    packed = build_dataset(opts(tmp_path / "GT.lmdb", tmp_path / "input.lmdb"), "train")
    for i in range(len(folder)):
        random.seed(i)
        x = folder[i]
        random.seed(i)
        y = packed[i]
        assert torch.equal(x["LQs"], y["LQs"]) and torch.equal(x["GT"], y["GT"]) and x["key"] == y["key"]


def test_lq_lmdb_named_LQ_is_found(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 5, "b": 5})
    make_lmdb(str(root / "GT"), str(tmp_path / "GT.lmdb"), progress=False)
    make_lmdb(str(root / "input"), str(tmp_path / "LQ.lmdb"), progress=False)
    ds = build_dataset(opts(tmp_path / "GT.lmdb", tmp_path / "input.lmdb"), "test")
    assert ds.lq_root == str(tmp_path / "LQ.lmdb") and len(ds) == 5


def test_resume_skips_stored_frames(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 5, "b": 5})
    dst = tmp_path / "GT.lmdb"
    # simulate an interrupted run: some frames stored, no __meta__
    marker = encode_frame(np.full((H, W, 3), 9, np.uint8))
    env = lmdb.open(str(dst), map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(b"a/0000.npy", marker)
        txn.put(b"a/0001.npy", b"damaged")
    env.close()
    with pytest.raises(UserError, match=r"no __meta__.*make_lmdb"):
        build_dataset(opts(dst, root / "input"), "test")
    result = run_tool(root / "GT", dst)
    assert result.returncode == 0, result.stderr
    with open_env(str(dst)).begin() as txn:  # the dataset above already opened it in this process
        assert txn.get(b"a/0000.npy") == marker  # a stored frame is skipped, not rewritten
        assert txn.get(b"a/0001.npy") == encode_frame(np.load(root / "GT" / "a" / "0001.npy"))  # damaged: rewritten
        assert txn.get(b"b/0004.npy") is not None and txn.get(META_KEY) is not None


def test_tool_errors(tmp_path, capsys):
    root = make_tree(tmp_path / "d", {"a": 5})
    result = run_tool(tmp_path / "missing", tmp_path / "x.lmdb")
    assert result.returncode == 2 and "error: source folder" in result.stderr and "missing" in result.stderr
    assert "Traceback" not in result.stderr
    for args, message in (
        ([root / "GT", tmp_path / "x.db"], "must end with .lmdb"),
        ([root, tmp_path / "z.lmdb"], "holds no frames"),  # a root whose scene folders hold folders, not frames
    ):
        with pytest.raises(SystemExit) as stop:
            make_lmdb_main([str(a) for a in args] + ["--quiet"])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    (root / "GT" / "a" / "0002.npy").write_bytes(b"junk")
    with pytest.raises(SystemExit):
        make_lmdb_main([str(root / "GT"), str(tmp_path / "y.lmdb"), "--quiet"])
    assert "0002.npy" in capsys.readouterr().err


def test_missing_key_and_corrupt_value(tmp_path):
    root = make_tree(tmp_path / "d", {"a": 5, "b": 5})
    dst = tmp_path / "GT.lmdb"
    make_lmdb(str(root / "GT"), str(dst), progress=False)
    env = lmdb.open(str(dst), map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(b"b/0001.npy", b"SDF1\x01\x00\x00\x00")
        txn.delete(b"b/0002.npy")
    env.close()
    ds = build_dataset(opts(dst, root / "input"), "test")
    with pytest.raises(UserError, match=r"b/0001.npy.*truncated"):
        ds[1]
    with pytest.raises(UserError, match=r"b/0002.npy is not in LMDB"):
        ds[2]
