"""Paired samples: a second image and label per record, transformed with the first.

A record table with the pair columns (:data:`proveseg.data.records.PAIR_COLUMNS`) makes every
sample carry ``image2``, ``mask2`` and ``paired``. Rows with a pair load their second view; under
``pair_geometry: shared`` it must have the first image's size and gets exactly the first view's
resize, scale, crop and flip (the photometric jitter is drawn per view); under ``independent`` it is
transformed on its own random stream. Rows without a pair get a zero ``image2`` and an all-ignore
``mask2`` of the first view's shape with ``paired = False``, so a batch mixing both still collates
and a consistency loss can select the pairs with ``batch["paired"]``.
"""

from __future__ import annotations

import numpy as np
import torch

from proveseg.data.classes import IGNORE_INDEX, ClassSet
from proveseg.data.decode import decode_label, load_image
from proveseg.data.records import RecordTable
from proveseg.data.transforms import TransformSpec, apply_shared_transforms, apply_transforms

__all__ = ["PAIR_STREAM", "load_second_view", "transform_with_pair"]

PAIR_STREAM = 0x70616972  # "pair": an independent second view draws its own augmentation stream


def load_second_view(records: RecordTable, index: int, class_set: ClassSet) -> tuple[torch.Tensor, np.ndarray] | None:
    """Decoded (image2, mask2) of row ``index`` before transforms; None when the row has no pair."""
    path = "" if records.image2 is None else str(records.image2[index])
    if not path:
        return None
    image = load_image(path)
    label = str(records.label2[index]) if records.label2 is not None else ""
    if not label:
        return image, np.full(tuple(image.shape[1:]), IGNORE_INDEX, np.uint8)
    mask = decode_label(label, class_set, label_map=records.label_map_of(index))
    if mask.shape != tuple(image.shape[1:]):
        raise ValueError(f"{path}: image2 {image.shape[2]}x{image.shape[1]} but label2 {label} is "
                         f"{mask.shape[1]}x{mask.shape[0]}")
    return image, mask


def transform_with_pair(records: RecordTable, index: int, first: tuple[torch.Tensor, np.ndarray],
                        second: tuple[torch.Tensor, np.ndarray] | None, spec: TransformSpec,
                        rng: np.random.Generator, key: list[int]) -> dict[str, object]:
    """``image``, ``mask``, ``image2``, ``mask2`` and ``paired`` of one sample of a table with pair columns.

    ``rng`` is the sample's augmentation stream (the first view is transformed exactly as it would be
    without a pair); ``key`` seeds an independent second view's stream.
    """
    if second is None:
        img, msk = apply_transforms(*first, spec, rng)
        return {"image": img, "mask": msk, "image2": torch.zeros_like(img),
                "mask2": torch.full_like(msk, IGNORE_INDEX), "paired": torch.tensor(False)}
    geometry = str(records.pair_geometry[index]) if records.pair_geometry is not None else "shared"
    if geometry == "independent":
        img, msk = apply_transforms(*first, spec, rng)
        img2, msk2 = apply_transforms(*second, spec, np.random.default_rng([*key, PAIR_STREAM]))
    else:
        if first[0].shape != second[0].shape:
            raise ValueError(f"{records.image[index]} is {first[0].shape[2]}x{first[0].shape[1]} but its image2 "
                             f"{records.image2[index] if records.image2 is not None else ''} is "
                             f"{second[0].shape[2]}x{second[0].shape[1]}: pair_geometry shared needs equal sizes")
        (img, msk), (img2, msk2) = apply_shared_transforms([first, second], spec, rng)
    return {"image": img, "mask": msk, "image2": img2, "mask2": msk2, "paired": torch.tensor(True)}
