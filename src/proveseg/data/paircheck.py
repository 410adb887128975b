"""Checks of a paired row's second image and label from their headers, shared by the manifest and the csv reader.

A pair is valid when ``image2`` (and ``label2`` when given) has a readable, complete header, the
label is stored losslessly and has ``image2``'s size, and, under ``pair_geometry: shared``,
``image2`` has the first image's size (one crop and flip must land on the same pixels of both).
Sizes are compared as decoded (EXIF orientation applied), as the loader sees them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from proveseg.data.imageheader import HeaderError, ImageHeader, read_header

__all__ = ["PAIR_REASONS", "pair_problem", "read_headers", "shown_size"]

PAIR_REASONS = ("missing_image2", "missing_label2", "unreadable_image2", "unreadable_label2", "pair_size_mismatch")


def read_headers(paths: list[str], threads: int) -> list[ImageHeader | str]:
    """Header of each path, or the reason it could not be read, in a thread pool (reads wait on I/O)."""
    def read(chunk: list[str]) -> list[ImageHeader | str]:
        out: list[ImageHeader | str] = []
        for p in chunk:
            try:
                out.append(read_header(p))
            except OSError as exc:
                out.append(exc.strerror or str(exc) or type(exc).__name__)
            except HeaderError as exc:
                out.append(str(exc) or type(exc).__name__)
        return out

    chunks = [paths[k:k + 1024] for k in range(0, len(paths), 1024)]
    if threads <= 1 or len(chunks) <= 1:
        return [h for c in chunks for h in read(c)]
    with ThreadPoolExecutor(threads) as pool:
        return [h for part in pool.map(read, chunks) for h in part]


def shown_size(h: ImageHeader) -> tuple[int, int]:
    """(width, height) as decoded, EXIF orientation applied."""
    return (h.height, h.width) if h.orientation in (5, 6, 7, 8) else (h.width, h.height)


def _unreadable(header: ImageHeader | str, path: str, what: str) -> tuple[str, str, str]:
    why = header if isinstance(header, str) else "end marker missing (truncated)"
    return f"unreadable_{what}", what, f"{path}: {why}"


def pair_problem(image: ImageHeader | str, image2: ImageHeader | str, label2: ImageHeader | str | None,
                 geometry: str, paths: tuple[str, str, str]) -> tuple[str, str, str] | None:
    """The first problem of a pair as (reason, field, detail), or None. ``label2`` None: the pair has no label.

    ``image`` is the first image's header: only its size is used (its own checks are the caller's).
    ``field`` is ``image2`` or ``label2``.
    """
    path, path2, label_path = paths
    if isinstance(image2, str) or not image2.complete:
        return _unreadable(image2, path2, "image2")
    if isinstance(label2, str) or (label2 is not None and not label2.complete):
        return _unreadable(label2, label_path, "label2")
    if label2 is not None:
        if label2.format == "JPEG":
            return "unreadable_label2", "label2", f"{label_path}: a JPEG label: labels must be stored losslessly (PNG)"
        if shown_size(label2) != shown_size(image2):
            (w, h), (lw, lh) = shown_size(image2), shown_size(label2)
            return "pair_size_mismatch", "label2", f"image2 {w}x{h} ({path2}), label2 {lw}x{lh} ({label_path})"
    if geometry == "shared" and isinstance(image, ImageHeader) and shown_size(image) != shown_size(image2):
        (w, h), (w2, h2) = shown_size(image), shown_size(image2)
        return "pair_size_mismatch", "image2", (f"image {w}x{h} ({path}), image2 {w2}x{h2} ({path2}): "
                                                "pair_geometry shared needs equal sizes")
    return None
