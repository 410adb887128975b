"""Self-training with its strong-augmentation control, the real-samples budget, and the selection policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proveseg.config import ConfigError
from proveseg.study.formatting import leaderboard_caption
from proveseg.study.leaderboard import build_leaderboard
from proveseg.study.matrix import expand
from proveseg.study.spec import load_study
from proveseg.train.loop import train


def _study(tmp_path: Path, root: Path, **over: object) -> Path:
    doc = {"name": "ctl", "results_root": str(tmp_path / "results"),
           "datasets": {"synthetic": {"train": {"root": str(root / "train")},
                                      "val": {"root": str(root / "test"), "domains": ["clear_day"]},
                                      "test": {"root": str(root / "test"), "domains": ["fog", "night"]}}},
           "generators": {"faithful": {"manifest": str(root / "generated/faithful/manifest.csv")}},
           "strategies": ["baseline", "selftrain_adverse", "std_strong"], "models": ["unet_micro"], "seeds": [0],
           "batch_size": 4, "augmentations": {"strong": {"strong_view": {"jitter": 0.3, "cutmix": True, "share": 0.5}}},
           "selftrain": {"adverse": {"unlabeled": {"root": str(root / "train"), "domains": ["fog", "night"]},
                                     "unlabeled_share": 0.5, "control": "strong",
                                     "teacher": {"threshold": 0.0, "strong_jitter": 0.3, "cutmix": True}}},
           "train": {"max_iters": 3, "eval_interval": 3, "checkpoint_interval": 100, "log_interval": 1,
                     "num_threads": 1},
           "evaluation": {"n_boot": 20, "batch_size": 2}, **over}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_self_training_is_ranked_beside_its_strong_augmentation_control(tiny_benchmark: Path, tmp_path: Path) -> None:
    runs = expand(load_study(_study(tmp_path, tiny_benchmark)))
    control = next(r for r in runs if r.strategy == "std_strong").config
    assert control.train.strong_view is not None and control.train.strong_view.jitter == 0.3
    assert control.data.unlabeled == [] and control.data.real_gen_ratio == 1.0
    for run in runs:
        train(run.config)
    doc = build_leaderboard(tmp_path / "results", "stage1", n_boot=20)
    assert doc["invalid"] == [] and doc["selection"] == "best_on_val"
    assert [(c["strategy"], c["control"]) for c in doc["controls"]] == [("selftrain_adverse", "std_strong")]
    assert doc["controls"][0]["interval"] == "test images only"


@pytest.mark.parametrize(("change", "message"), [
    ({"augmentations": {"strong": {"strong_view": {"jitter": 0.4, "cutmix": True, "share": 0.5}}}},
     "its strong_view jitter=0.4 cutmix=True share=0.5 is not the teacher's"),
    ({"augmentations": {"strong": {"strong_view": {"jitter": 0.3, "cutmix": True}}}},
     "its strong_view jitter=0.3 cutmix=True share=1.0 is not the teacher's"),
    ({"selftrain": {"adverse": {"unlabeled_share": 0.5}}}, "selftrain.adverse needs a control"),
    ({"strategies": ["baseline", "selftrain_adverse"]}, "selftrain_adverse is planned without its control std_strong"),
    ({"augmentations": {}, "strategies": ["baseline", "selftrain_adverse"]}, "control .strong.: no such augmentation"),
])
def test_a_control_that_is_not_the_same_augmentation_is_refused(tiny_benchmark: Path, tmp_path: Path,
                                                               change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_study(_study(tmp_path, tiny_benchmark, **change))


def test_budget_real_samples_trains_mixed_runs_until_they_saw_the_baselines_real_images(
        tiny_benchmark: Path, tmp_path: Path) -> None:
    path = _study(tmp_path, tiny_benchmark, strategies=["baseline", "gen_faithful"], selftrain={}, augmentations={},
                  ratios=[0.5], budget="real_samples", train={"max_iters": 4, "eval_interval": 100,
                                                                "num_threads": 1, "log_interval": 1})
    runs = {r.strategy: r for r in expand(load_study(path))}
    assert runs["baseline"].config.train.max_iters == 4 and runs["gen_faithful"].config.train.max_iters == 8
    for run in runs.values():
        train(run.config)
    doc = build_leaderboard(tmp_path / "results", "stage1", n_boot=20)
    assert doc["invalid"] == [] and doc["budget"] == "real_samples" and doc["selection"] == "best_on_val"
    assert len(doc["rows"]) == 2 and "budget: equal real samples" in leaderboard_caption(doc)
    import json

    real = [json.loads((runs[s].run_dir / "composition.json").read_text())["consumed"]["per_kind"]["real"]
            for s in ("baseline", "gen_faithful")]
    assert real == [16, 16]  # 8 steps x 2 real = the baseline's 4 steps x 4
    path.write_text(path.read_text().replace("ratios:\n- 0.5", "ratios:\n- 0.0"))
    with pytest.raises(ValueError, match="consumes no real sample"):
        expand(load_study(path))
