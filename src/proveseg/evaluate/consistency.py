"""Semantic and layout consistency of generated images under a trained model.

For each generated image and its original, the model segments both. Reported per generator and
target domain: semantic consistency (mIoU of the prediction on the generated image against the
original label), agreement of the two predictions (pixel accuracy and mIoU), and layout
consistency: the same two numbers after reducing labels and predictions to 8x8 and 16x16 blocks
by majority vote. A generator can fail at pixel level and still keep the coarse layout; both show.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from proveseg.data.classes import IGNORE_INDEX, ClassSet
from proveseg.data.decode import decode_label, load_image
from proveseg.data.records import RecordTable
from proveseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from proveseg.evaluate.confusion import confusion_matrix
from proveseg.evaluate.inference import InferenceSpec, class_ids
from proveseg.evaluate.metrics import mean_iou

if TYPE_CHECKING:
    from proveseg.models import SegmentationModel

__all__ = ["BLOCKS", "block_majority", "consistency_report"]

BLOCKS = (8, 16)


def block_majority(mask: np.ndarray, block: int, num_classes: int) -> np.ndarray:
    """Most frequent class of each ``block`` x ``block`` tile (ignore only if the tile has no class)."""
    h, w = (mask.shape[0] // block) * block, (mask.shape[1] // block) * block
    grid = mask[:h, :w].reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3)
    tiles = grid.reshape(-1, block * block).astype(np.int64)
    tiles[tiles == IGNORE_INDEX] = num_classes
    counts = np.zeros((len(tiles), num_classes + 1), np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(tiles)), block * block), tiles.ravel()), 1)
    best = counts[:, :num_classes].argmax(axis=1)
    best[counts[:, :num_classes].sum(axis=1) == 0] = IGNORE_INDEX
    return best.reshape(h // block, w // block).astype(np.uint8)


@torch.no_grad()
def _predict(model: SegmentationModel, path: str, spec: InferenceSpec, device: str) -> np.ndarray:
    x = F.normalize(load_image(path).float().div(255), list(IMAGENET_MEAN), list(IMAGENET_STD))[None].to(device)
    return class_ids(model.predict(x, spec))[0].cpu().numpy().astype(np.uint8)


def consistency_report(model: SegmentationModel, records: RecordTable, class_set: ClassSet,
                       spec: InferenceSpec | None = None, device: str = "cpu") -> dict[str, dict[str, dict]]:
    """{generator: {target domain: numbers}} for generated ``records`` (labels through their source's label map)."""
    spec = spec or InferenceSpec()
    model = model.to(device).eval()
    c = class_set.num_classes
    acc: dict[tuple[str, str], dict[str, np.ndarray]] = defaultdict(
        lambda: defaultdict(lambda: np.zeros((c, c), np.int64)))
    counts: dict[tuple[str, str], int] = defaultdict(int)
    originals: dict[str, np.ndarray] = {}  # an original is shared by every target domain made from it
    for i in range(len(records)):
        key = (str(records.source[i]), str(records.domain[i]))
        label = decode_label(str(records.label[i]), class_set, label_map=records.label_map_of(i))
        pred_gen = _predict(model, str(records.image[i]), spec, device)
        origin = str(records.origin[i])
        if origin not in originals:
            originals[origin] = _predict(model, origin, spec, device)
        pred_orig = originals[origin]
        a = acc[key]
        a["semantic"] += confusion_matrix(label, pred_gen, c)
        a["original"] += confusion_matrix(label, pred_orig, c)
        a["agreement"] += confusion_matrix(pred_orig, pred_gen, c)
        for b in BLOCKS:
            coarse_label = block_majority(label, b, c)
            coarse_gen, coarse_orig = block_majority(pred_gen, b, c), block_majority(pred_orig, b, c)
            a[f"layout_semantic_{b}"] += confusion_matrix(coarse_label, coarse_gen, c)
            a[f"layout_agreement_{b}"] += confusion_matrix(coarse_orig, coarse_gen, c)
        counts[key] += 1
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for (src, dom), mats in sorted(acc.items()):
        entry: dict[str, object] = {"images": counts[(src, dom)]}
        for name, conf in mats.items():
            entry[f"{name}_mIoU"] = mean_iou(conf)
            if "agreement" in name:
                entry[f"{name}_pixel"] = float(np.trace(conf) / max(conf.sum(), 1))
        out[src][dom] = entry
    return dict(out)
