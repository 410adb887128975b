"""A run config over the session's synthetic benchmark for the trainer integrations, and a 1-conv model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from proveseg.config import RunConfig

MODEL = "tinyconv"


def run_dir(results: Path, model: str = MODEL) -> Path:
    """Where the leaderboard looks for this run: <root>/<stage>/<strategy>/<dataset>/<model>_ratio0p50_s0."""
    return results / "stage1" / "gen_faithful" / "synthetic" / f"{model}_ratio0p50_s0"


def make_run_config(root: Path, results: Path, max_iters: int = 6, batch_size: int = 2, **train: Any) -> RunConfig:
    """gen_faithful at ratio 0.5, a per-device batch of 2: every batch must be 1 real + 1 generated."""
    data = {"real": [{"name": "synthetic", "root": str(root / "train"), "domains": ["clear_day"]}],
            "generated": [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv")}],
            "real_gen_ratio": 0.5, "batch_size": batch_size, "seed": 3, "transforms": {"crop": [32, 32]}}
    test = [{"name": "synthetic", "root": str(root / "test"), "domains": ["fog", "night"]}]
    return RunConfig.model_validate({
        "name": "integration", "strategy": "gen_faithful", "output_dir": str(run_dir(results)), "data": data,
        "model": {"name": MODEL}, "train": {"max_iters": max_iters, **train},
        "evaluation": {"test": test, "n_boot": 20}})


class TinyConv(nn.Module):
    """One 3x3 convolution to 19 classes: enough to train, small enough for 2 busy cores."""

    def __init__(self, classes: int = 19) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

