"""One optimisation step: ``grad_accum`` micro-batches through the model adapter, then one update.

A loss that is not finite (or a gradient norm, with clipping on and no fp16 scaler) raises
:class:`Diverged` before the update: a diverged run ends failed and never writes metrics.

Each micro-batch is counted by the consumption audit and chained into the sequence hash before
it is used, so what the step trains on is exactly what the proof records. Unlabeled samples (in
a self-training run) become strong views with the teacher's pseudo-labels; the adapter owns
both losses, so nothing here depends on the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from proveseg.config import TrainConfig
from proveseg.data.classes import IGNORE_INDEX
from proveseg.data.transforms import to_model_input
from proveseg.evaluate.inference import class_ids
from proveseg.train.selftrain import strong_view
from proveseg.train.state import TrainState

__all__ = ["Diverged", "StepLog", "StepOptions", "train_step"]


class Diverged(RuntimeError):
    """The loss (or, with clipping, the gradient norm) stopped being finite: the run fails, it never reports."""


@dataclass(frozen=True)
class StepOptions:
    """How steps run on this device (from the run's train config)."""

    device: torch.device
    accum: int = 1
    grad_clip: float | None = None
    channels_last: bool = False
    amp_dtype: torch.dtype | None = None  # autocast dtype on the device; None = full precision
    log_interval: int = 1  # train accuracy is measured only on the iterations the logger writes
    max_iters: int = 0  # (the last one is always written)

    @classmethod
    def from_config(cls, tc: TrainConfig, device: torch.device) -> StepOptions:
        if tc.amp == "fp16" and device.type != "cuda":
            raise ValueError(f"train.amp fp16 needs a CUDA device (this run trains on {device.type}): "
                             "use amp: bf16 or none")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tc.amp)
        return cls(device, tc.grad_accum, tc.grad_clip, tc.channels_last, dtype, tc.log_interval, tc.max_iters)

    def logged(self, iteration: int) -> bool:
        """Whether the step that ends at ``iteration`` is written to the log."""
        return iteration % self.log_interval == 0 or iteration == self.max_iters

    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


@dataclass
class StepLog:
    """What one step reports: mean loss over micro-batches, its parts, train accuracy, self-training stats."""

    loss: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    correct: int = 0
    labeled_px: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def train_acc(self) -> float | None:
        return self.correct / self.labeled_px if self.labeled_px else None


def _inputs(state: TrainState, batch: dict[str, Any], opts: StepOptions, micro_index: int,
            ) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None, dict[str, Any]]:
    """(images, labeled masks, number labeled, pseudo-label targets or None, self-training stats)."""
    images = batch["image"].to(opts.device, non_blocking=True)
    layout = torch.channels_last if opts.channels_last else torch.contiguous_format
    if images.dtype == torch.uint8:  # the loader ships uint8 pixels; convert and normalise where the model runs
        images = to_model_input(images, memory_format=layout)
    images = images.contiguous(memory_format=layout)
    masks = batch["mask"].to(opts.device, non_blocking=True).long()
    sv = state.train_cfg.strong_view
    if sv is not None:  # the strong-augmentation control: as many labeled images as ST has unlabeled ones
        generator = torch.Generator().manual_seed(state.train_cfg.seed * 1_000_003 + micro_index + 500_009)
        k = max(1, round(sv.share * len(images)))
        strong, strong_masks = strong_view(images[-k:], masks[-k:], sv.jitter, sv.cutmix, generator)
        images, masks = torch.cat([images[:-k], strong]), torch.cat([masks[:-k], strong_masks])
    unlabeled = torch.tensor([k == "unlabeled" for k in batch["kind"]], device=opts.device)
    st = state.selftrain
    if st is None or not bool(unlabeled.any()):
        return images, masks, len(images), None, {}
    labeled_images, labeled_masks = images[~unlabeled], masks[~unlabeled]
    strong, target, stats = st.prepare(images[unlabeled], micro_index)
    stats["teacher_probe_acc"] = st.probe(labeled_images, labeled_masks) if len(labeled_images) else None
    return torch.cat([labeled_images, strong]), labeled_masks, len(labeled_images), target, stats


def _micro_step(state: TrainState, batch: dict[str, Any], opts: StepOptions, micro_index: int, log: StepLog) -> None:
    state.audit.update(batch)
    state.progress.record_batch(batch["index"].numpy())
    images, masks, n_labeled, target, stats = _inputs(state, batch, opts, micro_index)
    model = state.model
    with opts.autocast():
        outputs = model.forward(state.net, images)
        labeled, rest = model.split(outputs, n_labeled)
        loss, parts = model.loss(labeled, masks)
        if target is not None and state.selftrain is not None:
            unsup = model.unsupervised_loss(rest, target)
            weight = state.selftrain.weight(state.iteration)
            loss = loss + weight * unsup
            parts = {**parts, "st": float(unsup.detach()), "st_weight": weight}
    if opts.logged(state.iteration + 1):  # a full argmax (and a host sync) only when it is logged
        with torch.no_grad():
            valid = masks != IGNORE_INDEX
            log.correct += int((class_ids(model.pixel_logits(labeled))[valid] == masks[valid]).sum())
            log.labeled_px += int(valid.sum())
    scaled = loss / opts.accum
    (state.scaler.scale(scaled) if state.scaler else scaled).backward()
    log.loss += float(loss.detach()) / opts.accum
    log.parts = {k: log.parts.get(k, 0.0) + v / opts.accum for k, v in parts.items()}
    log.extras = stats or log.extras


def _all_ranks_finite(value: float, device: torch.device) -> bool:
    """Whether ``value`` is finite on every rank (all ranks must fail together, or the others hang)."""
    finite = math.isfinite(value)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([0.0 if finite else 1.0], device=device)
        dist.all_reduce(flag)
        finite = float(flag) == 0.0
    return finite


def _diverged(state: TrainState, what: str, value: float) -> Diverged:
    last = state.progress.last_loss
    return Diverged(f"iteration {state.iteration + 1}: {what} is {value} (not finite); last finite loss "
                    + (f"{last:.6g} at iteration {state.iteration}" if last is not None else "none (first step)"))


def _apply_gradients(state: TrainState, opts: StepOptions) -> None:
    if state.scaler is not None:
        state.scaler.unscale_(state.optimizer)
    if opts.grad_clip:
        norm = float(torch.nn.utils.clip_grad_norm_(state.model.network.parameters(), opts.grad_clip))
        # fp16's scaler skips steps with inf gradients by design; without it a non-finite norm is divergence
        if state.scaler is None and not _all_ranks_finite(norm, opts.device):
            raise _diverged(state, "the gradient norm", norm)
    if state.scaler is not None:
        state.scaler.step(state.optimizer)
        state.scaler.update()
    else:
        state.optimizer.step()
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update_parameters(state.model.network)
    if state.selftrain is not None:
        state.selftrain.update(state.model.network)


def train_step(state: TrainState, batches: Iterator[dict[str, Any]], opts: StepOptions) -> StepLog:
    """Consume ``opts.accum`` batches, update the weights once, advance ``state.iteration``."""
    state.net.train()
    state.optimizer.zero_grad(set_to_none=True)
    log = StepLog()
    for micro in range(opts.accum):
        _micro_step(state, next(batches), opts, state.iteration * opts.accum + micro, log)
    if not _all_ranks_finite(log.loss, opts.device):
        raise _diverged(state, "the loss", log.loss)
    _apply_gradients(state, opts)
    state.iteration += 1
    state.progress.last_loss = log.loss
    return log

