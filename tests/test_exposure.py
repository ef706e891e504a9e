"""Training-input statistics beside each checkpoint, and the exposure matching of ``sdsd.enhance``."""

import json
import os

import numpy as np
import pytest
import torch

from sdsd.errors import UserError
from sdsd.exposure import estimate_noise, read_sidecar, sidecar_path, srgb_to_linear, summarize
from sdsd.training import train
from tests.test_train import load, make_options


def test_training_writes_input_statistics_beside_each_checkpoint(tmp_path):
    result = train(load(tmp_path, make_options(tmp_path, niter=2)), progress=False)
    models = tmp_path / "experiments" / "tiny" / "models"
    assert sorted(os.listdir(models)) == ["2_G.json", "2_G.pth", "latest_G.json", "latest_G.pth"]
    stats = read_sidecar(result["latest_G"])
    assert stats == json.loads((models / "2_G.json").read_text())
    assert stats["windows"] == 18 and stats["frames"] == 90  # all 18 training windows (3 scenes x 6) of 5 frames
    # make_data's inputs are gt // 6 + U{0..3}: uniform uint8 GT -> inputs uniform-ish on [0, 45] / 255.
    values = np.arange(256) // 6
    expected = float(srgb_to_linear(torch.tensor((values[:, None] + np.arange(4)[None]) / 255.0)).mean())
    assert stats["input"]["mean_linear"] == pytest.approx(expected, rel=0.05)
    assert stats["gt"]["mean_linear"] > 5 * stats["input"]["mean_linear"]
    assert len(stats["input"]["channel_mean_linear"]) == 3 and set(stats["input"]["percentiles_linear"]) >= {"5", "50"}
    assert stats["input"]["noise_sigma"] > 0
    # The .pth stays a plain state_dict.
    assert all(isinstance(v, torch.Tensor) for v in torch.load(result["latest_G"], weights_only=True).values())

    # Same seed, same data: the same statistics, and measuring them did not change what training did.
    again = train(load(tmp_path, make_options(tmp_path, niter=2, manual_seed=5), ["name=tiny2"]), progress=False)
    assert read_sidecar(again["latest_G"]) == stats
    a, b = (torch.load(p, weights_only=True) for p in (result["latest_G"], again["latest_G"]))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_noise_estimate_measures_white_noise():
    gen = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0.2, 0.6, 96)[None, None, :].expand(2, 3, 64, 96)
    noisy = ramp + 0.02 * torch.randn(ramp.shape, generator=gen)
    sigma = estimate_noise(noisy)
    assert sigma.shape == (3,) and torch.allclose(sigma, torch.full((3,), 0.02), rtol=0.08)
    assert float(estimate_noise(ramp).max()) < 1e-4  # a smooth ramp is no noise
    assert summarize(noisy)["noise_sigma"] == pytest.approx(float(sigma.mean()))


def test_bad_sidecar_is_a_user_error(tmp_path):
    weights = tmp_path / "x_G.pth"
    assert read_sidecar(str(weights)) is None
    with open(sidecar_path(str(weights)), "w") as f:
        f.write("{not json")
    with pytest.raises(UserError, match="x_G.json"):
        read_sidecar(str(weights))
