"""Mask2Former (Cheng et al., CVPR 2022) through Hugging Face ``transformers``, as a semantic-segmentation adapter.

The network is ``Mask2FormerForUniversalSegmentation`` built from a ``Mask2FormerConfig`` with a
Swin-B or ResNet-50 backbone config: random weights, nothing downloads. ``encoder_weights:
imagenet`` loads the backbone's ImageNet weights from the Hugging Face hub (only when a user asks).

Training uses the model's own set-prediction loss, built from the semantic mask: per image one
binary mask and one class label per class present (Hungarian matching, class cross-entropy with
the no-object weight, point-sampled sigmoid BCE and Dice, auxiliary losses of every decoder
layer, the paper's weights 2/5/5). Pixels labelled 255 belong to no target mask; unlike the
reference (which counts them as background of every mask) the mask losses here leave them out:
importance sampling never picks them and a sampled point that falls on one has weight 0. The
matcher's cost, only used to pair queries with targets, still samples them uniformly.

Inference is the paper's semantic inference: per pixel and class, the sum over queries of
softmax(class logits, no-object dropped) x sigmoid(mask logits), bilinearly upsampled to the
input size. :meth:`Mask2FormerModel.pixel_logits` returns its logarithm, so an argmax is the
paper's prediction and a softmax the scores normalised per pixel (what self-training's
confidence thresholds and slide/flip averaging work on); whole, slide and flip inference, the
metrics and ``consistency`` use it unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig, SwinConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss, sample_point
from transformers.utils import logging as hf_logging

from proveseg.data.classes import IGNORE_INDEX
from proveseg.models.adapter import PixelLogitModel

__all__ = ["IgnoreAwareMask2FormerLoss", "Mask2FormerModel", "SetPrediction", "mask2former"]

_STAGES = ["stage1", "stage2", "stage3", "stage4"]
# ImageNet backbones on the Hugging Face hub, loaded only for ``encoder_weights: imagenet``
_HUB_BACKBONES = {"swin-b": "microsoft/swin-base-patch4-window12-384-in22k", "r50": "microsoft/resnet-50"}


def _backbone_config(backbone: str) -> SwinConfig | ResNetConfig:
    # keyword dicts: transformers' config classes take these through **kwargs, which its stubs do not declare
    if backbone == "swin-b":  # the paper's Swin-B (IN-22k, 384 px pre-training: window 12)
        swin: dict[str, Any] = {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32],
                                "window_size": 12, "image_size": 384, "drop_path_rate": 0.3, "out_features": _STAGES}
        return SwinConfig(**swin)
    if backbone == "r50":
        resnet: dict[str, Any] = {"depths": [3, 4, 6, 3], "layer_type": "bottleneck", "out_features": _STAGES}
        return ResNetConfig(**resnet)
    raise KeyError(f"unknown Mask2Former backbone {backbone!r}; valid: {', '.join(_HUB_BACKBONES)}")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers warns that only Swin is 'supported' as a backbone; R50 is the paper's own baseline."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def mask2former(backbone: str, num_classes: int, encoder_weights: str | None = None) -> nn.Module:
    """A Mask2Former for ``num_classes`` semantic classes (``backbone``: ``swin-b`` or ``r50``)."""
    with _quiet_transformers():
        labels: dict[str, Any] = {"num_labels": num_classes}
        config = Mask2FormerConfig(backbone_config=_backbone_config(backbone), ignore_value=IGNORE_INDEX, **labels)
        network = Mask2FormerForUniversalSegmentation(config)
    network.criterion = IgnoreAwareMask2FormerLoss(config=config, weight_dict=network.weight_dict)
    encoder = network.model.pixel_level_module.encoder
    if hasattr(getattr(encoder, "swin", None), "layernorm"):
        # the backbone keeps Swin's classification-head LayerNorm although it never runs it: drop it so
        # the optimizer, EMA and DDP (which rejects unused parameters) see only what is trained
        encoder.swin.layernorm = nn.Identity()
    if encoder_weights == "imagenet":
        _load_hub_backbone(network, backbone)
    return network


def _load_hub_backbone(network: Mask2FormerForUniversalSegmentation, backbone: str) -> None:
    """Copy an ImageNet backbone from the Hugging Face hub into the network (downloads; never in tests)."""
    from transformers import AutoBackbone

    pretrained = AutoBackbone.from_pretrained(_HUB_BACKBONES[backbone], out_features=_STAGES)
    encoder = network.model.pixel_level_module.encoder
    result = encoder.load_state_dict(pretrained.state_dict(), strict=False)
    if result.missing_keys:
        raise RuntimeError(f"{_HUB_BACKBONES[backbone]} lacks {len(result.missing_keys)} backbone weights, e.g. "
                           f"{result.missing_keys[:3]}")


class IgnoreAwareMask2FormerLoss(Mask2FormerLoss):
    """transformers' Mask2Former loss whose mask terms leave out pixels marked invalid in ``valid``.

    ``valid`` (B, H, W) is set by the adapter for each call (the loss interface takes masks and
    classes only).
    """

    valid: torch.Tensor | None = None

    def loss_masks(self, masks_queries_logits: torch.Tensor, mask_labels: list[torch.Tensor],
                   indices: Any, num_masks: Any) -> dict[str, torch.Tensor]:
        if self.valid is None:
            return super().loss_masks(masks_queries_logits, mask_labels, indices, num_masks)
        src_idx = self._get_predictions_permutation_indices(indices)
        tgt_idx = self._get_targets_permutation_indices(indices)
        pred_masks = masks_queries_logits[src_idx][:, None]
        target_masks = self._pad_images_to_max_in_batch(mask_labels)[0][tgt_idx][:, None]
        valid = self.valid[tgt_idx[0]][:, None].to(pred_masks.dtype)
        with torch.no_grad():
            # importance sampling on (mask logit, validity): an ignored point is never the most uncertain
            low = F.interpolate(valid, size=pred_masks.shape[-2:], mode="area")
            coords = self.sample_points_using_uncertainty(
                torch.cat([pred_masks.detach(), low], dim=1),
                lambda p: -p[:, :1].abs() - 1e4 * (p[:, 1:] < 0.5).to(p.dtype),
                self.num_points, int(self.oversample_ratio), self.importance_sample_ratio)
            labels = sample_point(target_masks, coords, align_corners=False).squeeze(1)
            weight = (sample_point(valid, coords, mode="nearest", align_corners=False).squeeze(1) > 0.5).float()
        logits = sample_point(pred_masks, coords, align_corners=False).squeeze(1)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        loss_mask = ((bce * weight).sum(1) / weight.sum(1).clamp(min=1.0)).sum() / num_masks
        probs, labels = logits.sigmoid() * weight, labels * weight
        dice = 1 - (2 * (probs * labels).sum(1) + 1) / (probs.sum(1) + labels.sum(1) + 1)
        return {"loss_mask": loss_mask, "loss_dice": dice.sum() / num_masks}


@dataclass
class SetPrediction:
    """Mask2Former's training outputs: per query class logits and mask logits, for each decoder layer."""

    class_logits: torch.Tensor  # (N, Q, C + 1), the last entry is "no object"
    mask_logits: torch.Tensor  # (N, Q, H/4, W/4)
    aux: list[tuple[torch.Tensor, torch.Tensor]]  # (class, mask) logits of the earlier decoder layers
    size: tuple[int, int]  # the input's (H, W)

    def select(self, part: slice) -> SetPrediction:
        return SetPrediction(self.class_logits[part], self.mask_logits[part],
                             [(c[part], m[part]) for c, m in self.aux], self.size)


def _targets(masks: torch.Tensor, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image: one binary mask and one class per class present (255 is no class)."""
    mask_labels, class_labels = [], []
    for mask in masks:
        present = torch.unique(mask)
        present = present[(present != IGNORE_INDEX) & (present < num_classes)]
        mask_labels.append((mask[None] == present[:, None, None]).float())
        class_labels.append(present.long())
    return mask_labels, class_labels


class Mask2FormerModel(PixelLogitModel):
    """Adapter: set-prediction loss from semantic masks, semantic inference to per-pixel class scores."""

    def forward(self, net: nn.Module, images: torch.Tensor) -> SetPrediction:
        out = net(pixel_values=images, output_auxiliary_logits=True)
        aux = [(a["class_queries_logits"], a["masks_queries_logits"]) for a in out.auxiliary_logits or []]
        return SetPrediction(out.class_queries_logits, out.masks_queries_logits, aux,
                             (int(images.shape[-2]), int(images.shape[-1])))

    def split(self, outputs: SetPrediction, n: int) -> tuple[SetPrediction, SetPrediction]:
        return outputs.select(slice(None, n)), outputs.select(slice(n, None))

    def pixel_logits(self, outputs: SetPrediction) -> torch.Tensor:
        """log of sum over queries of softmax(class)[:C] x sigmoid(mask), at the input's size."""
        probs = outputs.class_logits.float().softmax(-1)[..., :-1]
        scores = torch.einsum("nqc,nqhw->nchw", probs, outputs.mask_logits.float().sigmoid())
        scores = F.interpolate(scores, size=outputs.size, mode="bilinear", align_corners=False)
        return scores.clamp_min(1e-6).log()

    def loss(self, outputs: SetPrediction, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return self._set_loss(outputs, masks)

    def unsupervised_loss(self, outputs: SetPrediction, targets: torch.Tensor) -> torch.Tensor:
        """The same set-prediction loss on pseudo-labels (255 = not confident: left out like ignored pixels)."""
        return self._set_loss(outputs, targets)[0]

    def _set_loss(self, outputs: SetPrediction, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        zero = outputs.class_logits.sum() * 0.0 + outputs.mask_logits.sum() * 0.0
        if len(masks) == 0 or not (masks != IGNORE_INDEX).any():
            return zero, {"class": 0.0, "mask": 0.0, "dice": 0.0}
        mask_labels, class_labels = _targets(masks, self.num_classes)
        network: Any = self.network
        criterion: IgnoreAwareMask2FormerLoss = network.criterion
        criterion.valid = (masks != IGNORE_INDEX).float()
        try:
            aux = [{"class_queries_logits": c.float(), "masks_queries_logits": m.float()} for c, m in outputs.aux]
            parts = network.get_loss_dict(outputs.mask_logits.float(), outputs.class_logits.float(), mask_labels,
                                          class_labels, aux)
        finally:
            criterion.valid = None
        total = zero + sum(parts.values())
        final = {"class": "loss_cross_entropy", "mask": "loss_mask", "dice": "loss_dice"}
        return total, {k: float(parts[v].detach()) for k, v in final.items()}
