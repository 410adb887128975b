"""Field types shared by the config schemas (run config, readers, study), with their bounds."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

__all__ = ["MAX_REPEAT", "Repeat"]

MAX_REPEAT = 1e6  # a source drawn a million times as often per sample as another: beyond that, a typo

# How much more often per sample a source is drawn than a x1 source; finite and bounded on both sides, because the
# plan's stride schedule allocates in proportion to the ratio of repeats (``repeat: .inf`` once reached 22 GB, and
# 1e-20 beside 1 exhausts memory the same way).
Repeat = Annotated[float, Field(ge=1 / MAX_REPEAT, le=MAX_REPEAT, allow_inf_nan=False)]
