"""Leaderboard rendering: rich table, Markdown, CSV (JSON is the document itself)."""

from __future__ import annotations

import csv
import io
from typing import Any

from rich.table import Table

__all__ = ["leaderboard_cells", "leaderboard_csv", "leaderboard_header", "leaderboard_markdown", "leaderboard_table",
           "pct"]


def pct(v: float | None) -> str:
    """A fraction as percent with two decimals; ``-`` for missing."""
    return "-" if v is None else f"{100 * v:.2f}"


def _gain(row: dict[str, Any]) -> str:
    if row["gain"] is None:
        return "-"
    lo, hi = row["gain_ci95"]
    return f"{100 * row['gain']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def _domains(doc: dict[str, Any]) -> list[str]:
    return sorted({d for r in doc["rows"] for d in r["per_domain"]})


def leaderboard_cells(doc: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """One leaderboard row as display strings (every output format uses these)."""
    return [str(row["rank"]), row["strategy"], row["type"], pct(row["mIoU"]), _gain(row),
            pct(row["adverse_mIoU"]), *(pct(row["per_domain"].get(d)) for d in _domains(doc)), str(row["n_runs"])]


def leaderboard_header(doc: dict[str, Any]) -> list[str]:
    return ["rank", "strategy", "type", "mIoU", "gain vs baseline [95% CI]", "adverse", *_domains(doc), "runs"]


def leaderboard_table(doc: dict[str, Any], title: str) -> Table:
    table = Table(title=title, caption="mIoU in %, gains in points; adverse = mean over domains other than clear_day")
    for i, col in enumerate(leaderboard_header(doc)):
        table.add_column(col, justify="left" if i in (1, 2) else "right", no_wrap=True)
    for row in doc["rows"]:
        table.add_row(*leaderboard_cells(doc, row))
    return table


def leaderboard_markdown(doc: dict[str, Any]) -> str:
    header = leaderboard_header(doc)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(leaderboard_cells(doc, row)) + " |" for row in doc["rows"]]
    for item in doc["invalid"]:
        lines.append(f"\nINVALID `{item['run_dir']}`: {item['reason']}")
    for warning in doc["warnings"]:
        lines.append(f"\nWARNING: {warning}")
    return "\n".join(lines) + "\n"


def leaderboard_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    domains = _domains(doc)
    writer.writerow(["rank", "strategy", "type", "mIoU", "gain", "gain_lo", "gain_hi", "adverse_mIoU",
                     *domains, "n_runs"])
    for r in doc["rows"]:
        lo, hi = r["gain_ci95"] or (None, None)
        writer.writerow([r["rank"], r["strategy"], r["type"], r["mIoU"], r["gain"], lo, hi, r["adverse_mIoU"],
                         *(r["per_domain"].get(d) for d in domains), r["n_runs"]])
    return buf.getvalue()
