"""The iteration-based trainer. Every strategy runs this same loop; strategies differ only in data.

What a run consumed is counted from the batches the loop received (``ConsumptionAudit``), and a
chained SHA-256 over every batch's sample ids proves the exact sequence. A run whose consumption
differs from its request ends as failed and writes no metrics.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from proveseg.checkpoint import load_checkpoint, save_checkpoint
from proveseg.config import RunConfig, dump_config
from proveseg.data.audit import CompositionMismatch, ConsumptionAudit
from proveseg.data.pipeline import TrainingData, build_training_data
from proveseg.evaluate.metrics import mean_iou, overall_accuracy
from proveseg.evaluate.runner import evaluate_model, load_split, write_results
from proveseg.models import build_model
from proveseg.rundir import RunDir, code_version
from proveseg.train.losses import SegmentationLoss
from proveseg.train.schedule import make_scheduler
from proveseg.train.selftrain import SelfTrainer
from proveseg.train.state import audit_state, restore_audit, restore_rng, rng_state

__all__ = ["Preempted", "ResumeRefused", "TrainResult", "train"]


class ResumeRefused(RuntimeError):
    """The run directory's checkpoint was made from other inputs than the ones given now."""


class Preempted(RuntimeError):
    """Training stopped at a step boundary after SIGTERM/SIGUSR2 (or a requested stop); last.pt is saved."""


@dataclass
class TrainResult:
    iterations: int
    stopped_early: bool
    best: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] | None = None
    sequence_sha256: str = ""


@dataclass
class _Progress:
    best_value: float = float("-inf")
    best_iteration: int = 0
    evals_without_improvement: int = 0
    sequence: str = ""
    stop: bool = False


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _fingerprint(cfg: RunConfig, data: TrainingData) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume."""
    resolved = cfg.model_copy(update={"output_dir": Path(".")})
    return {"config_sha256": hashlib.sha256(dump_config(resolved).encode()).hexdigest(),
            "class_set": list(data.class_set.names), "record_hashes": dict(sorted(data.hashes.items())),
            "world_size": data.spec.world_size}


def _refusal(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    changed = []
    if saved["config_sha256"] != now["config_sha256"]:
        changed.append("the resolved run config")
    if saved["class_set"] != now["class_set"]:
        changed.append("the class set")
    for key in sorted(set(saved["record_hashes"]) | set(now["record_hashes"])):
        if saved["record_hashes"].get(key) != now["record_hashes"].get(key):
            changed.append(f"the records of source {key}")
    if saved["world_size"] != now["world_size"]:
        changed.append(f"the world size ({saved['world_size']} -> {now['world_size']})")
    return ", ".join(changed) or None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _evaluate(model: nn.Module, records: Any, data: TrainingData, cfg: RunConfig, device: torch.device,
              rank: int, world: int) -> dict[str, Any]:
    """Validation mIoU overall and per domain; each rank takes every world-th image, then all-reduce."""
    if world > 1:  # BatchNorm statistics drift apart per rank: evaluate rank 0's model (the one saved) everywhere
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    mine = records.take(np.arange(rank, len(records), world)) if world > 1 else records
    result = evaluate_model(model, mine, data.class_set, cfg.evaluation, device)
    domains = sorted(set(records.domain.tolist()))
    c = data.class_set.num_classes
    per_domain = np.zeros((len(domains), c, c), np.int64)
    for conf, dom in zip(result.per_image, result.domains, strict=True):
        per_domain[domains.index(dom)] += conf
    if world > 1:
        tensor = torch.from_numpy(per_domain).to(device)
        dist.all_reduce(tensor)
        per_domain = tensor.cpu().numpy()
    total = per_domain.sum(axis=0)
    by_domain = {d: float(mean_iou(per_domain[i])) for i, d in enumerate(domains)}
    return {"mIoU": float(mean_iou(total)), "aAcc": overall_accuracy(total), "per_domain": by_domain,
            "domain_mean_mIoU": float(np.mean(list(by_domain.values())))}


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
    writer = rank == 0
    try:
        return _train(cfg, run, resume, stop_after, progress, device, rank, world)
    except Preempted:
        raise
    except BaseException as exc:
        if writer and run.root.exists():
            run.set_status("failed", f"{type(exc).__name__}: {exc}".replace("\n", " "))
        raise
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: RunConfig, run: RunDir, resume: bool, stop_after: int | None, progress: bool,
           device: torch.device, rank: int, world: int) -> TrainResult:
    tc = cfg.train
    writer = rank == 0
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    data = build_training_data(cfg.data, world)  # refuses empty groups etc. before any training
    val_records = load_split(cfg.evaluation.val) if cfg.evaluation.val else None
    fingerprint = _fingerprint(cfg, data)
    if not resume and (run.last.exists() or run.status()[0] in ("done", "running")):
        raise ResumeRefused(f"{run.root} already holds a run ({run.status()[0]}); resume it with --resume "
                            "or choose another output_dir")
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model.name, data.class_set.num_classes, cfg.model.encoder_weights).to(device)
    cuda = device.type == "cuda"
    if tc.channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    opt_cfg = tc.optimizer
    optimizer: torch.optim.Optimizer
    if opt_cfg.name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=opt_cfg.lr, momentum=opt_cfg.momentum,
                                    weight_decay=opt_cfg.weight_decay)
    scheduler = make_scheduler(optimizer, tc.max_iters, tc.schedule, opt_cfg.lr)
    scaler = torch.amp.GradScaler("cuda") if (tc.amp == "fp16" and cuda) else None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema.decay), use_buffers=True) if tc.ema else None
    loss_fn = SegmentationLoss(tc.loss)
    st = SelfTrainer(tc.selftrain, model, data.class_set.num_classes, tc.seed) if tc.selftrain else None
    audit = ConsumptionAudit(len(data.records))
    state = _Progress()
    start = 0
    if resume and run.last.exists():
        ckpt = load_checkpoint(run.last, device)
        why = _refusal(ckpt["fingerprint"], fingerprint)
        if why:
            raise ResumeRefused(f"{run.last}: cannot resume, changed since the checkpoint: {why}")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        if st is not None:
            st.load_state_dict(ckpt["selftrain"])
        restore_rng(ckpt["rng"])
        restore_audit(audit, ckpt["audit"])
        state = _Progress(**{**ckpt["progress"], "stop": False})
        start = int(ckpt["iteration"])
        if writer:
            run.truncate_log(start)
    if writer:
        run.create()
        run.write_text("run.yaml", dump_config(cfg) + "# code version\n" + "".join(
            f"# {k}: {v}\n" for k, v in code_version().items()))
        run.set_status("running", f"resumed at iteration {start}" if start else "")
    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if tc.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    meta = {"name": cfg.model.name, "num_classes": data.class_set.num_classes, "class_set": cfg.data.class_set}

    def checkpoint(iteration: int) -> None:
        if not writer:
            return
        save_checkpoint(run.last, {
            "model": meta, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else {},
            "ema": ema.state_dict() if ema is not None else {},
            "selftrain": st.state_dict() if st is not None else {}, "iteration": iteration, "rng": rng_state(),
            "audit": audit_state(audit), "progress": state.__dict__.copy(), "fingerprint": fingerprint,
            "config": dump_config(cfg)})

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}

    def on_signal(signum: int, frame: object) -> None:  # act at the next step boundary, never mid-step
        state.stop = True

    for s in previous:
        signal.signal(s, on_signal)
    accum = tc.grad_accum
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if tc.amp == "bf16" else torch.float16)
                if (tc.amp != "none" and cuda) else nullcontext())
    batches = iter(data.loader(start * accum, tc.max_iters * accum, rank))
    bar = Progress(TextColumn("iter"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeRemainingColumn(), disable=not (progress and writer), transient=False)
    task = bar.add_task("train", total=tc.max_iters, completed=start, info="")
    stopped_early, iteration, tick = False, start, time.perf_counter()
    try:
        with bar:
            while iteration < tc.max_iters:
                train_model.train()
                optimizer.zero_grad(set_to_none=True)
                parts: dict[str, float] = {}
                extras: dict[str, Any] = {}
                total_loss, correct, labeled_px = 0.0, 0, 0
                for micro in range(accum):
                    batch = next(batches)
                    audit.update(batch)
                    ids = batch["index"].numpy().astype(np.int64)
                    state.sequence = hashlib.sha256(state.sequence.encode() + ids.tobytes()).hexdigest()
                    images = batch["image"].to(device, non_blocking=True)
                    if tc.channels_last and cuda:
                        images = images.contiguous(memory_format=torch.channels_last)
                    masks = batch["mask"].to(device, non_blocking=True)
                    is_unlabeled = torch.tensor([k == "unlabeled" for k in batch["kind"]], device=device)
                    n_labeled = int((~is_unlabeled).sum())
                    if st is not None and bool(is_unlabeled.any()):
                        strong, target, extras = st.prepare(images[is_unlabeled], iteration * accum + micro)
                        probe = st.probe(images[~is_unlabeled], masks[~is_unlabeled]) if n_labeled else None
                        extras["teacher_probe_acc"] = probe
                        images = torch.cat([images[~is_unlabeled], strong])
                        masks = masks[~is_unlabeled]
                    with autocast:
                        logits = train_model(images)
                        loss, loss_parts = loss_fn(logits[:n_labeled], masks)
                        if st is not None and extras:
                            unsup = st.loss(logits[n_labeled:], target)
                            weight = st.weight(iteration)
                            loss = loss + weight * unsup
                            loss_parts = {**loss_parts, "st": float(unsup.detach()), "st_weight": weight}
                    with torch.no_grad():
                        valid = masks != 255
                        correct += int((logits[:n_labeled].argmax(1)[valid] == masks[valid]).sum())
                        labeled_px += int(valid.sum())
                    (scaler.scale(loss / accum) if scaler else loss / accum).backward()
                    total_loss += float(loss.detach()) / accum
                    parts = {k: parts.get(k, 0.0) + v / accum for k, v in loss_parts.items()}
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if tc.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                if st is not None:
                    st.update(model)
                iteration += 1
                if writer and (iteration % tc.log_interval == 0 or iteration == tc.max_iters):
                    now = time.perf_counter()
                    rate = tc.log_interval / max(now - tick, 1e-9)
                    tick = now
                    lr = optimizer.param_groups[0]["lr"]
                    train_acc = correct / labeled_px if labeled_px else None
                    run.log({"iteration": iteration, "loss": total_loss, **parts, "lr": lr, "it_s": rate,
                             "train_acc": train_acc, **extras})
                    bar.update(task, completed=iteration, info=f"loss {total_loss:.3f} lr {lr:.2e} {rate:.2f} it/s")
                if val_records is not None and (iteration % tc.eval_interval == 0 or iteration == tc.max_iters):
                    stopped_early = _validate(cfg, run, model, ema, val_records, data, device, rank, world, iteration,
                                              state, meta, writer)
                if iteration % tc.checkpoint_interval == 0 or iteration == tc.max_iters or stopped_early:
                    checkpoint(iteration)
                if stopped_early:
                    break
                if state.stop or (stop_after is not None and iteration >= stop_after):
                    checkpoint(iteration)
                    if writer:
                        run.set_status("failed", f"preempted at iteration {iteration}: last.pt saved, resume with "
                                                 "--resume")
                    raise Preempted(f"stopped at iteration {iteration}; resume with --resume")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return _finish(cfg, run, model, ema, data, audit, state, iteration, stopped_early, device, rank, world, meta)


def _validate(cfg: RunConfig, run: RunDir, model: nn.Module, ema: AveragedModel | None, records: Any,
              data: TrainingData, device: torch.device, rank: int, world: int, iteration: int, state: _Progress,
              meta: dict[str, Any], writer: bool) -> bool:
    """Evaluate raw (and EMA) weights, keep best.pt, and say whether early stopping fires."""
    tc = cfg.train
    raw = _evaluate(model, records, data, cfg, device, rank, world)
    record: dict[str, Any] = {"iteration": iteration, "eval": raw}
    chosen, weights = raw, model
    if ema is not None:
        ema_metrics = _evaluate(ema.module, records, data, cfg, device, rank, world)
        record["eval_ema"] = ema_metrics
        chosen, weights = ema_metrics, ema.module
    value = float(chosen[tc.best_metric])
    improved = value > state.best_value
    if improved:
        state.best_value, state.best_iteration, state.evals_without_improvement = value, iteration, 0
        if writer:
            run.best.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(run.best, {"model": meta, "state_dict": _unwrap(weights).state_dict(),
                                       "iteration": iteration, "metric": {tc.best_metric: value},
                                       "weights": "ema" if ema is not None else "raw", "config": dump_config(cfg)})
    else:
        state.evals_without_improvement += 1
    record["best"] = {"iteration": state.best_iteration, tc.best_metric: state.best_value}
    es = tc.early_stopping
    stop = es is not None and iteration >= es.min_iters and state.evals_without_improvement >= es.patience
    record["early_stop"] = stop
    if writer:
        run.log(record)
    return stop


def _finish(cfg: RunConfig, run: RunDir, model: nn.Module, ema: AveragedModel | None, data: TrainingData,
            audit: ConsumptionAudit, state: _Progress, iteration: int, stopped_early: bool, device: torch.device,
            rank: int, world: int, meta: dict[str, Any]) -> TrainResult:
    """Compare consumption with the request, write composition.json, then (only if it matches) metrics."""
    consumed_batches = len(audit.per_batch)
    expected = data.expected_composition(0, consumed_batches)
    comp = audit.composition()
    if world > 1:
        tensor = torch.from_numpy(np.ascontiguousarray(comp)).to(device)
        dist.all_reduce(tensor)
        audit.per_batch = [tuple(r) for r in tensor.cpu().numpy().tolist()]
        expected = expected * world
    problems = audit.mismatches(expected)
    result = TrainResult(iteration, stopped_early, {"iteration": state.best_iteration,
                                                    cfg.train.best_metric: state.best_value}, None, state.sequence)
    if rank != 0:
        return result
    doc = audit.to_dict(data.records, data.requested(), data.hashes, data.validation, problems)
    consumed: dict[str, Any] = doc["consumed"]  # type: ignore[assignment]
    consumed.update(sequence_sha256=state.sequence, iterations=iteration)
    run.write_json("composition.json", doc)
    if problems:
        raise CompositionMismatch("consumed mix differs from the requested mix: " + "; ".join(problems[:3]))
    if not run.best.exists():  # no validation set: the final weights are the result
        save_checkpoint(run.best, {"model": meta, "state_dict": _unwrap(ema.module if ema else model).state_dict(),
                                   "iteration": iteration, "weights": "ema" if ema else "raw",
                                   "config": dump_config(cfg)})
    if cfg.evaluation.test:
        best = load_checkpoint(run.best, device)
        eval_model = build_model(cfg.model.name, data.class_set.num_classes).to(device)
        eval_model.load_state_dict(best["state_dict"])
        records = load_split(cfg.evaluation.test)
        outcome = evaluate_model(eval_model, records, data.class_set, cfg.evaluation, device)
        result.test_metrics = write_results(run.root, outcome, data.class_set, cfg.evaluation.n_boot,
                                            int(best["iteration"]), {"split": "test", "checkpoint": str(run.best),
                                                                     "model": cfg.model.name,
                                                                     "strategy": cfg.strategy})
    run.set_status("done", f"{iteration} iterations" + (" (early stop)" if stopped_early else ""))
    return result
