"""Manifest validation: one test per rejection reason, structural errors, the CLI report."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from proveseg.cli import main
from proveseg.data.classes import CITYSCAPES19
from proveseg.data.manifest import (
    MANIFEST_COLUMNS,
    REASONS,
    ROOT_MARKER,
    ManifestError,
    _Listings,
    _read_with_arrow,
    _read_with_csv_module,
    _resolve_column,
    read_manifest_columns,
    validate_manifest,
)


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
              "size_mismatch", "exif_rotation", "label_out_of_range",
              "duplicate_row"}  # tests/data/test_bad_inputs.py
    tested |= {"missing_image2", "missing_label2", "unreadable_image2", "unreadable_label2", "pair_size_mismatch",
               "label2_out_of_range"}  # tests/data/test_manifest_pairs.py
    assert tested == set(REASONS)


def test_filters_by_dataset_and_target_domain(root: Path) -> None:
    path = _write(root, [_row(), _row(dataset="other"), _row(target_domain="night")])
    report = validate_manifest(path, datasets=["d"], target_domains=["fog"])
    assert len(report.records) == 1 and set(report.datasets) == {"d", "other"}
    assert (report.datasets["d"].valid, report.datasets["d"].filtered) == (1, 1)  # the night row: counted, not used
    assert (report.datasets["other"].rows, report.datasets["other"].filtered) == (0, 1)


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


def test_manifest_validate_does_not_import_torch(root: Path) -> None:
    """Parsing the command line and validating a manifest need neither torch nor its start-up time."""
    path = _write(root, [_row()])
    code = ("import sys; from proveseg.cli import main; rc = main(['manifest', 'validate', sys.argv[1], '--json']); "
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr[-2000:]


def test_synthetic_manifests_validate(tiny_benchmark: Path) -> None:
    report = validate_manifest(tiny_benchmark / "generated/faithful/manifest.csv", deep=True, class_set=CITYSCAPES19)
    assert report.n_invalid == 0 and len(report.records) == 4 * 6


# The fast reader (pyarrow) and the careful one (csv module) must give the same rows; the resolver,
# which works per distinct folder, must agree with a plain per-row normpath + exists reference.

field_text = st.text(alphabet=st.sampled_from(list('ab/.,"\n\r é\t')), max_size=8)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(field_text, min_size=6, max_size=6), max_size=6), crlf=st.booleans())
def test_fast_and_careful_csv_readers_agree(rows: list[list[str]], crlf: bool) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(rows)
    raw = buf.getvalue().encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.csv"
        path.write_bytes(raw)
        try:
            careful_numbers, careful = _read_with_csv_module(path, raw)
        except ManifestError as exc:  # e.g. an unquoted lone CR splits a row: the fast path must refuse it too
            with pytest.raises(ManifestError, match="fields, header has"):
                read_manifest_columns(path)
            assert "fields, header has" in str(exc)
            return
        fast = _read_with_arrow(raw)
        if fast is not None:
            assert {c: v.to_pylist() for c, v in fast.items()} == careful
        numbers, columns = read_manifest_columns(path)
    assert numbers.tolist() == careful_numbers.tolist()
    assert {c: v.to_pylist() for c, v in columns.items()} == {c: [s.strip() for s in v] for c, v in careful.items()}


def test_plain_manifests_take_the_fast_reader_and_blank_lines_keep_row_numbers(root: Path) -> None:
    path = _write(root, [_row(), _row(generated_path="../gen/nope.jpg")])
    assert _read_with_arrow(path.read_bytes()) is not None
    assert [n for n, _, _ in validate_manifest(path).rejected_rows] == [3]
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], "", text[1], "", "", text[2]]) + "\n")
    assert [n for n, _, _ in validate_manifest(path).rejected_rows] == [6]


names = st.sampled_from(["x.jpg", "y.png", "nope.jpg", "", ".", "..", "sub"])
folders = st.sampled_from(["", "./", "../", "../a/", "../a/sub/", "../a//", "../b/../a/", "../../", "../../../",
                           "../missing/", "m2/", "/abs/", "../a/x.jpg/"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.tuples(folders, names), min_size=1, max_size=12))
def test_resolver_agrees_with_a_per_row_reference(tmp_path_factory: pytest.TempPathFactory,
                                                  values: list[tuple[str, str]]) -> None:
    data = tmp_path_factory.mktemp("tree")
    (data / ROOT_MARKER).write_text("")
    for folder in ("a", "a/sub", "b", "m", "m/m2"):
        (data / folder).mkdir(parents=True)
        for name in ("x.jpg", "y.png"):
            (data / folder / name).write_bytes(b"")
    base, root = str(data / "m"), os.path.join(str(data), "")
    paths = [folder + name for folder, name in values]
    got = _resolve_column(pa.array(paths, pa.string()), base, root, False, _Listings())
    for value, code, full in zip(paths, got.code.tolist(), got.paths.to_pylist(), strict=True):
        expected = os.path.normpath(os.path.join(base, value))
        inside = expected.startswith(root) and not os.path.isabs(value)
        if code == 0:  # found: a file or (a listed entry) a folder inside the root, at the reference path
            assert inside and os.path.exists(expected) and full == expected and value.rpartition("/")[2] not in (
                "", ".", "..")
        elif code == 3:  # missing: inside the root, nothing there
            assert inside and not os.path.exists(expected)
        else:  # absolute (1) or not under the root (2), or a name that is no file ('.', '..', '')
            assert (code == 1) == os.path.isabs(value)
            assert code == 1 or not inside or value.rpartition("/")[2] in ("", ".", "..")


def test_a_folder_named_like_an_image_is_found_then_unreadable(root: Path) -> None:
    (root / "gen/dir.jpg").mkdir()
    path = _write(root, [_row(generated_path="../gen/dir.jpg")])
    assert _reasons(path, check_files=False) == []
    assert _reasons(path) == ["unreadable_image"]
