"""How two run configs differ, field by field (dotted paths), ignoring how a run executes.

Used wherever a run is compared with what it should be: a resume against its checkpoint, a run
against its study, a run against its cell's baseline. Class sets compare whole (a name equals the
set it names), and configs written by older versions are read through the current schema first.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from proveseg.config import RunConfig
from proveseg.data.classes import resolve_class_set

__all__ = ["AFTER_TRAINING", "EXECUTION_ONLY", "STRATEGY_FIELDS", "config_differences", "flatten",
           "setting_differences"]

# How a run executes, not what it computes: may differ between a run and its study (and within a cell).
EXECUTION_ONLY = frozenset({"name", "output_dir", "study", "data.num_workers", "train.device", "train.num_threads",
                            "train.tensorboard", "evaluation.batch_size"})
# Read only after the last step (the test set and how it is scored): a resume may correct them.
AFTER_TRAINING = ("evaluation.test", "evaluation.n_boot", "evaluation.mode", "evaluation.crop", "evaluation.stride",
                  "evaluation.flip")
# What a strategy varies inside a cell (everything else must be equal across the cell's runs).
STRATEGY_FIELDS = ("strategy", "data.generated", "data.noise", "data.unlabeled", "data.unlabeled_share",
                   "data.real_gen_ratio", "data.transforms", "train.selftrain", "train.strong_view")


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train.optimizer.lr": 0.004, ...}``; lists are leaves (compared whole)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _normalised(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data with the class set written whole (a name and its set compare equal)."""
    doc = json.loads(cfg.model_dump_json())
    with contextlib.suppress(KeyError, ValueError, OSError):  # a class table file that is gone: compared as written
        doc["data"]["class_set"] = resolve_class_set(cfg.data.class_set).to_dict()
    return flatten(doc)


def _differences(actual: dict[str, Any], expected: dict[str, Any], skip: Iterable[str]) -> list[str]:
    skipped = tuple(skip)
    out = []
    for key in sorted(set(actual) | set(expected)):
        if key in EXECUTION_ONLY or key.startswith(skipped):
            continue
        if actual.get(key) != expected.get(key):
            out.append(f"{key}: {_short(expected.get(key))} expected, {_short(actual.get(key))} found")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def config_differences(actual: RunConfig, expected: RunConfig, skip: Iterable[str] = ()) -> list[str]:
    """Every field (dotted path) in which ``actual`` differs from ``expected``, execution-only fields and ``skip``
    (dotted prefixes) aside."""
    return _differences(_normalised(actual), _normalised(expected), skip)


def setting_differences(run: RunConfig, reference: RunConfig) -> list[str]:
    """Fields two runs of one cell must share (everything a strategy does not vary) in which they differ.

    Under a study's ``budget: real_samples`` the number of iterations is what equalises the runs, so it varies too.
    """
    budget = {cfg.study.budget for cfg in (run, reference) if cfg.study is not None}
    varies = (*STRATEGY_FIELDS, "train.max_iters") if budget == {"real_samples"} else STRATEGY_FIELDS
    return _differences(_normalised(run), _normalised(reference), varies)
