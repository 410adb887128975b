"""A 2-run study through submitit on a real Slurm cluster (CI starts one with scripts/slurm-local.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proveseg.rundir import RunDir

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


def test_two_run_study_on_slurm(tiny_benchmark: Path, tmp_path: Path) -> None:
    if not _cluster_up():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no Slurm cluster answers: .ci/run must start scripts/slurm-local.sh")
        pytest.skip("no Slurm cluster here (sbatch/sinfo missing or no idle node); start one with "
                    "scripts/slurm-local.sh (root)")
    study = {
        "name": "slurm-test", "results_root": str(tmp_path / "results"),
        "datasets": {"synthetic": {"train": {"root": str(tiny_benchmark / "train")},
                                   "test": {"root": str(tiny_benchmark / "test"), "domains": ["fog"]}}},
        "generators": {"faithful": {"manifest": str(tiny_benchmark / "generated/faithful/manifest.csv")}},
        "strategies": ["baseline", "gen_faithful"], "models": ["unet_micro"], "batch_size": 4,
        "train": {"max_iters": 3, "eval_interval": 100, "log_interval": 1, "num_threads": 1},
        "evaluation": {"n_boot": 20, "batch_size": 2},
        "slurm": {"cpus_per_task": 1, "mem_gb": 1, "timeout_min": 15},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    done = subprocess.run([sys.executable, "-m", "proveseg.cli", "run", str(path), "--executor", "slurm"], env=ENV,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = sorted((tmp_path / "results/stage1").glob("*/synthetic/*"))
    assert [r.parts[-3] for r in runs] == ["baseline", "gen_faithful"]
    for run in runs:
        assert RunDir(run).status()[0] == "done"
        assert (run / "metrics.json").exists() and (run / "composition.json").exists()
