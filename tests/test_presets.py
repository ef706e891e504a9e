"""Protocol presets: each preset scores exactly the frames, and gives exactly the numbers, of its paper's rules.

The synthetic static-SDSD tree has ``_2`` twins, a look-alike folder that the papers' literal rule makes a test
folder (``pair1_20``: its part before the first ``_2`` is ``pair1``), one that it does not (``pair12``), a test
folder longer than 30 frames and frames stored at another size than they are scored at. The reference numbers are
computed here independently, in plain numpy, the way each paper's released test code does (frame lists from
sorted folders, ``new_info`` windows, the resize, rounding or not, the metric, the averaging); the network is the
real tiny SDSD-Net, run as a plain forward on the reference windows.
"""

from __future__ import annotations

import glob
import json
import math
import os

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from evaluation_helpers import PUBLISHED_TEST, TINY_NET, darken, save_tiny_checkpoint, set_args, write_frames
from skimage import img_as_ubyte

import sdsd
from sdsd import options
from sdsd.data import build_dataset
from sdsd.errors import UserError
from sdsd.evaluation import quantitative
from sdsd.evaluation.common import check_protocol
from sdsd.metrics import calculate_psnr_float, gt_mean_scale, gt_mean_scale_retinexformer, score_frame
from sdsd.options.presets import PRESETS

IN_SDSD = os.path.join(PUBLISHED_TEST, "test_in_sdsd.yml")
STORED = (36, 54)  # H, W on disk
SCORED = [48, 32]  # W, H after the resize (cv2.resize of the uint8 frame, as in both papers)
FOLDERS = {"pair1": 33, "pair1_2": 5, "pair1_20": 5, "pair12": 5, "pair4": 6, "pair4_2": 5, "pair5": 5}
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "astronaut", "coffee"]
TESTING = "pair1,pair4"


def drifting_clip(photo: str, n: int, seed: int) -> list[np.ndarray]:
    """``n`` BGR uint8 frames at the stored size: a window moving one pixel per frame over a photograph."""
    h, w = STORED
    img = cv2.resize(getattr(skimage.data, photo)()[..., :3], (w + n + 8, h + n + 8), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    y, x = (int(v) for v in rng.integers(0, 8, 2))
    return [np.ascontiguousarray(img[y + k: y + k + h, x + k: x + k + w, ::-1]) for k in range(n)]


@pytest.fixture(scope="module")
def static_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("static")
    for k, ((folder, n), photo) in enumerate(zip(FOLDERS.items(), PHOTOS)):
        gt = drifting_clip(photo, n, seed=k)
        write_frames(str(root / "GT" / folder), gt)
        write_frames(str(root / "input" / folder), [darken(f, seed=50 * k + j) for j, f in enumerate(gt)])
    return {"root": root, "checkpoint": save_tiny_checkpoint(str(root / "tiny_G.pth"), seed=3)}


def run_overrides(tree, results_root) -> list[str]:
    items = [f"datasets.test.dataroot_GT={tree['root'] / 'GT'}", f"datasets.test.dataroot_LQ={tree['root'] / 'input'}",
             f"datasets.test.testing_dir={TESTING}", f"datasets.test.train_size={SCORED}",
             f"path.results_root={results_root}", f"path.pretrain_model_G={tree['checkpoint']}", "gpu_ids=[]",
             "conv_backend=nchw"]
    return items + [f"network_G.{k}={v}" for k, v in TINY_NET.items()]


# -- the papers' rules, written out independently -------------------------------------------------------------------


def paper_folders(root, testing: str, rule: str) -> list[str]:
    """Test folders in the papers' order (sorted). ``static``: the name or its part before the first ``_2`` is
    listed (SNR-Aware and Retinexformer); ``dynamic``: the name is listed (SDSD-Net)."""
    listed = testing.split(",")
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(root, "GT", "*")))
    if rule == "static":
        return [n for n in names if n in listed or n.split("_2")[0] in listed]
    return [n for n in names if n in listed]


def read_rgb(path: str) -> torch.Tensor:
    """np.load, cv2.resize of the uint8 array to [W, H], float32 / 255, BGR -> RGB, C x H x W."""
    img = cv2.resize(np.load(path), (SCORED[0], SCORED[1])).astype(np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)))


def new_info_window(centre: int, n: int) -> list[int]:
    """The 5-frame ``new_info`` window of ``centre`` among ``n`` frames (every folder here has at least 5)."""
    out = []
    for j in range(centre - 2, centre + 3):
        if j < 0:
            j = centre + 2 - j
        elif j > n - 1:
            j = centre - 2 - (j - (n - 1))
        out.append(j)
    return out


def enhance_folder(net, root, folder: str, cap: int | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The outputs and GT frames of a folder: sorted files, the first ``cap`` (all for None), windows within them."""
    lq_paths = sorted(glob.glob(os.path.join(root, "input", folder, "*")))[:cap]
    gt_paths = sorted(glob.glob(os.path.join(root, "GT", folder, "*")))[:cap]
    lq = torch.stack([read_rgb(p) for p in lq_paths])
    windows = torch.stack([lq[new_info_window(c, len(lq_paths))] for c in range(len(lq_paths))])
    with torch.inference_mode():
        enhanced = net(windows)[0]
    return list(enhanced), [read_rgb(p) for p in gt_paths]


def uint8_psnr(out: torch.Tensor, gt: torch.Tensor) -> float:
    """SDSD-Net / SNR-Aware: clamp, x255, round, uint8; 20 log10(255 / rmse) in float64 over all channels."""
    def to_uint8(t):
        return (t.clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)

    diff = to_uint8(out).astype(np.float64) - to_uint8(gt).astype(np.float64)
    mse = np.mean(diff ** 2)
    return math.inf if mse == 0 else 20 * math.log10(255.0 / math.sqrt(mse))


def matlab_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB-style SSIM of two uint8 H x W x 3 images: 2-D Gaussian window with filter2D per channel, averaged."""
    k = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(k, k.transpose())
    values = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)

        def f(z):
            return cv2.filter2D(z, -1, window)[5:-5, 5:-5]

        mx, my = f(x), f(y)
        sx, sy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        values.append((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sx + sy + c2))).mean())
    return float(np.array(values).mean())


def swapped_grey_mean(x: np.ndarray) -> np.float32:
    """Mean of OpenCV's BGR -> grey applied to an RGB array: channel 0 (red) weighted 0.114, channel 2 (blue) 0.299."""
    return (np.float32(0.114) * x[..., 0] + np.float32(0.587) * x[..., 1] + np.float32(0.299) * x[..., 2]).mean()


def retinexformer_scores(out: torch.Tensor, gt: torch.Tensor, gt_mean: bool = False) -> tuple[float, float]:
    """Retinexformer: float32 H x W x 3 arrays from the tensors, output clamped, optional GT-mean (swapped
    weights); PSNR 10 log10(1 / mse) with numpy's float32 mean, 100 when equal; SSIM on img_as_ubyte."""
    target = gt.contiguous().permute(1, 2, 0).numpy()
    restored = torch.clamp(out, 0, 1).permute(1, 2, 0).numpy()
    if gt_mean:
        restored = np.clip(restored * (swapped_grey_mean(target) / swapped_grey_mean(restored)), 0, 1)
    mse = np.mean((target - restored) ** 2)
    psnr = 100.0 if mse == 0 else 10 * math.log10(1 / mse)
    return psnr, matlab_ssim(img_as_ubyte(target), img_as_ubyte(restored))


def reference(tree, preset: str) -> dict:
    """Frame list, per-frame and final numbers of ``preset``'s paper on the tree, computed from its rules."""
    net = sdsd.build_network({"which_model_G": "denoise_illumination_enhance", **TINY_NET}).eval()
    net.load_state_dict(torch.load(tree["checkpoint"], weights_only=True))
    rule = "dynamic" if preset == "sdsd" else "static"
    cap = None if preset == "retinexformer" else 30
    frames = []
    for folder in paper_folders(tree["root"], TESTING, rule):
        outs, gts = enhance_folder(net, tree["root"], folder, cap)
        for i, (out, gt) in enumerate(zip(outs, gts)):
            if preset == "retinexformer":
                psnr, ssim = retinexformer_scores(out, gt)
            else:
                a = (out.clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
                b = (gt.numpy().transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
                psnr, ssim = uint8_psnr(out, gt), (None if preset == "snr-aware" else matlab_ssim(a, b))
            frames.append({"scene": folder, "index": i, "psnr": psnr, "ssim": ssim, "out": out, "gt": gt})
    folders = sorted({f["scene"] for f in frames})
    if preset == "retinexformer":  # np.mean over every frame
        psnr, ssim = np.mean([f["psnr"] for f in frames]), np.mean([f["ssim"] for f in frames])
    else:  # sum of per-folder means over the number of folders (SNR-Aware's logged result; SDSD-Net's scenes)
        means = [np.mean([f["psnr"] for f in frames if f["scene"] == s]) for s in folders]
        psnr = sum(means) / len(means)
        ssim = None if preset == "snr-aware" else np.mean(
            [np.mean([f["ssim"] for f in frames if f["scene"] == s]) for s in folders])
    return {"frames": frames, "psnr": psnr, "ssim": ssim}


# -- each preset against its paper ----------------------------------------------------------------------------------

RUNS = {
    "sdsd": (IN_SDSD, []),
    "snr-aware": (os.path.join(PUBLISHED_TEST, "test_in_sdsd_snr_aware.yml"), []),
    "retinexformer": (IN_SDSD, ["--protocol", "retinexformer"]),
}
EXPECTED_FRAMES = {
    "sdsd": {"pair1": 30, "pair4": 6},
    "snr-aware": {"pair1": 30, "pair1_2": 5, "pair1_20": 5, "pair4": 6, "pair4_2": 5},
    "retinexformer": {"pair1": 33, "pair1_2": 5, "pair1_20": 5, "pair4": 6, "pair4_2": 5},
}


@pytest.fixture(scope="module")
def preset_runs(static_tree, tmp_path_factory):
    runs = {}
    for preset, (path, flags) in RUNS.items():
        out = tmp_path_factory.mktemp(preset)
        quantitative.main(["-opt", path, "--no-progress", *flags, *set_args(run_overrides(static_tree, str(out)))])
        with open(out / "metrics.json") as f:
            runs[preset] = json.load(f)
        runs[preset]["csv"] = (out / "metrics.csv").read_text().splitlines()
    return runs


@pytest.mark.parametrize("preset", list(RUNS))
def test_preset_scores_the_papers_frames_with_the_papers_numbers(preset, preset_runs, static_tree):
    data = preset_runs[preset]
    ref = reference(static_tree, preset)
    assert {s: row["frames"] for s, row in data["scenes"].items()} == EXPECTED_FRAMES[preset]
    assert [(r["scene"], r["index"]) for r in data["frames"]] == [(f["scene"], f["index"]) for f in ref["frames"]]
    for got, want in zip(data["frames"], ref["frames"]):
        assert got["psnr"] == pytest.approx(want["psnr"], abs=1e-4), (got["scene"], got["index"])
        if want["ssim"] is None:
            assert got["ssim"] is None
        else:
            assert got["ssim"] == pytest.approx(want["ssim"], abs=1e-5), (got["scene"], got["index"])
    assert data["psnr"] == pytest.approx(ref["psnr"], abs=1e-5)
    if ref["ssim"] is None:
        assert data["ssim"] is None and all(row["ssim"] is None for row in data["scenes"].values())
        assert all(line.endswith(",") for line in data["csv"][1:])  # the CSV leaves the SSIM cell empty
    else:
        assert data["ssim"] == pytest.approx(ref["ssim"], abs=1e-6)
    # The JSON records the preset and every resolved setting; the explicit resize is listed as set apart.
    protocol = data["protocol"]
    settings = PRESETS[preset]
    assert protocol["preset"] == preset
    assert {k: protocol[k] for k in settings.protocol} == settings.protocol
    assert protocol["split"] == settings.split and protocol["test_frames"] == settings.test_frames
    assert protocol["train_size"] == SCORED
    expected_overrides = {"train_size": SCORED} if settings.resize else {}
    if preset == "sdsd":  # test_in_sdsd.yml says nothing of the split: the dynamic split, as published
        assert protocol["split"] == "dynamic"
    assert protocol["overrides"] == expected_overrides


def test_float_and_rounded_psnr_really_differ(preset_runs):
    """On the same frames (the first 30 of pair1, windows within 30 frames), the float PSNR is not the rounded one."""
    snr = {(r["scene"], r["index"]): r["psnr"] for r in preset_runs["snr-aware"]["frames"]}
    retinex = {(r["scene"], r["index"]): r["psnr"] for r in preset_runs["retinexformer"]["frames"]}
    same_window = [("pair1", i) for i in range(28)] + [("pair4", i) for i in range(6)]
    differences = [abs(snr[k] - retinex[k]) for k in same_window]
    assert min(differences) > 1e-6
    # Frames 28 and 29 of pair1 have other windows once the 30-frame cap is gone; frames 30-32 only exist there.
    assert ("pair1", 32) in retinex and ("pair1", 30) not in snr


def test_float_psnr_is_bit_identical_to_retinexformers_formula(static_tree):
    ref = reference(static_tree, "retinexformer")
    for frame in ref["frames"][:6]:
        psnr, ssim = score_frame(frame["out"], frame["gt"], psnr="float")
        assert psnr == frame["psnr"]  # same float32 mean, same summation order
        assert ssim == pytest.approx(frame["ssim"], abs=1e-9)  # separable vs 2-D filter only
        assert calculate_psnr_float(np.ones((4, 4, 3), np.float32), np.ones((4, 4, 3), np.float32)) == 100.0


def test_retinexformer_gt_mean_weights(static_tree):
    """Retinexformer's GT-mean reads RGB as BGR: red weighted 0.114, blue 0.299 (not BT.601's 0.299 and 0.114)."""
    ref = reference(static_tree, "sdsd")
    for frame in ref["frames"][:4]:
        want_psnr, want_ssim = retinexformer_scores(frame["out"], frame["gt"], gt_mean=True)
        psnr, ssim = score_frame(frame["out"], frame["gt"], gt_mean="retinexformer", psnr="float")
        assert psnr == pytest.approx(want_psnr, abs=1e-4) and ssim == pytest.approx(want_ssim, abs=1e-4)
    # A reddish output and a bluish GT: the two rules scale by clearly different factors, each by its own weights.
    out = torch.zeros(3, 16, 16)
    out[0], out[1], out[2] = 0.6, 0.2, 0.1
    gt = torch.zeros(3, 16, 16)
    gt[0], gt[1], gt[2] = 0.1, 0.3, 0.7
    swapped = (0.114 * 0.1 + 0.587 * 0.3 + 0.299 * 0.7) / (0.114 * 0.6 + 0.587 * 0.2 + 0.299 * 0.1)
    bt601 = (0.299 * 0.1 + 0.587 * 0.3 + 0.114 * 0.7) / (0.299 * 0.6 + 0.587 * 0.2 + 0.114 * 0.1)
    torch.testing.assert_close(gt_mean_scale_retinexformer(out, gt), (out * swapped).clamp(0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(gt_mean_scale(out, gt), (out * bt601).clamp(0, 1), atol=1e-6, rtol=0)
    assert abs(swapped - bt601) > 0.5


# -- what the presets resolve to --------------------------------------------------------------------------------------

SHIPPED = {
    ("snr-aware", "in_sdsd"): ("static", 30, [960, 512]),
    ("snr-aware", "out_sdsd"): ("static", 30, [960, 512]),
    ("snr-aware", "smid"): ("dynamic", 30, None),
    ("retinexformer", "in_sdsd"): ("static", None, [960, 512]),
    ("retinexformer", "out_sdsd"): ("static", None, [960, 512]),
    ("retinexformer", "smid"): ("dynamic", None, [960, 512]),
}


@pytest.mark.parametrize("preset,kind", list(SHIPPED))
def test_shipped_option_files(preset, kind):
    path = os.path.join(PUBLISHED_TEST, f"test_{kind}_{preset.replace('-', '_')}.yml")
    opt = options.load(path)
    block = opt["datasets"]["test"]
    assert (block["split"], block["test_frames"], block["train_size"]) == SHIPPED[(preset, kind)]
    assert check_protocol(opt) == {**PRESETS[preset].protocol, "preset": preset, "self_ensemble": False,
                                   "exposure": "off"}
    if kind != "smid":
        assert "static_np" in block["dataroot_GT"] and block["testing_dir"].count(",") in (5, 9)


def test_explicit_keys_win_over_the_preset(tmp_path):
    opt = options.load(IN_SDSD, ["protocol.preset=retinexformer", "datasets.test.test_frames=30",
                                 "protocol.average=scene", "protocol.gt_mean=true"])
    block = opt["datasets"]["test"]
    assert (block["test_frames"], block["split"], block["train_size"]) == (30, "static", [960, 512])
    assert opt["protocol"]["average"] == "scene" and opt["protocol"]["psnr"] == "float"
    assert opt["protocol"]["gt_mean"] == "retinexformer"  # true is the preset's rule
    # A key written in the file wins too: test_smid.yml resizes to 960x512 even under SNR-Aware's preset.
    assert options.load(os.path.join(PUBLISHED_TEST, "test_smid.yml"),
                        ["protocol.preset=snr-aware"])["datasets"]["test"]["train_size"] == [960, 512]
    # And the default preset changes nothing a file without a preset says (the published protocol).
    plain = options.load(IN_SDSD)
    assert plain["protocol"] == {"preset": "sdsd", "average": "scene", "channel": "rgb", "psnr": "uint8",
                                 "ssim": True, "gt_mean": False, "self_ensemble": False, "exposure": "off",
                                 "temporal": []}
    assert (plain["datasets"]["test"]["split"], plain["datasets"]["test"]["test_frames"]) == ("dynamic", 30)


def test_protocol_argument_is_a_preset_override():
    parser = quantitative.build_parser()
    args = parser.parse_args(["-opt", "x.yml", "--set", "a=1", "--protocol", "snr-aware", "--set", "b=2"])
    assert args.overrides == ["a=1", "protocol.preset=snr-aware", "b=2"]
    assert parser.parse_args(["-opt", "x.yml"]).overrides == []  # the default list did not grow
    with pytest.raises(SystemExit):
        parser.parse_args(["-opt", "x.yml", "--protocol", "snr"])


def test_float_psnr_needs_rgb():
    with pytest.raises(UserError, match=r"test_in_sdsd.yml: protocol.psnr is 'float' \(preset retinexformer\) but "
                                        r"protocol.channel is 'y'"):
        options.load(IN_SDSD, ["protocol.preset=retinexformer", "protocol.channel=y"])


def test_presets_on_training_files(tmp_path):
    """split goes to every SDSD block (training holds out the same folders); test_frames and the resize only to
    evaluation blocks; the training files themselves keep the published protocol."""
    train_file = os.path.join(os.path.dirname(PUBLISHED_TEST), "train", "train_in_sdsd.yml")
    opt = options.load(train_file, ["protocol.preset=retinexformer"])
    assert opt["datasets"]["train"]["split"] == "static" and opt["datasets"]["train"]["test_frames"] == 30
    assert opt["datasets"]["val"]["split"] == "static" and opt["datasets"]["val"]["test_frames"] is None
    published = options.load(train_file)
    assert published["protocol"]["preset"] == "sdsd" and published["datasets"]["val"]["split"] == "dynamic"


def test_static_split_rule_for_training_and_testing(static_tree):
    block = {"mode": "video_samesize", "dataroot_GT": str(static_tree["root"] / "GT"), "N_frames": 5,
             "dataroot_LQ": str(static_tree["root"] / "input"), "testing_dir": TESTING, "split": "static"}
    assert build_dataset(block, "test").scenes == ["pair1", "pair1_2", "pair1_20", "pair4", "pair4_2"]
    assert build_dataset(block, "train").scenes == ["pair12", "pair5"]
    with pytest.raises(UserError, match=r"do not exist.*: pair9"):
        build_dataset({**block, "testing_dir": "pair1,pair9"}, "test")


def test_smid_frames_per_preset(tmp_path):
    """SMID: the first 30 LQ frames of each test scene (SNR-Aware, stored size) or all of them (Retinexformer)."""
    ref = drifting_clip("rocket", 1, seed=1)[0]
    write_frames(str(tmp_path / "SMID_Long_np" / "0013"), [np.zeros_like(ref), ref], ["0001.ARW.npy", "0002.npy"])
    write_frames(str(tmp_path / "SMID_LQ_np" / "0013"), [darken(ref, seed=s) for s in range(33)])
    roots = [f"datasets.test.dataroot_GT={tmp_path / 'SMID_Long_np'}",
             f"datasets.test.dataroot_LQ={tmp_path / 'SMID_LQ_np'}", "datasets.test.testing_dir='0013'"]
    for preset, frames, size in (("snr-aware", 30, None), ("retinexformer", 33, (960, 512))):
        opt = options.load(os.path.join(PUBLISHED_TEST, f"test_smid_{preset.replace('-', '_')}.yml"), roots)
        dataset = build_dataset(opt["datasets"]["test"], "test")
        assert dataset.scene_length("0013") == frames and dataset.train_size == size
        assert dataset[0]["GT_path"].endswith("0002.npy")


# -- SSIM switched off: aggregation and reporting ---------------------------------------------------------------------


def test_aggregate_and_table_without_ssim():
    records = [{"scene": "a", "index": 0, "psnr": 20.0, "ssim": None}, {"scene": "b", "index": 0, "psnr": 30.0,
                                                                        "ssim": None}]
    results = quantitative.aggregate(records, ["a", "b"], "scene")
    assert results["psnr"] == 25.0 and results["ssim"] is None and results["scenes"]["a"]["ssim"] is None
    results["protocol"] = {"preset": "snr-aware", "average": "scene", "channel": "rgb", "psnr": "uint8",
                           "ssim": False, "gt_mean": False, "split": "static", "test_frames": 30,
                           "train_size": [960, 512], "overrides": {}}
    table = quantitative.format_table(results)
    assert table.splitlines()[1].split() == ["a", "1", "20.0000", "-"]
    assert "protocol snr-aware: static split, 30 frames per folder, resize 960x512" in table


@pytest.mark.parametrize("preset", ["snr-aware", "retinexformer"])
def test_validation_during_training_follows_the_preset(tmp_path, preset):
    """Validation scores with the same preset as quantitative_test.py: same frames, same numbers."""
    from test_train import load, make_options, write_options

    from sdsd.training import train

    opt = make_options(tmp_path, niter=2, val_freq=2)
    opt["protocol"] = {"preset": preset}
    opt["datasets"]["val"]["train_size"] = None  # explicit: the tiny frames are not resized to the preset's 960x512
    result = train(load(tmp_path, opt), progress=False)
    data = opt["datasets"]["val"]
    test_opt = {"name": "check", "gpu_ids": [], "network_G": opt["network_G"], "protocol": {"preset": preset},
                "datasets": {"test": {**data, "mode": "video_samesize1", "testing_dir": "pair4"}},
                "path": {"root": str(tmp_path), "pretrain_model_G": result["latest_G"]}}
    metrics = quantitative.main(["-opt", write_options(tmp_path, test_opt, "test.yml"), "--no-progress"])
    assert len(metrics["frames"]) == result["val"]["frames"] == 6
    assert result["val"]["psnr"] == metrics["psnr"] and result["val"]["ssim"] == metrics["ssim"]
    assert (metrics["ssim"] is None) == (preset == "snr-aware")


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_leaves_temporal_off_and_may_turn_it_on(preset):
    from sdsd.options.presets import settings

    opt = options.load(IN_SDSD, [f"protocol.preset={preset}"])
    assert "temporal" not in check_protocol(opt)
    assert "temporal" not in settings(check_protocol(opt), "test", opt["datasets"]["test"])
    opt = options.load(IN_SDSD, [f"protocol.preset={preset}", "protocol.temporal=[flicker, warp]"])
    recorded = settings(check_protocol(opt), "test", opt["datasets"]["test"])
    assert recorded["temporal"] == ["warp", "flicker"] and "temporal" not in recorded["overrides"]
    assert recorded["preset"] == preset
