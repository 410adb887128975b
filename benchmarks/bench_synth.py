"""Synthetic benchmark generation speed: images per second per core.

Baseline in the same run: writing the same number of random-noise JPEGs of the same size, i.e.
the encode + write cost that any generator pays, so the ratio shows what rendering adds.
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


def main() -> None:
    spec = SynthSpec(seed=0, n_train=12, n_test=4)
    n_images = (spec.n_train + spec.n_test) * len(DOMAINS) + spec.n_train * (len(DOMAINS) - 1) * len(spec.generators)
    results = {}
    for workers in sorted({1, min(2, os.cpu_count() or 1)}):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            build_benchmark(tmp, spec, workers=workers)
            results[workers] = n_images / (time.perf_counter() - start)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i in range(200):
            Image.fromarray(rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8)).save(
                Path(tmp) / f"{i}.jpg", quality=92)
        encode_only = 200 / (time.perf_counter() - start)
    print(f"synthetic benchmark {spec.height}x{spec.width}: {n_images} images "
          f"({spec.n_train} train + {spec.n_test} test scenes, {len(spec.generators)} generators)")
    for workers, rate in results.items():
        print(f"  {workers} worker(s): {rate:7.1f} images/s  = {rate / workers:6.1f} images/s per core")
    print(f"  baseline, JPEG encode+write of noise only: {encode_only:7.1f} images/s (1 core); "
          f"rendering costs {encode_only / results[1]:.1f}x that")


if __name__ == "__main__":
    main()
