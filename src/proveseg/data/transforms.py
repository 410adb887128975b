"""Joint image/mask transforms over torchvision.transforms.v2 with explicit randomness.

Random parameters come from a numpy generator keyed by (seed, sample id, pass), never from the
global torch RNG, so a sample looks the same whichever worker loads it and after a resume.
Masks are resized with nearest neighbour and padded with the ignore value. Several views of one
sample (a pair) can share one geometry (:func:`apply_shared_transforms`); a single view draws its
parameters in the same order either way, so adding a pair never changes the first view.

Every transform runs on uint8 pixels. The training loader and evaluation leave images uint8
(``TransformSpec(to_float=False)``): a quarter of the bytes through worker IPC, collation and the
host-to-device copy; :func:`to_model_input` then converts and normalises on the device with the
same operations, so the model sees the same numbers either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from proveseg.data.classes import IGNORE_INDEX

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TransformSpec", "apply_shared_transforms", "apply_transforms",
           "denormalize", "to_model_input"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformSpec:
    """What happens to a sample between decoding and the model."""

    resize: tuple[int, int] | None = None  # (H, W) applied first
    scale: tuple[float, float] | None = None  # random rescale range, e.g. (0.5, 2.0)
    crop: tuple[int, int] | None = None  # random crop (H, W), padded if the image is smaller
    hflip: bool = False
    jitter: float = 0.0  # photometric strength: brightness/contrast/saturation +-jitter, hue +-jitter/5
    normalize: bool = True  # ImageNet mean/std
    to_float: bool = True  # False: image and mask stay uint8; the consumer calls to_model_input on its device


def apply_transforms(image: torch.Tensor, mask: np.ndarray | torch.Tensor, spec: TransformSpec,
                     rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W) uint8 image and (H, W) uint8 mask -> float (3, h, w) image and long (h, w) mask.

    With ``spec.to_float`` off: uint8 (3, h, w) image and uint8 (h, w) mask.
    """
    (img, msk), = apply_shared_transforms([(image, mask)], spec, rng)
    return img, msk


def apply_shared_transforms(views: list[tuple[torch.Tensor, np.ndarray | torch.Tensor]], spec: TransformSpec,
                            rng: np.random.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Transform (image, mask) views of one sample under the same geometry: one resize, scale, crop and flip.

    The views must have the same size. The geometry is drawn once, from ``rng``, exactly as for a
    single view (the first view of a pair is transformed as it would be alone); the photometric
    jitter is then drawn for each view in turn, so two views of a pair differ in colour but not
    in where each pixel lands.
    """
    sizes = {tuple(image.shape[-2:]) for image, _ in views}
    if len(sizes) != 1:
        raise ValueError(f"views of different sizes {sorted(sizes)} cannot share one geometry")
    pairs = [(tv_tensors.Image(image),
              tv_tensors.Mask((torch.from_numpy(mask) if isinstance(mask, np.ndarray) else mask)[None]))
             for image, mask in views]
    if spec.resize is not None:
        pairs = [_resize(img, msk, list(spec.resize)) for img, msk in pairs]
    if spec.scale is not None:
        factor = float(rng.uniform(*spec.scale))
        h, w = pairs[0][0].shape[-2:]
        pairs = [_resize(img, msk, [max(1, round(h * factor)), max(1, round(w * factor))]) for img, msk in pairs]
    if spec.crop is not None:
        ch, cw = spec.crop
        h, w = pairs[0][0].shape[-2:]
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:
            pairs = [(F.pad(img, [0, 0, pad_w, pad_h], fill=0), F.pad(msk, [0, 0, pad_w, pad_h], fill=IGNORE_INDEX))
                     for img, msk in pairs]
            h, w = pairs[0][0].shape[-2:]
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        pairs = [(F.crop(img, top, left, ch, cw), F.crop(msk, top, left, ch, cw)) for img, msk in pairs]
    if spec.hflip and rng.random() < 0.5:
        pairs = [(F.horizontal_flip(img), F.horizontal_flip(msk)) for img, msk in pairs]
    return [(_photometric(img, spec, rng), _mask_out(msk, spec)) for img, msk in pairs]


def _mask_out(msk: torch.Tensor, spec: TransformSpec) -> torch.Tensor:
    out = msk[0].as_subclass(torch.Tensor)
    return out.long() if spec.to_float else out


def _resize(img: torch.Tensor, msk: torch.Tensor, size: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    return (F.resize(img, size, interpolation=InterpolationMode.BILINEAR, antialias=True),
            F.resize(msk, size, interpolation=InterpolationMode.NEAREST))


def _photometric(img: torch.Tensor, spec: TransformSpec, rng: np.random.Generator) -> torch.Tensor:
    """Jitter (drawn from ``rng``), then float in [0, 1], then the ImageNet normalisation if asked."""
    if spec.jitter > 0:
        j = spec.jitter
        img = F.adjust_brightness(img, float(rng.uniform(1 - j, 1 + j)))
        img = F.adjust_contrast(img, float(rng.uniform(1 - j, 1 + j)))
        img = F.adjust_saturation(img, float(rng.uniform(1 - j, 1 + j)))
        img = F.adjust_hue(img, float(rng.uniform(-j / 5, j / 5)))
    if not spec.to_float:
        return img.as_subclass(torch.Tensor)
    return to_model_input(img.as_subclass(torch.Tensor), spec.normalize)


def to_model_input(images: torch.Tensor, normalize: bool = True,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> float32 in [0, 1], ImageNet-normalised when ``normalize``; on their device.

    The result is laid out in ``memory_format`` (a batch, (N, 3, H, W), may be channels-last), arranged
    while still uint8, the cheapest point to move bytes.
    """
    if images.dim() == 4 or memory_format == torch.contiguous_format:
        images = images.contiguous(memory_format=memory_format)
    out = F.to_dtype(images, torch.float32, scale=True)
    if normalize:
        out = F.normalize(out, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return out


def denormalize(image: torch.Tensor, normalized: bool = True) -> np.ndarray:
    """Model input (3, H, W) back to uint8 (H, W, 3) for viewing; a uint8 image is already that."""
    if image.dtype == torch.uint8:
        return image.detach().cpu().permute(1, 2, 0).numpy()
    x = image.detach().float().cpu()
    if normalized:
        x = x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
