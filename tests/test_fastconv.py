"""The Winograd (NNPACK) inference path gives the direct-convolution results and touches nothing else."""

import copy

import pytest
import torch
import torch.nn.functional as F
from evaluation_helpers import aligning_tiny_net
from torch import nn

from sdsd.archs.fastconv import WinogradConv2d, eligible, nnpack_available, use_winograd

pytestmark = pytest.mark.skipif(not nnpack_available(), reason="this PyTorch build has no NNPACK")

def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _net():
    return aligning_tiny_net(nf=16)


@pytest.mark.parametrize("batch,cin,cout,size", [(1, 16, 16, (20, 28)), (3, 32, 24, (24, 24)), (2, 64, 64, (23, 29))])
def test_winograd_conv_equals_direct(batch, cin, cout, size):
    torch.manual_seed(1)
    conv = nn.Conv2d(cin, cout, 3, 1, 1)
    x = torch.randn(batch, cin, *size)
    ref = conv(x).detach()
    assert use_winograd(conv) == 1 and type(conv) is WinogradConv2d
    with torch.inference_mode():
        out = conv(x)
        out_cl = conv(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == ref.shape and out.is_contiguous()
    assert _rel(out, ref) < 1e-4 and _rel(out_cl, ref) < 1e-4
    # The Winograd kernels do round differently from the direct convolution: the path really ran.
    assert not torch.equal(out, ref)


def test_only_eligible_shapes_are_converted():
    convs = nn.ModuleList([
        nn.Conv2d(16, 16, 3, 1, 1),                      # converted
        nn.Conv2d(16, 16, 3, 2, 1),                      # stride 2
        nn.Conv2d(16, 16, 1),                            # 1x1
        nn.Conv2d(3, 16, 3, 1, 1),                       # RGB input
        nn.Conv2d(16, 3, 3, 1, 1),                       # RGB output
        nn.Conv2d(16, 16, 3, 1, 2, dilation=2),          # dilated
        nn.Conv2d(16, 16, 3, 1, 1, groups=2),            # grouped
        nn.Conv2d(16, 16, 3, 1, 1, padding_mode="reflect"),
    ])
    assert [eligible(c) for c in convs] == [True] + [False] * 7
    assert use_winograd(convs) == 1
    assert [type(c) is WinogradConv2d for c in convs] == [True] + [False] * 7


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_equal_the_direct_convolution(bias):
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 24, 3, 1, 1, bias=bias)
    ref = copy.deepcopy(conv)
    use_winograd(conv)
    x = torch.randn(2, 16, 24, 28, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(2, 24, 24, 28)
    out = conv(x)
    assert out.grad_fn is not None and "Winograd" in type(out.grad_fn).__name__
    out.backward(grad)
    ref(x_ref).backward(grad)
    assert _rel(out.detach(), ref(x_ref).detach()) < 1e-4
    assert _rel(x.grad, x_ref.grad) < 1e-4
    assert _rel(conv.weight.grad, ref.weight.grad) < 1e-4
    if bias:
        assert _rel(conv.bias.grad, ref.bias.grad) < 1e-4
    # Frozen weights: only the input gradient is asked for.
    conv.weight.requires_grad_(False)
    x.grad = None
    conv(x).backward(grad)
    assert _rel(x.grad, x_ref.grad) < 1e-4


def test_small_frames_autocast_and_other_dtypes_use_the_plain_convolution():
    torch.manual_seed(3)
    conv = nn.Conv2d(16, 16, 3, 1, 1)
    use_winograd(conv)
    small = torch.randn(1, 16, 12, 12)                   # below MIN_PIXELS
    with torch.no_grad():
        assert torch.equal(conv(small), F.conv2d(small, conv.weight, conv.bias, padding=1))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(torch.randn(1, 16, 32, 32)).dtype == torch.bfloat16
        double = copy.deepcopy(conv).double()
        xd = torch.randn(1, 16, 32, 32, dtype=torch.float64)
        assert torch.equal(double(xd), F.conv2d(xd, double.weight, double.bias, padding=1))


def test_network_forward_and_feature_reuse_equal_the_plain_network():
    net = _net()
    fast = copy.deepcopy(net)
    converted = use_winograd(fast)
    # 16 channels: every 3x3 stride-1 nf->nf or 2nf->nf conv, TSA k3 convs, the residual blocks and the
    # deformable convs' offset predictors are converted; the state dict is untouched.
    assert converted > 20
    assert list(fast.state_dict()) == list(net.state_dict())
    # Frames large enough that the level-1 features (H/4 x W/4) pass MIN_PIXELS.
    x = torch.rand(1, 5, 3, 96, 128) * 0.3
    clip = torch.rand(7, 3, 96, 96) * 0.3
    windows = torch.tensor([[4, 3, 0, 1, 2], [1, 2, 3, 4, 5]])
    with torch.inference_mode():
        for a, b in zip(fast(x), net(x)):
            assert _rel(a, b) < 1e-4
        feats = fast.extract_features(clip)
        reused = fast.forward_features(tuple(f[windows] for f in feats), clip[windows[:, 2]])
        plain = net(clip[windows])
    for a, b in zip(reused, plain):
        assert _rel(a, b) < 1e-4


def test_network_gradients_equal_the_plain_network():
    net = _net()
    fast = copy.deepcopy(net)
    use_winograd(fast)
    x = torch.rand(1, 5, 3, 96, 96) * 0.3
    grads = []
    for m in (net, fast):
        sum(o.square().sum() for o in m(x)).backward()
        grads.append({k: p.grad for k, p in m.named_parameters()})
    for k, g in grads[0].items():
        assert float((grads[1][k] - g).abs().max()) <= 1e-3 * float(g.abs().max()) + 1e-7, k


def test_use_winograd_reverts():
    net = _net()
    n = use_winograd(net)
    assert use_winograd(net, enabled=False) == n
    assert not any(type(m) is WinogradConv2d for m in net.modules())
