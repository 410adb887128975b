"""Speed of the header pass over a reader source (every image and label) and of the split-overlap check.

A folder source of ``ROWS`` (default 2,000; ``python benchmarks/bench_filecheck.py 20000``) 64x128
JPEG images with their PNG labels, six domains, written to a temporary folder (so read from the
page cache: the numbers are of the parsing, not of a cold disk). Prints rows/s of the reader alone,
of :func:`proveseg.data.filecheck.check_record_files` and of :func:`proveseg.data.overlap.split_overlap`
(the source against itself), each the best of ``REPEATS``, with the load average. Same-run baseline
for the header pass: Pillow opening every image and label for its size (what a hand-written check
would do). Target: the header pass >= 20,000 rows/s (the manifest's header target) and >= 1.5x the
Pillow baseline.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from proveseg.data.filecheck import check_record_files
from proveseg.data.overlap import split_overlap
from proveseg.readers import FolderSource, read_source

REPEATS = 5
DOMAINS = ("clear_day", "cloudy", "fog", "night", "rainy", "snowy")


def _make(root: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(root / "x.jpg", quality=80)
    Image.fromarray(rng.integers(0, 19, (64, 128), dtype=np.uint8)).save(root / "x.png")
    jpg, png = (root / "x.jpg").read_bytes(), (root / "x.png").read_bytes()
    for d in DOMAINS:
        (root / "images" / d).mkdir(parents=True)
        (root / "labels" / d).mkdir(parents=True)
    for i in range(rows):
        d = DOMAINS[i % len(DOMAINS)]
        (root / "images" / d / f"{i:07d}.jpg").write_bytes(jpg)
        (root / "labels" / d / f"{i:07d}.png").write_bytes(png)


def _best(work: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _make(root, rows)
        src = FolderSource(name="bench", root=root)
        records = read_source(src).records
        assert len(records) == rows
        check = check_record_files(records)
        assert not check.problems, check.message("bench")
        assert split_overlap(records, "train", records, "test") is not None
        read_s = _best(lambda: read_source(src))
        check_s = _best(lambda: check_record_files(records))
        overlap_s = _best(lambda: split_overlap(records, "train", records, "test"))
        pillow_s = _best(lambda: _pillow_sizes(records.image.tolist(), records.label.tolist()))
        print(f"{rows} records (image + label), best of {REPEATS}; load {os.getloadavg()[0]:.1f}:")
        for what, seconds in (("reader (walk + label listing)", read_s), ("header pass (image + label)", check_s),
                              ("  baseline: Pillow size reads", pillow_s),
                              ("split overlap (resolved paths)", overlap_s)):
            print(f"  {what:32s} {seconds * 1e3:8.1f} ms  {rows / seconds:10,.0f} rows/s")
        rate, ratio = rows / check_s, pillow_s / check_s
        print(f"  header pass: {rate:,.0f} rows/s (target >= 20,000: {'met' if rate >= 20_000 else 'NOT met'}), "
              f"{ratio:.1f}x Pillow (target >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'})")


def _pillow_sizes(images: list[str], labels: list[str]) -> None:
    for image, label in zip(images, labels, strict=True):
        with Image.open(image) as a, Image.open(label) as b:
            if a.size != b.size:
                raise AssertionError(image)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
