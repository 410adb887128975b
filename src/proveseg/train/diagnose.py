"""Training diagnostics from ``log.jsonl``: the peak, the decline after it, and self-training health.

Each finding carries the numbers behind it and a short suggestion. The typical case it is built
for: a semi-supervised run whose validation curve peaks early and then declines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Finding", "diagnose", "plot_curves", "read_log", "run_class_names"]

TOO_FEW_PASSING = 0.05  # fraction of unlabeled pixels passing the threshold
TOO_MANY_PASSING = 0.98


@dataclass
class Finding:
    name: str
    severity: str  # info | warning
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)
    suggestion: str = ""


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of a run's ``log.jsonl`` (a run directory or the file itself)."""
    path = Path(run_dir)
    path = path / "log.jsonl" if path.is_dir() else path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no log.jsonl")
    from proveseg.rundir import read_log_lines

    return read_log_lines(path)  # a torn last line (a cut write) is skipped


def run_class_names(run_dir: str | Path) -> list[str]:
    """The class names a run trained with: its ``run.yaml`` class set, else ``metrics.json``, else a checkpoint's."""
    from proveseg.config import load_run_config
    from proveseg.data.classes import resolve_class_set

    root = Path(run_dir)
    root = root.parent if root.is_file() else root
    if (root / "run.yaml").exists():
        try:
            return list(resolve_class_set(load_run_config(root / "run.yaml").data.class_set).names)
        except (KeyError, ValueError, OSError):  # an older run.yaml naming a class table file that is gone
            pass
    if (root / "metrics.json").exists():
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
        if "classes" in metrics:
            return list(resolve_class_set(metrics["classes"]).names)
        return list(metrics.get("per_class", {}))
    for ckpt in (root / "checkpoints/best.pt", root / "checkpoints/last.pt"):
        if ckpt.exists():
            from proveseg.checkpoint import checkpoint_class_set, load_checkpoint

            return list(checkpoint_class_set(load_checkpoint(ckpt), ckpt).names)
    raise FileNotFoundError(f"{root}: no run.yaml, metrics.json or checkpoint to take the class names from")


def _lr_at(steps: list[dict[str, Any]], iteration: int) -> float | None:
    before = [s for s in steps if s["iteration"] <= iteration]
    return float(before[-1]["lr"]) if before else None


def diagnose(records: list[dict[str, Any]], metric: str = "mIoU", class_names: list[str] | None = None,
             decline_points: float = 1.0) -> list[Finding]:
    """Findings for one run's log records (see the module docstring)."""
    evals = [r for r in records if "eval" in r]
    steps = [r for r in records if "loss" in r]
    findings: list[Finding] = []
    if not evals:
        return [Finding("no_evaluations", "warning", "the log holds no evaluation", {},
                        "set evaluation.val and train.eval_interval so the curve can be diagnosed")]
    values = np.array([e["eval"][metric] for e in evals], dtype=np.float64)
    iters = [int(e["iteration"]) for e in evals]
    best = int(np.argmax(values))
    last = len(values) - 1
    peak = {"best_iteration": iters[best], f"best_{metric}": float(values[best]), "last_iteration": iters[last],
            f"last_{metric}": float(values[last]), "lr_at_peak": _lr_at(steps, iters[best])}
    findings.append(Finding("peak", "info", f"best {metric} {100 * values[best]:.2f} at iteration {iters[best]} of "
                            f"{iters[last]}", peak))
    drop = 100 * (values[best] - values[last])
    if best < last and drop >= decline_points:
        findings.append(Finding(
            "decline_after_peak", "warning",
            f"{metric} fell {drop:.2f} points over {iters[last] - iters[best]} iterations after its peak",
            {"points": drop, "iterations": iters[last] - iters[best], **peak},
            "keep best.pt (it is the peak); lower the LR after the peak or stop earlier; for self-training, "
            "raise thresholds or the teacher decay so pseudo-label noise does not accumulate"))
    train_acc = [s["train_acc"] for s in steps if s.get("train_acc") is not None]
    if train_acc and "aAcc" in evals[last]["eval"]:
        gap = 100 * (float(np.mean(train_acc[-5:])) - float(evals[last]["eval"]["aAcc"]))
        severity = "warning" if gap > 15 else "info"
        findings.append(Finding("train_val_gap", severity, f"train pixel accuracy exceeds validation aAcc by "
                                f"{gap:.1f} points", {"gap_points": gap},
                                "more data or augmentation" if severity == "warning" else ""))
    stops = [e for e in evals if e.get("early_stop")]
    if stops:
        stop = int(stops[0]["iteration"])
        lr = _lr_at(steps, stop)
        first_lr = float(steps[0]["lr"]) if steps else None
        soon = bool(first_lr and lr is not None and lr > 0.5 * first_lr) or (stop - iters[best]) <= iters[0]
        if soon:
            findings.append(Finding(
                "early_stop_too_soon", "warning",
                f"early stopping fired at iteration {stop}, {stop - iters[best]} iterations after the best "
                f"evaluation, with the LR still at {lr}", {"stop_iteration": stop, "lr_at_stop": lr,
                                                           "best_iteration": iters[best]},
                "raise train.early_stopping.patience or min_iters to leave a recovery window"))
    st = [s for s in steps if "st_fraction" in s]
    if st:
        fraction = float(np.mean([s["st_fraction"] for s in st]))
        numbers = {"mean_st_fraction": fraction, "mean_st_count": float(np.mean([s["st_count"] for s in st]))}
        if fraction < TOO_FEW_PASSING:
            findings.append(Finding("st_count_low", "warning", f"only {100 * fraction:.1f}% of unlabeled pixels pass "
                                    "the confidence threshold", numbers, "thresholds too strict: lower them or use "
                                    "adaptive class-wise thresholds"))
        elif fraction > TOO_MANY_PASSING:
            findings.append(Finding("st_count_high", "warning", f"{100 * fraction:.1f}% of unlabeled pixels pass",
                                    numbers, "thresholds too loose: most pseudo-labels are trusted"))
        else:
            findings.append(Finding("st_count", "info", f"{100 * fraction:.1f}% of unlabeled pixels pass the "
                                    "threshold on average", numbers))
        per_class = np.sum([s["st_count_per_class"] for s in st], axis=0)
        never = [int(c) for c in np.flatnonzero(per_class == 0)]
        if never:
            names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in never]
            findings.append(Finding("classes_never_pseudo_labelled", "warning",
                                    f"{len(never)} classes never passed the threshold: {', '.join(names)}",
                                    {"classes": never}, "class-wise or adaptive thresholds for rare classes"))
    return findings


def plot_curves(run_dirs: list[Path], out: Path, metric: str = "mIoU") -> Path:
    """Validation ``metric`` and training loss against iteration for each run, into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_val, ax_loss) = plt.subplots(1, 2, figsize=(12, 4))
    any_eval = False
    for run in run_dirs:
        records = read_log(run)
        evals = [r for r in records if "eval" in r]
        steps = [r for r in records if "loss" in r]
        label = "/".join(Path(run).resolve().parts[-3:])  # strategy/dataset/run: readable, unlike a full path
        any_eval |= bool(evals)
        ax_val.plot([e["iteration"] for e in evals], [100 * e["eval"][metric] for e in evals], marker="o",
                    label=label)
        ax_loss.plot([s["iteration"] for s in steps], [s["loss"] for s in steps], lw=1, label=label)
    ax_val.set(xlabel="iteration (optimizer steps)", ylabel=f"validation {metric} (%)")
    ax_loss.set(xlabel="iteration (optimizer steps)", ylabel="training loss")
    if not any_eval:
        ax_val.text(0.5, 0.5, "no validation in these logs\n(set evaluation.val and train.eval_interval)",
                    ha="center", va="center", transform=ax_val.transAxes)
    else:
        ax_val.legend(fontsize=7)
    ax_loss.legend(fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
