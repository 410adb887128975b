"""Synthetic benchmark generation speed: images per second per core.

Baseline in the same run: writing random-noise JPEGs of the same size, i.e. the encode + write
cost that any generator pays, so the ratio shows what rendering adds. The contestants (1 worker,
2 workers, the baseline) alternate within each of ``REPEATS`` rounds, so load on the machine hits
all alike; min and median are printed. Target: 2 workers >= 1.6x the images/s of 1 worker.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from proveseg.synth.build import SynthSpec, build_benchmark
from proveseg.synth.render import DOMAINS

REPEATS = 3


def _build(spec: SynthSpec, workers: int, n_images: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_benchmark(tmp, spec, workers=workers)
        return n_images / (time.perf_counter() - start)


def _encode_only(spec: SynthSpec) -> float:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i in range(200):
            Image.fromarray(rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8)).save(
                Path(tmp) / f"{i}.jpg", quality=92)
        return 200 / (time.perf_counter() - start)


def main() -> None:
    spec = SynthSpec(seed=0, n_train=12, n_test=4)
    n_images = (spec.n_train + spec.n_test) * len(DOMAINS) + spec.n_train * (len(DOMAINS) - 1) * len(spec.generators)
    load = os.getloadavg()[0]
    if (os.cpu_count() or 1) < 2:
        print("synthetic benchmark: not measured: the 2-worker figure needs 2 cores; this machine has 1")
        return
    rates: dict[str, list[float]] = {"1 worker": [], "2 workers": [], "baseline": []}
    for _ in range(REPEATS):
        rates["1 worker"].append(_build(spec, 1, n_images))
        rates["2 workers"].append(_build(spec, 2, n_images))
        rates["baseline"].append(_encode_only(spec))
    med = {name: float(np.median(v)) for name, v in rates.items()}
    print(f"synthetic benchmark {spec.height}x{spec.width}: {n_images} images "
          f"({spec.n_train} train + {spec.n_test} test scenes, {len(spec.generators)} generators); "
          f"{REPEATS} interleaved rounds, images/s min / median; {os.cpu_count()} cores, load {load:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end")
    for name in ("1 worker", "2 workers"):
        print(f"  {name:9s}: {min(rates[name]):7.1f} / {med[name]:7.1f} images/s")
    scaling = med["2 workers"] / med["1 worker"]
    verdict = "met" if scaling >= 1.6 else "NOT met"
    print(f"  2 workers / 1 worker (medians): {scaling:.2f}x (target >= 1.6x: {verdict})")
    print(f"  baseline, JPEG encode+write of noise only: {min(rates['baseline']):7.1f} / {med['baseline']:7.1f} "
          f"images/s (1 core); rendering costs {med['baseline'] / med['1 worker']:.1f}x that")


if __name__ == "__main__":
    main()
