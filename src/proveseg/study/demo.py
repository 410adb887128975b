"""``proveseg demo``: the synthetic benchmark, a stage-1 study on CPU, its leaderboard and report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from proveseg.strategies import BASELINE, NOISE_CONTROL, generator_strategy
from proveseg.synth.build import SynthSpec
from proveseg.synth.generators import GENERATORS

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["DEMO_STRATEGIES", "demo_spec", "demo_study", "run_demo", "write_demo_study"]

DEMO_STRATEGIES = [BASELINE, *(generator_strategy(g) for g in GENERATORS), NOISE_CONTROL]


def demo_spec(quick: bool) -> SynthSpec:
    """The benchmark the demo trains on (the default one; a smaller one for ``--quick``)."""
    return SynthSpec(height=64, width=128, n_train=24, n_test=6) if quick else SynthSpec()


def demo_study(data: Path, results: Path, quick: bool) -> dict[str, Any]:
    """The demo's study YAML as a mapping: stage 1, every generator, the noise control, one tiny model."""
    crop = [64, 128]
    return {
        "name": "demo-quick" if quick else "demo",
        "results_root": str(results),
        # half of the held-out scenes (every domain) choose best.pt, the other half is the test set: never the same
        "datasets": {"synthetic": {"train": {"root": str(data / "train")},
                                   "val": {"root": str(data / "test"), "take": [0.0, 0.5], "name": "synthetic-val"},
                                   "test": {"root": str(data / "test"), "take": [0.5, 1.0]}}},
        "generators": {g: {"manifest": str(data / "generated" / g / "manifest.csv")} for g in GENERATORS},
        "strategies": DEMO_STRATEGIES,
        "noise_reference": "faithful",
        "models": ["unet_micro"],
        "ratios": [0.5],
        "seeds": [0, 1] if quick else [0, 1, 2],  # seeds make the intervals cover training-seed spread
        "batch_size": 8,
        "transforms": {"crop": crop, "scale": None if quick else [0.75, 1.25], "hflip": True},
        "train": {"max_iters": 12 if quick else 300, "eval_interval": 6 if quick else 100, "checkpoint_interval": 100,
                  "log_interval": 4 if quick else 20, "num_threads": 1,  # two runs at a time on two cores
                  "optimizer": {"name": "adamw", "lr": 0.004, "weight_decay": 0.0001},
                  "schedule": {"warmup_iters": 2 if quick else 20, "policy": "poly", "power": 0.9}},
        "evaluation": {"batch_size": 8, "n_boot": 200 if quick else 1000},
        "stages": {"stage1": {}},
    }


def write_demo_study(data: Path, results: Path, quick: bool) -> Path:
    """Write the demo's study to ``results/study.yaml`` and return its path."""
    path = results / "study.yaml"
    results.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(demo_study(data, results, quick), sort_keys=False), encoding="utf-8")
    return path


def run_demo(quick: bool, data: Path, results: Path, workers: int, console: Console) -> int:
    """The demo end to end, with progress on ``console``: build the benchmark in ``data`` (kept if it exists),
    train what is not done of the stage-1 study in ``results``, print its leaderboard, write ``report.html``.

    Returns the exit code: 0, or 1 when a run failed.
    """
    from proveseg.render import print_leaderboard, quality_table, synth_table
    from proveseg.study.executors import run_local
    from proveseg.study.leaderboard import build_leaderboard
    from proveseg.study.matrix import expand
    from proveseg.study.quality import generator_quality
    from proveseg.study.report import write_report
    from proveseg.study.spec import load_study
    from proveseg.synth.build import build_benchmark

    start = time.perf_counter()
    console.print(f"[bold]proveseg demo[/bold]{' (quick)' if quick else ''}: 1/4 synthetic benchmark in {data}")
    if quick:
        console.print("[yellow]quick demo[/yellow]: it checks the whole pipeline at toy scale; its runs are far too "
                      "short to rank strategies (run `proveseg demo` for that)", highlight=False)
    info = build_benchmark(data, demo_spec(quick), workers=workers, progress=console.is_terminal)
    console.print(synth_table(info, "images per split / domain / generator"))
    study_path = write_demo_study(data, results, quick)
    runs = expand(load_study(study_path))
    console.print(f"2/4 stage-1 study {study_path}: {len(runs)} runs (skips runs already done)", highlight=False)
    codes = run_local(runs, max_parallel=2)
    failed = [k for k, v in codes.items() if v not in (0, -1)]
    console.print("3/4 leaderboard (only runs that are the study's, prove their data mix and re-derive are ranked)")
    doc = build_leaderboard(results, "stage1", n_boot=200 if quick else 1000)
    print_leaderboard(console, doc, f"{results} (stage1)")
    quality = generator_quality(results, "stage1", limit=12 if quick else 60, n_boot=200 if quick else 1000)
    if quality["generators"]:
        console.print(quality_table(quality, "does generator quality predict its gain?"))
    report = write_report(results, results / "report.html", "stage1", quality=quality)
    console.print(f"4/4 report: {report}", highlight=False)
    console.print(f"demo finished in {time.perf_counter() - start:.0f} s", highlight=False)
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed[/red]: " + ", ".join(failed))
        return 1
    return 0
