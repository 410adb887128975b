"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds the model's registry name, its whole class set (names, ids, palette, ignore
value) and the run config (as YAML text) next to the weights, so ``evaluate`` and ``consistency``
rebuild the model and name its classes from the file alone. Pickled objects are
refused by the loader, so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from proveseg.atomic import atomic_write_bytes
from proveseg.data.classes import ClassSet, resolve_class_set
from proveseg.models import SegmentationModel, build_model

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "checkpoint_class_set", "load_checkpoint", "load_model",
           "model_record", "save_checkpoint"]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely or does not describe a proveseg model."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Serialise to memory, then write atomically: a crash never leaves a half-written file."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; anything but tensors and plain containers is refused."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # pickle refusal and corrupt files have many exception types
        raise CheckpointError(f"{path}: refused or unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise CheckpointError(f"{path}: not a proveseg checkpoint (format {CHECKPOINT_FORMAT} with 'model')")
    return state


def model_record(model: SegmentationModel, class_set: ClassSet) -> dict[str, Any]:
    """The ``model`` entry of a checkpoint: registry name, number of classes and the whole class set."""
    return {"name": model.name, "num_classes": model.num_classes, "class_set": class_set.to_dict()}


def checkpoint_class_set(state: dict[str, Any], path: str | os.PathLike[str] = "checkpoint") -> ClassSet:
    """The class set a checkpoint was trained with (a name in checkpoints written before it travelled whole)."""
    record = state["model"].get("class_set", "cityscapes19")
    try:
        return resolve_class_set(record)
    except (KeyError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: its class set cannot be rebuilt: {exc}") from None


def load_model(path: str | os.PathLike[str],
               map_location: str | torch.device = "cpu") -> tuple[SegmentationModel, dict[str, Any]]:
    """Rebuild the model adapter of a checkpoint and load the weights it holds (EMA weights when saved so)."""
    state = load_checkpoint(Path(path), map_location)
    meta = state["model"]
    model = build_model(meta["name"], int(meta["num_classes"]), None)
    model.network.load_state_dict(state["state_dict"])
    return model.eval(), state
