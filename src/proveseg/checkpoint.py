"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint holds the model's registry name, class set and run config (as YAML text) next to
the weights, so ``evaluate`` can rebuild the model from the file alone. Pickled objects are
refused by the loader, so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from proveseg.atomic import atomic_write_bytes
from proveseg.models import build_model

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "load_checkpoint", "load_model", "save_checkpoint"]

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


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint and load its weights (EMA weights if ``use_ema``)."""
    state = load_checkpoint(Path(path), map_location)
    meta = state["model"]
    model = build_model(meta["name"], int(meta["num_classes"]), None)
    model.load_state_dict(state["state_dict"])
    return model.eval(), state
