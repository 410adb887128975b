"""A tiny run config over the session's synthetic benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proveseg.config import RunConfig


def make_config(root: Path, out: Path, **train: Any) -> RunConfig:
    data = {"real": [{"name": "synthetic", "root": str(root / "train"), "domains": ["clear_day"]}],
            "generated": [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv")}],
            "real_gen_ratio": 0.5, "batch_size": 4, "seed": 3}
    tc = {"max_iters": 6, "eval_interval": 3, "checkpoint_interval": 2, "log_interval": 1, "num_threads": 1,
          "optimizer": {"lr": 0.01}, **train}
    test = [{"name": "synthetic", "root": str(root / "test"), "domains": ["fog"]}]
    val = [{"name": "synthetic", "root": str(root / "test"), "domains": ["night"]}]  # never the test images
    return RunConfig.model_validate({
        "name": "t", "strategy": "gen_faithful", "output_dir": str(out), "data": data,
        "model": {"name": "unet_micro"}, "train": tc,
        "evaluation": {"val": val, "test": test, "n_boot": 50, "batch_size": 2}})


@pytest.fixture()
def config_factory(tiny_benchmark: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    def factory(name: str = "run", **train: Any) -> RunConfig:
        return make_config(tiny_benchmark, tmp_path / name, **train)
    return factory
