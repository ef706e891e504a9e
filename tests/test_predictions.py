"""quantitative_test.py --predictions: frames written elsewhere, scored under the option file's protocol."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
from evaluation_helpers import PUBLISHED_TEST, make_sdsd_tree, overrides, save_tiny_checkpoint, set_args

from sdsd.evaluation import qualitative, quantitative
from sdsd.metrics import calculate_psnr
from sdsd.video import open_writer

IN_SDSD = os.path.join(PUBLISHED_TEST, "test_in_sdsd.yml")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictions")
    data = make_sdsd_tree(str(root / "data"))
    data["checkpoint"] = save_tiny_checkpoint(str(root / "tiny_G.pth"), seed=2)
    data["root"] = root
    return data


def no_checkpoint(tree, results_root, extra=()):
    return set_args(overrides(tree, None, str(results_root)) + list(extra))


@pytest.fixture(scope="module")
def qualitative_folder(tree):
    """qualitative_test.py's outputs of the tiny checkpoint (the same frames under every preset: no resize)."""
    out = tree["root"] / "qualitative"
    qualitative.main(["-opt", IN_SDSD, "--no-progress", "--no-video",
                      *set_args(overrides(tree, tree["checkpoint"], str(out)))])
    return out


@pytest.mark.parametrize("preset", ["sdsd", "snr-aware"])
def test_predictions_reproduce_the_checkpoints_numbers(preset, tree, qualitative_folder, tmp_path):
    extra = ["protocol.temporal=[warp,flicker]"]
    direct = quantitative.main(["-opt", IN_SDSD, "--no-progress", "--protocol", preset,
                                *set_args(overrides(tree, tree["checkpoint"], str(tmp_path / "direct")) + extra)])
    scored = quantitative.main(["-opt", IN_SDSD, "--no-progress", "--protocol", preset, "--predictions",
                                str(qualitative_folder), *no_checkpoint(tree, tmp_path / "scored", extra)])
    assert [(r["scene"], r["index"]) for r in scored["frames"]] == [(r["scene"], r["index"]) for r in
                                                                     direct["frames"]]
    assert scored["frames"] == direct["frames"]  # PSNR and SSIM of every frame, to the last bit
    assert (scored["psnr"], scored["ssim"], scored["scenes"]) == (direct["psnr"], direct["ssim"], direct["scenes"])
    assert scored["temporal"] == direct["temporal"]
    assert scored["protocol"] == direct["protocol"] and scored["protocol"]["preset"] == preset
    if preset == "snr-aware":
        assert all(r["ssim"] is None for r in scored["frames"]) and scored["protocol"]["split"] == "static"
    with open(tmp_path / "scored" / "metrics.json") as f:
        data = json.load(f)
    assert data["checkpoint"] is None
    assert data["predictions"] == {"path": str(qualitative_folder / "images" / "output"), "layout": "qualitative"}
    assert "engine" not in data
    with open(tmp_path / "scored" / "metrics.csv") as f, open(tmp_path / "direct" / "metrics.csv") as g:
        assert f.read() == g.read()
    assert sorted(os.listdir(tmp_path / "scored")) == ["metrics.csv", "metrics.json", "temporal.csv"]


def test_a_folder_per_scene_in_natural_name_order(tree, qualitative_folder, tmp_path):
    """``DIR/<scene>/1.png .. 7.png`` (not zero-padded: 10 sorts after 9) gives the same numbers."""
    images = qualitative_folder / "images" / "output"
    for scene, n in tree["lengths"].items():
        os.makedirs(tmp_path / "mine" / scene)
        for i in range(n):
            shutil.copy(images / f"{scene}.{i}-{n}.png", tmp_path / "mine" / scene / f"frame{i + 1}.png")
    # Nine more frames in another scene would make name order and number order differ; rename to check the order.
    os.rename(tmp_path / "mine" / "sceneA" / "frame7.png", tmp_path / "mine" / "sceneA" / "frame10.png")
    reference = quantitative.main(["-opt", IN_SDSD, "--no-progress", "--predictions", str(qualitative_folder),
                                   *no_checkpoint(tree, tmp_path / "a")])
    mine = quantitative.main(["-opt", IN_SDSD, "--no-progress", "--predictions", str(tmp_path / "mine"),
                              *no_checkpoint(tree, tmp_path / "b")])
    assert mine["frames"] == reference["frames"]
    assert mine["predictions"]["layout"] == "scenes"


def test_a_video_per_scene(tree, tmp_path):
    """A video of each scene's ground truth: read with PyAV, frame k against GT frame k (lossy, so not inf)."""
    for scene, n in tree["lengths"].items():
        frames = [np.load(os.path.join(tree["GT"], scene, f"{k:04d}.npy"))[..., ::-1] for k in range(n)]
        with open_writer(str(tmp_path / "videos" / f"{scene}.mp4"), 48, 32, 10, crf=0) as writer:
            for frame in frames:
                writer.write(np.ascontiguousarray(frame))
    results = quantitative.main(["-opt", IN_SDSD, "--no-progress", "--predictions", str(tmp_path / "videos"),
                                 *no_checkpoint(tree, tmp_path / "r")])
    # 4:2:0 chroma keeps it near 33 dB; consecutive frames move by 1-2 px, so a frame scored against its neighbour
    # (an off-by-one in the reading) would score far lower.
    assert min(r["psnr"] for r in results["frames"]) > 30
    gt = [np.load(os.path.join(tree["GT"], "sceneA", f"{k:04d}.npy")) for k in range(2)]
    assert calculate_psnr(gt[0], gt[1]) < 25
    assert results["predictions"]["layout"] == "scenes"


def run_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        quantitative.main(argv)
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def copy_of(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_missing_scene(tree, qualitative_folder, tmp_path, capsys):
    copy = copy_of(qualitative_folder, tmp_path)
    for name in os.listdir(copy / "images" / "output"):
        if name.startswith("sceneB."):
            os.remove(copy / "images" / "output" / name)
    message = run_error(["-opt", IN_SDSD, "--predictions", str(copy), *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "no predictions for scene sceneB" in message and "sceneB.0-6.png" in message
    assert not os.path.exists(tmp_path / "r" / "metrics.json")
    os.makedirs(tmp_path / "empty")
    message = run_error(["-opt", IN_SDSD, "--predictions", str(tmp_path / "empty"),
                         *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "no predictions for scene sceneA" in message and "sceneA.mp4" in message
    message = run_error(["-opt", IN_SDSD, "--predictions", str(tmp_path / "nowhere"),
                         *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "nowhere" in message and "not found" in message


def test_frame_count_mismatch(tree, qualitative_folder, tmp_path, capsys):
    os.makedirs(tmp_path / "mine" / "sceneA")
    os.makedirs(tmp_path / "mine" / "sceneB")
    images = qualitative_folder / "images" / "output"
    for i in range(5):  # sceneA has 7 test frames
        shutil.copy(images / f"sceneA.{i}-7.png", tmp_path / "mine" / "sceneA" / f"{i:04d}.png")
    message = run_error(["-opt", IN_SDSD, "--predictions", str(tmp_path / "mine"),
                         *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "5 frames for scene sceneA" in message and "scores 7" in message
    # The same for a video with too few frames.
    shutil.rmtree(tmp_path / "mine" / "sceneA")
    with open_writer(str(tmp_path / "mine" / "sceneA.mp4"), 48, 32, 10) as writer:
        for i in range(4):
            writer.write(np.ascontiguousarray(cv2.imread(str(images / f"sceneA.{i}-7.png"))[..., ::-1]))
    message = run_error(["-opt", IN_SDSD, "--predictions", str(tmp_path / "mine"),
                         *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "sceneA.mp4" in message and "4 frames for scene sceneA" in message
    # qualitative_test.py's names: a missing frame, and a run that evaluated another number of frames.
    copy = copy_of(qualitative_folder, tmp_path)
    os.remove(copy / "images" / "output" / "sceneB.5-6.png")
    message = run_error(["-opt", IN_SDSD, "--predictions", str(copy), *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "sceneB.5-6.png" in message and "found 5 of sceneB.*-6.png" in message
    for i in range(7):
        os.rename(copy / "images" / "output" / f"sceneA.{i}-7.png", copy / "images" / "output" / f"sceneA.{i}-9.png")
    message = run_error(["-opt", IN_SDSD, "--predictions", str(copy), *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "sceneA" in message and "needs sceneA.0-7.png" in message
    for i in range(7, 9):
        shutil.copy(copy / "images" / "output" / "sceneA.0-9.png", copy / "images" / "output" / f"sceneA.{i}-9.png")
    message = run_error(["-opt", IN_SDSD, "--predictions", str(copy), *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "9 frames for scene sceneA" in message and "scores 7" in message


def test_size_differs_from_the_ground_truth(tree, qualitative_folder, tmp_path, capsys):
    copy = copy_of(qualitative_folder, tmp_path)
    path = copy / "images" / "output" / "sceneA.3-7.png"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (96, 64)))
    message = run_error(["-opt", IN_SDSD, "--predictions", str(copy), *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "sceneA.3-7.png" in message and "96x64" in message and "48x32" in message
    assert "not resized" in message
    # Under a preset that resizes (snr-aware: SDSD frames to 960x512) the message says so.
    items = [i for i in overrides(tree, None, str(tmp_path / "r")) if not i.startswith("datasets.test.train_size")]
    message = run_error(["-opt", IN_SDSD, "--protocol", "snr-aware", "--predictions", str(qualitative_folder),
                         *set_args(items)], capsys)
    assert "48x32" in message and "960x512" in message and "protocol preset snr-aware resizes" in message


def test_unreadable_frame(tree, qualitative_folder, tmp_path, capsys):
    copy = copy_of(qualitative_folder, tmp_path)
    (copy / "images" / "output" / "sceneB.2-6.png").write_bytes(b"not a png")
    message = run_error(["-opt", IN_SDSD, "--predictions", str(copy), *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "sceneB.2-6.png" in message and "not an image" in message
    os.makedirs(tmp_path / "mine" / "sceneA")
    for i in range(7):
        (tmp_path / "mine" / "sceneA" / f"{i:04d}.png").write_bytes(b"\x89PNG broken")
    message = run_error(["-opt", IN_SDSD, "--predictions", str(tmp_path / "mine"),
                         *no_checkpoint(tree, tmp_path / "r")], capsys)
    assert "0000.png" in message and "cannot read" in message
