"""``python -m sdsd.export``: real exports of a tiny checkpoint with non-zero offsets, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from evaluation_helpers import aligning_tiny_net

from sdsd.export import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "aligning_G.pth"
    torch.save(aligning_tiny_net().state_dict(), path)
    return str(path)


def test_openvino_export_matches_pytorch(checkpoint, tmp_path, capsys):
    import openvino as ov

    out = tmp_path / "ov"
    assert main([checkpoint, "--format", "openvino", "-o", str(out), "--height", "32", "--width", "48"]) == 0
    assert sorted(os.listdir(out)) == ["features.bin", "features.xml", "windows.bin", "windows.xml"]
    printed = capsys.readouterr().out
    diff = float(printed.split("random frames: ")[1].split()[0])
    assert diff <= 1e-4
    # The files work on their own: the window graph of real frames against PyTorch.
    net = aligning_tiny_net()
    torch.manual_seed(1)
    x = torch.rand(5, 3, 32, 48)
    with torch.no_grad():
        feats = net.extract_features(x)
        want = net.forward_features(tuple(f.unsqueeze(0) for f in feats), x[2:3])
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(out / "windows.xml")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled([f.unsqueeze(0).numpy() for f in feats] + [x[2:3].numpy()])
    assert max(float(np.abs(got[i] - want[i].numpy()).max()) for i in range(3)) <= 1e-4
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".export-")]  # no temporary folder left


def test_bad_shape_and_missing_runtime_are_one_line_errors(checkpoint, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "codes"), REPO])}
    bad = subprocess.run([sys.executable, "-m", "sdsd.export", checkpoint, "--format", "openvino", "-o",
                          str(tmp_path / "o"), "--height", "30", "--width", "48"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "multiples of 16" in bad.stderr and not (tmp_path / "o").exists()
    code = ("import sys; sys.modules['openvino'] = None; from sdsd.export import main; "
            f"main([{checkpoint!r}, '--format', 'openvino', '-o', {str(tmp_path / 'o')!r}])")
    missing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "openvino is not installed" in missing.stderr and not (tmp_path / "o").exists()


@pytest.fixture(autouse=True, scope="module")
def _release_runtime_objects():
    """Free this module's OpenVINO / ONNX Runtime objects when it ends, not at a later test's garbage collection
    (destroying them there aborted the process while a later test was encoding a video)."""
    yield
    import gc

    gc.collect()
