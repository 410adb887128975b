"""The benchmark on disk: determinism, label values, manifests, the washed_out generator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from proveseg.synth.build import MANIFEST_COLUMNS, SynthSpec, build_benchmark
from proveseg.synth.generators import GENERATORS, WASHED_OUT_MEAN, WASHED_OUT_STD
from proveseg.synth.render import DOMAINS, SOURCE_DOMAIN
from tests.conftest import TINY


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tiny_benchmark: Path, tmp_path: Path) -> None:
    build_benchmark(tmp_path, TINY, workers=2)
    first, second = _tree(tiny_benchmark), _tree(tmp_path)
    assert first.keys() == second.keys()
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_other_seed_gives_other_scenes(tiny_benchmark: Path, tmp_path: Path) -> None:
    spec = SynthSpec(seed=TINY.seed + 1, height=64, width=128, n_train=1, n_test=1, generators=())
    build_benchmark(tmp_path, spec)
    for split in ("train", "test"):
        name = f"{split}/labels/{SOURCE_DOMAIN}/scene_000000.png"
        a = np.asarray(Image.open(tiny_benchmark / name))
        b = np.asarray(Image.open(tmp_path / name))
        assert (a != b).mean() > 0.05


def test_file_counts_match_info(tiny_benchmark: Path) -> None:
    info = json.loads((tiny_benchmark / "info.json").read_text())
    for split, per_domain in info["counts"]["real"].items():
        for domain, n in per_domain.items():
            assert len(list((tiny_benchmark / split / "images" / domain).glob("*.jpg"))) == n
            assert len(list((tiny_benchmark / split / "labels" / domain).glob("*.png"))) == n
    for gen, per_target in info["counts"]["generated"].items():
        assert SOURCE_DOMAIN not in per_target
        for target, n in per_target.items():
            assert len(list((tiny_benchmark / "generated" / gen / target).glob("*.jpg"))) == n


def test_labels_hold_only_train_ids_and_ignore(tiny_benchmark: Path) -> None:
    labels = sorted(tiny_benchmark.glob("*/labels/*/*.png"))
    assert len(labels) == (TINY.n_train + TINY.n_test) * len(DOMAINS)
    for path in labels:
        with Image.open(path) as im:
            values = set(np.unique(np.asarray(im)).tolist())
            assert im.size == (TINY.width, TINY.height)
        assert values <= set(range(19)) | {255}, path


def test_labels_identical_across_domains_of_a_scene(tiny_benchmark: Path) -> None:
    ref = np.asarray(Image.open(tiny_benchmark / "test/labels/clear_day/scene_000001.png"))
    for domain in DOMAINS:
        assert np.array_equal(np.asarray(Image.open(tiny_benchmark / f"test/labels/{domain}/scene_000001.png")), ref)


@pytest.mark.parametrize("generator", list(GENERATORS))
def test_manifest_follows_contract_and_paths_exist(tiny_benchmark: Path, generator: str) -> None:
    manifest = tiny_benchmark / "generated" / generator / "manifest.csv"
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        rows = list(reader)
    assert len(rows) == TINY.n_train * (len(DOMAINS) - 1)
    assert {r["target_domain"] for r in rows} == set(DOMAINS) - {SOURCE_DOMAIN}
    for row in rows:
        assert row["dataset"] == "synthetic" and row["source_domain"] == SOURCE_DOMAIN
        for column in ("generated_path", "original_path", "label_path"):
            assert (manifest.parent / row[column]).is_file(), (column, row[column])
        with Image.open(manifest.parent / row["generated_path"]) as gen, \
                Image.open(manifest.parent / row["label_path"]) as lab:
            assert gen.size == lab.size


def test_washed_out_is_bright_and_low_variance(tiny_benchmark: Path) -> None:
    images = sorted((tiny_benchmark / "generated" / "washed_out").glob("*/*.jpg"))
    assert images
    for path in images:
        px = np.asarray(Image.open(path), dtype=np.float64)
        assert abs(px.mean() - WASHED_OUT_MEAN) < 6, path
        assert abs(px.std() - WASHED_OUT_STD) < 6, path
    clear_day = sorted((tiny_benchmark / "train/images/clear_day").glob("*.jpg"))
    real = [np.asarray(Image.open(p), dtype=np.float64) for p in clear_day]
    assert np.mean([r.mean() for r in real]) < WASHED_OUT_MEAN - 30
    assert np.mean([r.std() for r in real]) > WASHED_OUT_STD + 5


def test_existing_benchmark_is_reused_and_force_rebuilds(tmp_path: Path) -> None:
    spec = SynthSpec(seed=1, height=32, width=64, n_train=1, n_test=1, generators=("faithful",))
    build_benchmark(tmp_path, spec)
    victim = tmp_path / "test/images/fog/scene_000000.jpg"
    victim.unlink()
    build_benchmark(tmp_path, spec)
    assert not victim.exists()
    build_benchmark(tmp_path, spec, force=True)
    assert victim.exists()


@pytest.mark.parametrize("bad", [dict(height=8), dict(n_train=0), dict(generators=("nope",))])
def test_bad_spec_is_refused(bad: dict) -> None:
    with pytest.raises((ValueError, KeyError)):
        SynthSpec(**bad)
