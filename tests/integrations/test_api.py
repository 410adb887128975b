"""The public API in a plain PyTorch loop: exact 1+1 batches, resume by sampler state, a proof the audit verifies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from proveseg.api import MixedData, ProofRun, sample_ids
from proveseg.cli import main
from proveseg.config import RunConfig
from proveseg.study.audit import audit_target
from proveseg.study.leaderboard import build_leaderboard
from tests.integrations.conftest import TinyConv, make_run_config


def _train(cfg: RunConfig, stop_at: int | None = None, state: dict | None = None) -> tuple[ProofRun, dict]:
    """A plain loop over the API; ``stop_at`` stops it there and returns the checkpoint it would save."""
    mixed = MixedData.from_config(cfg)
    sampler = mixed.batch_sampler(num_batches=cfg.train.max_iters)
    loader = StatefulDataLoader(mixed.dataset, batch_sampler=sampler, num_workers=0)
    run = ProofRun(mixed, trainer="pytorch")
    model = TinyConv()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if state is not None:
        model.load_state_dict(state["model"])
        run.load_state_dict(state["proof"])
        loader.load_state_dict(state["loader"])
    run.start(resume=state is not None)
    for batch in loader:
        run.record(sample_ids(batch))
        loss = F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log({"iteration": run.iterations, "loss": loss.item(), "lr": 0.01})
        if run.iterations == stop_at:
            checkpoint = {"model": model.state_dict(), "proof": run.state_dict(), "loader": loader.state_dict()}
            run.close()
            return run, checkpoint
    run.finish()
    scorer = run.test_scorer()
    model.eval()
    with torch.no_grad():
        for test in DataLoader(scorer.dataset, batch_size=2):
            scorer.update(model(test["image"]).argmax(1), test["mask"], test["index"])
    run.write_metrics(scorer)
    return run, {}


def test_plain_loop_batches_are_exact_resumable_and_verified(tiny_benchmark: Path, tmp_path: Path) -> None:
    whole, _ = _train(make_run_config(tiny_benchmark, tmp_path / "whole", max_iters=6))
    doc = json.loads((whole.run.root / "composition.json").read_text())
    assert doc["matches_request"] and doc["problems"] == []
    assert doc["consumed"]["per_batch_distinct"] == [[1, 1, 0, 0]]  # 1 real + 1 generated in every batch
    assert doc["consumed"]["batches"] == 6 and doc["consumed"]["per_kind"]["generated"] == 6

    cfg = make_run_config(tiny_benchmark, tmp_path / "resumed", max_iters=6, tensorboard=True)
    stopped, checkpoint = _train(cfg, stop_at=4)  # mid-epoch: the tiny benchmark's epoch is 14 batches
    assert stopped.run.status()[0] == "running" and checkpoint["proof"]["sampler"]["position"] == 4
    resumed, _ = _train(cfg, state=checkpoint)
    again = json.loads((resumed.run.root / "composition.json").read_text())
    assert again["consumed"]["sequence_sha256"] == doc["consumed"]["sequence_sha256"]
    assert again["consumed"]["per_source"] == doc["consumed"]["per_source"]
    assert [r["iteration"] for r in resumed.run.read_log()] == [1, 2, 3, 4, 5, 6]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(resumed.run.root / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert events.Scalars("consumed_share/faithful")[-1].value == 0.5

    assert main(["audit", str(whole.run.root)]) == 0  # the command a reviewer runs
    report = audit_target(whole.run.root)
    assert report["counts"]["verified"] == 1, report
    board = build_leaderboard(tmp_path / "whole", "stage1", n_boot=50)
    assert [r["strategy"] for r in board["rows"]] == ["gen_faithful"] and board["invalid"] == [], board
    assert board["audited"] is True


def test_sampler_state_resumes_a_plain_dataloader(tiny_benchmark: Path, tmp_path: Path) -> None:
    mixed = MixedData.from_config(make_run_config(tiny_benchmark, tmp_path))
    first = mixed.batch_sampler()
    batches = [b for _, b in zip(range(5), first, strict=False)]
    state = first.state_dict()
    assert state["position"] == 5
    second = mixed.batch_sampler()
    second.load_state_dict(state)
    whole = list(mixed.batch_sampler())
    assert batches + list(second) == whole and len(whole) == mixed.default_batches_per_epoch()


def test_a_mismatched_run_ends_failed_without_metrics(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = make_run_config(tiny_benchmark, tmp_path, max_iters=3)
    mixed = MixedData.from_config(cfg)
    run = ProofRun(mixed)
    run.start()
    real = np.flatnonzero(mixed.records.kind == "real")
    for _ in range(3):
        run.record(real[:2])  # a loop that ignored the sampler: 2 real images per batch
    try:
        run.finish()
        raise AssertionError("finish() accepted a mix it was not asked for")
    except RuntimeError as exc:
        assert "batch 0: requested 1 real, 1 generated, consumed 2 real" in str(exc)
    assert run.run.status()[0] == "failed" and not (run.run.root / "metrics.json").exists()


def test_the_core_does_not_import_the_trainers() -> None:
    code = ("import sys, proveseg, proveseg.api; "
            "print(sorted(m for m in ('mmengine', 'lightning', 'pytorch_lightning', 'tensorboard') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
