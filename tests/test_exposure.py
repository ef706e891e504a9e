"""Training-input statistics beside each checkpoint, and the exposure matching of ``sdsd.enhance``."""

import json
import os

import numpy as np
import pytest
import torch

from sdsd.errors import UserError
from sdsd.exposure import estimate_noise, read_sidecar, sidecar_path, srgb_to_linear, summarize
from sdsd.training import train
from tests.test_train import load, make_options


def test_training_writes_input_statistics_beside_each_checkpoint(tmp_path):
    result = train(load(tmp_path, make_options(tmp_path, niter=2)), progress=False)
    models = tmp_path / "experiments" / "tiny" / "models"
    assert sorted(os.listdir(models)) == ["2_G.json", "2_G.pth", "latest_G.json", "latest_G.pth"]
    stats = read_sidecar(result["latest_G"])
    assert stats == json.loads((models / "2_G.json").read_text())
    assert stats["windows"] == 18 and stats["frames"] == 90  # all 18 training windows (3 scenes x 6) of 5 frames
    # make_data's inputs are gt // 6 + U{0..3}: uniform uint8 GT -> inputs uniform-ish on [0, 45] / 255.
    values = np.arange(256) // 6
    expected = float(srgb_to_linear(torch.tensor((values[:, None] + np.arange(4)[None]) / 255.0)).mean())
    assert stats["input"]["mean_linear"] == pytest.approx(expected, rel=0.05)
    assert stats["gt"]["mean_linear"] > 5 * stats["input"]["mean_linear"]
    assert len(stats["input"]["channel_mean_linear"]) == 3 and set(stats["input"]["percentiles_linear"]) >= {"5", "50"}
    # The matcher's statistic: percentiles of 4x4 averages, which noise widens less than the raw ones.
    raw, smooth = (stats["input"][k]["99"] for k in ("percentiles_linear", "smoothed_percentiles_linear"))
    assert stats["input"]["smoothing"] == 4 and all(0 < s_ <= r for s_, r in zip(smooth, raw))
    assert stats["input"]["noise_sigma"] > 0
    # The .pth stays a plain state_dict.
    assert all(isinstance(v, torch.Tensor) for v in torch.load(result["latest_G"], weights_only=True).values())

    # Same seed, same data: the same statistics, and measuring them did not change what training did.
    again = train(load(tmp_path, make_options(tmp_path, niter=2, manual_seed=5), ["name=tiny2"]), progress=False)
    assert read_sidecar(again["latest_G"]) == stats
    a, b = (torch.load(p, weights_only=True) for p in (result["latest_G"], again["latest_G"]))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_noise_estimate_measures_white_noise():
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.2, 0.6, 96)[None, None, :].expand(2, 3, 64, 96)
    noisy = ramp + 0.02 * torch.randn(ramp.shape, generator=gen)
    sigma = estimate_noise(noisy)
    assert sigma.shape == (3,) and torch.allclose(sigma, torch.full((3,), 0.02), rtol=0.08)
    assert float(estimate_noise(ramp).max()) < 1e-4  # a smooth ramp is no noise
    assert summarize(noisy)["noise_sigma"] == pytest.approx(float(sigma.mean()))


def test_bad_sidecar_is_a_user_error(tmp_path):
    weights = tmp_path / "x_G.pth"
    assert read_sidecar(str(weights)) is None
    with open(sidecar_path(str(weights)), "w") as f:
        f.write("{not json")
    with pytest.raises(UserError, match="x_G.json"):
        read_sidecar(str(weights))


# -- matching the exposure ---------------------------------------------------------------------------------------


def step_clip(n: int = 24, step: int = 12, exposures=(0.03, 0.12), size=(48, 64)) -> np.ndarray:
    """A panning textured clip through synthesize's camera model whose light goes up 4x at frame ``step``."""
    import cv2

    from sdsd.tools.synthesize import degrade_clip

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (size[0], size[1] + n, 3)).astype(np.float32), (0, 0), 3)
    base = np.clip((base - base.mean()) * 4 + 110, 0, 255).astype(np.uint8)
    clean = np.stack([base[:, i:i + size[1]] for i in range(n)])
    first, _ = degrade_clip(clean[:step], np.random.default_rng(1), exposure=(exposures[0],) * 2)
    second, _ = degrade_clip(clean[step:], np.random.default_rng(2), exposure=(exposures[1],) * 2)
    return np.ascontiguousarray(np.concatenate([first, second])[..., ::-1])


def linear_mean(frame: np.ndarray) -> float:
    x = torch.from_numpy(frame.astype(np.float32) / (255.0 if frame.dtype == np.uint8 else 1.0))
    return float(srgb_to_linear(x).mean())


class BrighteningBackend:
    """A stand-in for a trained model at a fixed exposure: a fixed x8 brightening of the window's centre frame in
    linear light. It runs through the real engine (windows, padding, read-ahead), so the output's brightness is
    what the exposure matching feeds it."""

    name, precision, device, nframes, center = "brighten", "fp32", torch.device("cpu"), 5, 2

    def features(self, frames):
        return (frames,)

    def windows(self, feats, base):
        from sdsd.exposure import linear_to_srgb

        out = linear_to_srgb(srgb_to_linear(base) * 8)
        return out, out, out

    def describe(self):
        return {"runtime": self.name, "precision": self.precision, "device": "cpu"}


def test_brightness_step_makes_no_flicker():
    from sdsd.exposure import TIME_CONSTANT, ExposureMatcher, _linear_np, measure
    from sdsd.inference import Engine

    frames = step_clip()
    inputs = [linear_mean(f) for f in frames]
    assert inputs[12] / inputs[11] == pytest.approx(4, rel=0.05)  # the light goes up 4x
    matcher = ExposureMatcher(0.01)
    outputs = [linear_mean(f) for f in Engine(BrighteningBackend()).stream(matcher(frames))]
    assert len(outputs) == len(frames)
    log_out = np.log(outputs)
    changes = np.diff(log_out)
    # Before the step the output is steady, and a frame is brought to the target.
    assert np.abs(changes[:10]).max() < 0.01
    matched = ExposureMatcher(0.01).frame(frames[0])
    assert measure(_linear_np(matched)) == pytest.approx(0.01, rel=0.05)
    # The gain glides: it never moves by more than 1/TIME_CONSTANT of the way per frame...
    log_gains = np.log(matcher.gains)
    assert np.abs(np.diff(log_gains)).max() <= (1 - np.exp(-1 / TIME_CONSTANT)) * np.log(4) + 0.01
    # ...so after the step the output brightness falls back monotonically, by ever smaller steps: no flicker.
    after = changes[12:]
    assert np.all(after < 0) and np.abs(after).max() < 0.15
    assert np.all(np.diff(np.abs(after[:-1])) < 0.01)
    assert abs(log_out[-1] - log_out[0]) < abs(log_out[12] - log_out[0])  # and heads back to the target
    # A per-frame gain with no smoothing would also hide the step, but pumps with every frame's noise and motion;
    # the smoothed gain of a steady clip is steadier than the per-frame one.
    steady = step_clip(exposures=(0.03, 0.03))
    smooth, instant = ExposureMatcher(0.01), ExposureMatcher(0.01, time_constant=0)
    for f in steady:
        smooth.frame(f)
        instant.frame(f)
    assert np.std(np.log(smooth.gains)) < np.std(np.log(instant.gains))


def test_white_level_follows_the_exposure_not_the_noise():
    """The same scene at one exposure, with little and with much sensor noise, gets (nearly) the same gain; the raw
    99th percentile would brighten the clean take well past the noisy one."""
    from sdsd.exposure import ExposureMatcher, _linear_np, measure
    from sdsd.tools.synthesize import degrade_clip

    clean = step_clip(n=4, exposures=(1.0, 1.0))[..., ::-1]  # a textured clip, then degraded twice below
    takes = {}
    for name, shot, read in (("clean", 1e-5, 1e-5), ("noisy", 3e-3, 1e-3)):
        low, _ = degrade_clip(clean, np.random.default_rng(3), exposure=(0.04, 0.04), shot_noise=shot,
                              read_noise=read, color_cast=0)
        takes[name] = [np.ascontiguousarray(f[..., ::-1]) for f in low]
    smoothed = {k: np.mean([measure(_linear_np(f)) for f in v]) for k, v in takes.items()}
    raw = {k: np.mean([measure(_linear_np(f), smoothing=1) for f in v]) for k, v in takes.items()}
    assert raw["noisy"] / raw["clean"] > 1.3  # noise inflates the raw white level...
    assert smoothed["noisy"] / smoothed["clean"] == pytest.approx(1, abs=0.06)  # ...far less the 4x4 averaged one
    gains = {}
    for k, frames in takes.items():
        matcher = ExposureMatcher(0.03)
        list(matcher(frames))
        gains[k] = matcher.gains[-1]
    assert gains["clean"] / gains["noisy"] == pytest.approx(1, abs=0.06)


def test_version_1_sidecar_is_used_with_a_warning(tmp_path, caplog):
    from sdsd.exposure import resolve_target, write_sidecar

    weights = str(tmp_path / "old_G.pth")
    write_sidecar({"input": {"mean_linear": 0.01, "percentiles_linear": {"99": [0.04, 0.05, 0.06]}}}, weights)
    with caplog.at_level("WARNING", logger="sdsd"):
        assert resolve_target("auto", weights) == pytest.approx(0.05)
    assert "version 1 sidecar" in caplog.text and "old_G.json" in caplog.text
    caplog.clear()
    write_sidecar({"input": {"mean_linear": 0.01, "percentiles_linear": {"99": [0.04, 0.05, 0.06]},
                             "smoothed_percentiles_linear": {"99": [0.03, 0.03, 0.03]}}}, weights)
    with caplog.at_level("WARNING", logger="sdsd"):
        assert resolve_target(None, weights) == pytest.approx(0.03)
    assert not caplog.text


def test_matching_a_real_network_stream_through_the_cli(tmp_path, capsys):
    import cv2

    from sdsd.enhance import main
    from sdsd.exposure import write_sidecar
    from tests.evaluation_helpers import save_tiny_checkpoint

    frames = step_clip(n=14, step=7)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), f[..., ::-1])
    weights = save_tiny_checkpoint(str(tmp_path / "tiny_G.pth"))

    def run(*extra):
        out = tmp_path / f"out{len(os.listdir(tmp_path))}"
        try:
            # One fixed backend: --runtime auto may pick another per run (timings), whose rounding differs.
            code = main([str(folder), "-o", str(out), "--model", weights, "--device", "cpu", "--quiet",
                         "--runtime", "torch", "--precision", "fp32", *extra])
        except SystemExit as exc:  # a user error: "error: ..." on stderr, exit status 2
            code = exc.code
        return code, out, capsys.readouterr()

    # No sidecar (a published checkpoint): off, said once.
    code, out, captured = run()
    assert code == 0 and "has no training-statistics sidecar: --exposure off" in captured.out
    assert "exposure gain" not in captured.out
    plain = sorted(os.listdir(out))
    code, _, captured = run("--exposure", "auto")
    assert code == 2 and captured.err.strip().count("\n") == 0 and "--exposure auto" in captured.err
    code, _, captured = run("--exposure", "2")
    assert code == 2 and "target white level" in captured.err
    # A target given by hand, then the sidecar's (the default once it exists).
    code, out_value, captured = run("--exposure", "0.01")
    assert code == 0 and "exposure gain" in captured.out and sorted(os.listdir(out_value)) == plain
    write_sidecar({"input": {"mean_linear": 0.002, "percentiles_linear": {"99": [0.012, 0.012, 0.012]},
                             "smoothed_percentiles_linear": {"99": [0.01, 0.01, 0.01]}}}, weights)
    code, out_auto, captured = run()
    assert code == 0 and "exposure gain" in captured.out and "sidecar" not in captured.out
    read = [cv2.imread(str(out_auto / n)) for n in sorted(os.listdir(out_auto))]
    assert all(np.array_equal(a, cv2.imread(str(out_value / n))) for a, n in zip(read, sorted(os.listdir(out_value))))
    code, out_off, captured = run("--exposure", "off")
    assert code == 0 and "exposure gain" not in captured.out
    different = [not np.array_equal(a, cv2.imread(str(out_off / n))) for a, n in zip(read, sorted(os.listdir(out_off)))]
    assert all(different)


def test_protocol_exposure_switch(tmp_path):
    from sdsd import options
    from sdsd.evaluation import quantitative
    from sdsd.exposure import write_sidecar
    from tests.evaluation_helpers import PUBLISHED_TEST, make_sdsd_tree, overrides, save_tiny_checkpoint, set_args

    tree = make_sdsd_tree(str(tmp_path / "data"))
    weights = save_tiny_checkpoint(str(tmp_path / "tiny_G.pth"))
    opt_file = os.path.join(PUBLISHED_TEST, "test_in_sdsd.yml")

    def run(name, *extra):
        items = overrides(tree, weights, str(tmp_path / name)) + list(extra)
        quantitative.main(["-opt", opt_file, "--no-progress", *set_args(items)])
        with open(tmp_path / name / "metrics.json") as f:
            return json.load(f)

    off = run("off")
    assert off["protocol"]["exposure"] == "off" and off["exposure_target"] is None
    assert run("off2", "protocol.exposure=off")["psnr"] == off["psnr"]  # YAML's off (a boolean) is the setting off
    value = run("value", "protocol.exposure=0.02")
    assert value["protocol"]["exposure"] == 0.02 and value["exposure_target"] == 0.02
    assert value["psnr"] != off["psnr"]
    with pytest.raises(UserError, match="protocol.exposure auto"):
        quantitative.evaluate(options.load(opt_file, overrides(tree, weights, str(tmp_path / "a")) +
                                           ["protocol.exposure=auto"], is_train=False),
                              __import__("sdsd.utils.dist", fromlist=["x"]).init_distributed([]), progress=False)
    write_sidecar({"input": {"mean_linear": 0.004, "percentiles_linear": {"99": [0.03, 0.03, 0.03]},
                             "smoothed_percentiles_linear": {"99": [0.02, 0.02, 0.02]}}}, weights)
    auto = run("auto", "protocol.exposure=auto")
    assert auto["protocol"]["exposure"] == "auto" and auto["exposure_target"] == 0.02 and auto["psnr"] == value["psnr"]
    with pytest.raises(UserError, match="protocol.exposure"):
        options.load(opt_file, overrides(tree, weights, str(tmp_path / "b")) + ["protocol.exposure=bright"],
                     is_train=False)


def test_sidecar_tool_rewrites_what_training_wrote(tmp_path, capsys):
    """``python -m sdsd.tools.sidecar`` measures what training measured: a version 1 or missing sidecar becomes the
    one training itself wrote; a current one is kept unless --force."""
    from sdsd.exposure import write_sidecar
    from sdsd.tools.sidecar import main
    from tests.test_train import write_options

    opt = make_options(tmp_path, niter=2)
    result = train(load(tmp_path, opt), progress=False)
    weights, sidecar = result["latest_G"], sidecar_path(result["latest_G"])
    trained = read_sidecar(weights)
    opt_file = write_options(tmp_path, opt)
    write_sidecar({"input": {"mean_linear": 0.01, "percentiles_linear": {"99": [0.05, 0.05, 0.05]}}}, weights)
    other = str(tmp_path / "elsewhere_G.pth")  # a checkpoint with no sidecar at all
    with open(other, "wb") as f:
        f.write(open(weights, "rb").read())
    done = main(["-opt", opt_file, weights, other])
    assert [what for _, what in done] == ["rewritten (was version 1)", "written"]
    assert read_sidecar(weights) == trained and read_sidecar(other) == trained
    assert main(["-opt", opt_file, weights]) == [(sidecar, "kept (current; --force rewrites it)")]
    assert main(["-opt", opt_file, weights, "--force"]) == [(sidecar, "overwritten")]
    assert read_sidecar(weights) == trained
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["-opt", opt_file, str(tmp_path / "missing_G.pth")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "missing_G.pth: no such checkpoint" in err


def test_sidecar_tool_uses_the_seed_the_old_sidecar_recorded(tmp_path):
    """A run without ``train.manual_seed`` drew its seed; the version 1 sidecar recorded it, and the rewrite measures
    with that seed, not the option file's (here another one), so it equals what training wrote."""
    from sdsd.exposure import write_sidecar
    from sdsd.tools.sidecar import main
    from tests.test_train import write_options

    opt = make_options(tmp_path, niter=2, manual_seed=11)
    weights = train(load(tmp_path, opt), progress=False)["latest_G"]
    trained = read_sidecar(weights)
    write_sidecar({"seed": trained["seed"], "input": {"mean_linear": 0.01,
                                                      "percentiles_linear": {"99": [0.05, 0.05, 0.05]}}}, weights)
    opt["train"]["manual_seed"] = 12  # not the seed the checkpoint was trained with
    assert [what for _, what in main(["-opt", write_options(tmp_path, opt), weights])] == ["rewritten (was version 1)"]
    assert read_sidecar(weights) == trained


def test_resume_measures_a_version_1_sidecar_again(tmp_path):
    """A run resumed from a checkpoint whose sidecar is version 1 writes version 2 sidecars, measured with the seed
    the old one recorded (the same statistics a fresh run writes)."""
    from sdsd.exposure import is_legacy, write_sidecar

    opt = make_options(tmp_path, niter=2)
    opt["logger"]["save_checkpoint_freq"] = 2
    first = train(load(tmp_path, opt), progress=False)
    fresh = read_sidecar(first["latest_G"])
    state = tmp_path / "experiments" / "tiny" / "training_state" / "2.state"
    for name in ("2_G.pth", "latest_G.pth"):
        write_sidecar({"seed": fresh["seed"], "input": {"mean_linear": 0.01,
                                                        "percentiles_linear": {"99": [0.05, 0.05, 0.05]}}},
                      str(tmp_path / "experiments" / "tiny" / "models" / name))
    resumed = train(load(tmp_path, opt, ["train.niter=4", f"path.resume_state={state}"]), progress=False)
    again = read_sidecar(resumed["latest_G"])
    assert not is_legacy(again) and again == fresh
    assert "version 1; measuring them again" in open(resumed["log_file"]).read()
