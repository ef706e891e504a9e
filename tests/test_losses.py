"""The SDSD objective on hand-checked numbers, the summed pixel criteria, and the batched forward."""

import math

import pytest
import torch

from sdsd import build_network
from sdsd.errors import UserError
from sdsd.losses import CharbonnierLoss, L1SumLoss, SDSDObjective, build_pixel_loss, noisy_copy
from sdsd.registry import LOSS_REGISTRY


def test_noisy_copy_doubles_the_deviation_from_the_per_channel_mean():
    lq = torch.zeros(1, 1, 3, 2, 2)
    lq[0, 0, 0] = torch.tensor([[0.0, 2.0], [4.0, 6.0]])  # mean 3
    lq[0, 0, 1] = 1.0  # constant channel: unchanged
    out = noisy_copy(lq)
    assert torch.equal(out[0, 0, 0], torch.tensor([[-3.0, 1.0], [5.0, 9.0]]))
    assert torch.equal(out[0, 0, 1], lq[0, 0, 1]) and torch.equal(out[0, 0, 2], lq[0, 0, 2])


def test_pixel_criteria_are_sums_and_registered():
    a, b = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])
    assert L1SumLoss()(a, b).item() == pytest.approx(3.0)
    expected = math.sqrt(1 + 1e-6) + math.sqrt(1e-6) + math.sqrt(4 + 1e-6)
    assert CharbonnierLoss()(a, b).item() == pytest.approx(expected, rel=1e-6)
    assert LOSS_REGISTRY.get("cb") is CharbonnierLoss and LOSS_REGISTRY.get("l1") is L1SumLoss
    with pytest.raises(UserError, match="train.pixel_criterion"):
        build_pixel_loss("l2")


@pytest.mark.parametrize("criterion", ["l1", "cb"])
def test_objective_hand_checked(criterion):
    # One image of 1 pixel (x 3 channels), window of 3 frames, centre 1. Every value chosen so terms are exact.
    lq = torch.tensor([0.1, 0.2, 0.4]).view(1, 1, 3, 1, 1).repeat(1, 3, 1, 1, 1)
    gt = torch.tensor([0.5, 0.5, 1.0]).view(1, 3, 1, 1)
    e, e_n = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    i, i_n = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.3)
    d_n = torch.full((1, 3, 1, 1), 0.2)
    w = 2.0
    terms = SDSDObjective(criterion, pixel_weight=w, center=1)((e, i, None), (e_n, i_n, d_n), lq, gt)

    eps = 1e-6 if criterion == "cb" else 0.0

    def pix(diffs):
        return sum(math.sqrt(d * d + eps) for d in diffs)

    target = [0.1 / (0.5 + 1e-4), 0.2 / (0.5 + 1e-4), 0.4 / (1.0 + 1e-4)]
    l_rec = w * 0.5 * pix([0.0, 0.0, 0.5]) + w * 0.5 * pix([0.25, 0.25, 0.75])
    l_ill = w * 0.5 * sum(abs(0.5 - t) for t in target) + w * 0.5 * sum(abs(0.3 - t) for t in target)
    l_noise = w * pix([0.1, 0.0, 0.2])
    assert terms.l_rec.item() == pytest.approx(l_rec, rel=1e-5)
    assert terms.l_ill.item() == pytest.approx(l_ill, rel=1e-5)
    assert terms.l_noise.item() == pytest.approx(l_noise, rel=1e-5)
    assert terms.total.item() == pytest.approx(l_rec + 0.5 * l_ill + l_noise, rel=1e-5)
    # The term weights are options (train.illumination_weight / train.noise_weight; published 0.5 and 1).
    reweighted = SDSDObjective(criterion, pixel_weight=w, center=1, illumination_weight=2.0, noise_weight=0.0)(
        (e, i, None), (e_n, i_n, d_n), lq, gt)
    assert reweighted.total.item() == pytest.approx(l_rec + 2.0 * l_ill, rel=1e-5)


@pytest.mark.parametrize("criterion", ["l1", "cb"])
def test_objective_without_the_noisy_copy(criterion):
    # train.noisy_copy: false: the clean window's terms at full weight, no noise term.
    lq = torch.tensor([0.1, 0.2, 0.4]).view(1, 1, 3, 1, 1).repeat(1, 3, 1, 1, 1)
    gt = torch.tensor([0.5, 0.5, 1.0]).view(1, 3, 1, 1)
    e, i = torch.full((1, 3, 1, 1), 0.25), torch.full((1, 3, 1, 1), 0.3)
    w = 2.0
    terms = SDSDObjective(criterion, pixel_weight=w, center=1, illumination_weight=0.1, noise_weight=0.0)(
        (e, i, None), None, lq, gt)
    eps = 1e-6 if criterion == "cb" else 0.0
    l_rec = w * sum(math.sqrt(d * d + eps) for d in (0.25, 0.25, 0.75))
    l_ill = w * sum(abs(0.3 - t) for t in (0.1 / (0.5 + 1e-4), 0.2 / (0.5 + 1e-4), 0.4 / (1.0 + 1e-4)))
    assert terms.l_rec.item() == pytest.approx(l_rec, rel=1e-5)
    assert terms.l_ill.item() == pytest.approx(l_ill, rel=1e-5)
    assert terms.l_noise.item() == 0.0
    assert terms.total.item() == pytest.approx(l_rec + 0.1 * l_ill, rel=1e-5)
    # When both copies agree, every term has the value it has with the copy.
    same = SDSDObjective(criterion, pixel_weight=w, center=1, illumination_weight=0.1, noise_weight=0.0)(
        (e, i, None), (e, i, e), lq, gt)
    assert same.l_rec.item() == pytest.approx(l_rec, rel=1e-5) and same.l_ill.item() == pytest.approx(l_ill, rel=1e-5)
    with pytest.raises(ValueError, match="noise_weight must be 0"):
        SDSDObjective(criterion, center=1)((e, i, None), None, lq, gt)


def test_illumination_target_carries_no_gradient():
    lq = torch.rand(1, 5, 3, 4, 4, requires_grad=True)
    gt = torch.rand(1, 3, 4, 4)
    out = tuple(torch.rand(1, 3, 4, 4, requires_grad=True) for _ in range(3))
    terms = SDSDObjective("l1", center=2)(out, out, lq, gt)
    (grad,) = torch.autograd.grad(terms.l_ill, lq, allow_unused=True)
    assert grad is None


def test_one_batched_forward_equals_two_forwards():
    torch.manual_seed(0)
    net = build_network({"nf": 8, "nframes": 5, "groups": 2, "front_RBs": 1, "back_RBs": 1}).eval()
    lq, gt = torch.rand(2, 5, 3, 32, 32) * 0.3, torch.rand(2, 3, 32, 32)
    objective = SDSDObjective("cb", center=net.center)
    with torch.no_grad():
        both = net(torch.cat([lq, noisy_copy(lq)]))
        batched = objective(tuple(o[:2] for o in both), tuple(o[2:] for o in both), lq, gt)
        separate = objective(net(lq), net(noisy_copy(lq)), lq, gt)
    for a, b in zip(batched, separate):
        assert a.item() == pytest.approx(b.item(), rel=1e-5)
