"""Inputs that used to be read wrongly or silently: symlinked folders, CSV lists, manifests, label maps, class tables.

Each test builds its tiny input here and asserts the reading or the refusal (naming file, row and field).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.readers import ReaderError, read_dataset


def _img(path: Path, shape: tuple[int, int] = (8, 12), value: int = 0, rgb: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3) if rgb else shape, value, np.uint8)).save(path)


def _pair(root: Path, domain: str, stem: str) -> None:
    _img(root / "images" / domain / f"{stem}.jpg")
    _img(root / "labels" / domain / f"{stem}.png", rgb=False)


def test_a_symlinked_domain_folder_is_read(tmp_path: Path) -> None:
    ds, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    _pair(ds, "clear_day", "a")
    _pair(elsewhere, "fog", "b")
    _pair(elsewhere, "fog", "c")
    os.symlink(elsewhere / "images/fog", ds / "images/fog")
    os.symlink(elsewhere / "labels/fog", ds / "labels/fog")
    result = read_dataset("folder", ds, "s")
    assert result.records.counts("domain") == {"clear_day": 1, "fog": 2} and result.skipped == {}


def test_a_symlink_cycle_or_alias_is_an_error_naming_the_link(tmp_path: Path) -> None:
    _pair(tmp_path, "fog", "a")
    os.symlink(tmp_path / "images", tmp_path / "images/fog/loop")
    with pytest.raises(ReaderError, match=r"images/fog/loop: symlink cycle"):
        read_dataset("folder", tmp_path, "s")
    os.remove(tmp_path / "images/fog/loop")
    os.symlink(tmp_path / "images/fog", tmp_path / "images/zz_alias")
    with pytest.raises(ReaderError, match=r"images/zz_alias: leads to .*already read as .*images/fog"):
        read_dataset("folder", tmp_path, "s")


@pytest.fixture()
def listed(tmp_path: Path) -> Path:
    """A folder with images a, b and their labels, for CSV lists written beside them."""
    for stem in ("a", "b"):
        _img(tmp_path / f"{stem}.jpg")
        _img(tmp_path / f"{stem}.png", rgb=False)
    return tmp_path


def _list(folder: Path, text: str, name: str = "list.csv") -> Path:
    (folder / name).write_text(text)
    return folder / name


def test_a_list_naming_one_image_twice_is_refused_naming_both_rows(listed: Path) -> None:
    path = _list(listed, "image,label,domain\na.jpg,a.png,fog\nb.jpg,b.png,fog\n./a.jpg,a.png,fog\n")
    with pytest.raises(ReaderError, match=r"list\.csv: rows 2 and 4 list the same image '\./a\.jpg'"):
        read_dataset("csv", path, "x")


def test_an_empty_label_field_is_refused_naming_file_row_and_field(listed: Path) -> None:
    path = _list(listed, "image,label,domain\na.jpg,a.png,fog\n\nb.jpg,,fog\n")  # blank line: row numbers are lines
    with pytest.raises(ReaderError, match=r"list\.csv: row 4: field 'label' is empty"):
        read_dataset("csv", path, "x")


def test_a_row_longer_than_the_header_is_refused(listed: Path) -> None:
    path = _list(listed, "image,label,domain\na.jpg,a.png,fog,extra\n")
    with pytest.raises(ReaderError, match=r"list\.csv: row 2: 4 fields, header has 3"):
        read_dataset("csv", path, "x")


def test_a_missing_image_is_refused_naming_the_row_or_skipped_and_counted(listed: Path) -> None:
    path = _list(listed, "image,label,domain\na.jpg,a.png,fog\nnope.jpg,b.png,fog\n")
    with pytest.raises(ReaderError, match=r"list\.csv: 1 row\(s\) whose image does not exist: row 3: field 'image'"):
        read_dataset("csv", path, "x")
    result = read_dataset("csv", path, "x", on_invalid="skip")
    assert len(result.records) == 1 and result.skipped == {"missing_image": 1}
    assert "row 3" in result.examples["missing_image"][0]


def test_a_list_without_a_label_column_is_refused_as_a_real_source(listed: Path) -> None:
    from proveseg.config import DataConfig
    from proveseg.data.pipeline import build_training_data

    path = _list(listed, "image,domain\na.jpg,fog\nb.jpg,fog\n")
    assert read_dataset("csv", path, "x").records.kind.tolist() == ["unlabeled"] * 2  # fine where labels are optional
    cfg = DataConfig.model_validate({"real": [{"name": "lst", "reader": "csv", "root": str(path)}], "batch_size": 2})
    with pytest.raises(ReaderError, match=r"source 'lst' is a labeled source.*list\.csv: header lacks column 'label'"):
        build_training_data(cfg)


def test_a_row_shorter_than_the_header_is_refused(listed: Path) -> None:
    path = _list(listed, "image,label,domain\na.jpg,a.png,fog\nb.jpg\n")
    with pytest.raises(ReaderError, match=r"list\.csv: row 3: 1 field\(s\), header has 3"):
        read_dataset("csv", path, "x")


@pytest.fixture()
def gen_root(tmp_path: Path) -> Path:
    """A data root with original o.png, label o_l.png and generated images g0..g3.png (8x12)."""
    from proveseg.data.manifest import ROOT_MARKER

    (tmp_path / ROOT_MARKER).write_text("")
    _img(tmp_path / "o.png")
    _img(tmp_path / "o_l.png", rgb=False)
    for i in range(4):
        _img(tmp_path / f"g{i}.png", value=i)
    return tmp_path


def _manifest(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """A manifest of (generated image, dataset, target domain) rows, all of the one original and label."""
    lines = ["generated_path,original_path,label_path,dataset,source_domain,target_domain"]
    lines += [f"{g},o.png,o_l.png,{d},clear_day,{t}" for g, d, t in rows]
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root / "m.csv"


def test_a_generated_image_under_two_target_domains_is_a_duplicate_row(gen_root: Path) -> None:
    from proveseg.data.manifest import validate_manifest

    report = validate_manifest(_manifest(gen_root, [("g0.png", "d", "fog"), ("g1.png", "d", "fog"),
                                                    ("g0.png", "d", "night")]))
    assert report.rejected_rows == [(4, "duplicate_row", "same generated image as row 2, with another target_domain")]
    assert len(report.records) == 2


def test_rows_left_out_by_the_dataset_filter_are_counted(gen_root: Path) -> None:
    from proveseg.data.manifest import validate_manifest

    path = _manifest(gen_root, [("g0.png", "d", "fog"), ("g1.png", "dd", "fog"), ("g2.png", "D", "fog"),
                                ("g3.png", "dd", "night")])
    doc = validate_manifest(path, datasets=["d"]).as_dict()["datasets"]
    assert doc == {"D": {"rows": 0, "found": 0, "valid": 0, "rejected": {}, "examples": [], "filtered": 1},
                   "d": {"rows": 1, "found": 1, "valid": 1, "rejected": {}, "examples": []},
                   "dd": {"rows": 0, "found": 0, "valid": 0, "rejected": {}, "examples": [], "filtered": 2}}
    by_domain = validate_manifest(path, target_domains=["fog"]).as_dict()["datasets"]
    assert by_domain["dd"]["filtered"] == 1 and "filtered" not in by_domain["d"]  # type: ignore[index,operator]


def test_plan_refuses_a_manifest_with_rows_of_no_study_dataset(tiny_benchmark: Path, tmp_path: Path) -> None:
    import csv

    from proveseg.study.matrix import expand
    from proveseg.study.preflight import study_problems
    from proveseg.study.spec import StudyConfig

    source = tiny_benchmark / "generated/faithful/manifest.csv"
    with source.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows[:3]):
        row["dataset"] = "Synthetic" if i else "synthtic"
    manifest = tmp_path / "typo.csv"  # preflight reads only the dataset column: the paths need not resolve
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    study = StudyConfig.model_validate({
        "name": "s", "results_root": str(tmp_path / "r"), "strategies": ["baseline", "gen_faithful"],
        "models": ["unet_micro"], "generators": {"faithful": {"manifest": str(manifest)}},
        "datasets": {"synthetic": {"train": {"root": str(tiny_benchmark / "train")},
                                   "test": {"root": str(tiny_benchmark / "test")}}}})
    problems = [p for p in study_problems(study, expand(study)) if p.startswith("generators.")]
    assert len(problems) == 1, problems
    assert "has 3 row(s) whose dataset is not a study dataset: 'Synthetic' (2 rows), 'synthtic' (1 row)" in problems[0]
    assert "'Synthetic' looks like 'synthetic'; 'synthtic' looks like 'synthetic'" in problems[0]


def test_zero_padded_yaml_keys_are_decimal_ids(tmp_path: Path) -> None:
    from proveseg.data.labelmap import LabelMapError, load_label_map

    path = tmp_path / "map.yaml"
    path.write_text("007: 1\n010: 2\n011: 3\n")  # YAML 1.1 would read 010 as octal 8
    lut = load_label_map(path).lut
    assert {i: int(lut[i]) for i in (7, 8, 9, 10, 11)} == {7: 1, 8: -1, 9: -1, 10: 2, 11: 3}
    path.write_text("7: 1\n07: 2\n")  # the same id twice, once padded
    with pytest.raises(LabelMapError, match=r"map\.yaml: line 2: key '07': source id 7 is mapped twice "
                                            r"\(first at line 1: key '7'\)"):
        load_label_map(path)


def test_label_map_csv_rows_are_file_lines_and_extra_fields_are_refused(tmp_path: Path) -> None:
    from proveseg.data.labelmap import LabelMapError, load_label_map

    path = tmp_path / "map.csv"
    path.write_text("source,target\n7,1\n\n10,2\n10,3\n")
    with pytest.raises(LabelMapError, match=r"map\.csv: row 5: source id 10 is mapped twice \(first at row 4\)"):
        load_label_map(path)
    path.write_text("source,target,note\n7,1,x\n8,2,y,extra\n")
    with pytest.raises(LabelMapError, match=r"map\.csv: row 3: 4 fields, header has 3"):
        load_label_map(path)


def test_a_class_table_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    from proveseg.data.classes import load_class_table

    path = tmp_path / "bom.csv"
    path.write_text("id,name,r,g,b\n0,road,128,64,128\n1,water,0,0,255\n", encoding="utf-8-sig")
    assert load_class_table(path).names == ("road", "water")


def test_a_missing_class_table_is_named_as_one(tmp_path: Path) -> None:
    from proveseg.data.classes import load_class_table

    with pytest.raises(ValueError, match=r"nope\.csv: class table not found"):
        load_class_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("suffix", [".csv", ".yaml"])
def test_two_classes_of_one_colour_are_refused_naming_both(tmp_path: Path, suffix: str) -> None:
    from proveseg.data.classes import load_class_table

    path = tmp_path / f"dup{suffix}"
    if suffix == ".csv":
        path.write_text("id,name,r,g,b\n0,road,128,64,128\n1,sidewalk,128,64,128\n")
        where = r"row 2 \('road'\) and row 3 \('sidewalk'\)"
    else:
        path.write_text("- {id: 0, name: road, r: 128, g: 64, b: 128}\n"
                        "- {id: 1, name: sidewalk, r: 128, g: 64, b: 128}\n")
        where = r"entry 1 \('road'\) and entry 2 \('sidewalk'\)"
    with pytest.raises(ValueError, match=rf"dup{suffix}: {where} have the same colour \(128, 64, 128\)"):
        load_class_table(path)


def test_plan_refuses_a_study_split_listed_without_labels(listed: Path, tmp_path: Path) -> None:
    from proveseg.study.matrix import expand
    from proveseg.study.preflight import study_problems
    from proveseg.study.spec import StudyConfig

    path = _list(listed, "image,domain\na.jpg,clear_day\nb.jpg,clear_day\n")
    study = StudyConfig.model_validate({
        "name": "s", "results_root": str(tmp_path / "r"), "strategies": ["baseline"], "models": ["unet_micro"],
        "datasets": {"lst": {"train": {"reader": "csv", "root": str(path)},
                             "test": {"reader": "csv", "root": str(path)}}}})
    problems = study_problems(study, expand(study))
    assert problems and problems[0].startswith("datasets.lst.train: cannot be read (ReaderError: source 'lst")
    assert "list.csv: header lacks column 'label'" in problems[0]
