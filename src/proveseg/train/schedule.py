"""Learning-rate schedule: linear warm-up, then poly, cosine or constant, as a LambdaLR factor."""

from __future__ import annotations

import math

import torch

from proveseg.config import ScheduleConfig

__all__ = ["lr_factor", "make_scheduler"]


def lr_factor(step: int, max_iters: int, cfg: ScheduleConfig, base_lr: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``."""
    if cfg.warmup_iters and step < cfg.warmup_iters:
        return (step + 1) / cfg.warmup_iters
    span = max(1, max_iters - cfg.warmup_iters)
    t = min(1.0, (step - cfg.warmup_iters) / span)
    floor = cfg.min_lr / base_lr
    if cfg.policy == "poly":
        return floor + (1 - floor) * (1 - t) ** cfg.power
    if cfg.policy == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, max_iters: int, cfg: ScheduleConfig,
                   base_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, max_iters, cfg, base_lr))
