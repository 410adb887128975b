"""Trainer overhead on CPU: iterations/s of ``proveseg.train`` against a bare hand-written PyTorch loop.

Same tiny model, batch, optimizer, schedule and batch order, data already decoded (both read the
same in-memory cache), no evaluation. Both are timed the same way: wall time from the end of one
iteration to the end of the next, fetching the batch included (the trainer's ``it_s`` in its log
is exactly that; the bare loop used to time only its step, leaving its data fetching out of the
comparison). The two alternate, ``REPEATS`` runs each, so load on the machine hits both alike;
min and median are printed. Target: trainer >= 0.95x the bare loop. Loader throughput is
bench_loader.py.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from proveseg.config import RunConfig
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.pipeline import build_training_data
from proveseg.data.transforms import to_model_input
from proveseg.models import build_network
from proveseg.models.losses import SegmentationLoss
from proveseg.synth.build import SynthSpec, build_benchmark
from proveseg.train.schedule import make_scheduler

ITERS, WARMUP, REPEATS = 40, 5, 3


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
    last = time.perf_counter()
    for batch in data.loader(0, ITERS):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model(to_model_input(batch["image"])), batch["mask"].long())
        loss.backward()
        opt.step()
        sched.step()
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return 1.0 / float(np.mean(times[WARMUP:]))


def trainer(cfg: RunConfig) -> float:
    from proveseg.train.loop import train

    train(cfg)
    log = [json.loads(x) for x in (cfg.output_dir / "log.jsonl").read_text().splitlines()]
    rates = [x["it_s"] for x in log if "it_s" in x][WARMUP:]
    return float(len(rates) / np.sum(1.0 / np.asarray(rates)))


def main() -> None:
    torch.set_num_threads(2)
    rates: dict[str, list[float]] = {"bare PyTorch loop": [], "proveseg train": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "small"
        build_benchmark(root, SynthSpec(seed=0, n_train=16, n_test=1, generators=("faithful",)), workers=2)
        _cache_decodes()
        bare_loop(_config(root, tmp / "warm"))  # fills the decode cache, so neither side decodes
        for r in range(REPEATS):
            rates["bare PyTorch loop"].append(bare_loop(_config(root, tmp / f"bare{r}")))
            rates["proveseg train"].append(trainer(_config(root, tmp / f"trainer{r}")))
    print(f"trainer overhead (unet_tiny, batch 4, 128x256, 2 threads, decoded data, {ITERS - WARMUP} timed iters, "
          f"{REPEATS} interleaved runs each, min / median; load {os.getloadavg()[0]:.1f}):")
    bare, ours = (float(np.median(v)) for v in rates.values())
    for name, values in rates.items():
        print(f"  {name:20s} {min(values):6.2f} / {float(np.median(values)):6.2f} it/s")
    verdict = "met" if ours / bare >= 0.95 else "NOT met"
    print(f"  proveseg train / bare loop (medians): {ours / bare:.3f}x (target >= 0.95x: {verdict}); "
          f"per-run ratios {', '.join(f'{o / b:.2f}' for b, o in zip(*rates.values(), strict=True))}")


if __name__ == "__main__":
    main()
