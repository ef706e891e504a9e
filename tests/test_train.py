"""Training in-process on tiny generated data: layout, TensorBoard, validation, resume, pretrain and bad input.

The helpers here (``make_data``, ``make_options``, ``write_options``) are shared by the other ``test_train_*`` files.
"""

import copy
import os

import numpy as np
import pytest
import torch
import yaml

from sdsd import options
from sdsd.errors import UserError
from sdsd.training import NonFiniteLossError, train
from sdsd.training.checkpoint import all_files_loadable

SIZE = 32  # frames are SIZE x SIZE, so a GT_size of SIZE crops deterministically


def make_data(root, scenes=4, frames=6, seed=0):
    """Write GT/pairK and input/pairK trees of random BGR uint8 .npy frames; the last scene is the test scene."""
    rng = np.random.default_rng(seed)
    for s in range(scenes):
        gt = rng.integers(0, 256, (frames, SIZE, SIZE, 3), dtype=np.uint8)
        lq = (gt // 6 + rng.integers(0, 4, gt.shape)).astype(np.uint8)
        for sub, arr in (("GT", gt), ("input", lq)):
            folder = os.path.join(root, "data", sub, f"pair{s + 1}")
            os.makedirs(folder, exist_ok=True)
            for i, frame in enumerate(arr):
                np.save(os.path.join(folder, f"{i:04d}.npy"), frame)
    return f"pair{scenes}"


def make_options(root, name="tiny", niter=4, **train):
    """A tiny but complete option dict in the published shape (deterministic data: no flips, full-frame crops)."""
    test_scene = make_data(root) if not os.path.isdir(os.path.join(root, "data")) else "pair4"
    data = {"dataroot_GT": f"{root}/data/GT", "dataroot_LQ": f"{root}/data/input", "N_frames": 5, "n_workers": 0,
            "padding": "new_info"}
    opt = {
        "name": name, "use_tb_logger": True, "gpu_ids": [0],
        "datasets": {
            "train": {**data, "name": "tiny", "mode": "video_samesize", "testing_dir": test_scene, "batch_size": 4,
                      "GT_size": SIZE, "LQ_size": SIZE, "use_flip": False, "use_rot": False, "use_shuffle": True},
            "val": {**data, "name": "tiny-val", "mode": "video_samesize"},
        },
        "network_G": {"which_model_G": "denoise_illumination_enhance", "nf": 8, "nframes": 5, "groups": 2,
                      "front_RBs": 1, "back_RBs": 1, "w_TSA": True},
        "path": {"root": str(root), "strict_load": True},
        "train": {"lr_G": 4e-4, "lr_scheme": "CosineAnnealingLR_Restart", "niter": niter, "ft_tsa_only": 2,
                  "T_period": [3, 6], "restarts": [3], "restart_weights": [1], "eta_min": 1e-7,
                  "pixel_criterion": "cb", "pixel_weight": 1.0, "val_freq": 2, "manual_seed": 5, **train},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 2},
    }
    return opt


def write_options(root, opt, filename="tiny.yml"):
    path = os.path.join(root, filename)
    with open(path, "w") as f:
        yaml.safe_dump(opt, f)
    return path


def load(root, opt, overrides=None):
    return options.load(write_options(root, opt), overrides, is_train=True)


def test_train_writes_published_layout_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(load(tmp_path, make_options(tmp_path, niter=4)), progress=False)
    exp = tmp_path / "experiments" / "tiny"
    assert result["iteration"] == 4 and result["world_size"] == 1
    # Each weights file has its training-statistics sidecar beside it (sdsd.exposure).
    assert sorted(os.listdir(exp / "models")) == ["2_G.json", "2_G.pth", "4_G.json", "4_G.pth", "latest_G.json",
                                                  "latest_G.pth"]
    assert sorted(os.listdir(exp / "training_state")) == ["2.state", "4.state"]
    assert sorted(os.listdir(exp / "val_images")) == ["2.png", "4.png"]
    assert all_files_loadable(str(exp)) == []
    weights = torch.load(exp / "models" / "latest_G.pth", weights_only=True)
    assert "conv_first_1.weight" in weights and not any(k.startswith("module.") for k in weights)
    state = torch.load(exp / "training_state" / "4.state", weights_only=True)
    assert state["iter"] == 4 and set(state["rng"][0]) >= {"torch", "numpy", "python"}
    log = open(result["log_file"]).read()
    assert "world size 1" in log and "resolved options" in log and "PSNR" in log
    assert np.isfinite(result["val"]["psnr"]) and result["val"]["frames"] == 6

    events = EventAccumulator(str(tmp_path / "tb_logger" / "tiny"), size_guidance={"images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/l_rec", "loss/l_ill", "loss/l_noise", "loss/total", "lr", "lr_tsa_fusion", "time/iteration_s",
            "val/psnr", "val/ssim"} <= tags
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2, 3, 4]
    lrs = [e.value for e in events.Scalars("lr")]
    assert lrs[0] == 0 and lrs[3] == pytest.approx(4e-4)  # ft_tsa_only: 2 silences group 0; restart at 3 + 1
    assert events.Tags()["images"] == ["val/input_output_illumination_gt"]


def test_existing_experiment_is_archived_and_auto_resume_continues(tmp_path):
    opt = make_options(tmp_path, niter=2)
    first = train(load(tmp_path, opt), progress=False)
    second = train(load(tmp_path, opt), progress=False)  # same name again: the old folder is moved aside
    archived = [d for d in os.listdir(tmp_path / "experiments") if d.startswith("tiny_archived_")]
    assert len(archived) == 1 and os.path.isfile(tmp_path / "experiments" / archived[0] / "models" / "2_G.pth")
    assert second["iteration"] == 2 and first["latest_G"] == second["latest_G"]

    third = train(load(tmp_path, opt, ["train.niter=4"]), auto_resume=True, progress=False)
    assert third["iteration"] == 4
    assert len([d for d in os.listdir(tmp_path / "experiments") if "archived" in d]) == 1
    assert "resumed from" in open(third["log_file"]).read()


def test_resume_at_epoch_boundary_equals_uninterrupted_run(tmp_path):
    opt = make_options(tmp_path, niter=8)  # 18 training windows / batch 4 = 4 iterations per epoch
    opt["datasets"].pop("val")
    opt["logger"]["save_checkpoint_freq"] = 4
    whole = torch.load(train(load(tmp_path, opt), progress=False)["latest_G"], weights_only=True)
    opt["name"] = "split"
    train(load(tmp_path, opt, ["train.niter=4"]), progress=False)
    state = tmp_path / "experiments" / "split" / "training_state" / "4.state"
    assert torch.load(state, weights_only=True)["epoch"] == 1  # written after the epoch's last batch
    resumed = train(load(tmp_path, opt, [f"path.resume_state={state}"]), progress=False)
    parts = torch.load(resumed["latest_G"], weights_only=True)
    assert resumed["iteration"] == 8
    assert max((whole[k] - parts[k]).abs().max().item() for k in whole) < 1e-6


def test_pretrain_model_and_mismatched_resume(tmp_path):
    opt = make_options(tmp_path, niter=2)
    opt["datasets"].pop("val")
    latest = train(load(tmp_path, opt), progress=False)["latest_G"]
    state = str(tmp_path / "experiments" / "tiny" / "training_state" / "2.state")

    other = copy.deepcopy(opt)
    other["name"] = "other"
    other["network_G"]["nf"] = 16
    with pytest.raises(UserError, match=r"network_G.nf=8 .* network_G.nf=16"):
        train(load(tmp_path, other, [f"path.resume_state={state}"]), progress=False)
    with pytest.raises(UserError, match="shape mismatch"):
        train(load(tmp_path, other, [f"path.pretrain_model_G={latest}"]), progress=False)

    fine = copy.deepcopy(opt)
    fine["name"] = "fine"
    out = train(load(tmp_path, fine, [f"path.pretrain_model_G={latest}", "train.lr_G=0", "train.niter=1"]),
                progress=False)
    before, after = (torch.load(p, weights_only=True) for p in (latest, out["latest_G"]))
    assert all(torch.equal(before[k], after[k]) for k in before)  # lr 0: the loaded weights come out unchanged


def test_nan_loss_stops_or_skips(tmp_path):
    # Option files refuse an infinite weight; this finite one overflows float32 once it scales the loss.
    opt = make_options(tmp_path, niter=2, pixel_weight=3e38)
    opt["datasets"].pop("val")
    with pytest.raises(NonFiniteLossError, match="iteration 1: the loss is not finite"):
        train(load(tmp_path, opt), progress=False)
    skipped = train(load(tmp_path, opt, ["train.nan_policy=skip"]), progress=False)
    assert skipped["iteration"] == 2
    assert "non-finite loss" in open(skipped["log_file"]).read()


def test_training_without_the_noisy_copy(tmp_path, monkeypatch):
    """train.noisy_copy: false never builds the copy, logs no noise term and still learns (the loss falls)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import sdsd.training.trainer as trainer

    def no_copy(lq):
        raise AssertionError("the noisy copy was built")

    monkeypatch.setattr(trainer, "noisy_copy", no_copy)
    opt = make_options(tmp_path, niter=6, noisy_copy=False, noise_weight=0, ft_tsa_only=0, lr_G=2e-3)
    opt["datasets"].pop("val")
    result = train(load(tmp_path, opt), progress=False)
    assert result["iteration"] == 6
    events = EventAccumulator(str(tmp_path / "tb_logger" / "tiny")).Reload()
    assert [e.value for e in events.Scalars("loss/l_noise")] == [0.0] * 6
    rec = [e.value for e in events.Scalars("loss/l_rec")]
    assert rec[-1] < rec[0]


@pytest.mark.parametrize("override, message", [
    ("datasets.train.batch_size=3", "batch_size 3 is the global batch"),  # not divisible (world 1: must be >= 1)
    ("datasets.train.GT_size=64", "GT_size 64 is larger than frame"),
    ("datasets.train.GT_size=40", "GT_size 40 must be a multiple of 16"),
    ("network_G.w_TSA=false", "train.ft_tsa_only=2 needs network_G.w_TSA: true"),
    ("train.lr_scheme=Cosine", "train.lr_scheme is 'Cosine'; allowed: CosineAnnealingLR_Restart"),
    ("train.pixel_criterion=l2", "train.pixel_criterion is 'l2'; allowed: cb"),
    ("train.amp=fp8", r"train.amp is 'fp8'; allowed: fp32, bf16, fp16 \(none = fp32\)"),
    ("train.restarts=[3, 5]", "train.restart_weights has 1 entries for 2 train.restarts"),
    ("path.resume_state=nowhere.state", "path.resume_state: file not found"),
])
def test_bad_options_fail_before_work(tmp_path, monkeypatch, override, message):
    opt = make_options(tmp_path)
    if "batch_size=3" in override:
        # torchrun sets WORLD_SIZE before the options are loaded; the global batch must split among the processes.
        monkeypatch.setenv("WORLD_SIZE", "2")
        with pytest.raises(UserError, match=message):
            load(tmp_path, opt, [override])
        with pytest.raises(UserError, match=message):
            options.check_training(options.load(write_options(tmp_path, opt), [override]), world_size=2)
        return
    with pytest.raises(UserError, match=message):
        train(load(tmp_path, opt, [override]), progress=False)
    assert not os.path.exists(tmp_path / "experiments" / "tiny" / "models" / "2_G.pth")


@pytest.mark.parametrize("average", ["scene", "frame"])
def test_validation_psnr_equals_quantitative_test(tmp_path, average):
    """Validation runs the quantitative test's engine and scoring: same weights and scenes, the same numbers."""
    from sdsd.evaluation import quantitative

    opt = make_options(tmp_path, niter=2, val_freq=2)
    opt["protocol"] = {"average": average}
    result = train(load(tmp_path, opt), progress=False)
    data = opt["datasets"]["val"]
    test_opt = {"name": "check", "gpu_ids": [], "network_G": opt["network_G"], "protocol": {"average": average},
                "datasets": {"test": {**data, "mode": "video_samesize1", "testing_dir": "pair4"}},
                "path": {"root": str(tmp_path), "pretrain_model_G": result["latest_G"]}}
    path = write_options(tmp_path, test_opt, "test.yml")
    metrics = quantitative.main(["-opt", path, "--no-progress"])
    assert metrics["frames"] and len(metrics["frames"]) == result["val"]["frames"]
    assert result["val"]["psnr"] == metrics["psnr"] and result["val"]["ssim"] == metrics["ssim"]


def test_training_log_warns_about_diverging_offsets(tmp_path):
    import dcn
    from sdsd import build_network

    opt = make_options(tmp_path, niter=1)
    opt["datasets"].pop("val")
    net = build_network({k: v for k, v in opt["network_G"].items() if k != "which_model_G"})
    name = next(n for n, m in net.named_modules() if isinstance(m, dcn.ModulatedDeformConvPack))
    with torch.no_grad():
        dict(net.named_modules())[name].conv_offset_mask.bias.fill_(400.0)  # a network whose alignment diverged
    weights = tmp_path / "diverged_G.pth"
    torch.save(net.state_dict(), weights)
    out = train(load(tmp_path, opt, [f"path.pretrain_model_G={weights}", "train.lr_G=0"]), progress=False)
    with open(out["log_file"], encoding="utf-8") as fh:
        lines = [line for line in fh if "offset mean" in line]
    assert len(lines) == 1 and f"deformable conv {name}: offset mean reached 400.0 px" in lines[0], lines
