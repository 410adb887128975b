"""examples/weather-study.yaml, the study proveseg exists for, pointed at tiny trees in every dataset's layout.

The trees follow the published layouts and label encodings the readers expect (README, "Datasets"):
BDD100K 10K train-id masks with a Scalabel attributes file, IDD-AW level-3 id masks per condition,
Mapillary Vistas v2.0 class-index palette PNGs with their config, ACDC train-id masks. Six generator
manifests translate training images of every dataset (BDD10k's and Vistas' clear-day ones,
IDD-AW's and ACDC's adverse ones). The test checks the runs ``plan`` lists
per stage and trains each of the five models for two iterations with a proven composition.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from proveseg.cli import main
from proveseg.study.matrix import expand
from proveseg.study.spec import StudyConfig
from tests.readers.vistas_names import VISTAS_V20_NAMES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "weather-study.yaml"
H, W = 40, 72
GENERATORS = ("cyclegan", "cut", "stargan_v2", "sdedit", "instructpix2pix", "controlnet")
MODELS = ("pspnet_r50", "deeplabv3plus_r50", "segformer_mit-b3", "segnext_mscan-b", "mask2former_swin-b")
BDD_FRAMES = [("clear", "daytime")] * 6 + [("foggy", "daytime"), ("rainy", "night"), ("snowy", "daytime"),
                                           ("clear", "night")]


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _mask(path: Path, values: list[int], palette: bool = False) -> None:
    """Vertical stripes of ``values`` (ids in the dataset's own encoding)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.asarray(values, np.uint8)[np.arange(W) * len(values) // W][None, :].repeat(H, axis=0)
    im = Image.fromarray(mask, mode="L")
    if palette:  # Vistas: mode P, pixel = class index
        im = im.convert("P")
        im.putpalette([c for i in range(256) for c in (i, 255 - i, (7 * i) % 256)])
        im.frombytes(mask.tobytes())
    im.save(path)


Origin = tuple[str, Path, Path, str]  # (dataset, image, label, domain) a generator translates


def _bdd(root: Path) -> list[Origin]:
    origins = []
    for split, n in (("train", 10), ("val", 4)):
        frames = []
        for i in range(n):
            name = f"{split}{i:02d}.jpg"
            weather, time = BDD_FRAMES[i]
            _image(root / f"images/10k/{split}/{name}", i)
            _mask(root / f"labels/sem_seg/masks/{split}/{Path(name).stem}.png", [0, 1, 2, 8, 10, 13, 255])
            frames.append({"name": name, "attributes": {"weather": weather, "timeofday": time}, "labels": []})
            if split == "train" and (weather, time) == ("clear", "daytime"):
                origins.append(("bdd10k", root / f"images/10k/{split}/{name}",
                                root / f"labels/sem_seg/masks/{split}/{Path(name).stem}.png", "clear_day"))
        (root / "labels/det_20").mkdir(parents=True, exist_ok=True)
        (root / f"labels/det_20/det_{split}.json").write_text(json.dumps(frames))
    return origins


def _iddaw(root: Path) -> list[Origin]:
    origins = []
    for split in ("train", "val"):
        for k, (cond, domain) in enumerate((("FOG", "fog"), ("LOWLIGHT", "night"), ("RAIN", "rainy"),
                                            ("SNOW", "snowy"))):
            seq = root / split / cond
            _image(seq / f"rgb/{k}/0000000{k}_rgb.png", k)
            (seq / f"gtSeg/{k}").mkdir(parents=True, exist_ok=True)
            (seq / f"gtSeg/{k}/0000000{k}_mask.json").write_text('{"objects": []}')
            _mask(seq / f"gtSeg/{k}/0000000{k}_labellevel3Ids.png", [0, 2, 9, 22, 24, 25, 255])  # level-3 ids
            if split == "train":
                origins.append(("idd_aw", seq / f"rgb/{k}/0000000{k}_rgb.png",
                                seq / f"gtSeg/{k}/0000000{k}_labellevel3Ids.png", domain))
    return origins


def _vistas(root: Path) -> list[Origin]:
    root.mkdir(parents=True)
    (root / "config_v2.0.json").write_text(json.dumps({"version": "2.0", "labels": [
        {"name": n, "readable": n, "color": [0, 0, 0], "instances": False, "evaluate": True}
        for n in VISTAS_V20_NAMES]}))
    road, car = VISTAS_V20_NAMES.index("construction--flat--road"), VISTAS_V20_NAMES.index("object--vehicle--car")
    sky = VISTAS_V20_NAMES.index("nature--sky")
    for split in ("training", "validation"):
        for i in range(3):
            _image(root / f"{split}/images/{split}{i}.jpg", 20 + i)
            _mask(root / f"{split}/v2.0/labels/{split}{i}.png", [road, car, sky], palette=True)
    return [("mapillary", root / f"training/images/training{i}.jpg", root / f"training/v2.0/labels/training{i}.png",
             "clear_day") for i in range(3)]


def _acdc(root: Path) -> list[Origin]:
    origins = []
    for split in ("train", "val"):
        for k, (cond, domain) in enumerate((("fog", "fog"), ("night", "night"), ("rain", "rainy"), ("snow", "snowy"))):
            image = root / f"rgb_anon/{cond}/{split}/GOPR0{k}/GOPR0{k}_frame_000001_rgb_anon.png"
            label = root / f"gt/{cond}/{split}/GOPR0{k}/GOPR0{k}_frame_000001_gt_labelTrainIds.png"
            _image(image, 30 + k)
            _mask(label, [0, 2, 10, 255])
            if split == "train":
                origins.append(("acdc", image, label, domain))
    return origins


def _generators(data: Path, origins: list[Origin]) -> None:
    """Six manifests, each translating every origin image to one condition (their labels reused)."""
    for g, name in enumerate(GENERATORS):
        folder = data / "generated" / name
        rows = ["generated_path,original_path,label_path,dataset,source_domain,target_domain"]
        for i, (dataset, image, label, domain) in enumerate(origins):
            target = ("fog", "night", "rainy", "snowy")[i % 4]
            _image(folder / "images" / dataset / f"{image.stem}_{target}.png", 100 * g + i)
            rows.append(f"images/{dataset}/{image.stem}_{target}.png,{Path('../..') / image.relative_to(data)},"
                        f"{Path('../..') / label.relative_to(data)},{dataset},{domain},{target}")
        (folder / "manifest.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def weather_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The example with /data/ pointing at fixture trees in every dataset's published layout."""
    tmp = tmp_path_factory.mktemp("weather")
    data = tmp / "data"
    origins = [*_bdd(data / "bdd100k"), *_iddaw(data / "IDDAW"), *_vistas(data / "mapillary-vistas"),
               *_acdc(data / "acdc")]
    (data / ".proveseg-root").write_text("")  # manifests may point at the datasets beside them

    _generators(data, origins)
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8").replace("/data/", f"{data}/"))
    doc["results_root"] = str(tmp / "results")
    return tmp, doc


def _plan(tmp: Path, doc: dict, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    path = tmp / "weather-study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    code = main(["plan", str(path), "--json", *args])
    planned = json.loads(capsys.readouterr().out)
    assert code == 0, planned["problems"]
    return planned


def test_the_example_is_the_whole_study(weather_study: tuple[Path, dict],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    tmp, doc = weather_study
    study = StudyConfig.model_validate(doc)
    assert study.models == list(MODELS) and len(study.generators) == 6 and "gen_random_noise" in study.strategies
    assert {name: spec.train.reader for name, spec in study.datasets.items()} == {  # type: ignore[attr-defined]
        "bdd10k": "bdd10k", "idd_aw": "idd_aw", "mapillary": "mapillary", "acdc": "acdc"}
    per_stage = {}
    for stage in ("stage1", "stage2", "ratio-ablation", "noise-ablation"):
        planned = _plan(tmp, doc, capsys, "--stage", stage)
        per_stage[stage] = len(planned["runs"])
        assert {r["stage"] for r in planned["runs"]} == {stage} and planned["problems"] == []
    seeds = 3
    assert per_stage == {
        "stage1": 8 * 2 * 5 * seeds,          # 8 strategies x {bdd10k, mapillary} x 5 models
        "stage2": 8 * 4 * 5 * seeds,          # top_k candidates until stage 1 is proven: every strategy, 4 datasets
        "ratio-ablation": 6 * 1 * 1 * seeds,  # gen_cyclegan at 6 ratios, bdd10k, segformer
        "noise-ablation": 3 * 1 * 1 * seeds,  # baseline, gen_cyclegan, gen_random_noise
    }
    planned = _plan(tmp, doc, capsys)
    assert len(planned["runs"]) == sum(per_stage.values())
    runs = expand(study, apply_top_k=False)
    assert {r.model: r.config.model.encoder_weights for r in runs} == {  # SegNeXt: a local file, left commented
        **{m: "imagenet" for m in MODELS if m != "segnext_mscan-b"}, "segnext_mscan-b": None}
    assert any("stage2 top_k=3 needs proven stage1 runs" in n for n in planned["notes"])


@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_two_iterations_with_a_proven_composition(weather_study: tuple[Path, dict],
                                                                     model: str) -> None:
    tmp, doc = weather_study
    quick = {**doc, "model_options": {}, "batch_size": 2, "num_workers": 0,  # no downloads in tests
             "transforms": {"crop": [32, 64], "hflip": True},
             "train": {**doc["train"], "max_iters": 2, "eval_interval": 1000, "checkpoint_interval": 1000,
                       "log_interval": 1, "num_threads": 1, "schedule": {"warmup_iters": 0}},
             "evaluation": {"mode": "whole", "batch_size": 2, "n_boot": 10},
             "seeds": [0], "results_root": str(tmp / "results" / model)}
    path = tmp / f"weather-{model}.yaml"
    path.write_text(yaml.safe_dump(quick, sort_keys=False))
    assert main(["run", str(path), "--stage", "stage1", "--strategies", "gen_cyclegan", "--datasets", "bdd10k",
                 "--models", model]) == 0
    (run,) = expand(StudyConfig.model_validate(quick), ["stage1"], ["gen_cyclegan"], ["bdd10k"], [model])
    composition = json.loads((run.run_dir / "composition.json").read_text())
    assert composition["matches_request"] is True, composition["problems"]
    consumed = composition["consumed"]
    assert consumed["iterations"] == 2 and consumed["per_batch_distinct"] == [[1, 1, 0, 0]]  # 1 real + 1 generated
    assert consumed["per_kind"] == {"real": 2, "generated": 2, "noise": 0, "unlabeled": 0}
    assert set(consumed["per_domain"]) <= {"clear_day", "fog", "night", "rainy", "snowy"}
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0
