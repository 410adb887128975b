"""JPEG decoding on the training GPU (nvJPEG through ``torchvision.io.decode_jpeg``), a loader option.

With ``data.decode_device: cuda`` the loader workers read each JPEG's bytes and decode its label
(PNG, lossless, small) but not its image; the training process decodes the batch's JPEGs in one
batched nvJPEG call on its GPU and applies the same transforms there, with the same per-sample
randomness (seed, sample id, pass). Noise-control images and non-JPEG files arrive decoded from
the workers as usual. Which samples a batch holds (the plan, the audit, the sequence hash) is
unchanged; the pixels are not bit-identical to the CPU path (nvJPEG's IDCT and the GPU resize
round differently in the last bit of some pixels). Written here because torch's DataLoader has
no device-side stage. torchvision marks its decoders deprecated in 0.29; its nvJPEG path is still
the one that ships with torch, so the warning is silenced here only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from proveseg.data.classes import IGNORE_INDEX
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.decode import decode_label, image_size
from proveseg.data.transforms import TransformSpec, apply_transforms

__all__ = ["DeviceDecodedLoader", "EncodedDataset", "collate_encoded", "decode_on_device"]

ENCODED_KEYS = ("image", "mask", "draw")


class EncodedDataset(Dataset[dict[str, object]]):
    """The samples of a :class:`SegmentationDataset` before transforms, JPEG images still encoded."""

    def __init__(self, dataset: SegmentationDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, object]:
        index, draw = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)
        ds, r = self.dataset, self.dataset.records
        path, label = str(r.image[index]), str(r.label[index])
        with open(path, "rb") as fh:
            head = fh.read(2)
        if str(r.kind[index]) == "noise" or head != b"\xff\xd8":
            image, mask = ds.load(index, draw)  # drawn noise, PNG, ...: decoded here as on the CPU path
            pixels: torch.Tensor = image
        else:
            with open(path, "rb") as fh:
                pixels = torch.frombuffer(bytearray(fh.read()), dtype=torch.uint8)
            shape = image_size(path)
            mask = (decode_label(label, ds.class_set, label_map=r.label_map_of(index)) if label
                    else np.full(shape, IGNORE_INDEX, np.uint8))
            if mask.shape != shape:
                raise ValueError(f"{path}: image {shape[1]}x{shape[0]} but label {label} is "
                                 f"{mask.shape[1]}x{mask.shape[0]}")
        return {"image": pixels, "mask": torch.from_numpy(mask), "draw": draw, "domain": str(r.domain[index]),
                "kind": str(r.kind[index]), "source": str(r.source[index]),
                "index": torch.tensor(index, dtype=torch.int64)}


def collate_encoded(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Images (bytes or pixels), masks and draws as lists; every other key as ``default_collate``."""
    batch: dict[str, Any] = default_collate([{k: v for k, v in s.items() if k not in ENCODED_KEYS} for s in samples])
    for key in ENCODED_KEYS:
        batch[key] = [s[key] for s in samples]
    return batch


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))


def decode_on_device(batch: dict[str, Any], transform: TransformSpec, seed: int,
                     device: torch.device) -> dict[str, Any]:
    """A batch from :func:`collate_encoded` with images decoded and transformed on ``device``, stacked uint8."""
    images: list[Any] = list(batch["image"])
    encoded = [i for i, image in enumerate(images) if image.dim() == 1]
    if encoded:
        for i, decoded in zip(encoded, _decode_jpegs([images[i] for i in encoded], device), strict=True):
            images[i] = decoded
    out_images, out_masks = [], []
    for image, mask, index, draw in zip(images, batch["mask"], batch["index"].tolist(), batch["draw"], strict=True):
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise ValueError(f"sample {index}: image {image.shape[2]}x{image.shape[1]} but label "
                             f"{mask.shape[1]}x{mask.shape[0]}")
        rng = np.random.default_rng([seed, index, draw])  # the dataset's key: same draws as the CPU path
        img, msk = apply_transforms(image.to(device), mask.to(device), transform, rng)
        out_images.append(img)
        out_masks.append(msk)
    return {**batch, "image": torch.stack(out_images), "mask": torch.stack(out_masks)}


class DeviceDecodedLoader:
    """Iterates a DataLoader of encoded samples, yielding batches decoded on ``device``."""

    def __init__(self, loader: DataLoader, transform: TransformSpec, seed: int, device: torch.device) -> None:
        self.loader, self.transform, self.seed, self.device = loader, transform, seed, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield decode_on_device(batch, self.transform, self.seed, self.device)
