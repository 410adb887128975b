"""What a user's MMEngine project brings (no MMSegmentation here): a 1-conv model, a packing transform, a stop.

Imported through ``custom_imports`` by the test configs, like a user's own modules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import HOOKS, MODELS, TRANSFORMS
from mmengine.structures import BaseDataElement
from torch.nn import functional as F

from tests.integrations.conftest import TinyConv


class Stopped(RuntimeError):
    """Stands in for a killed process."""


@TRANSFORMS.register_module()
class PackTiny:
    """Like MMSegmentation's PackSegInputs: ``inputs`` (CHW uint8) and a data sample carrying the meta keys."""

    meta_keys = ("img_path", "seg_map_path", "proveseg_id", "kind", "source", "domain")

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        img = torch.from_numpy(np.ascontiguousarray(results["img"][..., ::-1].transpose(2, 0, 1)))  # BGR -> RGB
        sample = BaseDataElement(metainfo={k: results[k] for k in self.meta_keys})
        sample.gt = torch.from_numpy(results["gt_seg_map"].astype(np.int64))
        return {"inputs": img, "data_samples": sample}


@MODELS.register_module()
class TinySegModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyConv()

    def forward(self, inputs: list[torch.Tensor], data_samples: list[BaseDataElement] | None = None,
                mode: str = "tensor") -> Any:
        x = torch.stack(list(inputs)).float() / 255.0
        logits = self.net(x)
        if mode == "loss":
            assert data_samples is not None
            target = torch.stack([s.gt for s in data_samples])
            return {"loss": F.cross_entropy(logits, target, ignore_index=255)}
        return logits


@HOOKS.register_module()
class StopAt(Hook):
    """Raise before iteration ``iteration`` (1-based): the run dies after its last checkpoint, like a kill."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if runner.iter + 1 == self.iteration:
            raise Stopped(f"stopped before iteration {self.iteration}")
