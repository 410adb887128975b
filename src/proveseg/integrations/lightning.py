"""Lightning: a ``LightningDataModule`` over the exact batch plan and a ``Callback`` that proves what was consumed.

::

    dm = ProvesegDataModule("run.yaml")
    trainer = L.Trainer(max_steps=1000, callbacks=[ProvesegCallback()], use_distributed_sampler=False)
    trainer.fit(model, dm)

- :class:`ProvesegDataModule` builds the plan for the trainer's world size; ``train_dataloader`` deals
  this rank's batches (``{image, mask, domain, kind, source, index}``) with :class:`~proveseg.api.PlanSampler`.
  Under DDP every rank gets the same composition; Lightning must not replace the sampler
  (``use_distributed_sampler=False``).
- :class:`ProvesegCallback` counts every batch from its ``index`` before the step, writes ``log.jsonl``,
  keeps every rank's record in each checkpoint (with ``composition.json`` beside it), resumes the sampler
  at the checkpoint's position (a mid-epoch resume finishes that epoch with the plan's next batches) and
  writes ``composition.json`` and ``status`` at the end. Its ``proof`` scores test predictions
  (:meth:`proveseg.api.ProofRun.test_scorer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, default_collate

from proveseg.api import MixedData, PlanSampler, ProofRun, load_config, sample_ids
from proveseg.config import DataConfig, RunConfig

__all__ = ["ProvesegCallback", "ProvesegDataModule"]


class ProvesegDataModule(L.LightningDataModule):
    """The run config's training data (``run_config``: a YAML path, RunConfig, DataConfig or mapping).

    ``batches_per_epoch`` defaults to as many global batches as the records fill; ``num_workers`` to the
    run config's ``data.num_workers``.
    """

    def __init__(self, run_config: str | Path | RunConfig | DataConfig | Mapping[str, Any],
                 batches_per_epoch: int | None = None, num_workers: int | None = None) -> None:
        super().__init__()
        self.config = load_config(run_config)
        self.batches_per_epoch, self.num_workers = batches_per_epoch, num_workers
        self.mixed: MixedData | None = None
        self.sampler: PlanSampler | None = None

    def setup(self, stage: str) -> None:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.mixed is None or self.mixed.world_size != world:
            self.mixed = MixedData(self.config, world)

    def train_dataloader(self) -> DataLoader[Any]:
        if self.mixed is None:
            self.setup("fit")
        assert self.mixed is not None
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self.sampler = self.mixed.batch_sampler(rank, self.batches_per_epoch)
        workers = self.config.data.num_workers if self.num_workers is None else self.num_workers
        return DataLoader(self.mixed.dataset, batch_sampler=self.sampler, num_workers=workers,
                          collate_fn=default_collate)


class ProvesegCallback(L.Callback):
    """Audit, checkpoint record, resume position and proof files of a Lightning run (see the module docstring).

    ``output_dir``: the run directory (default: the run config's ``output_dir``); ``log_interval``: a
    ``log.jsonl`` line every N optimizer steps (default: the run config's ``train.log_interval``).
    """

    def __init__(self, output_dir: str | Path | None = None, log_interval: int | None = None) -> None:
        self.output_dir, self.log_interval = output_dir, log_interval
        self.proof: ProofRun | None = None
        self._restored: dict[str, Any] | None = None

    @staticmethod
    def _datamodule(trainer: L.Trainer) -> ProvesegDataModule:
        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, ProvesegDataModule):
            raise TypeError(f"ProvesegCallback needs trainer.fit(model, datamodule=ProvesegDataModule(...)), got "
                            f"{type(dm).__name__}")
        return dm

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._datamodule(trainer)
        if trainer.world_size > 1 and getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
            raise ValueError("the plan deals every rank its batches: pass Trainer(use_distributed_sampler=False)")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = self._datamodule(trainer)
        assert dm.mixed is not None and dm.sampler is not None
        self.proof = ProofRun(dm.mixed, trainer.global_rank, trainer=f"lightning {L.__version__}",
                              max_iters=int(trainer.estimated_stepping_batches),
                              grad_accum=trainer.accumulate_grad_batches, output_dir=self.output_dir)
        if self._restored is not None:
            self.proof.load_state_dict(self._restored)
            dm.sampler.load_state_dict(self._restored["sampler"])
        self.proof.start(resume=self._restored is not None)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        assert self.proof is not None
        self.proof.record(sample_ids(batch))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        proof = self.proof
        assert proof is not None
        if proof.batches % proof.config.train.grad_accum:
            return
        step, interval = proof.iterations, self.log_interval or proof.config.train.log_interval
        if step % interval == 0 or step == proof.config.train.max_iters:
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            record: dict[str, Any] = {"iteration": step, "lr": trainer.optimizers[0].param_groups[0]["lr"]}
            if isinstance(loss, torch.Tensor):
                record["loss"] = float(loss.detach())
            proof.log(record)

    def state_dict(self) -> dict[str, Any]:
        """Every rank's record (Lightning asks every rank when it checkpoints); composition.json is written too."""
        if self.proof is None:
            return {}
        own = self.proof.state_dict()
        ranks: list[Any] = [own]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, own)
        self.proof.write_composition()
        return {"ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if len(state_dict["ranks"]) <= rank:
            raise ValueError(f"the checkpoint's proveseg record covers {len(state_dict['ranks'])} ranks; this is "
                             f"rank {rank}")
        self._restored = state_dict["ranks"][rank]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self.proof is not None
        self.proof.finish()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.proof is not None:
            self.proof.fail(f"{type(exception).__name__}: {exception}")
