"""Field types shared by the config schemas (run config, readers, study), with their bounds.

YAML gives ints, floats, bools and strings already typed, so a config never needs pydantic's lax coercions: a
``seed: true`` that became 1, or ``hflip: 'no'`` that became False, is a typo the user never sees. The scalar
types below are strict (a float field still takes a YAML int such as ``1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, Strict, StrictBool, StrictInt

__all__ = [
    "MAX_REPEAT",
    "SEED_LIMIT",
    "Flag",
    "Float",
    "FolderName",
    "InputPath",
    "Int",
    "Name",
    "Repeat",
    "Seed",
    "folder_name_problem",
]

MAX_REPEAT = 1e6  # a source drawn a million times as often per sample as another: beyond that, a typo
SEED_LIMIT = 2**32  # numpy's legacy seeding and most tools take 32-bit seeds; torch generators get seed * 1_000_003

Int = StrictInt
Float = Annotated[float, Strict()]  # accepts an int (``1``), refuses ``'1'`` and ``true``
Flag = StrictBool  # true / false only: ``'no'`` or ``0`` is refused
Seed = Annotated[StrictInt, Field(ge=0, lt=SEED_LIMIT)]
Name = Annotated[str, Field(min_length=1)]

# How much more often per sample a source is drawn than a x1 source; finite and bounded on both sides, because the
# plan's stride schedule allocates in proportion to the ratio of repeats (``repeat: .inf`` once reached 22 GB, and
# 1e-20 beside 1 exhausts memory the same way).
Repeat = Annotated[float, Strict(), Field(ge=1 / MAX_REPEAT, le=MAX_REPEAT, allow_inf_nan=False)]


def _non_empty_path(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("empty path (Path('') would silently mean the working directory)")
    return value


InputPath = Annotated[Path, BeforeValidator(_non_empty_path)]


def folder_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be one folder of a run directory's path, or None when it can."""
    if not isinstance(name, str) or not name:
        return "is empty" if name == "" else f"is not a string ({name!r})"
    if name in (".", "..") or name.startswith("."):
        return f"{name!r} starts with a dot (., .. and hidden folders are not run folders)"
    bad = sorted({c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        return f"{name!r} contains {', '.join(repr(c) for c in bad)}: it must be a single folder name"
    return None


def _folder_name(value: Any) -> Any:
    problem = folder_name_problem(value)
    if problem:
        raise ValueError(f"name {problem}")
    return value


# A name that becomes one folder of a run directory (a study's dataset, generator, augmentation, self-training entry)
FolderName = Annotated[str, BeforeValidator(_folder_name)]
