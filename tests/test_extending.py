"""The README's contributor examples work as written: a strategy kind, a reader and a metric each plug in
through their one registry, and everything downstream follows."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml

from proveseg import strategies
from proveseg.config import TrainConfig
from proveseg.data.records import SOURCE_DOMAIN
from proveseg.evaluate import metrics
from proveseg.readers import READERS, ReadResult, SourceBase
from proveseg.readers import _source_union as source_union
from proveseg.readers.base import pair_labels, walk_images
from proveseg.render import metrics_tables
from proveseg.strategies import Generator, RunData
from proveseg.study.matrix import expand
from proveseg.study.spec import load_study


class GeneratorMix(Generator):
    """Real images plus several generators sharing the generated part of every batch: genmix_<g1>+<g2>."""

    type, prefix, pattern = "GenMix", "genmix_", "genmix_<g1>+<g2>"

    def check(self, arg, study):  # type: ignore[no-untyped-def]
        missing = [g for g in arg.split("+") if g not in study.generators]
        return f"no generators {missing}; known: {sorted(study.generators)}" if missing else None

    def configure(self, arg, study, dataset, base):  # type: ignore[no-untyped-def]
        generated = [study.generators[g].source(g, dataset) for g in arg.split("+")]
        return RunData(base.data.model_copy(update={"generated": generated}), base.train)

    def required_sources(self, arg, data):  # type: ignore[no-untyped-def]
        return [("generated", g) for g in arg.split("+")]


def test_a_new_strategy_kind_is_one_class_and_one_registry_line(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(strategies.STRATEGY_KINDS, "genmix", GeneratorMix())
    doc = {"name": "s", "results_root": str(tmp_path / "r"),
           "datasets": {"d": {"train": {"root": "d/train"}, "test": {"root": "d/test"}}},
           "generators": {"a": {"manifest": "a.csv"}, "b": {"manifest": "b.csv", "repeat": 2.0}},
           "strategies": ["baseline", "genmix_a+b"], "ratios": [0.25]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    run = next(r for r in expand(load_study(path)) if r.strategy == "genmix_a+b")
    assert run.run_dir.name == "unet_tiny_ratio0p25_s0"  # uses the study's ratios, as a Gen kind does
    assert [(g.name, g.repeat, g.datasets) for g in run.config.data.generated] == [("a", 1.0, ["d"]),
                                                                                  ("b", 2.0, ["d"])]
    strategy = strategies.parse_strategy("genmix_a+b")
    consumed = {"per_kind": {"real": 250, "generated": 750}, "per_source": {"d": 250, "a": 250, "b": 500}}
    assert strategy.type == "GenMix" and strategy.prove(run.config.data, consumed) is None
    assert strategy.prove(run.config.data, {**consumed, "per_source": {"d": 250, "a": 750}}) == \
        "no sample of source 'b' consumed"
    doc["strategies"] = ["genmix_a+c"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=r"no generators \['c'\]"):
        load_study(path)


class BddSource(SourceBase):
    reader: Literal["bdd"] = "bdd"
    split: str = "train"

    def read(self) -> ReadResult:
        images = walk_images(self.root / "images" / "10k" / self.split)
        pairs = [(p, self.root / "labels/sem_seg/masks" / self.split / f"{p.stem}.png", SOURCE_DOMAIN) for p in images]
        return pair_labels(self.name, pairs, self.on_invalid)


def test_a_new_reader_is_one_module_and_one_registry_line(tmp_path: Path) -> None:
    from PIL import Image

    for stem in ("a", "b"):
        img, lab = tmp_path / f"images/10k/val/{stem}.jpg", tmp_path / f"labels/sem_seg/masks/val/{stem}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        lab.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 4)).save(img)
        Image.new("L", (8, 4)).save(lab)
    from pydantic import TypeAdapter, ValidationError

    sources = TypeAdapter(source_union({**READERS, "bdd": BddSource}))  # what the registry line builds
    src = sources.validate_python({"name": "bdd10k", "reader": "bdd", "root": str(tmp_path), "split": "val"})
    from proveseg.readers import read_source

    table = read_source(src).records
    assert len(table) == 2 and set(table.domain.tolist()) == {"clear_day"}
    with pytest.raises(ValidationError, match="images"):  # a folder option on a bdd source
        sources.validate_python({"name": "x", "reader": "bdd", "root": "r", "images": "img"})


def test_a_new_metric_is_one_function_and_one_registry_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def frequency_weighted_iou(conf: np.ndarray) -> float:
        freq = conf.sum(axis=1) / conf.sum()
        return float(np.nansum(freq * metrics.iou_per_class(conf)))

    monkeypatch.setitem(metrics.SCALAR_METRICS, "fwIoU", frequency_weighted_iou)
    per_image = np.zeros((2, 3, 3), np.int64)
    per_image[0] = [[5, 1, 0], [0, 3, 0], [0, 0, 0]]
    per_image[1] = [[2, 0, 0], [1, 4, 0], [0, 0, 6]]
    summary = metrics.summarize(per_image, ["fog", "night"], ["a", "b", "c"], n_boot=20)
    assert summary["fwIoU"] == pytest.approx(frequency_weighted_iou(per_image.sum(0)))
    assert summary["per_domain"]["fog"]["fwIoU"] == pytest.approx(frequency_weighted_iou(per_image[0]))
    assert TrainConfig(best_metric="fwIoU").best_metric == "fwIoU"
    overall = metrics_tables(summary, "t")[0]
    assert [c.header for c in overall.columns] == ["mIoU", "95% CI", "aAcc", "mAcc", "fwIoU", "domain mean",
                                                   "images"]
