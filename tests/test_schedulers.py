"""Learning-rate schedules: restarts at r + 1, the recursive cosine, multi-step, warm-up and ft_tsa_only."""

import math

import pytest
import torch
from torch import nn

from sdsd import options
from sdsd.errors import UserError
from sdsd.training.optim import apply_ft_tsa_only, build_optimizer
from sdsd.training.schedulers import (
    CosineAnnealingLRRestart,
    MultiStepLRRestart,
    apply_warmup,
    build_scheduler,
)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.tsa_fusion = nn.Conv2d(1, 1, 1)


def adam(lr=1.0, ft_tsa_only=0):
    return build_optimizer(Tiny(), {"lr_G": lr, "beta1": 0.9, "beta2": 0.99, "ft_tsa_only": ft_tsa_only})


def run(scheduler, optimizer, iters, warmup=-1, ft_tsa_only=0):
    """The training loop's order: scheduler step, warm-up, ft_tsa_only, then (here) read the lr of iteration k."""
    lrs = {}
    for k in range(1, iters + 1):
        scheduler.step()
        apply_warmup(optimizer, k, warmup, scheduler)
        apply_ft_tsa_only(optimizer, k, ft_tsa_only)
        lrs[k] = [g["lr"] for g in optimizer.param_groups]
    return lrs


def test_cosine_matches_closed_form_and_restarts_at_r_plus_1():
    opt = adam(1.0)
    sched = CosineAnnealingLRRestart(opt, T_period=[10, 20], restarts=[10], restart_weights=[0.5], eta_min=0.01)
    lrs = run(sched, opt, 30)
    for k in range(1, 11):  # position k - 1 of the first period
        closed = 0.01 + (1.0 - 0.01) * (1 + math.cos(math.pi * (k - 1) / 10)) / 2
        assert lrs[k][0] == pytest.approx(closed, rel=1e-9)
    assert lrs[11][0] == pytest.approx(0.5)  # restart listed as 10 takes effect at iteration 11
    for k in range(11, 31):  # second period: from 0.5 to eta_min over 20 positions
        closed = 0.01 + (0.5 - 0.01) * (1 + math.cos(math.pi * (k - 11) / 20)) / 2
        assert lrs[k][0] == pytest.approx(closed, rel=1e-9)


def test_cosine_past_the_period_uses_the_closed_form_increment():
    opt = adam(1.0)
    sched = CosineAnnealingLRRestart(opt, T_period=[4], eta_min=0.0)
    lrs = run(sched, opt, 7)
    assert lrs[5][0] == pytest.approx(0.0, abs=1e-12)  # position 4 = T: the floor
    # position 5: (t - 1 - T) % 2T == 0 -> lr + (base - eta_min)(1 - cos(pi / T)) / 2
    assert lrs[6][0] == pytest.approx((1 - math.cos(math.pi / 4)) / 2, rel=1e-9)


def test_ft_tsa_only_holds_group_zero_then_published_restart_releases_it():
    # The published pattern scaled down: ft_tsa_only 5, first restart listed at 5 (takes effect at iteration 6).
    opt = adam(4e-4, ft_tsa_only=5)
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["params"][0] is not None
    sched = build_scheduler(opt, {"lr_scheme": "CosineAnnealingLR_Restart", "T_period": [5, 10], "restarts": [5],
                                  "restart_weights": [1], "eta_min": 1e-7})
    lrs = run(sched, opt, 8, ft_tsa_only=5)
    for k in range(1, 5):
        assert lrs[k][0] == 0.0 and lrs[k][1] > 0  # only tsa_fusion learns
    assert 0 < lrs[5][0] < 1e-7  # recursive formula from 0: close to eta_min, not the tsa group's lr
    assert lrs[6] == [pytest.approx(4e-4), pytest.approx(4e-4)]  # restart: both groups resume together
    assert lrs[7][0] == pytest.approx(lrs[7][1])


def test_multistep_with_restart_and_clear_state():
    opt = adam(1.0)
    opt.state[opt.param_groups[0]["params"][0]] = {"step": torch.tensor(3.0)}
    sched = MultiStepLRRestart(opt, milestones=[2, 4, 4], restarts=[6], restart_weights=[0.5], gamma=0.5,
                               clear_state=True)
    lrs = run(sched, opt, 9)
    assert [lrs[k][0] for k in range(1, 10)] == [1.0, 1.0, 0.5, 0.5, 0.125, 0.125, 0.5, 0.5, 0.5]
    assert len(opt.state) == 0  # cleared at the restart


def test_warmup_is_linear_in_the_iteration_and_the_schedule_runs_underneath():
    opt = adam(1.0)
    sched = MultiStepLRRestart(opt, milestones=[5], gamma=0.5)
    lrs = run(sched, opt, 7, warmup=4)
    assert [lrs[k][0] for k in range(1, 8)] == [0.25, 0.5, 0.75, 1.0, 1.0, 0.5, 0.5]
    opt = adam(1.0)
    cosine = CosineAnnealingLRRestart(opt, T_period=[8], eta_min=0.0)
    warm = run(cosine, opt, 6, warmup=3)
    plain_opt = adam(1.0)
    plain = run(CosineAnnealingLRRestart(plain_opt, T_period=[8], eta_min=0.0), plain_opt, 6)
    assert [warm[k][0] for k in (1, 2)] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert [warm[k][0] for k in (3, 4, 5, 6)] == [pytest.approx(plain[k][0]) for k in (3, 4, 5, 6)]


def test_state_dict_round_trip_continues_identically():
    opt_a = adam(1.0)
    a = CosineAnnealingLRRestart(opt_a, T_period=[6, 6], restarts=[6], eta_min=0.0)
    run(a, opt_a, 4)
    opt_b = adam(1.0)
    opt_b.load_state_dict(opt_a.state_dict())
    b = CosineAnnealingLRRestart(opt_b, T_period=[1, 1], eta_min=0.5)
    b.load_state_dict(torch.load(_save(a.state_dict()), weights_only=True))
    assert run(a, opt_a, 5) == run(b, opt_b, 5)


def _save(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def _load_train(train: dict) -> dict:
    """Validate a train section as ``train.py`` does (schedule options are checked there, before any work)."""
    opt = {"name": "t", "datasets": {"train": {"mode": "SDSD", "dataroot_GT": "gt", "dataroot_LQ": "lq"}},
           "train": {"niter": 10, **train}}
    return options.validate(opt, source="t.yml", is_train=True)


def test_bad_schedule_options_name_the_key():
    with pytest.raises(UserError, match="t.yml: train.lr_scheme is 'StepLR'; allowed: CosineAnnealingLR_Restart"):
        _load_train({"lr_scheme": "StepLR"})
    with pytest.raises(UserError, match=r"train.T_period is \[5\] but 1 train.restarts need 2 periods"):
        _load_train({"lr_scheme": "CosineAnnealingLR_Restart", "T_period": [5], "restarts": [5]})
    with pytest.raises(UserError, match="train.T_period is null but 0 train.restarts need 1 periods"):
        _load_train({"lr_scheme": "CosineAnnealingLR_Restart"})
    with pytest.raises(UserError, match=r"train.T_period is \[5, 0\]; allowed: a list of integers >= 1"):
        _load_train({"lr_scheme": "CosineAnnealingLR_Restart", "T_period": [5, 0], "restarts": [5]})
    with pytest.raises(UserError, match="train.restart_weights has 2 entries for 1 train.restarts"):
        _load_train({"lr_scheme": "MultiStepLR_Restart", "restarts": [5], "restart_weights": [1, 1]})
    # What the options accept, the builder takes as is.
    train = _load_train({"lr_scheme": "MultiStepLR_Restart", "restarts": [5], "restart_weights": [1]})["train"]
    assert isinstance(build_scheduler(adam(), train), MultiStepLRRestart)
