"""Training loss: cross-entropy (ignore 255) plus optional Dice from segmentation_models_pytorch."""

from __future__ import annotations

import torch
from torch import nn

from proveseg.config import LossConfig
from proveseg.data.classes import IGNORE_INDEX

__all__ = ["SegmentationLoss"]


class SegmentationLoss(nn.Module):
    """``ce_weight * CE + dice_weight * Dice``; returns the total and its parts for logging."""

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ce = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        self.dice: nn.Module | None = None
        if cfg.dice_weight > 0:
            from segmentation_models_pytorch.losses import DiceLoss  # smp (and timm) load only when Dice is used

            self.dice = DiceLoss(mode="multiclass", ignore_index=IGNORE_INDEX)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        if not (mask != IGNORE_INDEX).any():  # no labeled pixel (all ignore, or no labeled image): zero, not NaN
            return logits.sum() * 0.0, {"ce": 0.0} if self.cfg.ce_weight > 0 else {}
        parts: dict[str, torch.Tensor] = {}
        if self.cfg.ce_weight > 0:
            parts["ce"] = self.ce(logits.float(), mask)
        if self.dice is not None:
            parts["dice"] = self.dice(logits.float(), mask)
        weights = {"ce": self.cfg.ce_weight, "dice": self.cfg.dice_weight}
        total = sum((weights[k] * v for k, v in parts.items()), torch.zeros((), device=logits.device))
        return total, {k: float(v.detach()) for k, v in parts.items()}
