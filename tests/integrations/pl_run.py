"""A Lightning run on the plan (also run as a script: ``python tests/integrations/pl_run.py BENCH RESULTS CKPT 2``
trains with strategy="ddp" on 2 CPU processes, gloo)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from proveseg.integrations.lightning import ProvesegCallback, ProvesegDataModule
from tests.integrations.conftest import TinyConv, make_run_config


class Stopped(RuntimeError):
    """Stands in for a killed process."""


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyConv()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self.net(batch["image"]), batch["mask"], ignore_index=255)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StopAt(L.Callback):
    """Raise before optimizer step ``step`` + 1, after the checkpoint at ``step``: the run dies like a kill."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.step:
            raise Stopped(f"stopped at step {self.step}")


def fit(benchmark: Path, results: Path, ckpt_dir: Path, devices: int = 1, stop_at: int | None = None,
        resume_from: Path | None = None) -> ProvesegCallback:
    """Train 6 steps of 1+1 batches (checkpoints every 2 steps); rank 0 then scores the test split."""
    dm = ProvesegDataModule(make_run_config(benchmark, results, max_iters=6))
    proof = ProvesegCallback()
    save = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=2, save_top_k=-1,
                                               filename="{step}")
    callbacks: list[L.Callback] = [proof, save] + ([StopAt(stop_at)] if stop_at else [])
    trainer = L.Trainer(max_steps=6, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        use_distributed_sampler=False, callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, deterministic=True)
    model = TinyModule()
    trainer.fit(model, dm, ckpt_path=str(resume_from) if resume_from else None)
    if trainer.global_rank == 0 and proof.proof is not None:
        scorer = proof.proof.test_scorer()
        model.eval()
        with torch.no_grad():
            for batch in DataLoader(scorer.dataset, batch_size=2):
                scorer.update(model.net(batch["image"]).argmax(1), batch["mask"], batch["index"])
        proof.proof.write_metrics(scorer)
    return proof


if __name__ == "__main__":
    bench, res, ckpt = (Path(a) for a in sys.argv[1:4])
    fit(bench, res, ckpt, devices=int(sys.argv[4]))
