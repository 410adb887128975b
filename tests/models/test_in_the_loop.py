"""The new models through the real trainer: two iterations, a proven composition, test metrics, the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proveseg.checkpoint import load_checkpoint
from proveseg.rundir import RunDir
from proveseg.train.loop import train
from tests.train.conftest import make_config


@pytest.mark.parametrize("name", ["mask2former_r50", "segnext_mscan-t"])
def test_two_iterations_through_the_trainer(tiny_benchmark: Path, tmp_path: Path, name: str) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=2, eval_interval=2, checkpoint_interval=2)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": name}),
                                 "data": cfg.data.model_copy(update={"batch_size": 2})})
    result = train(cfg)
    run = RunDir(cfg.output_dir)
    assert result.iterations == 2 and run.status() == ("done", "2 iterations")
    comp = json.loads((cfg.output_dir / "composition.json").read_text())
    assert comp["matches_request"] and comp["consumed"]["per_kind"]["real"] == 2
    metrics = json.loads((cfg.output_dir / "metrics.json").read_text())
    assert metrics["model"] == name and metrics["n_images"] == 2 and 0.0 <= metrics["mIoU"] <= 1.0
    assert load_checkpoint(run.best)["model"]["name"] == name
