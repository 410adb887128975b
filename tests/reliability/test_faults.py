"""Cases 3-12: preemption, changed inputs on resume, concurrent writers, malicious files, bad labels,
empty groups, disk full, escaping paths; each asserts the error and that nothing written was lost."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from proveseg.checkpoint import CheckpointError, load_checkpoint
from proveseg.config import ConfigError, DataConfig, load_run_config
from proveseg.data.decode import LabelDecodeError
from proveseg.data.pipeline import LabelPreflightError, build_training_data
from proveseg.data.plan import PlanError
from proveseg.rundir import RunDir
from proveseg.study.leaderboard import build_leaderboard
from proveseg.study.spec import load_study
from proveseg.train.loop import Preempted, ResumeRefused, train
from proveseg.train.state import refusal
from tests.train.conftest import make_config

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}


def test_sigusr2_preemption_checkpoints_and_resume_continues(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=30, eval_interval=100, checkpoint_interval=1000)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    proc = subprocess.Popen([sys.executable, "-m", "proveseg.cli", "train", str(path)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = cfg.output_dir / "log.jsonl"
    while proc.poll() is None and not (log.exists() and log.read_text().strip()):
        time.sleep(0.01)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=120) == 3
    stopped = load_checkpoint(cfg.output_dir / "checkpoints/last.pt")["iteration"]
    assert RunDir(cfg.output_dir).status() == ("failed", f"preempted at iteration {stopped}: last.pt saved, "
                                                         "resume with --resume")
    train(load_run_config(path), resume=True)
    assert RunDir(cfg.output_dir).status()[0] == "done"


def test_resume_with_another_class_set_or_world_size_is_refused(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=4)
    with pytest.raises(Preempted):
        train(cfg, stop_after=2)
    saved = load_checkpoint(cfg.output_dir / "checkpoints/last.pt")["fingerprint"]
    assert refusal(saved, {**saved, "class_set": [*saved["class_set"][:-1], "tram"]}) == "the class set"
    assert refusal(saved, {**saved, "world_size": 2}) == "the world size (1 -> 2)"
    table = tmp_path / "classes.csv"
    table.write_text("id,name,r,g,b\n" + "".join(f"{i},c{i},{i},0,0\n" for i in range(19)))
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"class_set": str(table)})})
    with pytest.raises(ResumeRefused, match="class set"):
        train(other, resume=True)
    assert load_checkpoint(cfg.output_dir / "checkpoints/last.pt")["iteration"] == 2


WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from tests.study.test_leaderboard import fake_run
root, k = Path(sys.argv[2]), int(sys.argv[3])
for seed in range(3):
    fake_run(root, "stage1", ["baseline", "gen_a", "gen_b", "gen_c"][k], seed, [0.3, 0.2, 0.25, 0.35][k])
"""


def test_many_writers_under_one_results_root(tmp_path: Path) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, repo, str(tmp_path), str(k)], env=ENV)
             for k in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    runs = sorted(tmp_path.glob("stage1/*/synthetic/*"))
    assert len(runs) == 12
    for run in runs:
        json.loads((run / "metrics.json").read_text())
        json.loads((run / "composition.json").read_text())
        with np.load(run / "confusion.npz", allow_pickle=False) as z:
            assert z["per_image"].shape[0] == 30
        assert not list(run.glob(".*.tmp"))
    first = json.dumps(build_leaderboard(tmp_path, "stage1", n_boot=100), sort_keys=True)
    assert json.dumps(build_leaderboard(tmp_path, "stage1", n_boot=100), sort_keys=True) == first


def test_pickle_payloads_and_python_yaml_tags_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "evil.pt"
    ckpt.write_bytes(pickle.dumps({"format": 1, "model": Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(ckpt)
    for name, loader in (("run.yaml", load_run_config), ("study.yaml", load_study)):
        bad = tmp_path / name
        bad.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
        with pytest.raises(ConfigError, match="not valid YAML"):
            loader(bad)
    assert not marker.exists()


def _data(root: Path, **over: object) -> DataConfig:
    return DataConfig.model_validate({"real": [{"name": "r", "root": str(root)}], "batch_size": 2, **over})


def _write_pair(root: Path, name: str, label: np.ndarray) -> None:
    (root / "images/fog").mkdir(parents=True, exist_ok=True)
    (root / "labels/fog").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*label.shape, 3), np.uint8)).save(root / f"images/fog/{name}.jpg")
    Image.fromarray(label).save(root / f"labels/fog/{name}.png")


def test_out_of_range_labels_and_binary_255_masks_fail_before_training(tmp_path: Path) -> None:
    _write_pair(tmp_path / "a", "x", np.full((8, 8), 30, np.uint8))
    with pytest.raises(LabelDecodeError, match=r"labels/fog/x\.png: label values \[30\]"):
        build_training_data(_data(tmp_path / "a"))
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5] = 255
    _write_pair(tmp_path / "b", "y", mask)
    table = tmp_path / "binary.csv"
    table.write_text("id,name,r,g,b\n0,background,0,0,0\n1,crack,255,255,255\n")
    with pytest.raises(LabelPreflightError, match="hold only 0 and 255"):
        build_training_data(_data(tmp_path / "b", class_set=str(table)))


def test_generated_group_whose_files_all_fail_validation_refuses(tiny_benchmark: Path, tmp_path: Path) -> None:
    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    for jpg in (root / "generated/faithful").glob("*/*.jpg"):
        jpg.write_bytes(b"")
    gen = [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv"), "on_invalid": "skip"}]
    cfg = _data(root / "train", generated=gen, real_gen_ratio=0.5)
    with pytest.raises(PlanError, match=r"group 'generated' has share 0\.5 but no samples"):
        build_training_data(cfg)


def test_disk_full_while_writing_results(tiny_benchmark: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import proveseg.evaluate.runner as runner

    def full(path: object, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner, "atomic_write_bytes", full)
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=2, eval_interval=100)
    with pytest.raises(OSError, match="No space left"):
        train(cfg)
    state, reason = RunDir(cfg.output_dir).status()
    assert state == "failed" and "No space left on device" in reason
    assert not (cfg.output_dir / "metrics.json").exists()
    assert json.loads((cfg.output_dir / "composition.json").read_text())["matches_request"]
    assert load_checkpoint(cfg.output_dir / "checkpoints/last.pt")["iteration"] == 2
