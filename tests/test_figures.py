"""README figures: training curves from real TensorBoard event files and panels from qualitative outputs."""

import math
import os

import cv2
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from sdsd.errors import UserError
from sdsd.evaluation.qualitative import PANEL_LABELS, frame_name
from sdsd.evaluation.visualize import make_panel, write_png
from sdsd.tools import figures

# Okabe-Ito blue / vermillion in BGR: the first two line colours.
BLUE, VERMILLION = (178, 114, 0), (0, 94, 213)


def write_events(folder, iterations=300):
    writer = SummaryWriter(log_dir=str(folder))
    for it in range(1, iterations + 1, 5):
        writer.add_scalar("loss/l_total", 5e4 * math.exp(-it / 60) + 200, it)
        writer.add_scalar("loss/l_rec", 2e4 * math.exp(-it / 60) + 100, it)
        writer.add_scalar("lr", 4e-4, it)
        if it % 50 == 1:
            writer.add_scalar("val/psnr", 15 + 10 * (1 - math.exp(-it / 100)), it)
    writer.close()


def color_pixels(img, bgr, tol=30):
    return int((np.abs(img.astype(int) - np.array(bgr)).max(axis=2) < tol).sum())


def test_read_scalars(tmp_path):
    write_events(tmp_path / "run")
    scalars = figures.read_scalars(str(tmp_path / "run"))
    assert {"loss/l_total", "loss/l_rec", "lr", "val/psnr"} <= set(scalars)
    steps, values = scalars["val/psnr"]
    assert list(steps) == [1, 51, 101, 151, 201, 251]
    assert values[0] == pytest.approx(15 + 10 * (1 - math.exp(-0.01)), abs=1e-5)


def test_render_curve(tmp_path):
    write_events(tmp_path / "tb" / "train_x")
    out = tmp_path / "figure" / "curve.png"
    # The parent folder is accepted when it holds a single run.
    assert figures.render_curve(str(tmp_path / "tb"), str(out), width=800, smooth=0.5) == str(out)
    img = cv2.imread(str(out))
    assert img.shape == (2 * 360, 800, 3)
    top, bottom = img[:360], img[360:]
    assert color_pixels(top, BLUE) > 200 and color_pixels(top, VERMILLION) > 200  # two loss lines (l_rec, l_total)
    assert color_pixels(bottom, BLUE) > 200 and color_pixels(bottom, VERMILLION) == 0  # one PSNR line
    assert (img < 100).all(axis=2).sum() > 2000  # axes, ticks and labels in dark grey/black
    assert not any(".tmp" in f for f in os.listdir(out.parent))


def test_render_curve_selected_tags_and_errors(tmp_path):
    write_events(tmp_path / "run")
    out = tmp_path / "lr.png"
    figures.render_curve(str(tmp_path / "run"), str(out), tags=["lr"])
    assert cv2.imread(str(out)).shape == (360, 1000, 3)  # only the loss-style plot
    with pytest.raises(UserError, match="loss/l_totl"):
        figures.render_curve(str(tmp_path / "run"), str(out), tags=["loss/l_totl"])
    with pytest.raises(UserError, match="no TensorBoard event files"):
        os.makedirs(tmp_path / "empty")
        figures.render_curve(str(tmp_path / "empty"), str(out))
    write_events(tmp_path / "two" / "a", 20)
    write_events(tmp_path / "two" / "b", 20)
    with pytest.raises(UserError, match="several runs"):
        figures.render_curve(str(tmp_path / "two"), str(out))


def test_nice_ticks():
    assert figures.nice_ticks(0, 1000, 5) == [0, 200, 400, 600, 800, 1000]
    assert figures.nice_ticks(17.3, 26.1, 5) == [18, 20, 22, 24, 26]
    assert figures.nice_ticks(3, 3) != []


def make_results(root, scenes=("pair13", "pair15"), n=5, size=(32, 48)):
    rng = np.random.default_rng(0)
    for scene in scenes:
        for i in range(n):
            tiles = [np.full((*size, 3), 40 * k + i, np.uint8) for k in range(4)]
            tiles[0] = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            write_png(make_panel(tiles, PANEL_LABELS), os.path.join(root, "images", "panel", frame_name(scene, i, n)))


def test_render_panel(tmp_path):
    make_results(tmp_path / "res")
    out = tmp_path / "figure" / "panel.png"
    figures.render_panel(str(tmp_path / "res"), str(out), width=400)
    img = cv2.imread(str(out))
    one = cv2.imread(str(tmp_path / "res" / "images" / "panel" / "pair13.2-5.png"))  # the middle frame
    row_h = round(one.shape[0] * 400 / one.shape[1])
    assert img.shape == (2 * row_h + 8, 400, 3)
    np.testing.assert_array_equal(img[:row_h], cv2.resize(one, (400, row_h), interpolation=cv2.INTER_AREA))

    figures.render_panel(str(tmp_path / "res" / "images" / "panel"), str(out), scenes=["pair15"], index=0, width=400)
    assert cv2.imread(str(out)).shape == (row_h, 400, 3)
    with pytest.raises(UserError, match="pair99"):
        figures.render_panel(str(tmp_path / "res"), str(out), scenes=["pair99"])
    with pytest.raises(UserError, match="frame 7"):
        figures.render_panel(str(tmp_path / "res"), str(out), index=7)
    with pytest.raises(UserError, match="qualitative_test"):
        figures.render_panel(str(tmp_path / "nothing"), str(out))


def test_cli(tmp_path, capsys):
    make_results(tmp_path / "res", scenes=("a",), n=3)
    write_events(tmp_path / "tb")
    assert figures.main(["--panel", str(tmp_path / "res"), "--out", str(tmp_path / "p.png")]) == str(tmp_path / "p.png")
    assert cv2.imread(str(tmp_path / "p.png")).shape[1] == 1600
    figures.main(["--curve", str(tmp_path / "tb"), "--out", str(tmp_path / "c.png"), "--width", "640"])
    assert cv2.imread(str(tmp_path / "c.png")).shape[1] == 640
    with pytest.raises(SystemExit) as exc:
        figures.main(["--curve", str(tmp_path / "missing"), "--out", str(tmp_path / "c.png")])
    assert exc.value.code == 2 and "does not exist" in capsys.readouterr().err
