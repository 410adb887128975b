"""The study's five models on CPU: parameter counts against the papers, seconds per training iteration.

1. Parameters of each study model at 19 classes (Cityscapes label space), and of the SegNeXt
   sizes at 150 classes (ADE20K, the setting of the SegNeXt paper's table) against that table.
2. CPU seconds per training iteration (forward, the adapter's loss, backward, AdamW step) at batch
   2, 512x512: the median of ``--steps`` timed iterations after ``--warmup`` untimed ones. The
   machine's load average is printed with it: on a shared machine the figures are upper bounds.

Usage: ``python benchmarks/bench_models.py [--steps 3] [--warmup 1] [--size 512] [--models a,b]``.
The defaults (``make bench``) time one iteration without warm-up at 256x256, a quick check (one
warm-up plus one iteration took 3 min 11 s wall on the 2-core development machine at load average
5); the closing figures of issue 17 were taken with ``--size 512 --steps 3 --warmup 1``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from proveseg.models import build_model
from proveseg.models.segnext import segnext

STUDY = ["pspnet_r50", "deeplabv3plus_r50", "segformer_mit-b3", "segnext_mscan-b", "mask2former_swin-b"]
# SegNeXt paper (Guo et al. 2022), ADE20K table: parameters in millions
SEGNEXT_PAPER_M = {"t": 4.3, "s": 13.9, "b": 27.6}


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _seconds_per_iteration(name: str, size: int, warmup: int, steps: int) -> tuple[float, float]:
    """(parameters in millions at 19 classes, median seconds of one training iteration at batch 2)."""
    torch.manual_seed(0)
    model = build_model(name, 19)
    model.network.train()
    optimizer = torch.optim.AdamW(model.network.parameters(), lr=1e-4)
    images = torch.randn(2, 3, size, size)
    masks = torch.randint(0, 19, (2, size, size))
    masks[:, : size // 8] = 255  # some unlabeled pixels, as in real label maps
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = model.loss(model.forward(model.network, images), masks)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return _millions(model.network), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--models", default=",".join(STUDY))
    args = parser.parse_args()

    print("SegNeXt parameters at 150 classes (ADE20K) against the paper's table")
    for size, paper in SEGNEXT_PAPER_M.items():
        ours = _millions(segnext(size, 150))
        print(f"  segnext_mscan-{size}: {ours:6.2f}M  paper {paper:5.1f}M  ({(ours - paper) / paper:+.1%})")

    load = os.getloadavg()
    print(f"\nTraining iteration on CPU: batch 2, {args.size}x{args.size}, median of {args.steps} after "
          f"{args.warmup} warm-up; torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name in args.models.split(","):
        params, seconds = _seconds_per_iteration(name, args.size, args.warmup, args.steps)
        print(f"  {name:20s} {params:7.2f}M params (19 classes)  {seconds:7.2f} s/iteration", flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
