"""Evaluate a model on a split: per-image confusion matrices -> ``metrics.json`` + ``confusion.npz``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from proveseg.atomic import atomic_write_bytes, atomic_write_json
from proveseg.config import EvalConfig
from proveseg.data.classes import ClassSet
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.records import RecordTable
from proveseg.data.transforms import TransformSpec, to_model_input
from proveseg.evaluate.confusion import confusion_matrix_torch
from proveseg.evaluate.inference import InferenceSpec, class_ids
from proveseg.evaluate.metrics import summarize
from proveseg.readers import SourceConfig, read_source

if TYPE_CHECKING:  # the adapters live in proveseg.models, which builds on this package's inference modes
    from proveseg.models import SegmentationModel

__all__ = ["EvalResult", "align_images", "evaluate_model", "evaluation_protocol", "load_split", "read_confusion",
           "write_results"]


@dataclass
class EvalResult:
    per_image: np.ndarray  # (N, C, C) int64
    domains: list[str]
    images: list[str]


def load_split(sources: Sequence[SourceConfig]) -> RecordTable:
    """Records of a validation or test split, each source read by ``read_source``; errors name the source."""
    if not sources:
        raise ValueError("no evaluation sources configured (evaluation.test / evaluation.val in the run config)")
    return RecordTable.concat([read_source(src, labeled=True).records for src in sources])  # scored: needs labels


@torch.no_grad()
def evaluate_model(model: SegmentationModel, records: RecordTable, class_set: ClassSet, cfg: EvalConfig,
                   device: torch.device | str = "cpu", num_workers: int = 0) -> EvalResult:
    """Per-image confusion matrices of ``model`` (an adapter) over ``records`` (accumulated on ``device``)."""
    spec = InferenceSpec(cfg.mode, cfg.crop, cfg.stride, cfg.flip)
    dataset = SegmentationDataset(records, class_set, TransformSpec(hflip=False, to_float=False))
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=default_collate)
    model = model.to(device).eval()
    matrices, domains, images = [], [], []
    for batch in loader:
        pred = class_ids(model.predict(to_model_input(batch["image"].to(device)), spec))
        mask = batch["mask"].to(device)
        for j in range(len(pred)):
            matrices.append(confusion_matrix_torch(mask[j], pred[j], class_set.num_classes).cpu())
        domains += list(batch["domain"])
        images += [str(records.image[int(i)]) for i in batch["index"]]
    per_image = torch.stack(matrices).numpy().astype(np.int64) if matrices else np.zeros((0, 0, 0), np.int64)
    return EvalResult(per_image, domains, images)


def write_results(out_dir: str | Path, result: EvalResult, class_set: ClassSet, n_boot: int = 1000,
                  iteration: int | None = None, extra: dict[str, object] | None = None) -> dict[str, object]:
    """Write ``metrics.json`` and ``confusion.npz`` atomically; returns the metrics."""
    out = Path(out_dir)
    metrics = summarize(result.per_image, result.domains, class_set.names, n_boot=n_boot)
    metrics.update({"iteration": iteration, "class_set": class_set.name, "classes": class_set.to_dict(),
                    **(extra or {})})
    buf = io.BytesIO()
    np.savez_compressed(buf, per_image=result.per_image, domains=np.asarray(result.domains, dtype=str),
                        images=np.asarray(result.images, dtype=str), class_names=np.asarray(class_set.names))
    atomic_write_bytes(out / "confusion.npz", buf.getvalue())
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def evaluation_protocol(cfg: EvalConfig) -> dict[str, object]:
    """How the test split is scored (``metrics.json``'s ``protocol``): the audit compares it with ``run.yaml``."""
    return {"mode": cfg.mode, "crop": list(cfg.crop) if cfg.crop is not None else None,
            "stride": list(cfg.stride) if cfg.stride is not None else None, "flip": cfg.flip}


def align_images(images: Sequence[str], reference: Sequence[str]) -> np.ndarray | None:
    """Indices that put ``reference``'s per-image rows in the order of ``images``; None unless both hold the same
    images exactly once each (the order in a confusion.npz is the loader's, not part of the result)."""
    if list(images) == list(reference) and len(set(images)) == len(images):
        return np.arange(len(images))
    position = {name: i for i, name in enumerate(reference)}
    if len(position) != len(reference) or len(set(images)) != len(images) or position.keys() != set(images):
        return None
    return np.array([position[name] for name in images], dtype=np.int64)


def read_confusion(path: str | Path) -> EvalResult:
    """Load a ``confusion.npz`` (no pickles)."""
    with np.load(path, allow_pickle=False) as z:
        return EvalResult(z["per_image"], z["domains"].tolist(), z["images"].tolist())


def evaluate_target(target: str | Path, split: str = "test", data_config: str | Path | None = None,
                    out_dir: str | Path | None = None, device: str = "cpu") -> dict[str, object]:
    """``proveseg evaluate``: a run directory (its best, else last checkpoint) or a checkpoint file.

    The run config comes from ``data_config``, else the run directory's ``run.yaml``, else the copy
    stored in the checkpoint. Results go to ``out_dir``, else the run directory.
    """
    from proveseg.checkpoint import checkpoint_class_set, load_model
    from proveseg.config import load_run_config, parse_run_config
    from proveseg.rundir import file_sha256

    path = Path(target)
    if path.is_dir():
        ckpt = next((p for p in (path / "checkpoints/best.pt", path / "checkpoints/last.pt") if p.exists()), None)
        if ckpt is None:
            raise FileNotFoundError(f"{path}: no checkpoints/best.pt or checkpoints/last.pt")
        run_dir = path
    else:
        ckpt = path
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    model, state = load_model(ckpt, device)
    own = load_run_config(run_dir / "run.yaml") if (run_dir / "run.yaml").exists() else None
    if data_config is not None:
        cfg = load_run_config(data_config)
        differs = own is not None and out_dir is None and split == "test" and (
            cfg.evaluation.model_dump(exclude={"batch_size"}) != own.evaluation.model_dump(exclude={"batch_size"}))
        if differs:  # the run's metrics.json would hold scores of another protocol than its run.yaml says
            raise ValueError(f"{data_config}: its evaluation settings differ from {run_dir / 'run.yaml'}; scores of "
                             "another test protocol do not go into the run directory (give --out)")
    elif own is not None:
        cfg = own
    elif state.get("config"):
        cfg = parse_run_config(str(state["config"]), f"{ckpt} (stored config)")
    else:
        raise ValueError(f"{ckpt}: no run config found; pass --data CONFIG")
    if split not in ("test", "val"):
        raise ValueError(f"split {split!r}: expected test or val")
    class_set = checkpoint_class_set(state, ckpt)
    records = load_split(cfg.evaluation.test if split == "test" else cfg.evaluation.val)
    result = evaluate_model(model, records, class_set, cfg.evaluation, device)
    extra = {"split": split, "checkpoint": str(ckpt), "weights_sha256": file_sha256(ckpt),
             "model": state["model"]["name"], "protocol": evaluation_protocol(cfg.evaluation),
             "strategy": cfg.strategy, "weights": state.get("weights", "raw")}
    if ckpt.name == "best.pt":  # as training wrote it: which weights these are
        extra.update(selection="best_on_val" if cfg.evaluation.val else "final",
                     selection_metric=cfg.train.best_metric if cfg.evaluation.val else None)
    return write_results(out_dir or run_dir, result, class_set, cfg.evaluation.n_boot, state.get("iteration"), extra)
