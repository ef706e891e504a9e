"""Quantitative test: PSNR/SSIM of a checkpoint on the test scenes of an option file (``quantitative_test.py``).

Usage::

    python quantitative_test.py -opt options/test/test_in_sdsd.yml [--json PATH] [--set key=value ...]
                                [--self-ensemble]
    torchrun --nproc_per_node 2 quantitative_test.py -opt ...      # frames split across processes
    python quantitative_test.py -opt X.yml --predictions DIR        # score frames another program wrote

Protocol (``protocol`` section, recorded in the JSON). ``protocol.preset`` (or ``--protocol``) names whose reporting
protocol to follow, ``sdsd`` (default, the published protocol), ``snr-aware`` or ``retinexformer``; it sets every key
below and the dataset keys ``split``, ``test_frames`` and ``train_size`` that the option file does not set itself
(:mod:`sdsd.options.presets`). The keys: ``average: scene`` (mean over scenes of per-scene means) or ``frame`` (mean
over all frames); ``channel: rgb`` or ``y``; ``psnr: uint8`` (on the rounded frame) or ``float``; ``ssim: true`` or
``false`` (recorded as null); ``gt_mean: false``, ``bt601`` or ``retinexformer``; ``self_ensemble: false``;
``temporal: []`` or a list of ``warp`` and ``flicker`` (:mod:`sdsd.evaluation.temporal`; recorded only when on).

Outputs (written by rank 0 only, atomically) under ``path.results_root`` (default ``<root>/results/<name>``):

* ``metrics.json``: ``{"psnr", "ssim", "scenes": {scene: {"psnr", "ssim", "frames"}}, "frames": [{"scene",
  "index", "psnr", "ssim"}, ...], "protocol": {...}, "checkpoint", "seconds_per_frame", ...}``; ``protocol`` holds
  the preset, every resolved setting (the protocol keys and the evaluated block's ``split``, ``test_frames``,
  ``train_size``) and ``overrides``, the settings that differ from the preset's; every ``ssim`` is null when SSIM
  is switched off;
* ``metrics.csv``: one row per frame (scene, index, psnr, ssim; ssim empty when switched off);
* with ``protocol.temporal`` on, ``metrics.json`` has a ``temporal`` block (``{"metrics", "flow", "warp":
  {"output", "input", "gt"}, "flicker": {"output", "input"}, "scenes": {scene: {"pairs", "warp", "flicker"}},
  "frames": [{"scene", "index", "warp", "flicker"}, ...]}``, a pair ``(t - 1, t)`` listed under the index ``t``;
  means averaged as ``protocol.average`` says) and ``temporal.csv`` holds one row per scene (scene, pairs,
  warp_output, warp_input, warp_gt, flicker_output, flicker_input). With it off both files are as before.

``--predictions DIR`` scores frames another program wrote (:mod:`sdsd.evaluation.predictions`: the output folder of
``qualitative_test.py``, or a frame folder or video per scene) against the test block's ground truth under the same
protocol, without a checkpoint; the JSON then has ``"predictions": {"path", "layout"}`` and ``"checkpoint": null``
(and no ``engine``, ``checkpoint_keys``). The input frames (for the temporal figures) are the dataset's, without
``protocol.exposure`` matching.

The network runs through :class:`sdsd.inference.Engine` (features once per frame) in the evaluation loop
(:func:`sdsd.evaluation.loop.run_frames`); :func:`score` runs that loop with a :class:`Scorer` (the protocol's
per-frame scores and averaging) and gathers the records of every rank. Validation during training calls the same
:func:`score`, so the PSNR it logs is the one this test reports for the same weights and scenes.

``seconds_per_frame`` is the wall-clock time of the evaluation loop (reading frames, the network, the metrics)
divided by the number of frames scored; with several processes it is the run's time per frame overall.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import os
from collections.abc import Sequence

from sdsd.errors import UserError, cli_main
from sdsd.evaluation.common import check_common_arguments, check_protocol
from sdsd.evaluation.common import quantitative_parser as build_parser
from sdsd.evaluation.loop import FrameConsumer, run_frames
from sdsd.evaluation.temporal import TemporalScorer, aggregate_temporal, format_temporal, temporal_csv
from sdsd.evaluation.temporal import finish as finish_temporal
from sdsd.exposure import MatchedDataset, resolve_target
from sdsd.inference import Engine, FrameOutput, engine_from_options
from sdsd.metrics import score_frame
from sdsd.options.presets import settings as preset_settings
from sdsd.utils import dist as dist_utils
from sdsd.utils.io import atomic_write_json, atomic_write_text

__all__ = ["aggregate", "check_output_folder", "describe_protocol", "format_table", "Scorer", "score", "evaluate",
           "evaluate_predictions", "select_test_block", "prepare_evaluation", "EvaluationSetup", "write_results",
           "main", "build_parser"]


def _mean(values) -> float | None:
    values = list(values)
    if any(v is None for v in values):  # a score that was not computed (SSIM switched off)
        return None
    return math.fsum(values) / len(values) if values else math.nan


def aggregate(records: list[dict], scenes: list[str], average: str = "scene") -> dict:
    """Summarise per-frame records ``{"scene", "index", "psnr", "ssim"}``.

    Args:
        records: per-frame scores (any order); ``ssim`` may be ``None`` (not computed).
        scenes: scene names in report order.
        average: ``scene`` (mean of per-scene means, published) or ``frame`` (mean over all frames).

    Returns:
        ``{"psnr", "ssim", "scenes": {scene: {"psnr", "ssim", "frames"}}, "frames": [...sorted...]}``; a mean over
        scores that were not computed is ``None``.
    """
    order = {s: k for k, s in enumerate(scenes)}
    frames = sorted(records, key=lambda r: (order.get(r["scene"], len(order)), r["scene"], r["index"]))
    per_scene: dict[str, dict] = {}
    for scene in scenes:
        rows = [r for r in frames if r["scene"] == scene]
        if rows:
            per_scene[scene] = {"psnr": _mean(r["psnr"] for r in rows), "ssim": _mean(r["ssim"] for r in rows),
                                "frames": len(rows)}
    if average == "scene":
        psnr, ssim = _mean(s["psnr"] for s in per_scene.values()), _mean(s["ssim"] for s in per_scene.values())
    else:
        psnr, ssim = _mean(r["psnr"] for r in frames), _mean(r["ssim"] for r in frames)
    return {"psnr": psnr, "ssim": ssim, "scenes": per_scene, "frames": frames}


def format_table(results: dict) -> str:
    """The printed report: one row per scene (frames, PSNR, SSIM), the dataset mean and the protocol."""

    def ssim(value) -> str:
        return f"{'-':>7}" if value is None else f"{value:>7.4f}"

    width = max([len("scene"), len("mean (frames)")] + [len(s) for s in results["scenes"]])
    lines = [f"{'scene':<{width}}  {'frames':>6}  {'PSNR':>8}  {'SSIM':>7}"]
    for scene, row in results["scenes"].items():
        lines.append(f"{scene:<{width}}  {row['frames']:>6d}  {row['psnr']:>8.4f}  {ssim(row['ssim'])}")
    total = sum(row["frames"] for row in results["scenes"].values())
    protocol = results["protocol"]
    label = f"mean ({protocol['average']}s)"
    lines.append(f"{label:<{width}}  {total:>6d}  {results['psnr']:>8.4f}  {ssim(results['ssim'])}")
    lines.append(describe_protocol(protocol))
    if results.get("temporal"):
        lines.append(format_temporal(results["temporal"], protocol["average"]))
    return "\n".join(lines)


def describe_protocol(protocol: dict) -> str:
    """One line naming the preset and the settings that decide the numbers (and the ones set apart from it)."""
    frames = protocol.get("test_frames") or "all"
    size = protocol.get("train_size")
    line = (f"protocol {protocol.get('preset', 'sdsd')}: {protocol.get('split', 'dynamic')} split, {frames} frames "
            f"per folder, resize {'%dx%d' % tuple(size) if size else 'none'}, {protocol.get('psnr', 'uint8')} PSNR "
            f"on {protocol.get('channel', 'rgb')}, SSIM {'on' if protocol.get('ssim', True) else 'off'}, GT-mean "
            f"{protocol.get('gt_mean') or 'off'}, {protocol.get('average', 'scene')} average")
    if protocol.get("temporal"):
        line += f", temporal {'+'.join(protocol['temporal'])}"
    overrides = protocol.get("overrides")
    if overrides:
        line += "; set apart from the preset: " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    return line


def _csv_text(frames: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scene", "index", "psnr", "ssim"])
    for r in frames:
        writer.writerow([r["scene"], r["index"], repr(r["psnr"]), "" if r["ssim"] is None else repr(r["ssim"])])
    return buf.getvalue()


def write_results(results: dict, results_root: str, json_path: str | None = None) -> list[str]:
    """Write ``metrics.json`` and ``metrics.csv`` under ``results_root`` (and the JSON to ``json_path``), and
    ``temporal.csv`` when the results have temporal metrics.

    Returns:
        The paths written.
    """
    paths = [os.path.join(results_root, "metrics.json"), os.path.join(results_root, "metrics.csv")]
    atomic_write_json(results, paths[0])
    atomic_write_text(_csv_text(results["frames"]), paths[1])
    if results.get("temporal"):
        paths.append(os.path.join(results_root, "temporal.csv"))
        atomic_write_text(temporal_csv(results["temporal"]), paths[-1])
    if json_path:
        atomic_write_json(results, json_path)
        paths.append(json_path)
    return paths


def select_test_block(opt: dict) -> tuple[str, dict]:
    """Return ``(phase, block)`` of the dataset block to evaluate: ``test`` if present, else the first non-train one.

    Raises:
        UserError: the option file has no evaluation dataset block.
    """
    datasets = opt.get("datasets") or {}
    if "test" in datasets:
        return "test", datasets["test"]
    for phase, block in datasets.items():
        if not str(phase).startswith("train"):
            return phase, block
    raise UserError("the option file has no datasets.test block (the scenes to evaluate); add one, see "
                    "options/test/test_in_sdsd.yml")


def check_output_folder(folder: str, option: str) -> None:
    """Fail before any work when ``folder`` cannot be an output folder (it is a file, or cannot be created)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{option} {folder} is a file, not a folder; point {option} at a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{option} {folder} cannot be created ({exc.strerror}); choose another folder") from None


class Scorer(FrameConsumer):
    """Scores frames as a protocol says and averages them as it says: the one scoring of every PSNR this project
    reports (the quantitative test, validation, the demo's and the real-footage bench's yardsticks).

    Each frame goes through :func:`sdsd.metrics.score_frame` with the protocol's ``channel``, ``gt_mean``, ``psnr``
    and ``ssim``; :meth:`summary` averages the records with :func:`aggregate` and the protocol's ``average``. As a
    loop consumer (:func:`sdsd.evaluation.loop.run_frames`) it scores on the loop's worker threads.

    Args:
        protocol: the resolved ``protocol`` section (:func:`~sdsd.evaluation.common.check_protocol`).
        ssim: compute SSIM; ``None`` (default): as ``protocol.ssim`` says. ``False`` suits a PSNR-only yardstick.
    """

    def __init__(self, protocol: dict, *, ssim: bool | None = None):
        self.protocol = protocol
        self.ssim = bool(protocol["ssim"]) if ssim is None else ssim
        self.records: list[dict] = []

    def record(self, scene: str, index: int, output, gt) -> dict:
        """The record ``{"scene", "index", "psnr", "ssim"}`` of one enhanced frame (``3 x H x W`` RGB tensors)."""
        p = self.protocol
        psnr, ssim = score_frame(output, gt, p["channel"], p["gt_mean"], p["psnr"], self.ssim)
        return {"scene": scene, "index": int(index), "psnr": psnr, "ssim": ssim}

    def add(self, scene: str, index: int, output, gt) -> dict:
        """Score one frame now and keep its record (returned too)."""
        rec = self.record(scene, index, output, gt)
        self.records.append(rec)
        return rec

    def take(self, out: FrameOutput):
        """The job scoring ``out`` (its enhanced frame and GT copied to the CPU first)."""
        return functools.partial(self.record, out.scene, out.index, out.enhanced.cpu(), out.gt.cpu())

    def done(self, result: dict) -> None:
        """Keep a record a job computed."""
        self.records.append(result)

    def summary(self, scenes: list[str]) -> dict:
        """:func:`aggregate` of the records kept on this process, scenes in the order given."""
        return aggregate(self.records, scenes, self.protocol["average"])


def score(engine: Engine | None, dataset, protocol: dict, info: dist_utils.DistInfo, *, progress: bool = False,
          consumers: Sequence[FrameConsumer] = (), frames=None) -> dict:
    """Score every frame of ``dataset`` (split across the ranks) and average as ``protocol`` says.

    Args:
        engine: the network's engine (``None`` with ``frames``).
        dataset: an evaluation dataset (``scenes``, ``scene_length``, ``load_scene``, ``window``).
        protocol: the resolved ``protocol`` section (:func:`~sdsd.evaluation.common.check_protocol`):
            ``average``, ``channel``, ``psnr``, ``ssim``, ``gt_mean``.
        info: this process's rank and world size; every rank must call this.
        progress: show a progress bar on rank 0.
        consumers: more consumers of the same loop, after the scorer (e.g. a
            :class:`~sdsd.evaluation.qualitative.PanelKeeper`).
        frames: outputs made elsewhere instead of the engine's (:func:`~sdsd.evaluation.loop.run_frames`).

    Returns:
        On every rank: :func:`aggregate`'s dict over the records of all ranks plus ``seconds_per_frame`` (the
        slowest rank's loop time over all frames scored), and ``temporal``
        (:func:`~sdsd.evaluation.temporal.aggregate_temporal`) when ``protocol.temporal`` lists a metric.
    """
    scorer = Scorer(protocol)
    metrics = protocol.get("temporal") or []
    timing = TemporalScorer(metrics) if metrics else None
    stats = run_frames(engine, dataset, info, [scorer, *([timing] if timing else []), *consumers],
                       progress=progress, frames=frames)
    if timing is not None:
        finish_temporal(timing)  # the pairs across the cuts between ranks
    gathered = dist_utils.all_gather_object((scorer.records, stats.seconds, timing.records if timing else []))
    all_records = [r for part, _, _ in gathered for r in part]
    results = aggregate(all_records, list(dataset.scenes), protocol["average"])
    n = len(all_records)
    results["seconds_per_frame"] = max(t for _, t, _ in gathered) / n if n else math.nan
    if timing is not None:
        results["temporal"] = aggregate_temporal([r for _, _, part in gathered for r in part], list(dataset.scenes),
                                                 metrics, protocol["average"])
    return results


@dataclasses.dataclass
class EvaluationSetup:
    """What both tests need before their loop: the resolved protocol, the evaluated block, its dataset (exposure
    matched when ``protocol.exposure`` asks) and the engine."""

    protocol: dict
    phase: str
    block: dict
    dataset: object
    engine: Engine
    exposure_target: float | None


def prepare_evaluation(opt: dict, info: dist_utils.DistInfo, *, self_ensemble: bool | None = None, batch: int = 1,
                       chunk: int = 4) -> EvaluationSetup:
    """The set-up shared by the quantitative and qualitative tests, in the order that fails early: protocol, test
    block and output folder are checked before the data are listed and the checkpoint is loaded."""
    from sdsd.data import build_dataset

    protocol = check_protocol(opt, self_ensemble)
    phase, block = select_test_block(opt)
    check_output_folder(opt["path"]["results_root"], "path.results_root")
    dataset = build_dataset(block, phase)
    exposure_target = resolve_target(protocol["exposure"], opt["path"].get("pretrain_model_G") or "",
                                     "protocol.exposure")
    if exposure_target is not None:
        dataset = MatchedDataset(dataset, exposure_target)
    engine = engine_from_options(opt, info.device, self_ensemble=protocol["self_ensemble"], batch=batch,
                                 chunk=chunk)
    return EvaluationSetup(protocol, phase, block, dataset, engine, exposure_target)


def evaluate(opt: dict, info: dist_utils.DistInfo, *, self_ensemble: bool | None = None, batch: int = 1,
             chunk: int = 4, progress: bool = True) -> dict | None:
    """Evaluate ``path.pretrain_model_G`` on the test block of ``opt``.

    Args:
        opt: validated options (:func:`sdsd.options.load`).
        info: this process's rank, world size and device (:func:`sdsd.utils.dist.init_distributed`).
        self_ensemble: override ``protocol.self_ensemble``.
        batch: windows per network call. chunk: frames per feature-extraction call.
        progress: show a progress bar on rank 0.

    Returns:
        The results dict on rank 0 (see the module docstring); ``None`` on other ranks.
    """
    setup = prepare_evaluation(opt, info, self_ensemble=self_ensemble, batch=batch, chunk=chunk)
    protocol, engine = setup.protocol, setup.engine
    results = score(engine, setup.dataset, protocol, info, progress=progress)
    if not info.is_main:
        return None
    return _record(results, opt, info, preset_settings(protocol, setup.phase, setup.block),
                   {"exposure_target": setup.exposure_target, "checkpoint": opt["path"]["pretrain_model_G"]},
                   {"engine": engine.describe(), "checkpoint_keys": engine.checkpoint_keys})


def _record(results: dict, opt: dict, info, protocol: dict, source: dict, extra: dict | None = None) -> dict:
    """The results record of a run (the ``metrics.json`` keys, in their order): the scores of :func:`score`, the
    resolved ``protocol``, what was scored (``source``: checkpoint or predictions), the run's facts, ``extra``,
    and the temporal block when the protocol asked for one."""
    out = {key: results[key] for key in ("psnr", "ssim", "scenes", "frames")}
    out["protocol"] = protocol
    out.update(source)
    out.update(seconds_per_frame=results["seconds_per_frame"], name=opt.get("name"), device=str(info.device),
               world_size=info.world_size)
    out.update(extra or {})
    if "temporal" in results:
        out["temporal"] = results["temporal"]
    return out


def _resize_phrase(protocol: dict, block: dict) -> str:
    """Whether and by what the evaluated block's ground truth is resized, for size errors."""
    from sdsd.options.presets import PRESETS, dataset_family

    size = block.get("train_size")
    preset = protocol.get("preset") or "sdsd"
    family = dataset_family(block)
    by_preset = family in PRESETS[preset].resize and PRESETS[preset].resize[family] == size
    if not size:
        return f"not resized: protocol preset {preset} and the option file give no train_size"
    who = f"protocol preset {preset}" if by_preset else "the option file's train_size"
    return f"{who} resizes every ground-truth frame to {size[0]}x{size[1]}"


def evaluate_predictions(opt: dict, info: dist_utils.DistInfo, folder: str, *, progress: bool = True) -> dict | None:
    """Score frames another program wrote (``--predictions``) against the test block of ``opt``.

    Args:
        opt: validated options; no checkpoint is needed. ``protocol.self_ensemble`` and ``protocol.exposure`` do
            not apply (they change how the network runs).
        info: this process's rank and world size (the scenes' frames are split across ranks as in
            :func:`evaluate`).
        folder: the predictions (:class:`~sdsd.evaluation.predictions.Predictions`).
        progress: show a progress bar on rank 0.

    Returns:
        The results dict on rank 0 (the module docstring); ``None`` on other ranks.

    Raises:
        UserError: the folder misses a scene or holds another number of frames (before any scoring), or a frame
            that cannot be read or has another size than its ground truth.
    """
    from sdsd.data import build_dataset
    from sdsd.evaluation.predictions import Predictions, iterate_predictions

    protocol = check_protocol(opt)
    phase, block = select_test_block(opt)
    check_output_folder(opt["path"]["results_root"], "path.results_root")
    predictions = Predictions(folder, _resize_phrase(protocol, block))
    dataset = build_dataset(block, phase)
    predictions.check([(s, dataset.scene_length(s)) for s in dataset.scenes])
    results = score(None, dataset, protocol, info, progress=progress,
                    frames=lambda work: iterate_predictions(predictions, dataset, work))
    if not info.is_main:
        return None
    return _record(results, opt, info, preset_settings(protocol, phase, block),
                   {"predictions": predictions.describe(), "checkpoint": None})


@cli_main
def main(argv: list[str] | None = None) -> dict | None:
    """Command-line entry point of ``quantitative_test.py``; returns the results on rank 0."""
    from sdsd import options

    args = build_parser().parse_args(argv)
    check_common_arguments(args)
    opt = options.load(args.opt, args.overrides, is_train=False)
    info = dist_utils.init_distributed(opt.get("gpu_ids"), want=None if args.device == "auto" else args.device)
    try:
        if args.predictions is not None:
            results = evaluate_predictions(opt, info, args.predictions, progress=not args.no_progress)
        else:
            results = evaluate(opt, info, self_ensemble=args.self_ensemble, batch=args.batch, chunk=args.chunk,
                               progress=not args.no_progress)
        if results is not None:
            results["option_file"] = args.opt
            paths = write_results(results, opt["path"]["results_root"], args.json)
            print(format_table(results))
            source = f"predictions {results['predictions']['path']}; " if args.predictions is not None else ""
            print(f"{source}{results['seconds_per_frame']:.3f} s/frame on {results['device']} "
                  f"(x{results['world_size']} processes); wrote {', '.join(paths)}")
        dist_utils.barrier()
        return results
    finally:
        dist_utils.cleanup()


if __name__ == "__main__":
    main()
