"""Read an image's size, EXIF orientation and completeness from its bytes, without decoding.

JPEG and PNG (what segmentation datasets use) are parsed directly: the size from the SOF / IHDR
header, the orientation from the EXIF APP1 segment, completeness from the end marker
(JPEG ``FFD9``, PNG ``IEND``). Other formats fall back to Pillow's lazy header read. A size that
Pillow would refuse to decode (its decompression-bomb limit) or an empty one is a HeaderError, and
so is anything but a regular file (a FIFO is opened without blocking, then refused).
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

__all__ = ["HeaderError", "ImageHeader", "pixel_limit", "read_header"]

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class HeaderError(ValueError):
    """The file is not a readable image header."""


@dataclass(frozen=True)
class ImageHeader:
    width: int
    height: int
    format: str
    orientation: int  # EXIF orientation, 1 = as stored
    complete: bool  # the format's end marker is present


def _exif_orientation(tiff: bytes) -> int:
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    end = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(end + "H", tiff[ifd:ifd + 2])
    for i in range(count):
        entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        if len(entry) < 12:
            break
        tag, _type, _n = struct.unpack(end + "HHI", entry[:8])
        if tag == 0x0112:
            return int(struct.unpack(end + "H", entry[8:10])[0])
    return 1


def _jpeg(fd: int, size: int) -> ImageHeader:
    head = os.pread(fd, 4096, 0)
    pos, orientation = 2, 1
    while True:
        if pos + 4 > len(head):
            if len(head) >= size or len(head) >= 1 << 20:
                break
            head = os.pread(fd, min(size, 4 * len(head)), 0)  # markers beyond the first read: widen it
            continue
        if head[pos] != 0xFF:
            raise HeaderError("corrupt JPEG marker stream")
        marker = head[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        (length,) = struct.unpack(">H", head[pos + 2:pos + 4])
        if pos + 2 + length > len(head) and len(head) < size and (marker == 0xE1 or marker in _SOF):
            head = os.pread(fd, min(size, pos + 2 + length + 4096), 0)
            continue
        if marker == 0xE1 and head[pos + 4:pos + 10] == b"Exif\x00\x00":
            orientation = _exif_orientation(head[pos + 10:pos + 2 + length])
        if marker in _SOF:
            if pos + 9 > len(head):
                break
            h, w = struct.unpack(">HH", head[pos + 5:pos + 9])
            return ImageHeader(w, h, "JPEG", orientation, os.pread(fd, 2, max(0, size - 2)) == b"\xff\xd9")
        pos += 2 + length
    raise HeaderError("no JPEG frame header (SOF) found")


def _png(fd: int, size: int) -> ImageHeader:
    head = os.pread(fd, 33, 0)
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise HeaderError("PNG without IHDR chunk")
    w, h = struct.unpack(">II", head[16:24])
    complete = os.pread(fd, 12, max(0, size - 12))[4:8] == b"IEND"
    return ImageHeader(w, h, "PNG", 1, complete)


def pixel_limit() -> int | None:
    """Pixels above which Pillow refuses to decode an image (DecompressionBombError), or None without a limit."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def _checked(header: ImageHeader) -> ImageHeader:
    if header.width <= 0 or header.height <= 0:
        raise HeaderError(f"{header.format} header gives an empty size {header.width}x{header.height}")
    limit = pixel_limit()
    if limit is not None and header.width * header.height > limit:
        raise HeaderError(f"{header.format} header claims {header.width}x{header.height} = "
                          f"{header.width * header.height:,} pixels, over Pillow's decompression-bomb limit "
                          f"of {limit:,}: it would not decode")
    return header


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Header of the image at ``path``; raises HeaderError or OSError if it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO named like an image must not block the pass
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HeaderError("a folder, not an image file" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        if st.st_size == 0:
            raise HeaderError("empty file")
        magic = os.pread(fd, 8, 0)
        if magic.startswith(b"\xff\xd8"):
            return _checked(_jpeg(fd, st.st_size))
        if magic == _PNG_SIG:
            return _checked(_png(fd, st.st_size))
    finally:
        os.close(fd)
    try:
        with Image.open(path) as im:
            orientation = int(im.getexif().get(0x0112, 1))
            header = ImageHeader(im.width, im.height, str(im.format), orientation, True)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError) as exc:
        raise HeaderError(f"not a readable image ({exc or type(exc).__name__})") from exc
    return _checked(header)
