"""What the training loader really yields: ``verify-batches`` counts and ``export-samples`` files.

Both load batches through :func:`build_training_data` and its DataLoader, the trainer's own path,
and report what came out of it, not what the plan intended.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from proveseg.atomic import atomic_write_json
from proveseg.config import DataConfig
from proveseg.data.audit import ConsumptionAudit
from proveseg.data.pipeline import build_training_data
from proveseg.data.records import KINDS
from proveseg.data.transforms import denormalize

__all__ = ["export_samples", "verify_batches"]


def verify_batches(cfg: DataConfig, batches: int = 3) -> dict[str, Any]:
    """Load ``batches`` batches and report their composition (``verify-batches --json``)."""
    data = build_training_data(cfg)
    audit = ConsumptionAudit(len(data.records))
    for batch in data.loader(0, batches):
        audit.update(batch)
    comp = audit.composition()
    found = valid = 0
    for per_dataset in data.validation.values():
        for rep in per_dataset.values():  # type: ignore[attr-defined]
            found += rep["found"]
            valid += rep["valid"]
    effective = sum(m.effective for m in data.members)
    problems = audit.mismatches(data.expected_composition(0, batches))
    return {
        "batch_size": cfg.batch_size,
        "real_gen_ratio": cfg.real_gen_ratio,
        "sizes": data.group_sizes(),
        "batches": [{k: int(row[i]) for i, k in enumerate(KINDS)} for row in comp],
        "members": [{"name": m.name, "group": m.group, "samples": m.samples, "repeats": m.repeats,
                     "effective": m.effective} for m in data.members],
        "generated": {"found": found, "valid": valid},
        "combined_size": len(data.records),
        "total_batches": math.ceil(effective / cfg.batch_size),
        "skipped": data.skipped,
        "matches_request": not problems,
        "problems": problems,
    }


def export_samples(cfg: DataConfig, n: int, out: str | Path) -> list[Path]:
    """Write ``n`` samples from the training loader: image, palette label, overlay, metadata JSON."""
    data = build_training_data(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    batches = math.ceil(n / cfg.batch_size)
    for b, batch in enumerate(data.loader(0, batches)):
        for j in range(len(batch["kind"])):
            k = b * cfg.batch_size + j
            if k >= n:
                return written
            index = int(batch["index"][j])
            stem = out / f"sample_{k:04d}_{batch['kind'][j]}"
            image = denormalize(batch["image"][j])
            mask = batch["mask"][j].numpy().astype(np.uint8)
            Image.fromarray(image).save(f"{stem}_image.png")
            label = Image.fromarray(mask)
            label.putpalette(data.class_set.palette_bytes())
            label.save(f"{stem}_label.png")
            colour = data.class_set.colorize(mask).astype(np.float32)
            keep = (mask == 255)[..., None]
            overlay = np.where(keep, image, 0.5 * image + 0.5 * colour).astype(np.uint8)
            Image.fromarray(overlay).save(f"{stem}_overlay.png")
            row = data.records.row(index)
            atomic_write_json(f"{stem}.json", {**row, "index": index, "batch": b, "position": j,
                                               "class_set": data.class_set.name})
            written.append(Path(f"{stem}.json"))
    return written
