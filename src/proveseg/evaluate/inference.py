"""Inference modes: whole image (padded to the model's stride) or sliding window, optional flip."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InferenceSpec", "predict_logits"]


@dataclass(frozen=True)
class InferenceSpec:
    mode: str = "whole"  # whole | slide
    crop: tuple[int, int] | None = None  # slide: window (H, W)
    stride: tuple[int, int] | None = None  # slide: step (H, W)
    flip: bool = False  # average with the horizontally flipped prediction
    divisor: int = 32  # inputs are padded to a multiple of this


def _forward_padded(model: nn.Module, x: torch.Tensor, divisor: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="constant", value=0.0)
    return model(x)[..., :h, :w]


def _slide(model: nn.Module, x: torch.Tensor, spec: InferenceSpec, num_classes: int) -> torch.Tensor:
    if spec.crop is None or spec.stride is None:
        raise ValueError("sliding-window inference needs crop and stride")
    (ch, cw), (sh, sw) = spec.crop, spec.stride
    n, _, h, w = x.shape
    logits = x.new_zeros((n, num_classes, h, w))
    count = x.new_zeros((1, 1, h, w))
    rows = list(range(0, max(h - ch, 0) + 1, sh))
    cols = list(range(0, max(w - cw, 0) + 1, sw))
    if rows[-1] + ch < h:
        rows.append(h - ch)
    if cols[-1] + cw < w:
        cols.append(w - cw)
    for top in rows:
        for left in cols:
            y0, x0 = max(top, 0), max(left, 0)
            window = x[..., y0:y0 + ch, x0:x0 + cw]
            logits[..., y0:y0 + ch, x0:x0 + cw] += _forward_padded(model, window, spec.divisor)
            count[..., y0:y0 + ch, x0:x0 + cw] += 1
    return logits / count


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, spec: InferenceSpec, num_classes: int) -> torch.Tensor:
    """Logits (N, C, H, W) for normalised images (N, 3, H, W)."""
    def run(x: torch.Tensor) -> torch.Tensor:
        if spec.mode == "slide":
            return _slide(model, x, spec, num_classes)
        if spec.mode != "whole":
            raise ValueError(f"inference mode {spec.mode!r}: expected whole or slide")
        return _forward_padded(model, x, spec.divisor)

    logits = run(images)
    if spec.flip:
        logits = (logits + run(images.flip(-1)).flip(-1)) / 2
    return logits
