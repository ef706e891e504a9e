"""The offset-conv saving: the four offset convs of ``cat[neighbour, reference]`` run as two halves of one weight.

Each half is computed once per frame (neighbour) or once per window (reference) and the halves are summed. These
tests hold the network to the published computation written out here from docs/protocol.md#network (full
convolutions on the concatenations, every frame aligned on its own): training forward, gradients, the engine's
streaming path, Winograd convolutions, and the checkpoint keys.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_network import TINY, expected_shapes

import sdsd
from sdsd.archs.fastconv import MIN_PIXELS, nnpack_available, use_winograd
from sdsd.data.windows import index_generation
from sdsd.inference import build_engine


def lrelu(x):
    return F.leaky_relu(x, 0.1)


def up(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def published_pcd(p, nbr, ref):
    """PCD alignment of one neighbour against the reference, as published: full convs on the concatenations."""
    off3 = lrelu(p.L3_offset_conv2(lrelu(p.L3_offset_conv1(torch.cat([nbr[2], ref[2]], 1)))))
    fea3 = lrelu(p.L3_dcnpack([nbr[2], off3]))
    off2 = lrelu(p.L2_offset_conv1(torch.cat([nbr[1], ref[1]], 1)))
    off2 = lrelu(p.L2_offset_conv2(torch.cat([off2, up(off3) * 2], 1)))
    off2 = lrelu(p.L2_offset_conv3(off2))
    fea2 = lrelu(p.L2_fea_conv(torch.cat([p.L2_dcnpack([nbr[1], off2]), up(fea3)], 1)))
    off1 = lrelu(p.L1_offset_conv1(torch.cat([nbr[0], ref[0]], 1)))
    off1 = lrelu(p.L1_offset_conv2(torch.cat([off1, up(off2) * 2], 1)))
    off1 = lrelu(p.L1_offset_conv3(off1))
    fea1 = p.L1_fea_conv(torch.cat([p.L1_dcnpack([nbr[0], off1]), up(fea2)], 1))
    off = lrelu(p.cas_offset_conv2(lrelu(p.cas_offset_conv1(torch.cat([fea1, ref[0]], 1)))))
    return lrelu(p.cas_dcnpack([fea1, off]))


def published_forward(net, x):
    """The whole network with the published PCD computation, frame by frame (the reference's loop)."""
    b, n = x.shape[:2]
    c = net.center
    feats = [f.view(b, n, *f.shape[1:]) for f in net.pyramid(x.flatten(0, 1))]
    ref = [f[:, c] for f in feats]
    aligned = torch.stack([published_pcd(net.pcd_align, [f[:, i] for f in feats], ref) for i in range(n)], 1)
    fea = net.tsa_fusion(aligned)
    noise, ill_raw = net._reconstruct(fea, "_denoise"), net._reconstruct(fea, "")
    base = x[:, c]
    denoised = base - noise
    illumination = torch.clamp(torch.maximum(ill_raw, base), max=1.0)
    return denoised / torch.clamp(illumination, 0.001, 1.0), illumination, denoised


def random_net(seed=0, **opts):
    """A tiny SDSD-Net with random weights everywhere (offset predictors included, so alignment deforms)."""
    torch.manual_seed(seed)
    net = sdsd.build_network({**TINY, **opts})
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(0, 0.05 if "conv_offset_mask" in name else 0.2 / max(1, p[0].numel()) ** 0.5)
            if name.endswith("bias"):
                p.uniform_(-0.05, 0.05)
    return net


def test_training_forward_and_gradients_equal_the_published_computation():
    net = random_net().train()
    x = torch.rand(2, 5, 3, 32, 48)
    ours = net(x)
    theirs = published_forward(net, x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    weights = [torch.rand_like(o) for o in ours]
    grads = []
    for outs in (ours, theirs):
        net.zero_grad()
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()})
    for name in grads[0]:
        a, b = grads[0][name], grads[1][name]
        assert a.abs().max() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()), msg=name)


def test_packed_features_are_the_pyramid_and_its_neighbour_halves():
    net = random_net().eval()
    frames = torch.rand(3, 3, 32, 48)
    with torch.no_grad():
        packed = net.extract_features(frames)
        levels = net.pyramid(frames)
        for k, (p, level) in enumerate(zip(packed, levels)):
            conv = getattr(net.pcd_align, f"L{k + 1}_offset_conv1")
            assert p.shape == (3, 2 * net.nf, *level.shape[-2:])
            torch.testing.assert_close(p[:, :net.nf], level, rtol=0, atol=0)
            # The neighbour half: the full conv of cat[level, 0].
            want = conv(torch.cat([level, torch.zeros_like(level)], 1))
            torch.testing.assert_close(p[:, net.nf:], want, rtol=1e-5, atol=1e-6)


def test_streaming_engine_equals_the_published_computation():
    net = random_net(seed=3).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(7)]
    engine = build_engine(net, "cpu", conv_backend="nchw")
    got = list(engine.stream(iter(frames), as_float=True))

    clip = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    with torch.no_grad():
        for i, out in enumerate(got):
            window = index_generation(i, len(frames), net.nframes, padding="new_info")
            enhanced = published_forward(net, clip[window].unsqueeze(0))[0][0].clamp(0, 1)
            np.testing.assert_allclose(out, enhanced.permute(1, 2, 0).numpy(), rtol=0, atol=1e-5)


@pytest.mark.skipif(not nnpack_available(), reason="needs NNPACK")
def test_winograd_halves_equal_the_published_computation():
    """With Winograd convolutions (the CPU default for training and inference): outputs and gradients."""
    net = random_net(seed=5, nf=16).train()
    x = torch.rand(1, 5, 3, 128, 128)
    assert (128 // 4) ** 2 >= MIN_PIXELS  # the L1 offset convs (and their halves) run on NNPACK
    want = published_forward(net, x)
    weights = [torch.rand_like(o) for o in want]
    net.zero_grad()
    sum((o * w).sum() for o, w in zip(want, weights)).backward()
    want_grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    assert use_winograd(net) > 0
    got = net(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    net.zero_grad()
    sum((o * w).sum() for o, w in zip(got, weights)).backward()
    for name, p in net.named_parameters():
        b = want_grads[name]
        torch.testing.assert_close(p.grad, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()), msg=name)


def test_checkpoint_keys_and_loading_unchanged(tmp_path):
    net = random_net()
    state = net.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(8, 5, 2, 1, 1)
    for name in ("L1_offset_conv1", "L2_offset_conv1", "L3_offset_conv1", "cas_offset_conv1"):
        assert state[f"pcd_align.{name}.weight"].shape == (8, 16, 3, 3)
    path = tmp_path / "net.pth"
    torch.save(state, path)
    other = sdsd.archs.load_network(sdsd.build_network(TINY), str(path))
    x = torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(x), net.eval()(x), rtol=0, atol=0)
