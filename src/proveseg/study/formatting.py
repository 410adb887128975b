"""Leaderboard rendering: rich table, Markdown, CSV (JSON is the document itself)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.table import Table

__all__ = ["leaderboard_caption", "leaderboard_cells", "leaderboard_csv", "leaderboard_header", "leaderboard_markdown",
           "leaderboard_table", "pct"]


def pct(v: float | None) -> str:
    """A fraction as percent with two decimals; ``-`` for missing."""
    return "-" if v is None else f"{100 * v:.2f}"


def _gain(row: dict[str, Any]) -> str:
    if row["gain"] is None:
        return "-"
    lo, hi = row["gain_ci95"]
    mark = "*" if row.get("significant") else ""
    return f"{_points(row['gain'])} [{_points(lo)}, {_points(hi)}]{mark}"


def _points(v: float) -> str:
    """A fraction as signed points with two decimals; a value that rounds to zero is +0.00, never -0.00."""
    text = f"{100 * v:+.2f}"
    return "+0.00" if text == "-0.00" else text


def _p(value: float | None) -> str:
    return "-" if value is None else (f"{value:.3f}" if value >= 0.001 else "<0.001")


_SELECTION = {"best_on_val": "best-on-validation checkpoint", "final": "final weights (no validation set)",
              "unrecorded": "not recorded by these runs", "mixed": "MIXED (see warnings)"}
_BUDGET = {"iterations": "equal iterations (mixed runs see fewer real images than the baseline)",
           "real_samples": "equal real samples (mixed runs train longer)", "mixed": "MIXED (see warnings)"}


def leaderboard_caption(doc: dict[str, Any]) -> str:
    """What the numbers mean: units, what the interval covers, the correction, weight selection and budget."""
    if not doc.get("rows"):
        return "no run ranked: every run found is listed as INVALID or missing (see below)"
    interval = {"seeds and test images": "95% CI over training seeds and test images (hierarchical paired bootstrap)",
                "test images only": "95% CI over test images only (one seed per cell: seed-to-seed spread NOT "
                                    "covered)"}.get(doc.get("interval") or "", "95% CI (mixed: see rows)")
    test = ("p: paired t-test over the matched cells' gains; * = significant at 5% after Holm over "
            f"{doc.get('comparisons', 0)} strategies" if doc.get("interval") == "seeds and test images" else
            "no significance is claimed with one seed per cell (train more seeds)")
    parts = ["mIoU in %, gains in points", interval, test, "P(win) = share of matched pairs the strategy wins"]
    if doc.get("selection"):
        parts.append(f"weights: {_SELECTION.get(doc['selection'], doc['selection'])}")
    if doc.get("budget"):
        parts.append(f"budget: {_BUDGET.get(doc['budget'], doc['budget'])}")
    parts.append("adverse = mean over domains other than clear_day")
    return "; ".join(parts)


def _domains(doc: dict[str, Any]) -> list[str]:
    return sorted({d for r in doc["rows"] for d in r["per_domain"]})


def leaderboard_cells(doc: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """One leaderboard row as display strings (every output format uses these)."""
    p_improve = row.get("p_improve")
    return [str(row["rank"]), row["strategy"], row["type"], pct(row["mIoU"]), _gain(row), _p(row.get("p_holm")),
            "-" if p_improve is None else f"{100 * p_improve:.0f}%", pct(row["adverse_mIoU"]),
            *(pct(row["per_domain"].get(d)) for d in _domains(doc)), str(row["n_runs"])]


def leaderboard_header(doc: dict[str, Any]) -> list[str]:
    return ["rank", "strategy", "type", "mIoU", "gain vs baseline [95% CI]", "p Holm", "P(win)", "adverse",
            *_domains(doc), "runs"]


def leaderboard_table(doc: dict[str, Any], title: str | None, columns: Sequence[int] | None = None,
                      caption: bool = True) -> Table:
    """The leaderboard as a rich table: every column, or only ``columns`` (indices into the header).

    No cell is ever wrapped or cut: a column is at least as wide as its widest value, so a table
    too wide for the console is split by the caller (``render.print_leaderboard``), never squeezed.
    """
    header = leaderboard_header(doc)
    keep = range(len(header)) if columns is None else columns
    rows = [leaderboard_cells(doc, row) for row in doc["rows"]]
    table = Table(title=title, caption=leaderboard_caption(doc) if caption else None)
    for i in keep:
        widest = max((cell_len(cells[i]) for cells in rows), default=0)
        table.add_column(header[i], justify="left" if i in (1, 2) else "right", no_wrap=True, overflow="fold",
                         min_width=widest or None)
    for cells in rows:
        table.add_row(*(cells[i] for i in keep))
    return table


def leaderboard_markdown(doc: dict[str, Any]) -> str:
    header = leaderboard_header(doc)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(leaderboard_cells(doc, row)) + " |" for row in doc["rows"]]
    lines.append(f"\n{leaderboard_caption(doc)}")
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
                     *domains, "n_runs", "p_value", "p_holm", "significant", "p_improve", "interval"])
    for r in doc["rows"]:
        lo, hi = r["gain_ci95"] or (None, None)
        writer.writerow([r["rank"], r["strategy"], r["type"], r["mIoU"], r["gain"], lo, hi, r["adverse_mIoU"],
                         *(r["per_domain"].get(d) for d in domains), r["n_runs"], r.get("p_value"), r.get("p_holm"),
                         r.get("significant"), r.get("p_improve"), r.get("interval")])
    return buf.getvalue()
