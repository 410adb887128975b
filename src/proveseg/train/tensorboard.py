"""TensorBoard scalars beside ``log.jsonl``, fed from the same log records (``log.jsonl`` stays the truth).

Each run writes to ``<run_dir>/tensorboard``, so ``tensorboard --logdir RESULTS_ROOT`` shows a whole
study, one TensorBoard run per run directory (named by its path). Tags:

- ``train/loss``, ``train/lr`` and every other number of a training line (``train/<key>``);
- ``val/mIoU`` (and the other scalar metrics) and ``val/mIoU/<domain>`` from a validation line
  (``eval_ema`` lines as ``val_ema/...``);
- ``consumed_share/<source>``: each source's share of the samples consumed so far (under DDP rank 0's:
  every rank draws the same per-batch composition, so group shares are exact and sources within a
  group differ by rank only in which members were drawn; ``composition.json`` sums every rank).

``torch.utils.tensorboard`` needs the ``tensorboard`` package (``pip install 'proveseg[tensorboard]'``); it
is imported only when a run switches TensorBoard on (``train.tensorboard: true``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TENSORBOARD_DIR", "TensorBoardWriter", "scalars"]

TENSORBOARD_DIR = "tensorboard"
_NOT_SCALARS = {"iteration", "best", "early_stop"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _eval_scalars(prefix: str, doc: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in doc.items():
        if key == "per_domain" and isinstance(value, Mapping):
            out.update({f"{prefix}/mIoU/{d}": v for d, v in value.items() if _number(v) is not None})
        elif _number(value) is not None:
            out[f"{prefix}/{key}"] = float(value)
    return out


def scalars(record: Mapping[str, Any], consumed_per_source: Mapping[str, int] | None = None) -> dict[str, float]:
    """The TensorBoard tags and values of one ``log.jsonl`` record (pure: no writer needed)."""
    out: dict[str, float] = {}
    if isinstance(record.get("eval"), Mapping):
        out.update(_eval_scalars("val", record["eval"]))
        if isinstance(record.get("eval_ema"), Mapping):
            out.update(_eval_scalars("val_ema", record["eval_ema"]))
        return out
    for key, value in record.items():
        number = _number(value)
        if key not in _NOT_SCALARS and number is not None:
            out[f"train/{key}"] = number
    total = sum((consumed_per_source or {}).values())
    if total:
        out.update({f"consumed_share/{s}": n / total for s, n in sorted((consumed_per_source or {}).items())})
    return out


class TensorBoardWriter:
    """A ``SummaryWriter`` on ``<run_dir>/tensorboard``.

    ``resumed_at``: the iteration training continues from (0 for a fresh start); events of later steps, written
    by the attempt that was discarded, are purged, as ``log.jsonl`` drops its lines after the checkpoint.
    """

    def __init__(self, run_dir: str | Path, resumed_at: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises this when the tensorboard package is missing
            raise ImportError(f"train.tensorboard needs the tensorboard package: pip install 'proveseg[tensorboard]' "
                              f"({exc})") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=resumed_at + 1)

    def write(self, record: Mapping[str, Any], consumed_per_source: Mapping[str, int] | None = None) -> None:
        """Write one ``log.jsonl`` record's scalars at its ``iteration``."""
        step = int(record.get("iteration", 0))
        for tag, value in scalars(record, consumed_per_source).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
