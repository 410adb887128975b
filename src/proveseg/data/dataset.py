"""Map-style dataset over a record table: load, apply the noise control, transform.

Keys are ``(global id, pass)`` pairs from the batch plan (a bare int means pass 0). Every sample
is a dict with the fixed keys of ../shared/DESIGN.md section 2.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from proveseg.data.classes import IGNORE_INDEX, ClassSet
from proveseg.data.decode import decode_label, image_size, load_image
from proveseg.data.pairs import load_second_view, transform_with_pair
from proveseg.data.records import RecordTable
from proveseg.data.transforms import TransformSpec, apply_transforms

__all__ = ["NOISE_STREAM", "SegmentationDataset", "noise_image"]

NOISE_STREAM = 0x6E6F6973  # "nois": keeps noise draws apart from augmentation draws


def noise_image(origin: str, seed: int, index: int, draw: int) -> torch.Tensor:
    """Uniform U(0, 255) noise (3, H, W) with the shape of ``origin`` (from its header), fixed per draw."""
    h, w = image_size(origin)
    rng = np.random.default_rng([seed, NOISE_STREAM, index, draw])
    return torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))


class SegmentationDataset(Dataset[dict[str, object]]):
    """Samples ``{image, mask, domain, kind, source, index}`` from a record table.

    A table with pair columns adds ``image2``, ``mask2`` and ``paired`` (:mod:`proveseg.data.pairs`).
    """

    def __init__(self, records: RecordTable, class_set: ClassSet, transform: TransformSpec, seed: int = 0) -> None:
        self.records = records
        self.class_set = class_set
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int, draw: int = 0) -> tuple[torch.Tensor, np.ndarray]:
        """Decoded (image, mask) before transforms; noise entries are drawn, not read."""
        r = self.records
        kind = str(r.kind[index])
        if kind == "noise":
            image = noise_image(str(r.origin[index]), self.seed, index, draw)
        else:
            image = load_image(str(r.image[index]))
        label_path = str(r.label[index])
        if label_path:
            mask = decode_label(label_path, self.class_set, label_map=r.label_map_of(index))
            if mask.shape != tuple(image.shape[1:]):
                raise ValueError(f"{r.image[index]}: image {image.shape[2]}x{image.shape[1]} but label "
                                 f"{label_path} is {mask.shape[1]}x{mask.shape[0]}")
        else:
            mask = np.full(tuple(image.shape[1:]), IGNORE_INDEX, np.uint8)
        return image, mask

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object]:
        index, draw = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)
        image, mask = self.load(index, draw)
        rng = np.random.default_rng([self.seed, index, draw])
        r = self.records
        if r.has_pairs:
            views = transform_with_pair(r, index, (image, mask), load_second_view(r, index, self.class_set),
                                        self.transform, rng, [self.seed, index, draw])
        else:
            img, msk = apply_transforms(image, mask, self.transform, rng)
            views = {"image": img, "mask": msk}
        return {**views, "domain": str(r.domain[index]), "kind": str(r.kind[index]),
                "source": str(r.source[index]), "index": torch.tensor(index, dtype=torch.int64)}
