"""DataLoaders: global batch split, distributed splitting for training and evaluation, worker loading."""

import os

import numpy as np
import pytest
import torch

from sdsd import options
from sdsd.data import build_dataloader, build_dataset
from sdsd.errors import UserError

H, W = 32, 48


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("GT", "input"):
        for scene, count in {"a": 9, "b": 7, "c": 5}.items():
            os.makedirs(tmp_path / sub / scene)
            for i in range(count):
                np.save(tmp_path / sub / scene / f"{i:04d}.npy", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return tmp_path


def opts(root, **kw):
    base = {"mode": "video_samesize", "dataroot_GT": str(root / "GT"), "dataroot_LQ": str(root / "input"),
            "N_frames": 5, "padding": "new_info", "GT_size": 16, "batch_size": 4, "n_workers": 0,
            "use_shuffle": True, "testing_dir": "c"}
    base.update(kw)
    return base


def test_train_global_batch_is_split(root):
    opt = opts(root)
    ds = build_dataset(opt, "train")
    assert len(ds) == 16
    seen = []
    for rank in range(2):
        loader, sampler = build_dataloader(ds, opt, "train", rank=rank, world_size=2, seed=5)
        sampler.set_epoch(0)
        batches = list(loader)
        assert all(b["LQs"].shape == (2, 5, 3, 16, 16) and b["GT"].shape == (2, 3, 16, 16) for b in batches)
        assert len(batches) == 4
        seen.append([k for b in batches for k in b["key"]])
    assert not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 16


def test_epoch_changes_order_and_drop_last(root):
    opt = opts(root, batch_size=6)
    ds = build_dataset(opt, "train")
    loader, sampler = build_dataloader(ds, opt, "train", seed=1)
    sampler.set_epoch(0)
    first = [k for b in loader for k in b["key"]]
    sampler.set_epoch(1)
    second = [k for b in loader for k in b["key"]]
    assert len(first) == len(second) == 12  # 16 samples, batches of 6, the incomplete one dropped
    assert first != second


def test_batch_not_divisible(root, monkeypatch):
    # The options refuse it when they load (WORLD_SIZE is set by torchrun before), before any loader is built.
    opt = opts(root, batch_size=5)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"datasets\.train\.batch_size 5.*divisible by the 2 processes"):
        options.validate({"name": "t", "datasets": {"train": opt}, "train": {"niter": 1, "T_period": [1]}},
                         is_train=True)
    monkeypatch.delenv("WORLD_SIZE")
    ds = build_dataset(opt, "train")
    with pytest.raises(UserError, match=r"fewer than one batch of 32"):
        build_dataloader(ds, opts(root, batch_size=32), "train")


def test_eval_split_without_duplicates(root):
    opt = opts(root, testing_dir="a,b")
    ds = build_dataset(opt, "val")
    assert len(ds) == 16
    got = []
    for rank in range(3):
        loader, sampler = build_dataloader(ds, opt, "val", rank=rank, world_size=3)
        items = [(b["scene"][0], int(b["index"][0])) for b in loader]
        assert all(b["LQs"].shape == (1, 5, 3, H, W) for b in [next(iter(loader))])
        got.extend(items)
    assert len(got) == 16 and len(set(got)) == 16


def test_workers_load_and_differ_per_rank(root):
    opt = opts(root, n_workers=1)
    ds = build_dataset(opt, "train")
    crops = []
    for rank in range(2):
        loader, sampler = build_dataloader(ds, opt, "train", rank=0, world_size=1, seed=rank)
        sampler.set_epoch(0)
        batch = next(iter(loader))
        assert batch["LQs"].shape == (4, 5, 3, 16, 16)
        crops.append(batch)
    again, sampler = build_dataloader(ds, opt, "train", seed=0)
    sampler.set_epoch(0)
    repeat = next(iter(again))
    assert torch.equal(repeat["LQs"], crops[0]["LQs"])  # same seed -> same crops and flips
    assert not torch.equal(crops[1]["LQs"], crops[0]["LQs"])
