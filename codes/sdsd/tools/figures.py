"""Render the README figures from results: a panel of qualitative outputs and training curves.

Usage::

    python -m sdsd.tools.figures --panel results/indoor-sdsd-results --out figure/panel.png [--scenes a,b] [--index 15]
    python -m sdsd.tools.figures --curve tb_logger/train_in_sdsd --out figure/curve.png [--tags loss/l_total,val/psnr]

``--panel`` stacks the labelled panels (input | enhanced | illumination | GT) that ``qualitative_test.py`` wrote
into ``<RESULTS_DIR>/images/panel/``, one row per scene (the middle frame unless ``--index`` is given).

``--curve`` reads the TensorBoard event files of a training run (``tensorboard``'s ``EventAccumulator``) and
draws two stacked plots with OpenCV (no matplotlib): the training losses (tags ``loss/*``; a log axis when they
span more than a decade) and the validation PSNR (tags containing ``psnr``), against the iteration.

Both are also callable in-process: :func:`render_panel`, :func:`render_curve`.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence

import cv2
import numpy as np

from sdsd.errors import UserError, cli_main
from sdsd.evaluation.visualize import read_png, write_png

__all__ = ["render_panel", "render_curve", "read_scalars", "find_panels", "nice_ticks", "main"]

_PANEL_NAME = re.compile(r"^(?P<scene>.+)\.(?P<index>\d+)-(?P<n>\d+)\.png$")
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Colour-blind-friendly palette (Okabe-Ito), BGR.
_COLORS = [(178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (0, 159, 230), (233, 180, 86), (66, 228, 240)]


# ------------------------------------------------------------------------------------------------ panels
def find_panels(results_dir: str) -> dict[str, dict[int, str]]:
    """Map scene -> {frame index -> panel path} for the panels under ``results_dir``.

    ``results_dir`` is a qualitative results folder (holding ``images/panel``) or the panel folder itself.
    """
    folder = os.path.join(results_dir, "images", "panel")
    if not os.path.isdir(folder):
        folder = results_dir
    if not os.path.isdir(folder):
        raise UserError(f"results folder {results_dir} does not exist; run qualitative_test.py first")
    scenes: dict[str, dict[int, str]] = {}
    for name in sorted(os.listdir(folder)):
        match = _PANEL_NAME.match(name)
        if match:
            scenes.setdefault(match["scene"], {})[int(match["index"])] = os.path.join(folder, name)
    if not scenes:
        raise UserError(f"no panels (<scene>.<i>-<n>.png) in {folder}; run qualitative_test.py -opt ... first")
    return scenes


def render_panel(results_dir: str, out_path: str, scenes: Sequence[str] | None = None, index: int | None = None,
                 max_rows: int = 3, width: int = 1600) -> str:
    """Stack one qualitative panel per scene into a figure.

    Args:
        results_dir: the qualitative results folder (``<results_root>``) or its ``images/panel`` folder.
        out_path: the PNG to write (atomically).
        scenes: scenes to show, in order (default: the first ``max_rows`` scenes by name).
        index: frame index to show in every scene (default: each scene's middle frame).
        max_rows: scenes shown when ``scenes`` is not given.
        width: width of the figure in pixels; every row is resized to it.

    Returns:
        ``out_path``.
    """
    available = find_panels(results_dir)
    chosen = list(scenes) if scenes else sorted(available)[:max_rows]
    rows = []
    for scene in chosen:
        if scene not in available:
            raise UserError(f"scene {scene} has no panels in {results_dir}; available: {', '.join(sorted(available))}")
        frames = available[scene]
        if index is None:
            pick = sorted(frames)[len(frames) // 2]
        elif index in frames:
            pick = index
        else:
            raise UserError(f"scene {scene} has no panel for frame {index}; frames {min(frames)}..{max(frames)}")
        img = read_png(frames[pick])
        height = max(1, round(img.shape[0] * width / img.shape[1]))
        rows.append(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))
    gap = np.full((8, width, 3), 255, dtype=np.uint8)
    parts = []
    for k, row in enumerate(rows):
        if k:
            parts.append(gap)
        parts.append(row)
    write_png(np.concatenate(parts, axis=0), out_path)
    return out_path


# ------------------------------------------------------------------------------------------------ curves
def _event_dir(tb_dir: str) -> str:
    """The one folder under ``tb_dir`` (itself included) that holds event files."""
    if not os.path.isdir(tb_dir):
        raise UserError(f"TensorBoard folder {tb_dir} does not exist (it is tb_logger/<name> of a training run)")
    found = sorted(root for root, _, files in os.walk(tb_dir) if any(".tfevents." in f for f in files))
    if not found:
        raise UserError(f"no TensorBoard event files under {tb_dir}; train with use_tb_logger: true")
    if len(found) > 1:
        raise UserError(f"{tb_dir} holds several runs ({', '.join(found[:4])}); pass one of them")
    return found[0]


def read_scalars(tb_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """All scalar series of a run: tag -> (steps, values), sorted by step."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(_event_dir(tb_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags().get("scalars", []):
        events = acc.Scalars(tag)
        steps = np.array([e.step for e in events], dtype=np.float64)
        values = np.array([e.value for e in events], dtype=np.float64)
        order = np.argsort(steps, kind="stable")
        out[tag] = (steps[order], values[order])
    return out


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart) covering ``[lo, hi]``."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while first + k * step <= hi + 1e-9 * step:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def _fmt(value: float) -> str:
    if value != 0 and abs(value) >= 1000 and float(value / 1000).is_integer():
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average (debiased)."""
    if weight <= 0 or len(values) < 2:
        return values
    out, last, norm = np.empty_like(values), 0.0, 0.0
    for k, v in enumerate(values):
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[k] = last / norm
    return out


def _put(img, text, org, scale=0.5, color=(40, 40, 40), thickness=1):
    cv2.putText(img, text, (int(org[0]), int(org[1])), _FONT, scale, color, thickness, cv2.LINE_AA)


def _vertical_text(img: np.ndarray, text: str, center: tuple[int, int], scale: float = 0.55) -> None:
    """Write ``text`` rotated 90 degrees counter-clockwise centred on ``center`` (a y-axis label)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    tile = np.full((h + base + 4, w + 4, 3), 255, dtype=np.uint8)
    _put(tile, text, (2, h + 2), scale)
    tile = cv2.rotate(tile, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = max(0, center[1] - tile.shape[0] // 2)
    x0 = max(0, center[0] - tile.shape[1] // 2)
    region = img[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]]
    np.minimum(region, tile[:region.shape[0], :region.shape[1]], out=region)


def _plot(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, ylabel: str, size: tuple[int, int],
          log_y: bool | None = None, smooth: float = 0.0) -> np.ndarray:
    """One line plot: axes, grid, ticks, labels and a legend, drawn with OpenCV."""
    width, height = size
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    left, right, top, bottom = 90, 20, 40, 55
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    _put(img, title, (left, 26), 0.65, (0, 0, 0), 2)
    if not series:
        _put(img, "no data", ((x0 + x1) // 2 - 40, (y0 + y1) // 2), 0.7)
        return img
    xs = np.concatenate([s for s, _ in series.values()])
    ys = np.concatenate([v for _, v in series.values()])
    ys = ys[np.isfinite(ys)]
    if log_y is None:
        log_y = bool(ys.size) and ys.min() > 0 and ys.max() / ys.min() > 10
    tf = np.log10 if log_y else (lambda a: a)
    x_lo, x_hi = float(xs.min()), float(xs.max())
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    t = tf(ys) if ys.size else np.zeros(1)
    y_lo, y_hi = float(t.min()), float(t.max())
    pad = (y_hi - y_lo) * 0.05 or (abs(y_lo) * 0.05 or 1.0)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(x):
        return x0 + (np.asarray(x, dtype=np.float64) - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def py(y):
        return y1 - (np.asarray(y, dtype=np.float64) - y_lo) / (y_hi - y_lo) * (y1 - y0)

    # Grid and ticks.
    for x in nice_ticks(x_lo, x_hi, 6):
        xp = int(round(float(px(x))))
        cv2.line(img, (xp, y0), (xp, y1), (230, 230, 230), 1)
        cv2.line(img, (xp, y1), (xp, y1 + 5), (0, 0, 0), 1)
        label = _fmt(x)
        (tw, _), _ = cv2.getTextSize(label, _FONT, 0.45, 1)
        _put(img, label, (xp - tw // 2, y1 + 20), 0.45)
    if log_y:
        # Decades, with 2x and 5x ticks in between when the axis spans fewer than three decades.
        mults = (1,) if y_hi - y_lo >= 3 else (1, 2, 5)
        y_ticks = [math.log10(m) + k for k in range(math.floor(y_lo), math.ceil(y_hi) + 1) for m in mults]
        y_ticks = [y for y in y_ticks if y_lo <= y <= y_hi]
        labels = [f"{10 ** k:.3g}" for k in y_ticks]
    else:
        y_ticks = nice_ticks(y_lo, y_hi, 5)
        labels = [_fmt(v) for v in y_ticks]
    for y, label in zip(y_ticks, labels):
        yp = int(round(float(py(y))))
        cv2.line(img, (x0, yp), (x1, yp), (230, 230, 230), 1)
        cv2.line(img, (x0 - 5, yp), (x0, yp), (0, 0, 0), 1)
        (tw, th), _ = cv2.getTextSize(label, _FONT, 0.45, 1)
        _put(img, label, (x0 - 8 - tw, yp + th // 2), 0.45)
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    (tw, _), _ = cv2.getTextSize("iteration", _FONT, 0.55, 1)
    _put(img, "iteration", ((x0 + x1 - tw) // 2, height - 12), 0.55)
    _vertical_text(img, ylabel + (" (log)" if log_y else ""), (18, (y0 + y1) // 2))

    # Lines: the raw series light, its moving average (when smoothing) in full colour.
    entries, points = [], []
    for k, (tag, (steps, values)) in enumerate(series.items()):
        color = _COLORS[k % len(_COLORS)]
        ok = np.isfinite(values) & (values > 0 if log_y else True)
        steps, values = steps[ok], values[ok]
        if not len(values):
            continue
        curves = [(values, color, 2)]
        if smooth > 0 and len(values) > 2:
            light = tuple(int(c + (255 - c) * 0.65) for c in color)
            curves = [(values, light, 1), (_smooth(values, smooth), color, 2)]
        for vals, col, thick in curves:
            pts = np.stack([px(steps), py(tf(vals))], axis=1).round().astype(np.int32)
            if len(pts) > 1:  # sample along the line, not only at its vertices, to find an empty corner
                dense_x = np.linspace(pts[0, 0], pts[-1, 0], 400)
                points.append(np.stack([dense_x, np.interp(dense_x, pts[:, 0], pts[:, 1])], axis=1))
            else:
                points.append(pts.astype(np.float64))
            if len(pts) == 1:
                cv2.circle(img, tuple(int(v) for v in pts[0]), 3, col, -1, cv2.LINE_AA)
            else:
                cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, col, thick, cv2.LINE_AA)
        entries.append((tag, color))
    if entries:
        _legend(img, entries, (x0, y0, x1, y1), np.concatenate(points))
    return img


def _legend(img: np.ndarray, entries: list, plot_box: tuple[int, int, int, int], points: np.ndarray) -> None:
    """Draw the legend in the plot corner that covers the fewest data points."""
    x0, y0, x1, y1 = plot_box
    sizes = [cv2.getTextSize(tag, _FONT, 0.45, 1)[0] for tag, _ in entries]
    box_w = max(w for w, _ in sizes) + 40
    line_h = max(h for _, h in sizes) + 10
    box_h = line_h * len(entries) + 6
    corners = [(x1 - 10 - box_w, y0 + 10), (x1 - 10 - box_w, y1 - 10 - box_h), (x0 + 10, y0 + 10),
               (x0 + 10, y1 - 10 - box_h)]

    def covered(corner):
        bx, by = corner
        in_x = (points[:, 0] >= bx - 10) & (points[:, 0] <= bx + box_w + 10)
        inside = in_x & (points[:, 1] >= by - 10) & (points[:, 1] <= by + box_h + 10)
        return int(inside.sum())

    bx0, by0 = min(corners, key=covered)  # min keeps the first (top right) on ties
    cv2.rectangle(img, (bx0, by0), (bx0 + box_w, by0 + box_h), (255, 255, 255), -1)
    cv2.rectangle(img, (bx0, by0), (bx0 + box_w, by0 + box_h), (160, 160, 160), 1)
    for k, (tag, color) in enumerate(entries):
        yy = by0 + 6 + line_h * k + line_h // 2
        cv2.line(img, (bx0 + 8, yy), (bx0 + 28, yy), color, 2, cv2.LINE_AA)
        _put(img, tag, (bx0 + 34, yy + 5), 0.45)
    return img


def render_curve(tb_dir: str, out_path: str, tags: Sequence[str] | None = None, width: int = 1000,
                 panel_height: int = 360, smooth: float = 0.0) -> str:
    """Plot training losses and validation PSNR over iterations from a run's TensorBoard events.

    Args:
        tb_dir: ``tb_logger/<name>`` of a training run (the folder holding the event files).
        out_path: the PNG to write (atomically).
        tags: scalar tags to draw; tags containing ``psnr`` go to the PSNR plot, the others to the loss plot.
            Default: every ``loss/*`` tag and every tag containing ``psnr``.
        width: figure width in pixels. panel_height: height of each of the two plots.
        smooth: TensorBoard-style moving-average weight in [0, 1) for the drawn lines (0 = raw values).

    Returns:
        ``out_path``.
    """
    if not 0 <= smooth < 1:
        raise UserError(f"smooth must be in [0, 1) (got {smooth})")
    scalars = read_scalars(tb_dir)
    if tags:
        missing = [t for t in tags if t not in scalars]
        if missing:
            raise UserError(f"tags not in {tb_dir}: {', '.join(missing)}; available: {', '.join(sorted(scalars))}")
        chosen = list(tags)
    else:
        chosen = [t for t in sorted(scalars) if t.startswith("loss/") or "psnr" in t.lower()]
        if not chosen:
            raise UserError(f"{tb_dir} has no loss/* or psnr scalars (tags: {', '.join(sorted(scalars)) or 'none'});"
                            " pass --tags")
    psnr = {t: scalars[t] for t in chosen if "psnr" in t.lower()}
    loss = {t: scalars[t] for t in chosen if "psnr" not in t.lower()}
    plots = []
    if loss:
        plots.append(_plot(loss, "Training loss", "loss", (width, panel_height), smooth=smooth))
    if psnr:
        plots.append(_plot(psnr, "Validation PSNR", "PSNR (dB)", (width, panel_height), log_y=False))
    write_png(np.concatenate(plots, axis=0), out_path)
    return out_path


# ------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdsd.tools.figures", description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--panel", metavar="RESULTS_DIR", help="qualitative results folder (results/<name>)")
    what.add_argument("--curve", metavar="TB_DIR", help="TensorBoard folder of a training run (tb_logger/<name>)")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--scenes", help="panel: comma-separated scenes (default: the first --rows scenes)")
    parser.add_argument("--index", type=int, help="panel: frame index (default: the middle frame)")
    parser.add_argument("--rows", type=int, default=3, help="panel: scenes shown by default (default 3)")
    parser.add_argument("--width", type=int, help="figure width in pixels (panel 1600, curve 1000)")
    parser.add_argument("--tags", help="curve: comma-separated scalar tags (default: loss/* and *psnr*)")
    parser.add_argument("--smooth", type=float, default=0.0, help="curve: moving-average weight in [0, 1)")
    return parser


@cli_main
def main(argv: list[str] | None = None) -> str:
    """Command-line entry point; returns the path written."""
    args = build_parser().parse_args(argv)
    if args.width is not None and args.width < 200:
        raise UserError(f"--width must be at least 200 pixels (got {args.width})")
    if args.panel:
        scenes = [s.strip() for s in args.scenes.split(",") if s.strip()] if args.scenes else None
        path = render_panel(args.panel, args.out, scenes=scenes, index=args.index, max_rows=args.rows,
                            width=args.width or 1600)
    else:
        tags = [t.strip() for t in args.tags.split(",") if t.strip()] if args.tags else None
        path = render_curve(args.curve, args.out, tags=tags, width=args.width or 1000, smooth=args.smooth)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
