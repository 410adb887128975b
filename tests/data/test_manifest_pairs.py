"""Paired manifests: image2_path / label2_path columns, pairing with the original, misnamed columns."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.data.classes import CITYSCAPES19
from proveseg.data.manifest import MANIFEST_COLUMNS, ROOT_MARKER, ManifestError, validate_manifest


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """A data root with two generated images (a, b) of one original and label (32x48), and a second view with its
    label."""
    (tmp_path / ROOT_MARKER).write_text("")
    rng = np.random.default_rng(0)
    for sub, array in (("orig/a.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)),
                       ("gen/a.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)),
                       ("gen/b.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)),
                       ("labels/a.png", np.full((32, 48), 3, np.uint8)),
                       ("next/a.png", rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)),
                       ("next_labels/a.png", np.full((32, 48), 4, np.uint8)),
                       ("next/small.png", np.zeros((16, 48, 3), np.uint8)),
                       ("next_labels/small.png", np.full((16, 48), 4, np.uint8)),
                       ("next_labels/big.png", np.full((32, 48), 40, np.uint8))):
        (tmp_path / sub).parent.mkdir(exist_ok=True)
        Image.fromarray(array).save(tmp_path / sub)
    (tmp_path / "next/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    (tmp_path / "manifests").mkdir()
    return tmp_path


def _write(root: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    path = root / "manifests" / "manifest.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns or [*MANIFEST_COLUMNS, "image2_path", "label2_path"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(**over: str) -> dict[str, str]:
    row = {"generated_path": "../gen/a.png", "original_path": "../orig/a.png", "label_path": "../labels/a.png",
           "dataset": "d", "source_domain": "clear_day", "target_domain": "fog",
           "image2_path": "../next/a.png", "label2_path": "../next_labels/a.png"}
    return {**row, **over}


def test_a_paired_manifest_validates_and_its_records_carry_the_pairs(root: Path) -> None:
    report = validate_manifest(_write(root, [_row(), _row(generated_path="../gen/b.png", target_domain="night",
                                                                  image2_path="", label2_path="")]))
    assert report.n_invalid == 0 and report.extra_columns == []
    assert report.as_dict()["datasets"]["d"]["paired"] == 1  # type: ignore[index]
    table = report.records
    assert table.image2 is not None and table.label2 is not None and table.pair_geometry is not None
    assert table.domain.tolist() == ["fog", "night"]
    assert table.image2.tolist() == [str(root / "next/a.png"), ""]
    assert table.label2.tolist() == [str(root / "next_labels/a.png"), ""]
    assert table.pair_geometry.tolist() == ["shared", ""]


def test_a_manifest_without_pairs_reports_and_hashes_as_before(root: Path) -> None:
    plain = {k: v for k, v in _row().items() if k in MANIFEST_COLUMNS}
    report = validate_manifest(_write(root, [plain], list(MANIFEST_COLUMNS)))
    assert "paired" not in report.as_dict()["datasets"]["d"]  # type: ignore[operator]
    assert not report.records.has_pairs


def test_pair_original_pairs_each_generated_image_with_its_original(root: Path) -> None:
    plain = {k: v for k, v in _row().items() if k in MANIFEST_COLUMNS}
    path = _write(root, [plain], list(MANIFEST_COLUMNS))
    report = validate_manifest(path, pair="original", pair_geometry="independent")
    table = report.records
    assert table.image2 is not None and table.image2.tolist() == [str(root / "orig/a.png")]
    assert table.label2 is not None and table.label2.tolist() == [str(root / "labels/a.png")]
    assert table.pair_geometry is not None and table.pair_geometry.tolist() == ["independent"]
    assert report.as_dict()["datasets"]["d"]["paired"] == 1  # type: ignore[index]
    assert table.sha256() != validate_manifest(path).records.sha256()  # the proof covers the pairing
    with pytest.raises(ManifestError, match="also has an image2_path column"):
        validate_manifest(_write(root, [_row()]), pair="original")


def test_a_pair_without_a_label_is_valid(root: Path) -> None:
    report = validate_manifest(_write(root, [_row(label2_path="")]))
    assert report.n_invalid == 0 and report.records.label2 is not None and report.records.label2.tolist() == [""]
    only_image2 = validate_manifest(_write(root, [{k: v for k, v in _row().items() if k != "label2_path"}],
                                           [*MANIFEST_COLUMNS, "image2_path"]))
    assert only_image2.n_invalid == 0 and only_image2.records.paired().tolist() == [True]


@pytest.mark.parametrize("over, reason, detail", [
    ({"image2_path": "../next/none.png"}, "missing_image2", "image2_path: "),
    ({"label2_path": "../next_labels/none.png"}, "missing_label2", "label2_path: "),
    ({"image2_path": "../next/bad.png", "label2_path": ""}, "unreadable_image2", "image2_path: "),
    ({"label2_path": "../next/bad.png"}, "unreadable_label2", "label2_path: "),
    ({"image2_path": "../next/small.png", "label2_path": "../next_labels/small.png"}, "pair_size_mismatch",
     "image2_path: image 48x32"),
    ({"label2_path": "../next_labels/small.png"}, "pair_size_mismatch", "label2_path: image2 48x32"),
    ({"image2_path": "../../../../etc/passwd"}, "path_escapes_root", "image2_path="),
    ({"image2_path": "", "label2_path": "../next_labels/a.png"}, "empty_field", "'image2_path' is empty"),
])
def test_bad_pairs_are_rejected_naming_row_and_field(root: Path, over: dict[str, str], reason: str,
                                                     detail: str) -> None:
    report = validate_manifest(_write(root, [_row(generated_path="../gen/b.png", target_domain="night"), _row(**over)]))
    assert [(row, why) for row, why, _ in report.rejected_rows] == [(3, reason)]
    assert report.rejected_rows[0][2].startswith(detail) or detail in report.rejected_rows[0][2]
    assert report.as_dict()["datasets"]["d"]["rejected"] == {reason: 1}  # type: ignore[index]
    assert len(report.records) == 1 and report.records.domain.tolist() == ["night"]


def test_independent_geometry_accepts_a_second_view_of_another_size(root: Path) -> None:
    path = _write(root, [_row(image2_path="../next/small.png", label2_path="../next_labels/small.png")])
    assert validate_manifest(path, pair_geometry="independent").n_invalid == 0


def test_label2_values_are_checked_by_the_deep_pass(root: Path) -> None:
    path = _write(root, [_row(label2_path="../next_labels/big.png")])
    assert validate_manifest(path).n_invalid == 0
    deep = validate_manifest(path, deep=True, class_set=CITYSCAPES19)
    assert [(row, why) for row, why, _ in deep.rejected_rows] == [(2, "label2_out_of_range")]
    assert "big.png" in deep.rejected_rows[0][2]


@pytest.mark.parametrize("column, like", [("label2", "label2_path"), ("mask2", "label2_path"),
                                          ("image2", "image2_path"), ("Label_Path", "label_path"),
                                          ("lable_path", "label_path"), ("target_domains", "target_domain")])
def test_a_misnamed_column_is_an_error_naming_file_column_and_the_valid_ones(root: Path, column: str,
                                                                              like: str) -> None:
    row = {**{k: v for k, v in _row().items() if k in MANIFEST_COLUMNS}, column: "x"}
    path = _write(root, [row], [*MANIFEST_COLUMNS, column])
    with pytest.raises(ManifestError, match=rf"manifest\.csv: column '{column}' looks like '{like}' and would be "
                                            r"ignored; .*image2_path, label2_path"):
        validate_manifest(path)


def test_unrelated_extra_columns_stay_reported(root: Path) -> None:
    row = {**_row(), "prompt": "a foggy street", "seed": "3"}
    report = validate_manifest(_write(root, [row], [*MANIFEST_COLUMNS, "image2_path", "label2_path", "prompt", "seed"]))
    assert report.extra_columns == ["prompt", "seed"] and report.n_invalid == 0


def test_both_csv_parsers_read_the_pair_columns_alike(root: Path) -> None:
    path = _write(root, [_row(), _row(generated_path="../gen/b.png", target_domain="night", label2_path="")])
    fast = validate_manifest(path).records
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")  # blank lines: the csv module reads it
    careful = validate_manifest(path).records
    assert fast.sha256() == careful.sha256() and fast.has_pairs


def test_a_pair_column_named_twice_is_an_error(root: Path) -> None:
    path = root / "manifests" / "manifest.csv"
    values = list(_row().values())
    path.write_text(",".join([*MANIFEST_COLUMNS, "image2_path", "label2_path", "image2_path"]) + "\n"
                    + ",".join([*values, values[-2]]) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="names column 'image2_path' 2 times"):
        validate_manifest(path)


def test_manifest_validate_reports_the_pairs_and_names_a_bad_pair(root: Path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from proveseg.cli import main

    monkeypatch.setenv("COLUMNS", "200")
    path = _write(root, [_row(), _row(generated_path="../gen/b.png", target_domain="night",
                                          image2_path="../next/none.png")])
    assert main(["manifest", "validate", str(path), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)["datasets"]["d"]
    assert doc["paired"] == 1 and doc["rejected"] == {"missing_image2": 1}
    assert doc["examples"] == [{"row": 3, "reason": "missing_image2",
                                "detail": f"image2_path: {root / 'next/none.png'}"}]
    assert main(["manifest", "validate", str(path)]) == 1
    text = capsys.readouterr().out
    assert "paired" in text and "row 3: missing_image2: image2_path: " in text


@pytest.mark.parametrize("synonym, column", [("image_path", "generated_path"), ("mask", "label_path"),
                                             ("orig_path", "original_path"), ("domain", "target_domain")])
def test_another_tools_name_for_a_missing_column_is_named_as_that_column(root: Path, synonym: str,
                                                                          column: str) -> None:
    base = {k: v for k, v in _row().items() if k in MANIFEST_COLUMNS}
    renamed = [synonym if c == column else c for c in MANIFEST_COLUMNS]
    path = _write(root, [{(synonym if k == column else k): v for k, v in base.items()}], renamed)
    with pytest.raises(ManifestError, match=rf"column '{synonym}' looks like '{column}' and would be ignored"):
        validate_manifest(path)


@pytest.mark.parametrize("extra, like", [("image_path", "image2_path"), ("mask", "label_path"),
                                         ("orig_path", "original_path")])
def test_beside_its_contract_column_a_lookalike_is_still_refused(root: Path, extra: str, like: str) -> None:
    base = {k: v for k, v in _row().items() if k in MANIFEST_COLUMNS}
    path = _write(root, [{**base, extra: "x"}], [*MANIFEST_COLUMNS, extra])
    with pytest.raises(ManifestError, match=rf"column '{extra}' looks like '{like}'"):
        validate_manifest(path)
