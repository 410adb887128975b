"""MMEngine: the plugin named in custom_imports gives exact 1+1 batches, resumes by position, and a ranked run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mmengine")

from proveseg.study.audit import audit_target
from proveseg.study.leaderboard import build_leaderboard
from tests.integrations.conftest import run_dir
from tests.integrations.mm_parts import Stopped
from tests.integrations.mm_run import run, write_config

ROOT = Path(__file__).resolve().parents[2]


def _composition(results: Path) -> dict:
    return json.loads((run_dir(results) / "composition.json").read_text())


def test_mmengine_run_is_exact_resumes_mid_epoch_and_is_ranked(tiny_benchmark: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tmp_path / "whole"
    run(write_config(tiny_benchmark, whole, tmp_path / "work_whole"))
    doc = _composition(whole)
    assert doc["matches_request"], doc["problems"]
    assert doc["consumed"]["per_batch_distinct"] == [[1, 1, 0, 0]] and doc["consumed"]["batches"] == 6
    assert doc["consumed"]["iterations"] == 6 and "# trainer: mmengine" in (run_dir(whole) / "run.yaml").read_text()

    stopped = tmp_path / "stopped"
    work = tmp_path / "work_stopped"
    with pytest.raises(Stopped):
        run(write_config(tiny_benchmark, stopped, work, extra_hooks=[{"type": "StopAt", "iteration": 6}]))
    assert _composition(stopped)["consumed"]["batches"] == 4  # written with the checkpoint at iteration 4
    # mmengine 0.10.7 loads its own checkpoints (HistoryBuffer, numpy) with torch.load's default, which torch >= 2.6
    # makes weights_only (open-mmlab/mmengine#1655); proveseg's record in it is plain tensors and containers
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run(write_config(tiny_benchmark, stopped, work), resume_from=work / "iter_4.pth")
    again = _composition(stopped)
    assert again["consumed"]["sequence_sha256"] == doc["consumed"]["sequence_sha256"]
    assert again["consumed"]["per_source"] == doc["consumed"]["per_source"] and again["matches_request"]

    assert audit_target(run_dir(whole))["counts"]["verified"] == 1
    board = build_leaderboard(whole, "stage1", n_boot=50)
    assert [r["strategy"] for r in board["rows"]] == ["gen_faithful"] and board["invalid"] == [], board


def test_mmengine_two_processes_get_equal_compositions(tiny_benchmark: Path, tmp_path: Path) -> None:
    results, work = tmp_path / "results", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "tests/integrations/mm_run.py"), str(tiny_benchmark), str(results), str(work)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _composition(results)
    assert doc["requested"]["world_size"] == 2 and doc["matches_request"], doc["problems"]
    assert doc["consumed"]["per_batch_distinct"] == [[2, 2, 0, 0]]  # each rank 1+1, summed over the 2 ranks
    assert doc["consumed"]["samples"] == 6 * 2 * 2 and doc["consumed"]["per_kind"]["generated"] == 12
    assert audit_target(run_dir(results))["counts"]["verified"] == 1


def test_the_noise_control_needs_proveseg_s_loader(tiny_benchmark: Path, tmp_path: Path) -> None:
    from proveseg.integrations.mmengine import ProvesegDataset
    from tests.integrations.conftest import make_run_config

    cfg = make_run_config(tiny_benchmark, tmp_path).model_dump(mode="json")
    cfg["strategy"], cfg["data"]["noise"] = "gen_random_noise", {"reference": "faithful"}
    with pytest.raises(ValueError, match="must start with dict\\(type='LoadProvesegSample'\\)"):
        ProvesegDataset(cfg, pipeline=[{"type": "PackTiny"}])
    dataset = ProvesegDataset(cfg, pipeline=[{"type": "LoadProvesegSample"}])
    noise = int(next(i for i, k in enumerate(dataset.mixed.records.kind.tolist()) if k == "noise"))
    sample = dataset[(noise, 0)]
    assert sample["kind"] == "noise" and sample["img"].shape == (64, 128, 3) and sample["gt_seg_map"].shape == (64, 128)
    assert not (sample["img"] == dataset[(noise, 1)]["img"]).all()  # a fresh draw per pass


def test_the_loader_maps_labels_through_the_sources_label_map(tiny_benchmark: Path, tmp_path: Path) -> None:
    from proveseg.data.decode import decode_label
    from proveseg.integrations.mmengine import ProvesegDataset
    from tests.integrations.conftest import make_run_config

    cfg = make_run_config(tiny_benchmark, tmp_path).model_dump(mode="json")
    (tmp_path / "map.csv").write_text("source,target\n" + "".join(f"{i},{18 - i}\n" for i in range(19)))
    cfg["data"]["real"][0]["label_map"] = str(tmp_path / "map.csv")
    dataset = ProvesegDataset(cfg, pipeline=[{"type": "LoadProvesegSample"}])
    real = int(next(i for i, k in enumerate(dataset.mixed.records.kind.tolist()) if k == "real"))
    sample = dataset[(real, 0)]
    raw = decode_label(str(dataset.mixed.records.label[real]), None)
    keep = raw != 255
    assert (sample["gt_seg_map"][keep] == 18 - raw[keep]).all()  # the map, not the raw ids
