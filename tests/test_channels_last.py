"""The channels_last path (``net.to_channels_last()``) gives the NCHW results, for forward and feature reuse."""

import copy

import torch
from evaluation_helpers import aligning_tiny_net


def _nets():
    net = aligning_tiny_net()
    return net, copy.deepcopy(net).to_channels_last()


def _close(a, b):
    assert float((a - b).abs().max() / b.abs().max()) < 1e-4


def test_channels_last_forward_equals_nchw():
    net, net_cl = _nets()
    assert net_cl.fea_L2_conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 5, 3, 32, 48) * 0.3
    with torch.no_grad():
        for a, b in zip(net_cl(x), net(x)):
            assert a.shape == b.shape and a.is_contiguous()
            _close(a, b)


def test_channels_last_feature_reuse_and_nchw_inputs():
    net, net_cl = _nets()
    clip = torch.rand(7, 3, 32, 32)
    windows = torch.tensor([[4, 3, 0, 1, 2], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        feats = net_cl.extract_features(clip)
        assert feats[0].is_contiguous(memory_format=torch.channels_last)
        reused = net_cl.forward_features(tuple(f[windows] for f in feats), clip[windows[:, 2]])
        plain = net(clip[windows])
    for a, b in zip(reused, plain):
        _close(a, b)


def test_channels_last_gradients_match():
    net, net_cl = _nets()
    x = torch.rand(1, 5, 3, 32, 32) * 0.2
    grads = []
    for m in (net, net_cl):
        m.zero_grad()
        sum(o.sum() for o in m(x)).backward()
        grads.append({k: p.grad for k, p in m.named_parameters()})
    for k, g in grads[0].items():
        assert float((grads[1][k] - g).abs().max()) <= 1e-4 * float(g.abs().max()) + 1e-6, k
