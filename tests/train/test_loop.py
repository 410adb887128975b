"""Trainer behaviour: composition proof, exact resume, refusals, early stopping, run directory."""

from __future__ import annotations

import json

import pytest
import torch

from proveseg import __version__
from proveseg.checkpoint import load_checkpoint
from proveseg.config import ClassSetSpec, ConfigError, RunConfig, load_run_config
from proveseg.data.classes import CITYSCAPES19
from proveseg.rundir import RunDir
from proveseg.train.loop import Preempted, ResumeRefused, resolve_class_set_in, train


def _weights(path) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return load_checkpoint(path)["state_dict"]


def test_half_ratio_run_consumed_exactly_half_generated_and_wrote_the_run_dir(config_factory) -> None:  # type: ignore[no-untyped-def]
    cfg: RunConfig = config_factory()
    result = train(cfg)
    run = RunDir(cfg.output_dir)
    assert run.status() == ("done", "6 iterations")
    comp = json.loads((cfg.output_dir / "composition.json").read_text())
    assert comp["matches_request"] and comp["problems"] == []
    assert comp["consumed"]["per_kind"] == {"real": 12, "generated": 12, "noise": 0, "unlabeled": 0}
    assert comp["consumed"]["per_batch_distinct"] == [[2, 2, 0, 0]]
    assert comp["consumed"]["sequence_sha256"] == result.sequence_sha256
    metrics = json.loads((cfg.output_dir / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["strategy"] == "gen_faithful"
    assert (cfg.output_dir / "confusion.npz").exists() and run.best.exists() and run.last.exists()
    run_yaml = (cfg.output_dir / "run.yaml").read_text()
    assert f"# proveseg: {__version__}\n" in run_yaml  # the code version, always
    saved = load_run_config(cfg.output_dir / "run.yaml")  # the fully resolved config, loadable as is
    assert saved == resolve_class_set_in(cfg) and saved.data.class_set != cfg.data.class_set
    assert isinstance(saved.data.class_set, ClassSetSpec)  # the class set travels whole, not as a name
    assert saved.data.class_set.names == list(CITYSCAPES19.names) and saved.data.class_set.ignore_index == 255
    lines = [json.loads(x) for x in (cfg.output_dir / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines if "loss" in x] == [1, 2, 3, 4, 5, 6]
    assert [x["iteration"] for x in lines if "eval" in x] == [3, 6]


def test_stop_at_k_and_resume_is_bit_identical(config_factory) -> None:  # type: ignore[no-untyped-def]
    full_cfg: RunConfig = config_factory("full", ema={"decay": 0.5})
    full = train(full_cfg)
    cfg: RunConfig = config_factory("resumed", ema={"decay": 0.5})
    with pytest.raises(Preempted):
        train(cfg, stop_after=4)
    assert RunDir(cfg.output_dir).status()[0] == "failed"
    assert load_checkpoint(cfg.output_dir / "checkpoints/last.pt")["iteration"] == 4
    resumed = train(cfg, resume=True)
    assert resumed.sequence_sha256 == full.sequence_sha256
    a, b = _weights(full_cfg.output_dir / "checkpoints/last.pt"), _weights(cfg.output_dir / "checkpoints/last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea = load_checkpoint(full_cfg.output_dir / "checkpoints/last.pt")["ema"]
    eb = load_checkpoint(cfg.output_dir / "checkpoints/last.pt")["ema"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    log = [json.loads(x) for x in (cfg.output_dir / "log.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in log if "loss" in x] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_config(config_factory) -> None:  # type: ignore[no-untyped-def]
    cfg: RunConfig = config_factory("changed")
    with pytest.raises(Preempted):
        train(cfg, stop_after=2)
    changed = cfg.model_copy(update={"train": cfg.train.model_copy(update={"grad_clip": 1.0})})
    with pytest.raises(ResumeRefused, match=r"resolved run config \(train.grad_clip: null expected, 1.0 found\)"):
        train(changed, resume=True)
    assert load_checkpoint(cfg.output_dir / "checkpoints/last.pt")["iteration"] == 2  # nothing lost
    assert RunDir(cfg.output_dir).status()[0] == "failed"  # still the preempted run, resumable
    # how the run executes (threads, device, workers) may change on resume: the result does not depend on it
    other_threads = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_threads": 2})})
    assert train(other_threads, resume=True).iterations == 6


def test_resume_refuses_changed_manifest(config_factory, tiny_benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    root = tmp_path / "bench"
    shutil.copytree(tiny_benchmark, root)
    from tests.train.conftest import make_config

    cfg = make_config(root, tmp_path / "m")
    with pytest.raises(Preempted):
        train(cfg, stop_after=2)
    manifest = root / "generated/faithful/manifest.csv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-1]) + "\n")  # one generated row fewer
    with pytest.raises(ResumeRefused, match="records of source generated/faithful"):
        train(cfg, resume=True)


def test_fresh_train_into_an_existing_run_is_refused(config_factory) -> None:  # type: ignore[no-untyped-def]
    cfg: RunConfig = config_factory("twice", max_iters=2, eval_interval=2)
    train(cfg)
    with pytest.raises(ResumeRefused, match="already holds a run"):
        train(cfg)
    assert RunDir(cfg.output_dir).status()[0] == "done"  # the refused call does not touch the finished run


def test_empty_generated_group_fails_before_training(config_factory) -> None:  # type: ignore[no-untyped-def]
    cfg: RunConfig = config_factory("empty")
    data = cfg.data.model_copy(update={"generated": []})
    with pytest.raises(ConfigError, match=r"strategy .gen_faithful. needs generated data for its share 0\.5"):
        train(cfg.model_copy(update={"data": data}))  # the strategy knows what its runs plan
    with pytest.raises(ConfigError, match="strategy 'custom' needs generated data"):  # its shares come from the config
        train(cfg.model_copy(update={"data": data, "strategy": "custom"}))
    assert not (cfg.output_dir / "checkpoints").exists()


def _expected_stop(values: list[float], patience: int) -> int | None:
    best, bad = float("-inf"), 0
    for i, v in enumerate(values):
        best, bad = (v, 0) if v > best else (best, bad + 1)
        if bad >= patience:
            return i
    return None


def test_early_stopping_stops_at_the_right_evaluation(config_factory) -> None:  # type: ignore[no-untyped-def]
    cfg: RunConfig = config_factory("early", max_iters=40, eval_interval=2, optimizer={"lr": 1e-9},
                                    schedule={"policy": "constant"},
                                    early_stopping={"patience": 2, "min_iters": 0})
    result = train(cfg)
    evals = [json.loads(x) for x in (cfg.output_dir / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    stop = _expected_stop([e["eval"]["mIoU"] for e in evals], patience=2)
    assert stop is not None and result.stopped_early
    assert len(evals) == stop + 1 and result.iterations == 2 * (stop + 1) < 40
    assert [e["early_stop"] for e in evals] == [False] * stop + [True]
    assert RunDir(cfg.output_dir).status()[1].endswith("(early stop)")
    comp = json.loads((cfg.output_dir / "composition.json").read_text())
    assert comp["consumed"]["batches"] == result.iterations and comp["matches_request"]


def test_min_iters_delays_early_stopping(config_factory) -> None:  # type: ignore[no-untyped-def]
    cfg: RunConfig = config_factory("minit", max_iters=12, eval_interval=2, optimizer={"lr": 1e-9},
                                    schedule={"policy": "constant"},
                                    early_stopping={"patience": 1, "min_iters": 8})
    result = train(cfg)
    evals = [json.loads(x) for x in (cfg.output_dir / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert all(not e["early_stop"] for e in evals if e["iteration"] < 8)
    assert result.iterations >= 8


def test_two_loader_workers_train_bit_identically_to_none(config_factory) -> None:  # type: ignore[no-untyped-def]
    """Worker batches come through reused shared memory (data/shmpool.py): the same samples, the same weights."""
    plain: RunConfig = config_factory("plain", max_iters=8, eval_interval=100)
    pooled: RunConfig = config_factory("pooled", max_iters=8, eval_interval=100)
    pooled = pooled.model_copy(update={"data": pooled.data.model_copy(update={"num_workers": 2})})
    a, b = train(plain), train(pooled)
    assert a.sequence_sha256 == b.sequence_sha256
    wa, wb = _weights(plain.output_dir / "checkpoints/last.pt"), _weights(pooled.output_dir / "checkpoints/last.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
