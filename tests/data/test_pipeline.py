"""The training data path end to end: config, loader, noise control, audit, verify-batches."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from proveseg.cli import main
from proveseg.config import ConfigError, DataConfig, load_run_config
from proveseg.data.audit import ConsumptionAudit
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.decode import decode_image, decode_label
from proveseg.data.manifest import ManifestError
from proveseg.data.pipeline import build_training_data
from proveseg.data.plan import PlanError
from proveseg.data.records import KINDS
from proveseg.data.transforms import TransformSpec


def _data(root: Path, **over: object) -> DataConfig:
    cfg = {"real": [{"name": "synthetic", "root": str(root / "train"), "domains": ["clear_day"]}],
           "generated": [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv")}],
           "real_gen_ratio": 0.5, "batch_size": 4, "seed": 1}
    return DataConfig.model_validate({**cfg, **over})


def test_half_ratio_run_consumes_exactly_half_generated(tiny_benchmark: Path) -> None:
    data = build_training_data(_data(tiny_benchmark))
    audit = ConsumptionAudit(len(data.records))
    for batch in data.loader(0, 12):
        audit.update(batch)
    comp = audit.composition()
    assert comp[:, KINDS.index("real")].tolist() == [2] * 12
    assert comp[:, KINDS.index("generated")].tolist() == [2] * 12
    assert audit.mismatches(data.expected_composition(0, 12)) == []
    doc = audit.to_dict(data.records, data.requested(), data.hashes)
    assert doc["consumed"]["per_kind"]["generated"] == 24 and doc["matches_request"]
    assert doc["consumed"]["unique_per_source"]["synthetic"] == 4  # 4 clear-day scenes, 24 draws
    assert set(doc["source_hashes"]) == {"real/synthetic", "generated/faithful"}


def test_resumed_loader_yields_the_same_samples(tiny_benchmark: Path) -> None:
    data = build_training_data(_data(tiny_benchmark))
    full = [b["index"].tolist() for b in data.loader(0, 8)]
    tail = [b["index"].tolist() for b in data.loader(5, 8)]
    assert full[5:] == tail
    first = next(iter(data.loader(0, 1)))["image"]
    again = next(iter(data.loader(0, 1, num_workers=2)))["image"]
    assert first.equal(again)


def test_noise_control(tiny_benchmark: Path) -> None:
    cfg = _data(tiny_benchmark, noise={"reference": "faithful"}, real_gen_ratio=0.5)
    data = build_training_data(cfg)
    data.dataset = SegmentationDataset(data.records, data.class_set, TransformSpec(normalize=False), cfg.seed)
    seen = {"real": 0, "noise": 0}
    pixels = []
    for batch in data.loader(0, 6):
        for j, kind in enumerate(batch["kind"]):
            row = data.records.row(int(batch["index"][j]))
            image = (batch["image"][j] * 255).round().byte().permute(1, 2, 0).numpy()
            label = decode_label(row["label"], data.class_set)
            assert np.array_equal(batch["mask"][j].numpy(), label)
            if kind == "real":
                assert np.array_equal(image, decode_image(row["image"]))  # real pixels untouched
            else:
                assert kind == "noise" and row["source"] == "random_noise"
                original = decode_image(row["origin"])
                assert image.shape == original.shape
                assert row["label"].endswith(Path(row["origin"]).stem + ".png")  # the original's label
                pixels.append(image.ravel())
            seen[kind] += 1
    assert seen == {"real": 12, "noise": 12}
    values = np.concatenate(pixels).astype(np.float64)
    assert values.min() == 0 and values.max() == 255
    assert abs(values.mean() - 127.5) < 1.5 and abs(values.std() - 73.9) < 1.5
    hist = np.bincount(values.astype(np.int64), minlength=256)
    assert hist.min() > 0.7 * hist.mean()


def test_noise_is_deterministic_per_draw(tiny_benchmark: Path) -> None:
    data = build_training_data(_data(tiny_benchmark, noise={"reference": "faithful"}))
    i = int(np.flatnonzero(data.records.kind == "noise")[0])
    ds = data.dataset
    assert ds[(i, 0)]["image"].equal(ds[(i, 0)]["image"])
    assert not ds[(i, 0)]["image"].equal(ds[(i, 1)]["image"])


def test_empty_generated_group_refuses(tiny_benchmark: Path) -> None:
    with pytest.raises(PlanError, match="'generated'"):
        build_training_data(_data(tiny_benchmark, generated=[]))


def test_invalid_manifest_rows_error_or_are_counted(tiny_benchmark: Path, tmp_path: Path) -> None:
    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    victim = next((root / "generated/faithful/fog").glob("*.jpg"))
    victim.unlink()
    with pytest.raises(ManifestError, match=r"1 invalid row.*missing_generated"):
        build_training_data(_data(root))
    gen = [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv"), "on_invalid": "skip"}]
    data = build_training_data(_data(root, generated=gen))
    assert data.skipped == {"faithful": {"missing_generated": 1}}
    assert data.members[1].samples == 23


def _write_config(path: Path, root: Path, **over: object) -> Path:
    path.write_text(yaml.safe_dump({"name": "t", "data": json.loads(_data(root, **over).model_dump_json())}))
    return path


def test_verify_batches_counts_loaded_batches(tiny_benchmark: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path / "run.yaml", tiny_benchmark)
    assert main(["verify-batches", str(cfg), "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "Batch 1: 2 real + 2 generated = 4 total" in out
    assert main(["verify-batches", str(cfg), "--batches", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["batches"] == [{"real": 2, "generated": 2, "noise": 0, "unlabeled": 0}] * 2
    assert report["sizes"] == {"real": 4, "generated": 24}
    assert report["members"][1] == {"name": "faithful", "group": "generated", "samples": 24, "repeats": 1.0,
                                    "effective": 24.0}


def test_verify_batches_fails_when_the_loader_feeds_only_real(tiny_benchmark: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The failure proveseg exists for: a 'mixed' loader that silently yields real images only."""
    original = SegmentationDataset.__getitem__

    def only_real(self: SegmentationDataset, key: tuple[int, int]) -> dict[str, object]:
        real_ids = np.flatnonzero(self.records.kind == "real")
        return original(self, (int(real_ids[key[0] % len(real_ids)]), key[1]))

    monkeypatch.setattr(SegmentationDataset, "__getitem__", only_real)
    cfg = _write_config(tmp_path / "run.yaml", tiny_benchmark)
    assert main(["verify-batches", str(cfg), "--batches", "2"]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "requested 2 real, 2 generated, consumed 4 real" in out


def test_verify_batches_reads_the_generated_files(tiny_benchmark: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Generated files that vanish after validation: only loading them can notice."""
    import proveseg.data.inspect as inspect_module

    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    build = inspect_module.build_training_data

    def build_then_break(cfg: DataConfig) -> object:
        data = build(cfg)
        for jpg in (root / "generated/faithful").glob("*/*.jpg"):
            jpg.unlink()
        return data

    monkeypatch.setattr(inspect_module, "build_training_data", build_then_break)
    cfg = _write_config(tmp_path / "run.yaml", root)
    assert main(["verify-batches", str(cfg), "--batches", "2"]) == 2  # an error naming the file, not a traceback
    assert re.search(r"generated/faithful/.*\.jpg", capsys.readouterr().err)


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  real_gen_ratio: 1.5\n  batch_sise: 8\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(bad)
    message = str(info.value)
    assert str(bad) in message and "data.real_gen_ratio" in message and "data.batch_sise" in message
    bad.write_text("data:\n  generated: []\n  noise: {reference: cyclegan}\n")
    with pytest.raises(ConfigError, match=r"noise\.reference 'cyclegan'"):
        load_run_config(bad)
    bad.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(bad)


def test_example_configs_validate() -> None:
    examples = [p for p in sorted(Path("examples").glob("*.yaml")) if "strategies" not in yaml.safe_load(p.read_text())]
    assert len(examples) >= 4  # run configs; the study example is checked in tests/test_docs.py
    for path in examples:
        cfg = load_run_config(path)
        assert cfg.data.real and all(str(src.root).startswith("data/synthetic") for src in cfg.data.real), path


def test_export_samples_writes_four_files_each(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "run.yaml", tiny_benchmark)
    assert main(["export-samples", str(cfg), "--n", "5", "--out", str(tmp_path / "out")]) == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 20
    meta = json.loads((tmp_path / "out" / "sample_0000_real.json").read_text())
    assert meta["kind"] == "real" and Path(meta["image"]).exists()
