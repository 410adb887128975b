"""Images shared by two splits of a run (train, evaluation.val, evaluation.test), by resolved path.

A model scored on images it trained on, or whose best weights were chosen on test images, reports
a number that means nothing; the trainer refuses such a run before any training step. Paths are
compared as resolved: each folder's real path (symlinks resolved, once per folder), and the file's
own when it is a symlink, so ``data/train`` and a link to it are the same split.
"""

from __future__ import annotations

import os

import numpy as np

from proveseg.data.records import RecordTable

__all__ = ["resolved_images", "shared_images", "split_overlap"]


def resolved_images(records: RecordTable) -> dict[str, int]:
    """Each record's image path resolved (see the module docstring) -> the first row holding it."""
    folders: dict[str, str] = {}
    out: dict[str, int] = {}
    for i, path in enumerate(records.image.tolist()):
        folder, name = os.path.split(path)
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder or ".")
        full = os.path.join(real, name)
        if os.path.islink(full):  # one lstat: only a linked file itself costs a full resolution
            full = os.path.realpath(full)
        out.setdefault(full, i)
    return out


def shared_images(a: RecordTable, b: RecordTable) -> list[tuple[int, int]]:
    """(row in ``a``, row in ``b``) of each resolved image the two tables share, in ``a``'s order."""
    seen_a, seen_b = resolved_images(a), resolved_images(b)
    return sorted((row, seen_b[path]) for path, row in seen_a.items() if path in seen_b)


def _sources(records: RecordTable, rows: list[int]) -> str:
    return ", ".join(repr(s) for s in sorted(set(np.asarray(records.source)[rows].tolist())))


def split_overlap(a: RecordTable, a_name: str, b: RecordTable, b_name: str) -> str | None:
    """A message naming both splits, their sources sharing images, the count and an example; None when disjoint."""
    shared = shared_images(a, b)
    if not shared:
        return None
    rows_a, rows_b = [i for i, _ in shared], [j for _, j in shared]
    first_a, first_b = str(a.image[rows_a[0]]), str(b.image[rows_b[0]])
    example = first_a if first_a == first_b else f"{first_a} = {first_b}"
    return (f"{len(shared)} image(s) are in both {a_name} and {b_name} (source {_sources(a, rows_a)} of {a_name}, "
            f"source {_sources(b, rows_b)} of {b_name}), e.g. {example}")
