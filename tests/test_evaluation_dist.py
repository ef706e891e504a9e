"""A 2-process torchrun evaluation (gloo, CPU) gives the same metrics as a single process."""

import json
import os
import subprocess
import sys

import pytest
from evaluation_helpers import PUBLISHED_TEST, make_sdsd_tree, overrides, save_tiny_checkpoint, set_args

from sdsd.evaluation import quantitative

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_SDSD = os.path.join(PUBLISHED_TEST, "test_in_sdsd.yml")


def test_torchrun_two_processes_equal_one(tmp_path):
    tree = make_sdsd_tree(str(tmp_path / "data"))
    checkpoint = save_tiny_checkpoint(str(tmp_path / "tiny_G.pth"), seed=1)

    single = quantitative.main(["-opt", IN_SDSD, "--no-progress",
                                *set_args(overrides(tree, checkpoint, str(tmp_path / "one")))])

    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "codes"), REPO, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(REPO, "quantitative_test.py"), "-opt", IN_SDSD, "--json", str(tmp_path / "two.json"),
           *set_args(overrides(tree, checkpoint, str(tmp_path / "two")))]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("mean (scenes)") == 1  # only rank 0 reports

    with open(tmp_path / "two" / "metrics.json") as f:
        double = json.load(f)
    with open(tmp_path / "two.json") as f:
        assert json.load(f) == double
    assert double["world_size"] == 2 and single["world_size"] == 1
    assert sorted(os.listdir(tmp_path / "two")) == ["metrics.csv", "metrics.json"]
    assert [(r["scene"], r["index"]) for r in double["frames"]] == [(r["scene"], r["index"]) for r in single["frames"]]
    # Different chunking of the per-frame stage may move an output by ~1e-6, i.e. flip a rare uint8 rounding.
    for a, b in zip(double["frames"], single["frames"]):
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-3)
        assert a["ssim"] == pytest.approx(b["ssim"], abs=1e-4)
    assert double["scenes"].keys() == single["scenes"].keys()
    assert double["psnr"] == pytest.approx(single["psnr"], abs=1e-3)
    assert double["ssim"] == pytest.approx(single["ssim"], abs=1e-4)
