"""TensorBoard scalars mirror log.jsonl: native runs and API runs, switched on by train.tensorboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from proveseg.config import RunConfig
from proveseg.rundir import RunDir
from proveseg.train.loop import Preempted, train
from proveseg.train.tensorboard import TENSORBOARD_DIR, scalars

pytest.importorskip("tensorboard")


def _events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_of_training_and_validation_records() -> None:
    train_line = {"iteration": 3, "loss": 0.5, "lr": 0.01, "train_acc": None, "early_stop": False}
    assert scalars(train_line, {"synthetic": 3, "faithful": 1}) == {
        "train/loss": 0.5, "train/lr": 0.01, "consumed_share/faithful": 0.25, "consumed_share/synthetic": 0.75}
    val_line = {"iteration": 3, "eval": {"mIoU": 0.4, "aAcc": 0.8, "per_domain": {"fog": 0.3, "night": 0.5}},
                "best": {"iteration": 3, "mIoU": 0.4}, "early_stop": False}
    assert scalars(val_line) == {"val/mIoU": 0.4, "val/aAcc": 0.8, "val/mIoU/fog": 0.3, "val/mIoU/night": 0.5}


def test_a_native_run_writes_the_logged_scalars_and_a_resume_replaces_the_discarded_steps(config_factory) -> None:  # type: ignore[no-untyped-def]
    cfg: RunConfig = config_factory(max_iters=4, eval_interval=2, checkpoint_interval=2, tensorboard=True)
    with pytest.raises(Preempted):
        train(cfg, stop_after=3)  # steps 1..3 logged, last.pt at 3
    train(cfg, resume=True)
    events = _events(cfg.output_dir)
    log = RunDir(cfg.output_dir).read_log()
    losses = [(r["iteration"], r["loss"]) for r in log if "loss" in r]
    assert [s for s, _ in events["train/loss"]] == [1, 2, 3, 4]  # one value per step, none twice after the resume
    assert np.allclose([v for _, v in events["train/loss"]], [v for _, v in losses])  # float32 of log.jsonl's
    assert [s for s, _ in events["val/mIoU/night"]] == [2, 4]
    shares = {tag: v[-1][1] for tag, v in events.items() if tag.startswith("consumed_share/")}
    assert shares == pytest.approx({"consumed_share/synthetic": 0.5, "consumed_share/faithful": 0.5})


def test_a_study_switches_it_on_for_every_run_without_changing_what_the_runs_are() -> None:
    from proveseg.configdiff import config_differences, setting_differences
    from proveseg.study.matrix import expand
    from proveseg.study.spec import load_study

    study = load_study(Path(__file__).resolve().parents[2] / "examples" / "synthetic-study.yaml")
    on = study.model_copy(update={"train": study.train.model_copy(update={"tensorboard": True})})
    plain, board = expand(study, ["stage1"]), expand(on, ["stage1"])
    assert board and all(r.config.train.tensorboard for r in board)
    for a, b in zip(plain, board, strict=True):  # a finished study may turn it on: no run counts as changed
        assert config_differences(b.config, a.config) == [] and setting_differences(b.config, a.config) == []
