"""Generated-data analysis: ``stats`` tells the synthetic generators apart; ``consistency`` mechanics."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from proveseg.checkpoint import save_checkpoint
from proveseg.cli import main
from proveseg.data.manifest import MANIFEST_COLUMNS
from proveseg.evaluate.consistency import block_majority
from proveseg.models import build_network


def _stats(manifest: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["stats", str(manifest), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_rank_faithful_above_misaligned_and_flag_washed_out(tiny_benchmark: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    gen = tiny_benchmark / "generated"
    faithful = _stats(gen / "faithful/manifest.csv", capsys)["faithful"]
    misaligned = _stats(gen / "misaligned/manifest.csv", capsys)["misaligned"]
    washed = _stats(gen / "washed_out/manifest.csv", capsys)["washed_out"]
    f = np.mean([v["layout_score"] for v in faithful.values()])
    m = np.mean([v["layout_score"] for v in misaligned.values()])
    assert f > m + 0.2
    for target, v in washed.items():
        assert abs(v["generated_mean"] - 150) < 6 and abs(v["generated_std"] - 35) < 6, target
        assert v["generated_mean"] > v["original_mean"] + 30 and v["generated_std"] < v["original_std"]
    assert all(v["images"] == 4 for v in faithful.values())


def test_block_majority() -> None:
    mask = np.zeros((16, 16), np.uint8)
    mask[:8, :8] = 3
    mask[:8, :3] = 255  # minority ignore does not win
    mask[8:, 8:] = 255  # a tile of ignore stays ignore
    mask[8:, :8] = 5
    mask[8:10, :8] = 6
    out = block_majority(mask, 8, 19)
    assert out.tolist() == [[3, 0], [5, 255]]


def test_consistency_of_an_identity_generator(tiny_benchmark: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Generated == original: the two predictions agree everywhere and semantic equals original."""
    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    with (root / "generated/faithful/manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[:3]
    folder = root / "generated/identity"
    folder.mkdir()
    with (folder / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows([{**r, "generated_path": r["original_path"]} for r in rows])
    torch.manual_seed(0)
    model = build_network("unet_micro", 19)
    save_checkpoint(tmp_path / "m.pt", {"model": {"name": "unet_micro", "num_classes": 19,
                                                  "class_set": "cityscapes19"}, "state_dict": model.state_dict()})
    assert main(["consistency", str(folder / "manifest.csv"), "--model", str(tmp_path / "m.pt"), "--json",
                 "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)["identity"]["cloudy"]
    assert report["images"] == 3
    assert report["agreement_pixel"] == 1.0 and report["layout_agreement_8_pixel"] == 1.0
    assert report["semantic_mIoU"] == pytest.approx(report["original_mIoU"])


def test_stats_equal_a_direct_per_image_computation(tiny_benchmark: Path) -> None:
    from proveseg.data.decode import decode_image, decode_label
    from proveseg.data.manifest import validate_manifest
    from proveseg.evaluate.imagestats import boundary_band, edge_alignment, generator_stats

    records = validate_manifest(tiny_benchmark / "generated/faithful/manifest.csv").records
    stats = generator_stats(records)["faithful"]
    for domain, s in stats.items():
        rows = [records.row(i) for i in np.flatnonzero(records.domain == domain).tolist()]
        diffs, gen_align, orig_align = [], [], []
        for r in rows:  # each original decoded again per row: what the grouped computation must equal
            gen, orig = decode_image(r["image"]).astype(np.float32), decode_image(r["origin"]).astype(np.float32)
            band = boundary_band(decode_label(r["label"], None))
            diffs.append(float(np.abs(gen - orig).mean()))
            gen_align.append(edge_alignment(gen, band))
            orig_align.append(edge_alignment(orig, band))
        assert s["images"] == len(rows)
        assert s["mean_abs_diff"] == pytest.approx(float(np.mean(diffs)), rel=1e-12)
        assert s["layout_score"] == pytest.approx(float(np.mean(gen_align) / np.mean(orig_align)), rel=1e-12)


def test_stats_draw_label_boundaries_between_class_ids_through_the_label_map(tiny_benchmark: Path) -> None:
    from proveseg.data.decode import decode_image, decode_label
    from proveseg.data.labelmap import LabelMap
    from proveseg.data.manifest import validate_manifest
    from proveseg.evaluate.imagestats import boundary_band, edge_alignment, generator_stats

    merged = LabelMap.from_pairs({i: i % 2 for i in range(19)}, "test map")  # 19 classes into 2
    records = validate_manifest(tiny_benchmark / "generated/faithful/manifest.csv").records
    mapped = generator_stats(records.with_label_map("faithful", merged))["faithful"]
    raw = generator_stats(records)["faithful"]
    for domain, s in mapped.items():
        rows = [records.row(i) for i in np.flatnonzero(records.domain == domain).tolist()]
        gen_align, orig_align = [], []
        for r in rows:
            gen, orig = decode_image(r["image"]).astype(np.float32), decode_image(r["origin"]).astype(np.float32)
            band = boundary_band(decode_label(r["label"], None, label_map=merged))
            gen_align.append(edge_alignment(gen, band))
            orig_align.append(edge_alignment(orig, band))
        assert s["layout_score"] == pytest.approx(float(np.mean(gen_align) / np.mean(orig_align)), rel=1e-12)
    assert any(mapped[d]["layout_score"] != raw[d]["layout_score"] for d in mapped)  # the map did change the band
