"""The iteration-based trainer. Every strategy runs this same loop; strategies differ only in data.

What a run consumed is counted from the batches the loop received (``ConsumptionAudit``), and a
chained SHA-256 over every batch's sample ids proves the exact sequence. At the end the
consumption is compared with the request and with the strategy's proof rule; a run that fails
either ends as failed and writes no metrics. The state lives in :class:`TrainState`, one
optimisation step is :func:`train_step`, and the model adapter owns loss and inference.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from proveseg.checkpoint import load_checkpoint, save_checkpoint
from proveseg.config import ClassSetSpec, ConfigError, RunConfig, dump_config
from proveseg.data.audit import CompositionMismatch
from proveseg.data.classes import resolve_class_set
from proveseg.data.filecheck import refuse_unusable_files
from proveseg.data.overlap import split_overlap
from proveseg.data.pipeline import TrainingData, build_training_data, preflight_labels
from proveseg.data.records import RecordTable
from proveseg.evaluate.metrics import domain_summary
from proveseg.evaluate.runner import evaluate_model, evaluation_protocol, load_split, write_results
from proveseg.models import SegmentationModel, build_model
from proveseg.rundir import RunDir, RunLock, RunLocked, code_version, file_sha256
from proveseg.strategies import Strategy, parse_strategy
from proveseg.train.state import ResumeRefused, TrainState, fingerprint, restore_rng, rng_state
from proveseg.train.step import Diverged, StepLog, StepOptions, train_step

__all__ = ["Diverged", "Preempted", "ResumeRefused", "RunLocked", "TrainResult", "resolve_class_set_in", "train"]


class Preempted(RuntimeError):
    """Training stopped at a step boundary after SIGTERM/SIGUSR2 (or a requested stop); last.pt is saved."""

    signum: int | None = None  # the signal that asked for the stop (None: a requested stop, or another rank's)


@dataclass
class TrainResult:
    iterations: int
    stopped_early: bool
    best: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] | None = None
    sequence_sha256: str = ""


@dataclass
class Session:
    """What one training process works with and never changes during the run."""

    cfg: RunConfig
    run: RunDir
    data: TrainingData
    strategy: Strategy
    device: torch.device
    rank: int = 0
    world: int = 1
    val_records: RecordTable | None = None
    test_records: RecordTable | None = None
    tensorboard: Any = None  # a proveseg.train.tensorboard.TensorBoardWriter when train.tensorboard is on

    @property
    def writer(self) -> bool:
        return self.rank == 0


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_class_set_in(cfg: RunConfig) -> RunConfig:
    """The config with its class set written out whole (a name or a table file becomes the set itself)."""
    spec = ClassSetSpec.model_validate(resolve_class_set(cfg.data.class_set).to_dict())
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"class_set": spec})})


def train(cfg: RunConfig, resume: bool = False, stop_after: int | None = None, progress: bool = False) -> TrainResult:
    """Train one run into ``cfg.output_dir``; see the module docstring for what it proves."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = _device(cfg.train.device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    run = RunDir(cfg.output_dir)
    if run.root.exists() and not run.root.is_dir():
        raise ConfigError(f"output_dir {run.root} is a file, not a folder")
    lock = RunLock(run.root)
    try:
        # one writer per run directory: rank 0 takes the lock and checks the directory before anyone writes, and
        # every rank stops the same way (a rank checking on its own would see rank 0's "running" as another run's)
        _agree(rank, world, lambda: _may_start(lock, run, resume))
        session, state = _prepare(cfg, run, resume, device, rank, world)
        return _train(session, state, stop_after, progress)
    except (Preempted, RunLocked, ResumeRefused):  # the run directory is not this call's to mark failed
        raise
    except BaseException as exc:
        # only a run this call opened is marked failed: an error before that (a refusal, a missing source)
        # leaves a finished or interrupted run exactly as it was
        if rank == 0 and run.opened:
            run.set_status("failed", f"{type(exc).__name__}: {exc}".replace("\n", " "))
        raise
    finally:
        lock.release()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _may_start(lock: RunLock, run: RunDir, resume: bool) -> None:
    """Take the run directory's lock (RunLocked, touching nothing, if another process holds it) and refuse to
    start a fresh run over one that exists."""
    lock.acquire()
    if not resume and (run.last.exists() or run.status()[0] in ("done", "running")):
        raise ResumeRefused(f"{run.root} already holds a run ({run.status()[0]}); resume it with --resume "
                            "or choose another output_dir")


def _agree(rank: int, world: int, decide: Callable[[], None]) -> None:
    """Rank 0 runs ``decide``; under DDP every rank then raises the RunLocked / ResumeRefused rank 0 raised."""
    outcome: list[Exception | None] = [None]
    if rank == 0:
        try:
            decide()
        except (RunLocked, ResumeRefused) as exc:
            if world == 1:
                raise
            outcome = [exc]
    if world > 1:
        dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise outcome[0]


def _check_config(cfg: RunConfig) -> Strategy:
    """The run's strategy and model exist, and the config can produce the strategy's mix."""
    from proveseg.models.registry import MODELS, batch_problem

    try:
        strategy = parse_strategy(cfg.strategy)
    except ValueError as exc:
        raise ConfigError(f"{cfg.name}: {exc}") from None
    if cfg.model.name not in MODELS:
        raise ConfigError(f"{cfg.name}: model.name {cfg.model.name!r} is not in the registry; "
                          f"valid: {', '.join(MODELS)}")
    problem = batch_problem(cfg.model.name, cfg.data.batch_size) or strategy.plan_problem(cfg.data)
    if problem:
        raise ConfigError(f"{cfg.name}: {problem}")
    st, classes = cfg.train.selftrain, resolve_class_set(cfg.data.class_set).num_classes
    if st is not None and isinstance(st.threshold, dict) and max(st.threshold, default=0) >= classes:
        raise ConfigError(f"{cfg.name}: train.selftrain.threshold names class {max(st.threshold)}, but the class "
                          f"set has {classes} classes (ids 0..{classes - 1})")
    _check_device(cfg)
    return strategy


def _check_device(cfg: RunConfig) -> None:
    """Device-bound options that this machine (or this run's device) cannot honour, refused before training."""
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{cfg.name}: train.device {cfg.train.device!r}, but no CUDA device is available here")
    device = _device(cfg.train.device)
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"{cfg.name}: train.amp fp16 needs a CUDA device (this run trains on {device.type}): "
                          "use amp: bf16 or none")
    if cfg.data.decode_device == "cuda" and device.type != "cuda":
        raise ConfigError(f"{cfg.name}: data.decode_device cuda decodes JPEGs on the training GPU, but this run "
                          f"trains on {device.type}: use decode_device: cpu")


def _evaluation_sets(cfg: RunConfig, data: TrainingData) -> tuple[RecordTable | None, RecordTable | None]:
    """Validation and test records, read and checked now (every file's header, a sample of label values, no
    image shared with training or with each other): a bad test file fails before training, not after it."""
    out = []
    for what, sources in (("evaluation.val", cfg.evaluation.val), ("evaluation.test", cfg.evaluation.test)):
        records = load_split(sources) if sources else None
        if records is not None:
            refuse_unusable_files(records, what)
            preflight_labels(records, data.class_set)
        out.append(records)
    splits = [("training data", data.records), ("evaluation.val", out[0]), ("evaluation.test", out[1])]
    for (a_name, a), (b_name, b), why in ((splits[1], splits[2], "best.pt would be chosen on test images"),
                                         (splits[0], splits[2], "the model would be tested on images it trained on"),
                                         (splits[0], splits[1], "best.pt would be chosen on images it trained on")):
        problem = split_overlap(a, a_name, b, b_name) if a is not None and b is not None else None
        if problem:
            raise ConfigError(f"{cfg.name}: {problem}: {why}")
    return out[0], out[1]


def _preflight_step(state: TrainState, data: TrainingData) -> None:
    """One forward pass of the model at the per-rank batch size, in train mode, before any training.

    A model that cannot train on this batch (BatchNorm after global pooling with a batch of 1) fails
    here, naming the model and the batch, instead of at iteration 1. Weights, buffers and RNG are restored.
    """
    t = data.config.transforms
    h, w = t.crop or t.resize or (128, 128)
    h, w = -(-h // 32) * 32, -(-w // 32) * 32
    net, batch = state.model.network, data.spec.batch_size
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    try:
        net.train()
        with torch.no_grad():
            state.model.forward(net, torch.zeros(batch, 3, h, w, device=next(net.parameters()).device))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"model {state.model.name!r} cannot train on a per-rank batch of {batch} "
                          f"({h}x{w}): {str(exc).splitlines()[0]}") from None
    finally:
        net.load_state_dict(saved)
        torch.set_rng_state(rng)


def _open_run_dir(session: Session, state: TrainState) -> None:
    """Rank 0: stale temp files gone, the log of a discarded attempt gone, run.yaml and status written."""
    run = session.run
    run.create()
    run.opened = True
    run.remove_stale_temp_files()
    if state.iteration == 0:
        run.log_path.unlink(missing_ok=True)  # a start without a checkpoint starts over, its log too
    run.write_text("run.yaml", dump_config(session.cfg) + "# code version\n" + "".join(
        f"# {k}: {v}\n" for k, v in code_version().items()))
    run.set_status("running", f"resumed at iteration {state.iteration}" if state.iteration else "")
    if session.cfg.train.tensorboard:
        from proveseg.train.tensorboard import TensorBoardWriter

        session.tensorboard = TensorBoardWriter(run.root, state.iteration)


def _log(session: Session, state: TrainState, record: dict[str, Any]) -> None:
    """One log.jsonl line, mirrored to TensorBoard when it is on (log.jsonl stays the source of truth)."""
    session.run.log(record)
    if session.tensorboard is not None:
        session.tensorboard.write(record, state.audit.sources)


def _prepare(cfg: RunConfig, run: RunDir, resume: bool, device: torch.device, rank: int,
             world: int) -> tuple[Session, TrainState]:
    """Everything checked and built before the first step: strategy, data, state, resume, run directory."""
    cfg = resolve_class_set_in(cfg)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    strategy = _check_config(cfg)
    data = build_training_data(cfg.data, world)  # refuses empty groups etc. before any training
    val_records, test_records = _evaluation_sets(cfg, data)
    session = Session(cfg, run, data, strategy, device, rank, world, val_records, test_records)
    state = TrainState(cfg, data.class_set, len(data.records), device,
                       fingerprint(cfg, data.class_set, data.hashes, data.spec.world_size, data.file_prints))
    _preflight_step(state, data)
    if resume and run.last.exists():
        state.resume(run.last, device)
        if world > 1:
            _resume_rank(session, state)
        if session.writer:
            run.truncate_log(state.iteration)
    if session.writer:
        _open_run_dir(session, state)
    if world > 1:
        state.net = nn.parallel.DistributedDataParallel(state.model.network,
                                                        device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        state.net = torch.compile(state.net)  # type: ignore[assignment]
    return session, state


class _StopSignals:
    """SIGTERM/SIGUSR2/SIGINT ask for a stop at the next step boundary, never mid-step."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested, self.signum = True, signum

    def __enter__(self) -> _StopSignals:
        for s in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT):  # Ctrl-C too: last.pt, not a traceback
            self.previous[s] = signal.getsignal(s)
            signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class _StepLogger:
    """Writes a ``log.jsonl`` line every ``log_interval`` steps and moves the progress bar."""

    def __init__(self, session: Session, start: int, show: bool) -> None:
        self.session, self.tick = session, time.perf_counter()
        self.bar = Progress(TextColumn("iter"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[info]}"),
                            TimeRemainingColumn(), disable=not (show and session.writer), transient=False)
        self.task = self.bar.add_task("train", total=session.cfg.train.max_iters, completed=start, info="")

    def __call__(self, state: TrainState, log: StepLog) -> None:
        tc, it = self.session.cfg.train, state.iteration
        if not self.session.writer or not (it % tc.log_interval == 0 or it == tc.max_iters):
            return
        now = time.perf_counter()
        rate, self.tick = tc.log_interval / max(now - self.tick, 1e-9), now
        lr = state.optimizer.param_groups[0]["lr"]
        _log(self.session, state, {"iteration": it, "loss": log.loss, **log.parts, "lr": lr, "it_s": rate,
                                   "train_acc": log.train_acc, **log.extras})
        self.bar.update(self.task, completed=it, info=f"loss {log.loss:.3f} lr {lr:.2e} {rate:.2f} it/s")


def _train(session: Session, state: TrainState, stop_after: int | None, progress: bool) -> TrainResult:
    tc, run = session.cfg.train, session.run
    opts = StepOptions.from_config(tc, session.device)
    batches = iter(session.data.loader(state.iteration * opts.accum, tc.max_iters * opts.accum, session.rank,
                                       device=session.device))
    logger = _StepLogger(session, state.iteration, progress)
    stopped_early = False
    board = contextlib.closing(session.tensorboard) if session.tensorboard else contextlib.nullcontext()
    with _StopSignals() as stop, logger.bar, board:
        while state.iteration < tc.max_iters and not stopped_early:
            logger(state, train_step(state, batches, opts))
            it = state.iteration
            if session.val_records is not None and (it % tc.eval_interval == 0 or it == tc.max_iters):
                stopped_early = _validate(session, state)
            if it % tc.checkpoint_interval == 0 or it == tc.max_iters or stopped_early:
                _save_last(session, state)
            if not stopped_early and (_any_rank(session, stop.requested) or (stop_after is not None and
                                                                             it >= stop_after)):
                _save_last(session, state)
                if session.writer:
                    run.set_status("failed", f"preempted at iteration {it}: last.pt saved, resume with --resume")
                preempted = Preempted(f"stopped at iteration {it}; resume with --resume")
                preempted.signum = stop.signum
                raise preempted
    return _finish(session, state, stopped_early)


def _save_last(session: Session, state: TrainState) -> None:
    """Rank 0 writes ``last.pt``; under DDP it also holds every rank's audit and RNG, so each rank resumes its own
    (every rank calls this: the gather is collective)."""
    ranks: list[Any] = []
    if session.world > 1:
        ranks = [None] * session.world
        dist.all_gather_object(ranks, {"audit": state.audit.state_dict(), "rng": rng_state()})
    if session.writer:
        save_checkpoint(session.run.last, {**state.state_dict(), **({"ranks": ranks} if ranks else {})})


def _resume_rank(session: Session, state: TrainState) -> None:
    """Under DDP: this rank's own audit and RNG from ``last.pt`` (``state.resume`` restored rank 0's)."""
    ranks = load_checkpoint(session.run.last, torch.device("cpu")).get("ranks")
    if isinstance(ranks, list) and len(ranks) == session.world:
        state.audit.load_state_dict(ranks[session.rank]["audit"])
        restore_rng(ranks[session.rank]["rng"])


def _any_rank(session: Session, flag: bool) -> bool:
    """True on every rank when it is on one: all ranks stop after the same step (a signal reaches them apart)."""
    if session.world == 1:
        return flag
    tensor = torch.tensor([int(flag)], device=session.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _evaluate(session: Session, model: SegmentationModel) -> dict[str, Any]:
    """Validation mIoU overall and per domain; each rank takes every world-th image, then all-reduce."""
    records, world = session.val_records, session.world
    assert records is not None
    if world > 1:  # BatchNorm statistics drift apart per rank: evaluate rank 0's model (the one saved) everywhere
        for buffer in model.network.buffers():
            dist.broadcast(buffer, 0)
    mine = records.take(np.arange(session.rank, len(records), world)) if world > 1 else records
    result = evaluate_model(model, mine, session.data.class_set, session.cfg.evaluation, session.device)
    domains = sorted(set(records.domain.tolist()))
    c = session.data.class_set.num_classes
    per_domain = np.zeros((len(domains), c, c), np.int64)
    for conf, dom in zip(result.per_image, result.domains, strict=True):
        per_domain[domains.index(dom)] += conf
    if world > 1:
        tensor = torch.from_numpy(per_domain).to(session.device)
        dist.all_reduce(tensor)
        per_domain = tensor.cpu().numpy()
    return domain_summary(dict(zip(domains, per_domain, strict=True)))


def _validate(session: Session, state: TrainState) -> bool:
    """Evaluate raw (and EMA) weights, keep best.pt, and say whether early stopping fires."""
    tc, progress, it = session.cfg.train, state.progress, state.iteration
    raw = _evaluate(session, state.model)
    record: dict[str, Any] = {"iteration": it, "eval": raw}
    chosen = raw
    if state.ema is not None:
        chosen = record["eval_ema"] = _evaluate(session, state.result_model)
    value = float(chosen[tc.best_metric])
    if value > progress.best_value:
        progress.best_value, progress.best_iteration, progress.evals_without_improvement = value, it, 0
        if session.writer:
            state.save_weights(session.run.best, state.result_model, {
                "iteration": it, "metric": {tc.best_metric: value},
                "weights": "ema" if state.ema is not None else "raw", "sequence_sha256": progress.sequence})
    else:
        progress.evals_without_improvement += 1
    record["best"] = {"iteration": progress.best_iteration, tc.best_metric: progress.best_value}
    es = tc.early_stopping
    record["early_stop"] = es is not None and it >= es.min_iters and progress.evals_without_improvement >= es.patience
    if session.writer:
        _log(session, state, record)
    return bool(record["early_stop"])


def _composition(session: Session, state: TrainState) -> tuple[dict[str, Any], list[str]]:
    """The composition.json document and its problems: the request, then the strategy's proof rule."""
    from proveseg.api import composition_document  # one implementation for this loop and foreign trainers

    def all_reduce(array: np.ndarray) -> np.ndarray:  # the record covers every rank: counts and rows are summed
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(session.device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    return composition_document(session.data, state.audit, state.progress.sequence, state.iteration,
                                session.strategy, session.cfg.data, all_reduce)


def _finish(session: Session, state: TrainState, stopped_early: bool) -> TrainResult:
    """Compare consumption with the request, write composition.json, then (only if it matches) metrics."""
    cfg, run, progress = session.cfg, session.run, state.progress
    doc, problems = _composition(session, state)
    result = TrainResult(state.iteration, stopped_early, {"iteration": progress.best_iteration,
                                                          cfg.train.best_metric: progress.best_value},
                         None, progress.sequence)
    if not session.writer:
        return result
    if run.log_path.exists():  # the training curves the report plots: an edit after training is inconsistent
        doc["log_sha256"] = file_sha256(run.log_path)
    run.write_json("composition.json", doc)
    if problems:
        raise CompositionMismatch("consumed mix differs from the requested mix: " + "; ".join(problems[:3]))
    if not run.best.exists():  # no validation set: the final weights are the result
        state.save_weights(run.best, state.result_model, {"iteration": state.iteration,
                                                          "weights": "ema" if state.ema else "raw",
                                                          "sequence_sha256": progress.sequence})
    if cfg.evaluation.test:
        result.test_metrics = _test(session, run.best)
    run.set_status("done", f"{state.iteration} iterations" + (" (early stop)" if stopped_early else ""))
    return result


def _test(session: Session, best: Path) -> dict[str, Any]:
    """Evaluate ``best.pt`` on the test split; write metrics.json and confusion.npz."""
    cfg, class_set = session.cfg, session.data.class_set
    ckpt = load_checkpoint(best, session.device)
    model = build_model(cfg.model.name, class_set.num_classes).to(session.device)
    model.network.load_state_dict(ckpt["state_dict"])
    assert session.test_records is not None  # read (and checked) before training
    outcome = evaluate_model(model, session.test_records, class_set, cfg.evaluation, session.device)
    # which weights the numbers are of: chosen on validation data, or simply the last; never on the test set
    selection = "best_on_val" if session.val_records is not None else "final"
    return write_results(session.run.root, outcome, class_set, cfg.evaluation.n_boot, int(ckpt["iteration"]),
                         {"split": "test", "checkpoint": str(best), "weights_sha256": file_sha256(best),
                          "protocol": evaluation_protocol(cfg.evaluation),
                          "model": cfg.model.name, "strategy": cfg.strategy,
                          "selection": selection, "selection_metric": cfg.train.best_metric if session.val_records
                          is not None else None, "weights": ckpt.get("weights", "raw")})
