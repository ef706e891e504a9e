"""Learning-rate schedules with restarts, as the reference schedules them (docs/protocol.md#optimiser-and-schedules).

Both schedules are *recursive*: each step derives the new learning rate from the one currently in the optimiser's
param group, so anything that overwrites ``group['lr']`` between steps (warm-up, ``ft_tsa_only``) feeds into the
next value, exactly as in the reference.

Iteration mapping: the training loop calls :meth:`RestartScheduler.step` once at the start of every iteration,
before the optimiser step, and iterations count from 1. Step number ``k`` moves the schedule to position
``k - 1``: iteration 1 trains at ``lr_G`` and a restart listed as ``r`` takes effect at iteration ``r + 1``.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from sdsd.registry import SCHEDULER_REGISTRY


class RestartScheduler:
    """Common part: restarts with weights, ``initial_lr`` bookkeeping, state dicts.

    Args:
        optimizer: the optimiser whose param groups are driven.
        restarts: schedule positions at which the lr jumps back to ``initial_lr * weight``.
        restart_weights: one weight per restart (default 1; the option schema checks the count).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, restarts=None, restart_weights=None):
        self.optimizer = optimizer
        self.restarts = [int(r) for r in (restarts or [])]
        weights = list(restart_weights) if restart_weights else [1.0] * len(self.restarts)
        self.restart_weights = [float(w) for w in weights]
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1  # schedule position; -1 = before the first iteration
        self.before_warmup: list[float] | None = None  # scheduled lrs that a warm-up iteration overrode

    def step(self) -> None:
        """Advance one position and write the new learning rates into the optimiser."""
        if self.before_warmup is not None:
            for group, lr in zip(self.optimizer.param_groups, self.before_warmup):
                group["lr"] = lr
            self.before_warmup = None
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self._next_lrs()):
            group["lr"] = lr

    def _restart_lrs(self):
        weight = self.restart_weights[self.restarts.index(self.last_epoch)]
        return [group["initial_lr"] * weight for group in self.optimizer.param_groups]

    def _next_lrs(self) -> list[float]:
        raise NotImplementedError

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Plain Python values only, so training states load with ``weights_only=True``."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


@SCHEDULER_REGISTRY.register("MultiStepLR_Restart")
class MultiStepLRRestart(RestartScheduler):
    """Multiply the lr by ``gamma`` at each milestone; at a restart jump to ``initial_lr * weight``.

    Args:
        milestones: positions at which the lr is multiplied by ``gamma`` (a repeated milestone applies twice).
        gamma: the decay factor.
        clear_state: forget the optimiser's moment estimates at each restart.
    """

    def __init__(self, optimizer, milestones, restarts=None, restart_weights=None, gamma: float = 0.1,
                 clear_state: bool = False):
        super().__init__(optimizer, restarts, restart_weights)
        self.milestones: dict[int, int] = {}
        for m in milestones or []:
            self.milestones[int(m)] = self.milestones.get(int(m), 0) + 1
        self.gamma = float(gamma)
        self.clear_state = bool(clear_state)

    def _next_lrs(self):
        if self.last_epoch in self.restarts:
            if self.clear_state:
                self.optimizer.state = defaultdict(dict)
            return self._restart_lrs()
        times = self.milestones.get(self.last_epoch, 0)
        return [group["lr"] * self.gamma ** times for group in self.optimizer.param_groups]


@SCHEDULER_REGISTRY.register("CosineAnnealingLR_Restart")
class CosineAnnealingLRRestart(RestartScheduler):
    """Cosine annealing from the current lr to ``eta_min`` over ``T_period[k]`` positions, restarting at each restart.

    The update is the recursive form of cosine annealing: with ``t`` positions since the last restart and period
    ``T``, ``lr_t = eta_min + (lr_{t-1} - eta_min) * (1 + cos(pi t / T)) / (1 + cos(pi (t - 1) / T))``; where the
    denominator vanishes (``t - 1 - T`` a multiple of ``2T``) the closed-form increment
    ``(base_lr - eta_min) * (1 - cos(pi / T)) / 2`` is added instead.

    Args:
        T_period: one positive period per segment (segment 0 before the first restart, segment k after restart k;
            the option schema checks the count).
        eta_min: the floor.
    """

    def __init__(self, optimizer, T_period, restarts=None, restart_weights=None, eta_min: float = 0.0):
        super().__init__(optimizer, restarts, restart_weights)
        self.T_period = [int(t) for t in T_period]
        self.T_max = self.T_period[0]
        self.eta_min = float(eta_min)
        self.last_restart = 0

    def _next_lrs(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0:
            return list(self.base_lrs)
        if self.last_epoch in self.restarts:
            self.last_restart = self.last_epoch
            self.T_max = self.T_period[self.restarts.index(self.last_epoch) + 1]
            return self._restart_lrs()
        t, period, floor = self.last_epoch - self.last_restart, self.T_max, self.eta_min
        if (t - 1 - period) % (2 * period) == 0:
            return [g["lr"] + (base - floor) * (1 - math.cos(math.pi / period)) / 2
                    for g, base in zip(groups, self.base_lrs)]
        ratio = (1 + math.cos(math.pi * t / period)) / (1 + math.cos(math.pi * (t - 1) / period))
        return [floor + (g["lr"] - floor) * ratio for g in groups]


def build_scheduler(optimizer: torch.optim.Optimizer, train_opt: dict) -> RestartScheduler:
    """Build the schedule named by ``train.lr_scheme`` from the ``train`` option block.

    The block is trusted as :func:`sdsd.options.load` validated it: a registered ``lr_scheme``, one
    ``restart_weights`` entry per restart, and for ``CosineAnnealingLR_Restart`` positive ``T_period`` entries, one
    per segment.
    """
    from sdsd.options import with_defaults

    train_opt = with_defaults("train", train_opt)
    cls = SCHEDULER_REGISTRY.get(train_opt["lr_scheme"])
    restarts, weights = train_opt["restarts"], train_opt["restart_weights"]
    if cls is MultiStepLRRestart:
        return cls(optimizer, train_opt["lr_steps"] or [], restarts, weights,
                   gamma=train_opt["lr_gamma"], clear_state=bool(train_opt["clear_state"]))
    return cls(optimizer, train_opt["T_period"], restarts, weights, eta_min=train_opt["eta_min"])


def apply_warmup(optimizer: torch.optim.Optimizer, iteration: int, warmup_iter: int,
                 scheduler: RestartScheduler | None = None) -> None:
    """Linear warm-up: for ``iteration < warmup_iter`` set ``lr = initial_lr * iteration / warmup_iter``.

    With ``scheduler`` given, the scheduled lrs are handed back to it at its next step, so the schedule runs
    underneath the warm-up and reaches ``initial_lr`` when the warm-up ends. (The reference let the recursive
    schedules continue from the warm-up value, which leaves ``MultiStepLR_Restart`` stuck below ``lr_G``; no published
    configuration uses a warm-up.)
    """
    if warmup_iter is not None and warmup_iter > 0 and iteration < warmup_iter:
        if scheduler is not None:
            scheduler.before_warmup = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] / warmup_iter * iteration
