"""SMID dataset: GT selection, the shipped test list, test protocol and item shapes."""

import os

import numpy as np
import pytest
import torch

from sdsd.data import build_dataset, read_frame
from sdsd.data.smid_dataset import SMIDDataset, select_smid_gt, smid_test_scenes
from sdsd.errors import UserError
from sdsd.registry import DATASET_REGISTRY

H, W = 32, 48


def make_smid(root, scenes, gt_names=("0001.ARW.npy", "0002_half.npy", "0003.npy", "0004.npy")):
    rng = np.random.default_rng(0)
    for scene, count in scenes.items():
        os.makedirs(root / "SMID_Long_np" / scene)
        os.makedirs(root / "SMID_LQ_np" / scene)
        for name in gt_names:
            np.save(root / "SMID_Long_np" / scene / name, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        for i in range(count):
            np.save(root / "SMID_LQ_np" / scene / f"{i:04d}.npy", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return root


def opts(root, **kw):
    base = {
        "mode": "video_samesize_smid", "dataroot_GT": str(root / "SMID_Long_np"),
        "dataroot_LQ": str(root / "SMID_LQ_np"), "N_frames": 5, "padding": "new_info", "cache_data": True,
        "GT_size": 16, "use_flip": True, "use_rot": True, "batch_size": 2, "n_workers": 0,
    }
    base.update(kw)
    return base


def test_registered_names():
    for name in ("SMID", "video_samesize_smid", "video_samesize_smid1"):
        assert DATASET_REGISTRY.get(name) is SMIDDataset


def test_shipped_test_list():
    ids = smid_test_scenes()
    assert len(ids) == 49 and len(set(ids)) == 49
    assert ids[:3] == ["0013", "0009", "0020"] and ids[-1] == "0191"


def test_gt_selection():
    assert select_smid_gt(["/d/s/b.npy", "/d/s/a.ARW.npy", "/d/s/a_half.npy"]) == "/d/s/b.npy"
    assert select_smid_gt(["/half_res/s/c.npy", "/half_res/s/b.npy"]) == "/half_res/s/b.npy"
    assert select_smid_gt(["/d/s/x.ARW"]) is None


def test_train_and_test_scenes(tmp_path):
    root = make_smid(tmp_path, {"0001": 6, "0009": 35, "0013": 4, "0200": 5})
    train = build_dataset(opts(root, testing_dir="0009,0013"), "train")
    assert train.scenes == ["0001", "0200"] and len(train) == 11
    item = train[0]
    assert item["LQs"].shape == (5, 3, 16, 16) and item["GT"].shape == (3, 16, 16) and item["key"] == "0001/0"

    test = build_dataset(opts(root, mode="video_samesize_smid1", testing_dir="0009,0013"), "test")
    assert test.scenes == ["0009", "0013"]
    assert test.scene_length("0009") == 30 and len(test) == 34
    gt_path = str(root / "SMID_Long_np" / "0009" / "0003.npy")
    for i in (0, 17, 29):
        item = test[i]
        assert item["GT_path"] == gt_path and item["index"] == i and item["scene"] == "0009"
        assert torch.equal(item["GT"], torch.from_numpy(read_frame(gt_path)).permute(2, 0, 1))
        assert item["LQs"].shape == (5, 3, H, W)
    lq, gt = test.load_scene("0013")
    assert lq.shape == (4, 3, H, W) and gt.shape == (4, 3, H, W)
    assert torch.equal(gt[3], test[30 + 3]["GT"]) and torch.equal(lq[test.window("0013", 1)], test[31]["LQs"])


def test_default_test_list_is_used(tmp_path):
    ids = smid_test_scenes()
    root = make_smid(tmp_path, {**{i: 1 for i in ids}, "0001": 5, "0002": 5}, gt_names=("g.npy",))
    train = build_dataset(opts(root), "train")
    assert train.scenes == ["0001", "0002"]
    test = build_dataset(opts(root, mode="video_samesize_smid1"), "test")
    assert test.scenes == sorted(ids)


def test_default_list_missing_scenes_fail_for_testing(tmp_path):
    root = make_smid(tmp_path, {"0001": 5, "0013": 5})
    build_dataset(opts(root), "train")  # training only needs the held-out scenes removed
    with pytest.raises(UserError, match=r"SMID test list.*0009"):
        build_dataset(opts(root, mode="video_samesize_smid1"), "test")


def test_scene_without_reference_frame(tmp_path):
    root = make_smid(tmp_path, {"0001": 5, "0002": 5}, gt_names=("a.ARW.npy", "b_half.npy"))
    with pytest.raises(UserError, match=r"scene 0001.*no reference frame"):
        build_dataset(opts(root, testing_dir="0002"), "train")


def test_resized_to_train_size(tmp_path):
    root = make_smid(tmp_path, {"0001": 5, "0002": 5})
    ds = build_dataset(opts(root, testing_dir="0002", train_size=[24, 16]), "test")
    item = ds[0]
    assert item["LQs"].shape == (5, 3, 16, 24)
    assert torch.equal(item["GT"], torch.from_numpy(read_frame(item["GT_path"], [24, 16])).permute(2, 0, 1))
