"""Decode images and label masks into numpy arrays, with the same EXIF handling for both.

Label values are checked on every decode: a value that is neither a class id nor the ignore
value raises :class:`LabelDecodeError` naming the file, long before it could reach a loss
function as a CUDA device-side assert. A file that cannot be decoded (corrupt, truncated, a
decompression bomb) raises ``OSError`` naming the file; nothing is silently turned into ignore.

Images take the fastest decoder that gives the same pixels as Pillow: libjpeg-turbo through
simplejpeg for JPEG (1.5-2x Pillow, bit-identical), OpenCV for 8-bit RGB PNG when it is
installed (the ``fast`` extra; libpng with less overhead), Pillow for everything else and for
every file the fast paths decline (CMYK, 16-bit, palettes, truncated or corrupt data, sizes over
Pillow's decompression-bomb limit), so errors read the same whichever decoder would have run.
EXIF orientation is read from the bytes already in memory and applied with numpy views only
when the file has an orientation other than 1.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from functools import cache, lru_cache
from types import ModuleType
from typing import TypeVar

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageOps

from proveseg.data.classes import IGNORE_INDEX, ClassSet
from proveseg.data.imageheader import _exif_orientation, pixel_limit
from proveseg.data.labelmap import LabelMap

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
CITYSCAPES_MAX_ID = 33  # ids 0..33 are defined (the void ones map to ignore); 255 is ignore; others are errors

# What Pillow raises for a file it cannot decode; DecompressionBombError is not an OSError.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # more than 8 bits per pixel


def _orientation(im: Image.Image) -> int:
    """EXIF orientation of an open image (1 = as stored)."""
    try:
        return int(im.getexif().get(0x0112, 1))
    except (TypeError, ValueError):  # an unreadable orientation is no orientation, as in exif_transpose
        return 1


T = TypeVar("T")


def _pixels(path: str, exif: bool, take: Callable[[Image.Image], T]) -> tuple[str, str, T]:
    """(format, mode, ``take(image)``) of the image at ``path``, EXIF applied; failures raise OSError naming it."""
    try:
        with Image.open(path) as f:
            f.load()
            # exif_transpose copies the whole image even when there is nothing to rotate: ask first
            im = ImageOps.exif_transpose(f) if exif and _orientation(f) != 1 else f
            return str(f.format), im.mode, take(im)
    except _DECODE_ERRORS as exc:
        raise OSError(f"{path}: cannot decode image: {exc or type(exc).__name__}") from exc


def _jpeg_orientation(data: bytes) -> int:
    """EXIF orientation from the APP1 segment of JPEG bytes (1 when absent)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA or (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)):
            break  # scan or frame header: EXIF comes before both
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return _exif_orientation(data[pos + 10:pos + 2 + length])
        pos += 2 + length
    return 1


def _oriented(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (H, W, C) as Pillow's ``exif_transpose`` shows it, contiguous."""
    if orientation in (5, 6, 7, 8):
        array = array.transpose(1, 0, 2)  # 5 transpose, 6 = transpose + flip LR, 7 = transverse, 8 = + flip TB
    flip_lr = orientation in (2, 3, 6, 7)
    flip_tb = orientation in (3, 4, 7, 8)
    array = array[::-1 if flip_tb else 1, ::-1 if flip_lr else 1]
    return np.ascontiguousarray(array)


@cache
def _simplejpeg() -> ModuleType | None:
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


@cache
def _cv2() -> ModuleType | None:
    try:
        import cv2
    except ImportError:
        return None
    if not hasattr(cv2, "IMREAD_COLOR_RGB"):  # OpenCV < 4.11 would need an extra BGR->RGB pass
        return None
    cv2.setNumThreads(1)  # one decode per loader worker; the workers are the parallelism
    return cv2


def _fast_jpeg(data: bytes) -> np.ndarray | None:
    """RGB pixels through libjpeg-turbo, or None where Pillow must decide (CMYK, corrupt, too large)."""
    sj = _simplejpeg()
    if sj is None:
        return None
    try:
        h, w, colorspace, _ = sj.decode_jpeg_header(data)
        limit = pixel_limit()
        if colorspace in ("CMYK", "YCCK") or (limit is not None and h * w > limit):
            return None
        return sj.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError:
        return None


# Text chunks from which Pillow's getexif() reads an orientation (XMP, ImageMagick's raw EXIF profile)
_ORIENTATION_TEXT = (b"XML:com.adobe.xmp\x00", b"Raw profile type exif\x00")


def _plain_png(data: bytes, colour: int) -> bool:
    """8-bit PNG of ``colour`` type (0 grey, 2 RGB), complete, within Pillow's size limit, with intact chunks
    before its pixels, no tRNS chunk and nothing Pillow reads an orientation from (an eXIf chunk anywhere,
    XMP or a raw EXIF profile in a text chunk): transparency, orientation and broken files are Pillow's to decide.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or data[-8:-4] != b"IEND" or len(data) < 33:
        return False
    w, h, depth, kind = struct.unpack(">IIBB", data[16:26])
    limit = pixel_limit()
    if depth != 8 or kind != colour or (limit is not None and w * h > limit):
        return False
    pos, pixels = 8, False
    while pos + 8 <= len(data):  # chunk headers only, and the few small chunks before the pixels
        length, chunk = struct.unpack(">I4s", data[pos:pos + 8])
        if chunk in (b"eXIf", b"tRNS") or (chunk in (b"tEXt", b"zTXt", b"iTXt") and any(
                data.startswith(keyword, pos + 8) for keyword in _ORIENTATION_TEXT)):
            return False
        if not pixels and chunk != b"IDAT" and (  # Pillow refuses a broken chunk there; libpng only warns
                zlib.crc32(data[pos + 4:pos + 8 + length]) != int.from_bytes(data[pos + 8 + length:pos + 12 + length])):
            return False
        pixels |= chunk == b"IDAT"
        pos += 12 + length
    return pixels


def _fast_png(data: bytes, grey: bool = False) -> np.ndarray | None:
    """RGB (or, with ``grey``, single-channel) pixels through OpenCV's libpng, or None where Pillow must decide."""
    cv2 = _cv2()
    if cv2 is None or not _plain_png(data, 0 if grey else 2):
        return None
    out = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED if grey else cv2.IMREAD_COLOR_RGB)
    return None if out is None or out.ndim != (2 if grey else 3) else out


def _fast_decode(path: str, exif: bool) -> np.ndarray | None:
    """The image through a fast decoder, EXIF applied, or None to go through Pillow."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None  # Pillow raises the error naming the file
    if data[:2] == b"\xff\xd8":
        array = _fast_jpeg(data)
        orientation = _jpeg_orientation(data) if exif and array is not None else 1
        return array if orientation == 1 or array is None else _oriented(array, orientation)
    return _fast_png(data) if data[:4] == b"\x89PNG" else None


def decode_image(path: str, exif: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3); rotated by its EXIF orientation when ``exif``.

    Raises OSError naming the file when it cannot be decoded, or when it has more than 8 bits per
    channel (16-bit or float images would be clipped to white by the conversion to RGB).
    """
    fast = _fast_decode(path, exif)
    if fast is not None:
        return fast

    def rgb(im: Image.Image) -> np.ndarray:
        return np.empty((0, 0, 3), np.uint8) if im.mode in _WIDE_MODES else np.array(im.convert("RGB"))

    _, mode, array = _pixels(path, exif, rgb)
    if mode in _WIDE_MODES:
        raise OSError(f"{path}: image mode {mode!r} has more than 8 bits per pixel; converting it to RGB would "
                      "clip it: save it as 8-bit RGB")
    return array


def load_image(path: str) -> torch.Tensor:
    """RGB uint8 (3, H, W) tensor for training, EXIF orientation applied; errors name the file.

    Not torchvision.io: torchvision 0.29 deprecates its image decoders (see :func:`decode_image`).
    """
    return torch.from_numpy(decode_image(path)).permute(2, 0, 1)


def image_size(path: str, exif: bool = True) -> tuple[int, int]:
    """(height, width) as :func:`decode_image` would return it, from the header only; errors name the file."""
    from proveseg.data.imageheader import HeaderError, read_header

    try:
        h = read_header(path)
    except HeaderError as exc:
        raise HeaderError(f"{path}: {exc}") from exc
    swapped = exif and h.orientation in (5, 6, 7, 8)
    return (h.width, h.height) if swapped else (h.height, h.width)


_Palette = tuple[bytes, np.ndarray]  # a 'P' label's palette (RGB triples) and which of its 256 indices are used


def _label_pixels(im: Image.Image) -> tuple[np.ndarray, _Palette | None]:
    """The label's values, and for a palette image its palette and used indices (to tell indices from colours;
    Pillow's histogram counts them in C, 4x faster than a bincount of the array)."""
    if im.mode in ("RGB", "RGBA"):
        return np.asarray(im.convert("RGB")), None
    if im.mode in ("P", "L"):
        # Pillow's Arrow export is zero-copy; np.array(im) goes through tobytes(), 3x the decode itself
        flat = pa.array(im).to_numpy(zero_copy_only=True)
        palette = (bytes(im.getpalette("RGB") or []), np.asarray(im.histogram(), np.int64) > 0) if im.mode == "P" \
            else None
        return np.array(flat.reshape(im.height, im.width)), palette
    if im.mode in _WIDE_MODES[:-1]:
        return np.array(im), None
    return np.empty((0, 0), np.uint8), None  # refused below, outside the decoding guard


@lru_cache(maxsize=64)
def _palette_tables(palette: bytes, class_set: ClassSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per palette index (256 entries): is its colour the class colour of the same id; does it say nothing
    beyond the index (no entry, grey (i, i, i), or black: tools that write no palette leave zeros); the class id
    its colour names (-1: none, 255: black)."""
    n = len(palette) // 3
    colours = np.zeros((256, 3), np.int64)
    colours[:n] = np.frombuffer(palette[: 3 * n], np.uint8).reshape(n, 3)[:256]
    index = np.arange(256)
    own = np.zeros((256, 3), np.int64)
    own[: class_set.num_classes] = class_set.palette
    same_id = (index < class_set.num_classes) & (colours == own).all(axis=1)
    no_colour = (index >= n) | (colours == index[:, None]).all(axis=1) | (colours == 0).all(axis=1)
    by_colour = np.full(256, -1, np.int64)
    by_colour[(colours == 0).all(axis=1) & (index < n)] = IGNORE_INDEX  # black, as in ClassSet.decode_rgb
    for cid, rgb in enumerate(class_set.palette):  # a class colour wins over black, as in decode_rgb
        by_colour[(colours == rgb).all(axis=1) & (index < n)] = cid
    return same_id, no_colour, by_colour


def _palette_ids(path: str, indices: np.ndarray, palette: _Palette, class_set: ClassSet) -> np.ndarray:
    """Class ids of a palette ('P') label: the indices when they are ids (VOC-style: index i has class i's colour,
    or the palette has no colours, or colours of another scheme: no used colour is a class colour), else the ids
    the used entries' colours name (a colour mask saved with an adaptive palette: every used colour is a class
    colour). A palette where some used colours are class colours of other ids and some are no class colour is
    ambiguous (a re-palettised colour mask with colours off the palette?) and raises, naming the file.

    256-entry tables cached per palette: per image, Pillow's histogram and a lookup only for colour masks.
    """
    same_id, no_colour, by_colour = _palette_tables(palette[0], class_set)
    used = palette[1].copy()
    used[IGNORE_INDEX] = False  # 255 is the ignore value whatever its colour (VOC boundaries)
    if same_id[used].all() or no_colour[used].all():
        return indices
    if (by_colour[used] >= 0).all():
        return np.take(by_colour.astype(np.uint8), indices)
    if used[class_set.num_classes:].any():
        return indices  # indices that are no ids: the range check names them (a dataset's own ids, no label_map)
    if not (used & (by_colour >= 0) & ~same_id).any():
        return indices  # a decorative palette of another scheme (e.g. VOC's colour map on any dataset's ids)
    bad = np.flatnonzero(used & (by_colour < 0))[:5]
    listed = ", ".join(f"index {i} = {tuple(palette[0][3 * i: 3 * i + 3])}" for i in bad.tolist())
    raise LabelDecodeError(
        f"{path}: palette label whose used colours are partly {class_set.name} class colours of other ids and "
        f"partly no class colour (indices or colours: ambiguous): {listed}; save the mask "
        "with class ids as indices (or single-channel), or with the class set's colours")


def _fast_label(path: str) -> tuple[str, str, np.ndarray] | None:
    """("PNG", "L", ids) of an 8-bit greyscale PNG label through OpenCV (the common mask format), else None."""
    if _cv2() is None:
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)  # signature and IHDR: colour masks and palettes go to Pillow unread
            if head[:8] != b"\x89PNG\r\n\x1a\n" or head[24:26] != b"\x08\x00":
                return None
            data = head + fh.read()
    except OSError:
        return None  # Pillow raises the error naming the file
    ids = _fast_png(data, grey=True)
    return None if ids is None else ("PNG", "L", ids)


def decode_label(path: str, class_set: ClassSet | None, exif: bool = True,
                 label_map: LabelMap | None = None) -> np.ndarray:
    """Class ids uint8 (H, W) with 255 = ignore.

    Single-channel masks are taken as train ids, or mapped through ``label_map`` (the source's
    table, see :mod:`proveseg.data.labelmap`) when given; otherwise ``*_labelIds.png``
    (Cityscapes/ACDC ids) are mapped to train ids; RGB masks are decoded through the class set's
    palette (a ``label_map`` applies to id masks only). A file that cannot
    be decoded raises OSError; values (or colours) that are not class ids raise LabelDecodeError;
    both name the file.
    """
    fast = _fast_label(path)
    fmt, mode, (values, palette) = (fast[0], fast[1], (fast[2], None)) if fast else _pixels(path, exif,
                                                                                           _label_pixels)
    if fmt == "JPEG":
        raise LabelDecodeError(f"{path}: a JPEG label: lossy compression changes class ids and colours near every "
                               "edge; labels must be stored losslessly (PNG)")
    if mode in ("RGB", "RGBA"):
        if label_map is not None:
            raise LabelDecodeError(f"{path}: an RGB colour mask, but its source has a label_map, which maps the ids "
                                   "of single-channel masks")
        if class_set is None:
            raise LabelDecodeError(f"{path}: RGB colour-coded mask needs a class set with a palette")
        try:
            mask = class_set.decode_rgb(values)
        except ValueError as exc:
            raise LabelDecodeError(f"{path}: {exc}") from None
    elif mode == "P" and class_set is not None and label_map is None and palette is not None:
        mask = _palette_ids(path, values, palette, class_set)  # with a label_map, indices are the source's ids
    elif mode in ("P", "L"):
        mask = values
    elif mode in _WIDE_MODES[:-1]:
        low, high = int(values.min(initial=0)), int(values.max(initial=0))
        if low < 0 or high > 255:
            raise LabelDecodeError(f"{path}: label value {high if high > 255 else low} does not fit 0..255")
        mask = values.astype(np.uint8)
    else:
        raise LabelDecodeError(f"{path}: label image mode {mode!r} is not a class-id mask")
    mask = _to_class_ids(path, mask, label_map)
    # two counting passes instead of three boolean temporaries: this runs on every training sample
    if class_set is not None and (np.count_nonzero(mask >= class_set.num_classes)
                                  != np.count_nonzero(mask == IGNORE_INDEX)):
        bad = (mask >= class_set.num_classes) & (mask != IGNORE_INDEX)
        found = sorted(set(np.unique(mask[bad]).tolist()))[:8]
        raise LabelDecodeError(
            f"{path}: label values {found} outside {class_set.name} (0..{class_set.num_classes - 1}, "
            f"{IGNORE_INDEX} = ignore) in {int(bad.sum())} pixels")
    return np.ascontiguousarray(mask)


def _to_class_ids(path: str, mask: np.ndarray, label_map: LabelMap | None) -> np.ndarray:
    """A decoded id mask through the source's label map, else Cityscapes label ids to train ids, else as is."""
    if label_map is not None:
        return label_map.apply(mask, path)
    if path.endswith("_labelIds.png"):
        _check_cityscapes_ids(path, mask)
        return CITYSCAPES_ID_TO_TRAIN_ID[mask]
    return mask


def _check_cityscapes_ids(path: str, ids: np.ndarray) -> None:
    """Cityscapes label ids are 0..33 (void ones map to ignore) or 255; anything else is not such a mask."""
    bad = (ids > CITYSCAPES_MAX_ID) & (ids != IGNORE_INDEX)
    if bad.any():
        values, counts = np.unique(ids[bad], return_counts=True)
        listed = ", ".join(f"{v}: {n} px" for v, n in zip(values[:8].tolist(), counts[:8].tolist(), strict=True))
        raise LabelDecodeError(f"{path}: Cityscapes label ids must be 0..{CITYSCAPES_MAX_ID} or {IGNORE_INDEX}; "
                               f"found {listed} (a train-id or colour mask named *_labelIds.png?)")
