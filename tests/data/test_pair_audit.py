"""The audit counts pairs: from loaded batches (ConsumptionAudit) and re-derived from the plan (study audit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from proveseg.config import DataConfig
from proveseg.data.audit import ConsumptionAudit
from proveseg.data.pipeline import build_training_data
from proveseg.data.plan import plan_batches
from proveseg.study.audit import rederive_consumption


def _config(root: Path, **generated: object) -> DataConfig:
    return DataConfig.model_validate({
        "real": [{"name": "s", "root": str(root / "train")}],
        "generated": [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv"), **generated}],
        "real_gen_ratio": 0.5, "batch_size": 4, "seed": 1,
        "transforms": {"crop": [32, 32]}})


def _plain(value: object) -> object:
    return json.loads(json.dumps(value))


def test_loaded_batches_count_pairs_and_the_study_audit_rederives_them(tiny_benchmark: Path) -> None:
    data = build_training_data(_config(tiny_benchmark, pair="original"))
    assert data.records.has_pairs
    audit = ConsumptionAudit(len(data.records))
    generated_seen = 0
    for batch in data.loader(0, 6):
        audit.update(batch)
        is_generated = torch.tensor([k == "generated" for k in batch["kind"]])
        assert torch.equal(batch["paired"], is_generated)  # the generated rows, each with its original
        generated_seen += int(is_generated.sum())
        unpaired = ~batch["paired"]
        assert not batch["image2"][unpaired].any() and bool((batch["mask2"][unpaired] == 255).all())
        assert torch.equal(batch["mask2"][~unpaired], batch["mask"][~unpaired])  # same label, same crop
    consumed = audit.to_dict(data.records, data.requested(), data.hashes)["consumed"]
    assert generated_seen == 12
    assert consumed["paired_per_source"] == {"faithful": 12}  # type: ignore[index]
    assert consumed["paired_per_kind"] == {"real": 0, "generated": 12, "noise": 0, "unlabeled": 0}  # type: ignore[index]
    derived = rederive_consumption(data, 6)
    for key in ("paired_per_source", "paired_per_kind", "per_kind", "per_source"):
        assert _plain(derived[key]) == _plain(consumed[key]), key  # type: ignore[index]


def test_pair_counts_survive_a_resume_and_sum_over_ranks(tiny_benchmark: Path) -> None:
    data = build_training_data(_config(tiny_benchmark, pair="original"), world_size=2)
    planned = plan_batches(data.spec, 0, 5)
    paired = data.records.paired()
    audits = [ConsumptionAudit(len(data.records)) for _ in range(2)]
    for b in range(5):
        for rank, audit in enumerate(audits):
            ids = planned.ids[b, rank]
            audit.update({"kind": data.records.kind[ids].tolist(), "source": data.records.source[ids].tolist(),
                          "domain": data.records.domain[ids].tolist(), "index": ids, "paired": paired[ids]})
    resumed = ConsumptionAudit(len(data.records))
    resumed.load_state_dict(audits[1].state_dict())
    assert resumed.paired_sources == audits[1].paired_sources and resumed.paired_kinds == audits[1].paired_kinds
    others: list[np.ndarray] = []
    audits[1].merge_ranks(data.records, lambda a: others.append(a.copy()) or a)  # type: ignore[func-returns-value]
    audits[0].merge_ranks(data.records, lambda a: a + others.pop(0))
    consumed = audits[0].to_dict(data.records, data.requested(), data.hashes)["consumed"]
    expected = int(paired[planned.ids.ravel()].sum())
    assert expected == 5 * 2 * 2  # two generated samples per rank and batch, every one paired
    assert consumed["paired_per_source"] == {"faithful": expected}  # type: ignore[index]
    assert _plain(rederive_consumption(data, 5)["paired_per_source"]) == {"faithful": expected}


def test_a_run_without_pairs_records_what_it_always_recorded(tiny_benchmark: Path) -> None:
    data = build_training_data(_config(tiny_benchmark))
    assert not data.records.has_pairs
    audit = ConsumptionAudit(len(data.records))
    for batch in data.loader(0, 2):
        assert "paired" not in batch and "image2" not in batch
        audit.update(batch)
    consumed = audit.to_dict(data.records, data.requested(), data.hashes)["consumed"]
    assert not {"paired_per_source", "paired_per_kind"} & set(consumed)  # type: ignore[arg-type]
    assert not {"paired_per_source", "paired_per_kind"} & set(rederive_consumption(data, 2))
    resumed = ConsumptionAudit(len(data.records))
    old = audit.state_dict()
    del old["paired_sources"], old["paired_kinds"]  # a checkpoint written before pairs existed
    resumed.load_state_dict(old)
    assert resumed.samples == audit.samples and not resumed.paired_sources


def test_a_trained_paired_run_records_its_pairs_and_the_audit_verifies_it(tiny_benchmark: Path,
                                                                           tmp_path: Path) -> None:
    from proveseg.config import RunConfig
    from proveseg.study.audit import audit_run
    from proveseg.train.loop import train

    data = _config(tiny_benchmark, pair="original").model_dump(mode="json")
    cfg = RunConfig.model_validate({
        "name": "paired", "strategy": "gen_faithful", "output_dir": str(tmp_path / "run"), "data": data,
        "model": {"name": "unet_micro"},
        "train": {"max_iters": 2, "eval_interval": 100, "checkpoint_interval": 100, "log_interval": 1,
                  "num_threads": 1},
        "evaluation": {"test": [{"name": "s", "root": str(tiny_benchmark / "test"), "domains": ["fog"]}],
                       "n_boot": 10, "batch_size": 2}})
    train(cfg)
    comp = json.loads((tmp_path / "run" / "composition.json").read_text(encoding="utf-8"))
    assert comp["matches_request"] and comp["consumed"]["paired_per_source"] == {"faithful": 4}
    result = audit_run(tmp_path / "run")
    assert result.verdict == "verified", result.reasons
    comp["consumed"]["paired_per_source"] = {"faithful": 3}  # an edited record no longer re-derives
    (tmp_path / "run" / "composition.json").write_text(json.dumps(comp), encoding="utf-8")
    edited = audit_run(tmp_path / "run")
    assert edited.verdict == "inconsistent" and any("paired_per_source" in r for r in edited.reasons)


def test_a_pair_label_outside_the_class_set_is_refused_before_training(tmp_path: Path) -> None:
    from PIL import Image

    from proveseg.data.decode import LabelDecodeError

    for name, array in (("a.png", np.zeros((16, 16, 3), np.uint8)), ("a_l.png", np.zeros((16, 16), np.uint8)),
                        ("b.png", np.zeros((16, 16, 3), np.uint8)), ("b_l.png", np.full((16, 16), 77, np.uint8))):
        Image.fromarray(array).save(tmp_path / name)
    (tmp_path / "list.csv").write_text("image,label,domain,image2,label2\na.png,a_l.png,fog,b.png,b_l.png\n")
    cfg = DataConfig.model_validate({"real": [{"name": "s", "reader": "csv", "root": str(tmp_path / "list.csv")}],
                                     "batch_size": 1})
    with pytest.raises(LabelDecodeError, match=r"b_l\.png: label values \[77\]"):
        build_training_data(cfg)


def test_the_api_counts_pairs_like_the_native_loop(tiny_benchmark: Path, tmp_path: Path) -> None:
    from proveseg.api import MixedData, ProofRun, sample_ids
    from proveseg.config import RunConfig

    cfg = RunConfig.model_validate({"name": "api-pairs", "strategy": "gen_faithful", "output_dir": str(tmp_path / "r"),
                                    "data": _config(tiny_benchmark, pair="original").model_dump(mode="json"),
                                    "model": {"name": "unet_micro"}, "train": {"max_iters": 6}})
    mixed = MixedData(cfg)
    proof = ProofRun(mixed, max_iters=6)
    proof.start()
    try:
        for keys in mixed.batch_sampler(0, 6):
            proof.record(sample_ids({"index": [k[0] for k in keys]}))
        consumed = proof.composition()[0]["consumed"]
    finally:
        proof.close()
    assert consumed["paired_per_source"] == {"faithful": 12}
    derived = rederive_consumption(mixed.data, 6)
    assert _plain(derived["paired_per_kind"]) == _plain(consumed["paired_per_kind"])
