"""Temporal metrics: warping error and flicker on sequences with known motion, in the evaluation (one process and a
real 2-process torchrun), and the no-reference tool on real PyAV videos."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from evaluation_helpers import PUBLISHED_TEST, make_sdsd_tree, overrides, save_tiny_checkpoint, set_args

from sdsd import options
from sdsd.evaluation import quantitative
from sdsd.evaluation.temporal import TemporalScorer, aggregate_temporal, finish
from sdsd.inference import FrameOutput, plan_work
from sdsd.metrics import temporal as T
from sdsd.tools import temporal as tool
from sdsd.video import open_writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_SDSD = os.path.join(PUBLISHED_TEST, "test_in_sdsd.yml")
H, W = 64, 96


def photo(name="astronaut", size=(240, 180)):
    img = getattr(skimage.data, name)()
    return cv2.resize(img[..., :3], size, interpolation=cv2.INTER_AREA)


def panning(n=5, dx=3, dy=1, name="astronaut"):
    """``n`` RGB frames of a camera panning over a photograph: frame ``t`` is frame ``t - 1`` moved by
    ``(-dx, -dy)``, so the flow from ``t`` to ``t - 1`` is ``(dx, dy)`` everywhere."""
    big = photo(name)
    return [np.ascontiguousarray(big[30 + dy * k: 30 + dy * k + H, 30 + dx * k: 30 + dx * k + W]) for k in range(n)]


def test_static_scene_has_no_warping_error():
    frame = panning(1)[0]
    motion = T.estimate_motion(T.grey(frame), T.grey(frame))
    assert np.abs(motion.flow).max() < 1e-3 and motion.valid.all()
    assert T.warp_error(frame, frame, motion) < 1e-9
    result = T.sequence_metrics([frame] * 4, {"output": [frame] * 4})
    assert result["pairs"] == 3 and result["warp"]["output"] < 1e-9 and result["warp"]["gt"] < 1e-9
    assert result["flicker"]["output"] == 0.0


def test_a_global_shift_is_warped_back():
    frames = panning(3, dx=3, dy=1)
    motion = T.estimate_motion(T.grey(frames[0]), T.grey(frames[1]))
    inner = motion.flow[8:-8, 8:-8]
    assert np.median(inner[..., 0]) == pytest.approx(3, abs=0.05)
    assert np.median(inner[..., 1]) == pytest.approx(1, abs=0.05)
    # The strip that enters the view on the right has no source in frame t-1: never valid; the rest mostly is.
    assert not motion.valid[:, -3:].any() and not motion.valid[-1:, :].any()
    assert motion.valid[:-2, :-4].mean() > 0.95
    warped = T.warp_previous(frames[0], motion)
    cur = T.to_unit(frames[1])
    err = np.abs(warped - cur).sum(-1)[motion.valid]
    assert np.median(err) < 0.02
    e_shift = T.warp_error(frames[0], frames[1], motion)
    still = T.Motion(np.zeros_like(motion.flow), motion.valid)
    assert e_shift < 2e-3 and T.warp_error(frames[0], frames[1], still) > 10 * e_shift
    # The truth warped on its own flow: the floor, near zero; a video with its own motion on top is far above it.
    jitter = [np.roll(f, k % 2 * 2, axis=1) for k, f in enumerate(frames)]
    result = T.sequence_metrics(frames, {"output": frames, "jitter": jitter})
    assert result["warp"]["gt"] == result["warp"]["output"] < 2e-3
    assert result["warp"]["jitter"] > 5 * result["warp"]["gt"]


def test_oscillating_brightness_flickers_and_the_truth_does_not():
    gt = panning(6)
    gains = [1.0 + 0.2 * (-1) ** t for t in range(6)]
    bright = [np.clip(np.round(f * g), 0, 255).astype(np.uint8) for f, g in zip(gt, gains)]
    steady = [np.round(f * 0.8).astype(np.uint8) for f in gt]
    result = T.sequence_metrics(gt, {"output": bright, "steady": steady, "gt": gt})
    assert result["flicker"]["gt"] == 0.0
    levels = [T.brightness(f) for f in gt]
    assert result["flicker"]["output"] > 0.15  # about 0.4 of a mean brightness near 0.4-0.5
    assert result["flicker"]["steady"] < 0.2 * np.mean(np.abs(np.diff(levels))) + 0.005
    # The formula, by hand: |dB_O - dB_G| averaged over the pairs.
    b_out = [T.brightness(f) for f in bright]
    expected = np.mean([abs((b_out[t] - b_out[t - 1]) - (levels[t] - levels[t - 1])) for t in range(1, 6)])
    assert result["flicker"]["output"] == pytest.approx(expected, abs=1e-12)
    assert result["warp"]["output"] > 10 * result["warp"]["gt"]


def test_brightness_is_bt601_luma():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0] = 255
    assert T.brightness(frame) == pytest.approx(0.299)
    assert T.brightness(np.full((2, 2, 3), 0.5, np.float32)) == pytest.approx(0.5)


def test_occluded_pixels_are_excluded():
    frames = panning(2)
    motion = T.estimate_motion(T.grey(frames[0]), T.grey(frames[1]))
    garbage = frames[1].copy()
    garbage[~motion.valid] = 255 - garbage[~motion.valid]
    assert (~motion.valid).sum() > 0
    assert T.warp_error(frames[0], garbage, motion) == pytest.approx(T.warp_error(frames[0], frames[1], motion),
                                                                      abs=1e-12)
    none = T.Motion(motion.flow, np.zeros_like(motion.valid))
    assert T.warp_error(frames[0], frames[1], none) is None

    # A square moving over a still background: the background it uncovers has no match in frame t-1. The
    # forward-backward check marks most of it occluded, so the truth's error falls below the error without it.
    bg, sq = photo("astronaut", (W, H)), cv2.resize(skimage.data.coffee(), (20, 20), interpolation=cv2.INTER_AREA)

    def frame(x):
        f = bg.copy()
        f[20:40, x:x + 20] = sq
        return f

    a, b = frame(20), frame(26)
    motion = T.estimate_motion(T.grey(a), T.grey(b))
    uncovered = np.zeros(motion.valid.shape, bool)
    uncovered[20:40, 20:26] = True
    assert motion.valid[uncovered].mean() < 0.6 and motion.valid[~uncovered].mean() > 0.9
    everything = T.Motion(motion.flow, np.ones_like(motion.valid))
    assert T.warp_error(a, b, motion) < 0.7 * T.warp_error(a, b, everything)


def _outputs(frames, lq, scene="s"):
    n = len(frames)
    t = [torch.from_numpy(f.copy()).permute(2, 0, 1).float() / 255 for f in frames]
    tl = [torch.from_numpy(f.copy()).permute(2, 0, 1).float() / 255 for f in lq]
    gts = [torch.from_numpy(f.copy()).permute(2, 0, 1).float() / 255 for f in panning(n)]
    return {(scene, i): FrameOutput(scene, i, n, t[i], None, None, tl[i], gts[i]) for i in range(n)}


def _feed(scorer, outs, work):
    for item in work:
        for i in item.indices:
            job = scorer.take(outs[(item.scene, i)])
            if job is not None:
                scorer.done(job())


def test_pairs_across_a_cut_between_processes_are_scored_once():
    """Frames split in two contiguous parts, as two ranks get them: the pair across the cut is scored after the
    loop from the exchanged frame, and the records equal one process's."""
    out = panning(7, dx=2, dy=2, name="chelsea")
    outs = {**_outputs(out, [np.round(f * 0.2).astype(np.uint8) for f in out]),
            **_outputs(out[:3], out[:3], scene="r")}
    lengths = [("s", 7), ("r", 3)]
    one = TemporalScorer(["warp", "flicker"])
    _feed(one, outs, plan_work(lengths))
    finish(one)
    parts = [TemporalScorer(["warp", "flicker"]) for _ in range(2)]
    for rank, scorer in enumerate(parts):
        _feed(scorer, outs, plan_work(lengths, rank, 2))
    assert parts[1].head is not None and parts[1].head[:2] == ("s", 5) and parts[0].tail()[:2] == ("s", 4)
    tails = [p.tail() for p in parts]
    for scorer in parts:
        finish(scorer, gather=lambda _: tails)
    merged = [r for p in parts for r in p.records]
    key = lambda r: (r["scene"], r["index"])  # noqa: E731
    assert sorted(merged, key=key) == sorted(one.records, key=key)
    assert len(one.records) == 6 + 2
    summary = aggregate_temporal(merged, ["s", "r"], ["warp", "flicker"])
    assert summary["scenes"]["s"]["pairs"] == 6 and summary["scenes"]["r"]["pairs"] == 2
    assert [key(r) for r in summary["frames"]] == [("s", i) for i in range(1, 7)] + [("r", 1), ("r", 2)]
    by_frame = aggregate_temporal(merged, ["s", "r"], ["warp"], "frame")
    assert by_frame["warp"]["output"] == pytest.approx(np.mean([r["warp"]["output"] for r in merged]))
    assert "flicker" not in by_frame and by_frame["flow"] == T.FLOW_METHOD


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("temporal")
    data = make_sdsd_tree(str(root / "data"))
    data["checkpoint"] = save_tiny_checkpoint(str(root / "tiny_G.pth"), seed=1)
    return data


def test_temporal_off_leaves_the_metrics_files_as_they_were(tree, tmp_path):
    quantitative.main(["-opt", IN_SDSD, "--no-progress",
                       *set_args(overrides(tree, tree["checkpoint"], str(tmp_path / "off")))])
    with open(tmp_path / "off" / "metrics.json") as f:
        data = json.load(f)
    assert set(data) == {"psnr", "ssim", "scenes", "frames", "protocol", "exposure_target", "checkpoint",
                         "seconds_per_frame", "name", "device", "world_size", "engine", "checkpoint_keys",
                         "option_file"}
    assert "temporal" not in data["protocol"]
    assert sorted(os.listdir(tmp_path / "off")) == ["metrics.csv", "metrics.json"]


def test_temporal_on_in_the_quantitative_test(tree, tmp_path, capsys):
    items = overrides(tree, tree["checkpoint"], str(tmp_path / "on")) + ["protocol.temporal=[flicker,warp]"]
    results = quantitative.main(["-opt", IN_SDSD, "--no-progress", *set_args(items)])
    table = capsys.readouterr().out
    assert "warp output" in table and "flicker input" in table and "temporal warp+flicker" in table
    with open(tmp_path / "on" / "metrics.json") as f:
        data = json.load(f)
    assert data["protocol"]["temporal"] == ["warp", "flicker"] and data["protocol"]["overrides"] == {}
    block = data["temporal"]
    assert block["metrics"] == ["warp", "flicker"] and set(block["warp"]) == {"output", "input", "gt"}
    assert {s: v["pairs"] for s, v in block["scenes"].items()} == {"sceneA": 6, "sceneB": 5}
    assert len(block["frames"]) == 11 and block["frames"][0]["index"] == 1
    # Scene average: the mean of the scenes' means; and the numbers are the uint8 frames' (recomputed here).
    for metric, video in (("warp", "output"), ("warp", "gt"), ("flicker", "input")):
        scenes = [v[metric][video] for v in block["scenes"].values()]
        assert block[metric][video] == pytest.approx(np.mean(scenes), abs=1e-15)
    gt = [np.load(os.path.join(tree["GT"], "sceneB", f"{k:04d}.npy"))[..., ::-1] for k in range(6)]
    floor = T.sequence_metrics(gt, {}, ["warp"])
    assert block["scenes"]["sceneB"]["warp"]["gt"] == pytest.approx(floor["warp"]["gt"], abs=1e-12)
    with open(tmp_path / "on" / "temporal.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "scene,pairs,warp_output,warp_input,warp_gt,flicker_output,flicker_input"
    assert lines[1].startswith("sceneA,6,") and float(lines[1].split(",")[2]) == block["scenes"]["sceneA"]["warp"][
        "output"]
    assert results["temporal"] == block


def test_bad_temporal_value_is_a_one_line_error(tree, tmp_path, capsys):
    items = overrides(tree, tree["checkpoint"], str(tmp_path)) + ["protocol.temporal=[warp,blur]"]
    with pytest.raises(SystemExit) as exc:
        quantitative.main(["-opt", IN_SDSD, *set_args(items)])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "protocol.temporal" in err[0] and "warp, flicker" in err[0]
    opt = options.load(IN_SDSD, overrides(tree, None, str(tmp_path)) + ["protocol.temporal=warp"], is_train=False)
    assert opt["protocol"]["temporal"] == ["warp"]


@pytest.mark.soak  # multi-process: `make soak`
def test_torchrun_two_processes_give_the_temporal_numbers_of_one(tree, tmp_path):
    items = overrides(tree, tree["checkpoint"], str(tmp_path / "one")) + ["protocol.temporal=[warp,flicker]"]
    single = quantitative.main(["-opt", IN_SDSD, "--no-progress", *set_args(items)])
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "codes"), REPO, os.environ.get("PYTHONPATH", "")]))
    items = overrides(tree, tree["checkpoint"], str(tmp_path / "two")) + ["protocol.temporal=[warp,flicker]"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(REPO, "quantitative_test.py"), "-opt", IN_SDSD, "--no-progress", *set_args(items)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "two" / "metrics.json") as f:
        double = json.load(f)
    assert double["world_size"] == 2
    a, b = double["temporal"], single["temporal"]
    # 13 frames in two parts: the cut falls inside sceneA (frames 0-5 | 6), and its pair is there once.
    assert [(r["scene"], r["index"]) for r in a["frames"]] == [(r["scene"], r["index"]) for r in b["frames"]]
    for ra, rb in zip(a["frames"], b["frames"]):
        assert ra["warp"]["gt"] == rb["warp"]["gt"]  # the flow of the GT does not depend on the split
        assert ra["warp"]["input"] == rb["warp"]["input"]
        # The network's output may move by ~1e-6 with another chunking (a rare uint8 rounding flip).
        assert ra["warp"]["output"] == pytest.approx(rb["warp"]["output"], rel=1e-3)
        assert ra["flicker"]["output"] == pytest.approx(rb["flicker"]["output"], abs=1e-4)
    assert a["warp"]["output"] == pytest.approx(b["warp"]["output"], rel=1e-3)


# -- without a ground truth: the tool on real videos ---------------------------------------------------------------


def write_video(path, frames, fps=10):
    with open_writer(str(path), frames[0].shape[1], frames[0].shape[0], fps) as writer:
        for f in frames:
            writer.write(f)
    return str(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    clean = panning(8, dx=2, dy=1, name="chelsea")
    dark = [np.round(f * 0.15).astype(np.uint8) for f in clean]
    steady = [np.clip(np.round(f * 0.15 * 5.5), 0, 255).astype(np.uint8) for f in clean]
    jumpy = [np.clip(np.round(f * 0.15 * (5.5 if k % 2 else 3.5)), 0, 255).astype(np.uint8) for k, f in
             enumerate(clean)]
    return {"input": write_video(root / "input.mp4", dark), "steady": write_video(root / "steady.mp4", steady),
            "jumpy": write_video(root / "jumpy.mp4", jumpy), "short": write_video(root / "short.mp4", steady[:5]),
            "small": write_video(root / "small.mp4", [f[:32, :48] for f in steady]), "root": root}


def test_tool_tells_a_flickering_video_from_a_steady_one(videos, capsys):
    json_path = str(videos["root"] / "steady.json")
    steady = tool.main([videos["steady"], "--input", videos["input"], "--json", json_path])
    table = capsys.readouterr().out
    assert "steady.mp4" in table and "input.mp4 (brightened)" in table and "warp x1e-3" in table
    with open(json_path) as f:
        assert json.load(f) == json.loads(json.dumps(steady))
    jumpy = tool.main([videos["jumpy"], "--input", videos["input"]])
    assert steady["frames"] == jumpy["frames"] == 8 and steady["pairs"] == 7
    assert steady["flicker"]["output"] < 0.01 < 0.05 < jumpy["flicker"]["output"]
    assert jumpy["warp"]["output"] > 5 * steady["warp"]["output"]
    assert steady["warp"]["input"] == jumpy["warp"]["input"]  # the same input, the same flow
    first = tool.main([videos["steady"], "--input", videos["input"], "--max-frames", "4"])
    assert first["frames"] == 4 and first["pairs"] == 3


def test_no_reference_flicker_is_zero_for_a_constant_gain():
    clean = panning(5)
    dark = [f.astype(np.float32) / 255 * 0.1 for f in clean]
    gained = [f * 4 for f in dark]
    result = T.no_reference_metrics(gained, dark)
    assert result["flicker"]["output"] < 1e-7 and result["pairs"] == 4
    with pytest.raises(ValueError, match="differ in length"):
        T.no_reference_metrics(gained, dark[:3])


@pytest.mark.parametrize("case, words", [("short", "ends after 5 frames"), ("small", "48x32"),
                                         ("missing", "not found")])
def test_tool_errors_are_one_line(videos, case, words, capsys):
    enhanced = str(videos["root"] / "nope.mp4") if case == "missing" else videos[case]
    with pytest.raises(SystemExit) as exc:
        tool.main([enhanced, "--input", videos["input"]])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err


def test_tool_runs_as_a_module(videos):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "codes"), os.environ.get("PYTHONPATH",
                                                                                                    "")]))
    proc = subprocess.run([sys.executable, "-m", "sdsd.tools.temporal", videos["steady"], "--input",
                           videos["input"]], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "flicker" in proc.stdout


def test_demo_yardsticks_are_the_quantitative_tests_numbers(tree, tmp_path):
    """The demo's temporal figures of input, brightening, output and GT (sdsd.demo.temporal_yardsticks) on the
    frames qualitative_test.py wrote equal quantitative_test.py's with protocol.temporal on."""
    from sdsd.demo import temporal_yardsticks
    from sdsd.evaluation import qualitative

    items = overrides(tree, tree["checkpoint"], str(tmp_path / "q"))
    qualitative.main(["-opt", IN_SDSD, "--no-progress", "--no-video", *set_args(items)])
    got = temporal_yardsticks(options.load(IN_SDSD, items, is_train=False), str(tmp_path / "q"), 1.0, 1.0)
    results = quantitative.main(["-opt", IN_SDSD, "--no-progress", *set_args(
        overrides(tree, tree["checkpoint"], str(tmp_path / "m")) + ["protocol.temporal=[warp,flicker]"])])
    want = results["temporal"]
    assert got["pairs"] == 11 and got["flicker"]["gt"] == 0.0
    for metric, videos in (("warp", ("output", "input", "gt")), ("flicker", ("output", "input"))):
        for video in videos:
            assert got[metric][video] == pytest.approx(want[metric][video], rel=1e-12), (metric, video)
    # gain 1, gamma 1: the brightening is the input itself.
    assert got["warp"]["brightening"] == got["warp"]["input"]
    assert got["flicker"]["brightening"] == got["flicker"]["input"]
