"""`make demo` end to end, shrunk: synthesize, train, evaluate, draw, summarise (``python -m sdsd.demo --quick``)."""

import json
import os
import subprocess
import sys

import cv2
import torch

from sdsd.archs import read_state_dict


def test_quick_demo_writes_every_artefact(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "sdsd.demo", "--quick", "--root", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("demo: ")]
    assert len(lines) == 3 and "oracle global brightening" in lines[0]

    summary = json.loads((tmp_path / "results" / "demo_quick" / "summary.json").read_text())
    for key in ("input_psnr", "output_psnr", "output_ssim", "oracle_brightening_psnr"):
        assert isinstance(summary[key], float)
    # The oracle is fitted on the test set itself, so it can only be at least as good as the untouched input.
    assert summary["oracle_brightening_psnr"] >= summary["input_psnr"]
    assert summary["iterations"] == 2

    state = read_state_dict(str(tmp_path / "experiments" / "demo_quick" / "models" / "latest_G.pth"))
    assert "pcd_align.L1_dcnpack.conv_offset_mask.weight" in state
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    for name in ("demo_panel_quick.png", "demo_curve_quick.png"):
        img = cv2.imread(str(tmp_path / "figure" / name))
        assert img is not None and img.shape[0] > 50 and img.shape[1] > 50
