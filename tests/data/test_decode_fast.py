"""The fast decoders give Pillow's pixels, EXIF orientation included, and decline what Pillow must decide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from proveseg.data import decode as decode_module
from proveseg.data.decode import decode_image, decode_label, image_size


def _pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(ImageOps.exif_transpose(im).convert("RGB"))


def _picture(h: int = 24, w: int = 40) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return np.stack([x * 6 % 256, y * 10 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientations_match_pillow(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_picture()).save(path, quality=90, exif=exif)
    assert decode_module._fast_jpeg(path.read_bytes()) is not None  # the fast path runs, not the fallback
    out = decode_image(str(path))
    assert np.array_equal(out, _pillow(path)) and out.flags.c_contiguous
    assert out.shape[:2] == image_size(str(path))
    assert np.array_equal(decode_image(str(path), exif=False), np.array(Image.open(path).convert("RGB")))


def test_fast_paths_equal_pillow_and_fall_back(tmp_path: Path) -> None:
    pic = _picture(64, 96)
    Image.fromarray(pic).save(tmp_path / "a.png")
    Image.fromarray(pic).save(tmp_path / "a.jpg", quality=85, progressive=True)
    Image.fromarray(pic).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(pic[..., 0]).save(tmp_path / "gray.jpg")
    Image.fromarray(pic).convert("RGBA").save(tmp_path / "rgba.png")
    for name in ("a.png", "a.jpg", "cmyk.jpg", "gray.jpg", "rgba.png"):
        assert np.array_equal(decode_image(str(tmp_path / name)), _pillow(tmp_path / name)), name
    assert decode_module._fast_jpeg((tmp_path / "cmyk.jpg").read_bytes()) is None
    assert np.array_equal(decode_image(str(tmp_path / "a.png")), pic)


def test_png_with_exif_orientation_goes_through_pillow(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_picture()).save(tmp_path / "r.png", exif=exif)
    assert not decode_module._plain_png((tmp_path / "r.png").read_bytes(), 2)
    assert np.array_equal(decode_image(str(tmp_path / "r.png")), _pillow(tmp_path / "r.png"))


def test_truncated_jpeg_still_raises_naming_the_file(tmp_path: Path) -> None:
    Image.fromarray(_picture(64, 96)).save(tmp_path / "a.jpg", quality=85)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"cut\.jpg"):
        decode_image(str(tmp_path / "cut.jpg"))


def test_label_orientation_is_applied_only_when_tagged(tmp_path: Path) -> None:
    mask = (np.arange(24 * 40).reshape(24, 40) % 5).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(mask).save(tmp_path / "m.png", exif=exif)
    Image.fromarray(mask).save(tmp_path / "plain.png")
    assert np.array_equal(decode_label(str(tmp_path / "m.png"), None), np.array(ImageOps.exif_transpose(
        Image.open(tmp_path / "m.png"))))
    assert np.array_equal(decode_label(str(tmp_path / "plain.png"), None), mask)


def test_greyscale_png_labels_take_the_fast_path_and_equal_pillow(tmp_path: Path) -> None:
    mask = (np.arange(48 * 80).reshape(48, 80) % 7).astype(np.uint8)
    mask[:4] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    if decode_module._cv2() is not None:  # OpenCV (the fast extra, or mmengine's) present: the fast path runs
        assert decode_module._fast_label(str(tmp_path / "m.png")) is not None
    assert np.array_equal(decode_label(str(tmp_path / "m.png"), None), mask)
    # transparency, an orientation after the pixels, palettes and 16 bits are Pillow's: same ids either way
    Image.fromarray(mask).save(tmp_path / "t.png", transparency=3)
    exif = Image.Exif()
    exif[0x0112] = 3
    data = (tmp_path / "m.png").read_bytes()
    payload = exif.tobytes()[6:]  # the eXIf chunk holds the TIFF block without the "Exif\0\0" prefix
    import struct
    import zlib
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    (tmp_path / "late.png").write_bytes(data[:-12] + chunk + data[-12:])
    Image.fromarray(mask).convert("P").save(tmp_path / "p.png")
    Image.fromarray(mask.astype(np.uint16)).save(tmp_path / "w.png")
    for name in ("t.png", "late.png", "p.png", "w.png"):
        assert decode_module._fast_label(str(tmp_path / name)) is None, name
        with Image.open(tmp_path / name) as im:
            expected = np.array(ImageOps.exif_transpose(im)).astype(np.uint8)
        assert np.array_equal(decode_label(str(tmp_path / name), None), expected), name


def _with_chunk(data: bytes, kind: bytes, body: bytes, crc_ok: bool = True) -> bytes:
    """``data`` (a PNG) with one more chunk right after IHDR."""
    import struct
    import zlib

    crc = zlib.crc32(kind + body) ^ (0 if crc_ok else 1)
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    return data[:33] + chunk + data[33:]


def test_pngs_whose_orientation_or_integrity_pillow_decides_skip_the_fast_path(tmp_path: Path) -> None:
    mask = (np.arange(13 * 21).reshape(13, 21) % 7).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(_picture(13, 21)).save(tmp_path / "rgb.png")
    xmp = b'XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    for name in ("m.png", "rgb.png"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"xmp-{name}").write_bytes(_with_chunk(data, b"iTXt", xmp))
        (tmp_path / f"raw-{name}").write_bytes(_with_chunk(data, b"tEXt", b"Raw profile type exif\x00\nexif\n 0\n"))
        (tmp_path / f"crc-{name}").write_bytes(_with_chunk(data, b"tEXt", b"Comment\x00x", crc_ok=False))
        colour = 0 if name == "m.png" else 2
        for variant in ("xmp", "raw", "crc"):
            assert not decode_module._plain_png((tmp_path / f"{variant}-{name}").read_bytes(), colour)
    labels = decode_label(str(tmp_path / "xmp-m.png"), None)
    with Image.open(tmp_path / "xmp-m.png") as im:
        assert labels.shape == (21, 13) and np.array_equal(labels, np.array(ImageOps.exif_transpose(im)))
    assert decode_image(str(tmp_path / "xmp-rgb.png")).shape == (21, 13, 3)  # rotated, as Pillow shows it
    for name in ("crc-m.png", "crc-rgb.png"):  # a broken chunk: Pillow's error, naming the file, either way
        with pytest.raises(OSError, match=name):
            decode_image(str(tmp_path / name)) if "rgb" in name else decode_label(str(tmp_path / name), None)
