"""quantitative_test / qualitative_test on a tiny generated tree: schema, averaging, feature reuse, errors."""

import json
import math
import os

import av
import cv2
import numpy as np
import pytest
import torch
from evaluation_helpers import (
    PUBLISHED_TEST,
    TINY_NET,
    clip_frames,
    darken,
    make_sdsd_tree,
    overrides,
    save_tiny_checkpoint,
    set_args,
    write_frames,
)

import sdsd
from sdsd import options
from sdsd.data import build_dataset
from sdsd.evaluation import qualitative, quantitative
from sdsd.inference import engine_from_options, iterate_dataset, plan_work
from sdsd.metrics import calculate_psnr, calculate_ssim, score_frame, tensor_to_uint8_bgr

IN_SDSD = os.path.join(PUBLISHED_TEST, "test_in_sdsd.yml")
SMID = os.path.join(PUBLISHED_TEST, "test_smid.yml")




@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = make_sdsd_tree(str(root / "data"))
    data["checkpoint"] = save_tiny_checkpoint(str(root / "tiny_G.pth"))
    return data


@pytest.fixture(scope="module")
def published_run(tree, tmp_path_factory):
    """One quantitative run with the published protocol (shared by several tests)."""
    out = tmp_path_factory.mktemp("run")
    extra = str(out / "extra.json")
    results = quantitative.main(["-opt", IN_SDSD, "--json", extra, "--no-progress",
                                 *set_args(overrides(tree, tree["checkpoint"], str(out / "results")))])
    return results, out


def tiny_opt(tree, results_root, extra=()):
    return options.load(IN_SDSD, overrides(tree, tree["checkpoint"], results_root) + list(extra), is_train=False)


def test_metrics_json_schema(published_run, tree, capsys):
    results, out = published_run
    with open(out / "results" / "metrics.json") as f:
        data = json.load(f)
    with open(out / "extra.json") as f:
        assert json.load(f) == data
    for key, kind in [("psnr", float), ("ssim", float), ("scenes", dict), ("frames", list), ("protocol", dict),
                      ("checkpoint", str), ("seconds_per_frame", float)]:
        assert isinstance(data[key], kind), key
    # The published protocol (the default preset), every resolved setting recorded; the tree is not resized.
    assert data["protocol"] == {"average": "scene", "channel": "rgb", "gt_mean": False, "self_ensemble": False,
                                "preset": "sdsd", "psnr": "uint8", "ssim": True, "split": "dynamic",
                                "test_frames": 30, "train_size": None, "overrides": {}, "exposure": "off"}
    assert data["checkpoint"] == tree["checkpoint"]
    n = len(torch.load(tree["checkpoint"], weights_only=True))
    assert data["checkpoint_keys"] == {"loaded": n, "missing": 0, "unexpected": 0}
    assert data["engine"]["runtime"] == "torch" and data["engine"]["precision"] == "fp32"
    assert list(data["scenes"]) == ["sceneA", "sceneB"]  # test scenes only, in order
    assert {s: v["frames"] for s, v in data["scenes"].items()} == tree["lengths"]
    assert [(r["scene"], r["index"]) for r in data["frames"]] == [("sceneA", i) for i in range(7)] + \
        [("sceneB", i) for i in range(6)]
    assert all(set(r) == {"scene", "index", "psnr", "ssim"} for r in data["frames"])
    assert data["seconds_per_frame"] > 0
    with open(out / "results" / "metrics.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "scene,index,psnr,ssim" and len(lines) == 14
    scene, index, psnr, ssim = lines[9].split(",")
    assert (scene, int(index)) == ("sceneB", 1) and float(psnr) == data["frames"][8]["psnr"]


def test_scene_average_is_mean_of_scene_means(published_run):
    data = published_run[0]
    for scene, row in data["scenes"].items():
        frames = [r for r in data["frames"] if r["scene"] == scene]
        assert row["psnr"] == pytest.approx(np.mean([r["psnr"] for r in frames]), abs=1e-12)
        assert row["ssim"] == pytest.approx(np.mean([r["ssim"] for r in frames]), abs=1e-12)
    by_scene = np.mean([row["psnr"] for row in data["scenes"].values()])
    by_frame = np.mean([r["psnr"] for r in data["frames"]])
    assert data["psnr"] == pytest.approx(by_scene, abs=1e-12)
    assert abs(by_scene - by_frame) > 1e-6  # 7 and 6 frames: the two averages really differ here


def test_aggregate_frame_average():
    records = [{"scene": "b", "index": 0, "psnr": 10.0, "ssim": 0.1},
               {"scene": "a", "index": 1, "psnr": 30.0, "ssim": 0.5},
               {"scene": "a", "index": 0, "psnr": 20.0, "ssim": 0.3}]
    by_scene = quantitative.aggregate(records, ["a", "b"], "scene")
    assert by_scene["psnr"] == pytest.approx((25 + 10) / 2) and by_scene["ssim"] == pytest.approx(0.25)
    assert [(r["scene"], r["index"]) for r in by_scene["frames"]] == [("a", 0), ("a", 1), ("b", 0)]
    by_frame = quantitative.aggregate(records, ["a", "b"], "frame")
    assert by_frame["psnr"] == pytest.approx(20.0) and by_frame["ssim"] == pytest.approx(0.3)


def test_frames_scored_from_the_network_output(published_run, tree, tmp_path):
    """The JSON's numbers are PSNR/SSIM of the plain windowed forward against the dataset's GT."""
    data = published_run[0]
    opt = tiny_opt(tree, str(tmp_path))
    dataset = build_dataset(opt["datasets"]["test"], "test")
    net = engine_from_options(opt, torch.device("cpu")).backend.net
    item = dataset[8]  # sceneB frame 1
    with torch.inference_mode():
        enhanced = net(item["LQs"][None])[0][0]
    a, b = tensor_to_uint8_bgr(enhanced), tensor_to_uint8_bgr(item["GT"])
    assert data["frames"][8]["psnr"] == pytest.approx(calculate_psnr(a, b), abs=1e-4)
    assert data["frames"][8]["ssim"] == pytest.approx(calculate_ssim(a, b), abs=1e-5)


def test_protocol_options_recorded(tree, tmp_path):
    extra = ["protocol.average=frame", "protocol.channel=y", "protocol.gt_mean=true"]
    results = quantitative.main(["-opt", IN_SDSD, "--no-progress",
                                 *set_args(overrides(tree, tree["checkpoint"], str(tmp_path)) + extra)])
    with open(tmp_path / "metrics.json") as f:
        data = json.load(f)
    # gt_mean: true is the default preset's rule, bt601; the keys set apart from the preset are listed.
    assert data["protocol"] == {"average": "frame", "channel": "y", "gt_mean": "bt601", "self_ensemble": False,
                                "preset": "sdsd", "psnr": "uint8", "ssim": True, "split": "dynamic",
                                "test_frames": 30, "train_size": None,
                                "overrides": {"average": "frame", "channel": "y", "gt_mean": "bt601"},
                                "exposure": "off"}
    assert data["psnr"] == pytest.approx(np.mean([r["psnr"] for r in data["frames"]]), abs=1e-12)
    assert results["psnr"] == data["psnr"]


def test_feature_reuse_equals_plain_windowed_forward(tree, tmp_path):
    opt = tiny_opt(tree, str(tmp_path))
    dataset = build_dataset(opt["datasets"]["test"], "test")
    engine = engine_from_options(opt, torch.device("cpu"), chunk=3, batch=2)
    net = engine.backend.net
    work = plan_work([(s, dataset.scene_length(s)) for s in dataset.scenes])
    outs = list(iterate_dataset(engine, dataset, work))
    assert [(o.scene, o.index) for o in outs] == [(s, i) for s in ("sceneA", "sceneB") for i in range(7 if s ==
                                                                                                       "sceneA" else 6)]
    lq, _ = dataset.load_scene("sceneA")
    windows = torch.stack([lq[dataset.window("sceneA", i)] for i in range(7)])
    with torch.inference_mode():
        plain = net(windows)
    for i in range(7):
        for got, want in zip((outs[i].enhanced, outs[i].illumination, outs[i].denoised), plain):
            torch.testing.assert_close(got, want[i], atol=1e-4, rtol=1e-4)
        # The dataset's item is the same window (and GT) the scene API gives.
        item = dataset[i]
        torch.testing.assert_close(item["LQs"], windows[i])
        torch.testing.assert_close(item["GT"], outs[i].gt)
        torch.testing.assert_close(outs[i].lq, windows[i, net.center])


def test_self_ensemble_averages_flipped_windows(tree, tmp_path):
    opt = tiny_opt(tree, str(tmp_path))
    dataset = build_dataset(opt["datasets"]["test"], "test")
    engine = engine_from_options(opt, torch.device("cpu"), self_ensemble=True)
    net = engine.backend.net
    lq, _ = dataset.load_scene("sceneB")
    windows = [dataset.window("sceneB", i) for i in range(6)]
    outs = list(engine.clip(lq, windows))
    assert len(outs) == 6
    x = torch.stack([lq[w] for w in windows])
    with torch.inference_mode():
        expected = sum(net(x.flip(d) if d else x)[0].flip(d) if d else net(x)[0]
                       for d in ((), (-1,), (-2,), (-2, -1))) / 4
    for k, (enhanced, illumination, denoised) in outs:
        assert enhanced.shape == illumination.shape == denoised.shape == (3, 32, 48)
        torch.testing.assert_close(enhanced, expected[k], atol=1e-4, rtol=1e-4)
    plain = list(engine_from_options(opt, torch.device("cpu")).clip(lq, windows))
    assert not torch.allclose(plain[0][1][0], outs[0][1][0])  # the flips really changed something


def test_self_ensemble_flag_recorded(tree, tmp_path):
    quantitative.main(["-opt", IN_SDSD, "--no-progress", "--self-ensemble",
                       *set_args(overrides(tree, tree["checkpoint"], str(tmp_path)))])
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["protocol"]["self_ensemble"] is True


def test_smid_uses_the_datasets_gt(tree, tmp_path):
    """SMID: every LQ frame of a scene is scored against the first reference without .ARW / half in its name."""
    root = tmp_path / "smid"
    ref = clip_frames("rocket", 1, seed=5)[0]
    decoys = [np.zeros_like(ref), np.full_like(ref, 255)]
    write_frames(str(root / "SMID_Long_np" / "0013"), [decoys[0], decoys[1], ref, decoys[1]],
                 ["0001.ARW.npy", "0002_half.npy", "0003.npy", "0004.npy"])
    lq = [darken(ref, seed=s) for s in range(6)]
    write_frames(str(root / "SMID_LQ_np" / "0013"), lq)
    items = [f"datasets.test.dataroot_GT={root / 'SMID_Long_np'}", f"datasets.test.dataroot_LQ={root / 'SMID_LQ_np'}",
             "datasets.test.testing_dir='0013'", "datasets.test.train_size=null", f"path.results_root={tmp_path / 'r'}",
             f"path.pretrain_model_G={tree['checkpoint']}", "gpu_ids=[]"]
    items += [f"network_G.{k}={v}" for k, v in TINY_NET.items()]
    data = quantitative.main(["-opt", SMID, "--no-progress", *set_args(items)])
    assert list(data["scenes"]) == ["0013"] and data["scenes"]["0013"]["frames"] == 6

    opt = options.load(SMID, items, is_train=False)
    engine = engine_from_options(opt, torch.device("cpu"))
    frames = torch.from_numpy(np.stack(lq)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    gt = torch.from_numpy(ref[..., ::-1].copy()).permute(2, 0, 1).float() / 255
    dataset = build_dataset(opt["datasets"]["test"], "test")
    outs = dict(engine.clip(frames, [dataset.window("0013", i) for i in range(6)]))
    for i in range(6):
        psnr, ssim = score_frame(outs[i][0], gt)
        assert data["frames"][i]["psnr"] == pytest.approx(psnr, abs=1e-6)
        assert data["frames"][i]["ssim"] == pytest.approx(ssim, abs=1e-6)


def run_cli_error(module, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        module.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1
    return [line for line in err if line.startswith("error:")][0]


@pytest.mark.parametrize("module", [quantitative, qualitative])
def test_missing_pretrain_model_is_an_error(module, tree, tmp_path, capsys):
    items = overrides(tree, None, str(tmp_path))
    message = run_cli_error(module, ["-opt", IN_SDSD, "--no-progress", *set_args(items + ["path.pretrain_model_G="])],
                            capsys)
    assert "path.pretrain_model_G" in message and "not set" in message
    missing = str(tmp_path / "nope_G.pth")
    message = run_cli_error(module, ["-opt", IN_SDSD, *set_args(items + [f"path.pretrain_model_G={missing}"])],
                            capsys)
    assert "path.pretrain_model_G" in message and missing in message
    assert not os.path.exists(tmp_path / "metrics.json")


def test_checkpoint_that_does_not_fit_is_an_error(tree, tmp_path, capsys):
    items = overrides(tree, tree["checkpoint"], str(tmp_path)) + ["network_G.nf=16"]
    message = run_cli_error(quantitative, ["-opt", IN_SDSD, *set_args(items)], capsys)
    assert tree["checkpoint"] in message


def test_bad_protocol_value(tree, tmp_path, capsys):
    items = overrides(tree, tree["checkpoint"], str(tmp_path)) + ["protocol.average=video"]
    assert "protocol.average" in run_cli_error(quantitative, ["-opt", IN_SDSD, *set_args(items)], capsys)


def test_plan_work_splits_frames_contiguously():
    lengths = [("a", 7), ("b", 6), ("c", 2)]
    parts = [plan_work(lengths, r, 3) for r in range(3)]
    flat = [(w.scene, i) for part in parts for w in part for i in w.indices]
    assert flat == [(s, i) for s, n in lengths for i in range(n)]
    assert [sum(len(w.indices) for w in part) for part in parts] == [5, 5, 5]
    assert all(w.n == dict(lengths)[w.scene] for part in parts for w in part)
    assert plan_work([("a", 1)], 0, 2) == [] and len(plan_work([("a", 1)], 1, 2)) == 1


def test_qualitative_outputs(tree, tmp_path):
    summary = qualitative.main(["-opt", IN_SDSD, "--no-progress", "--fps", "5",
                                *set_args(overrides(tree, tree["checkpoint"], str(tmp_path)))])
    assert summary["frames"] == 13
    for scene, n in tree["lengths"].items():
        for i in range(n):
            name = f"{scene}.{i}-{n}.png"
            out = cv2.imread(str(tmp_path / "images" / "output" / name))
            inp = cv2.imread(str(tmp_path / "images" / "input" / name))
            panel = cv2.imread(str(tmp_path / "images" / "panel" / name))
            assert out.shape == inp.shape == (32, 48, 3)
            assert panel.shape[1] == 4 * 48 + 3 * 4 and panel.shape[0] > 32
            np.testing.assert_array_equal(panel[-32:, :48], inp)  # input tile, under its label bar
            np.testing.assert_array_equal(panel[-32:, 52:100], out)
        with av.open(str(tmp_path / "videos" / f"{scene}.mp4")) as container:
            stream = container.streams.video[0]
            decoded = list(container.decode(video=0))
            assert len(decoded) == n and stream.codec_context.name in ("h264", "mpeg4")
            assert decoded[0].width % 2 == 0 and decoded[0].height % 2 == 0
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if ".tmp" in f]
    assert leftovers == []
    # The first input frame is the dataset's centre frame, converted to uint8 BGR.
    lq = np.load(os.path.join(tree["LQ"], "sceneA", "0000.npy"))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "images" / "input" / "sceneA.0-7.png")), lq)


def test_seconds_per_frame_and_table(published_run, capsys):
    results = published_run[0]
    table = quantitative.format_table(results)
    assert "sceneA" in table and "mean (scenes)" in table
    assert math.isfinite(results["seconds_per_frame"])


def test_random_weights_are_not_loaded_silently(tree):
    """The loaded network equals the checkpoint, not a fresh initialisation."""
    opt = {"network_G": {"which_model_G": "denoise_illumination_enhance", **TINY_NET},
           "path": {"pretrain_model_G": tree["checkpoint"], "strict_load": True}, "runtime": "torch",
           "conv_backend": "auto"}  # the keys a validated option file always has
    net = engine_from_options(opt, torch.device("cpu")).backend.net
    state = torch.load(tree["checkpoint"], weights_only=True)
    torch.manual_seed(123)
    fresh = sdsd.build_network(opt["network_G"]).state_dict()
    key = "conv_first_1.weight"
    torch.testing.assert_close(net.state_dict()[key], state[key])
    assert not torch.equal(fresh[key], state[key])


@pytest.mark.parametrize("module", [quantitative, qualitative])
def test_results_root_that_is_a_file_fails_before_any_work(module, tree, tmp_path, capsys, monkeypatch):
    """Before: a results_root that is a file failed with a traceback after the whole evaluation."""
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    loaded = []
    monkeypatch.setattr("sdsd.data.build_dataset", lambda *a, **k: loaded.append(a))  # must not be reached
    items = overrides(tree, tree["checkpoint"], str(blocker))
    message = run_cli_error(module, ["-opt", IN_SDSD, "--no-progress", *set_args(items)], capsys)
    assert "path.results_root" in message and "is a file" in message and str(blocker) in message
    assert loaded == [] and blocker.read_text() == "a file, not a folder"
