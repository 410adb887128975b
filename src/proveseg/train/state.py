"""Everything an exact resume needs, as weights_only-loadable plain containers and tensors."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from proveseg.data.audit import ConsumptionAudit

__all__ = ["audit_state", "restore_audit", "restore_rng", "rng_state"]


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
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def audit_state(audit: ConsumptionAudit) -> dict[str, Any]:
    return {
        "kinds": dict(audit.kinds), "sources": dict(audit.sources), "domains": dict(audit.domains),
        "kind_domain": dict(audit.kind_domain), "per_batch": torch.tensor(audit.per_batch, dtype=torch.int64),
        "first_batches": audit.first_batches, "seen": torch.from_numpy(audit.seen.copy()), "samples": audit.samples,
    }


def restore_audit(audit: ConsumptionAudit, state: dict[str, Any]) -> None:
    audit.kinds.update(state["kinds"])
    audit.sources.update(state["sources"])
    audit.domains.update(state["domains"])
    audit.kind_domain.update(state["kind_domain"])
    audit.per_batch = [tuple(int(v) for v in row) for row in state["per_batch"].tolist()]
    audit.first_batches = list(state["first_batches"])
    audit.seen = state["seen"].numpy().copy()
    audit.samples = int(state["samples"])
