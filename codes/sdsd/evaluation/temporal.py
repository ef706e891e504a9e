"""The temporal metrics of an evaluation (``protocol.temporal``): a loop consumer, the exchange between ranks and
the averaging (formulas in :mod:`sdsd.metrics.temporal` and docs/protocol.md#temporal-metrics).

Each pair of consecutive frames ``(t - 1, t)`` of a scene is scored once, by the process that computed frame ``t``,
on the uint8 images PSNR is scored on (output and GT rounded as :func:`sdsd.metrics.tensor_to_uint8_bgr` does, the
input as the network saw it, exposure matching included). The loop splits frames across processes in contiguous
parts (:func:`sdsd.inference.plan_work`), so only a part's first frame lacks its predecessor on the same process: the
last frame of every part travels to all processes once the loop is over (:func:`finish`, one frame per process) and
the pair across the cut is scored then. The numbers are therefore the same for any number of processes.
"""

from __future__ import annotations

import csv
import functools
import io
import math

import numpy as np

from sdsd.evaluation.loop import FrameConsumer
from sdsd.inference import FrameOutput
from sdsd.metrics import tensor_to_uint8_bgr
from sdsd.metrics.temporal import FLOW_METHOD, TEMPORAL_METRICS, mean_terms, pair_terms
from sdsd.utils import dist as dist_utils

__all__ = ["TemporalScorer", "finish", "aggregate_temporal", "temporal_csv", "format_temporal", "COLUMNS", "VIDEOS"]

#: The videos each metric is reported for (the ground truth's own warping error is the floor of the flow).
VIDEOS = {"warp": ("output", "input", "gt"), "flicker": ("output", "input")}


def _rgb(tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor_to_uint8_bgr(tensor)[..., ::-1])


def _pair_record(scene: str, index: int, prev: dict, cur: dict, metrics: tuple[str, ...]) -> dict:
    videos = {name: (prev[name], cur[name]) for name in ("output", "input")}
    return {"scene": scene, "index": int(index), **pair_terms(prev["gt"], cur["gt"], videos, metrics)}


class TemporalScorer(FrameConsumer):
    """Loop consumer scoring every pair of consecutive frames it sees (on the loop's worker threads).

    Args:
        metrics: the metrics of :data:`~sdsd.metrics.temporal.TEMPORAL_METRICS` to compute.

    Attributes:
        records: per pair ``{"scene", "index" (of frame t), "warp": {"output", "input", "gt"}, "flicker":
            {"output", "input"}}``, the metrics asked for.
    """

    def __init__(self, metrics):
        self.metrics = tuple(m for m in TEMPORAL_METRICS if m in metrics)
        self.records: list[dict] = []
        self.head: tuple[str, int, dict] | None = None  # first frame of this part, when its predecessor is not here
        self._last: tuple[str, int, int, dict] | None = None
        self._seen = False

    def take(self, out: FrameOutput):
        """Convert the frame to uint8 RGB here; the job scores the pair it closes, if any."""
        frames = {"output": _rgb(out.enhanced), "input": _rgb(out.lq), "gt": _rgb(out.gt)}
        prev, self._last = self._last, (out.scene, int(out.index), int(out.n), frames)
        first, self._seen = not self._seen, True
        if prev is not None and prev[0] == out.scene and prev[1] == out.index - 1:
            return functools.partial(_pair_record, out.scene, out.index, prev[3], frames, self.metrics)
        if first and out.index > 0:
            self.head = (out.scene, int(out.index), frames)
        return None

    def done(self, result: dict) -> None:
        """Keep a pair's record."""
        self.records.append(result)

    def tail(self) -> tuple[str, int, dict] | None:
        """The last frame of this part when another process computes its successor (after the loop)."""
        if self._last is None or self._last[1] >= self._last[2] - 1:
            return None
        scene, index, _, frames = self._last
        return scene, index, frames


def finish(scorer: TemporalScorer, gather=dist_utils.all_gather_object) -> None:
    """Score the pair across each cut between processes; every process must call this after its loop.

    ``gather`` collects one object from every process (:func:`sdsd.utils.dist.all_gather_object`).
    """
    tails = {(t[0], t[1]): t[2] for t in gather(scorer.tail()) if t is not None}
    if scorer.head is not None:
        scene, index, frames = scorer.head
        prev = tails.get((scene, index - 1))
        if prev is None:  # cannot happen with plan_work's contiguous parts
            raise RuntimeError(f"frame {index - 1} of scene {scene} was computed by no process")
        scorer.records.append(_pair_record(scene, index, prev, frames, scorer.metrics))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return math.fsum(values) / len(values) if values else None


def aggregate_temporal(records: list[dict], scenes: list[str], metrics, average: str = "scene") -> dict:
    """Summarise per-pair records (any order, all processes).

    Returns:
        ``{"metrics", "flow", "warp": {video: mean}, "flicker": {video: mean}, "scenes": {scene: {"pairs", "warp",
        "flicker"}}, "frames": [records in scene and frame order]}``. ``average: scene`` (like PSNR) takes the mean
        over scenes of each scene's mean over its pairs, ``frame`` the mean over all pairs; a scene of one frame has
        no pair and is left out.
    """
    metrics = [m for m in TEMPORAL_METRICS if m in metrics]
    order = {s: k for k, s in enumerate(scenes)}
    frames = sorted(records, key=lambda r: (order.get(r["scene"], len(order)), r["scene"], r["index"]))
    per_scene = {}
    for scene in scenes:
        rows = [r for r in frames if r["scene"] == scene]
        if rows:
            per_scene[scene] = mean_terms(rows)
    out: dict = {"metrics": metrics, "flow": FLOW_METHOD if "warp" in metrics else None}
    source = per_scene.values() if average == "scene" else frames
    for metric in metrics:
        out[metric] = {video: _mean(s[metric][video] for s in source) for video in VIDEOS[metric]}
    out["scenes"] = {scene: {"pairs": row["pairs"], **{m: row[m] for m in metrics}} for scene, row in
                     per_scene.items()}
    out["frames"] = frames
    return out


#: Columns of ``temporal.csv`` after ``scene`` and ``pairs``: ``<metric>_<video>``.
COLUMNS = tuple(f"{metric}_{video}" for metric in TEMPORAL_METRICS for video in VIDEOS[metric])


def temporal_csv(summary: dict) -> str:
    """``temporal.csv``: one row per scene (``scene, pairs, warp_output, warp_input, warp_gt, flicker_output,
    flicker_input``; the columns of metrics switched off are left out)."""
    columns = [f"{m}_{v}" for m in summary["metrics"] for v in VIDEOS[m]]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["scene", "pairs", *columns])
    for scene, row in summary["scenes"].items():
        values = [row[c.split("_")[0]][c.split("_", 1)[1]] for c in columns]
        writer.writerow([scene, row["pairs"], *("" if v is None else repr(v) for v in values)])
    return buf.getvalue()


def format_temporal(summary: dict, average: str) -> str:
    """The printed temporal table: one row per scene and the mean (warp errors in units of 1e-3)."""
    columns = [(m, v) for m in summary["metrics"] for v in VIDEOS[m]]
    heads = [f"{m} {'GT' if v == 'gt' else v}" for m, v in columns]
    width = max([len("scene"), len(f"mean ({average}s)")] + [len(s) for s in summary["scenes"]])

    def cell(metric, value, w):
        if value is None:
            return f"{'-':>{w}}"
        return f"{value * 1e3:>{w}.4f}" if metric == "warp" else f"{value:>{w}.5f}"

    widths = [max(len(h), 10) for h in heads]
    lines = [f"{'scene':<{width}}  {'pairs':>5}  " + "  ".join(f"{h:>{w}}" for h, w in zip(heads, widths))]
    for scene, row in summary["scenes"].items():
        lines.append(f"{scene:<{width}}  {row['pairs']:>5d}  " + "  ".join(
            cell(m, row[m][v], w) for (m, v), w in zip(columns, widths)))
    total = sum(row["pairs"] for row in summary["scenes"].values())
    label = f"mean ({average}s)"
    lines.append(f"{label:<{width}}  {total:>5d}  " + "  ".join(
        cell(m, summary[m][v], w) for (m, v), w in zip(columns, widths)))
    lines.append("temporal: warp = warping error x 1e-3 (mean squared RGB distance to the previous frame warped by "
                 "the GT's flow, occluded pixels left out; GT = the flow's floor), flicker = |change of mean "
                 "brightness - the GT's|")
    return "\n".join(lines)
