"""`make demo` end to end, shrunk: synthesize, train, evaluate, draw, summarise (``python -m sdsd.demo --quick``)."""

import json
import os
import subprocess
import sys

import cv2
import torch

from sdsd.archs import read_state_dict


def test_quick_demo_writes_every_artefact(tmp_path):
    from sdsd.demo import QUICK_DATA
    from sdsd.tools.synthesize import synthesize

    # A dataset an older demo made with other parameters is regenerated, not reused or refused.
    stale = tmp_path / "dataset" / "demo_quick"
    synthesize(str(stale), workers=1, verbose=False, **{**QUICK_DATA, "seed": QUICK_DATA["seed"] + 1})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sdsd.demo", "--quick", "--root", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("demo: ")]
    assert len(lines) == 4 and "synthesized with other parameters" in lines[0]
    lines = lines[1:]
    assert "oracle global brightening" in lines[0]
    assert json.loads((stale / "summary.json").read_text())["params"]["seed"] == QUICK_DATA["seed"]

    summary = json.loads((tmp_path / "results" / "demo_quick" / "summary.json").read_text())
    for key in ("input_psnr", "output_psnr", "output_ssim", "oracle_brightening_psnr"):
        assert isinstance(summary[key], float)
    # The oracle is fitted on the test set itself, so it can only be at least as good as the untouched input.
    assert summary["oracle_brightening_psnr"] >= summary["input_psnr"]
    assert isinstance(summary["oracle_blurred_psnr"], float)
    assert summary["iterations"] == 2

    state = read_state_dict(str(tmp_path / "experiments" / "demo_quick" / "models" / "latest_G.pth"))
    assert "pcd_align.L1_dcnpack.conv_offset_mask.weight" in state
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    for name in ("demo_panel_quick.png", "demo_curve_quick.png"):
        img = cv2.imread(str(tmp_path / "figure" / name))
        assert img is not None and img.shape[0] > 50 and img.shape[1] > 50


def test_oracle_recovers_the_tone_curve_and_blur_scores_denoising():
    """The oracle finds the gain and gamma that made the input, and its blurred variant rewards denoising."""
    from sdsd.demo import _gaussian_blur, oracle_brightening

    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 48), indexing="ij")
    gt = (0.2 + 0.6 * (xx + yy) / 2).expand(2, 3, 32, 48).contiguous()  # smooth content
    lq = (gt / 2.0) ** (1 / 0.8)  # gt = 2 * lq ** 0.8
    clean = oracle_brightening([("s", lq, gt)])
    assert abs(clean["gain"] - 2.0) < 0.1 and abs(clean["gamma"] - 0.8) < 0.03
    assert clean["psnr"] > 40 and clean["psnr"] > clean["input_psnr"] + 15
    noisy = oracle_brightening([("s", (lq + 0.03 * torch.randn(lq.shape, generator=gen)).clamp(0, 1), gt)])
    assert noisy["blurred_psnr"] > noisy["psnr"] + 3  # on smooth content the blur removes most of the noise
    flat = torch.full((1, 3, 8, 8), 0.4, dtype=torch.float64)
    assert torch.allclose(_gaussian_blur(flat), flat)
