"""``proveseg manifest create``: generator output folders in three layouts to a manifest that validates."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path, PurePosixPath

import pytest
import yaml

from proveseg.cli import main
from proveseg.data.manifest_create import parse_generated


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _create(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    rc = main(["manifest", "create", *args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def _bench(tiny_benchmark: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    return root


def test_parse_generated_layouts() -> None:
    assert parse_generated(PurePosixPath("fog/a_b.jpg"), "target/name") == ("a_b", "fog")
    assert parse_generated(PurePosixPath("a_b.jpg"), "target/name") is None
    assert parse_generated(PurePosixPath("scene_000001_fog.jpg"), "name_target") == ("scene_000001", "fog")
    assert parse_generated(PurePosixPath("scene.jpg"), "name_target") is None
    assert parse_generated(PurePosixPath("x/scene_fog.jpg"), "name_target") is None
    assert parse_generated(PurePosixPath("scene.jpg"), "flat", "night") == ("scene", "night")


def test_round_trip_validates_and_loads(tiny_benchmark: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench(tiny_benchmark, tmp_path)
    gen = root / "generated/faithful"
    shipped = _rows(gen / "manifest.csv")
    (gen / "manifest.csv").unlink()
    rc, doc = _create(capsys, str(gen), "--originals", str(root / "train/images/clear_day"),
                      "--labels", str(root / "train/labels/clear_day"), "--dataset", "synthetic")
    assert rc == 0
    assert doc == {"out": str(gen / "manifest.csv"), "matched": 24, "unmatched": {}, "examples": {},
                   "root": str(root), "outside_root": 0}
    rows = _rows(gen / "manifest.csv")
    assert rows == sorted(shipped, key=lambda r: tuple(r.values()))  # the same rows synth writes
    assert main(["manifest", "validate", str(gen / "manifest.csv"), "--json"]) == 0
    per = json.loads(capsys.readouterr().out)["datasets"]["synthetic"]
    assert (per["rows"], per["found"], per["valid"], per["rejected"]) == (24, 24, 24, {})
    data = {"real": [{"name": "synthetic", "root": str(root / "train"), "domains": ["clear_day"]}],
            "generated": [{"name": "faithful", "manifest": str(gen / "manifest.csv")}],
            "real_gen_ratio": 0.5, "batch_size": 4, "seed": 1}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"name": "t", "data": data}))
    assert main(["verify-batches", str(cfg), "--batches", "2", "--json"]) == 0
    loaded = json.loads(capsys.readouterr().out)
    assert loaded["sizes"] == {"real": 4, "generated": 24}


def _flatten(gen: Path, out: Path, rename: str) -> None:
    """Copy ``gen/<target>/<name>.jpg`` into ``out`` as ``rename`` (``dawn_dusk`` as ``dawn-dusk``)."""
    out.mkdir(parents=True)
    for jpg in sorted(gen.glob("*/*.jpg")):
        shutil.copy(jpg, out / rename.format(name=jpg.stem, target=jpg.parent.name.replace("_", "-")))


def test_name_target_and_flat_layouts(tiny_benchmark: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench(tiny_benchmark, tmp_path)
    originals, labels = root / "train/images/clear_day", root / "train/labels/clear_day"
    _flatten(root / "generated/faithful", root / "generated/nt", "{name}_{target}.jpg")
    rc, doc = _create(capsys, str(root / "generated/nt"), "--originals", str(originals), "--labels", str(labels),
                      "--layout", "name_target", "--dataset", "synthetic")
    assert (rc, doc["matched"], doc["unmatched"]) == (0, 24, {})
    rows = _rows(root / "generated/nt/manifest.csv")
    first = rows[0]
    assert first["generated_path"] == "scene_000000_cloudy.jpg"
    assert first["original_path"] == "../../train/images/clear_day/scene_000000.jpg"
    assert first["label_path"] == "../../train/labels/clear_day/scene_000000.png"
    assert (first["target_domain"], first["source_domain"], first["dataset"]) == ("cloudy", "clear_day", "synthetic")
    assert "dawn-dusk" in {r["target_domain"] for r in rows}
    assert main(["manifest", "validate", str(root / "generated/nt/manifest.csv")]) == 0
    capsys.readouterr()

    flat = root / "generated/flat"
    flat.mkdir()
    for jpg in sorted((root / "generated/faithful/fog").glob("*.jpg")):
        shutil.copy(jpg, flat / jpg.name)
    out = tmp_path / "elsewhere/fog.csv"
    rc, doc = _create(capsys, str(flat), "--originals", str(originals), "--labels", str(labels),
                      "--layout", "flat", "--target", "fog", "--out", str(out))
    assert (rc, doc["matched"], doc["out"]) == (0, 4, str(out))
    assert doc["outside_root"] == 4  # the manifest is outside the benchmark's .proveseg-root
    rows = _rows(out)
    assert {r["target_domain"] for r in rows} == {"fog"} and {r["dataset"] for r in rows} == {"custom"}
    assert rows[0]["generated_path"] == "../bench/generated/flat/scene_000000.jpg"
    assert main(["manifest", "validate", str(out), "--root", str(tmp_path)]) == 0
    assert main(["manifest", "create", str(flat), "--originals", str(originals), "--labels", str(labels),
                 "--layout", "flat"]) == 2  # flat needs --target
    assert "--target" in capsys.readouterr().err


def test_every_unmatched_image_is_counted(tiny_benchmark: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = _bench(tiny_benchmark, tmp_path)
    gen = root / "generated/faithful"
    originals, labels = root / "train/images/clear_day", root / "train/labels/clear_day"
    shutil.copy(gen / "fog/scene_000000.jpg", gen / "fog/unknown_scene.jpg")  # no original
    (labels / "scene_000001.png").unlink()  # 6 generated images lose their label
    (originals / "more").mkdir()
    shutil.copy(originals / "scene_000002.jpg", originals / "more/scene_000002.png")  # 6 ambiguous
    shutil.copy(gen / "fog/scene_000003.jpg", gen / "stray.jpg")  # not <target>/<name>
    rc, doc = _create(capsys, str(gen), "--originals", str(originals), "--labels", str(labels),
                      "--dataset", "synthetic")
    assert rc == 1
    assert doc["matched"] == 24 - 6 - 6
    assert doc["unmatched"] == {"no_original": 1, "no_label": 6, "ambiguous_original": 6, "not_in_layout": 1}
    examples = doc["examples"]
    assert isinstance(examples, dict)
    assert examples["no_original"] == [f"fog/unknown_scene.jpg: no original named unknown_scene under {originals}"]
    assert examples["ambiguous_original"][0].startswith("cloudy/scene_000002.jpg: 2 originals named scene_000002")
    assert len(examples["no_label"]) == 5  # examples are capped, counts are not
    rows = _rows(gen / "manifest.csv")
    assert len(rows) == 12
    assert {Path(r["original_path"]).stem for r in rows} == {"scene_000000", "scene_000003"}
    assert main(["manifest", "validate", str(gen / "manifest.csv")]) == 0  # the matched rows are all valid
    capsys.readouterr()

    assert main(["manifest", "create", str(gen), "--originals", str(originals), "--labels", str(labels)]) == 1
    out = capsys.readouterr().out
    assert "12 generated image(s) matched" in out
    for line in ("1 unmatched: no_original", "6 unmatched: no_label", "6 unmatched: ambiguous_original",
                 "1 unmatched: not_in_layout", "stray.jpg: not <target>/<name>.<ext>"):
        assert line in out
