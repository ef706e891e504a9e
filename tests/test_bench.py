"""The benchmark machinery at tiny sizes: CLI, JSON fields, FLOP counting against a count made by hand.

No timing assertions: speed is what ``python -m bench`` reports, not what tests check.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import dcn
import sdsd
from bench.flops import conv_flops, count_flops, custom_formulas, dcn_flops
from bench.network_speed import TINY, build_net, reference_forward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def conv(cin, cout, k, h, w, batch=1):
    """Multiply-adds x 2 of one k x k convolution producing an h x w map, written out by hand."""
    return 2 * batch * cout * cin * k * k * h * w


def network_flops_by_hand(nf, n, g, front, back, height, width):
    """FLOPs of one SDSD-Net window from the published layer list (deformable convs as dense 3x3 convs)."""
    h1, w1 = height // 4, width // 4
    h2, w2, h3, w3 = h1 // 2, w1 // 2, h1 // 4, w1 // 4
    feats = conv(3, nf, 3, height, width) + conv(nf, nf, 3, height // 2, width // 2) + conv(nf, nf, 3, h1, w1)
    feats += 2 * front * conv(nf, nf, 3, h1, w1)
    feats += 2 * conv(nf, nf, 3, h2, w2) + 2 * conv(nf, nf, 3, h3, w3)

    def dcn_pack(h, w):  # offset/mask predictor + the deformable conv itself
        return conv(nf, g * 27, 3, h, w) + conv(nf, nf, 3, h, w)

    # The four offset convs of cat[neighbour, reference] (L3/L2/L1_offset_conv1, cas_offset_conv1) run as two
    # halves: the neighbour half per frame (in pcd), the reference half once per window (in pairs).
    pcd = conv(nf, nf, 3, h3, w3) + conv(nf, nf, 3, h3, w3) + dcn_pack(h3, w3)
    for h, w in ((h2, w2), (h1, w1)):
        pcd += conv(nf, nf, 3, h, w) + conv(2 * nf, nf, 3, h, w) + conv(nf, nf, 3, h, w) + dcn_pack(h, w)
        pcd += conv(2 * nf, nf, 3, h, w)
    pcd += conv(nf, nf, 3, h1, w1) + conv(nf, nf, 3, h1, w1) + dcn_pack(h1, w1)
    pairs = conv(nf, nf, 3, h3, w3) + conv(nf, nf, 3, h2, w2) + 2 * conv(nf, nf, 3, h1, w1)

    ha, wa, hb, wb = -(-h1 // 2), -(-w1 // 2), -(-h1 // 4), -(-w1 // 4)  # 3x3 stride-2 pad-1 pooling
    tsa = (n + 1) * conv(nf, nf, 3, h1, w1) + 2 * conv(n * nf, nf, 1, h1, w1)
    tsa += conv(2 * nf, nf, 1, ha, wa) + conv(nf, nf, 1, ha, wa)  # sAtt_2, sAtt_L1
    tsa += conv(2 * nf, nf, 3, hb, wb) + conv(nf, nf, 3, hb, wb)  # sAtt_L2, sAtt_L3
    tsa += conv(nf, nf, 3, ha, wa) + conv(nf, nf, 1, ha, wa)  # sAtt_3, sAtt_4
    tsa += conv(nf, nf, 3, h1, w1) + 2 * conv(nf, nf, 1, h1, w1)  # sAtt_5, sAtt_add_1/2

    recon = 2 * back * conv(nf, nf, 3, h1, w1) + conv(nf, 4 * nf, 3, h1, w1) + conv(nf, 256, 3, 2 * h1, 2 * w1)
    recon += conv(64, 64, 3, height, width) + conv(64, 3, 3, height, width)
    return n * feats + n * pcd + pairs + tsa + 2 * recon


def test_network_flop_count_equals_hand_count():
    net = build_net(TINY, torch.device("cpu"))
    x = torch.rand(1, 5, 3, 32, 48)
    with torch.no_grad():
        _, report = count_flops(net, net, x)
    expected = network_flops_by_hand(8, 5, 2, 1, 1, 32, 48)
    assert report["total"] == expected
    # The deformable convs (4 per frame) are counted once, by the counter, and match the formula.
    dcn_by_hand = 5 * sum(conv(8, 8, 3, h, w) for h, w in ((2, 3), (4, 6), (8, 12), (8, 12)))
    assert report["dcn"]["analytic"] == report["dcn"]["seen_by_counter"] == dcn_by_hand
    assert report["dcn"]["mode"].startswith("counted by FlopCounterMode")
    assert sum(report["by_stage"].values()) == expected


def test_single_conv_and_torchvision_dcn_formulas():
    layer = torch.nn.Conv2d(6, 10, 3, stride=2, padding=1)
    with FlopCounterMode(display=False) as counter:
        layer(torch.rand(2, 6, 20, 30))
    assert counter.get_total_flops() == conv_flops(2, 6, 10, 10, 15, 3, 3) == 2 * 2 * 10 * 6 * 9 * 10 * 15

    x, weight = torch.rand(2, 4, 6, 7), torch.rand(5, 4, 3, 3)
    offset, mask = torch.randn(2, 2 * 2 * 9, 6, 7), torch.rand(2, 2 * 9, 6, 7)
    expected = dcn_flops(2, 4, 5, 6, 7)
    assert expected == 2 * 2 * 5 * 4 * 9 * 6 * 7
    for op in (torchvision.ops.deform_conv2d, dcn.deform_conv2d):
        with FlopCounterMode(display=False, custom_mapping=custom_formulas()) as counter:
            op(x, offset, weight, None, padding=1, mask=mask)
        assert counter.get_total_flops() == expected, op


def test_reference_baseline_matches_the_network():
    net = build_net(TINY, torch.device("cpu"))
    x = torch.rand(2, 5, 3, 32, 32) * 0.3
    with torch.no_grad():
        ours = net(x)
        ref = reference_forward(net, x)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cli_quick_tiny_writes_expected_json(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "codes"), ROOT])}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--tiny", "--only", "network", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "forward fp32_nchw" in proc.stdout and "matmul peak fp32" in proc.stdout
    res = json.loads(out.read_text())
    assert res["meta"]["quick"] and res["meta"]["tiny"]
    net = res["network"]
    assert "skipped" not in net, net
    assert net["frame"] == [32, 48]
    assert net["peak"]["fp32"]["gflops"] > 0 and net["peak"]["bf16"]["gflops"] > 0
    assert net["flops"]["total_gflop"] * 1e9 == pytest.approx(network_flops_by_hand(8, 5, 2, 1, 1, 32, 48))
    assert {"reference", "fp32_nchw", "fp32_channels_last"} <= set(net["forward"])
    for v in net["forward"].values():
        assert {"seconds", "gflops", "fraction_of_peak", "speedup_vs_reference"} <= set(v)
    assert set(net["stages"]) == {"features", "pcd_align", "tsa_fusion", "reconstruction"}
    assert "convolution" in net["kernels"]
    assert net["streaming"]["frames"] == 8 and net["streaming"]["seconds_per_frame"] > 0
    assert net["channels_last_max_rel_diff"] < 1e-4 and net["reference_max_rel_diff"] < 1e-4
    assert {"psnr_fp32", "psnr_bf16", "psnr_delta_db", "psnr_bf16_vs_fp32"} <= set(net["bf16_accuracy"])


def test_cli_rejects_unknown_benchmark(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "codes"), ROOT])}
    proc = subprocess.run([sys.executable, "-m", "bench", "--only", "nosuch", "--out", str(tmp_path / "r.json")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown benchmark 'nosuch'" in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_tiny_network_builds_from_the_bench_options():
    assert sdsd.build_network(TINY).nf == 8


def test_train_speed_runs_a_training_step():
    # The bench builds its own option block: it must keep up with new train options (it once lacked one).
    from bench import train_speed

    result = train_speed.run(small=True, batch=1, crop=32, iters=1, warmup=1, device="cpu")
    assert result["network"] == "small" and result["nf"] == 16 and result["compile"] is False
    assert result["seconds_per_iter"] > 0 and result["first_iter_s"] > 0


def test_real_footage_bench_on_a_real_video(tmp_path):
    """bench.real_footage end to end on an encoded video: every method scored, auto matching from the sidecar."""
    from test_video import make_frames, make_video

    from bench import real_footage
    from sdsd.exposure import write_sidecar
    from tests.evaluation_helpers import save_tiny_checkpoint

    video = make_video(str(tmp_path / "clip.mp4"), make_frames(8, 144, 176), audio=None)
    weights = save_tiny_checkpoint(str(tmp_path / "tiny_G.pth"))
    with pytest.raises(sdsd.errors.UserError, match="sidecar"):
        real_footage.run(quick=True, model=weights, videos=[video])
    write_sidecar({"input": {"mean_linear": 0.01, "percentiles_linear": {"99": [0.05, 0.05, 0.05]},
                             "smoothed_percentiles_linear": {"99": [0.04, 0.04, 0.04]}}}, weights)
    result = real_footage.run(quick=True, model=weights, videos=[video])
    assert result["target"] == pytest.approx(0.04) and result["clips"] == ["clip_0"]
    for camera in real_footage.CAMERAS:
        assert list(result[camera]) == ["0.02", "0.04", "0.1"]
        for row in result[camera].values():
            assert row["brightening"] > row["input"] and row["brightening_blur"] > 0
            assert row["auto_over_brightening_db"] == pytest.approx(row["model_auto"] - row["brightening"], abs=0.02)
    # Less light, worse input.
    assert result["srgb"]["0.02"]["input"] < result["srgb"]["0.1"]["input"]
    assert "model_auto" in real_footage.format_table(result)
