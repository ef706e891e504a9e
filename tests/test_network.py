"""The network matches docs/protocol.md#network: keys, shapes, parameter count, Retinex maths, batching, loading."""

import pytest
import torch

import sdsd
from sdsd.archs import load_network, load_network_report, read_state_dict
from sdsd.errors import UserError

PUBLISHED = dict(which_model_G="denoise_illumination_enhance", nf=64, nframes=5, groups=8, front_RBs=5,
                 back_RBs=10, predeblur=True, HR_in=True, w_TSA=True)
TINY = dict(which_model_G="denoise_illumination_enhance", nf=8, nframes=5, groups=2, front_RBs=1, back_RBs=1)


def expected_shapes(nf=64, n=5, g=8, front=5, back=10):
    """The checkpoint keys and shapes, written out from the published layer list independently of the implementation."""
    shapes = {}

    def conv(name, cin, cout, k=3):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    conv("conv_first_1", 3, nf)
    conv("conv_first_2", nf, nf)
    conv("conv_first_3", nf, nf)
    for i in range(front):
        conv(f"feature_extraction.{i}.conv1", nf, nf)
        conv(f"feature_extraction.{i}.conv2", nf, nf)
    for name in ("fea_L2_conv1", "fea_L2_conv2", "fea_L3_conv1", "fea_L3_conv2"):
        conv(name, nf, nf)
    p = "pcd_align."
    conv(p + "L3_offset_conv1", 2 * nf, nf)
    conv(p + "L3_offset_conv2", nf, nf)
    for lvl in ("L2", "L1"):
        conv(p + f"{lvl}_offset_conv1", 2 * nf, nf)
        conv(p + f"{lvl}_offset_conv2", 2 * nf, nf)
        conv(p + f"{lvl}_offset_conv3", nf, nf)
        conv(p + f"{lvl}_fea_conv", 2 * nf, nf)
    conv(p + "cas_offset_conv1", 2 * nf, nf)
    conv(p + "cas_offset_conv2", nf, nf)
    for lvl in ("L3", "L2", "L1", "cas"):
        conv(p + f"{lvl}_dcnpack", nf, nf)
        conv(p + f"{lvl}_dcnpack.conv_offset_mask", nf, g * 3 * 9)
    t = "tsa_fusion."
    conv(t + "tAtt_1", nf, nf)
    conv(t + "tAtt_2", nf, nf)
    conv(t + "fea_fusion", n * nf, nf, 1)
    conv(t + "sAtt_1", n * nf, nf, 1)
    conv(t + "sAtt_2", 2 * nf, nf, 1)
    conv(t + "sAtt_3", nf, nf)
    conv(t + "sAtt_4", nf, nf, 1)
    conv(t + "sAtt_5", nf, nf)
    conv(t + "sAtt_L1", nf, nf, 1)
    conv(t + "sAtt_L2", 2 * nf, nf)
    conv(t + "sAtt_L3", nf, nf)
    conv(t + "sAtt_add_1", nf, nf, 1)
    conv(t + "sAtt_add_2", nf, nf, 1)
    for s in ("_denoise", ""):
        for i in range(back):
            conv(f"recon_trunk{s}.{i}.conv1", nf, nf)
            conv(f"recon_trunk{s}.{i}.conv2", nf, nf)
        conv(f"upconv1{s}", nf, 4 * nf)
        conv(f"upconv2{s}", nf, 256)
        conv(f"HRconv{s}", 64, 64)
        conv(f"conv_last{s}", 64, 3)
    return shapes


def test_published_keys_shapes_and_parameter_count():
    net = sdsd.build_network(PUBLISHED)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == expected_shapes()
    assert sum(p.numel() for p in net.parameters()) == 4_446_630


def test_tiny_keys_and_no_tsa_variant():
    net = sdsd.build_network(TINY)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected_shapes(8, 5, 2, 1, 1)
    plain = sdsd.build_network({**TINY, "w_TSA": False})
    assert tuple(plain.state_dict()["tsa_fusion.weight"].shape) == (8, 40, 1, 1)
    out = plain(torch.rand(1, 5, 3, 32, 32))
    assert out[0].shape == (1, 3, 32, 32)


def test_registry_type_key_and_unknown_key():
    net = sdsd.build_network({"type": "denoise_illumination_enhance", "nf": 8, "groups": 2, "front_RBs": 1,
                              "back_RBs": 1})
    assert net.nf == 8
    with pytest.raises(UserError, match="network_G.nff"):
        sdsd.build_network({**TINY, "nff": 3})
    with pytest.raises(UserError, match="unknown network"):
        sdsd.build_network({**TINY, "which_model_G": "edvr"})


def _perturb(net):
    """Give the zero-initialised offset convs non-zero weights so alignment really deforms."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv_offset_mask" in name:
                p.normal_(0, 0.05)
    return net


def test_outputs_obey_retinex_composition():
    torch.manual_seed(0)
    net = _perturb(sdsd.build_network(TINY)).eval()
    x = torch.rand(2, 5, 3, 32, 48) * 0.3
    with torch.no_grad():
        enhanced, illumination, denoised = net(x)
    base = x[:, 2]
    assert enhanced.shape == illumination.shape == denoised.shape == (2, 3, 32, 48)
    assert torch.all(illumination <= 1)
    assert torch.all(illumination >= torch.clamp(base, max=1))
    torch.testing.assert_close(enhanced, denoised / illumination.clamp(0.001, 1))
    noise = net._reconstruct(_fused(net, x), "_denoise")
    torch.testing.assert_close(denoised, base - noise, rtol=1e-5, atol=1e-6)


def _fused(net, x):
    b, n = x.shape[:2]
    feats = net.extract_features(x.flatten(0, 1))
    feats = [f.view(b, n, *f.shape[1:]) for f in feats]
    c = net.center
    aligned = torch.stack([net.pcd_align([f[:, i] for f in feats], [f[:, c] for f in feats]) for i in range(n)], 1)
    return net.tsa_fusion(aligned)


def test_batched_alignment_equals_per_frame_loop():
    """The batched PCD equals aligning each frame separately (the reference's loop)."""
    torch.manual_seed(0)
    net = _perturb(sdsd.build_network(TINY)).eval()
    x = torch.rand(2, 5, 3, 32, 48)
    with torch.no_grad():
        enhanced, illumination, _ = net(x)
        ill = torch.clamp(torch.maximum(net._reconstruct(_fused(net, x), ""), x[:, 2]), max=1)
    torch.testing.assert_close(illumination, ill, rtol=1e-5, atol=1e-5)


def test_feature_reuse_equals_forward():
    torch.manual_seed(0)
    net = _perturb(sdsd.build_network(TINY)).eval()
    clip = torch.rand(7, 3, 32, 32)
    windows = torch.tensor([[4, 3, 0, 1, 2], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6]])
    with torch.no_grad():
        feats = net.extract_features(clip)
        reused = net.forward_features(tuple(f[windows] for f in feats), clip[windows[:, 2]])
        plain = net(clip[windows])
    for a, b in zip(reused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_size_not_multiple_of_16_is_rejected():
    net = sdsd.build_network(TINY)
    with pytest.raises(UserError, match="multiple of 16"):
        net(torch.rand(1, 5, 3, 30, 48))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = _perturb(sdsd.build_network(TINY))
    enhanced, illumination, denoised = net(torch.rand(1, 5, 3, 32, 32) * 0.2)
    (enhanced.sum() + illumination.sum() + denoised.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


def test_checkpoint_round_trip_and_module_prefix(tmp_path):
    net = sdsd.build_network(TINY)
    path = tmp_path / "net_G.pth"
    torch.save(net.state_dict(), path)
    other = sdsd.build_network(TINY)
    load_network(other, str(path), strict=True)
    for k, v in net.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    prefixed = tmp_path / "ddp_G.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, prefixed)
    load_network(sdsd.build_network(TINY), str(prefixed))
    wrapped = tmp_path / "params_G.pth"
    torch.save({"params": net.state_dict()}, wrapped)
    assert set(read_state_dict(str(wrapped))) == set(net.state_dict())


def test_checkpoint_that_does_not_fit(tmp_path):
    net = sdsd.build_network(TINY)
    path = tmp_path / "a_G.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(UserError, match="shape mismatches, first: conv_first_1.weight"):
        load_network(sdsd.build_network({**TINY, "nf": 16}), str(path))
    state = net.state_dict()
    state.pop("conv_last.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(UserError, match="1 missing keys, first: conv_last.bias; 1 unexpected keys, first: extra"):
        load_network(sdsd.build_network(TINY), str(path))
    # Non-strict loading tolerates only the checkpoint's extra keys: a missing tensor would stay random.
    with pytest.raises(UserError, match=r"1 of its \d+ tensors are missing from the checkpoint \(first: conv_last"):
        load_network(sdsd.build_network(TINY), str(path), strict=False)
    state["conv_last.bias"] = net.state_dict()["conv_last.bias"]
    torch.save(state, path)
    report = load_network_report(sdsd.build_network(TINY), str(path), strict=False)
    assert report.counts() == {"loaded": len(net.state_dict()), "missing": 0, "unexpected": 1}
    assert report.unexpected == ("extra.weight",)


def test_unreadable_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="broken.pth: not a readable PyTorch checkpoint"):
        read_state_dict(str(bad))
    with pytest.raises(UserError, match="checkpoint not found"):
        read_state_dict(str(tmp_path / "nope.pth"))
    torch.save({"step": 3}, bad)
    with pytest.raises(UserError, match="does not hold a network state_dict"):
        read_state_dict(str(bad))


def test_illumination_bias_initialises_only_the_illumination_output():
    torch.manual_seed(0)
    plain = sdsd.build_network(TINY)
    torch.manual_seed(0)
    biased = sdsd.build_network({**TINY, "illumination_bias": 0.5})
    assert torch.equal(biased.conv_last.bias, torch.full_like(biased.conv_last.bias, 0.5))
    for key, value in plain.state_dict().items():
        if key != "conv_last.bias":
            assert torch.equal(value, biased.state_dict()[key]), key
    # Starting above the (dark) input, the illumination branch gets a gradient at every pixel.
    x = torch.rand(1, 5, 3, 16, 16) * 0.2
    biased(x)[1].sum().backward()
    assert biased.conv_last.bias.grad.abs().min() > 0
