"""Trainer overhead and loader throughput on CPU.

1. Iterations/s of ``proveseg.train`` against a bare hand-written PyTorch loop: same tiny model,
   batch, optimizer, schedule and batch order, data already decoded (both read the same in-memory
   cache), no evaluation. Target: trainer >= 0.95x the bare loop.
2. Images/s of the mixed training loader (ratio 0.5, 2 workers) on synthetic 512x1024 images,
   against decoding the same files in a plain loop.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from proveseg.config import RunConfig
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.decode import decode_image, decode_label
from proveseg.data.pipeline import build_training_data
from proveseg.models import build_network
from proveseg.models.losses import SegmentationLoss
from proveseg.synth.build import SynthSpec, build_benchmark
from proveseg.train.schedule import make_scheduler

ITERS, WARMUP = 40, 5


def _config(root: Path, out: Path, workers: int = 0) -> RunConfig:
    return RunConfig.model_validate({
        "output_dir": str(out), "model": {"name": "unet_tiny"},
        "data": {"real": [{"name": "s", "root": str(root / "train"), "domains": ["clear_day"]}],
                 "generated": [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv")}],
                 "real_gen_ratio": 0.5, "batch_size": 4, "num_workers": workers},
        "train": {"max_iters": ITERS, "eval_interval": 10_000, "checkpoint_interval": 10_000, "log_interval": 1,
                  "num_threads": 2}})


def _cache_decodes() -> None:
    """Serve every (image, mask) from memory after its first decode, for both contestants."""
    original = SegmentationDataset.load
    cache: dict[tuple[int, int], tuple[torch.Tensor, np.ndarray]] = {}

    def cached(self: SegmentationDataset, index: int, draw: int = 0) -> tuple[torch.Tensor, np.ndarray]:
        key = (index, draw if str(self.records.kind[index]) == "noise" else 0)
        if key not in cache:
            cache[key] = original(self, index, draw)
        return cache[key]

    SegmentationDataset.load = cached  # type: ignore[method-assign]


def bare_loop(cfg: RunConfig) -> float:
    torch.manual_seed(0)
    data = build_training_data(cfg.data)
    model = build_network(cfg.model.name, 19)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.optimizer.lr, weight_decay=0.01)
    sched = make_scheduler(opt, ITERS, cfg.train.schedule, cfg.train.optimizer.lr)
    loss_fn = SegmentationLoss(cfg.train.loss)
    times = []
    for batch in data.loader(0, ITERS):
        start = time.perf_counter()
        model.train()
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(batch["image"]), batch["mask"])
        loss.backward()
        opt.step()
        sched.step()
        times.append(time.perf_counter() - start)
    return 1.0 / float(np.mean(times[WARMUP:]))


def trainer(cfg: RunConfig) -> float:
    from proveseg.train.loop import train

    train(cfg)
    log = [json.loads(x) for x in (cfg.output_dir / "log.jsonl").read_text().splitlines()]
    rates = [x["it_s"] for x in log if "it_s" in x][WARMUP:]
    return float(len(rates) / np.sum(1.0 / np.asarray(rates)))


def loader_throughput(tmp: Path) -> tuple[float, float]:
    root = tmp / "big"
    build_benchmark(root, SynthSpec(seed=1, height=512, width=1024, n_train=8, n_test=1, generators=("faithful",)),
                    workers=2)
    cfg = _config(root, tmp / "unused", workers=2)
    data = build_training_data(cfg.data.model_copy(update={"batch_size": 8}))
    loader = data.loader(0, 12)
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["kind"])
    mixed = n / (time.perf_counter() - start)
    rows = list(zip(data.records.image.tolist(), data.records.label.tolist(), strict=True))
    start = time.perf_counter()
    for image, label in rows:
        decode_image(image)
        decode_label(label, None)
    plain = len(rows) / (time.perf_counter() - start)
    return mixed, plain


def main() -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        mixed, plain = loader_throughput(tmp)
        root = tmp / "small"
        build_benchmark(root, SynthSpec(seed=0, n_train=16, n_test=1, generators=("faithful",)), workers=2)
        _cache_decodes()
        bare = bare_loop(_config(root, tmp / "bare"))
        ours = trainer(_config(root, tmp / "trainer"))
    print(f"trainer overhead (unet_tiny, batch 4, 128x256, 2 threads, decoded data, {ITERS - WARMUP} timed iters):")
    print(f"  bare PyTorch loop   {bare:6.2f} it/s")
    print(f"  proveseg train      {ours:6.2f} it/s  -> {ours / bare:.3f}x the bare loop (target >= 0.95x)")
    print("mixed loader on 512x1024 synthetic images (ratio 0.5, batch 8, 2 workers):")
    print(f"  mixed loader        {mixed:6.1f} images/s")
    print(f"  plain decode loop   {plain:6.1f} images/s (1 process, image + label)  -> ratio {mixed / plain:.2f}")


if __name__ == "__main__":
    main()
