"""``proveseg report``: one self-contained HTML page (PNG plots embedded) for a results root."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from proveseg.atomic import atomic_write_text
from proveseg.rundir import read_log_lines
from proveseg.strategies import BASELINE
from proveseg.study.formatting import leaderboard_caption, leaderboard_cells, leaderboard_header, pct
from proveseg.study.leaderboard import build_leaderboard, rank_runs

__all__ = ["write_report"]

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1600px}table{border-collapse:collapse;
margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child,
td.l{text-align:left}.invalid{color:#b00}.warn{color:#a60}img{max-width:100%}.scroll{overflow-x:auto}
#leaderboard td,#domain-gains td,#quality td{white-space:nowrap}"""

_NEGATIVE_ZERO = re.compile(r"(?<![\w.])-(0(?:\.0+)?)(?![\d.])")
_DARK = 0.45  # cells whose colour's luminance is below this get white text


def _no_negative_zero(text: str) -> str:
    """``-0.00`` (a tiny negative value rounded) printed as ``+0.00``: the sign of nothing is noise."""
    return _NEGATIVE_ZERO.sub(r"+\1", text)


def _signed(value: float, digits: int) -> str:
    """``value`` with its sign and ``digits`` decimals, never ``-0.0``."""
    return "-" if value != value else _no_negative_zero(f"{value:+.{digits}f}")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table id="{table_id}"><tr>{head}</tr>{body}</table></div>'


def _leaderboard_html(doc: dict[str, Any]) -> str:
    return _table(leaderboard_header(doc), [[_no_negative_zero(c) for c in leaderboard_cells(doc, row)]
                                            for row in doc["rows"]], "leaderboard")


def _domain_gain_table(doc: dict[str, Any]) -> str:
    rows = [r for r in doc["rows"] if r.get("per_domain_gain") and r["strategy"] != BASELINE]
    if not rows:
        return "<p>No gains to show.</p>"
    domains = sorted({d for r in rows for d in r["per_domain_gain"]})

    def cell(g: dict[str, Any] | None) -> str:
        if g is None:
            return "-"
        return f"{_signed(100 * g['gain'], 2)} [{_signed(100 * g['ci95'][0], 2)}, {_signed(100 * g['ci95'][1], 2)}]"

    return _table(["strategy", *domains], [[r["strategy"], *(cell(r["per_domain_gain"].get(d)) for d in domains)]
                                           for r in rows], "domain-gains")


def _gain_heatmap(doc: dict[str, Any]) -> str:
    base = next((r for r in doc["rows"] if r["strategy"] == BASELINE), None)
    others = [r for r in doc["rows"] if r["strategy"] != BASELINE]
    if base is None or not others:
        return "<p>No baseline or no other strategy: no gain heatmap.</p>"
    domains = sorted(base["per_domain"])
    gains = np.array([[100 * (r["per_domain"].get(d, np.nan) - base["per_domain"][d]) for d in domains]
                      for r in others])
    fig, ax = plt.subplots(figsize=(1.1 * len(domains) + 2, 0.5 * len(others) + 1.5))
    limit = max(1e-6, float(np.nanmax(np.abs(gains))))
    im = ax.imshow(gains, cmap="RdBu", vmin=-limit, vmax=limit)
    ax.set_xticks(range(len(domains)), domains, rotation=30, ha="right")
    ax.set_yticks(range(len(others)), [r["strategy"] for r in others])
    ax.set_xlabel("test domain")
    ax.set_ylabel("strategy")
    for (i, j), value in np.ndenumerate(gains):
        ax.text(j, i, _signed(float(value), 1), ha="center", va="center", fontsize=8, color=_text_colour(im, value))
    fig.colorbar(im, label="mIoU gain over baseline (points)")
    return _png(fig)


def _text_colour(im: Any, value: float) -> str:
    """White on dark heatmap cells, black on light ones (and on missing ones)."""
    if value != value:
        return "black"
    red, green, blue, _ = im.cmap(im.norm(value))
    return "white" if 0.2126 * red + 0.7152 * green + 0.0722 * blue < _DARK else "black"


def _class_names(run: Any) -> list[str]:
    """The class set's order: ``metrics.json``'s ``classes.names``, else ``confusion.npz``'s ``class_names``."""
    record = run.metrics.get("classes")
    names = record.get("names") if isinstance(record, dict) else None
    if names:
        return [str(n) for n in names]
    try:
        with np.load(run.run_dir / "confusion.npz", allow_pickle=False) as z:
            return [str(n) for n in z["class_names"].tolist()]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return list(run.metrics["per_class"])  # no record of the order: the one metrics.json holds


def _class_table(runs: list[Any], doc: dict[str, Any]) -> str:
    """Mean IoU per class (rows in the class set's order) per strategy (columns in leaderboard rank order)."""
    order = {row["strategy"]: i for i, row in enumerate(doc["rows"])}
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: order.get(r.label, len(order))):  # stable: unranked runs keep their order
        by_strategy.setdefault(r.label, []).append(r.metrics["per_class"])
    if not by_strategy:
        return ""
    # the class set's order; a class only per_class names (none should) after those
    classes = list(dict.fromkeys(c for r in runs for c in [*_class_names(r), *r.metrics["per_class"]]))
    rows = []
    for cls in classes:
        row = [cls]
        for per in by_strategy.values():
            vals = [p[cls] for p in per if p.get(cls) is not None]
            row.append(pct(float(np.mean(vals))) if vals else "-")
        rows.append(row)
    return _table(["class", *by_strategy], rows, "per-class")


def _curves(runs: list[Any]) -> str:
    fig, ax = plt.subplots(figsize=(8, 4))
    drawn = False
    for r in runs:
        log = r.run_dir / "log.jsonl"
        if not log.exists():
            continue
        try:
            points = [x for x in read_log_lines(log) if "loss" in x]
        except ValueError:  # a log broken before its last line: its run is shown without a curve
            continue
        if points:
            ax.plot([p["iteration"] for p in points], [p["loss"] for p in points], label=r.strategy, lw=1)
            drawn = True
    if not drawn:
        plt.close(fig)
        return "<p>No training logs.</p>"
    ax.set_xlabel("iteration (optimizer steps)")
    ax.set_ylabel("training loss (cross-entropy, nats)")
    ax.legend(fontsize=7)
    return _png(fig)


def _ratio_curve(results_root: Path, studies: list[Path] | None, audit: bool) -> str:
    doc = build_leaderboard(results_root, "ratio-ablation", n_boot=10, studies=studies, audit=audit)
    table = doc.get("ratio_ablation") or {}
    if not table:
        return "<p>No ratio-ablation runs.</p>"
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, points in table.items():
        ratios = [p["ratio"] for p in points]
        line, = ax.plot(ratios, [100 * p["mIoU"] for p in points], marker="o", label=strategy)
        if all("ci95" in p for p in points):
            ax.fill_between(ratios, [100 * p["ci95"][0] for p in points], [100 * p["ci95"][1] for p in points],
                            color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("real share of each batch (real_gen_ratio, fraction)")
    ax.set_ylabel("test mIoU (%), band: 95% CI over seeds and test images")
    ax.legend(fontsize=7)
    return _png(fig)


COMPOSITION_HEADER = ["run", "real share", "consumed", "sources consumed (records sha256)", "batches",
                      "sequence sha256", "matches request"]


def _sources(comp: dict[str, Any]) -> str:
    """Each source the run drew from, with its sample count and the hash of its records (12 hex chars)."""
    hashes = comp.get("source_hashes") or {}
    return " / ".join(f"{name} {count} ({str(hashes.get(name) or 'no hash')[:12]})"
                      for name, count in comp["consumed"].get("per_source", {}).items() if count) or "-"


def _composition_rows(runs: list[Any]) -> list[list[str]]:
    rows = []
    for r in runs:
        path = r.run_dir / "composition.json"
        try:
            comp = json.loads(path.read_text(encoding="utf-8"))
            consumed = comp["consumed"]
            rows.append([str(r.run_dir), str(comp["requested"]["real_gen_ratio"]),
                         " / ".join(f"{k} {v}" for k, v in consumed["per_kind"].items() if v), _sources(comp),
                         str(consumed["batches"]), str(consumed.get("sequence_sha256", ""))[:12],
                         "yes" if comp.get("matches_request") is True else "NO"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # one bad record, one row
            rows.append([str(r.run_dir), "-", "-", "-", "-", "-",
                         f"unreadable composition.json ({type(exc).__name__})"])
    return rows


def _quality_section(quality: dict[str, Any] | None) -> str:
    if not quality or not quality.get("generators"):
        return "<p>Not measured (proveseg quality, or report --quality).</p>"
    gens = quality["generators"]
    names = list(quality["measures"])
    rows = [[g["generator"], f"{_signed(100 * g['gain'], 2)} [{_signed(100 * g['gain_ci95'][0], 2)}, "
                             f"{_signed(100 * g['gain_ci95'][1], 2)}]",
             *(f"{g[n]:.3f}" if g[n] == g[n] else "-" for n in names)] for g in gens]
    corr = quality["correlations"]
    rows.append(["Spearman rho vs gain [95% CI]", "", *(
        "-" if corr[n]["rho"] is None else _signed(corr[n]["rho"], 2) + (
            f" [{_signed(corr[n]['ci95'][0], 2)}, {_signed(corr[n]['ci95'][1], 2)}]" if corr[n]["ci95"] else "")
        for n in names)])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        x = [g[name] for g in gens]
        y = [100 * g["gain"] for g in gens]
        err = [[100 * (g["gain"] - g["gain_ci95"][0]) for g in gens], [100 * (g["gain_ci95"][1] - g["gain"])
                                                                      for g in gens]]
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
        for xi, yi, g in zip(x, y, gens, strict=True):
            ax.annotate(g["generator"], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel(name.replace("_", " ") + (" (%)" if "shift" in name else " (fraction)"))
        ax.set_ylabel("mIoU gain over baseline (points)")
    fig.tight_layout()
    legend = "; ".join(f"{k}: {v}" for k, v in quality["measures"].items())
    return (_table(["generator", "gain [95% CI]", *names], rows, "quality") + _png(fig)
            + f"<p>{html.escape(legend)}. Consistency under {html.escape(str(quality['model']))}, "
              f"{quality['rows_per_generator']} rows per generator.</p>")


def write_report(results_root: str | Path, out: str | Path, stage: str | None = None,
                 studies: list[Path] | None = None, audit: bool = True, quality: dict[str, Any] | None = None) -> Path:
    """Write the HTML report for ``results_root`` (one stage, or all) to ``out`` (checks as the leaderboard's)."""
    root = Path(results_root)
    doc, runs = rank_runs(root, stage, studies=studies, audit=audit)
    valid = [r for r in runs if r.invalid is None]
    scope = html.escape(stage or "all stages")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>proveseg report: {scope}, "
             f"{html.escape(str(root))}</title><style>{CSS}</style></head><body>",
             f"<h1>proveseg report: {scope}</h1><p>{html.escape(str(root))}: "
             f"{len(valid)} proven runs, {len(doc['invalid'])} invalid.</p>",
             "<h2>Leaderboard</h2>", _leaderboard_html(doc), f"<p>{html.escape(leaderboard_caption(doc))}</p>",
             "<h2>Gain over baseline per domain [95% CI]</h2>", _domain_gain_table(doc)]
    if doc.get("generated_spread") is not None:
        parts.append(f"<p>Spread between generated strategies: {100 * doc['generated_spread']:.2f} points.</p>")
    parts += [f'<p class="warn">WARNING: {html.escape(w)}</p>' for w in doc["warnings"]]
    parts += ["<h2>Gain over baseline per domain</h2>", _gain_heatmap(doc),
              "<h2>Per-class IoU (%)</h2>", _class_table(valid, doc),
              "<h2>Ratio ablation</h2>", _ratio_curve(root, studies, audit),
              "<h2>Does generator quality predict its gain?</h2>", _quality_section(quality),
              "<h2>Training curves</h2>", _curves(valid),
              "<h2>INVALID runs</h2>"]
    parts.append(_table(["run", "reason"], [[i["run_dir"], i["reason"]] for i in doc["invalid"]], "invalid")
                 if doc["invalid"] else "<p>None.</p>")
    parts += ["<h2>Composition of every run (counted from the batches each run consumed)</h2>",
              _table(COMPOSITION_HEADER, _composition_rows(runs), "composition"), "</body></html>"]
    out = Path(out)
    atomic_write_text(out, "\n".join(parts))
    return out
