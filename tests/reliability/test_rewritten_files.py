"""Files rewritten in place (same paths, new contents): a resume refuses, the audit calls the run stale."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from proveseg.data.filecheck import file_fingerprint
from proveseg.data.records import RecordTable
from proveseg.study.audit import audit_run
from proveseg.train.loop import Preempted, train
from proveseg.train.state import ResumeRefused
from tests.train.conftest import make_config


def _regenerate(bench: Path) -> None:
    """A generator re-run into the same folder: every generated image replaced by its original's bytes."""
    manifest = bench / "generated/faithful/manifest.csv"
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            shutil.copyfile(manifest.parent / row["original_path"] if not Path(row["original_path"]).is_absolute()
                            else row["original_path"], manifest.parent / row["generated_path"])


def _copy_bench(tiny_benchmark: Path, tmp_path: Path) -> Path:
    bench = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, bench)
    return bench


def test_the_fingerprint_follows_sizes_not_paths_alone(tiny_benchmark: Path, tmp_path: Path) -> None:
    bench = _copy_bench(tiny_benchmark, tmp_path)
    images = sorted(str(p) for p in (bench / "train").rglob("*.jpg"))
    table = RecordTable.from_columns({"image": images, "label": "", "dataset": "d", "domain": "x",
                                      "kind": "unlabeled", "source": "s", "origin": ""}, n=len(images))
    before = file_fingerprint(table)
    assert file_fingerprint(table) == before
    Path(images[0]).write_bytes(Path(images[0]).read_bytes() + b"\0")  # one more byte
    assert file_fingerprint(table) != before
    Path(images[0]).unlink()
    assert file_fingerprint(table) != before


def test_a_resume_after_files_were_rewritten_in_place_is_refused(tiny_benchmark: Path, tmp_path: Path) -> None:
    bench = _copy_bench(tiny_benchmark, tmp_path)
    cfg = make_config(bench, tmp_path / "run", max_iters=4)
    with pytest.raises(Preempted):
        train(cfg, stop_after=2)
    _regenerate(bench)
    with pytest.raises(ResumeRefused, match=r"the files of source generated/faithful \(same paths, other sizes"):
        train(cfg, resume=True)


def test_files_rewritten_after_training_make_the_run_stale(tiny_benchmark: Path, tmp_path: Path) -> None:
    bench = _copy_bench(tiny_benchmark, tmp_path)
    cfg = make_config(bench, tmp_path / "run", max_iters=2, eval_interval=100)
    train(cfg)
    assert audit_run(cfg.output_dir).verdict == "verified"
    _regenerate(bench)
    result = audit_run(cfg.output_dir)
    assert result.verdict == "stale"
    assert result.reasons[0].startswith("the files of source generated/faithful changed since training")
