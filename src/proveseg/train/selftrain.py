"""Self-training with an EMA teacher (the FixMatch / UniMatch recipe) and its per-step statistics.

The teacher is an exponential moving average of the student (never touched by the optimizer). It
labels the weak view of each unlabeled image; pixels whose confidence passes the threshold of
their pseudo-class become targets for the student on a strong view (photometric jitter + CutMix).
Thresholds are global, class-wise, or adaptive (a per-class quantile of the teacher's confidence,
smoothed over steps). Every step reports the "ST count" (pixels passing) in total and per class,
the pseudo-label histogram and the teacher's accuracy on the labeled part of the batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from proveseg.config import SelfTrainConfig
from proveseg.data.classes import IGNORE_INDEX
from proveseg.evaluate.inference import class_ids
from proveseg.models import SegmentationModel

__all__ = ["DEFAULT_CLASS_THRESHOLD", "SelfTrainer", "strong_view"]

DEFAULT_CLASS_THRESHOLD = 0.9  # class-wise thresholds: classes missing from the dict


def strong_view(images: torch.Tensor, target: torch.Tensor, jitter: float, cutmix: bool, generator: torch.Generator,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The strong view: photometric jitter per image (in normalised space), then CutMix of a box between images
    (labels mixed alike). Self-training applies it to unlabeled images; its ``std_*`` control to labeled ones."""
    n = images.shape[0]
    g = generator
    gain = (1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * jitter).to(images.device)
    bias = ((torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * jitter).to(images.device)
    tint = (1 + (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1) * jitter / 2).to(images.device)
    strong = images * gain * tint + bias
    target = target.clone()
    if cutmix and n >= 2:
        h, w = images.shape[-2:]
        lam = float(torch.rand(1, generator=g)) * 0.5 + 0.25
        bh, bw = int(h * lam ** 0.5), int(w * lam ** 0.5)
        top = int(torch.randint(0, h - bh + 1, (1,), generator=g))
        left = int(torch.randint(0, w - bw + 1, (1,), generator=g))
        strong[:, :, top:top + bh, left:left + bw] = strong.roll(1, 0)[:, :, top:top + bh, left:left + bw]
        target[:, top:top + bh, left:left + bw] = target.roll(1, 0)[:, top:top + bh, left:left + bw]
    return strong, target


class SelfTrainer:
    """The EMA teacher of a model (an adapter), its thresholds, and the strong views it labels."""

    def __init__(self, cfg: SelfTrainConfig, model: SegmentationModel, seed: int) -> None:
        self.cfg, self.model, self.num_classes, self.seed = cfg, model, model.num_classes, seed
        student = model.network
        num_classes = model.num_classes
        self.teacher = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(cfg.teacher_decay), use_buffers=True)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        device = next(student.parameters()).device
        if isinstance(cfg.threshold, dict):
            values = [cfg.threshold.get(c, DEFAULT_CLASS_THRESHOLD) for c in range(num_classes)]
        elif cfg.threshold == "adaptive":
            values = [DEFAULT_CLASS_THRESHOLD] * num_classes
        else:
            values = [float(cfg.threshold)] * num_classes
        self.thresholds = torch.tensor(values, dtype=torch.float32, device=device)

    def weight(self, iteration: int) -> float:
        """``st_weight``, ramped linearly over ``st_warmup_iters``."""
        if self.cfg.st_warmup_iters == 0:
            return self.cfg.st_weight
        return self.cfg.st_weight * min(1.0, iteration / self.cfg.st_warmup_iters)

    def pseudo_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher's (pseudo-label, confidence, passes-threshold) on the weak view."""
        self.teacher.eval()
        with torch.no_grad():
            prob = self._scores(images).float().softmax(dim=1)
        conf, pseudo = prob.max(dim=1)
        if self.cfg.threshold == "adaptive":
            self._adapt(conf, pseudo)
        return pseudo, conf, conf >= self.thresholds[pseudo]

    def _scores(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's per-pixel class scores, through the same forward the student trains with."""
        return self.model.pixel_logits(self.model.forward(self.teacher, images))

    def _adapt(self, conf: torch.Tensor, pseudo: torch.Tensor) -> None:
        """Move each predicted class's threshold towards the quantile of its confidence.

        Under DDP every rank sees other pixels; the quantiles are averaged over the ranks that
        predicted the class, so all ranks hold the same thresholds (a checkpoint keeps rank 0's,
        and a resume must continue what every rank had).
        """
        m, floor = self.cfg.adaptive_momentum, self.cfg.adaptive_floor
        quantile = torch.zeros_like(self.thresholds)
        seen = torch.zeros_like(self.thresholds)
        for c in torch.unique(pseudo).tolist():
            quantile[c] = torch.quantile(conf[pseudo == c].float()[:100_000], self.cfg.adaptive_quantile)
            seen[c] = 1.0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(quantile)
            dist.all_reduce(seen)
            quantile = quantile / seen.clamp(min=1.0)
        moved = seen > 0
        self.thresholds[moved] = m * self.thresholds[moved] + (1 - m) * torch.clamp(quantile[moved], min=floor)

    def strong_view(self, images: torch.Tensor, target: torch.Tensor, generator: torch.Generator,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Photometric jitter per image (in normalised space), then CutMix of a box between images."""
        return strong_view(images, target, self.cfg.strong_jitter, self.cfg.cutmix, generator)

    def prepare(self, images: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Strong views of unlabeled images, their pseudo-label targets (255 where not confident), stats."""
        pseudo, _, keep = self.pseudo_labels(images)
        target = torch.where(keep, pseudo, torch.full_like(pseudo, IGNORE_INDEX))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        strong, target = self.strong_view(images, target, generator)
        c = self.num_classes
        stats = {
            "st_count": int(keep.sum()), "st_fraction": float(keep.float().mean()),
            "st_count_per_class": torch.bincount(pseudo[keep], minlength=c).tolist(),
            "pseudo_hist": torch.bincount(pseudo.reshape(-1), minlength=c).tolist(),
            "thresholds": [round(float(t), 4) for t in self.thresholds],
        }
        return strong, target, stats

    def probe(self, images: torch.Tensor, masks: torch.Tensor) -> float | None:
        """Teacher pixel accuracy on labeled images (non-ignored pixels)."""
        valid = masks != IGNORE_INDEX
        if not valid.any():
            return None
        self.teacher.eval()
        with torch.no_grad():
            pred = class_ids(self._scores(images))
        return float((pred[valid] == masks[valid]).float().mean())

    def update(self, student: nn.Module) -> None:
        self.teacher.update_parameters(student)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "thresholds": self.thresholds.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher.load_state_dict(state["teacher"])
        self.thresholds.copy_(state["thresholds"].to(self.thresholds.device))
