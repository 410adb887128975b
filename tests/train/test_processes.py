"""Signals, killed writes and DDP: behaviour of real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from proveseg.checkpoint import load_checkpoint
from proveseg.cli import PREEMPTED_EXIT
from proveseg.rundir import RunDir
from tests.train.conftest import make_config

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}


def _write(cfg, path: Path) -> Path:  # type: ignore[no-untyped-def]
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    return path


def test_sigterm_mid_run_leaves_a_loadable_checkpoint_and_resume_finishes(tiny_benchmark: Path,
                                                                          tmp_path: Path) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "run", max_iters=40, eval_interval=40, checkpoint_interval=1000)
    path = _write(cfg, tmp_path / "run.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "proveseg.cli", "train", str(path)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = cfg.output_dir / "log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.read_text().strip()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, err.decode()[-2000:]
    state = load_checkpoint(cfg.output_dir / "checkpoints/last.pt")
    stopped = state["iteration"]
    assert 1 <= stopped < 40
    assert RunDir(cfg.output_dir).status()[1].startswith(f"preempted at iteration {stopped}")
    done = subprocess.run([sys.executable, "-m", "proveseg.cli", "train", str(path), "--resume"], env=ENV,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert RunDir(cfg.output_dir).status()[0] == "done"
    comp = json.loads((cfg.output_dir / "composition.json").read_text())
    assert comp["consumed"]["batches"] == 40 and comp["matches_request"]


WRITER = """
import sys, torch
from proveseg.checkpoint import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint(sys.argv[1], {"model": {"name": "x"}, "iteration": i, "blob": torch.full((12_000_000,), float(i))})
    print(i, flush=True)
"""


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one_loadable(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = int(proc.stdout.readline())  # one complete checkpoint exists
    time.sleep(0.15)  # now, most likely, in the middle of writing the next one
    proc.kill()
    proc.wait()
    proc.stdout.close()
    state = load_checkpoint(target)
    assert state["iteration"] >= first
    assert torch.equal(state["blob"][:3], torch.full((3,), float(state["iteration"])))


def _torchrun_train(config: Path, port: int) -> None:
    """``proveseg train`` in two CPU processes (gloo) under torchrun; fails the test on a non-zero exit."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "proveseg.cli", "train", str(config)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]


def test_two_process_ddp_on_cpu(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = make_config(tiny_benchmark, tmp_path / "ddp", max_iters=4, eval_interval=2)
    _torchrun_train(_write(cfg, tmp_path / "ddp.yaml"), port=29517)
    comp = json.loads((cfg.output_dir / "composition.json").read_text())
    assert comp["requested"]["world_size"] == 2
    assert comp["consumed"]["per_batch_distinct"] == [[4, 4, 0, 0]]  # 2 real + 2 generated on each rank
    assert comp["matches_request"]
    best = load_checkpoint(cfg.output_dir / "checkpoints/best.pt")
    single = subprocess.run([sys.executable, "-m", "proveseg.cli", "evaluate", str(cfg.output_dir), "--split", "val",
                             "--out", str(tmp_path / "single"), "--json", "--device", "cpu"],
                            env=ENV, capture_output=True, timeout=300)
    assert single.returncode == 0, single.stderr.decode()[-2000:]
    assert json.loads(single.stdout)["mIoU"] == pytest.approx(best["metric"]["mIoU"], abs=1e-12)


def test_two_process_ddp_selftrain_on_cpu(tiny_benchmark: Path, tmp_path: Path) -> None:
    from tests.train.test_selftrain import _selftrain_config

    cfg = _selftrain_config(tiny_benchmark, tmp_path / "st", max_iters=4)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"batch_size": 8})})
    _torchrun_train(_write(cfg, tmp_path / "st.yaml"), port=29518)
    comp = json.loads((cfg.output_dir / "composition.json").read_text())
    assert comp["requested"]["world_size"] == 2 and comp["matches_request"]
    # 4 unlabeled per rank per step (share 0.5 of 8), 4 steps, counted over both ranks
    assert comp["consumed"]["per_kind"] == {"real": 32, "generated": 0, "noise": 0, "unlabeled": 32}
    steps = [json.loads(x) for x in (cfg.output_dir / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(steps) == 4 and all("st" in s and len(s["thresholds"]) == 19 for s in steps)  # pseudo-label loss ran


def test_every_ddp_rank_stops_when_the_run_directory_is_held_or_taken(tiny_benchmark: Path, tmp_path: Path) -> None:
    """Rank 0 decides for the run (lock, existing run); the other ranks stop the same way instead of hanging in
    a collective rank 0 never joins, or refusing the run rank 0 has just opened."""
    from proveseg.rundir import RunLock

    cfg = make_config(tiny_benchmark, tmp_path / "held", max_iters=2, eval_interval=2)
    config = _write(cfg, tmp_path / "held.yaml")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
               "-m", "proveseg.cli", "train", str(config)]
    with RunLock(cfg.output_dir).acquire():  # another process holds the run directory
        held = subprocess.run(command, env=ENV, capture_output=True, timeout=300)
    assert held.returncode != 0 and not (cfg.output_dir / "log.jsonl").exists()
    assert held.stderr.decode().count("skipped:") == 2, held.stderr.decode()[-3000:]  # each rank, told by rank 0
    fresh = subprocess.run(command, env=ENV, capture_output=True, timeout=300)  # both ranks start the run once
    assert fresh.returncode == 0, fresh.stderr.decode()[-3000:]
    assert json.loads((cfg.output_dir / "composition.json").read_text())["matches_request"]
