"""The train state: everything a checkpoint holds, built in one place, saved and loaded as one dict.

Model (an adapter), optimizer, scheduler, gradient scaler, EMA weights, the self-training
teacher, the consumption audit, RNG states, the iteration and the best-so-far bookkeeping. What
must not change between a checkpoint and its resume is its fingerprint; a resume with another
fingerprint is refused with the list of what changed.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from proveseg.checkpoint import load_checkpoint, model_record, save_checkpoint
from proveseg.config import ConfigError, OptimizerConfig, RunConfig, dump_config, parse_run_config
from proveseg.data.audit import ConsumptionAudit, chain_sequence
from proveseg.data.classes import ClassSet
from proveseg.models import SegmentationModel, build_model
from proveseg.train.schedule import make_scheduler
from proveseg.train.selftrain import SelfTrainer

__all__ = ["Progress", "ResumeRefused", "TrainState", "fingerprint", "refusal", "restore_rng", "rng_state"]


class ResumeRefused(RuntimeError):
    """The run directory's checkpoint was made from other inputs than the ones given now."""


@dataclass
class Progress:
    """Best-so-far bookkeeping and the chained hash of every consumed batch's sample ids."""

    best_value: float = float("-inf")
    best_iteration: int = 0
    evals_without_improvement: int = 0
    sequence: str = ""
    last_loss: float | None = None  # the last finite training loss (named when a run diverges)

    def record_batch(self, ids: np.ndarray) -> None:
        """Chain the SHA-256 over this batch's global sample ids (the exact sequence is the proof)."""
        self.sequence = chain_sequence(self.sequence, ids)


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy-global and python RNG states."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    py_state = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fingerprint(cfg: RunConfig, class_set: ClassSet, hashes: dict[str, str], world_size: int,
                file_prints: dict[str, str] | None = None) -> dict[str, Any]:
    """What must not change between a checkpoint and its resume (``file_prints``: sizes of a sample of each
    source's files, see :func:`proveseg.data.filecheck.file_fingerprint`)."""
    resolved = cfg.model_copy(update={"output_dir": Path(".")})
    return {"config_sha256": hashlib.sha256(dump_config(resolved).encode()).hexdigest(),
            "class_set": list(class_set.names), "record_hashes": dict(sorted(hashes.items())),
            "world_size": world_size, "file_prints": dict(sorted((file_prints or {}).items()))}


def refusal(saved: dict[str, Any], now: dict[str, Any], config_changes: list[str] | None = None) -> str | None:
    """What changed between two fingerprints, in words; None when nothing did.

    ``config_changes``: the fields in which the checkpoint's stored config differs from the current one
    (None when it cannot be read); an empty list means the configs differ only in layout or in how the
    run executes (device, threads, workers), which a resume may change.
    """
    changed = []
    if saved["config_sha256"] != now["config_sha256"] and config_changes != []:
        detail = f" ({'; '.join(config_changes[:4])})" if config_changes else ""
        changed.append(f"the resolved run config{detail}")
    if saved["class_set"] != now["class_set"]:
        changed.append("the class set")
    for key in sorted(set(saved["record_hashes"]) | set(now["record_hashes"])):
        if saved["record_hashes"].get(key) != now["record_hashes"].get(key):
            changed.append(f"the records of source {key}")
    prints = saved.get("file_prints", {})  # absent in checkpoints written before files were fingerprinted
    for key in sorted(k for k in prints if k in now.get("file_prints", {}) and saved["record_hashes"].get(k)
                      == now["record_hashes"].get(k)):
        if prints[key] != now["file_prints"][key]:
            changed.append(f"the files of source {key} (same paths, other sizes: rewritten in place)")
    if saved["world_size"] != now["world_size"]:
        changed.append(f"the world size ({saved['world_size']} -> {now['world_size']})")
    return ", ".join(changed) or None


def _optimizer(params: Any, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class TrainState:
    """One run's trainable state. ``iteration`` counts optimizer steps done."""

    def __init__(self, cfg: RunConfig, class_set: ClassSet, num_ids: int, device: torch.device,
                 inputs_fingerprint: dict[str, Any]) -> None:
        tc = self.train_cfg = cfg.train
        self.cfg, self.class_set, self.fingerprint = cfg, class_set, inputs_fingerprint
        torch.manual_seed(tc.seed)
        self.model: SegmentationModel = build_model(cfg.model.name, class_set.num_classes, cfg.model.encoder_weights,
                                                    tc.loss, cfg.model.weights).to(device)
        if tc.channels_last:
            self.model.network.to(memory_format=torch.channels_last)
        self.optimizer = _optimizer(self.model.network.parameters(), tc.optimizer)
        self.scheduler = make_scheduler(self.optimizer, tc.max_iters, tc.schedule, tc.optimizer.lr)
        self.scaler = torch.amp.GradScaler("cuda") if (tc.amp == "fp16" and device.type == "cuda") else None
        self.ema = (AveragedModel(self.model.network, multi_avg_fn=get_ema_multi_avg_fn(tc.ema.decay),
                                  use_buffers=True) if tc.ema else None)
        self.selftrain = SelfTrainer(tc.selftrain, self.model, tc.seed) if tc.selftrain else None
        self.audit = ConsumptionAudit(num_ids)
        self.progress = Progress()
        self.iteration = 0
        self.net: nn.Module = self.model.network  # what the step runs: DDP- or compile-wrapped by the loop

    @property
    def result_model(self) -> SegmentationModel:
        """The weights a run reports: the EMA weights when EMA is on, else the raw ones."""
        return self.model.with_network(self.ema.module) if self.ema is not None else self.model

    def model_record(self) -> dict[str, Any]:
        return model_record(self.model, self.class_set)

    def state_dict(self) -> dict[str, Any]:
        """The one checkpoint dict (``last.pt``)."""
        return {
            "model": self.model_record(), "state_dict": self.model.network.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "selftrain": self.selftrain.state_dict() if self.selftrain is not None else {},
            "iteration": self.iteration, "rng": rng_state(), "audit": self.audit.state_dict(),
            "progress": asdict(self.progress), "fingerprint": self.fingerprint, "config": dump_config(self.cfg),
        }

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` left off."""
        self.model.network.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        if self.selftrain is not None:
            self.selftrain.load_state_dict(ckpt["selftrain"])
        restore_rng(ckpt["rng"])
        self.audit.load_state_dict(ckpt["audit"])
        self.progress = Progress(**{k: v for k, v in ckpt["progress"].items() if k in Progress.__dataclass_fields__})
        self.iteration = int(ckpt["iteration"])

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.state_dict())

    def _config_changes(self, ckpt: dict[str, Any]) -> list[str] | None:
        """Fields in which the checkpoint's stored config differs from this run's (read with today's schema)."""
        from proveseg.configdiff import AFTER_TRAINING, config_differences

        try:
            saved = parse_run_config(str(ckpt["config"]), "checkpoint config")
        except (KeyError, ConfigError):
            return None
        return config_differences(self.cfg, saved, skip=AFTER_TRAINING)  # a fixed test path may resume

    def resume(self, path: Path, device: torch.device) -> None:
        """Load ``path``; ResumeRefused names what changed since it was written."""
        ckpt = load_checkpoint(path, device)
        why = refusal(ckpt["fingerprint"], self.fingerprint, self._config_changes(ckpt))
        if why:
            raise ResumeRefused(f"{path}: cannot resume, changed since the checkpoint: {why}")
        self.load_state_dict(ckpt)

    def save_weights(self, path: Path, model: SegmentationModel, extra: dict[str, Any]) -> None:
        """A weights-only checkpoint (``best.pt``) of ``model``, with the model record and run config."""
        save_checkpoint(path, {"model": self.model_record(), "state_dict": _unwrap(model.network).state_dict(),
                               "config": dump_config(self.cfg), **extra})


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
