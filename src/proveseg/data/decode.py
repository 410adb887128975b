"""Decode images and label masks into numpy arrays, with the same EXIF handling for both.

Label values are checked on every decode: a value that is neither a class id nor the ignore
value raises :class:`LabelDecodeError` naming the file, long before it could reach a loss
function as a CUDA device-side assert.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from proveseg.data.classes import IGNORE_INDEX, ClassSet

__all__ = ["CITYSCAPES_ID_TO_TRAIN_ID", "LabelDecodeError", "decode_image", "decode_label", "image_size", "load_image"]


class LabelDecodeError(ValueError):
    """A label file whose values do not fit the class set."""


def _cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    for label_id, train_id in {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                               24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}.items():
        lut[label_id] = train_id
    return lut


CITYSCAPES_ID_TO_TRAIN_ID = _cityscapes_lut()


def decode_image(path: str, exif: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3); rotated by its EXIF orientation when ``exif``."""
    with Image.open(path) as f:
        f.load()
        im = ImageOps.exif_transpose(f) if exif else f
        return np.array(im.convert("RGB"))


def load_image(path: str) -> torch.Tensor:
    """RGB uint8 (3, H, W) tensor for training, EXIF orientation applied; errors name the file.

    Pillow, not torchvision.io: torchvision 0.29 deprecates its image decoders.
    """
    try:
        array = decode_image(path)
    except (OSError, SyntaxError) as exc:
        raise OSError(f"{path}: cannot decode image: {exc}") from exc
    return torch.from_numpy(array).permute(2, 0, 1)


def image_size(path: str, exif: bool = True) -> tuple[int, int]:
    """(height, width) as :func:`decode_image` would return it, from the header only."""
    from proveseg.data.imageheader import read_header

    h = read_header(path)
    swapped = exif and h.orientation in (5, 6, 7, 8)
    return (h.width, h.height) if swapped else (h.height, h.width)


def decode_label(path: str, class_set: ClassSet | None, exif: bool = True) -> np.ndarray:
    """Class ids uint8 (H, W) with 255 = ignore.

    Single-channel masks are taken as train ids; ``*_labelIds.png`` (Cityscapes/ACDC ids) are
    mapped to train ids; RGB masks are decoded through the class set's palette.
    """
    with Image.open(path) as f:
        f.load()
        im = ImageOps.exif_transpose(f) if exif else f
        if im.mode in ("RGB", "RGBA"):
            if class_set is None:
                raise LabelDecodeError(f"{path}: RGB colour-coded mask needs a class set with a palette")
            mask = class_set.decode_rgb(np.asarray(im.convert("RGB")))
        elif im.mode in ("P", "L"):
            mask = np.array(im)
        elif im.mode in ("I", "I;16", "I;16B"):
            values = np.asarray(im)
            if values.max(initial=0) > 255:
                raise LabelDecodeError(f"{path}: label value {int(values.max())} does not fit 0..255")
            mask = values.astype(np.uint8)
        else:
            raise LabelDecodeError(f"{path}: label image mode {im.mode!r} is not a class-id mask")
    if path.endswith("_labelIds.png"):
        mask = CITYSCAPES_ID_TO_TRAIN_ID[mask]
    if class_set is not None:
        bad = (mask >= class_set.num_classes) & (mask != IGNORE_INDEX)
        if bad.any():
            found = sorted(set(np.unique(mask[bad]).tolist()))[:8]
            raise LabelDecodeError(
                f"{path}: label values {found} outside {class_set.name} (0..{class_set.num_classes - 1}, "
                f"{IGNORE_INDEX} = ignore) in {int(bad.sum())} pixels")
    return np.ascontiguousarray(mask)
