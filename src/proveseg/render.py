"""Terminal rendering of command results: rich tables and the lines printed around them.

Every function takes the library's result (a report, a document, ``metrics.json``) and returns
a rich ``Table`` or display lines, or prints them on a given console. The text is parsed by
users' scripts: change it only on purpose. Imports stay light (no torch, no pyarrow), so that
commands which print little stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from proveseg.study.formatting import leaderboard_caption, leaderboard_header, leaderboard_table, pct

if TYPE_CHECKING:
    from proveseg.data.manifest import ManifestReport
    from proveseg.train.diagnose import Finding

__all__ = [
    "audit_table",
    "consistency_table",
    "leaderboard_tables",
    "manifest_examples",
    "manifest_table",
    "members_table",
    "metrics_tables",
    "plan_table",
    "print_findings",
    "print_leaderboard",
    "print_manifest_report",
    "print_plan",
    "print_verify_batches",
    "quality_table",
    "slurm_summary",
    "stats_table",
    "status_table",
    "synth_table",
    "verify_batches_lines",
]


def _folded(table: Table) -> Table:
    """Numbers wrap onto a second line on a narrow terminal instead of being cut to `…`."""
    for column in table.columns:
        column.overflow = "fold"
        column.no_wrap = False
    return table


def synth_table(info: dict[str, Any], title: str) -> Table:
    """Images per domain: real ones per split, generated ones per generator (``info.json`` of a benchmark)."""
    counts = info["counts"]
    columns = [(split, counts["real"][split]) for split in ("train", "test")]
    columns += [(name, per) for name, per in counts["generated"].items()]
    table = Table(title=title, caption="real: images per split; others: generated images per target")
    table.add_column("domain", no_wrap=True)
    for name, _ in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for domain in info["domains"]:
        table.add_row(domain, *(str(per.get(domain, "-")) for _, per in columns))
    table.add_row("total", *(str(sum(per.values())) for _, per in columns), style="bold")
    return _folded(table)


def manifest_table(report: ManifestReport) -> Table:
    """Per dataset of a manifest: rows, found, valid, rows left out by a dataset filter, and rejected rows by reason."""
    table = Table(title=f"{report.path} (generator {report.generator})")
    paired = any(rep.paired is not None for rep in report.datasets.values())  # a column only for paired manifests
    filtered = any(rep.filtered for rep in report.datasets.values())  # and one only when a filter left rows out
    for col in ("dataset", "rows", "found", "valid", *(["paired"] if paired else []),
                *(["filtered"] if filtered else []), "rejected"):
        table.add_column(col, justify="left" if col in ("dataset", "rejected") else "right")
    for name, rep in sorted(report.datasets.items()):
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(rep.rejected.items())) or "-"
        pairs = [str(rep.paired or 0)] if paired else []
        left_out = [str(rep.filtered)] if filtered else []
        table.add_row(name, str(rep.rows), str(rep.found), str(rep.valid), *pairs, *left_out, reasons)
    return _folded(table)


def manifest_examples(report: ManifestReport) -> list[str]:
    """One line per example rejected row: dataset, row number in the file, reason, detail (plain text);
    then, when the header has columns beyond the contract, one line naming them (kept and ignored)."""
    lines = [f"  {name}: row {ex['row']}: {ex['reason']}: {ex['detail']}"
             for name, rep in sorted(report.datasets.items()) for ex in rep.examples]
    if report.extra_columns:
        lines.append(f"  extra columns (kept, ignored): {', '.join(report.extra_columns)}")
    return lines


def print_manifest_report(console: Console, report: ManifestReport, failed: bool) -> None:
    """The manifest table and example rows; with ``failed``, the count of invalid rows under the error policy."""
    console.print(manifest_table(report))
    for line in manifest_examples(report):
        console.print(line, highlight=False, markup=False)
    if failed:
        console.print(f"[red]{report.n_invalid} invalid row(s)[/red] (policy: error)")


def verify_batches_lines(report: dict[str, Any], config: str) -> list[str]:
    """The ratio and batch size, each loaded batch by group, then sizes (``verify_batches`` of ``config``)."""
    lines = [f"config {config}: real/gen ratio {report['real_gen_ratio']}, batch size {report['batch_size']}"
             " (counted from loaded batches)"]
    for i, b in enumerate(report["batches"], start=1):
        parts = " + ".join(f"{n} {k}" for k, n in b.items() if n)
        lines.append(f"Batch {i}: {parts} = {sum(b.values())} total")
    sizes = report["sizes"]
    gen = report["generated"]
    lines.append(f"real size: {sizes.get('real', 0)} | generated found/valid: {gen['found']}/{gen['valid']} | "
                 f"combined size: {report['combined_size']} | total batches: {report['total_batches']}")
    return lines


def members_table(report: dict[str, Any]) -> Table:
    """Each member dataset of a training mix: group, samples, repeats, effective samples."""
    table = Table(title="members")
    for col in ("dataset", "group", "samples", "repeats", "effective"):
        table.add_column(col, justify="left" if col in ("dataset", "group") else "right")
    for m in report["members"]:
        table.add_row(m["name"], m["group"], str(m["samples"]), f"{m['repeats']:g}", f"{m['effective']:g}")
    return _folded(table)


def print_verify_batches(console: Console, report: dict[str, Any], config: str) -> None:
    """Summary lines, the members table, then a MISMATCH line per problem."""
    for line in verify_batches_lines(report, config):
        console.print(line, highlight=False)
    console.print(members_table(report))
    for problem in report["problems"]:
        console.print(f"[red]MISMATCH[/red] {problem}")


def metrics_tables(metrics: dict[str, Any], title: str) -> list[Table]:
    """Overall, per-domain and per-class tables of a ``metrics.json`` (percent, two decimals)."""
    from proveseg.evaluate.metrics import SCALAR_METRICS

    others = [name for name in SCALAR_METRICS if name != "mIoU"]  # every registered metric gets a column
    overall = Table(title=title)
    for col in ("mIoU", "95% CI", *others, "domain mean", "images"):
        overall.add_column(col, justify="right")
    lo, hi = metrics["ci95"]
    overall.add_row(pct(metrics["mIoU"]), f"[{pct(lo)}, {pct(hi)}]", *(pct(metrics.get(name)) for name in others),
                    pct(metrics["domain_mean_mIoU"]), str(metrics["n_images"]))
    domains = Table(title="per domain")
    for col in ("domain", "mIoU", "aAcc", "images"):
        domains.add_column(col, justify="left" if col == "domain" else "right")
    for name, d in metrics["per_domain"].items():
        domains.add_row(name, pct(d["mIoU"]), pct(d["aAcc"]), str(d["n_images"]))
    classes = Table(title="per class (IoU; - = class absent from labels and predictions)")
    classes.add_column("class")
    classes.add_column("IoU", justify="right")
    classes.add_column("acc", justify="right")
    for name, v in metrics["per_class"].items():
        classes.add_row(name, pct(v), pct(metrics["per_class_acc"][name]))
    return [_folded(overall), _folded(domains), _folded(classes)]


def stats_table(stats: dict[str, dict[str, dict[str, Any]]], title: str) -> Table:
    """Generated vs original images per generator and target domain (``generator_stats``)."""
    table = Table(title=title)
    for col in ("generator", "target", "images", "mean gen/orig", "std gen/orig", "|diff| /255", "|diff| %",
                "edges on boundaries gen/orig", "layout score"):
        table.add_column(col, justify="left" if col in ("generator", "target") else "right")
    for gen, per in stats.items():
        for dom, s in per.items():
            table.add_row(gen, dom, str(s["images"]), f"{s['generated_mean']:.1f} / {s['original_mean']:.1f}",
                          f"{s['generated_std']:.1f} / {s['original_std']:.1f}", f"{s['mean_abs_diff']:.1f}",
                          f"{s['mean_abs_diff_pct']:.1f}",
                          f"{s['edge_alignment_generated']:.3f} / {s['edge_alignment_original']:.3f}",
                          f"{s['layout_score']:.2f}")
    return _folded(table)


def consistency_table(report: dict[str, dict[str, dict[str, Any]]], title: str, blocks: Sequence[int]) -> Table:
    """Semantic and layout consistency per generator and target domain (``consistency_report``), in percent.

    ``blocks`` are the layout block sizes the report holds (``proveseg.evaluate.consistency.BLOCKS``).
    """
    table = Table(title=title)
    cols = ["generator", "target", "images", "semantic", "original", "agree px", "agree mIoU"]
    cols += [f"layout {b}x{b}" for b in blocks] + [f"agree {b}x{b}" for b in blocks]
    for col in cols:
        table.add_column(col, justify="left" if col in ("generator", "target") else "right")
    for gen, per in report.items():
        for dom, r in per.items():
            table.add_row(gen, dom, str(r["images"]), pct(r["semantic_mIoU"]), pct(r["original_mIoU"]),
                          pct(r["agreement_pixel"]), pct(r["agreement_mIoU"]),
                          *(pct(r[f"layout_semantic_{b}_mIoU"]) for b in blocks),
                          *(pct(r[f"layout_agreement_{b}_pixel"]) for b in blocks))
    return _folded(table)


def _natural_width(console: Console, table: Table) -> int:
    """The width ``table`` takes when nothing is squeezed (its columns never wrap numbers)."""
    return Measurement.get(console, console.options.update_width(100_000), table).maximum


def _fits(console: Console, table: Table) -> bool:
    return _natural_width(console, table) <= console.width


_PLAN_KEYS = ("stage", "strategy", "dataset", "model", "ratio", "seed", "status")
_PLAN_LAYOUT = "<stage>/<strategy>/<dataset>/<model>_ratio<ratio>_s<seed>"


def _plan_root(doc: dict[str, Any]) -> str | None:
    """The study's results root when every run dir is ``<root>/<stage>/<strategy>/<dataset>/<name>``."""
    roots = set()
    for r in doc["runs"]:
        path = PurePath(r["run_dir"])
        if len(path.parts) < 4 or path.parts[-4:-1] != (r["stage"], r["strategy"], r["dataset"]):
            return None
        roots.add(str(path.parents[3]))
    return roots.pop() if len(roots) == 1 else None


def plan_table(doc: dict[str, Any], title: str, run_dirs: str = "full", compact: bool = False) -> Table:
    """One row per planned run with its status (``doc["runs"]`` of ``proveseg plan --json``).

    ``run_dirs``: ``full`` paths, ``relative`` to the study's results root, or ``none`` (no column; the
    caption gives the layout under the root). ``compact`` drops the outer border and edge padding.
    """
    root = _plan_root(doc) if run_dirs != "full" else None
    mode = run_dirs if root is not None else "full"
    caption = {"relative": f"run dir: under {root}", "none": f"run dir: {_PLAN_LAYOUT} under {root}"}.get(mode)
    table = Table(title=title, caption=caption, show_edge=not compact, pad_edge=not compact)
    for col in _PLAN_KEYS:
        table.add_column(col, no_wrap=True, overflow="fold")
    if mode != "none":
        table.add_column("run dir", no_wrap=True, overflow="fold")
    for r in doc["runs"]:
        cells = [str(r[k]) for k in _PLAN_KEYS]
        if mode != "none":
            path = PurePath(r["run_dir"])
            cells.append(str(path.relative_to(root) if root is not None and mode == "relative" else path))
        table.add_row(*cells)
    return table


def print_plan(console: Console, doc: dict[str, Any], title: str) -> None:
    """The plan table, then the number of jobs per stage.

    The widest layout that fits the console: full run dirs, run dirs relative to the results root,
    then no run-dir column (the caption gives the layout), then the same without the outer border.
    """
    layouts = [("full", False), ("relative", False), ("relative", True), ("none", False), ("none", True)]
    tables = (plan_table(doc, title, run_dirs, compact) for run_dirs, compact in layouts)
    table = next((t for t in tables if _fits(console, t)), None)
    console.print(table or plan_table(doc, title, "none", compact=True))
    parts = " + ".join(f"{n} {s}" for s, n in doc["totals"].items())
    console.print(f"{len(doc['runs'])} jobs: {parts}", highlight=False)


def _column_groups(console: Console, doc: dict[str, Any], columns: Sequence[int]) -> list[list[int]]:
    """``columns`` (leaderboard header indices) split into runs whose table, with the strategy, fits."""
    groups: list[list[int]] = []
    for c in columns:
        if groups and _fits(console, leaderboard_table(doc, None, sorted({1, *groups[-1], c}), caption=False)):
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def leaderboard_tables(console: Console, doc: dict[str, Any], title: str) -> list[Table]:
    """The leaderboard as one table when it fits the console, else a main table then per-domain tables.

    Each part keeps the strategy column; parts that are still too wide are split again, so that no
    number is ever cut. Split tables carry no caption: ``print_leaderboard`` prints it after them.
    """
    full = leaderboard_table(doc, title)
    if _fits(console, full):
        return [full]
    n = len(leaderboard_header(doc))
    main = _column_groups(console, doc, [0, 2, 3, 4, 5, 6, 7, n - 1])
    domains = _column_groups(console, doc, range(8, n - 1))
    tables = [leaderboard_table(doc, title if i == 0 else None, sorted({1, *g}), caption=False)
              for i, g in enumerate(main)]
    tables += [leaderboard_table(doc, "per domain (mIoU in %)" if i == 0 else None, sorted({1, *g}), caption=False)
               for i, g in enumerate(domains)]
    return tables


def print_leaderboard(console: Console, doc: dict[str, Any], title: str) -> None:
    """The leaderboard table(s), then INVALID runs, warnings and ablation readings."""
    tables = leaderboard_tables(console, doc, title)
    for table in tables:
        console.print(table)
    if len(tables) > 1:
        console.print(Text(leaderboard_caption(doc), style="table.caption"))
    if doc.get("generated_spread") is not None:
        console.print(f"spread between generated strategies: {100 * doc['generated_spread']:.2f} points",
                      highlight=False)
    for item in doc["invalid"]:
        console.print(f"[red]INVALID[/red] {item['run_dir']}: {item['reason']}", highlight=False)
    for warning in doc["warnings"]:
        console.print(f"[yellow]WARNING[/yellow] {warning}", highlight=False)
    for c in doc.get("controls", []):
        iters = c.get("iterations", {})
        note = (f" (iterations differ: {iters[c['strategy']]} vs {iters[c['control']]}, budget real_samples)"
                if iters and iters.get(c["strategy"]) != iters.get(c["control"]) else "")
        console.print(f"{c['strategy']} vs its control {c['control']} (same strong augmentation, no pseudo-labels): "
                      f"{100 * c['gain']:+.2f} [{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}] points{note}",
                      highlight=False)
    if "noise_ablation" in doc:
        na = doc["noise_ablation"]
        console.print(f"noise ablation: [bold]{na['outcome']}[/bold]", highlight=False)
    for strategy, points in doc.get("ratio_ablation", {}).items():
        console.print(f"ratio ablation {strategy}: " + ", ".join(f"{p['ratio']:g} -> {100 * p['mIoU']:.2f}"
                                                                 for p in points), highlight=False)


def print_findings(console: Console, findings: Iterable[Finding]) -> None:
    """Training diagnostics: severity and message, then the numbers and the suggestion, indented."""
    for f in findings:
        colour = "yellow" if f.severity == "warning" else "green"
        console.print(f"[{colour}]{f.severity.upper():7s}[/{colour}] {f.name}: {f.message}", highlight=False)
        if f.numbers:
            console.print("         " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                 for k, v in f.numbers.items()), highlight=False)
        if f.suggestion:
            console.print(f"         suggestion: {f.suggestion}", highlight=False)


def audit_table(doc: dict[str, Any], title: str) -> Table:
    """One line per audited run: verdict, batches re-derived, seconds, and why when it is not verified."""
    counts = ", ".join(f"{n} {v}" for v, n in doc["counts"].items() if n)
    studies = f"; checked against study {', '.join(doc['studies'])}" if doc["studies"] else "; no study at hand"
    table = Table(title=title, caption=f"{counts or 'no runs'} in {doc['seconds']:.1f} s{studies}")
    for col in ("run", "verdict", "batches", "s", "why"):
        table.add_column(col, justify="right" if col in ("batches", "s") else "left", overflow="fold")
    for r in doc["runs"]:
        table.add_row(r["run_dir"], r["verdict"], str(r["batches"]), f"{r['seconds']:.2f}", "; ".join(r["reasons"]))
    return table


def quality_table(doc: dict[str, Any], title: str) -> Table:
    """Generator quality beside its gain, then each measure's rank correlation with the gain."""
    def num(v: Any, scale: float = 1.0, fmt: str = ".2f") -> str:
        return "-" if v is None or v != v else f"{scale * v:{fmt}}"

    table = Table(title=title, show_edge=False, caption="gain and consistency in points / %; rho: Spearman rank "
                  "correlation with the gain across generators, [95% CI] resampling generators")
    widest = max([len("rho vs gain"), *(len(g["generator"]) for g in doc["generators"])])
    for col in ("generator", "gain [95% CI]", "layout score", "colour shift %", "semantic mIoU", "layout 8x8 mIoU"):
        # fold, never ellipsise: on a narrow terminal a number wraps onto a second line instead of being cut
        table.add_column(col, justify="left" if col == "generator" else "right", overflow="fold",
                         min_width=widest if col == "generator" else None)
    for g in doc["generators"]:
        lo, hi = g["gain_ci95"]
        table.add_row(g["generator"], f"{100 * g['gain']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]",
                      num(g["layout_score"]), num(g["colour_shift"], fmt=".1f"), num(g["semantic_mIoU"], 100),
                      num(g["layout_8x8_mIoU"], 100))
    cells = []
    for name in ("layout_score", "colour_shift", "semantic_mIoU", "layout_8x8_mIoU"):
        c = doc["correlations"].get(name, {})
        ci = c.get("ci95")
        cells.append("-" if c.get("rho") is None else f"{c['rho']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci
                                                                          else ""))
    table.add_row("rho vs gain", "", *cells, style="bold")
    return table


def print_manifest_create(console: Console, plan: Any) -> None:
    """What ``manifest create`` wrote: rows matched, then every unmatched image counted by reason with examples."""
    console.print(f"wrote {plan.out}: {plan.matched} generated image(s) matched", highlight=False, markup=False)
    for reason, n in sorted(plan.unmatched.items()):
        console.print(f"[red]{n} unmatched[/red]: {reason}", highlight=False)
        for example in plan.examples.get(reason, []):
            console.print(f"  {example}", highlight=False, markup=False)
    if plan.outside_root:
        console.print(f"note: {plan.outside_root} row(s) have paths outside the data root {plan.root}; "
                      "validate with --root, or put a .proveseg-root file in a folder holding them all",
                      highlight=False, markup=False)


_STATE_STYLE = {"done": "green", "running": "cyan", "queued": "blue", "failed": "red", "preempted": "yellow",
                "not started": "dim"}


def status_table(doc: dict[str, Any], title: str) -> Table:
    """``proveseg status``: one row per run (state, iteration/max, it/s, ETA, last validation, Slurm job,
    requeues, reason) and the totals in the caption."""
    from proveseg.study.progress import format_eta

    table = Table(title=title)
    for name in ("run", "state", "iter", "it/s", "ETA", "val mIoU", "job", "requeues", "reason"):
        table.add_column(name, justify="right" if name in ("iter", "it/s", "ETA", "val mIoU", "requeues") else "left")
    for row in doc["runs"]:
        val = row.get("val")
        table.add_row(row["label"], Text(row["state"], style=_STATE_STYLE.get(row["state"], "")),
                      f"{row['iteration']}/{row['max']}", f"{row['it_s']:.2f}" if row["it_s"] else "-",
                      format_eta(row["eta_s"]) if row["state"] not in ("done", "failed") else "-",
                      pct(val["value"]) if val else "-", row["job_id"] or "-", str(row["requeues"]),
                      Text(row["reason"] or ""))
    counts = ", ".join(f"{doc[s.replace(' ', '_')]} {s}" for s in ("done", "running", "queued", "preempted",
                                                                   "failed", "not started") if doc[s.replace(' ', '_')])
    table.caption = f"{doc['total']} runs: {counts or 'none'}; ETA {format_eta(doc['eta_s'])}" + (
        "" if doc.get("slurm", True) else " (squeue did not answer: Slurm states unknown)")
    return _folded(table)


def slurm_summary(out: dict[str, str], planned: int) -> str:
    """The last lines of ``proveseg run --executor slurm``: one line per run that was not already done, then totals."""
    lines = [f"{state}  {run_dir}" for run_dir, state in out.items()]
    kinds = ("done", "failed", "queued", "skipped", "refused")
    counts = {k: sum(v.startswith(k) for v in out.values()) for k in kinds}
    preempted = sum("preempted" in v for v in out.values() if v.startswith("done"))
    total = f"{planned} runs: {planned - len(out)} already done, " + ", ".join(
        f"{counts[k]} {k}" for k in kinds if counts[k] or k in ("done", "failed"))
    return "\n".join([*lines, total + (f" ({preempted} after preemption)" if preempted else "")])
