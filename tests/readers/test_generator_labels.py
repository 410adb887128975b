"""Generated rows reuse their originals' labels, so they decode through the dataset's label map (issue 17).

A generator made from Mapillary Vistas images lists Vistas label PNGs (class indices) in its
``label_path`` column; its rows, and the noise control's rows made from them, must reach the model
as Cityscapes train ids, exactly like the dataset's real images.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from proveseg.cli import main
from proveseg.config import ConfigError, DataConfig, RunConfig, dump_config, parse_run_config
from proveseg.data.classes import CITYSCAPES19
from proveseg.data.decode import LabelDecodeError
from proveseg.data.manifest import ROOT_MARKER, ManifestError
from proveseg.data.pairs import load_second_view
from proveseg.data.pipeline import build_training_data
from proveseg.data.records import NOISE_SOURCE
from proveseg.study.matrix import expand
from proveseg.study.preflight import study_problems
from proveseg.study.reference import store_study
from proveseg.study.spec import load_study
from proveseg.train.loop import train
from tests.readers.test_dataset_readers import _image, _vistas
from tests.readers.vistas_names import VISTAS_V12_NAMES

ROAD, CAR, SNOW, CURB = (VISTAS_V12_NAMES.index(n) for n in (
    "construction--flat--road", "object--vehicle--car", "nature--snow", "construction--barrier--curb"))
MAPPED = [0, 13, 255, 1]  # road, car, ignore (snow has no Cityscapes class), sidewalk (curb)


def _made_from_vistas(tmp_path: Path, values: dict[str, list[int]] | None = None) -> tuple[Path, Path]:
    """A Vistas tree and a generator's manifest (one fog image per Vistas image, reusing its label)."""
    values = values or {"k1": [ROAD, CAR, SNOW, CURB], "k2": [CAR, ROAD, CURB, SNOW]}
    vistas = _vistas(tmp_path / "vistas", "1.2", VISTAS_V12_NAMES, values)
    (tmp_path / ROOT_MARKER).write_text("")
    manifest = tmp_path / "gen/fog/manifest.csv"
    rows = []
    for key in values:
        _image(manifest.parent / f"{key}.png")
        rows.append({"generated_path": f"{key}.png", "original_path": f"../../vistas/training/images/{key}.jpg",
                     "label_path": f"../../vistas/training/v1.2/labels/{key}.png", "dataset": "mapillary",
                     "source_domain": "clear_day", "target_domain": "fog"})
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return vistas, manifest


def _data(vistas: Path, manifest: Path, noise: bool = False, **generated: object) -> DataConfig:
    real = {"name": "mapillary", "reader": "mapillary", "root": str(vistas)}
    doc = {"real": [real], "generated": [{"name": "fog", "manifest": str(manifest), **generated}],
           "real_gen_ratio": 0.5, "batch_size": 2, "transforms": {"hflip": False}}
    if noise:
        doc["noise"] = {"reference": "fog"}
    return parse_run_config(yaml.safe_dump({"data": doc})).data


def _first_rows(data: object, source: str) -> list[list[int]]:
    """The first label row of each of ``source``'s records, as the training dataset decodes them."""
    records = data.records  # type: ignore[attr-defined]
    rows = np.flatnonzero(records.source == source)
    return [data.dataset.load(int(i))[1][0, :4].tolist() for i in rows]  # type: ignore[attr-defined]


def test_generated_and_noise_rows_decode_like_the_datasets_real_images(tmp_path: Path) -> None:
    vistas, manifest = _made_from_vistas(tmp_path)
    like = {"labels_like": {"name": "mapillary", "reader": "mapillary", "root": str(vistas)}}
    data = build_training_data(_data(vistas, manifest, **like))
    assert _first_rows(data, "mapillary") == _first_rows(data, "fog") == [MAPPED, [13, 0, 1, 255]]
    noise = build_training_data(_data(vistas, manifest, noise=True, **like))
    assert _first_rows(noise, NOISE_SOURCE) == [MAPPED, [13, 0, 1, 255]]
    assert noise.records.label_maps[NOISE_SOURCE].digest() == data.records.label_maps["fog"].digest()
    paired = build_training_data(_data(vistas, manifest, pair="original", **like))  # label2: the same label
    first = int(np.flatnonzero(paired.records.source == "fog")[0])
    second = load_second_view(paired.records, first, CITYSCAPES19)
    assert second is not None and second[1][0, :4].tolist() == MAPPED
    with pytest.raises(LabelDecodeError, match=rf"k1\.png: label values \[{SNOW}, {CAR}\] outside cityscapes19"):
        build_training_data(_data(vistas, manifest))  # raw Vistas indices: caught before training, never trained
    fog = data.records.take(data.records.source == "fog")  # the map is part of what the run consumed
    assert data.hashes["generated/fog"] == fog.sha256() != fog.with_label_map("fog", None).sha256()
    cfg = parse_run_config(dump_config(RunConfig(data=_data(vistas, manifest, **like))))
    assert cfg.data.generated[0].labels_like is not None
    assert build_training_data(cfg.data).hashes == data.hashes  # run.yaml round trip re-derives the same hashes


def test_a_generators_own_label_map_errors_on_uncovered_ids_or_ignores_them(tmp_path: Path) -> None:
    vistas, manifest = _made_from_vistas(tmp_path)
    table = tmp_path / "fog_map.yaml"
    table.write_text(yaml.safe_dump({ROAD: 0, CAR: 13, CURB: 1}))  # snow left out
    with pytest.raises(LabelDecodeError, match=rf"k1\.png: label ids {SNOW} \(\d+ px\) are not in the label map "
                                               r".*fog_map\.yaml"):
        build_training_data(_data(vistas, manifest, label_map=str(table)))
    with pytest.raises(ManifestError, match=rf"manifest\.csv: 2 invalid row\(s\) \[2 label_out_of_range\]; row 2: "
                                            rf"label_out_of_range \(.*k1\.png: label ids {SNOW} "):
        build_training_data(_data(vistas, manifest, label_map=str(table), deep=True))  # deep: every row checked
    data = build_training_data(_data(vistas, manifest, label_map=str(table), unmapped="ignore", noise=True))
    assert _first_rows(data, NOISE_SOURCE) == [MAPPED, [13, 0, 1, 255]]
    deep = build_training_data(_data(vistas, manifest, label_map=str(table), unmapped="ignore", deep=True))
    assert _first_rows(deep, "fog") == [MAPPED, [13, 0, 1, 255]]


@pytest.mark.parametrize(("extra", "message"), [
    ({"label_map": "nowhere.csv"}, r"data\.generated\.0: Value error, label_map: nowhere\.csv: label map not found"),
    ({"label_map": "BAD", "labels_like": {"name": "m", "root": "x"}}, r"label_map and labels_like both"),
    ({"label_map": "BAD"}, r"label_map: .*map\.csv: row 3: field 'target' is 'car', expected an integer"),
])
def test_a_generators_label_map_is_checked_when_the_config_is_validated(tmp_path: Path, extra: dict,
                                                                        message: str) -> None:
    bad = tmp_path / "map.csv"
    bad.write_text("source,target\n1,0\n2,car\n")
    extra = {k: str(bad) if v == "BAD" else v for k, v in extra.items()}
    with pytest.raises(ConfigError, match=message):
        parse_run_config(yaml.safe_dump({"data": {"generated": [{"name": "g", "manifest": "m.csv", **extra}]}}))


def _study(tmp_path: Path, vistas: Path, manifest: Path, **generator: object) -> Path:
    study = {"name": "vistas-weather", "results_root": str(tmp_path / "results"), "models": ["unet_micro"],
             "strategies": ["gen_fog", "gen_random_noise"], "noise_reference": "fog", "ratios": [0.5],
             "batch_size": 2, "transforms": {"crop": [4, 4], "hflip": False},
             "datasets": {"mapillary": {"reader": "mapillary", "root": str(vistas)}},
             "generators": {"fog": {"manifest": str(manifest), **generator}},
             "train": {"max_iters": 2, "eval_interval": 100, "checkpoint_interval": 100, "log_interval": 1,
                       "num_threads": 1},
             "evaluation": {"n_boot": 10, "batch_size": 2}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_study_trains_and_audits_a_generator_made_from_mapillary_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    vistas, manifest = _made_from_vistas(tmp_path)
    shutil.copytree(vistas / "training", vistas / "validation")  # the preset's test split
    path = _study(tmp_path, vistas, manifest)
    assert main(["plan", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == []
    runs = expand(load_study(path))
    assert {r.strategy for r in runs} == {"gen_fog", "gen_random_noise"}
    for run in runs:  # run.yaml says how the generator's labels decode: like the dataset's train split
        gen = run.config.data.generated[0]
        assert (gen.label_map, gen.labels_like, gen.unmapped) == (None, run.config.data.real[0].model_copy(
            update={"domains": None, "repeat": 1.0}), "error")
    store_study(load_study(path))  # as `proveseg run` does (in-process here: no subprocess per run)
    for run in runs:
        train(run.config)
    for run in runs:
        comp = json.loads((run.run_dir / "composition.json").read_text())
        assert comp["matches_request"] is True and comp["consumed"]["iterations"] == 2
        kind = "noise" if run.strategy == "gen_random_noise" else "generated"
        assert comp["consumed"]["per_kind"]["real"] == comp["consumed"]["per_kind"][kind] == 2
    assert main(["audit", str(tmp_path / "results"), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["counts"]["verified"] == 2, audit["runs"]


def test_a_study_generators_own_label_map_overrides_the_datasets(tmp_path: Path) -> None:
    vistas, manifest = _made_from_vistas(tmp_path)
    table = tmp_path / "fog_map.csv"
    table.write_text("source,target\n" + "".join(f"{i},{t}\n" for i, t in ((ROAD, 0), (CAR, 13), (CURB, 1))))
    runs = expand(load_study(_study(tmp_path, vistas, manifest, label_map=str(table), unmapped="ignore")))
    gen = runs[0].config.data.generated[0]
    assert (gen.label_map, gen.labels_like, gen.unmapped) == (table, None, "ignore")
    data = build_training_data(runs[0].config.data)
    assert _first_rows(data, "fog") == [MAPPED, [13, 0, 1, 255]]
    table.write_text("source,target\n" + f"{ROAD},0\n{CAR},19\n")
    study = load_study(_study(tmp_path, vistas, manifest, label_map=str(table)))  # car -> 19: not a class id
    problems = [p for p in study_problems(study, expand(study)) if p.startswith("generators.")]  # no test split here
    assert len(problems) == 1 and problems[0].startswith("generators.fog on dataset 'mapillary': label map ")
    assert "fog_map.csv maps to [19], which are not class ids of cityscapes19" in problems[0]
    lenient = expand(load_study(_study(tmp_path, vistas, manifest, unmapped="ignore")))[0].config.data.generated[0]
    assert lenient.labels_like is not None and lenient.unmapped == "ignore"  # the dataset's map, the generator's policy


def test_manifest_validate_deep_decodes_through_the_label_map_given(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, manifest = _made_from_vistas(tmp_path)
    assert main(["manifest", "validate", str(manifest), "--deep", "--json"]) == 1  # raw Vistas indices
    reasons = json.loads(capsys.readouterr().out)["datasets"]["mapillary"]["rejected"]
    assert reasons == {"label_out_of_range": 2}
    table = tmp_path / "fog_map.yaml"
    table.write_text(yaml.safe_dump({ROAD: 0, CAR: 13, CURB: 1}))
    args = ["manifest", "validate", str(manifest), "--deep", "--json", "--label-map", str(table)]
    assert main(args) == 1 and "label_out_of_range" in capsys.readouterr().out  # snow is not covered
    assert main([*args, "--unmapped", "ignore"]) == 0
    assert json.loads(capsys.readouterr().out)["datasets"]["mapillary"]["valid"] == 2
    assert main([*args[:-1], str(tmp_path / "nowhere.csv")]) == 2
    assert "nowhere.csv: label map not found" in capsys.readouterr().err
