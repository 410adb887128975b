"""Case 1: SIGKILL at a random step (twice in one pass; at a pass boundary), then resume: the whole
consumed sequence of batch ids equals the uninterrupted run's, in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from proveseg.rundir import RunDir
from proveseg.train.loop import Preempted, train
from tests.train.conftest import make_config

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
ITERS = 14


def _sequence(run_dir: Path) -> str:
    return json.loads((run_dir / "composition.json").read_text())["consumed"]["sequence_sha256"]


@pytest.fixture(scope="module")
def reference(tiny_benchmark: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = make_config(tiny_benchmark, tmp_path_factory.mktemp("ref") / "run", max_iters=ITERS, eval_interval=100,
                      checkpoint_interval=3)
    train(cfg)
    return _sequence(cfg.output_dir)


def _kill_at(path: Path, out: Path, at: int, resume: bool) -> None:
    args = [sys.executable, "-m", "proveseg.cli", "train", str(path)] + (["--resume"] if resume else [])
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "log.jsonl"
    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if lines and json.loads(lines[-1]).get("iteration", 0) >= at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()


@pytest.mark.parametrize("kills", [[5], [4, 9]], ids=["once", "twice"])
def test_sigkill_at_a_random_step_then_resume(reference: str, tiny_benchmark: Path, tmp_path: Path,
                                              kills: list[int]) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=ITERS, eval_interval=100, checkpoint_interval=3)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    for n, at in enumerate(kills):
        at += int(np.random.default_rng(at).integers(0, 2))  # a little randomness, fixed by seed
        _kill_at(path, cfg.output_dir, at, resume=n > 0)
        assert RunDir(cfg.output_dir).status()[0] == "running"  # killed: nobody wrote an ending
    done = subprocess.run([sys.executable, "-m", "proveseg.cli", "train", str(path), "--resume"], env=ENV,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _sequence(cfg.output_dir) == reference


def test_stop_exactly_at_a_pass_boundary(reference: str, tiny_benchmark: Path, tmp_path: Path) -> None:
    # 24 generated entries at 2 per batch: the generated pass ends after batch 12.
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=ITERS, eval_interval=100, checkpoint_interval=3)
    with pytest.raises(Preempted):
        train(cfg, stop_after=12)
    train(cfg, resume=True)
    assert _sequence(cfg.output_dir) == reference
