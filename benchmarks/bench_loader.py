"""Training-loader throughput against a plain single-process Pillow decode loop of the same files.

Cityscapes-shaped data (JPEG images, single-channel PNG labels) at 512x1024 and 1024x2048, no crop,
random horizontal flip, batch 8: what the training loader delivers with 0 and with 2 workers, and,
in the same run, a loop that decodes each image and its label with Pillow in one process and does
nothing else. Contestants alternate within every repetition (so load on the machine hits all of
them alike); min and median over the repetitions are printed. The loaders are built once and
iterated once before timing (persistent workers, as in a training run). Each timed pass reads
every file PASSES times (96 images at 1024x2048): a pass of only three batches timed two
workers splitting three batches 2:1 and the pipeline filling and draining, not the steady
stream a training run sees. Targets (issue 20): 0 workers >= 0.9x the plain loop, 2 workers >= 1.6x.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from proveseg.config import DataConfig
from proveseg.data.pipeline import build_training_data

SIZES = ((512, 1024, 48), (1024, 2048, 24))  # (height, width, images)
BATCH, REPEATS, PASSES = 8, 5, 4


def _write(root: Path, h: int, w: int, n: int) -> Path:
    """``n`` photo-like JPEGs (smooth content plus sensor noise, quality 90) and blocky 19-class PNG labels."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        low = Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8))
        smooth = np.asarray(low.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        noisy = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"{i:03d}.jpg", quality=90)
        classes = rng.integers(0, 19, (h // 32, w // 32), dtype=np.uint8)
        classes[: h // 128] = 255
        Image.fromarray(classes).resize((w, h), Image.Resampling.NEAREST).save(root / f"{i:03d}.png")
        rows.append((f"{i:03d}.jpg", f"{i:03d}.png", "clear_day"))
    with (root / "list.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("image", "label", "domain"), *rows])
    return root / "list.csv"


def _timed(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def _measure(listing: Path, n: int) -> dict[str, list[float]]:
    cfg = DataConfig.model_validate({"real": [{"name": "s", "reader": "csv", "root": str(listing)}],
                                     "batch_size": BATCH, "num_workers": 0, "transforms": {"hflip": True}})
    data = build_training_data(cfg)
    rows = list(zip(data.records.image.tolist(), data.records.label.tolist(), strict=True)) * PASSES

    def plain() -> int:
        for image, label in rows:
            with Image.open(image) as im:
                np.asarray(im.convert("RGB"))
            with Image.open(label) as lab:
                np.asarray(lab)
        return len(rows)

    loaders = {workers: data.loader(0, PASSES * n // BATCH, num_workers=workers) for workers in (0, 2)}

    def run(workers: int) -> Callable[[], int]:
        return lambda: sum(len(b["index"]) for b in loaders[workers])

    contestants = {"plain Pillow loop (1 process)": plain, "loader, 0 workers": run(0), "loader, 2 workers": run(2)}
    for fn in contestants.values():  # warm-up: file cache, worker start-up
        fn()
    rates: dict[str, list[float]] = {name: [] for name in contestants}
    for _ in range(REPEATS):
        for name, fn in contestants.items():
            rates[name].append(_timed(fn))
    return rates


def main() -> None:
    torch.set_num_threads(1)  # per-core figures: the main process uses one core, each worker another
    print(f"training loader vs a plain Pillow decode loop (image + label), batch {BATCH}, hflip, no crop; "
          f"{REPEATS} interleaved repetitions, images/s min / median; {os.cpu_count()} cores; "
          f"load {os.getloadavg()[0]:.1f} at start")
    for h, w, n in SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            rates = _measure(_write(Path(tmp), h, w, n), n)
        base = float(np.median(rates["plain Pillow loop (1 process)"]))
        print(f"  {h}x{w}, {n} files, {PASSES * n} images a pass (load {os.getloadavg()[0]:.1f}):")
        for name, values in rates.items():
            med = float(np.median(values))
            line = f"    {name:32s} {min(values):7.1f} / {med:7.1f} images/s"
            if "loader" in name:
                target = 0.9 if "0 workers" in name else 1.6
                verdict = "met" if med / base >= target else "NOT met"
                line += f"  -> {med / base:.2f}x the plain loop (target >= {target}x: {verdict})"
            print(line)
        print(f"    per core: {np.median(rates['loader, 0 workers']):.1f} images/s (0 workers), "
              f"{np.median(rates['loader, 2 workers']) / 2:.1f} images/s per worker (2 workers)")


if __name__ == "__main__":
    main()
