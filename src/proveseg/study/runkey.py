"""A run's place in a study: ``<root>/<stage>/<strategy>/<dataset>/<model>_ratio0p50_s0``.

The folder name is for people; a run's identity comes from its ``run.yaml`` (the exact ratio,
seed, model and strategy of the resolved config, and the stage and dataset the study wrote into
it). Folder names are read only for run directories that predate that record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from proveseg.config import RunConfig, load_run_config

__all__ = ["RunKey", "ratio_text", "run_dir_name"]

_RUN_DIR_NAME = re.compile(r"^(?P<model>.+)_ratio(?P<ratio>\d+p\d+)_s(?P<seed>-?\d+)$")


def ratio_text(ratio: float) -> str:
    """``0p50``, ``0p125``, ``1p00``: at least two decimals, never rounded (0.125 and 0.12 differ)."""
    whole, _, frac = f"{ratio:.12f}".rstrip("0").partition(".")
    return f"{whole}p{frac.ljust(2, '0')}"


def run_dir_name(model: str, ratio: float, seed: int) -> str:
    """``<model>_ratio<ratio_text>_s<seed>``."""
    return f"{model}_ratio{ratio_text(ratio)}_s{seed}"


@dataclass(frozen=True)
class RunKey:
    """Where a run sits in a study and what it is: stage, strategy, dataset, model, ratio, seed."""

    stage: str
    strategy: str
    dataset: str
    model: str
    ratio: float
    seed: int

    @property
    def cell(self) -> tuple[str, str, int]:
        """The (dataset, model, seed) cell that pairs runs of different strategies."""
        return self.dataset, self.model, self.seed

    @classmethod
    def from_config(cls, cfg: RunConfig, run_dir: Path | None = None) -> RunKey | None:
        """The key of a resolved run config; stage and dataset from its ``study`` record, else from ``run_dir``."""
        if cfg.study is not None:
            stage, dataset = cfg.study.stage, cfg.study.dataset
        elif run_dir is not None and len(run_dir.parts) >= 4:
            stage, dataset = run_dir.parts[-4], run_dir.parts[-2]
        else:
            return None
        return cls(stage, cfg.strategy, dataset, cfg.model.name, cfg.data.real_gen_ratio, cfg.train.seed)

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> RunKey | None:
        """The key of a run directory: from its ``run.yaml`` when it has one, else from the path's names.

        Raises ConfigError when ``run.yaml`` exists but does not validate.
        """
        config = run_dir / "run.yaml"
        if config.exists():
            return cls.from_config(load_run_config(config), run_dir)
        return cls.from_path(run_dir)

    @classmethod
    def from_path(cls, run_dir: Path) -> RunKey | None:
        """The key the path spells (for run directories without ``run.yaml``), else None."""
        match = _RUN_DIR_NAME.match(run_dir.name)
        if match is None or len(run_dir.parts) < 4:
            return None
        stage, strategy, dataset = run_dir.parts[-4:-1]
        return cls(stage, strategy, dataset, match["model"], float(match["ratio"].replace("p", ".")),
                   int(match["seed"]))


