"""Manifest validation speed on a 100,000-row manifest (targets: existence only >= 300,000 rows/s;
existence + image/label headers >= 20,000 rows/s on 2 cores).

Baselines in the same run, over the same rows: an ``os.path.exists`` loop (existence) and
Pillow's lazy ``Image.open(...).size`` (headers). Then the record table built from a validated
report (``report.records``), at 100,000 rows and at 1,000,000 (the validated columns ten times
over, each copy's paths under its own folder), the two sizes alternating over ``REPEATS`` builds;
target: linear in rows (time per row at 1M within 1.25x of that at 100k).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from proveseg.data.manifest import MANIFEST_COLUMNS, ROOT_MARKER, ManifestReport, validate_manifest

ROWS = 100_000
REPEATS = 5
TARGETS = ("cloudy", "dawn_dusk", "fog", "night", "rainy", "snowy")


def _make(root: Path) -> Path:
    """100k generated images (6 targets x ~16.7k sources, 20 folders each), labels shared per source."""
    (root / ROOT_MARKER).write_text("")
    rng = np.random.default_rng(0)
    buf = root / "x.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(buf, quality=80)
    jpg = buf.read_bytes()
    Image.fromarray(rng.integers(0, 19, (64, 128), dtype=np.uint8)).save(buf.with_suffix(".png"))
    png = buf.with_suffix(".png").read_bytes()
    n_sources = ROWS // len(TARGETS) + 1
    rows = []
    for s in range(n_sources):
        folder = f"{s % 20:02d}"
        for sub, data, ext in (("orig", jpg, "jpg"), ("labels", png, "png")):
            (root / sub / folder).mkdir(parents=True, exist_ok=True)
            (root / sub / folder / f"{s:06d}.{ext}").write_bytes(data)
        for t in TARGETS:
            if len(rows) == ROWS:
                break
            (root / "gen" / t / folder).mkdir(parents=True, exist_ok=True)
            (root / "gen" / t / folder / f"{s:06d}.jpg").write_bytes(jpg)
            rows.append((f"../gen/{t}/{folder}/{s:06d}.jpg", f"../orig/{folder}/{s:06d}.jpg",
                         f"../labels/{folder}/{s:06d}.png", "bench", "clear_day", t))
    (root / "m").mkdir()
    path = root / "m" / "manifest.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    return path


def _tiled(report: ManifestReport, times: int) -> ManifestReport:
    """The report with its valid rows ``times`` over, each copy's paths under its own folder (distinct rows)."""
    paths = ("generated_path", "original_path", "label_path")
    columns = {name: pa.concat_arrays([pc.binary_join_element_wise(f"/t{t}", col, "") if name in paths else col
                                       for t in range(times)])
               for name, col in report._columns.items()}
    return dataclasses.replace(report, _columns=columns)


def record_building(manifest: Path) -> dict[int, list[float]]:
    """Seconds to build ``report.records`` at 100k and 1M rows, interleaved."""
    small = validate_manifest(manifest, check_files=False)
    reports = {ROWS: small, 10 * ROWS: _tiled(small, 10)}
    times: dict[int, list[float]] = {n: [] for n in reports}
    for _ in range(REPEATS):
        for n, report in reports.items():
            start = time.perf_counter()
            table = ManifestReport.records.func(report)  # the cached property's builder, uncached
            times[n].append(time.perf_counter() - start)
            assert len(table) == n
            del table  # freed outside the timing (else the next build pays for freeing this one)
    return times


def main() -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _make(Path(tmp))
        base = manifest.parent
        rates = []
        for _ in range(4):  # the first call also pays for pyarrow's kernel set-up; it is reported alone
            start = time.perf_counter()
            report = validate_manifest(manifest, check_files=False)
            rates.append(ROWS / (time.perf_counter() - start))
            assert report.n_invalid == 0 and report.datasets["bench"].valid == ROWS
        first_rate, exists_rate = rates[0], float(np.median(rates[1:]))
        assert len(report.records) == ROWS
        start = time.perf_counter()
        report = validate_manifest(manifest, threads=2)
        header_rate = ROWS / (time.perf_counter() - start)
        assert len(report.records) == ROWS, report.as_dict()
        with manifest.open() as fh:
            rows = list(csv.DictReader(fh))
        start = time.perf_counter()
        for r in rows:
            for c in ("generated_path", "original_path", "label_path"):
                os.path.exists(os.path.normpath(os.path.join(base, r[c])))
        naive_exists = ROWS / (time.perf_counter() - start)
        start = time.perf_counter()
        for r in rows[:20_000]:
            with Image.open(base / r["generated_path"]) as a, Image.open(base / r["label_path"]) as b:
                _ = a.size == b.size
        pil_headers = 20_000 / (time.perf_counter() - start)
        building = record_building(manifest)
    print(f"manifest validation, {ROWS:,} rows, {os.cpu_count()} cores, load {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end:")
    print(f"  existence only:            {exists_rate:9,.0f} rows/s (target >= 300,000; median of 3, "
          f"first call {first_rate:,.0f}); os.path.exists loop {naive_exists:9,.0f} rows/s "
          f"-> {exists_rate / naive_exists:.1f}x")
    print(f"  existence + headers:       {header_rate:9,.0f} rows/s (target >= 20,000); "
          f"Pillow size reads alone {pil_headers:9,.0f} rows/s -> {header_rate / pil_headers:.1f}x")
    small, large = (building[n] for n in sorted(building))
    per_row = [min(large) / min(small) / 10, float(np.median(large) / np.median(small)) / 10]
    print(f"  record table from a validated report ({REPEATS} interleaved builds, min / median): "
          f"{min(small):.2f} / {np.median(small):.2f} s at {ROWS:,} rows, "
          f"{min(large):.2f} / {np.median(large):.2f} s at {10 * ROWS:,} rows")
    print(f"    time per row at 1M / at 100k: {per_row[0]:.2f} (mins), {per_row[1]:.2f} (medians) "
          f"(target <= 1.25, linear: {'met' if per_row[0] <= 1.25 else 'NOT met'})")


if __name__ == "__main__":
    main()
