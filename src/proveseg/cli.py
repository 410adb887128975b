"""Command line: parse, validate, call the library, print via ``proveseg.render``. No logic lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from proveseg import __version__, render
from proveseg.data.records import RecordTable

DEFAULT_DATA = "data/synthetic"
PREEMPTED_EXIT = 3  # training stopped on SIGTERM/SIGUSR2 with last.pt saved: resume with --resume


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal; piped output is ``COLUMNS`` wide when set, else 200 (not rich's 80)."""
    console = Console(stderr=stderr)
    if console.is_terminal or os.environ.get("COLUMNS", "").strip().isdigit():
        return console  # rich reads COLUMNS itself
    return Console(stderr=stderr, width=200)


def _count(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count of batches, rows, workers, resamples)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _seed(text: str) -> int:
    """An argparse type: a seed in [0, 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2**32)")
    return value


def _device(choice: str) -> str:
    """``auto`` is CUDA when available; resolved when a command runs, so that parsing never imports torch."""
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, e.g. 128x256") from None
    return h, w


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def cmd_synth(args: argparse.Namespace) -> int:
    from proveseg.synth.build import SynthSpec, build_benchmark

    h, w = args.size
    spec = SynthSpec(seed=args.seed, height=h, width=w, n_train=args.n_train, n_test=args.n_test,
                     generators=args.generators if args.generators is not None else SynthSpec().generators)
    console = _console(stderr=True)
    start = time.perf_counter()
    info = build_benchmark(args.out, spec, workers=args.workers, force=args.force, progress=console.is_terminal)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps({"out": args.out, **info}, indent=2, sort_keys=True))
    else:
        _console().print(render.synth_table(info, f"synthetic benchmark in {args.out} (seed {spec.seed}, {h}x{w})"))
        console.print(f"ready in {elapsed:.1f} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from proveseg.study.demo import run_demo

    data = Path(args.data or (DEFAULT_DATA + ("-quick" if args.quick else "")))
    results = Path(args.results or ("results/demo-quick" if args.quick else "results/demo"))
    return run_demo(args.quick, data, results, args.workers, _console())


def cmd_manifest_validate(args: argparse.Namespace) -> int:
    from proveseg.data.classes import resolve_class_set
    from proveseg.data.manifest import validate_manifest

    report = validate_manifest(args.manifest, args.generator, datasets=args.dataset, deep=args.deep,
                               class_set=resolve_class_set(args.class_set), root=args.root,
                               allow_absolute=args.allow_absolute, check_files=not args.exists_only,
                               label_map=_label_map(args))
    failed = report.n_invalid > 0 and args.on_invalid == "error"
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return 1 if failed else 0
    render.print_manifest_report(_console(), report, failed)
    return 1 if failed else 0


def cmd_manifest_create(args: argparse.Namespace) -> int:
    from proveseg.data.manifest_create import create_manifest

    plan = create_manifest(Path(args.generated_dir), Path(args.originals), Path(args.labels),
                           out=None if args.out is None else Path(args.out), dataset=args.dataset,
                           layout=args.layout, target=args.target, source_domain=args.source_domain,
                           image_ext=args.image_ext, label_suffix=args.label_suffix, label_ext=args.label_ext)
    if args.json:
        print(json.dumps(plan.as_dict(), indent=2, sort_keys=True))
    else:
        render.print_manifest_create(_console(), plan)
    return 1 if plan.n_unmatched else 0


def cmd_verify_batches(args: argparse.Namespace) -> int:
    from proveseg.config import load_run_config
    from proveseg.data.inspect import verify_batches

    cfg = load_run_config(args.config)
    report = verify_batches(cfg.data, args.batches)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0 if report["matches_request"] else 1
    render.print_verify_batches(_console(), report, args.config)
    return 0 if report["matches_request"] else 1


def cmd_export_samples(args: argparse.Namespace) -> int:
    from proveseg.config import load_run_config
    from proveseg.data.inspect import export_samples

    written = export_samples(load_run_config(args.config).data, args.n, args.out)
    _console().print(f"wrote {len(written)} samples (image, label, overlay, metadata) to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from proveseg.evaluate.runner import evaluate_target

    metrics = evaluate_target(args.target, args.split, args.data, args.out, _device(args.device))
    if args.json:
        print(json.dumps(metrics, indent=2, sort_keys=True))
        return 0
    console = _console()
    for table in render.metrics_tables(metrics, f"{args.target} ({args.split})"):
        console.print(table)
    return 0


def _label_map(args: argparse.Namespace) -> Any:
    """The ``--label-map`` table (with ``--unmapped``), or None."""
    from proveseg.data.labelmap import load_label_map

    if args.label_map is None:
        if args.unmapped is not None:  # it would change nothing: say so rather than ignore it
            raise ValueError("--unmapped applies to a --label-map: give the map, or drop --unmapped")
        return None
    return load_label_map(Path(args.label_map), args.unmapped or "error")


def _generated_records(manifest: str, class_set: Any, limit: int | None, label_map: Any = None) -> RecordTable:
    """A manifest's valid records (``class_set``: a ClassSet, a built-in name or a table file), evenly thinned;
    their labels decode through ``label_map`` when given."""
    from proveseg.data.classes import resolve_class_set
    from proveseg.data.manifest import validate_manifest
    from proveseg.data.pipeline import manifest_failure

    report = validate_manifest(manifest, class_set=resolve_class_set(class_set))
    if report.n_invalid:
        raise ValueError(manifest_failure(report))
    records = report.records.with_label_map(report.generator, label_map)
    if limit is not None and limit < len(records):  # an even spread over the sorted rows, not the first N
        records = records.take(np.linspace(0, len(records) - 1, limit).round().astype(np.int64))
    return records


def cmd_stats(args: argparse.Namespace) -> int:
    from proveseg.evaluate.imagestats import generator_stats

    stats = generator_stats(_generated_records(args.manifest, args.class_set, args.limit, _label_map(args)))
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    _console().print(render.stats_table(stats, f"{args.manifest}: generated vs original"))
    return 0


def cmd_consistency(args: argparse.Namespace) -> int:
    from proveseg.checkpoint import checkpoint_class_set, load_model
    from proveseg.data.classes import resolve_class_set
    from proveseg.evaluate.consistency import BLOCKS, consistency_report

    device = _device(args.device)
    model, state = load_model(args.model, device)
    # the checkpoint's own class set (written whole); --class-set only for checkpoints that lack one
    class_set = (checkpoint_class_set(state, args.model) if "class_set" in state["model"]
                 else resolve_class_set(args.class_set))
    records = _generated_records(args.manifest, class_set, args.limit, _label_map(args))
    report = consistency_report(model, records, class_set, device=device)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    title = f"{args.manifest}: consistency under {args.model} (mIoU %, agreement %)"
    _console().print(render.consistency_table(report, title, BLOCKS))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from proveseg.config import load_run_config
    from proveseg.train.loop import Preempted, RunLocked, train

    cfg = load_run_config(args.config)
    if args.output_dir:
        cfg = cfg.model_copy(update={"output_dir": args.output_dir})
    try:
        result = train(cfg, resume=args.resume, progress=_console().is_terminal)
    except Preempted as exc:
        _console(stderr=True).print(f"[yellow]preempted:[/yellow] {exc}")
        return PREEMPTED_EXIT
    except RunLocked as exc:
        _console(stderr=True).print(f"[yellow]skipped:[/yellow] {exc}", highlight=False)
        from proveseg.rundir import LOCKED_EXIT

        return LOCKED_EXIT
    console = _console()
    console.print(f"{cfg.output_dir}: {result.iterations} iterations"
                  + (" (early stop)" if result.stopped_early else ""), highlight=False)
    if result.test_metrics:
        for table in render.metrics_tables(result.test_metrics, f"{cfg.name}: test"):
            console.print(table)
    return 0


def _study_runs(args: argparse.Namespace, pending_ok: bool = False) -> tuple[Any, list[Any], list[str]]:
    """The study and its selected runs; with ``pending_ok``, a stage2 whose top_k cannot be applied yet is
    planned with every candidate strategy, and a note says so."""
    from proveseg.study.matrix import Stage2Pending, expand
    from proveseg.study.spec import load_study

    study = load_study(args.study)
    select = ([args.stage] if args.stage else None, args.strategies, args.datasets, args.models)
    try:
        return study, expand(study, *select), []
    except Stage2Pending as exc:
        if not pending_ok:
            raise
        return study, expand(study, *select, apply_top_k=False), [
            f"{exc}; stage2 lists every candidate strategy until then"]


def cmd_plan(args: argparse.Namespace) -> int:
    from proveseg.study.matrix import totals
    from proveseg.study.preflight import study_problems

    study, runs, notes = _study_runs(args, pending_ok=True)  # a dry run lists stage2's candidates
    problems = study_problems(study, runs)  # what `run` would hit, each with its cause and fix
    doc: dict[str, Any] = {"runs": [r.as_dict() for r in runs], "totals": totals(runs), "problems": problems,
                           "notes": notes}
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 1 if problems else 0
    console = _console()
    render.print_plan(console, doc, f"{args.study}: {len(runs)} runs (dry run: nothing started)")
    for note in notes:
        console.print(f"[yellow]NOTE[/yellow] {note}", highlight=False)
    for problem in problems:
        console.print(f"[red]PROBLEM[/red] {problem}", highlight=False)
    return 1 if problems else 0


def cmd_run(args: argparse.Namespace) -> int:
    from proveseg.study.executors import CHANGED, DONE, LOCKED, STOPPED, run_local, run_slurm
    from proveseg.study.preflight import study_problems
    from proveseg.study.reference import store_study

    if args.detach and args.executor != "slurm":
        raise ValueError("--detach submits to Slurm and returns: use it with --executor slurm")
    study, runs, _ = _study_runs(args)
    problems = study_problems(study, runs)
    if problems:  # refused before anything starts: every run would fail the same way
        raise ValueError("the study cannot run:\n  " + "\n  ".join(problems))
    store_study(study)  # the reference the leaderboard checks these runs against
    if args.executor == "slurm":
        out = run_slurm(runs, study.slurm, study.results_root / ".submitit", force=args.force, wait=not args.detach,
                        echo=True)
        print(render.slurm_summary(out, len(runs)), flush=True)
        ok = ("done", "skipped", "queued")
        return 0 if all(v.startswith(ok) for v in out.values()) else 1
    gpus = args.gpus.split(",") if args.gpus else None
    codes = run_local(runs, args.max_parallel, args.force, gpus)
    count = {name: sum(v == code for v in codes.values())
             for name, code in (("locked", LOCKED), ("changed", CHANGED), ("stopped", STOPPED))}
    failed = {k: v for k, v in codes.items() if v not in (0, DONE, LOCKED, CHANGED, STOPPED)}
    extra = "".join(f", {count[k]} {text}" for k, text in (("locked", "held by another process"),
                                                          ("changed", "refused (study changed)"),
                                                          ("stopped", "not started (stopped)")) if count[k])
    print(f"{len(codes)} runs: {sum(v == 0 for v in codes.values())} trained, "
          f"{sum(v == DONE for v in codes.values())} already done, {len(failed)} failed{extra}")
    for run_dir, code in failed.items():
        print(f"  exit {code}: {run_dir} (see {run_dir}/train.log)")
    if count["stopped"] or any(v == 3 for v in failed.values()):
        return 3
    return 1 if failed or count["changed"] else 0


def cmd_status(args: argparse.Namespace) -> int:
    from proveseg.study.status import study_status

    _, runs, _ = _study_runs(args)
    if args.json:
        print(json.dumps(study_status(runs), indent=2, sort_keys=True))
        return 0
    console = _console()
    if not args.watch:
        console.print(render.status_table(study_status(runs), f"{args.study}: {len(runs)} runs"))
        return 0
    from rich.live import Live

    doc = study_status(runs)
    with Live(render.status_table(doc, f"{args.study}: {len(runs)} runs"), console=console,
              refresh_per_second=1) as live:
        while doc["queued"] + doc["running"]:
            time.sleep(max(args.every, 0.5))
            doc = study_status(runs)
            live.update(render.status_table(doc, f"{args.study}: {len(runs)} runs"))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from proveseg.study.formatting import leaderboard_csv, leaderboard_markdown
    from proveseg.study.leaderboard import build_leaderboard

    doc = build_leaderboard(args.results_root, args.stage, n_boot=args.n_boot, studies=args.study,
                            audit=not args.no_audit)
    if args.format == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif args.format == "md":
        print(leaderboard_markdown(doc), end="")
    elif args.format == "csv":
        print(leaderboard_csv(doc), end="")
    else:
        render.print_leaderboard(_console(), doc, f"{args.results_root} ({args.stage or 'all stages'})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from proveseg.study.audit import audit_target

    doc = audit_target(Path(args.target), args.study, _device(args.device) if args.reevaluate else None)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _console().print(render.audit_table(doc, f"audit of {args.target}"))
    return 0 if doc["runs"] and all(r["verdict"] == "verified" for r in doc["runs"]) else 1


def cmd_quality(args: argparse.Namespace) -> int:
    from proveseg.study.quality import generator_quality

    doc = generator_quality(args.results_root, args.stage, args.study, args.limit, _device(args.device),
                            audit=not args.no_audit)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    console = _console()
    if not doc["generators"]:
        console.print(doc["note"], highlight=False)
        return 1
    console.print(render.quality_table(doc, f"{args.results_root} ({args.stage}): generator quality vs gain"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from proveseg.study.report import write_report

    quality = None
    if args.quality:
        from proveseg.study.quality import generator_quality

        quality = generator_quality(args.results_root, args.stage or "stage1", args.study, args.quality,
                                    _device("auto"), audit=not args.no_audit)
    out = write_report(args.results_root, args.out or Path(args.results_root) / "report.html", args.stage,
                       studies=args.study, audit=not args.no_audit, quality=quality)
    _console().print(f"wrote {out}", highlight=False)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from proveseg.train.diagnose import diagnose, read_log, run_class_names

    try:
        names: list[str] | None = run_class_names(args.run_dir)
    except FileNotFoundError:  # a bare log.jsonl: classes are shown by id
        names = None
    findings = diagnose(read_log(args.run_dir), args.metric, names)
    if args.json:
        print(json.dumps([f.__dict__ for f in findings], indent=2, sort_keys=True))
        return 0
    render.print_findings(_console(), findings)
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from pathlib import Path

    from proveseg.train.diagnose import plot_curves

    runs = [Path(r) for r in args.run_dirs]
    # default: beside the runs (their common folder), never the current directory by accident
    default = runs[0] / "curves.png" if len(runs) == 1 else Path(os.path.commonpath([r.resolve() for r in runs])) / \
        "curves.png"
    out = plot_curves(runs, Path(args.out) if args.out else default, args.metric)
    _console().print(f"wrote {out}", highlight=False)
    return 0


def _label_map_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label-map", default=None, help="CSV (source,target) or YAML table: label_path ids -> class ids")
    p.add_argument("--unmapped", choices=("error", "ignore"), default=None,
                   help="an id the label map does not cover: an error naming the file (default), or 255")


def build_parser() -> argparse.ArgumentParser:
    """The ``proveseg`` argument parser; every command has a one-line help."""
    parser = argparse.ArgumentParser(prog="proveseg", description="Prove whether extra training data helps "
                                     "semantic segmentation.")
    parser.add_argument("--version", action="version", version=f"proveseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    workers = max(1, min(4, os.cpu_count() or 1))

    p = sub.add_parser("synth", help="generate the synthetic adverse-weather benchmark with its generators")
    p.add_argument("--out", default=DEFAULT_DATA, help=f"output folder (default {DEFAULT_DATA})")
    p.add_argument("--seed", type=_seed, default=0, help="random seed of the scenes and generators (default 0)")
    p.add_argument("--size", type=_size, default=(128, 256), help="HxW (default 128x256)")
    p.add_argument("--n-train", type=_count, default=120, help="train scenes (each in every domain)")
    p.add_argument("--n-test", type=_count, default=30, help="held-out test scenes (each in every domain)")
    p.add_argument("--generators", type=_names, default=None, help="comma list (default: all)")
    p.add_argument("--workers", type=_count, default=workers, help="processes (output does not depend on it)")
    p.add_argument("--force", action="store_true", help="rebuild even if the same benchmark exists")
    p.add_argument("--json", action="store_true", help="print info.json instead of a table")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("manifest", help="generated-image manifests: validate one, or create one from a folder")
    msub = p.add_subparsers(dest="manifest_command", required=True, metavar="ACTION")
    p = msub.add_parser("validate", help="check a manifest: rows, found, valid, rejected by reason")
    p.add_argument("manifest", help="manifest file (csv or jsonl)")
    p.add_argument("--generator", default=None, help="generator name (default: the manifest's folder name)")
    p.add_argument("--dataset", type=_names, default=None, help="only these datasets (comma list)")
    p.add_argument("--deep", action="store_true", help="decode every image and label fully")
    p.add_argument("--exists-only", action="store_true", help="check existence only (no headers)")
    p.add_argument("--class-set", default="cityscapes19", help="built-in name or class table (csv/yaml)")
    p.add_argument("--root", default=None, help="data root that relative paths may not leave")
    p.add_argument("--allow-absolute", action="store_true", help="accept absolute paths in the manifest")
    p.add_argument("--on-invalid", choices=("error", "skip"), default="error", help="exit 1 on invalid rows if error")
    _label_map_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_manifest_validate)

    p = msub.add_parser("create", help="write a manifest for a folder of generated images, matched to originals")
    p.add_argument("generated_dir", help="folder of generated images")
    p.add_argument("--originals", required=True, help="folder of the original images, searched recursively by name")
    p.add_argument("--labels", required=True, help="labels folder, same relative paths as under --originals")
    p.add_argument("--out", default=None, help="manifest to write (default GENERATED_DIR/manifest.csv)")
    p.add_argument("--dataset", default="custom", help="dataset column of every row (default custom)")
    p.add_argument("--layout", choices=("target/name", "name_target", "flat"), default="target/name",
                   help="target/name: <target>/<name>.<ext>; name_target: <name>_<target>.<ext>; "
                        "flat: <name>.<ext> with --target (default target/name)")
    p.add_argument("--target", default=None, help="the target domain of every image (--layout flat only)")
    p.add_argument("--source-domain", default="clear_day", help="source_domain column (default clear_day)")
    p.add_argument("--image-ext", type=_names, default=None,
                   help="generated image extensions, comma list (default: every image extension)")
    p.add_argument("--label-suffix", default="", help="added to the original's stem to name its label, e.g. _labelIds")
    p.add_argument("--label-ext", default=".png", help="label file extension (default .png)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_manifest_create)

    p = sub.add_parser("verify-batches", help="load batches from a run config and show what they hold")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--batches", type=_count, default=3, help="batches to load (default 3)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify_batches)

    p = sub.add_parser("export-samples", help="write samples from the training loader for inspection")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--n", type=_count, default=20, help="samples to write (default 20)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_export_samples)

    p = sub.add_parser("train", help="train one run from a run config (exact resume with --resume)")
    p.add_argument("config", help="run config (YAML)")
    p.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoints/last.pt")
    p.add_argument("--output-dir", default=None, help="override the config's output_dir")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("diagnose", help="training diagnostics from a run's log.jsonl (peak, decline, ST health)")
    p.add_argument("run_dir", help="run directory (with log.jsonl)")
    p.add_argument("--metric", default="mIoU", help="validation metric to diagnose (default mIoU)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("curves", help="validation and loss curves of one or more runs into a PNG")
    p.add_argument("run_dirs", nargs="+", help="run directories (with log.jsonl)")
    p.add_argument("--out", default=None,
                   help="output PNG (default: curves.png in the run directory, or the runs' common folder)")
    p.add_argument("--metric", default="mIoU", help="validation metric to plot (default mIoU)")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("evaluate", help="evaluate a run dir or checkpoint: metrics.json, confusion.npz, tables")
    p.add_argument("target", help="run directory or checkpoint file")
    p.add_argument("--split", default="test", choices=("test", "val"), help="evaluation split (default test)")
    p.add_argument("--data", default=None, help="run config whose evaluation sets to use")
    p.add_argument("--out", default=None, help="output folder (default: the run directory)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    def proof_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--study", type=Path, action="append", default=None,
                       help="study YAML the runs are checked against (repeatable; default: the studies stored under "
                            "RESULTS_ROOT/.studies by `proveseg run`, and RESULTS_ROOT/study.yaml)")
        p.add_argument("--no-audit", action="store_true",
                       help="rank runs on their own records without re-deriving them (faster; the output says so)")

    def study_filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("study", help="study YAML")
        p.add_argument("--stage", default=None, help="only this stage (default: all stages)")
        p.add_argument("--strategies", type=_names, default=None, help="only these strategies (comma list)")
        p.add_argument("--datasets", type=_names, default=None, help="only these datasets (comma list)")
        p.add_argument("--models", type=_names, default=None, help="only these models (comma list)")

    p = sub.add_parser("plan", help="dry run: the job matrix of a study with each run's status")
    study_filters(p)
    p.add_argument("--json", action="store_true", help="print the runs and totals as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run what is not done in a study (local processes or Slurm)")
    study_filters(p)
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local processes or Slurm jobs (default local)")
    p.add_argument("--max-parallel", type=_count, default=1, help="local runs at a time (default 1)")
    p.add_argument("--gpus", default=None, help="comma list of GPU ids, one per parallel run")
    p.add_argument("--force", action="store_true", help="delete and rerun runs that are done")
    p.add_argument("--detach", action="store_true",
                   help="slurm: submit and return (watch with `proveseg status STUDY --watch`)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="a study's runs now: state, iteration, it/s, ETA, validation, Slurm job")
    study_filters(p)
    p.add_argument("--watch", action="store_true", help="refresh every --every seconds until no run is active")
    p.add_argument("--every", type=float, default=5.0, help="seconds between refreshes with --watch (default 5)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("leaderboard", help="rank strategies on proven runs, with paired-bootstrap gains")
    p.add_argument("results_root", help="results root of a study")
    p.add_argument("--stage", default=None, help="only this stage (default: all stages)")
    p.add_argument("--format", choices=("table", "md", "csv", "json"), default="table",
                   help="table (fits the terminal), Markdown, CSV or JSON (default table)")
    p.add_argument("--n-boot", type=_count, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    proof_options(p)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("audit", help="re-derive runs' records from run.yaml and the sources: verified, stale, "
                                     "inconsistent")
    p.add_argument("target", help="a run directory or a results root")
    p.add_argument("--study", type=Path, action="append", default=None,
                   help="also check each run.yaml against this study (default: the studies stored under the root)")
    p.add_argument("--reevaluate", action="store_true",
                   help="also score each run's checkpoints/best.pt on its test split again and compare every image's "
                        "confusion matrix with confusion.npz (costs an evaluation per run)")
    p.add_argument("--device", default="auto", help="device for --reevaluate (default: auto)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("quality", help="does generator quality predict utility: stats and consistency vs gain")
    p.add_argument("results_root", help="results root of a study")
    p.add_argument("--stage", default="stage1", help="stage whose gains are compared (default stage1)")
    p.add_argument("--limit", type=_count, default=60, help="manifest rows per generator to measure, evenly spread")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print the table and correlations as JSON")
    proof_options(p)
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("report", help="one self-contained HTML report of a results root")
    p.add_argument("results_root", help="results root of a study")
    p.add_argument("--out", default=None, help="output HTML file (default: RESULTS_ROOT/report.html)")
    p.add_argument("--stage", default=None, help="only this stage (default: all stages)")
    p.add_argument("--quality", type=_count, default=None, metavar="N",
                   help="also measure generator quality vs gain on N manifest rows per generator")
    proof_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("stats", help="generated vs original images: colour statistics and layout score")
    p.add_argument("manifest", help="manifest file (csv or jsonl)")
    p.add_argument("--class-set", default="cityscapes19", help="built-in name or class table (csv/yaml)")
    p.add_argument("--limit", type=_count, default=None, help="at most this many rows, evenly spread")
    _label_map_args(p)  # label boundaries are drawn between class ids, not raw ids
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("consistency", help="semantic and layout consistency of generated images under a model")
    p.add_argument("manifest", help="manifest file (csv or jsonl)")
    p.add_argument("--model", required=True, help="checkpoint file")
    p.add_argument("--class-set", default="cityscapes19", help="built-in name or class table (csv/yaml)")
    p.add_argument("--limit", type=_count, default=None, help="at most this many rows, evenly spread")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    _label_map_args(p)
    p.add_argument("--json", action="store_true", help="print the consistency as JSON")
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("demo", help="end-to-end demo: benchmark, stage-1 study, leaderboard, report.html "
                                    "(about 10 minutes on 2 cores; --quick: about 2 minutes)")
    p.add_argument("--quick", action="store_true", help="a small benchmark and short runs (about 2 minutes; "
                                                        "the full demo takes about 10 minutes on 2 cores)")
    p.add_argument("--data", default=None, help=f"benchmark folder (default {DEFAULT_DATA}[-quick])")
    p.add_argument("--results", default=None, help="results root (default results/demo[-quick])")
    p.add_argument("--workers", type=_count, default=workers,
                   help=f"processes for the benchmark and the runs (default {workers})")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``proveseg`` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, KeyError, OSError, RuntimeError) as exc:  # OSError: unreadable files, a full disk
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        _console(stderr=True).print(f"[red]error:[/red] {message}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        _console(stderr=True).print("[yellow]interrupted[/yellow]", markup=True, highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
