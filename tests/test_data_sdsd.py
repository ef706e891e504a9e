"""SDSD dataset: scene pairing, splits, train crops/flips, test protocol, scene API and every bad input."""

import os
import random
import shutil

import cv2
import numpy as np
import pytest
import torch

from sdsd import options
from sdsd.data import build_dataset, read_frame
from sdsd.data.sdsd_dataset import SDSDDataset
from sdsd.errors import UserError
from sdsd.registry import DATASET_REGISTRY

H, W = 32, 48


def make_tree(root, scenes, lq_name="input", ext="npy", size=(H, W), seed=0):
    """Write GT/<scene>/ and <lq_name>/<scene>/ frames; ``scenes`` maps scene name -> frame count."""
    rng = np.random.default_rng(seed)
    for sub in ("GT", lq_name):
        for scene, count in scenes.items():
            os.makedirs(root / sub / scene, exist_ok=True)
            for i in range(count):
                img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                path = root / sub / scene / f"{i:05d}.{ext}"
                np.save(path, img) if ext == "npy" else cv2.imwrite(str(path), img)
    return root


def opts(root, lq="input", **kw):
    base = {
        "name": "t", "mode": "video_samesize", "interval_list": [1], "random_reverse": False, "border_mode": False,
        "dataroot_GT": str(root / "GT"), "dataroot_LQ": str(root / lq), "train_size": None, "cache_keys": None,
        "cache_data": True, "padding": "new_info", "N_frames": 5, "use_shuffle": True, "n_workers": 0,
        "batch_size": 4, "GT_size": 16, "LQ_size": 16, "use_flip": True, "use_rot": True, "color": "RGB",
    }
    base.update(kw)
    return base


def frame_tensor(path, train_size=None):
    return torch.from_numpy(read_frame(path, train_size)).permute(2, 0, 1)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path, {"pair1": 7, "pair2": 6, "pair10": 35, "pair3": 8})


def test_registered_names():
    for name in ("SDSD", "video_samesize", "video_samesize1"):
        assert DATASET_REGISTRY.get(name) is SDSDDataset


def test_train_split_and_items(tree):
    ds = build_dataset(opts(tree, testing_dir="pair2,pair10"), "train")
    assert ds.scenes == ["pair1", "pair3"]  # sorted by name, test scenes removed
    assert len(ds) == 7 + 8
    item = ds[3]
    assert item["LQs"].shape == (5, 3, 16, 16) and item["LQs"].dtype == torch.float32
    assert item["GT"].shape == (3, 16, 16)
    assert item["key"] == "pair1/3"


def test_train_crop_is_same_location_in_all_frames(tree):
    ds = build_dataset(opts(tree, testing_dir="pair2", use_flip=False, use_rot=False, GT_size=8), "train")
    random.seed(3)
    item = ds[0]
    scene = "pair1"
    idx = ds.window(scene, 0)
    assert idx == [4, 3, 0, 1, 2]
    lq_full = [frame_tensor(str(tree / "input" / scene / f"{j:05d}.npy")) for j in idx]
    gt_full = frame_tensor(str(tree / "GT" / scene / "00000.npy"))
    # find the crop location from the GT and check every LQ frame at that location
    hits = [(t, l) for t in range(H - 7) for l in range(W - 7) if torch.equal(gt_full[:, t:t + 8, l:l + 8], item["GT"])]
    assert len(hits) == 1
    t, l = hits[0]
    for k in range(5):
        assert torch.equal(item["LQs"][k], lq_full[k][:, t:t + 8, l:l + 8])


def test_flips_apply_to_all_frames(tree):
    ds_plain = build_dataset(opts(tree, testing_dir="pair2", use_flip=False, use_rot=False, GT_size=8), "train")
    ds_aug = build_dataset(opts(tree, testing_dir="pair2", GT_size=8), "train")
    seen = set()
    for seed in range(40):
        random.seed(seed)
        plain = ds_plain[5]
        random.seed(seed)
        aug = ds_aug[5]
        for flip_w in (False, True):
            for flip_h in (False, True):
                dims = [d for d, on in ((-1, flip_w), (-2, flip_h)) if on]
                want_gt = plain["GT"].flip(dims) if dims else plain["GT"]
                want_lq = plain["LQs"].flip(dims) if dims else plain["LQs"]
                if torch.equal(aug["GT"], want_gt) and torch.equal(aug["LQs"], want_lq):
                    seen.add((flip_w, flip_h))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_resize_with_train_size(tmp_path):
    root = make_tree(tmp_path, {"a": 5, "b": 5}, size=(20, 30))
    ds = build_dataset(opts(root, mode="video_samesize1", testing_dir="b", train_size=[W, H]), "test")
    item = ds[2]
    assert item["GT"].shape == (3, H, W)
    assert torch.equal(item["GT"], frame_tensor(item["GT_path"], [W, H]))
    assert torch.equal(item["LQs"][2], frame_tensor(item["LQ_path"], [W, H]))


def test_test_protocol_first_30_frames(tree):
    ds = build_dataset(opts(tree, mode="video_samesize1", testing_dir="pair10,pair2"), "test")
    assert ds.scenes == ["pair10", "pair2"]
    assert ds.scene_length("pair10") == 30 and ds.scene_length("pair2") == 6
    assert len(ds) == 36
    # last evaluated frame of pair10: window computed over n = 30, not the 35 frames on disk
    assert ds.window("pair10", 29) == [27, 28, 29, 26, 25]
    item = ds[29]
    assert item["scene"] == "pair10" and item["index"] == 29
    assert item["LQs"].shape == (5, 3, H, W) and item["GT"].shape == (3, H, W)
    assert item["GT_path"].endswith(os.path.join("GT", "pair10", "00029.npy"))
    assert item["LQ_path"].endswith(os.path.join("input", "pair10", "00029.npy"))
    for k, j in enumerate([27, 28, 29, 26, 25]):
        assert torch.equal(item["LQs"][k], frame_tensor(str(tree / "input" / "pair10" / f"{j:05d}.npy")))
    assert torch.equal(item["GT"], frame_tensor(item["GT_path"]))


def test_scene_api_matches_items(tree):
    ds = build_dataset(opts(tree, mode="video_samesize1", testing_dir="pair2"), "test")
    lq, gt = ds.load_scene("pair2")
    assert lq.shape == (6, 3, H, W) and gt.shape == (6, 3, H, W)
    for i in range(ds.scene_length("pair2")):
        item = ds[i]
        assert torch.equal(item["LQs"], lq[ds.window("pair2", i)])
        assert torch.equal(item["GT"], gt[i])


def test_max_frames_keeps_protocol_windows(tree):
    ds = build_dataset(opts(tree, mode="video_samesize1", testing_dir="pair10", max_frames=3), "test")
    assert ds.scene_length("pair10") == 3 and len(ds) == 3
    assert ds.window("pair10", 0) == [4, 3, 0, 1, 2]
    lq, gt = ds.load_scene("pair10")
    assert gt.shape[0] == 3 and lq.shape[0] == 5


def test_val_without_testing_dir_uses_all_scenes(tree):
    ds = build_dataset(opts(tree), "val")
    assert ds.scenes == ["pair1", "pair10", "pair2", "pair3"]
    assert len(ds) == 7 + 30 + 6 + 8


def test_test_frames_option(tree):
    ds = build_dataset(opts(tree, testing_dir="pair10", test_frames=None), "test")
    assert ds.scene_length("pair10") == 35
    ds = build_dataset(opts(tree, testing_dir="pair10", test_frames=10), "test")
    assert ds.scene_length("pair10") == 10 and ds.window("pair10", 9) == [7, 8, 9, 6, 5]


def test_lq_folder_named_LQ_or_input(tmp_path):
    root = make_tree(tmp_path, {"a": 5, "b": 5}, lq_name="LQ")
    ds = build_dataset(opts(root, lq="input", testing_dir="b"), "train")
    assert ds.lq_root == str(root / "LQ")
    root2 = make_tree(tmp_path / "x", {"a": 5, "b": 5}, lq_name="input")
    ds2 = build_dataset(opts(root2, lq="LQ", testing_dir="b"), "train")
    assert ds2.lq_root == str(root2 / "input")


def test_png_frames(tmp_path):
    root = make_tree(tmp_path, {"a": 5, "b": 6}, ext="png")
    ds = build_dataset(opts(root, testing_dir="b"), "test")
    item = ds[4]
    assert torch.equal(item["GT"], frame_tensor(item["GT_path"]))


def test_static_split(tmp_path):
    root = make_tree(tmp_path, {"pair1": 5, "pair1_2": 5, "pair4": 5, "pair4_2": 5, "pair5": 5, "pair11": 5})
    train = build_dataset(opts(root, split="static", testing_dir="pair1,pair4"), "train")
    assert train.scenes == ["pair11", "pair5"]
    test = build_dataset(opts(root, split="static", testing_dir="pair1,pair4"), "test")
    assert test.scenes == ["pair1", "pair1_2", "pair4", "pair4_2"]
    dynamic = build_dataset(opts(root, testing_dir="pair1,pair4"), "train")
    assert dynamic.scenes == ["pair11", "pair1_2", "pair4_2", "pair5"]


def test_cache_is_bounded(tree):
    ds = build_dataset(opts(tree, testing_dir="pair10"), "test")
    ds.cache_bytes = 3 * H * W * 3
    ds.cache.max_bytes = ds.cache_bytes
    for i in range(10):
        ds[i]
    assert len(ds.cache) == 3
    off = build_dataset(opts(tree, testing_dir="pair10", cache_data=False), "test")
    off[0]
    assert len(off.cache) == 0
    assert torch.equal(off[7]["LQs"], ds[7]["LQs"])


def test_short_clip_is_clamped(tmp_path):
    root = make_tree(tmp_path, {"a": 3, "b": 5})
    ds = build_dataset(opts(root, testing_dir="a"), "test")
    assert ds.window("a", 0) == [2, 2, 0, 1, 2]
    assert ds[0]["LQs"].shape == (5, 3, H, W)


# ---------------------------------------------------------------- bad input


def test_missing_root_names_path_and_option(tmp_path):
    make_tree(tmp_path, {"a": 5})
    with pytest.raises(UserError, match=r"nowhere.*datasets\.test\.dataroot_LQ"):
        build_dataset(opts(tmp_path, lq="nowhere"), "test")
    with pytest.raises(UserError, match=r"datasets\.train\.dataroot_GT"):
        build_dataset(opts(tmp_path, dataroot_GT=str(tmp_path / "GTX")), "train")


def test_scene_lists_differ(tmp_path):
    root = make_tree(tmp_path, {"a": 5, "b": 5})
    shutil.rmtree(root / "input" / "b")
    os.makedirs(root / "input" / "c")
    with pytest.raises(UserError, match=r"only in GT: b; only in LQ: c"):
        build_dataset(opts(root), "val")


def test_frame_counts_differ(tmp_path):
    root = make_tree(tmp_path, {"a": 5, "b": 5})
    os.remove(root / "input" / "b" / "00004.npy")
    with pytest.raises(UserError, match=r"scene b has 5 GT frames.*but 4 LQ frames"):
        build_dataset(opts(root, testing_dir="a"), "train")


def test_empty_scene(tmp_path):
    root = make_tree(tmp_path, {"a": 5})
    os.makedirs(root / "GT" / "b")
    os.makedirs(root / "input" / "b")
    with pytest.raises(UserError, match=r"scene b has no frames"):
        build_dataset(opts(root), "val")


def test_unknown_testing_dir_scene(tree):
    with pytest.raises(UserError, match=r"testing_dir.*pair99"):
        build_dataset(opts(tree, testing_dir="pair1,pair99"), "train")
    with pytest.raises(UserError, match=r"pair77"):
        build_dataset(opts(tree, split="static", testing_dir="pair77"), "test")


def check(block, phase="train", is_train=True):
    """Validate ``block`` as the options of a run (where dataset options are checked, before any dataset is built)."""
    opt = {"name": "t", "datasets": {phase: block}}
    if is_train:
        opt["train"] = {"niter": 1, "T_period": [1]}
    return options.validate(opt, source="t.yml", is_train=is_train)


def test_gt_size_too_large(tree):
    with pytest.raises(UserError, match=r"datasets\.train\.GT_size 40"):
        check(opts(tree, testing_dir="pair2", GT_size=40, train_size=[48, 32]))
    with pytest.raises(UserError, match=r"datasets\.train\.GT_size 48 is larger than the frames \(48x32"):
        check(opts(tree, testing_dir="pair2", GT_size=48, train_size=[48, 32]))
    ds = build_dataset(opts(tree, testing_dir="pair2", GT_size=40), "train")
    with pytest.raises(UserError, match=r"datasets\.train\.GT_size 40 is larger than frame .*00000.npy"):
        ds[0]


def test_frames_of_different_sizes(tmp_path):
    root = make_tree(tmp_path, {"a": 5, "b": 5})
    np.save(root / "input" / "b" / "00001.npy", np.zeros((H + 2, W, 3), np.uint8))
    ds = build_dataset(opts(root, testing_dir="b"), "test")
    with pytest.raises(UserError, match=r"differ in size.*00001.npy is 48x34"):
        ds[0]
    with pytest.raises(UserError, match=r"differ in size"):
        ds.load_scene("b")
    train = build_dataset(opts(root, testing_dir="a"), "train")
    with pytest.raises(UserError, match=r"differ in size"):
        train[0]


def test_corrupt_frame_in_dataset(tmp_path):
    root = make_tree(tmp_path, {"a": 5, "b": 5})
    (root / "GT" / "b" / "00002.npy").write_bytes(b"not a numpy file")
    ds = build_dataset(opts(root, testing_dir="b"), "test")
    with pytest.raises(UserError, match=r"00002.npy"):
        ds[2]
    train = build_dataset(opts(root, testing_dir="a"), "train")
    with pytest.raises(UserError, match=r"00002.npy"):
        train[2]


def test_bad_options(tree):
    # Dataset option values are checked when the options load, naming the file, the key and the value.
    with pytest.raises(UserError, match=r"t.yml: datasets\.train\.padding is 'zero'; allowed: new_info"):
        check(opts(tree, padding="zero"))
    with pytest.raises(UserError, match=r"datasets\.train\.train_size is \[960\]; allowed: \[W, H\]"):
        check(opts(tree, train_size=[960]))
    with pytest.raises(UserError, match=r"datasets\.val\.split is 'weird'; allowed: dynamic, static"):
        check(opts(tree, split="weird"), "val", is_train=False)
    with pytest.raises(UserError, match=r"needs `type`"):
        check({"dataroot_GT": str(tree / "GT"), "dataroot_LQ": str(tree / "input")})
    with pytest.raises(UserError, match=r"datasets\.test\.test_frames is -1; allowed: an integer >= 0, or null"):
        check(opts(tree, test_frames=-1), "test", is_train=False)
    with pytest.raises(UserError, match=r"datasets\.test\.N_frames is 4; allowed: an odd integer >= 1"):
        check(opts(tree, N_frames=4), "test", is_train=False)
    assert check(opts(tree), "test", is_train=False)["datasets"]["test"]["padding"] == "new_info"
    with pytest.raises(UserError, match=r"nothing to train on"):
        build_dataset(opts(tree, testing_dir="pair1,pair2,pair3,pair10"), "train")
