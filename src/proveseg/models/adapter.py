"""Model adapters: the one object the trainer, the evaluator and self-training talk to.

An adapter owns its network's training loss and its inference. The default,
:class:`PixelLogitModel`, serves every network that maps images to per-pixel class logits (all
segmentation_models_pytorch models): cross-entropy (+ optional Dice) for training, logits padded
to the network's stride for inference. A model whose loss is not per-pixel (a set-prediction
model such as Mask2Former) subclasses it and overrides ``loss``, ``unsupervised_loss``,
``split`` and ``pixel_logits``; the training loop never branches on the model.

Methods that run the network take it as an argument (``net``), because the trainer passes a
DDP- or compile-wrapped copy and the evaluator may pass the EMA weights.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from proveseg.config import LossConfig
from proveseg.data.classes import IGNORE_INDEX
from proveseg.evaluate.inference import InferenceSpec, predict_logits
from proveseg.models.losses import SegmentationLoss

__all__ = ["PixelLogitModel", "SegmentationModel"]


class PixelLogitModel:
    """A network whose output is (N, C, H, W) class logits at the input's resolution."""

    divisor = 32  # inputs are padded to a multiple of this at inference

    def __init__(self, name: str, network: nn.Module, num_classes: int, loss: LossConfig | None = None) -> None:
        self.name, self.network, self.num_classes = name, network, num_classes
        self.criterion = SegmentationLoss(loss or LossConfig())

    def forward(self, net: nn.Module, images: torch.Tensor) -> Any:
        """The training forward pass (raw outputs, whatever the network returns)."""
        return net(images)

    def split(self, outputs: Any, n: int) -> tuple[Any, Any]:
        """Outputs of the first ``n`` images and of the rest."""
        return outputs[:n], outputs[n:]

    def pixel_logits(self, outputs: Any) -> torch.Tensor:
        """Per-pixel class scores (N, C, H, W) of training outputs (for accuracy and pseudo-labels)."""
        return outputs

    def loss(self, outputs: Any, masks: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Supervised loss on labeled outputs and its parts for logging."""
        return self.criterion(outputs, masks)

    def unsupervised_loss(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        """Pseudo-label cross-entropy (255 = not confident); zero with a graph when no pixel passed."""
        logits = self.pixel_logits(outputs)
        if not (targets != IGNORE_INDEX).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)

    def logits(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """One inference forward: class scores (N, C, H, W) at the input's size, padded to ``divisor``."""
        h, w = images.shape[-2:]
        ph, pw = (-h) % self.divisor, (-w) % self.divisor
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph), mode="constant", value=0.0)
        return self.pixel_logits(self.forward(net, images))[..., :h, :w]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, spec: InferenceSpec | None = None,
                net: nn.Module | None = None) -> torch.Tensor:
        """Class scores for normalised images: whole image or sliding window, optionally flip-averaged."""
        module = self.network if net is None else net
        return predict_logits(lambda x: self.logits(module, x), images, spec or InferenceSpec(), self.num_classes)

    def with_network(self, network: nn.Module) -> PixelLogitModel:
        """The same adapter over other weights of the same architecture (EMA, a checkpoint)."""
        other = copy.copy(self)
        other.network = network
        return other

    def to(self, device: torch.device | str) -> PixelLogitModel:
        self.network.to(device)
        return self

    def eval(self) -> PixelLogitModel:
        self.network.eval()
        return self


SegmentationModel = PixelLogitModel  # the adapter interface every registry entry provides
