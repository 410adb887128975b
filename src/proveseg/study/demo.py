"""``proveseg demo``: the synthetic benchmark, a stage-1 study on CPU, its leaderboard and report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from proveseg.synth.build import SynthSpec
from proveseg.synth.generators import GENERATORS

__all__ = ["DEMO_STRATEGIES", "demo_spec", "demo_study"]

DEMO_STRATEGIES = ["baseline", *(f"gen_{g}" for g in GENERATORS), "gen_random_noise"]


def demo_spec(quick: bool) -> SynthSpec:
    """The benchmark the demo trains on (the default one; a smaller one for ``--quick``)."""
    return SynthSpec(height=64, width=128, n_train=24, n_test=6) if quick else SynthSpec()


def demo_study(data: Path, results: Path, quick: bool) -> dict[str, Any]:
    """The demo's study YAML as a mapping: stage 1, every generator, the noise control, one tiny model."""
    crop = [64, 128]
    return {
        "name": "demo-quick" if quick else "demo",
        "results_root": str(results),
        "datasets": {"synthetic": {"train": {"root": str(data / "train")}, "test": {"root": str(data / "test")}}},
        "generators": {g: {"manifest": str(data / "generated" / g / "manifest.csv")} for g in GENERATORS},
        "strategies": DEMO_STRATEGIES,
        "noise_reference": "faithful",
        "models": ["unet_micro"],
        "ratios": [0.5],
        "seeds": [0],
        "batch_size": 8,
        "transforms": {"crop": crop, "scale": None if quick else [0.75, 1.25], "hflip": True},
        "train": {"max_iters": 12 if quick else 400, "eval_interval": 10_000, "checkpoint_interval": 100,
                  "log_interval": 4 if quick else 20, "num_threads": 2,
                  "optimizer": {"name": "adamw", "lr": 0.004, "weight_decay": 0.0001},
                  "schedule": {"warmup_iters": 2 if quick else 20, "policy": "poly", "power": 0.9}},
        "evaluation": {"batch_size": 8, "n_boot": 200 if quick else 1000},
        "stages": {"stage1": {}},
    }


def write_demo_study(data: Path, results: Path, quick: bool) -> Path:
    path = results / "study.yaml"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(demo_study(data, results, quick), sort_keys=False), encoding="utf-8")
    return path
