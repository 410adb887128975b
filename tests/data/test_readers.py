"""Readers (their schemas, the registry, read_source), class tables and record tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from proveseg.config import ConfigError, dump_config, parse_run_config
from proveseg.data.classes import CITYSCAPES19, load_class_table
from proveseg.data.decode import LabelDecodeError, decode_label
from proveseg.data.records import RecordTable
from proveseg.evaluate.runner import load_split
from proveseg.readers import (
    READERS,
    CityscapesSource,
    FolderSource,
    ReaderError,
    read_dataset,
    read_source,
    validate_source,
)
from proveseg.study.matrix import expand
from proveseg.study.spec import StudyConfig, split_source


def _img(path: Path, shape: tuple[int, int] = (8, 12), value: int = 0, rgb: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((*shape, 3) if rgb else shape, value, np.uint8)
    Image.fromarray(arr).save(path)


def test_folder_reader_on_the_synthetic_layout(tiny_benchmark: Path) -> None:
    result = read_dataset("folder", tiny_benchmark / "train", "synthetic")
    table = result.records
    assert len(table) == 4 * 7 and result.skipped == {}
    assert table.counts("domain") == {d: 4 for d in ("clear_day", "cloudy", "dawn_dusk", "fog", "night", "rainy",
                                                    "snowy")}
    assert set(table.kind.tolist()) == {"real"} and set(table.source.tolist()) == {"synthetic"}
    assert all(Path(p).exists() for p in table.label.tolist())


def test_missing_label_is_an_error_or_a_counted_skip(tmp_path: Path) -> None:
    _img(tmp_path / "images/fog/a.jpg")
    _img(tmp_path / "images/fog/b.jpg")
    _img(tmp_path / "labels/fog/a.png", rgb=False)
    with pytest.raises(ReaderError, match=r"1 image\(s\) without a label.*b\.jpg"):
        read_dataset("folder", tmp_path, "x")
    result = read_dataset("folder", tmp_path, "x", on_invalid="skip")
    assert len(result.records) == 1 and result.skipped == {"missing_label": 1}


def test_cityscapes_reader_prefers_train_ids_and_maps_label_ids(tmp_path: Path) -> None:
    _img(tmp_path / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    _img(tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", rgb=False, value=2)
    _img(tmp_path / "leftImg8bit/train/bonn/bonn_000001_000019_leftImg8bit.png")
    _img(tmp_path / "gtFine/train/bonn/bonn_000001_000019_gtFine_labelIds.png", rgb=False, value=26)
    table = read_dataset("cityscapes", tmp_path, "cs").records
    assert len(table) == 2 and set(table.domain.tolist()) == {"clear_day"}
    labels = [decode_label(p, CITYSCAPES19) for p in table.label.tolist()]
    assert {int(m[0, 0]) for m in labels} == {2, 13}  # labelId 26 (car) -> train id 13


def test_acdc_reader_takes_the_domain_from_the_condition(tmp_path: Path) -> None:
    for cond in ("fog", "rain"):
        _img(tmp_path / f"rgb_anon/{cond}/train/GOPR0475/GOPR0475_frame_000041_rgb_anon.png")
        _img(tmp_path / f"gt/{cond}/train/GOPR0475/GOPR0475_frame_000041_gt_labelTrainIds.png", rgb=False)
    table = read_dataset("acdc", tmp_path, "acdc").records
    assert sorted(table.domain.tolist()) == ["fog", "rainy"]


def test_csv_reader_resolves_relative_paths(tmp_path: Path) -> None:
    _img(tmp_path / "i/a.jpg")
    _img(tmp_path / "l/a.png", rgb=False)
    (tmp_path / "list.csv").write_text("image,label,domain\ni/a.jpg,l/a.png,night\n")
    table = read_dataset("csv", tmp_path / "list.csv", "lst").records
    assert table.row(0)["domain"] == "night" and Path(table.row(0)["image"]) == tmp_path / "i/a.jpg"


def test_unknown_reader_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="valid: folder, cityscapes, acdc, csv"):
        read_dataset("bdd", ".", "x")


def _run_config(source: dict) -> str:
    return yaml.safe_dump({"data": {"real": [{"name": "src", "root": "somewhere", **source}]}})


def test_registry_names_and_schemas_agree() -> None:
    assert list(READERS) == ["folder", "cityscapes", "acdc", "csv", "bdd10k", "idd_aw", "mapillary"]
    assert all(schema.model_fields["reader"].default == reader for reader, schema in READERS.items())


def test_an_option_of_another_reader_is_rejected_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"data\.real\.0\.cityscapes\.images: Extra inputs are not permitted"):
        parse_run_config(_run_config({"reader": "cityscapes", "images": "rgb"}))
    with pytest.raises(ConfigError, match=r"data\.real\.0\.folder\.split: Extra inputs"):
        parse_run_config(_run_config({"split": "val"}))  # no reader: a folder source, which has no split
    with pytest.raises(ValidationError, match="label_ext"):
        read_dataset("csv", "list.csv", "x", label_ext=".jpg")


def test_an_unknown_reader_in_a_config_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"data\.real\.0: unknown reader 'bdd'; valid: folder, cityscapes, acdc, csv"):
        parse_run_config(_run_config({"reader": "bdd"}))


def test_a_source_without_reader_is_a_folder_source() -> None:
    src = validate_source({"name": "x", "root": "d"})
    assert isinstance(src, FolderSource) and src.reader == "folder" and src.images == "images"
    cfg = parse_run_config(_run_config({"reader": "cityscapes", "split": "val"}))
    assert isinstance(cfg.data.real[0], CityscapesSource) and cfg.data.real[0].split == "val"
    assert cfg.data.real[0].domain == "clear_day"  # the Cityscapes default domain
    assert parse_run_config(dump_config(cfg)) == cfg  # the resolved config reads back as the same sources


def test_read_source_applies_domains_then_take(tiny_benchmark: Path) -> None:
    root = tiny_benchmark / "train"
    two = read_source(FolderSource(name="s", root=root, domains=["fog", "night"])).records
    assert len(two) == 8 and set(two.domain.tolist()) == {"fog", "night"}
    halves = [read_source(FolderSource(name="s", root=root, domains=["fog", "night"], take=part, take_seed=3))
              for part in ((0.0, 0.5), (0.5, 1.0))]
    first, second = (set(h.records.image.tolist()) for h in halves)
    assert len(first) == len(second) == 4 and not first & second and first | second == set(two.image.tolist())
    again = read_source(FolderSource(name="s", root=root, domains=["fog", "night"], take=(0.0, 0.5), take_seed=3))
    assert again.records.sha256() == halves[0].records.sha256()  # the same seed draws the same slice
    assert read_dataset("folder", root, "s", domains=["fog"], take=(0.0, 0.5)).records.counts("domain") == {"fog": 2}


def test_read_source_keeps_the_skip_counts(tmp_path: Path) -> None:
    _img(tmp_path / "images/fog/a.jpg")
    _img(tmp_path / "images/fog/b.jpg")
    _img(tmp_path / "labels/fog/a.png", rgb=False)
    result = read_source(FolderSource(name="x", root=tmp_path, on_invalid="skip", take=(0.0, 1.0)))
    assert len(result.records) == 1 and result.skipped == {"missing_label": 1}


def test_evaluation_sources_honour_take(tiny_benchmark: Path) -> None:
    root = tiny_benchmark / "test"
    whole = load_split([FolderSource(name="s", root=root)])
    half = load_split([FolderSource(name="s", root=root, take=(0.0, 0.5))])
    assert len(whole) == 14 and len(half) == 7 and set(half.image.tolist()) < set(whole.image.tolist())


def _study(datasets: dict) -> StudyConfig:
    return StudyConfig.model_validate({"name": "s", "datasets": datasets, "strategies": ["baseline"],
                                       "models": ["unet_micro"]})


def test_a_study_split_takes_its_readers_options(tmp_path: Path) -> None:
    study = _study({"cs": {"train": {"reader": "cityscapes", "root": "cs"},
                           "val": {"reader": "cityscapes", "root": "cs", "split": "val", "take": [0.0, 0.5]},
                           "test": {"reader": "cityscapes", "root": "cs", "split": "val", "take": [0.5, 1.0]}}})
    (run,) = expand(study)
    train, val, test = run.config.data.real[0], run.config.evaluation.val[0], run.config.evaluation.test[0]
    assert all(isinstance(s, CityscapesSource) and s.name == "cs" for s in (train, val, test))
    assert (train.split, val.split, test.split) == ("train", "val", "val")
    assert train.domains == ["clear_day"] and val.take == (0.0, 0.5) and test.take == (0.5, 1.0)
    assert parse_run_config(dump_config(run.config)) == run.config  # what the study's run.yaml holds
    named = split_source("cs", study.datasets["cs"].val.model_copy(update={"name": "cs_val"}), None)
    assert named.name == "cs_val"
    with pytest.raises(ValidationError, match=r"datasets\.cs\.train\.folder\.split"):
        _study({"cs": {"train": {"root": "cs", "split": "val"}, "test": {"root": "cs"}}})
    with pytest.raises(ValidationError, match="unknown reader 'bdd'; valid: folder, cityscapes, acdc, csv"):
        _study({"cs": {"train": {"reader": "bdd", "root": "cs"}, "test": {"root": "cs"}}})


@pytest.mark.parametrize("suffix", [".csv", ".yaml"])
def test_class_table_decodes_rgb_masks(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"mine{suffix}"
    if suffix == ".csv":
        path.write_text("id,name,r,g,b\n0,road,128,64,128\n1,water,0,0,255\n")
    else:
        path.write_text("classes:\n  - {id: 0, name: road, r: 128, g: 64, b: 128}\n"
                        "  - {id: 1, name: water, r: 0, g: 0, b: 255}\n")
    cs = load_class_table(path)
    assert cs.names == ("road", "water")
    rgb = np.array([[[128, 64, 128], [0, 0, 255], [0, 0, 0]]], np.uint8)  # black: the ignore colour
    assert cs.decode_rgb(rgb).tolist() == [[0, 1, 255]]
    Image.fromarray(rgb).save(tmp_path / "mask.png")
    assert decode_label(str(tmp_path / "mask.png"), cs).tolist() == [[0, 1, 255]]


def test_class_table_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,name,r,g,b\n0,road,1,2,3\n0,again,1,2,3\n")
    with pytest.raises(ValueError, match="row 3: id 0 appears twice"):  # row: the line of the file
        load_class_table(path)


def test_label_values_outside_the_class_set_name_the_file(tmp_path: Path) -> None:
    _img(tmp_path / "l.png", rgb=False, value=19)
    with pytest.raises(LabelDecodeError, match=r"l\.png: label values \[19\]"):
        decode_label(str(tmp_path / "l.png"), CITYSCAPES19)


def test_record_table_is_sorted_and_hashed_deterministically() -> None:
    cols = {"image": ["b.jpg", "a.jpg"], "label": ["b.png", "a.png"], "dataset": "d", "domain": ["fog", "fog"],
            "kind": "real", "source": "d"}
    a = RecordTable.from_columns(cols).sorted()
    assert a.image.tolist() == ["a.jpg", "b.jpg"]
    assert a.sha256() == RecordTable.from_columns(cols).sorted().sha256()
    changed = RecordTable.from_columns({**cols, "label": ["b.png", "c.png"]}).sorted()
    assert changed.sha256() != a.sha256()
    with pytest.raises(ValueError, match="kinds"):
        RecordTable.from_columns({**cols, "kind": "weird"})
