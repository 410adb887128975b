"""Field types shared by the config schemas (run config, readers, study), with their bounds."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["MAX_REPEAT", "Repeat"]

MAX_REPEAT = 1e6  # a source drawn a million times as often per sample as another: beyond that, a typo

# How much more often per sample a source is drawn than a x1 source; finite and bounded, because the plan's
# stride schedule allocates in proportion to it (``repeat: .inf`` once reached 22 GB before the kernel killed it).
Repeat = Annotated[float, Field(gt=0, le=MAX_REPEAT, allow_inf_nan=False)]
