"""The published-layout readers (bdd10k, idd_aw, mapillary), label maps on any source, and dataset presets.

Every fixture is a tiny tree the test builds in the dataset's published layout with its published
label encoding (train-id masks, IDD level-3 id masks, Vistas class-index palette PNGs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from proveseg.cli import main
from proveseg.config import ConfigError, dump_config, parse_run_config
from proveseg.data.classes import CITYSCAPES19
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.decode import LabelDecodeError
from proveseg.data.labelmap import LabelMapError, load_label_map
from proveseg.data.pipeline import preflight_labels
from proveseg.data.transforms import TransformSpec
from proveseg.readers import ReaderError, read_dataset, read_source, validate_source
from proveseg.readers.mapillary import MAPILLARY_TO_CITYSCAPES
from proveseg.study.matrix import expand
from proveseg.study.spec import StudyConfig, load_study
from tests.readers.vistas_names import VISTAS_V12_NAMES, VISTAS_V20_NAMES

H, W = 6, 8


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)


def _ids(path: Path, values: list[int], palette: bool = False) -> None:
    """A single-channel id mask whose first row holds ``values`` (the rest: the first value)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.full((H, W), values[0], np.uint8)
    mask[0, :len(values)] = values
    im = Image.fromarray(mask, mode="L")
    if palette:  # how Vistas ships its labels: mode P, pixel = class index, palette = class colours
        im = im.convert("P")
        im.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
        im.frombytes(mask.tobytes())
    im.save(path)


def _decoded(result_records: object, i: int = 0) -> list[int]:
    """Row ``i``'s label as the training dataset decodes it (first row of the mask)."""
    ds = SegmentationDataset(result_records, CITYSCAPES19, TransformSpec(hflip=False))  # type: ignore[arg-type]
    return ds.load(i)[1][0].tolist()


# ---- BDD10k ----

BDD_FRAMES = {  # image -> (weather, timeofday)
    "a1.jpg": ("foggy", "daytime"), "b2.jpg": ("rainy", "night"), "c3.jpg": ("clear", "night"),
    "d4.jpg": ("clear", "daytime"), "e5.jpg": ("overcast", "daytime"), "f6.jpg": ("undefined", "undefined"),
}


def _bdd(root: Path, split: str = "train", extra: tuple[str, ...] = ()) -> Path:
    for name in [*BDD_FRAMES, *extra]:
        _image(root / f"images/10k/{split}/{name}")
        _ids(root / f"labels/sem_seg/masks/{split}/{Path(name).stem}.png", [0, 13, 255, 18])
    frames = [{"name": n, "attributes": {"weather": w, "timeofday": t, "scene": "city street"}, "labels": []}
              for n, (w, t) in BDD_FRAMES.items()]
    path = root / f"labels/det_20/det_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(frames))
    return root


def test_bdd10k_reads_train_ids_and_takes_domains_from_the_attributes(tmp_path: Path) -> None:
    root = _bdd(tmp_path / "bdd100k")
    plain = read_dataset("bdd10k", root, "bdd").records
    assert len(plain) == 6 and set(plain.domain.tolist()) == {"clear_day"}  # no attributes: one fixed domain
    assert not plain.label_maps and _decoded(plain)[:4] == [0, 13, 255, 18]  # train ids, used as they are
    table = read_dataset("bdd10k", root, "bdd", attributes="labels/det_20/det_{split}.json").records
    domains = {Path(p).name: d for p, d in zip(table.image.tolist(), table.domain.tolist(), strict=True)}
    assert domains == {"a1.jpg": "fog", "b2.jpg": "rainy", "c3.jpg": "night", "d4.jpg": "clear_day",
                       "e5.jpg": "cloudy", "f6.jpg": "other"}
    ruled = read_dataset("bdd10k", root, "bdd", attributes=str(root / "labels/det_20/det_train.json"),
                         domain_rules=[{"timeofday": "night", "domain": "dark"}, {"domain": "light"}]).records
    assert ruled.counts("domain") == {"dark": 2, "light": 4}  # overridden: the night rule now comes first


def test_bdd10k_images_missing_from_the_attributes_are_an_error_or_counted(tmp_path: Path) -> None:
    root = _bdd(tmp_path / "bdd100k", extra=("zz.jpg",))
    with pytest.raises(ReaderError, match=r"1 of 7 image\(s\) are not in the attributes file .*det_train\.json.*zz"):
        read_dataset("bdd10k", root, "bdd", attributes="labels/det_20/det_train.json")
    skipped = read_dataset("bdd10k", root, "bdd", attributes="labels/det_20/det_train.json", missing_attributes="skip")
    assert len(skipped.records) == 6 and skipped.skipped == {"no_attributes": 1}
    kept = read_dataset("bdd10k", root, "bdd", attributes="labels/det_20/det_train.json", missing_attributes="keep")
    assert len(kept.records) == 7 and kept.records.counts("domain")["unknown"] == 1
    with pytest.raises(ReaderError, match=r"a1\.jpg: attributes .*'foggy'.* match none of domain_rules"):
        read_dataset("bdd10k", root, "bdd", attributes="labels/det_20/det_train.json", missing_attributes="keep",
                     domain_rules=[{"weather": "clear", "domain": "clear"}])


# ---- IDD-AW ----

def _iddaw(root: Path, split: str = "train") -> Path:
    for cond, seq in (("FOG", "10"), ("LOWLIGHT", "3"), ("RAIN", "7"), ("SNOW", "22")):
        _image(root / f"{split}/{cond}/rgb/{seq}/00000000_rgb.png")
        _image(root / f"{split}/{cond}/nir/{seq}/00000000_nir.png")
        (root / f"{split}/{cond}/gtSeg/{seq}").mkdir(parents=True, exist_ok=True)
        (root / f"{split}/{cond}/gtSeg/{seq}/00000000_mask.json").write_text('{"objects": []}')
        # IDD level-3 ids: road, non-drivable fallback, autorickshaw, car, sky, void
        _ids(root / f"{split}/{cond}/gtSeg/{seq}/00000000_labellevel3Ids.png", [0, 3, 8, 9, 25, 255])
    return root


def test_idd_aw_domains_from_the_condition_folders_and_labels_mapped_to_cityscapes(tmp_path: Path) -> None:
    root = _iddaw(tmp_path / "IDDAW")
    result = read_dataset("idd_aw", root, "iddaw")
    table = result.records
    assert sorted(table.domain.tolist()) == ["fog", "night", "rainy", "snowy"] and result.skipped == {}
    assert all(p.endswith("_rgb.png") for p in table.image.tolist())  # the NIR images are not training images
    for i in range(len(table)):
        assert _decoded(table, i)[:6] == [0, 9, 255, 13, 10, 255]  # road, terrain, ignore, car, sky, ignore


def test_idd_aw_says_to_render_the_polygons_and_refuses_unknown_conditions(tmp_path: Path) -> None:
    root = _iddaw(tmp_path / "IDDAW")
    (root / "train/FOG/gtSeg/10/00000000_labellevel3Ids.png").unlink()
    with pytest.raises(ReaderError, match=r"without a label.*createLabels_iddaw\.py .*--id-type level3Id"):
        read_dataset("idd_aw", root, "iddaw")
    assert read_dataset("idd_aw", root, "iddaw", on_invalid="skip").skipped == {"missing_label": 1}
    _image(root / "train/HAZE/rgb/1/00000000_rgb.png")
    with pytest.raises(ReaderError, match=r"condition folder 'HAZE' is not in conditions"):
        read_dataset("idd_aw", root, "iddaw", on_invalid="skip")
    mapped = read_dataset("idd_aw", root, "iddaw", on_invalid="skip",
                          conditions={"FOG": "fog", "RAIN": "rainy", "SNOW": "snowy", "LOWLIGHT": "night",
                                      "HAZE": "fog"})
    assert mapped.skipped == {"missing_label": 2}


# ---- Mapillary Vistas ----

def _vistas(root: Path, version: str, names: tuple[str, ...], values: dict[str, list[int]]) -> Path:
    (root / f"config_v{version}.json").parent.mkdir(parents=True, exist_ok=True)
    (root / f"config_v{version}.json").write_text(json.dumps(
        {"labels": [{"name": n, "readable": n.split("--")[-1], "color": [0, 0, 0], "instances": False,
                     "evaluate": True} for n in names], "version": version}))
    for key, ids in values.items():
        _image(root / f"training/images/{key}.jpg")
        _ids(root / f"training/v{version}/labels/{key}.png", ids, palette=True)
    return root


def test_the_vistas_table_covers_every_published_class_name() -> None:
    assert len(VISTAS_V12_NAMES) == 66 and len(VISTAS_V20_NAMES) == 124
    assert set(MAPILLARY_TO_CITYSCAPES) == set(VISTAS_V12_NAMES) | set(VISTAS_V20_NAMES)
    assert set(MAPILLARY_TO_CITYSCAPES.values()) - {None} == set(CITYSCAPES19.names)  # all 19 classes reachable


@pytest.mark.parametrize(("version", "names"), [("1.2", VISTAS_V12_NAMES), ("2.0", VISTAS_V20_NAMES)])
def test_mapillary_maps_class_indices_to_cityscapes_through_the_config_names(
        tmp_path: Path, version: str, names: tuple[str, ...]) -> None:
    wanted = ["construction--flat--road", "object--vehicle--car", "nature--snow", "construction--barrier--curb",
              "object--vehicle--on-rails", "void--unlabeled"]
    ids = [names.index(n) for n in wanted]
    root = _vistas(tmp_path / "vistas", version, names, {"k1": ids})
    table = read_dataset("mapillary", root, "mv", version=version).records
    assert len(table) == 1 and table.domain.tolist() == ["clear_day"]
    assert _decoded(table)[:6] == [0, 13, 255, 1, 16, 255]  # road, car, ignore, sidewalk (curb), train, ignore


def test_mapillary_ids_past_the_config_and_unknown_names_are_errors(tmp_path: Path) -> None:
    root = _vistas(tmp_path / "vistas", "1.2", VISTAS_V12_NAMES, {"k1": [13, 70, 71]})
    table = read_dataset("mapillary", root, "mv").records
    with pytest.raises(LabelDecodeError, match=r"k1\.png: label ids 70 \(1 px\), 71 \(1 px\) are not in the label map"):
        _decoded(table)
    lenient = read_dataset("mapillary", root, "mv", unmapped="ignore").records
    assert _decoded(lenient)[:3] == [0, 255, 255]
    _vistas(root, "2.0", ("construction--flat--road", "nature--lava"), {})
    with pytest.raises(ReaderError, match=r"config_v2\.0\.json: class names \['nature--lava'\] are not in the"):
        read_dataset("mapillary", root, "mv", version="2.0")


# ---- label_map on any source ----

def _folder_source(root: Path, values: list[int]) -> Path:
    _image(root / "images/a.jpg")
    _ids(root / "labels/a.png", values)
    return root


@pytest.mark.parametrize("suffix", [".csv", ".yaml"])
def test_a_label_map_turns_source_ids_into_study_ids(tmp_path: Path, suffix: str) -> None:
    root = _folder_source(tmp_path / "mine", [7, 26, 40, 255])
    path = tmp_path / f"map{suffix}"
    path.write_text("source,target\n7,0\n26,13\n" if suffix == ".csv" else "7: 0\n26: 13\n")
    with pytest.raises(LabelDecodeError, match=r"a\.png: label ids 40 \(1 px\) are not in the label map .*map\."):
        _decoded(read_dataset("folder", root, "mine", domain="clear_day", label_map=str(path)).records)
    table = read_dataset("folder", root, "mine", domain="clear_day", label_map=str(path), unmapped="ignore").records
    assert _decoded(table)[:4] == [0, 13, 255, 255]
    plain = read_dataset("folder", root, "mine", domain="clear_day").records
    assert table.sha256() != plain.sha256()  # what a run consumed records the map it decoded with
    with pytest.raises(LabelDecodeError, match=r"label ids .* are not in the label map"):
        preflight_labels(read_dataset("folder", root, "mine", domain="clear_day", label_map=str(path)).records,
                         CITYSCAPES19)


def test_a_user_label_map_replaces_a_readers_own_table(tmp_path: Path) -> None:
    root = _iddaw(tmp_path / "IDDAW")
    path = tmp_path / "iddaw.yaml"
    path.write_text(yaml.safe_dump({i: (0 if i == 8 else 255) for i in range(26)}))
    table = read_dataset("idd_aw", root, "iddaw", label_map=str(path)).records
    assert _decoded(table)[:6] == [255, 255, 0, 255, 255, 255]  # only autorickshaw kept (as 0), by the user's table


@pytest.mark.parametrize(("text", "suffix", "message"), [
    ("src,dst\n1,2\n", ".csv", r"header \['src', 'dst'\] lacks \['source', 'target'\]"),
    ("source,target\n1,2\n300,1\n", ".csv", r"row 3: field 'source' is 300, outside 0\.\.255"),
    ("source,target\n1,x\n", ".csv", r"row 2: field 'target' is 'x', expected an integer"),
    ("source,target\n1,2\n1,3\n", ".csv", r"row 3: source id 1 is mapped twice \(first at row 2\)"),
    ("- 1\n- 2\n", ".yaml", r"expected a mapping of source id -> target id"),
    ("1: 2\nroad: 0\n", ".yaml", r"key 'road': field 'source' is 'road'"),
    ("1: 2\n", ".json", r"a label map is a \.csv .* or \.yaml"),
])
def test_a_bad_label_map_fails_validation_naming_file_row_and_field(tmp_path: Path, text: str, suffix: str,
                                                                    message: str) -> None:
    path = tmp_path / f"map{suffix}"
    path.write_text(text)
    with pytest.raises(LabelMapError, match=message):
        load_label_map(path)
    with pytest.raises(ConfigError, match=r"data\.real\.0\.folder: Value error, label_map: .*map"):
        parse_run_config(yaml.safe_dump({"data": {"real": [{"name": "s", "root": "x", "label_map": str(path)}]}}))


def test_label_map_is_checked_when_the_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"label_map: .*nowhere\.csv: label map not found"):
        validate_source({"name": "s", "root": "x", "reader": "cityscapes", "label_map": str(tmp_path / "nowhere.csv")})
    path = tmp_path / "map.csv"
    path.write_text("source,target\n1,19\n")
    src = validate_source({"name": "s", "root": "x", "reader": "acdc", "label_map": str(path), "unmapped": "ignore"})
    assert src.label_map == path and src.unmapped == "ignore"
    assert parse_run_config(dump_config(parse_run_config(yaml.safe_dump(
        {"data": {"real": [{"name": "s", "root": "x", "reader": "acdc", "label_map": str(path)}]}})))).data.real[0] \
        .label_map == path  # a run.yaml keeps the map
    with pytest.raises(ValidationError, match=r"maps to \[19\], which are not class ids of cityscapes19"):
        _study({"cs": {"reader": "cityscapes", "root": "cs", "label_map": str(path)}})


def test_label_map_targets_outside_the_class_set_fail_the_preflight(tmp_path: Path) -> None:
    root = _folder_source(tmp_path / "mine", [1])
    path = tmp_path / "map.csv"
    path.write_text("source,target\n1,30\n")
    records = read_dataset("folder", root, "mine", domain="clear_day", label_map=str(path)).records
    with pytest.raises(LabelMapError, match=r"source 'mine': label map .*map\.csv maps to \[30\]"):
        preflight_labels(records, CITYSCAPES19)


# ---- presets ----

def _study(datasets: dict, **extra: object) -> StudyConfig:
    return StudyConfig.model_validate({"name": "s", "datasets": datasets, "strategies": ["baseline"],
                                       "models": ["unet_micro"], **extra})


def test_a_preset_takes_the_readers_published_splits_and_explicit_ones_merge_over_them() -> None:
    study = _study({
        "bdd10k": {"reader": "bdd10k", "root": "/data/bdd100k", "attributes": "labels/det_20/det_{split}.json"},
        "mapillary": {"reader": "mapillary", "root": "/data/vistas", "version": "2.0",
                      "val": {"split": "validation", "take": [0.0, 0.5]}, "test": {"take": [0.5, 1.0]}},
        "idd_aw": {"reader": "idd_aw", "root": "/data/IDDAW", "repeat": 2.0}})
    bdd, mv, idd = (study.datasets[k] for k in ("bdd10k", "mapillary", "idd_aw"))
    assert (bdd.train.split, bdd.val, bdd.test.split) == ("train", None, "val")  # type: ignore[attr-defined]
    assert bdd.train.attributes == bdd.test.attributes == Path("labels/det_20/det_{split}.json")  # type: ignore[attr-defined]
    assert mv.val is not None and (mv.val.split, mv.val.take) == ("validation", (0.0, 0.5))  # type: ignore[attr-defined]
    assert (mv.test.split, mv.test.take, mv.test.version) == ("validation", (0.5, 1.0), "2.0")  # type: ignore[attr-defined]
    assert idd.repeat == 2.0 and idd.test.split == "val" and idd.train.reader == "idd_aw"  # type: ignore[attr-defined]
    (run, *_) = expand(study)
    assert parse_run_config(dump_config(run.config)) == run.config
    for bad, message in (({"reader": "folder", "root": "x"}, "reader 'folder' has no default splits"),
                         ({"reader": "bdd", "root": "x"}, "unknown reader 'bdd'; valid: folder, cityscapes, acdc"),
                         ({"reader": "bdd10k", "root": "x", "test": None}, r"d\.test\n  expected a source"),
                         ({"reader": "bdd10k", "root": "x", "splt": "val"}, r"d\.train\.bdd10k\.splt\n  Extra inputs")):
        with pytest.raises(ValidationError, match=message):
            _study({"d": bad})


def test_plan_lists_the_runs_of_a_study_written_with_presets(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    bdd = _bdd(tmp_path / "bdd100k")
    _bdd(bdd, "val")
    vistas = _vistas(tmp_path / "vistas", "1.2", VISTAS_V12_NAMES, {"k1": [13, 55]})
    shutil.copytree(vistas / "training", vistas / "validation")
    iddaw = _iddaw(tmp_path / "IDDAW")
    _iddaw(iddaw, "val")
    study = {"name": "presets", "results_root": str(tmp_path / "results"), "strategies": ["baseline"],
             "models": ["unet_micro"], "seeds": [0, 1],
             "datasets": {"bdd10k": {"reader": "bdd10k", "root": str(bdd),
                                     "attributes": "labels/det_20/det_{split}.json"},
                          "mapillary": {"reader": "mapillary", "root": str(vistas)}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["plan", str(path), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["problems"] == [] and planned["totals"] == {"baseline": 4}  # 2 datasets x 2 seeds
    runs = expand(load_study(path))
    bdd_run = next(r for r in runs if r.dataset == "bdd10k")
    assert read_source(bdd_run.config.data.real[0]).records.counts("domain") == {"clear_day": 1}  # stage 1
    assert read_source(bdd_run.config.evaluation.test[0]).records.counts("domain")["fog"] == 1
    study["datasets"]["idd_aw"] = {"reader": "idd_aw", "root": str(iddaw)}  # type: ignore[index]
    path.write_text(yaml.safe_dump(study))
    assert main(["plan", str(path), "--json"]) == 1  # IDD-AW has no clear-day images for stage 1: said before any run
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any(p.startswith("datasets.idd_aw.train: stage-1") for p in problems)



def test_the_readmes_preset_block_validates() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in readme.split("```yaml\n")[1:] if "bdd10k: {reader: bdd10k" in b).split("```")[0]
    datasets = yaml.safe_load(block)["datasets"]
    study = _study(datasets)
    assert set(study.datasets) == {"bdd10k", "idd_aw", "mapillary", "acdc"}
    assert study.datasets["acdc"].test.split == "val"  # type: ignore[attr-defined]


def test_the_training_pipeline_decodes_a_mapped_source_and_hashes_its_map(tmp_path: Path) -> None:
    from proveseg.data.pipeline import build_training_data

    root = _iddaw(tmp_path / "IDDAW")
    cfg = parse_run_config(yaml.safe_dump({"data": {
        "real": [{"name": "idd_aw", "reader": "idd_aw", "root": str(root)},
                 {"name": "bdd", "reader": "bdd10k", "root": str(_bdd(tmp_path / "bdd100k"))}],
        "batch_size": 2, "transforms": {"hflip": False}}}))
    data = build_training_data(cfg.data)
    rows = {str(s): i for i, s in enumerate(data.records.source.tolist())}
    assert data.dataset.load(rows["idd_aw"])[1][0, :6].tolist() == [0, 9, 255, 13, 10, 255]
    assert data.dataset.load(rows["bdd"])[1][0, :4].tolist() == [0, 13, 255, 18]
    unmapped = read_dataset("idd_aw", root, "idd_aw").records.with_label_map("idd_aw", None)
    assert data.hashes["real/idd_aw"] != unmapped.sha256()
