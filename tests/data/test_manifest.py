"""Manifest validation: one test per rejection reason, structural errors, the CLI report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.cli import main
from proveseg.data.classes import CITYSCAPES19
from proveseg.data.manifest import MANIFEST_COLUMNS, REASONS, ROOT_MARKER, ManifestError, validate_manifest


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A data root with one good original, label and generated image (32x48)."""
    (tmp_path / ROOT_MARKER).write_text("")
    for sub in ("orig", "labels", "gen"):
        (tmp_path / sub).mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "orig/a.jpg")
    Image.fromarray(rgb).save(tmp_path / "gen/a.jpg")
    Image.fromarray(np.full((32, 48), 3, np.uint8)).save(tmp_path / "labels/a.png")
    (tmp_path / "manifests").mkdir()
    return tmp_path


def _write(root: Path, rows: list[dict[str, str]], name: str = "manifest.csv") -> Path:
    path = root / "manifests" / name
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(**over: str) -> dict[str, str]:
    row = {"generated_path": "../gen/a.jpg", "original_path": "../orig/a.jpg", "label_path": "../labels/a.png",
           "dataset": "d", "source_domain": "clear_day", "target_domain": "fog"}
    return {**row, **over}


def _reasons(path: Path, **kw: object) -> list[str]:
    return [reason for _, reason, _ in validate_manifest(path, **kw).rejected_rows]  # type: ignore[arg-type]


def test_good_row_is_valid_and_becomes_a_generated_record(root: Path) -> None:
    report = validate_manifest(_write(root, [_row()]), "gen1")
    assert report.n_invalid == 0
    assert report.as_dict()["datasets"] == {"d": {"rows": 1, "found": 1, "valid": 1, "rejected": {}, "examples": []}}
    rec = report.records.row(0)
    assert rec["kind"] == "generated" and rec["source"] == "gen1" and rec["domain"] == "fog"
    assert rec["image"] == str(root / "gen/a.jpg") and rec["origin"] == str(root / "orig/a.jpg")


def test_empty_field(root: Path) -> None:
    assert _reasons(_write(root, [_row(dataset="")])) == ["empty_field"]


def test_absolute_path_rejected_unless_allowed(root: Path) -> None:
    path = _write(root, [_row(generated_path=str(root / "gen/a.jpg"))])
    assert _reasons(path) == ["absolute_path"]
    assert _reasons(path, allow_absolute=True) == []


def test_path_escaping_the_root(root: Path) -> None:
    assert _reasons(_write(root, [_row(label_path="../../../../etc/passwd")])) == ["path_escapes_root"]


@pytest.mark.parametrize(("column", "reason"), [("generated_path", "missing_generated"),
                                                 ("original_path", "missing_original"),
                                                 ("label_path", "missing_label")])
def test_missing_files(root: Path, column: str, reason: str) -> None:
    assert _reasons(_write(root, [_row(**{column: "../gen/nope.jpg"})])) == [reason]


def test_unreadable_and_empty_image(root: Path) -> None:
    (root / "gen/text.jpg").write_text("not an image")
    (root / "gen/empty.jpg").write_bytes(b"")
    path = _write(root, [_row(generated_path="../gen/text.jpg"), _row(generated_path="../gen/empty.jpg")])
    assert _reasons(path) == ["unreadable_image", "unreadable_image"]


def test_truncated_image_and_label(root: Path) -> None:
    data = (root / "gen/a.jpg").read_bytes()
    (root / "gen/cut.jpg").write_bytes(data[: len(data) // 2])
    lab = (root / "labels/a.png").read_bytes()
    (root / "labels/cut.png").write_bytes(lab[:-20])
    path = _write(root, [_row(generated_path="../gen/cut.jpg"), _row(label_path="../labels/cut.png")])
    assert _reasons(path) == ["truncated_image", "truncated_label"]


def test_unreadable_label(root: Path) -> None:
    (root / "labels/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 3)
    assert _reasons(_write(root, [_row(label_path="../labels/bad.png")])) == ["unreadable_label"]


def test_size_mismatch(root: Path) -> None:
    Image.fromarray(np.zeros((20, 48, 3), np.uint8)).save(root / "gen/small.jpg")
    assert _reasons(_write(root, [_row(generated_path="../gen/small.jpg")])) == ["size_mismatch"]


def test_exif_rotation_that_would_misalign(root: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(root / "gen/rot.jpg", exif=exif)
    assert _reasons(_write(root, [_row(generated_path="../gen/rot.jpg")])) == ["exif_rotation"]


def test_label_out_of_range_needs_deep(root: Path) -> None:
    Image.fromarray(np.full((32, 48), 40, np.uint8)).save(root / "labels/big.png")
    path = _write(root, [_row(label_path="../labels/big.png")])
    assert _reasons(path) == []
    assert _reasons(path, deep=True, class_set=CITYSCAPES19) == ["label_out_of_range"]


def test_every_reason_has_a_test() -> None:
    tested = {"empty_field", "absolute_path", "path_escapes_root", "missing_generated", "missing_original",
              "missing_label", "unreadable_image", "truncated_image", "unreadable_label", "truncated_label",
              "size_mismatch", "exif_rotation", "label_out_of_range"}
    assert tested == set(REASONS)


def test_filters_by_dataset_and_target_domain(root: Path) -> None:
    path = _write(root, [_row(), _row(dataset="other"), _row(target_domain="night")])
    report = validate_manifest(path, datasets=["d"], target_domains=["fog"])
    assert len(report.records) == 1 and set(report.datasets) == {"d"}


@pytest.mark.parametrize(("content", "match"), [
    (b"generated_path,dataset\nx,y\n", "lacks column"),
    (b"", "empty file"),
    (",".join(MANIFEST_COLUMNS).encode() + b"\na,b,c\n", "row 2: 3 fields"),
    (",".join(MANIFEST_COLUMNS).encode() + b"\n\xff\xfe,b,c,d,e,f\n", "not valid UTF-8"),
])
def test_structural_errors_name_the_file_and_row(root: Path, content: bytes, match: str) -> None:
    path = root / "manifests" / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(ManifestError, match=match) as info:
        validate_manifest(path)
    assert str(path) in str(info.value)


def test_cli_report_and_exit_code(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(root, [_row(), _row(generated_path="../gen/nope.jpg")])
    assert main(["manifest", "validate", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["datasets"]["d"]["rows"] == 2 and out["datasets"]["d"]["valid"] == 1
    assert out["datasets"]["d"]["rejected"] == {"missing_generated": 1}
    assert main(["manifest", "validate", str(path), "--on-invalid", "skip"]) == 0


def test_synthetic_manifests_validate(tiny_benchmark: Path) -> None:
    report = validate_manifest(tiny_benchmark / "generated/faithful/manifest.csv", deep=True, class_set=CITYSCAPES19)
    assert report.n_invalid == 0 and len(report.records) == 4 * 6
