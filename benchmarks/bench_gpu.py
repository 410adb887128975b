"""The GPU path: training it/s fp32 vs bf16 autocast + channels_last + torch.compile, nvJPEG decoding,
and the loader workers a GPU needs. Measured only where CUDA exists; elsewhere it prints that
nothing was measured (never a figure it did not take).

1. ``deeplabv3plus_r50`` and ``segformer_mit-b3`` at 512x1024, batch 8, 19 classes, AdamW: training
   iterations/s in fp32 (the same-run baseline) and with ``train.amp: bf16``,
   ``train.channels_last: true`` and ``train.compile: true`` (compilation is in the warm-up, not
   timed). The two alternate over ``ROUNDS`` rounds; min / median printed.
2. JPEG decoding of 1024x2048 images: nvJPEG (``data.decode_device: cuda``, one batched call of 8)
   against libjpeg-turbo on one CPU core (what each loader worker uses), images/s.
3. Workers needed: the faster training rate x batch, over one CPU loader worker's images/s on
   512x1024 JPEG + PNG (the training loader with 0 workers, no crop, measured in this run).

Targets (none of them ever measured on the development machines, which have no GPU): the fast
path >= 1.5x fp32's it/s (bf16 tensor cores on any Ampere or later GPU), nvJPEG >= 4x one CPU
core, and no more loader workers needed than the machine has cores.

``--device cpu --models unet_micro --size 64 128`` runs the same code on a CPU (a smoke test of
this script; its figures say nothing about a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_loader import _write  # the loader benchmark's files, same generator

from proveseg.config import DataConfig, LossConfig
from proveseg.data.decode import decode_image
from proveseg.data.pipeline import build_training_data
from proveseg.models import build_network
from proveseg.models.losses import SegmentationLoss

BATCH, CLASSES, ROUNDS = 8, 19, 2


def _step_fn(name: str, device: torch.device, fast: bool, size: tuple[int, int]) -> Callable[[], None]:
    """One training step of ``name`` on fixed random data; ``fast``: bf16 autocast, channels_last, compile."""
    torch.manual_seed(0)
    net = build_network(name, CLASSES).to(device).train()
    layout = torch.channels_last if fast else torch.contiguous_format
    net = net.to(memory_format=layout)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = SegmentationLoss(LossConfig())
    images = torch.randn(BATCH, 3, *size, device=device).contiguous(memory_format=layout)
    masks = torch.randint(0, CLASSES, (BATCH, *size), device=device)
    model = torch.compile(net) if fast else net

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            loss, _ = loss_fn(model(images), masks)
        loss.backward()
        opt.step()
    return step


def _rate(step: Callable[[], None], device: torch.device, steps: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def training_rates(models: list[str], device: torch.device, size: tuple[int, int], steps: int,
                   warmup: int) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for name in models:
        steps_by = {"fp32": _step_fn(name, device, False, size), "bf16+channels_last+compile": _step_fn(
            name, device, True, size)}
        for step in steps_by.values():
            for _ in range(warmup):  # includes torch.compile's compilation
                step()
        out[name] = {k: [] for k in steps_by}
        for _ in range(ROUNDS):
            for k, step in steps_by.items():
                out[name][k].append(_rate(step, device, steps))
        del steps_by
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def decode_rates(folder: Path, device: torch.device) -> tuple[float, float]:
    """(nvJPEG images/s in batches of 8, libjpeg-turbo images/s on one core) over the JPEGs in ``folder``."""
    from proveseg.data.gpudecode import _decode_jpegs

    paths = sorted(str(p) for p in folder.glob("*.jpg"))[:BATCH]
    data = [torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8) for p in paths]
    gpu, cpu = [], []
    _decode_jpegs(data, device)
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        _decode_jpegs(data, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        gpu.append(len(data) / (time.perf_counter() - start))
        start = time.perf_counter()
        for p in paths:
            decode_image(p)
        cpu.append(len(paths) / (time.perf_counter() - start))
    return float(np.median(gpu)), float(np.median(cpu))


def loader_worker_rate(listing: Path, n: int) -> float:
    """Images/s of the training loader in one process (one worker's worth), no crop."""
    data = build_training_data(DataConfig.model_validate({
        "real": [{"name": "s", "reader": "csv", "root": str(listing)}], "batch_size": BATCH,
        "transforms": {"hflip": True}}))
    loader = data.loader(0, n // BATCH, num_workers=0, pin_memory=False)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        count = sum(len(b["index"]) for b in loader)
        rates.append(count / (time.perf_counter() - start))
    return float(np.median(rates))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["deeplabv3plus_r50", "segformer_mit-b3"])
    parser.add_argument("--size", nargs=2, type=int, default=[512, 1024])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("GPU path: not measured: no GPU (torch.cuda.is_available() is False on this machine). Nothing here "
              "was measured: fp32 vs bf16 + channels_last + torch.compile it/s for deeplabv3plus_r50 and "
              "segformer_mit-b3 at 512x1024 batch 8, nvJPEG decoding, loader workers per GPU. "
              "Run `python benchmarks/bench_gpu.py` on a CUDA machine.")
        return
    size = (args.size[0], args.size[1])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test, not a GPU figure)"
    print(f"GPU path on {name}, batch {BATCH}, {size[0]}x{size[1]}, {CLASSES} classes, {ROUNDS} interleaved rounds "
          f"of {args.steps} steps (min / median it/s); load {os.getloadavg()[0]:.1f}:")
    rates = training_rates(args.models, device, size, args.steps, args.warmup)
    best = 0.0
    for model, by in rates.items():
        base = float(np.median(by["fp32"]))
        for k, values in by.items():
            med = float(np.median(values))
            best = max(best, med)
            tail = "  (baseline)" if k == "fp32" else (
                f"  -> {med / base:.2f}x fp32 (target >= 1.5x: {'met' if med / base >= 1.5 else 'NOT met'})")
            print(f"  {model:20s} {k:28s} {min(values):7.2f} / {med:7.2f} it/s{tail}")
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp, "big"), Path(tmp, "small")
        big.mkdir()
        small.mkdir()
        _write(big, 1024, 2048, BATCH)
        gpu, cpu = decode_rates(big, device)
        print(f"  JPEG decode 1024x2048: nvJPEG {gpu:.1f} images/s (batches of {BATCH}) vs libjpeg-turbo "
              f"{cpu:.1f} images/s on one core -> {gpu / cpu:.1f}x "
              f"(target >= 4x: {'met' if gpu / cpu >= 4 else 'NOT met'})")
        worker = loader_worker_rate(_write(small, 512, 1024, 4 * BATCH), 4 * BATCH)
    need = best * BATCH / worker
    print(f"  loader workers to keep it busy: {best:.2f} it/s x {BATCH} = {best * BATCH:.0f} images/s over "
          f"{worker:.1f} images/s per worker (512x1024 JPEG + PNG, no crop) -> {need:.1f} workers "
          f"({os.cpu_count()} cores here; target: no more than the cores: "
          f"{'met' if need <= (os.cpu_count() or 1) else 'NOT met'})")


if __name__ == "__main__":
    main()
