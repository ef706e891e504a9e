"""dcn.deform_conv2d against torchvision.ops.deform_conv2d, and the ModulatedDeformConvPack layer."""

import logging

import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

import dcn
import dcn.cpu
import dcn.modules


def _out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _make(n, c, h, w, out_c, groups, dgroups, k, s, p, d, offset_kind, with_mask, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    kh, kw = k
    ho, wo = _out_size(h, kh, s[0], p[0], d[0]), _out_size(w, kw, s[1], p[1], d[1])
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    offset = torch.randn(n, 2 * dgroups * kh * kw, ho, wo, generator=gen, dtype=dtype)
    if offset_kind == "integer":
        # Samples exactly on pixels, on the -1 / H boundaries and beyond (gradient side conventions matter here).
        offset = (offset * 2.5).round()
    elif offset_kind == "far":
        offset = offset * 6.0
    elif offset_kind == "half":
        offset = (offset * 4).round() / 2
    mask = torch.rand(n, dgroups * kh * kw, ho, wo, generator=gen, dtype=dtype) if with_mask else None
    weight = torch.randn(out_c, c // groups, kh, kw, generator=gen, dtype=dtype)
    bias = torch.randn(out_c, generator=gen, dtype=dtype)
    grad_out = torch.randn(n, out_c, ho, wo, generator=gen, dtype=dtype)
    return x, offset, weight, bias, mask, grad_out


def _run(op, x, offset, weight, bias, mask, grad_out, s, p, d):
    leaves = [t.clone().requires_grad_() for t in (x, offset, weight, bias)]
    m = mask.clone().requires_grad_() if mask is not None else None
    out = op(*leaves, stride=s, padding=p, dilation=d, mask=m)
    grads = torch.autograd.grad(out, leaves + ([m] if m is not None else []), grad_out)
    return (out, *grads)


CASES = [
    # n, c, h, w, out_c, groups, deformable groups, kernel, stride, padding, dilation, with mask
    (2, 4, 7, 9, 6, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1), True),
    (2, 8, 6, 7, 4, 2, 4, (3, 3), (1, 1), (1, 1), (1, 1), True),
    (1, 6, 8, 5, 6, 3, 2, (3, 2), (2, 1), (0, 2), (2, 1), False),
    (2, 4, 9, 8, 2, 1, 2, (2, 3), (2, 3), (1, 0), (1, 2), True),
    (1, 2, 1, 6, 3, 1, 1, (1, 3), (1, 1), (0, 1), (1, 1), False),
]


@pytest.mark.parametrize("offset_kind", ["random", "integer", "half", "far"])
@pytest.mark.parametrize("case", CASES)
def test_matches_torchvision_float64(case, offset_kind):
    n, c, h, w, out_c, groups, dgroups, k, s, p, d, with_mask = case
    tensors = _make(n, c, h, w, out_c, groups, dgroups, k, s, p, d, offset_kind, with_mask, torch.float64)
    ours = _run(dcn.deform_conv2d, *tensors, s, p, d)
    ref = _run(tv_deform_conv2d, *tensors, s, p, d)
    names = ["output", "input", "offset", "weight", "bias", "mask"]
    for name, a, b in zip(names, ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}")


def test_matches_torchvision_float32_with_int_arguments():
    tensors = _make(2, 8, 10, 12, 8, 1, 2, (3, 3), (1, 1), (1, 1), (1, 1), "random", True, torch.float32)
    x, offset, weight, bias, mask, _ = tensors
    ours = dcn.deform_conv2d(x, offset, weight, bias, stride=1, padding=1, dilation=1, mask=mask)
    ref = tv_deform_conv2d(x, offset, weight, bias, stride=1, padding=1, dilation=1, mask=mask)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_zero_offsets_equal_plain_convolution_with_boundary_offset_gradients():
    # Zero offsets put every sample on a pixel and the border samples exactly on -1 and H.
    x, offset, weight, bias, mask, grad_out = _make(
        1, 3, 5, 6, 2, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1), "random", False, torch.float64
    )
    offset = torch.zeros_like(offset)
    ours = _run(dcn.deform_conv2d, x, offset, weight, bias, None, grad_out, (1, 1), (1, 1), (1, 1))
    ref = _run(tv_deform_conv2d, x, offset, weight, bias, None, grad_out, (1, 1), (1, 1), (1, 1))
    torch.testing.assert_close(ours[0], torch.nn.functional.conv2d(x, weight, bias, padding=1))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_chunked_equals_unchunked(monkeypatch):
    tensors = _make(2, 4, 5, 7, 5, 1, 2, (3, 3), (1, 1), (1, 1), (1, 1), "random", True, torch.float64)
    s = p = d = (1, 1)
    whole = _run(dcn.deform_conv2d, *tensors, s, p, d)
    per_row = 4 * 9 * 7 * 8  # bytes of one output row of the column buffer
    assert len(dcn.cpu._plan_chunks(2, 5, per_row)) == 1
    for limit in (per_row * 5, per_row * 2, 1):  # one image per chunk; 2 rows per chunk; one row per chunk
        monkeypatch.setattr(dcn.cpu, "COLUMN_BUFFER_BYTES", limit)
        assert len(dcn.cpu._plan_chunks(2, 5, per_row)) > 1
        chunked = _run(dcn.deform_conv2d, *tensors, s, p, d)
        for a, b in zip(chunked, whole):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_plan_chunks_cover_everything():
    for batch, rows, per_row, limit in [(5, 7, 10, 70), (5, 7, 10, 150), (2, 7, 10, 25), (1, 3, 10, 1)]:
        dcn.cpu.COLUMN_BUFFER_BYTES, saved = limit, dcn.cpu.COLUMN_BUFFER_BYTES
        try:
            chunks = dcn.cpu._plan_chunks(batch, rows, per_row)
        finally:
            dcn.cpu.COLUMN_BUFFER_BYTES = saved
        covered = sorted((b, r) for b0, b1, r0, r1 in chunks for b in range(b0, b1) for r in range(r0, r1))
        assert covered == [(b, r) for b in range(batch) for r in range(rows)]
        assert all((b1 - b0) * (r1 - r0) * per_row <= max(limit, per_row) for b0, b1, r0, r1 in chunks)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    dt = torch.float64
    x = torch.randn(1, 4, 3, 4, generator=gen, dtype=dt, requires_grad=True)
    # Fractional offsets keep the samples away from integer kinks, where the numerical derivative is undefined.
    sign = torch.tensor([1.0, -1.0], dtype=dt).repeat(8).view(1, -1, 1, 1)
    offset = (torch.rand(1, 2 * 2 * 4, 4, 3, generator=gen, dtype=dt) * 0.8 + 0.1) * sign
    offset.requires_grad_()
    mask = torch.rand(1, 2 * 4, 4, 3, generator=gen, dtype=dt, requires_grad=True)
    weight = torch.randn(2, 2, 2, 2, generator=gen, dtype=dt, requires_grad=True)
    bias = torch.randn(2, generator=gen, dtype=dt, requires_grad=True)

    def fn(x, offset, weight, bias, mask):
        return dcn.deform_conv2d(x, offset, weight, bias, stride=1, padding=(1, 0), dilation=1, mask=mask)

    assert torch.autograd.gradcheck(fn, (x, offset, weight, bias, mask), eps=1e-6, atol=1e-6)


def test_autocast_bfloat16_computes_in_input_dtype():
    x, offset, weight, bias, mask, _ = _make(
        1, 4, 6, 6, 4, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1), "random", True, torch.float32
    )
    ref = tv_deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dcn.deform_conv2d(x, offset.bfloat16(), weight, bias, padding=1, mask=mask.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "offset_channels, mask_channels, match",
    [(17, 9, "offset has 17 channels"), (18, 8, "mask shape"), (36, 18, "do not split")],
)
def test_bad_shapes_raise_one_line_errors(offset_channels, mask_channels, match):
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(ValueError, match=match):
        dcn.deform_conv2d(
            x, torch.zeros(1, offset_channels, 5, 5), torch.randn(2, 3, 3, 3), padding=1,
            mask=torch.ones(1, mask_channels, 5, 5),
        )


def test_pack_parameters_and_init():
    m = dcn.ModulatedDeformConvPack(8, 6, 3, stride=1, padding=1, deformable_groups=2)
    shapes = {name: tuple(p.shape) for name, p in m.named_parameters()}
    assert shapes == {
        "weight": (6, 8, 3, 3),
        "bias": (6,),
        "conv_offset_mask.weight": (2 * 3 * 9, 8, 3, 3),
        "conv_offset_mask.bias": (2 * 3 * 9,),
    }
    bound = 1 / (8 * 9) ** 0.5
    assert m.weight.abs().max() <= bound and m.weight.std() > bound / 4
    assert torch.count_nonzero(m.bias) == 0
    assert torch.count_nonzero(m.conv_offset_mask.weight) == 0 and torch.count_nonzero(m.conv_offset_mask.bias) == 0
    assert dict(dcn.ModulatedDeformConvPack(4, 4, 3, bias=False).named_parameters()).keys() == {
        "weight", "conv_offset_mask.weight", "conv_offset_mask.bias"
    }


@pytest.mark.parametrize("extra_offset_mask", [True, False])
def test_pack_forward_matches_formula(extra_offset_mask):
    torch.manual_seed(0)
    m = dcn.ModulatedDeformConvPack(4, 5, 3, padding=1, deformable_groups=2, extra_offset_mask=extra_offset_mask)
    torch.nn.init.normal_(m.conv_offset_mask.weight, std=0.3)
    torch.nn.init.normal_(m.conv_offset_mask.bias, std=0.3)
    torch.nn.init.normal_(m.bias)
    x, feat = torch.randn(2, 4, 6, 7), torch.randn(2, 4, 6, 7)
    out = m([x, feat]) if extra_offset_mask else m(x)
    o1, o2, mk = torch.chunk(m.conv_offset_mask(feat if extra_offset_mask else x), 3, dim=1)
    ref = tv_deform_conv2d(x, torch.cat([o1, o2], 1), m.weight, m.bias, padding=1, mask=torch.sigmoid(mk))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    out.square().mean().backward()
    assert m.conv_offset_mask.weight.grad.abs().sum() > 0 and m.weight.grad.abs().sum() > 0


def test_pack_warns_on_huge_offsets_when_the_statistic_is_read(caplog):
    m = dcn.ModulatedDeformConvPack(2, 2, 3, padding=1)
    with torch.no_grad():
        m.conv_offset_mask.bias.fill_(500.0)
    x = torch.randn(1, 2, 4, 4)
    with caplog.at_level(logging.WARNING, logger="dcn"):
        for _ in range(4):  # forward passes only record on the device; nothing is logged yet
            m(x)
        assert [r for r in caplog.records if r.name == "dcn"] == []
        assert dcn.report_offsets(m) == {"": 500.0}
        assert dcn.report_offsets(m) == {"": 0.0}  # read and reset: a new window starts
        m(x)
        dcn.report_offsets(m)
    warnings = [r for r in caplog.records if r.name == "dcn"]
    assert len(warnings) == 2 and "offset mean" in warnings[0].getMessage() and "500.0" in warnings[0].getMessage()


def test_offset_statistic_names_the_diverging_layer_of_a_network(caplog):
    from sdsd import build_network

    net = build_network({"nf": 8, "nframes": 3, "groups": 2, "front_RBs": 1, "back_RBs": 1}).eval()
    names = [n for n, mod in net.named_modules() if isinstance(mod, dcn.ModulatedDeformConvPack)]
    layer = dict(net.named_modules())[names[1]]
    with torch.no_grad():
        layer.conv_offset_mask.bias.fill_(300.0)
        net(torch.rand(1, 3, 3, 32, 32))
    with caplog.at_level(logging.WARNING, logger="dcn"):
        values = dcn.report_offsets(net)
    assert set(values) == set(names) and values[names[1]] > 100
    assert all(0 <= values[n] < 100 for n in names if n != names[1])
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"deformable conv {names[1]}"]


def test_offset_statistic_follows_the_module_and_stays_out_of_the_checkpoint():
    m = dcn.ModulatedDeformConvPack(2, 2, 3, padding=1)
    assert "offset_abs_mean_max" not in m.state_dict() and dict(m.named_buffers()) == {}
    m.to(torch.float64)
    m(torch.randn(1, 2, 4, 4, dtype=torch.float64))
    assert m.offset_abs_mean_max.dtype == torch.float32
    moved = dcn.ModulatedDeformConvPack(2, 2, 3, padding=1)
    with torch.inference_mode():
        moved.float()
        moved(torch.randn(1, 2, 4, 4))
    moved(torch.randn(1, 2, 4, 4)).sum().backward()  # moved and run under inference_mode, still trainable
    assert not moved.offset_abs_mean_max.is_inference()


def test_offset_check_adds_no_graph_break_and_compiles_fullgraph():
    torch.manual_seed(0)
    m = dcn.ModulatedDeformConvPack(4, 5, 3, padding=1, deformable_groups=2, extra_offset_mask=True)
    torch.nn.init.normal_(m.conv_offset_mask.weight, std=0.3)
    torch.nn.init.normal_(m.conv_offset_mask.bias, std=0.3)
    x, feat = torch.randn(2, 4, 6, 7), torch.randn(2, 4, 6, 7)
    torch._dynamo.reset()
    assert torch._dynamo.explain(m)([x, feat]).graph_break_count == 0
    dcn.report_offsets(m)
    eager = m([x, feat])
    expected = dcn.report_offsets(m)[""]
    compiled = torch.compile(m, fullgraph=True)
    out = compiled([x, feat])
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    assert dcn.report_offsets(compiled)["_orig_mod"] == pytest.approx(expected, rel=1e-6)
    out.square().mean().backward()  # the compiled backward runs too
    assert m.conv_offset_mask.weight.grad.abs().sum() > 0
