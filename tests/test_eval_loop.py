"""The one evaluation loop and what shares it: consumers, the scorer, the result panel, the yardsticks' scoring,
and the small helpers (first line of an exception, tensor to uint8)."""

import os
import threading
import time

import cv2
import numpy as np
import pytest
import torch
from evaluation_helpers import PUBLISHED_TEST, make_sdsd_tree, overrides, save_tiny_checkpoint, set_args

from sdsd import options
from sdsd.data import build_dataset
from sdsd.evaluation import qualitative, quantitative
from sdsd.evaluation.common import check_protocol, preset_protocol
from sdsd.evaluation.loop import FrameConsumer, run_frames
from sdsd.evaluation.visualize import PANEL_LABELS, frame_images, frame_panel, make_panel
from sdsd.inference import engine_from_options, iterate_dataset, plan_work
from sdsd.metrics import calculate_psnr, score_frame, tensor_to_uint8_bgr
from sdsd.options.presets import PRESET_NAMES
from sdsd.utils.dist import DistInfo
from sdsd.utils.image import to_uint8
from sdsd.utils.text import first_line

IN_SDSD = os.path.join(PUBLISHED_TEST, "test_in_sdsd.yml")
ONE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    data = make_sdsd_tree(str(root / "data"))
    data["checkpoint"] = save_tiny_checkpoint(str(root / "tiny_G.pth"))
    return data


@pytest.fixture(scope="module")
def setup(tree, tmp_path_factory):
    opt = options.load(IN_SDSD, overrides(tree, tree["checkpoint"], str(tmp_path_factory.mktemp("res"))),
                       is_train=False)
    dataset = build_dataset(opt["datasets"]["test"], "test")
    return opt, dataset, engine_from_options(opt, torch.device("cpu"))


class Recorder(FrameConsumer):
    """Takes (scene, index) on the loop thread; its jobs sleep longer for early frames, so they finish out of order."""

    def __init__(self, total):
        self.taken, self.done_with, self.threads = [], [], set()
        self.total = total

    def take(self, out):
        key = (out.scene, out.index)
        self.taken.append(key)
        delay = 0.002 * (self.total - len(self.taken))

        def job():
            time.sleep(delay)
            self.threads.add(threading.current_thread().name)
            return key

        return job

    def done(self, result):
        self.done_with.append(result)


def test_loop_hands_every_frame_to_every_consumer_in_frame_order(setup):
    _, dataset, engine = setup
    frames = [(s, i) for s in dataset.scenes for i in range(dataset.scene_length(s))]
    first, second = Recorder(len(frames)), Recorder(len(frames))
    stats = run_frames(engine, dataset, ONE, [first, second], max_pending=4)
    assert stats.frames == len(frames) == 13 and stats.seconds > 0
    for consumer in (first, second):
        assert consumer.taken == frames and consumer.done_with == frames  # done in frame order, not finish order
        assert threading.main_thread().name not in consumer.threads  # the jobs ran on the worker threads


def test_loop_shares_the_frames_across_ranks_as_plan_work_does(setup):
    _, dataset, engine = setup
    lengths = [(s, dataset.scene_length(s)) for s in dataset.scenes]
    for rank in range(3):
        info = DistInfo(rank=rank, world_size=3, local_rank=rank, device=torch.device("cpu"))
        recorder = Recorder(13)
        stats = run_frames(engine, dataset, info, [recorder])
        assert recorder.done_with == [(w.scene, i) for w in plan_work(lengths, rank, 3) for i in w.indices]
        assert stats.frames == len(recorder.done_with)


def test_a_failing_job_stops_the_loop_with_its_error(setup):
    _, dataset, engine = setup

    class Failing(FrameConsumer):
        def __init__(self):
            self.taken = 0

        def take(self, out):
            self.taken += 1

            def job():
                raise RuntimeError(f"cannot write {out.scene}.{out.index}")

            return job

    failing = Failing()
    with pytest.raises(RuntimeError, match=r"cannot write sceneA\.0"):
        run_frames(engine, dataset, ONE, [failing], max_pending=1)
    assert failing.taken < 13


def test_consumers_without_jobs_and_score_with_extra_consumers(setup):
    opt, dataset, engine = setup
    protocol = check_protocol(opt)
    keeper = qualitative.PanelKeeper(("sceneB", 2))
    results = quantitative.score(engine, dataset, protocol, ONE, consumers=[keeper])
    outs = list(iterate_dataset(engine, dataset, plan_work([(s, dataset.scene_length(s)) for s in dataset.scenes])))
    records = [{"scene": o.scene, "index": o.index,
                **dict(zip(("psnr", "ssim"), score_frame(o.enhanced, o.gt, "rgb", False, "uint8", True))),
                } for o in outs]
    expected = quantitative.aggregate(records, list(dataset.scenes), "scene")
    assert results["frames"] == expected["frames"] and results["psnr"] == expected["psnr"]
    assert results["ssim"] == expected["ssim"] and results["seconds_per_frame"] > 0
    wanted = next(o for o in outs if (o.scene, o.index) == ("sceneB", 2))
    np.testing.assert_array_equal(keeper.panel, frame_panel(frame_images(wanted)))
    assert qualitative.PanelKeeper(None).take(wanted) is None


def test_scorer_records_and_summary_follow_the_protocol(setup):
    _, dataset, _ = setup
    lq, gt = dataset.load_scene("sceneA")
    output = (lq[2] * 5).clamp(0, 1)
    for name in PRESET_NAMES:
        protocol = preset_protocol(name)
        scorer = quantitative.Scorer(protocol)
        rec = scorer.add("sceneA", 2, output, gt[2])
        want = score_frame(output, gt[2], protocol["channel"], protocol["gt_mean"], protocol["psnr"],
                           protocol["ssim"])
        assert (rec["psnr"], rec["ssim"]) == want and rec == {"scene": "sceneA", "index": 2, "psnr": want[0],
                                                              "ssim": want[1]}
        assert quantitative.Scorer(protocol, ssim=False).record("s", 0, output, gt[2])["ssim"] is None
    # Two scenes of unequal length: the scene average and the frame average differ, as aggregate says.
    for average in ("scene", "frame"):
        scorer = quantitative.Scorer({**preset_protocol(), "average": average}, ssim=False)
        for scene, n in (("a", 1), ("b", 3)):
            for i in range(n):
                scorer.add(scene, i, (lq[i] * (2 + i)).clamp(0, 1), gt[i])
        assert scorer.summary(["a", "b"]) == quantitative.aggregate(scorer.records, ["a", "b"], average)


def test_preset_protocol_is_what_the_options_resolve(tree, tmp_path):
    assert preset_protocol() == check_protocol({})
    for name in PRESET_NAMES:
        opt = options.load(IN_SDSD, overrides(tree, tree["checkpoint"], str(tmp_path)) + [f"protocol.preset={name}"],
                           is_train=False)
        assert preset_protocol(name) == check_protocol(opt)
    with pytest.raises(Exception, match="unknown protocol preset 'nope'"):
        preset_protocol("nope")


def test_qualitative_panels_and_validation_panels_are_one_builder(tree, setup, tmp_path):
    """The panel the trainer keeps is byte for byte the panel qualitative_test.py writes for the same frame."""
    _, dataset, engine = setup
    qualitative.main(["-opt", IN_SDSD, "--no-progress", "--no-video",
                      *set_args(overrides(tree, tree["checkpoint"], str(tmp_path)))])
    keeper = qualitative.PanelKeeper(("sceneA", 0))
    run_frames(engine, dataset, ONE, [keeper])
    written = cv2.imread(qualitative.output_paths(str(tmp_path), "sceneA", 0, 7)["panel"])
    np.testing.assert_array_equal(keeper.panel, written)
    images = {k: np.full((8, 12, 3), 40 * j, np.uint8) for j, k in enumerate(PANEL_LABELS)}
    np.testing.assert_array_equal(frame_panel(images), make_panel([images[k] for k in PANEL_LABELS], PANEL_LABELS))


def _pairs():
    gen = torch.Generator().manual_seed(3)
    gt = torch.rand(5, 3, 16, 24, generator=gen)
    lq = ((gt / 3) ** 1.2 + 0.01 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    return [("a", lq[:1], gt[:1]), ("b", lq[1:], gt[1:])]


def test_oracle_scores_through_the_protocol():
    from sdsd.demo import oracle_brightening

    pairs = _pairs()
    published = oracle_brightening(pairs)
    assert published == oracle_brightening(pairs, preset_protocol("sdsd"))
    # The published protocol: the mean over scenes of per-frame uint8 PSNRs of the untouched input.
    per_scene = [np.mean([calculate_psnr(tensor_to_uint8_bgr(x), tensor_to_uint8_bgr(y)) for x, y in zip(lq, gt)])
                 for _, lq, gt in pairs]
    assert published["input_psnr"] == pytest.approx(np.mean(per_scene), abs=1e-12)
    # Another preset's averaging and PSNR reach the yardstick: the frame average over 1 + 4 frames, float PSNR.
    frame = oracle_brightening(pairs, preset_protocol("retinexformer"))
    scorer = quantitative.Scorer(preset_protocol("retinexformer"), ssim=False)
    for scene, lq, gt in pairs:
        for i, (x, y) in enumerate(zip(lq, gt)):
            scorer.add(scene, i, x.double(), y)
    assert frame["input_psnr"] == scorer.summary(["a", "b"])["psnr"] != published["input_psnr"]


def test_real_footage_model_psnr_is_the_protocols(setup):
    from bench.real_footage import _model_psnr

    _, dataset, engine = setup
    scenes, lows = [], []
    for scene in dataset.scenes:
        lq, gt = dataset.load_scene(scene)
        bgr = lambda t: (t.permute(0, 2, 3, 1).flip(-1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
        scenes.append((scene, bgr(gt)))
        lows.append(bgr(lq))
    got = _model_psnr(engine, scenes, lows, None, preset_protocol())
    # The published definition: uint8 frames from the stream, mean over clips of per-frame PSNR means.
    per_clip = []
    for (_, clip), low in zip(scenes, lows):
        outs = engine.stream([np.ascontiguousarray(f[..., ::-1]) for f in low])
        per_clip.append(np.mean([calculate_psnr(o, np.ascontiguousarray(g[..., ::-1])) for o, g in zip(outs, clip)]))
    assert got == pytest.approx(float(np.mean(per_clip)), abs=1e-12)
    assert _model_psnr(engine, scenes, lows, None, preset_protocol("retinexformer")) != got


def test_first_line_and_to_uint8():
    assert first_line(ValueError("  bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("x" * 50), limit=10) == "x" * 10
    assert first_line(KeyError()) == "KeyError" and first_line(OSError("   "), empty="") == ""
    t = torch.tensor([[[-0.5, 0.0, 0.25, 0.5], [1.0, 7.0, 1 / 255, 254 / 255]]] * 3, dtype=torch.float64)
    u8 = to_uint8(t)
    assert u8.dtype == torch.uint8 and u8.shape == t.shape
    assert u8[0].tolist() == [[0, 0, 64, 128], [255, 255, 1, 254]]  # clamped, x255, rounded
    noisy = torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(1)) * 1.2 - 0.1
    np.testing.assert_array_equal(tensor_to_uint8_bgr(noisy), to_uint8(noisy).flip(0).permute(1, 2, 0).numpy())
